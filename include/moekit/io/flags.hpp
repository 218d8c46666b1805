// moekit/io/flags.hpp — command-line flags for examples and benchmarks:
// `--name value` or `--name=value`, booleans as `--name` / `--no-name`, a
// generated --help, and value_error naming the flag on bad input.
//
//   int threads = 1;
//   moekit::flags cli("bench_ops", "GEMM, element-wise and tape microbenchmarks");
//   cli.add("threads", threads, "threads for moekit loops and BLAS");
//   if (!cli.parse(argc, argv)) return 0;   // --help was printed
#pragma once

#include <charconv>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"

namespace moekit {

class flags {
 public:
  flags(std::string program, std::string about) : program_(std::move(program)), about_(std::move(about)) {}

  /// Registers --name; the target's current value is the default.
  template <class T>
  void add(std::string name, T& target, std::string help) {
    std::ostringstream def;
    def << std::boolalpha << target;
    entries_.push_back({std::move(name), std::move(help), def.str(), std::is_same_v<T, bool>,
                        [&target](const std::string& flag, std::string_view text) { assign(flag, text, target); }});
  }

  /// Parses argv. Returns false when --help was asked for (help is printed).
  /// Throws value_error for unknown flags, missing or malformed values.
  bool parse(int argc, const char* const* argv, std::ostream& help_out = std::cout) {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        print_help(help_out);
        return false;
      }
      if (!arg.starts_with("--")) throw value_error(program_ + ": unexpected argument '" + std::string(arg) + "'");
      arg.remove_prefix(2);
      std::string name(arg.substr(0, arg.find('=')));
      const bool has_value = arg.find('=') != std::string_view::npos;
      bool negated = false;
      entry* e = find(name);
      if (!e && name.starts_with("no-") && (e = find(name.substr(3))) && e->boolean) negated = true;
      if (!e) throw value_error(program_ + ": unknown flag --" + name + " (see --help)");
      if (e->boolean && !has_value) {
        e->set("--" + e->name, negated ? "false" : "true");
      } else if (has_value) {
        e->set("--" + e->name, arg.substr(arg.find('=') + 1));
      } else {
        if (i + 1 >= argc) throw value_error(program_ + ": flag --" + name + " needs a value");
        e->set("--" + e->name, argv[++i]);
      }
    }
    return true;
  }

  void print_help(std::ostream& os) const {
    os << "usage: " << program_ << " [flags]\n\n" << about_ << "\n\nflags:\n";
    for (const auto& e : entries_) {
      std::string left = "  --" + e.name + (e.boolean ? "" : " VALUE");
      os << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << e.help << " (default: "
         << (e.def.empty() ? "\"\"" : e.def) << ")\n";
    }
    os << "  --help                    print this and exit\n";
  }

 private:
  struct entry {
    std::string name, help, def;
    bool boolean;
    std::function<void(const std::string&, std::string_view)> set;
  };

  entry* find(std::string_view name) {
    for (auto& e : entries_)
      if (e.name == name) return &e;
    return nullptr;
  }

  template <class T>
  static void assign(const std::string& flag, std::string_view text, T& target) {
    if constexpr (std::is_same_v<T, std::string>) {
      target = std::string(text);
    } else if constexpr (std::is_same_v<T, bool>) {
      if (text == "true" || text == "1" || text == "yes") target = true;
      else if (text == "false" || text == "0" || text == "no") target = false;
      else throw value_error(flag + ": expected true or false, got '" + std::string(text) + "'");
    } else {
      static_assert(std::is_arithmetic_v<T>, "flags: unsupported flag type");
      T value{};
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (ec != std::errc{} || end != text.data() + text.size() || text.empty())
        throw value_error(flag + ": expected a number, got '" + std::string(text) + "'");
      target = value;
    }
  }

  std::string program_, about_;
  std::vector<entry> entries_;
};

}  // namespace moekit

// examples/common/flags.hpp — the command-line flags of moekit's examples and
// benchmarks, on CLI11: `--name value` or `--name=value`, booleans as `--name`
// / `--no-name`, a generated --help with every default, and value_error
// naming the flag on bad input (the caller's main prints the program name).
// Numbers are read in base 10 over the whole text and must fit the target
// type; floating-point values must be finite.
//
//   int threads = 1;
//   moekit::flags cli("bench_ops", "GEMM, element-wise and tape microbenchmarks");
//   cli.add("threads", threads, "threads for moekit loops and BLAS");
//   if (!cli.parse(argc, argv)) return 0;   // --help was printed
//
// Not part of the library (moekit.hpp does not include it). CLI11 is
// compiled once, in flags.cpp (library moekit_program_flags, which programs
// link: cmake/moekit_programs.cmake), not in every program: it costs ~9 s of
// compile time per translation unit at -O3. parse never prints anything but
// the help to `help_out`, and never exits.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include <moekit/core/error.hpp>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace moekit {

namespace flags_detail {

/// `text` read as a T in base 10, the whole of it; value_error naming `flag` otherwise.
template <class T>
T parse_number(const std::string& flag, const std::string& text) {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>, "flags: unsupported flag type");
  const char* const end = text.data() + text.size();
  T value{};
  const auto [stop, ec] = std::from_chars(text.data(), end, value);
  const bool whole = ec == std::errc{} && stop == end && !text.empty();
  if constexpr (std::is_integral_v<T>) {
    if (ec == std::errc::result_out_of_range || (whole == false && std::is_unsigned_v<T> && text.starts_with('-')))
      throw value_error(flag + ": '" + text + "' is outside [" + std::to_string(std::numeric_limits<T>::min()) +
                        ", " + std::to_string(std::numeric_limits<T>::max()) + "]");
    if (!whole) throw value_error(flag + ": expected an integer, got '" + text + "'");
  } else {
    if (ec == std::errc::result_out_of_range) throw value_error(flag + ": '" + text + "' is out of range");
    if (!whole) throw value_error(flag + ": expected a number, got '" + text + "'");
    if (!std::isfinite(value)) throw value_error(flag + ": expected a finite number, got '" + text + "'");
  }
  return value;
}

template <class T>
std::string default_text(const T& value) {
  std::ostringstream out;
  out << std::boolalpha << value;
  return out.str().empty() ? "\"\"" : out.str();
}

}  // namespace flags_detail

class flags {
 public:
  flags(const std::string& program, const std::string& about);
  ~flags();
  flags(const flags&) = delete;
  flags& operator=(const flags&) = delete;

  /// Registers --name (bool: --name and --no-name); the target's current value is the default.
  template <class T>
  void add(const std::string& name, T& target, const std::string& help) {
    const std::string described = help + " (default: " + flags_detail::default_text(target) + ")";
    if constexpr (std::is_same_v<T, bool>) {
      add_bool(name, target, described);
    } else {
      add_value(name, described, [&target, flag = "--" + name](const std::string& text) {
        if constexpr (std::is_same_v<T, std::string>) target = text;
        else target = flags_detail::parse_number<T>(flag, text);
      });
    }
  }

  /// Parses argv (argv[0] is the program). Returns false when --help was asked
  /// for (the help is written to help_out). Throws value_error naming the flag
  /// for unknown flags, missing or malformed values.
  bool parse(int argc, const char* const* argv, std::ostream& help_out = std::cout) {
    return parse(std::vector<std::string>(argv + std::min(argc, 1), argv + std::max(argc, 0)), help_out);
  }

  /// The same on the arguments after the program name.
  bool parse(std::vector<std::string> args, std::ostream& help_out = std::cout);

  std::string help() const;

 private:
  void add_bool(const std::string& name, bool& target, const std::string& help);
  void add_value(const std::string& name, const std::string& help, std::function<void(const std::string&)> assign);
  void check_remaining() const;

  void check_boolean_values(const std::vector<std::string>& args) const;

  struct value_flag {
    CLI::Option* option;
    std::function<void(const std::string&)> assign;
  };
  std::unique_ptr<CLI::App> app_;
  std::vector<value_flag> values_;
  std::vector<std::string> booleans_;  // names of the boolean flags (without "--")
};

}  // namespace moekit

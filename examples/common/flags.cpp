// examples/common/flags.cpp — the CLI11 side of flags.hpp, compiled once into
// the library moekit_program_flags rather than into every program.
#include "flags.hpp"

#include <CLI/CLI.hpp>

#include <stdexcept>
#include <string>

namespace moekit {

flags::flags(const std::string& program, const std::string& about)
    : app_(std::make_unique<CLI::App>(about, program)) {
  app_->allow_extras();  // unknown flags are reported by check_remaining, in moekit's words
  app_->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

flags::~flags() = default;

void flags::add_bool(const std::string& name, bool& target, const std::string& help) {
  app_->add_flag("--" + name + ",!--no-" + name, target, help);
}

void flags::add_value(const std::string& name, const std::string& help,
                      std::function<void(const std::string&)> assign) {
  CLI::Option* option = app_->add_option("--" + name, help)->type_name("VALUE");
  values_.push_back({option, std::move(assign)});
}

bool flags::parse(std::vector<std::string> args, std::ostream& help_out) {
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app_->parse(args);
  } catch (const CLI::CallForHelp&) {
    help_out << app_->help();
    return false;
  } catch (const CLI::Error& e) {
    throw value_error(e.what());
  } catch (const std::logic_error& e) {  // CLI11 lets std::stoll's out_of_range escape (fuzz_flags: --no-verbose=99999999999999999999)
    throw value_error(std::string("a flag's value is out of range (") + e.what() + ")");
  }
  for (const auto& v : values_)
    if (v.option->count() > 0) v.assign(v.option->results().back());
  check_remaining();
  return true;
}

std::string flags::help() const { return app_->help(); }

/// Arguments CLI11 left over: an unknown flag or a stray word.
void flags::check_remaining() const {
  const std::vector<std::string> left = app_->remaining();
  if (left.empty()) return;
  const std::string& first = left.front();
  if (first.starts_with('-') && first != "--")
    throw value_error("unknown flag " + first.substr(0, first.find('=')) + " (see --help)");
  throw value_error("unexpected argument '" + first + "' (flags are --name value)");
}

}  // namespace moekit

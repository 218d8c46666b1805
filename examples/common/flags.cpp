// examples/common/flags.cpp — the CLI11 side of flags.hpp, compiled once into
// the library moekit_program_flags rather than into every program.
#include "flags.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>

namespace moekit {

flags::flags(const std::string& program, const std::string& about)
    : app_(std::make_unique<CLI::App>(about, program)) {
  app_->allow_extras();  // unknown flags are reported by check_remaining, in moekit's words
  app_->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

flags::~flags() = default;

void flags::add_bool(const std::string& name, bool& target, const std::string& help) {
  app_->add_flag("--" + name + ",!--no-" + name, target, help);
  booleans_.push_back(name);
}

/// `--name=text` / `--no-name=text` of a boolean flag: text must be one of
/// true/false, yes/no, on/off, 1/0. Checked here, naming the flag, because
/// CLI11 reads other text with std::stoll (a long number escaped it as
/// std::out_of_range: found by fuzz_flags with --no-verbose=99999999999999999999).
void flags::check_boolean_values(const std::vector<std::string>& args) const {
  static constexpr std::string_view words[] = {"true", "false", "yes", "no", "on", "off", "1", "0"};
  for (const std::string& arg : args) {
    const std::size_t eq = arg.find('=');
    if (!arg.starts_with("--") || eq == std::string::npos) continue;
    const std::string name = arg.substr(2, eq - 2);
    const std::string base = name.starts_with("no-") ? name.substr(3) : name;
    if (std::find(booleans_.begin(), booleans_.end(), name) == booleans_.end() &&
        std::find(booleans_.begin(), booleans_.end(), base) == booleans_.end())
      continue;
    const std::string_view text = std::string_view(arg).substr(eq + 1);
    if (std::find(std::begin(words), std::end(words), text) == std::end(words))
      throw value_error("--" + name + ": expected true or false (yes/no, on/off, 1/0), got '" + std::string(text) + "'");
  }
}

void flags::add_value(const std::string& name, const std::string& help,
                      std::function<void(const std::string&)> assign) {
  CLI::Option* option = app_->add_option("--" + name, help)->type_name("VALUE");
  values_.push_back({option, std::move(assign)});
}

bool flags::parse(std::vector<std::string> args, std::ostream& help_out) {
  check_boolean_values(args);
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app_->parse(args);
  } catch (const CLI::CallForHelp&) {
    help_out << app_->help();
    return false;
  } catch (const CLI::Error& e) {
    throw value_error(e.what());
  } catch (const std::logic_error& e) {  // a CLI11 conversion's std:: exception: none known since check_boolean_values
    throw value_error(std::string("a flag's value cannot be read (") + e.what() + ")");
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

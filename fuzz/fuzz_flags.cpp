// fuzz/fuzz_flags.cpp — the examples' command-line parser (examples/common/flags.hpp,
// on CLI11) on an argv made from the input split at NUL bytes (argv[0] is
// "fuzz_flags"), with int, size_t, float, double, bool and string flags registered.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/flags.hpp"  // examples/common: the CLI11-based flags of the examples

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args{"fuzz_flags"};
  std::string_view rest = moekit_fuzz::as_text(data, size);
  while (!rest.empty()) {
    const std::size_t cut = rest.find('\0');
    args.emplace_back(rest.substr(0, cut));
    rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 1);
  }
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);

  // One parser for the whole run (CLI11 clears its state at each parse): building
  // it for every input took most of the time (1.4 k executions/s, then 3.9 k).
  static int epochs = 10;
  static std::size_t batch = 64;
  static float lr = 1e-3f;
  static double warmup = 0.1;
  static bool verbose = false;
  static std::string save = "run.safetensors";
  static moekit::flags cli("fuzz_flags", "the flags parser under libFuzzer");
  static const bool registered = [] {
    cli.add("epochs", epochs, "an int");
    cli.add("batch", batch, "a size_t");
    cli.add("lr", lr, "a float");
    cli.add("warmup", warmup, "a double");
    cli.add("verbose", verbose, "a bool");
    cli.add("save", save, "a string");
    return true;
  }();
  (void)registered;
  std::ostringstream help;
  return moekit_fuzz::run([&] { (void)cli.parse(static_cast<int>(args.size()), argv.data(), help); });
}

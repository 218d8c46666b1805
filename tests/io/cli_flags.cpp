// The command-line flags of the examples and benchmarks (examples/common/
// flags.hpp, on CLI11) and their output-path check (common/output_path.hpp):
// good input sets every kind of target; every bad input (unknown flag,
// missing value, malformed or out-of-range number, a negative unsigned,
// non-finite floating values, an output folder that is missing) raises
// value_error naming the flag, once, without the program name.
#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../support/temp_dir.hpp"
#include "common/flags.hpp"
#include "common/output_path.hpp"

namespace cli_flags_test {

/// One target of every supported kind, registered on a flags parser.
struct targets {
  int threads = 1;
  std::size_t batch = 64;
  std::uint64_t seed = 7;
  double lr = 1e-3;
  float warmup = 0.5f;
  bool augment = false;
  std::string save;
};

struct parser {
  targets t;
  moekit::flags cli{"prog", "A program for the tests."};
  std::ostringstream help;

  parser() {
    cli.add("threads", t.threads, "threads");
    cli.add("batch", t.batch, "images per step");
    cli.add("seed", t.seed, "random seed");
    cli.add("lr", t.lr, "learning rate");
    cli.add("warmup", t.warmup, "warm-up epochs");
    cli.add("augment", t.augment, "random crops");
    cli.add("save", t.save, "checkpoint path");
  }
  bool parse(const std::vector<std::string>& args) { return cli.parse(args, help); }
};

/// The value_error message parsing `args` raises; fails the test when none is raised.
inline std::string error_of(const std::vector<std::string>& args) {
  parser p;
  try {
    p.parse(args);
  } catch (const moekit::value_error& e) {
    return e.what();
  }
  FAIL("no value_error for the arguments");
  return {};
}

}  // namespace cli_flags_test

using cli_flags_test::error_of;
using cli_flags_test::parser;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

TEST_CASE("flags: --name value, --name=value and booleans set every kind of target", "[io][flags]") {
  parser p;
  REQUIRE(p.parse({"--threads", "4", "--batch=128", "--seed", "18446744073709551615", "--lr", "-2.5e-4",
                   "--warmup=0.25", "--augment", "--save", "out/run.safetensors"}));
  CHECK(p.t.threads == 4);
  CHECK(p.t.batch == 128);
  CHECK(p.t.seed == 18446744073709551615ull);
  CHECK(p.t.lr == -2.5e-4);
  CHECK(p.t.warmup == 0.25f);
  CHECK(p.t.augment);
  CHECK(p.t.save == "out/run.safetensors");
  CHECK(p.help.str().empty());

  parser q;  // --no-name, --name=false, the last of a repeated flag; the rest keep their defaults
  REQUIRE(q.parse({"--augment", "--no-augment", "--threads", "2", "--threads", "3"}));
  CHECK_FALSE(q.t.augment);
  CHECK(q.t.threads == 3);
  CHECK(q.t.lr == 1e-3);
  CHECK(q.t.save.empty());
  parser r;
  REQUIRE(r.parse({"--augment=false", "--threads", "010"}));  // base 10: 010 is ten, not octal eight
  CHECK_FALSE(r.t.augment);
  CHECK(r.t.threads == 10);
  for (const char* word : {"true", "yes", "on", "1"}) {  // every accepted spelling, both polarities
    parser on, off;
    REQUIRE(on.parse({std::string("--augment=") + word}));
    CHECK(on.t.augment);
    off.t.augment = true;
    REQUIRE(off.parse({std::string("--no-augment=") + word}));
    CHECK_FALSE(off.t.augment);
  }
  parser z;
  z.t.augment = true;
  REQUIRE(z.parse({"--augment=off"}));
  CHECK_FALSE(z.t.augment);
}

TEST_CASE("flags: --help prints every flag with its default and parses nothing", "[io][flags]") {
  parser p;
  CHECK_FALSE(p.parse({"--threads", "4", "--help"}));
  const std::string help = p.help.str();
  CHECK_THAT(help, Contains("A program for the tests."));
  CHECK_THAT(help, Contains("--lr"));
  CHECK_THAT(help, Contains("learning rate (default: 0.001)"));
  CHECK_THAT(help, Contains("--no-augment"));
  CHECK_THAT(help, Contains("checkpoint path (default: \"\")"));
  CHECK(p.t.threads == 1);
  parser q;
  CHECK_FALSE(q.parse({"-h"}));
  CHECK(q.help.str() == help);
}

TEST_CASE("flags: unknown flags and stray arguments raise value_error naming them", "[io][flags]") {
  CHECK(error_of({"--thread", "4"}) == "unknown flag --thread (see --help)");
  CHECK(error_of({"--lr=0.1", "--bogus=3"}) == "unknown flag --bogus (see --help)");
  CHECK(error_of({"-x"}) == "unknown flag -x (see --help)");
  CHECK_THAT(error_of({"4"}), StartsWith("unexpected argument '4'"));
  CHECK_THAT(error_of({"--augment", "false"}), StartsWith("unexpected argument 'false'"));
  CHECK_THAT(error_of({"--augment=maybe"}), Contains("--augment") && Contains("maybe"));
  // CLI11 reads other text with std::stoll, whose out_of_range escaped it (found by fuzz_flags)
  CHECK(error_of({"--no-augment=99999999999999999999"}) ==
        "--no-augment: expected true or false (yes/no, on/off, 1/0), got '99999999999999999999'");
  CHECK(error_of({"--augment=2"}) == "--augment: expected true or false (yes/no, on/off, 1/0), got '2'");
}

TEST_CASE("flags: a missing or malformed value raises value_error naming the flag and the text", "[io][flags]") {
  CHECK_THAT(error_of({"--lr"}), StartsWith("--lr") && Contains("missing"));
  CHECK_THAT(error_of({"--save="}), StartsWith("--save") && Contains("missing"));
  CHECK(error_of({"--lr", "abc"}) == "--lr: expected a number, got 'abc'");
  CHECK(error_of({"--lr", "1e-3x"}) == "--lr: expected a number, got '1e-3x'");
  CHECK(error_of({"--lr", "--threads", "3"}) == "--lr: expected a number, got '--threads'");
  CHECK(error_of({"--threads", "1.5"}) == "--threads: expected an integer, got '1.5'");
  CHECK(error_of({"--threads", "0x10"}) == "--threads: expected an integer, got '0x10'");
  CHECK(error_of({"--threads", " 4"}) == "--threads: expected an integer, got ' 4'");
}

TEST_CASE("flags: integers outside the target type and negatives for unsigned flags are rejected", "[io][flags]") {
  CHECK(error_of({"--threads", "99999999999"}) == "--threads: '99999999999' is outside [-2147483648, 2147483647]");
  CHECK(error_of({"--threads=-99999999999"}) == "--threads: '-99999999999' is outside [-2147483648, 2147483647]");
  CHECK_THAT(error_of({"--batch", "-1"}), StartsWith("--batch: '-1' is outside [0, "));
  CHECK_THAT(error_of({"--seed", "18446744073709551616"}), StartsWith("--seed: '18446744073709551616' is outside"));
  CHECK(error_of({"--lr", "1e999"}) == "--lr: '1e999' is out of range");
}

TEST_CASE("flags: non-finite values of floating flags are rejected", "[io][flags]") {
  for (const char* text : {"inf", "-inf", "nan", "-nan", "infinity", "NaN"}) {
    CHECK(error_of({"--lr", text}) == "--lr: expected a finite number, got '" + std::string(text) + "'");
    CHECK(error_of({std::string("--warmup=") + text}) ==
          "--warmup: expected a finite number, got '" + std::string(text) + "'");
  }
}

TEST_CASE("flags: parse(argc, argv) skips the program name and tolerates argc 0", "[io][flags]") {
  parser p;
  const char* argv[] = {"prog", "--threads", "6", nullptr};
  REQUIRE(p.cli.parse(3, argv, p.help));
  CHECK(p.t.threads == 6);
  parser q;
  REQUIRE(q.cli.parse(0, argv, q.help));
  CHECK(q.t.threads == 1);
}

TEST_CASE("require_writable_parent: an output path into a missing folder or onto a folder is refused at once",
          "[io][flags]") {
  using moekit::examples::require_writable_parent;
  moekit::testing::temp_dir dir("cli_flags");
  CHECK_NOTHROW(require_writable_parent("--save", ""));
  CHECK_NOTHROW(require_writable_parent("--save", (dir / "run.safetensors").string()));
  const std::string missing = (dir / "no_such_folder").string();
  CHECK_THROWS_MATCHES(require_writable_parent("--save", missing + "/run.safetensors"), moekit::value_error,
                       Catch::Matchers::Message("--save: folder '" + missing + "' does not exist"));
  CHECK_THROWS_MATCHES(require_writable_parent("--csv", dir.path.string()), moekit::value_error,
                       Catch::Matchers::Message("--csv: '" + dir.path.string() + "' is a folder, not a file"));
  const std::string file = (dir / "a_file").string();
  std::ofstream(file) << "x";
  CHECK_THROWS_MATCHES(require_writable_parent("--csv", file + "/out.csv"), moekit::value_error,
                       Catch::Matchers::Message("--csv: '" + file + "' is not a folder"));
}

// Durable checkpoints (io/atomic_file.hpp): a writer killed at random points
// leaves the old or the new file, never a mix; two threads share no temporary
// file; stale temporary files of dead writers go at the next save; failed
// writes are io_errors that leave the old file and no temporary file.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/temp_dir.hpp"
#include <moekit/autograd/ops/loss.hpp>
#include <moekit/autograd/tape.hpp>
#include <moekit/core/random.hpp>
#include <moekit/io/checkpoint.hpp>
#include <moekit/nn/linear.hpp>
#include <moekit/optim/adamw.hpp>
#include <moekit/tensor/ops/creation.hpp>

namespace checkpoint_durable_test {

using namespace moekit;
using moekit::testing::temp_dir;
namespace fs = std::filesystem;

/// Two linear layers, 32 -> 128 -> 8 (about 5k parameters).
struct two_layers {
  rng g;
  nn::linear<dyn, dyn> up{g, 32, 128};
  nn::linear<dyn, dyn> down{g, 128, 8};
  explicit two_layers(std::uint64_t seed) : g(seed) {}
  void parameters(auto&& visit) {
    visit("up", up);
    visit("down", down);
  }
};

/// A model and its AdamW after `steps` steps (so the moments are saved too),
/// tagged "state" = `tag` in the checkpoint's metadata.
struct state {
  two_layers model;
  optim::adamw<float> opt{model};
  io::metadata_map meta;

  state(std::uint64_t seed, int steps, const std::string& tag) : model(seed), meta{{"state", tag}} {
    rng g(seed + 100);
    tensor<index_t, shape<dyn>> labels(shape<dyn>{4});
    for (std::size_t i = 0; i < 4; ++i) labels[i] = static_cast<index_t>(i);
    for (int s = 0; s < steps; ++s) {
      tape t;
      opt.zero_grad();
      auto x = t.input(normal<float>(g, shape<dyn, dyn>{4, 32}));  // (4, 32)
      t.backward(cross_entropy(model.down(model.up(x)), labels));   // (4, 8) logits
      opt.step();
    }
  }
  void save(const fs::path& file) { io::save_checkpoint(file, model, opt, meta); }
};

/// A scratch folder in memory (/dev/shm) where there is one, else in the temp
/// folder. The kill test checks atomicity against a process's death, for which
/// the file system does not matter; in memory fsync is cheap, so 50 kills take
/// about a second even on a slow disk.
struct memory_dir {
  fs::path path;
  explicit memory_dir(const std::string& tag) {
    std::error_code ec;
    const fs::path base = fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0
                              ? fs::path("/dev/shm")
                              : fs::temp_directory_path();
    path = base / ("moekit_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~memory_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  memory_dir(const memory_dir&) = delete;
  memory_dir& operator=(const memory_dir&) = delete;
  fs::path operator/(const std::string& name) const { return path / name; }
};

/// Every parameter value of `m`, in visiting order.
std::vector<float> values_of(two_layers& m) {
  std::vector<float> out;
  visit_parameters(m, [&](const std::string&, auto& p) {
    for (std::size_t i = 0; i < p.size(); ++i) out.push_back(p.value()[i]);
  });
  return out;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream is(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
}

/// The names of the temporary files of `file` in its folder.
std::vector<std::string> temps_of(const fs::path& file) {
  std::vector<std::string> out;
  const std::string prefix = file.filename().string() + ".tmp.";
  for (const auto& e : fs::directory_iterator(file.parent_path()))
    if (e.path().filename().string().starts_with(prefix)) out.push_back(e.path().filename().string());
  return out;
}

/// The pid of a child that has exited and been reaped: a pid nobody has now.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

/// The child of the kill test: saves `a` and `b` alternately until killed,
/// writing one byte to `started` after its first save (so that the parent's
/// random delay counts from a running writer, not from a fork that a loaded
/// or sanitized machine may take longer to finish than the delay).
/// Never returns into Catch2; exit code 3 means a save threw.
[[noreturn]] void save_until_killed(const fs::path& file, state& a, state& b, int started) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a parent that died
  try {
    for (int i = 0; i < 100000; ++i) {
      a.save(file);
      if (i == 0 && ::write(started, "s", 1) != 1) ::_exit(4);
      b.save(file);
    }
  } catch (...) {
    ::_exit(3);
  }
  ::_exit(2);
}

/// Checks that `file` holds the complete state A or B: the same bytes as that
/// state's own save; with `load`, also loads it into fresh objects and
/// compares the tag, every parameter and the optimizer's step count.
void check_complete(const fs::path& file, const std::string& bytes_a, const std::string& bytes_b, state& a,
                    state& b, bool load = true) {
  const std::string now = bytes_of(file);
  const bool is_a = now == bytes_a, is_b = now == bytes_b;
  INFO("file of " << now.size() << " bytes; A has " << bytes_a.size() << ", B " << bytes_b.size());
  REQUIRE((is_a || is_b));
  if (!load) return;
  state fresh(99, 0, "fresh");
  const auto meta = io::load_checkpoint(file, fresh.model, fresh.opt);
  REQUIRE(meta.at("state") == (is_a ? "A" : "B"));
  REQUIRE(values_of(fresh.model) == values_of(is_a ? a.model : b.model));
  REQUIRE(fresh.opt.steps() == (is_a ? a.opt.steps() : b.opt.steps()));
}

TEST_CASE("durable checkpoints: a writer killed at random points leaves the old or the new file",
          "[io][durable]") {
  memory_dir dir("durable_kill"), ref("durable_ref");
  const auto file = dir / "run.safetensors";
  state a(1, 1, "A"), b(2, 2, "B");
  a.save(ref / "a");
  b.save(ref / "b");
  const std::string bytes_a = bytes_of(ref / "a"), bytes_b = bytes_of(ref / "b");
  REQUIRE(bytes_a != bytes_b);

  // Kill delays span a few saves, as long as a save takes on this machine.
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 4; ++i) a.save(file);
  const auto save_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0) / 4;
  std::mt19937_64 gen(15);
  std::uniform_int_distribution<std::int64_t> delay_us(0, 3 * save_us.count() + 200);

  const int kills = 50;
  int left_temp = 0;  // kills that caught the child between creating and renaming its temporary file
  for (int k = 0; k < kills; ++k) {
    int started[2];
    REQUIRE(::pipe(started) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::close(started[0]);
      save_until_killed(file, a, b, started[1]);
    }
    ::close(started[1]);
    char byte = 0;
    const auto got = ::read(started[0], &byte, 1);  // 1: the child's first save is done; 0: it died first
    ::close(started[0]);
    REQUIRE(got == 1);
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(gen)));
    ::kill(child, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    INFO("kill " << k);
    REQUIRE(WIFSIGNALED(status));  // not exited: no save threw
    check_complete(file, bytes_a, bytes_b, a, b, k % 10 == 0);
    // At most one: each child removes its dead predecessor's before writing.
    const auto temps = temps_of(file);
    REQUIRE(temps.size() <= 1);
    left_temp += static_cast<int>(temps.size());
  }
  CHECK(left_temp > 0);  // some kills did land mid-write

  // One more save by the parent: the killed writer's temporary file is gone.
  b.save(file);
  REQUIRE(temps_of(file).empty());
  check_complete(file, bytes_a, bytes_b, a, b);
}

TEST_CASE("durable checkpoints: two threads saving to one path", "[io][durable]") {
  temp_dir dir("durable_threads"), ref("durable_threads_ref");
  const auto file = dir / "run.safetensors";
  state a(3, 1, "A"), b(4, 1, "B");
  a.save(ref / "a");
  b.save(ref / "b");
  std::atomic<int> failures{0};
  const auto writer = [&](state& s) {
    for (int i = 0; i < 15; ++i) {
      try {
        s.save(file);
      } catch (...) {
        ++failures;
      }
    }
  };
  std::thread ta(writer, std::ref(a)), tb(writer, std::ref(b));
  ta.join();
  tb.join();
  REQUIRE(failures == 0);
  check_complete(file, bytes_of(ref / "a"), bytes_of(ref / "b"), a, b);
  REQUIRE(temps_of(file).empty());
}

TEST_CASE("durable checkpoints: stale temporary files of dead writers are removed", "[io][durable]") {
  temp_dir dir("durable_stale");
  const auto file = dir / "run.safetensors";
  const std::string name = "run.safetensors.tmp.";
  const std::string dead = std::to_string(dead_pid());
  const std::string alive = std::to_string(::getppid());  // our parent (ctest, a shell) lives on
  const std::string self = std::to_string(::getpid());
  const auto touch = [&](const std::string& f) { std::ofstream(dir / f) << "partial"; };

  touch(name + dead + ".0");          // a dead writer (this version's names)
  touch(name + dead);                 // a dead writer (older versions' names)
  touch(name + self + ".123456789");  // this pid, but no write of ours in flight: an earlier process's
  touch(name + alive + ".0");         // a live process may still be writing it: kept
  touch(name + dead + ".x");          // not a temporary file name of ours: kept
  touch(name + "abc");
  touch("other.safetensors.tmp." + dead + ".0");  // another target's: kept
  fs::create_directories(dir / (name + dead + ".1"));  // folders are never removed

  state a(5, 1, "A");
  a.save(file);
  const auto left = temps_of(file);
  const std::vector<std::string> expect{name + alive + ".0", name + dead + ".1", name + dead + ".x", name + "abc"};
  REQUIRE(std::is_permutation(left.begin(), left.end(), expect.begin(), expect.end()));
  REQUIRE(fs::exists(dir / ("other.safetensors.tmp." + dead + ".0")));
  state fresh(6, 0, "fresh");
  REQUIRE(io::load_checkpoint(file, fresh.model, fresh.opt).at("state") == "A");
}

TEST_CASE("durable checkpoints: a record with no bytes (null data) is written and read back", "[io][durable]") {
  // Found by fuzz/make_seeds under UBSan: the durable writer passed the empty
  // record's null pointer to memcpy.
  temp_dir dir("durable_empty");
  const auto file = dir / "empty.safetensors";
  const std::vector<io::tensor_record> records{{"empty", "F32", {0}, {}}, {"one", "F32", {1}, {}}};
  const float x = 2.5F;
  auto with_data = records;
  with_data[1].bytes = std::as_bytes(std::span<const float>(&x, 1));
  io::save_safetensors(file, with_data);
  const auto back = io::read_safetensors(file);
  REQUIRE(back.tensors.size() == 2);
  REQUIRE(back.expect("empty", "F32", std::vector<std::size_t>{0}).bytes.empty());
  REQUIRE(back.expect("one", "F32", std::vector<std::size_t>{1}).bytes.size() == sizeof(float));
}

TEST_CASE("durable checkpoints: failed writes are io_errors and leave the old file", "[io][durable]") {
  temp_dir dir("durable_fail");
  state a(7, 1, "A"), b(8, 1, "B");

  SECTION("the folder does not exist") {
    const auto nowhere = dir / "missing" / "run.safetensors";
    REQUIRE_THROWS_WITH(a.save(nowhere),
                        Catch::Contains(nowhere.string()) && Catch::Contains("No such file or directory"));
    REQUIRE_FALSE(fs::exists(dir / "missing"));
  }
  SECTION("the folder is a file") {
    std::ofstream(dir / "plain") << "not a folder";
    const auto inside = dir / "plain" / "run.safetensors";
    REQUIRE_THROWS_AS(a.save(inside), io_error);
    REQUIRE_THROWS_WITH(a.save(inside), Catch::Contains(inside.string()) && Catch::Contains("Not a directory"));
  }
  SECTION("a write fails half-way (file size limit): old file intact, no temporary file") {
    const auto file = dir / "run.safetensors";
    a.save(file);
    const std::string old_bytes = bytes_of(file);
    // In a child: RLIMIT_FSIZE makes write(2) fail with EFBIG past 4 KiB.
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::signal(SIGXFSZ, SIG_IGN);
      const rlimit limit{4096, 4096};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(10);
      try {
        b.save(file);
        ::_exit(11);  // the save did not fail
      } catch (const io_error& e) {
        const std::string what = e.what();
        if (what.find(file.string()) == std::string::npos || what.find("File too large") == std::string::npos)
          ::_exit(12);
      } catch (...) {
        ::_exit(13);
      }
      ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);  // 11: no error, 12: message without the path or cause, 13: not io_error
    const bool intact = bytes_of(file) == old_bytes;
    REQUIRE(intact);
    REQUIRE(temps_of(file).empty());
  }
}

}  // namespace checkpoint_durable_test

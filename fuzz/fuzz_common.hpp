// fuzz/fuzz_common.hpp — what the libFuzzer targets share: the rule for
// which exceptions are expected, and a per-process scratch folder for the
// loaders that only read files (on tmpfs where there is one).
//
// A finding is anything but a moekit::error subclass: a crash, a sanitizer
// report, another exception type (std::bad_alloc included, which escapes
// run() and aborts), a timeout or more memory than -rss_limit_mb.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>

#include <moekit/core/error.hpp>

namespace moekit_fuzz {

/// Calls f(); moekit::error is the loaders' documented answer to bad input
/// and is swallowed (printed when MOEKIT_FUZZ_VERBOSE is set, to check that
/// the seeds are accepted); every other exception propagates and aborts the run.
template <class F>
int run(F&& f) {
  static const bool verbose = std::getenv("MOEKIT_FUZZ_VERBOSE") != nullptr;
  try {
    f();
    if (verbose) std::fprintf(stderr, "accepted\n");
  } catch (const moekit::error& e) {
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
  }
  return 0;
}

/// A folder of this process, made on first use and removed at a normal exit
/// (scripts/fuzz removes it after a crash): /dev/shm/moekit_fuzz.<pid> when
/// /dev/shm exists (no disk writes per input), the system temp folder otherwise.
class scratch {
 public:
  scratch() {
    std::error_code ec;
    const std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec)
                                           ? std::filesystem::path("/dev/shm")
                                           : std::filesystem::temp_directory_path();
    dir_ = base / ("moekit_fuzz." + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  ~scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  const std::filesystem::path& dir() const noexcept { return dir_; }

 private:
  std::filesystem::path dir_;
};

inline const std::filesystem::path& scratch_dir() {
  static const scratch s;
  return s.dir();
}

/// Writes `bytes` to `path`, replacing it.
inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream os(path, std::ios::binary | std::ios::trunc);
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace moekit_fuzz

// examples/common/output_path.hpp — checks an output-file flag (--save,
// --csv) before any work is done, so that a run told to write into a missing
// folder fails at once rather than after an epoch of training.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

#include <moekit/core/error.hpp>

namespace moekit::examples {

/// Throws value_error naming `flag` and the folder unless the folder `path`
/// would be written in exists and this process may create files there, and
/// `path` is not itself a folder. An empty path (the flag not given) passes.
inline void require_writable_parent(const std::string& flag, const std::string& path) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  fs::path folder = fs::path(path).parent_path();
  if (folder.empty()) folder = ".";
  std::error_code ec;
  if (!fs::exists(folder, ec)) throw value_error(flag + ": folder '" + folder.string() + "' does not exist");
  if (!fs::is_directory(folder, ec)) throw value_error(flag + ": '" + folder.string() + "' is not a folder");
  if (::access(folder.c_str(), W_OK | X_OK) != 0)
    throw value_error(flag + ": folder '" + folder.string() + "' is not writable");
  if (fs::is_directory(path, ec)) throw value_error(flag + ": '" + path + "' is a folder, not a file");
}

}  // namespace moekit::examples

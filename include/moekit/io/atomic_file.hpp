// moekit/io/atomic_file.hpp — replace a file durably and atomically (POSIX).
//
//   io::write_file_atomically(path, [&](std::ostream& os) { os.write(bytes, n); });
//
// The body writes to a temporary file `<name>.tmp.<pid>.<n>` beside `path`
// (n counts this process's writes, so two threads never share one), created
// with O_CREAT | O_EXCL. The file is then flushed, fsync'ed, closed and renamed
// onto `path`, and the folder is fsync'ed: after a crash, a kill or a power
// loss, `path` holds either its old contents or the complete new ones. On any
// failure before the rename the temporary file is removed, `path` is untouched,
// and io_error names `path` and the failed call (with strerror). If only the
// final fsync of the folder fails, the new file is in place but may not survive
// a power loss: that is an io_error too.
//
// Stale temporary files: before each write, files named `<name>.tmp.<pid>.<n>`
// (or `<name>.tmp.<pid>`, as older versions wrote) whose writer is gone are
// removed: those of a pid that no longer exists (kill(pid, 0) fails with
// ESRCH), and those of this process's pid that no write of this process has in
// flight (left by an earlier process that had the same pid, as restarted
// containers do). Files of another live process are kept, even if that pid
// merely reuses the number of a dead writer; so are folders and links. Writers
// are assumed to share one pid namespace (not two containers on one volume).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <ostream>
#include <set>
#include <streambuf>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include "../core/error.hpp"

namespace moekit::io {

namespace detail {

/// An output stream buffer over a file descriptor; remembers the errno of the
/// first failed write(2) (and then refuses further writes).
class fd_streambuf : public std::streambuf {
 public:
  explicit fd_streambuf(int fd) : fd_(fd), buf_(std::size_t{1} << 16) { reset(); }
  int error() const noexcept { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (sync() != 0) return traits_type::eof();
    if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
    *pptr() = traits_type::to_char_type(ch);
    pbump(1);
    return ch;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n <= 0) return 0;  // an empty tensor's bytes may start at nullptr: memcpy must not see it
    if (n < epptr() - pptr()) {
      std::memcpy(pptr(), s, static_cast<std::size_t>(n));
      pbump(static_cast<int>(n));
      return n;
    }
    if (sync() != 0 || !write_all(s, static_cast<std::size_t>(n))) return 0;
    return n;
  }
  int sync() override {
    const bool ok = write_all(pbase(), static_cast<std::size_t>(pptr() - pbase()));
    reset();
    return ok ? 0 : -1;
  }

 private:
  void reset() { setp(buf_.data(), buf_.data() + buf_.size()); }
  bool write_all(const char* p, std::size_t n) {
    while (error_ == 0 && n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        error_ = w < 0 ? errno : EIO;
        break;
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return error_ == 0;
  }

  int fd_;
  int error_ = 0;
  std::vector<char> buf_;
};

/// Names of the temporary files this process is writing now (file names only:
/// the pid and counter make them unique across folders).
struct temp_registry {
  std::mutex mutex;
  std::set<std::string> names;
  std::size_t next = 0;  // the <n> of the next temporary file
};
inline temp_registry& in_flight_temps() {
  static temp_registry r;
  return r;
}

inline std::filesystem::path folder_of(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

/// The writer's pid if `file` is `<name>.tmp.<pid>` or `<name>.tmp.<pid>.<n>`
/// (decimal numbers), else 0.
inline pid_t temp_writer(std::string_view file, std::string_view name) {
  const std::string prefix = std::string(name) + ".tmp.";
  if (!file.starts_with(prefix)) return 0;
  file.remove_prefix(prefix.size());
  const auto digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string_view::npos;
  };
  const auto dot = file.find('.');
  const std::string_view pid = file.substr(0, dot);
  if (!digits(pid) || (dot != std::string_view::npos && !digits(file.substr(dot + 1)))) return 0;
  const long long value = std::stoll(std::string(pid));
  return value > 0 && value == static_cast<pid_t>(value) ? static_cast<pid_t>(value) : 0;
}

/// Whether the temporary file `file`, written by `pid`, has no live writer.
inline bool temp_is_stale(const std::string& file, pid_t pid) {
  if (pid == ::getpid()) {
    auto& r = in_flight_temps();
    const std::lock_guard lock(r.mutex);
    return !r.names.contains(file);
  }
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

/// Removes the stale temporary files of `path` (see the top of this file).
/// Best effort: a folder that cannot be listed or a file that cannot be
/// removed is left as it is.
inline void remove_stale_temps(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const std::string name = path.filename().string();
  std::error_code ec;
  for (fs::directory_iterator it(folder_of(path), ec), end; !ec && it != end; it.increment(ec)) {
    const std::string file = it->path().filename().string();
    const pid_t pid = temp_writer(file, name);
    std::error_code ignored;
    if (pid != 0 && fs::is_regular_file(it->symlink_status(ignored)) && temp_is_stale(file, pid))
      fs::remove(it->path(), ignored);
  }
}

/// The temporary file of one write: registered as in flight and created with
/// O_EXCL on construction; closed, removed and unregistered on destruction
/// unless committed (renamed onto the target).
class temp_file {
 public:
  temp_file(const std::filesystem::path& target, std::string_view who) : target_(target), who_(who) {
    const std::string base = target.filename().string() + ".tmp." + std::to_string(::getpid()) + ".";
    for (int attempt = 0;; ++attempt) {
      register_name(base);
      path_ = folder_of(target) / name_;
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) return;
      const int err = errno;
      unregister_name();
      if (err != EEXIST || attempt == 100) fail("cannot create " + path_.string() + ": open", err);
    }
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  ~temp_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) {
      std::error_code ignored;
      std::filesystem::remove(path_, ignored);
    }
    unregister_name();
  }

  int fd() const noexcept { return fd_; }
  const std::filesystem::path& path() const noexcept { return path_; }

  /// fsync, close and rename onto the target; io_error on failure.
  void commit() {
    if (::fsync(fd_) != 0) fail("fsync " + path_.string(), errno);
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail("close " + path_.string(), errno);
    if (::rename(path_.c_str(), target_.c_str()) != 0)
      fail("cannot rename " + path_.string() + " into place: rename", errno);
    committed_ = true;
  }

  [[noreturn]] void fail(const std::string& what, int err) const {
    throw io_error(who_ + target_.string() + ": " + what + ": " + std::strerror(err));
  }

 private:
  void register_name(const std::string& base) {
    auto& r = in_flight_temps();
    const std::lock_guard lock(r.mutex);
    name_ = base + std::to_string(r.next++);
    r.names.insert(name_);
  }
  void unregister_name() {
    if (name_.empty()) return;
    auto& r = in_flight_temps();
    const std::lock_guard lock(r.mutex);
    r.names.erase(name_);
    name_.clear();
  }

  std::filesystem::path target_;
  std::string who_;
  std::string name_;
  std::filesystem::path path_;
  int fd_ = -1;
  bool committed_ = false;
};

/// fsync of the folder holding `path`, so that the rename survives a power
/// loss. File systems that cannot sync a folder (EINVAL) are accepted.
inline void sync_folder(const std::filesystem::path& path, const std::string& who) {
  const auto folder = folder_of(path);
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const auto fail = [&](const char* call, int err) {
    throw io_error(who + path.string() + ": the new file is in place, but " + call + " of its folder " +
                   folder.string() + " failed: " + std::strerror(err));
  };
  if (fd < 0) fail("open", errno);
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int err = errno;
    ::close(fd);
    fail("fsync", err);
  }
  if (::close(fd) != 0) fail("close", errno);
}

}  // namespace detail

/// Writes `path` through `body(std::ostream&)` durably and atomically (see the
/// top of this file). `who` prefixes error messages ("safetensors: ").
/// Exceptions of `body` propagate after the temporary file is removed.
template <class Body>
void write_file_atomically(const std::filesystem::path& path, Body&& body, std::string_view who = "") {
  detail::remove_stale_temps(path);
  detail::temp_file tmp(path, who);
  {
    detail::fd_streambuf buf(tmp.fd());
    std::ostream os(&buf);
    std::forward<Body>(body)(os);
    os.flush();
    if (buf.error() != 0) tmp.fail("write " + tmp.path().string(), buf.error());
    if (!os) tmp.fail("write " + tmp.path().string(), EIO);
  }
  tmp.commit();
  detail::sync_folder(path, std::string(who));
}

}  // namespace moekit::io

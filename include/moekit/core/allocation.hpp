// moekit/core/allocation.hpp — the allocation limit: the most bytes one
// allocation of tensor storage (any backend) may ask for. A larger request is
// an allocation_error naming the size, not a std::bad_alloc or the OOM killer;
// loaders compare what a file declares with it before allocating.
//
//   moekit::set_allocation_limit(std::size_t{8} << 30);   // 8 GiB per tensor
//   {
//     moekit::scoped_allocation_limit cap(1 << 20);        // 1 MiB in this scope
//   }
//
// The default is the environment variable MOEKIT_MAX_ALLOC_BYTES (decimal
// bytes) when set, else the machine's physical memory, else no limit.
#pragma once

#include <atomic>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <unistd.h>

#include "error.hpp"

namespace moekit {

/// set_allocation_limit(no_allocation_limit) lifts the limit.
inline constexpr std::size_t no_allocation_limit = SIZE_MAX;

namespace detail {

/// "10000000000 bytes (9.31 GiB)".
inline std::string bytes_str(std::size_t bytes) {
  char gib[32];
  std::snprintf(gib, sizeof gib, "%.2f", static_cast<double>(bytes) / double(std::size_t{1} << 30));
  return std::to_string(bytes) + " bytes (" + gib + " GiB)";
}

/// MOEKIT_MAX_ALLOC_BYTES when set (value_error naming it when not a positive
/// decimal integer), else physical memory, else no limit.
inline std::size_t default_allocation_limit() {
  if (const char* env = std::getenv("MOEKIT_MAX_ALLOC_BYTES"); env && *env) {
    const std::string_view s(env);
    std::size_t v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc{} || r.ptr != s.data() + s.size() || v == 0)
      throw value_error("MOEKIT_MAX_ALLOC_BYTES='" + std::string(s) +
                        "' is not a positive number of bytes (unset it for the default)");
    return v;
  }
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0 && static_cast<std::size_t>(pages) <= SIZE_MAX / static_cast<std::size_t>(page))
    return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page);
#endif
  return no_allocation_limit;
}

inline std::atomic<std::size_t>& allocation_limit_value() {
  static std::atomic<std::size_t> limit{default_allocation_limit()};
  return limit;
}

}  // namespace detail

/// The most bytes one tensor allocation may take (see the file comment).
inline std::size_t allocation_limit() { return detail::allocation_limit_value().load(std::memory_order_relaxed); }

/// Sets the limit for every thread; returns the previous one.
inline std::size_t set_allocation_limit(std::size_t bytes) {
  return detail::allocation_limit_value().exchange(bytes, std::memory_order_relaxed);
}

/// allocation_error naming `op` and the size when `bytes` is over the limit.
inline void check_allocation(std::size_t bytes, std::string_view op) {
  const std::size_t limit = allocation_limit();
  if (bytes > limit)
    throw allocation_error(std::string(op) + ": " + detail::bytes_str(bytes) + " is more than the allocation limit of " +
                           detail::bytes_str(limit) + " (moekit::set_allocation_limit, MOEKIT_MAX_ALLOC_BYTES)");
}

/// Sets the limit for its lifetime, then restores the previous one.
class scoped_allocation_limit {
 public:
  explicit scoped_allocation_limit(std::size_t bytes) : previous_(set_allocation_limit(bytes)) {}
  ~scoped_allocation_limit() { set_allocation_limit(previous_); }
  scoped_allocation_limit(const scoped_allocation_limit&) = delete;
  scoped_allocation_limit& operator=(const scoped_allocation_limit&) = delete;

 private:
  std::size_t previous_;
};

}  // namespace moekit

// moekit/backend/cpu/pool.hpp — a size-class caching allocator for host memory.
// Steady-state training steps allocate and free the same sizes over and over;
// serving them from per-thread free lists keeps malloc off the hot path and
// makes small-tensor ops cheap.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace moekit::detail {

class host_pool {
 public:
  static constexpr std::size_t alignment = 64;
  static constexpr std::size_t max_cached_bytes = std::size_t{2} << 30;
  /// No block is larger (class_bytes of anything up to it does not wrap).
  static constexpr std::size_t max_block_bytes = SIZE_MAX / 2;

  static host_pool& local() noexcept {
    thread_local host_pool pool;
    return pool;
  }

  /// Rounds `bytes` up to its size class: a multiple of 64 B (aligned_alloc
  /// needs a multiple of the alignment), 4 classes per power of two from 256 B
  /// on, so the waste stays under 25 % there.
  static constexpr std::size_t class_bytes(std::size_t bytes) noexcept {
    if (bytes <= alignment) return alignment;
    const std::size_t step = std::max(alignment, std::bit_floor(bytes - 1) / 4);
    return (bytes + step - 1) / step * step;
  }

  /// std::bad_alloc when the system has no such block (tensor storage turns it
  /// into moekit::allocation_error); sizes near SIZE_MAX, whose class would
  /// wrap, are refused the same way.
  void* allocate(std::size_t bytes) {
    if (bytes > max_block_bytes) throw std::bad_alloc();
    const std::size_t n = class_bytes(bytes);
    if (auto* list = free_list(n); list && !list->empty()) {
      void* p = list->back();
      list->pop_back();
      cached_ -= n;
      return p;
    }
    void* p = std::aligned_alloc(alignment, n);
    if (!p) throw std::bad_alloc();
    return p;
  }

  void deallocate(void* p, std::size_t bytes) noexcept {
    if (!p) return;
    const std::size_t n = class_bytes(bytes);
    auto* list = alive() ? free_list(n) : nullptr;
    if (!list || cached_ + n > max_cached_bytes) return std::free(p);
    try {
      list->push_back(p);
      cached_ += n;
    } catch (...) {
      std::free(p);
    }
  }

  /// Returns every cached block to the system.
  void release() noexcept {
    for (auto& [size, list] : lists_) {
      for (void* p : list) std::free(p);
      list.clear();
    }
    cached_ = 0;
  }

  ~host_pool() {
    release();
    dead() = true;
  }

 private:
  host_pool() = default;

  // Storage freed after this thread's pool died (static tensors at exit) goes
  // straight back to the system.
  static bool& dead() noexcept {
    thread_local bool d = false;
    return d;
  }
  static bool alive() noexcept { return !dead(); }

  // Classes are few: an open-addressed table keyed by class size.
  std::vector<void*>* free_list(std::size_t n) noexcept {
    const std::size_t h = (n * 0x9E3779B97F4A7C15ull) >> 58;  // 64 buckets
    for (std::size_t i = 0; i < lists_.size(); ++i) {
      auto& [size, list] = lists_[(h + i) % lists_.size()];
      if (size == n) return &list;
      if (size == 0) {
        size = n;
        return &list;
      }
    }
    return nullptr;  // table full: fall back to malloc/free for this size
  }

  std::array<std::pair<std::size_t, std::vector<void*>>, 64> lists_{};
  std::size_t cached_ = 0;
};

}  // namespace moekit::detail

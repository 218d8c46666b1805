// moekit/tensor/storage.hpp — reference-counted, 64-byte aligned memory of a
// backend. Tensors are handles to it: copies share, `clone()` copies.
#pragma once

#include <atomic>
#include <cstddef>
#include <new>
#include <string>
#include <utility>

#include "../backend/backend.hpp"
#include "../backend/cpu/pool.hpp"
#include "../core/allocation.hpp"
#include "../core/error.hpp"

namespace moekit::detail {

/// The control block lives in host memory even when the data lives on a device.
struct storage_block {
  std::atomic<int> refs;
  std::size_t bytes;
  void* data;
};

template <backend B>
class storage_ref {
 public:
  storage_ref() noexcept = default;

  /// allocation_error naming the size when `bytes` is over allocation_limit()
  /// or the allocator refuses it (std::bad_alloc does not escape).
  static storage_ref allocate(std::size_t bytes) {
    check_allocation(bytes, allocate_op());
    auto& pool = host_pool::local();
    void* mem = nullptr;
    void* data = nullptr;
    try {
      mem = pool.allocate(sizeof(storage_block));
      data = B::allocate(bytes == 0 ? 1 : bytes);
    } catch (const std::bad_alloc&) {
      if (mem) pool.deallocate(mem, sizeof(storage_block));
      throw allocation_error(allocate_op() + ": " + bytes_str(bytes) + ": out of memory");
    } catch (...) {
      if (mem) pool.deallocate(mem, sizeof(storage_block));
      throw;
    }
    return storage_ref(new (mem) storage_block{{1}, bytes, data});
  }

  storage_ref(const storage_ref& o) noexcept : b_(o.b_) {
    if (b_) b_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  storage_ref(storage_ref&& o) noexcept : b_(std::exchange(o.b_, nullptr)) {}
  storage_ref& operator=(storage_ref o) noexcept {
    std::swap(b_, o.b_);
    return *this;
  }
  ~storage_ref() { release(); }

  void* data() const noexcept { return b_ ? b_->data : nullptr; }
  std::size_t bytes() const noexcept { return b_ ? b_->bytes : 0; }
  int use_count() const noexcept { return b_ ? b_->refs.load(std::memory_order_relaxed) : 0; }
  explicit operator bool() const noexcept { return b_ != nullptr; }

 private:
  explicit storage_ref(storage_block* b) noexcept : b_(b) {}

  static std::string allocate_op() { return "allocate (" + std::string(B::name) + ")"; }

  void release() noexcept {
    if (b_ && b_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      B::deallocate(b_->data, b_->bytes == 0 ? 1 : b_->bytes);
      b_->~storage_block();
      host_pool::local().deallocate(b_, sizeof(storage_block));
    }
    b_ = nullptr;
  }

  storage_block* b_ = nullptr;
};

}  // namespace moekit::detail

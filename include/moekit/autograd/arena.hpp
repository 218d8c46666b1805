// moekit/autograd/arena.hpp — a bump allocator for tape nodes. Chunks are kept
// across reset(), so a steady-state training step allocates nothing here.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <vector>

namespace moekit::detail {

class arena {
 public:
  static constexpr std::size_t chunk_bytes = std::size_t{1} << 16;

  /// `bytes` of storage aligned to `align` (at most alignof(std::max_align_t) * 4).
  void* allocate(std::size_t bytes, std::size_t align) {
    for (;;) {
      if (current_ < chunks_.size()) {
        auto& c = chunks_[current_];
        const std::size_t at = (used_ + align - 1) / align * align;
        if (at + bytes <= c.size) {
          used_ = at + bytes;
          return c.data.get() + at;
        }
        ++current_;
        used_ = 0;
        continue;
      }
      chunks_.push_back(chunk{std::max(chunk_bytes, bytes + align)});
    }
  }

  /// Forgets every allocation; the chunks stay for reuse.
  void reset() noexcept {
    current_ = 0;
    used_ = 0;
  }

 private:
  struct chunk {
    explicit chunk(std::size_t n)
        : data(static_cast<std::byte*>(::operator new(n, std::align_val_t{64}))), size(n) {}
    struct deleter {
      void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{64}); }
    };
    std::unique_ptr<std::byte, deleter> data;
    std::size_t size;
  };
  std::vector<chunk> chunks_;
  std::size_t current_ = 0;
  std::size_t used_ = 0;
};

}  // namespace moekit::detail

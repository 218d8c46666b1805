// moekit/data/batching.hpp — deterministic shuffling and mini-batches.
//
//   rng g(seed);
//   for (int epoch = 0; epoch < epochs; ++epoch)
//     for (auto idx : data::batcher(data::shuffled_indices(n, g), 128)) {
//       auto x = data::gather_batch(images, idx);   // (batch, 784)
//       auto y = data::gather_batch(labels, idx);   // (batch)
//     }
//
// The order depends only on the generator's (seed, offset), never on threads.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../tensor/ops/creation.hpp"
#include "../tensor/ops/index.hpp"
#include "../tensor/tensor.hpp"

namespace moekit::data {

namespace detail {

/// The high 64 bits of a * b.
constexpr std::uint64_t mul_high(std::uint64_t a, std::uint64_t b) noexcept {
  const std::uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const std::uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
  const std::uint64_t mid = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + (lo_hi & 0xFFFFFFFFu);
  return hi_hi + (hi_lo >> 32) + (lo_hi >> 32) + (mid >> 32);
}

/// An integer in [0, n) from the words (index, index + 1) of seed's stream:
/// floor(r * n / 2^64) for a 64-bit r, so the bias is below n / 2^64 and every
/// draw uses exactly two words (callers can reserve them up front).
constexpr std::uint64_t random_below(std::uint64_t seed, std::uint64_t index, std::uint64_t n) noexcept {
  const std::uint64_t r = std::uint64_t{philox4x32::word(seed, index)} << 32 | philox4x32::word(seed, index + 1);
  return mul_high(r, n);
}

/// Index tensors hold index_t: more rows than that cannot be indexed.
inline void check_row_count(const char* op, std::size_t n) {
  if (n > static_cast<std::size_t>(std::numeric_limits<index_t>::max()))
    throw value_error(std::string(op) + ": " + std::to_string(n) + " rows exceed the index type's range");
}

}  // namespace detail

/// A uniformly random permutation of 0, ..., n-1 (Fisher–Yates). Draws
/// 2 (n - 1) words from g: the same (seed, offset) gives the same order.
inline tensor<index_t, shape<dyn>> shuffled_indices(std::size_t n, rng& g) {
  detail::check_row_count("shuffled_indices", n);
  auto order = arange<index_t>(n);  // (n)
  if (n < 2) return order;
  const std::uint64_t seed = g.seed(), offset = g.advance(2 * (n - 1));
  for (std::size_t i = n - 1, step = 0; i > 0; --i, ++step) {
    const auto j = static_cast<std::size_t>(detail::random_below(seed, offset + 2 * step, i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

/// Consecutive batches of an index order (each a view of it): batch b holds
/// positions [b B, (b + 1) B). The last batch is shorter unless `drop_last`,
/// which drops it.
class batcher {
 public:
  batcher(tensor<index_t, shape<dyn>> order, std::size_t batch_size, bool drop_last = false)
      : order_(std::move(order)), batch_(batch_size), drop_last_(drop_last) {
    if (batch_ == 0) throw value_error("batcher: batch size 0");
  }
  /// Batches of 0, ..., n-1 in order.
  batcher(std::size_t n, std::size_t batch_size, bool drop_last = false)
      : batcher((detail::check_row_count("batcher", n), arange<index_t>(n)), batch_size, drop_last) {}

  /// Number of batches.
  std::size_t size() const noexcept {
    const std::size_t n = order_.size();
    return drop_last_ ? n / batch_ : (n + batch_ - 1) / batch_;
  }
  std::size_t batch_size() const noexcept { return batch_; }

  /// Batch b: indices into the data set.
  tensor<index_t, shape<dyn>> operator[](std::size_t b) const {
    if (b >= size())
      throw value_error("batcher: batch " + std::to_string(b) + " is out of range [0, " + std::to_string(size()) + ")");
    const std::size_t begin = b * batch_, end = std::min(order_.size(), begin + batch_);
    return order_.rows(begin, end);
  }

  class iterator {
   public:
    using value_type = tensor<index_t, shape<dyn>>;
    using difference_type = std::ptrdiff_t;

    iterator() = default;
    iterator(const batcher* owner, std::size_t b) : owner_(owner), b_(b) {}
    value_type operator*() const { return (*owner_)[b_]; }
    iterator& operator++() {
      ++b_;
      return *this;
    }
    iterator operator++(int) {
      iterator old = *this;
      ++b_;
      return old;
    }
    bool operator==(const iterator& o) const noexcept { return b_ == o.b_; }

   private:
    const batcher* owner_ = nullptr;
    std::size_t b_ = 0;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, size()}; }

 private:
  tensor<index_t, shape<dyn>> order_;  // (n)
  std::size_t batch_;
  bool drop_last_;
};

/// The rows of x (n, ...) at `indices` (batch) -> (batch, ...): a batch of
/// examples or of their labels. value_error for an index outside [0, n).
/// Indices may be on x's backend or on the host (as batcher gives them): host
/// indices for a device tensor are checked on the host, then copied to it.
template <class T, class S, class SI, class B, class BI>
  requires(std::same_as<BI, B> || std::same_as<BI, cpu>)
auto gather_batch(const tensor<T, S, B>& x, const tensor<index_t, SI, BI>& indices) {
  if constexpr (!std::is_same_v<BI, B>) {
    moekit::detail::check_indices("gather_batch", indices, x.extent(0), [&] { return x.shape().str(); });
    return moekit::detail::gather_rows("gather_batch", x, indices.template to<B>());
  } else {
    return moekit::detail::gather_rows("gather_batch", x, indices);
  }
}

}  // namespace moekit::data

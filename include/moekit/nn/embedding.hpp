// moekit/nn/embedding.hpp — a learned lookup table (vocabulary, dim), drawn
// from N(0, 1) as torch.nn.Embedding. Ids of shape (N) give (N, dim); ids of
// shape (batch, seq) give (batch, seq, dim). Ids outside [0, vocabulary)
// throw value_error.
#pragma once

#include <array>

#include "../autograd/ops/index.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/parameter.hpp"
#include "../tensor/ops/creation.hpp"

namespace moekit::nn {

template <std::size_t V, std::size_t D, class T = float, backend B = cpu>
class embedding {
 public:
  using table_shape = shape<V, D>;

  explicit embedding(rng& g, std::size_t vocabulary = V, std::size_t dim = D)
      : table_(normal<T, B>(g, table_shape::from_extents(std::array{vocabulary, dim}, "embedding"))) {}

  /// ids (N) -> (N, dim).
  template <class SI>
    requires(SI::rank() == 1)
  auto operator()(const tensor<index_t, SI, B>& ids) const {
    return moekit::embedding(table_, ids);
  }
  /// ids (batch, seq) -> (batch, seq, dim).
  template <class SI>
    requires(SI::rank() == 2)
  auto operator()(const tensor<index_t, SI, B>& ids) const {
    const std::size_t batch = ids.extent(0), seq = ids.extent(1);
    auto rows = (*this)(ids.reshape(shape<dyn>{batch * seq}));  // (batch·seq, dim)
    using R = shape<SI::static_extent(0), SI::static_extent(1), D>;
    return reshape(rows, R::from_extents(std::array{batch, seq, dim()}, "embedding"));
  }

  std::size_t vocabulary() const noexcept { return table_.extent(0); }
  std::size_t dim() const noexcept { return table_.extent(1); }
  parameter<T, table_shape, B>& weight() noexcept { return table_; }

  template <class Visit>
  void parameters(Visit&& visit) {
    visit("weight", table_);
  }

 private:
  parameter<T, table_shape, B> table_;  // (vocabulary, dim)
};

}  // namespace moekit::nn

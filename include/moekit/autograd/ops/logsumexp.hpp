// moekit/autograd/ops/logsumexp.hpp — differentiable log Σ exp over the last
// axis of a (rows, cols) var, computed stably through log-softmax.
#pragma once

#include "../../core/host_device.hpp"
#include "../../tensor/ops/softmax.hpp"
#include "../tape.hpp"

namespace moekit {

namespace fn {
/// lse[r] = x[r, 0] - log_softmax(x)[r, 0].
template <class T>
struct lse_from_log_softmax {
  const T *x, *log_sm;
  std::size_t cols;
  MOEKIT_HOST_DEVICE T operator()(std::size_t r) const { return x[r * cols] - log_sm[r * cols]; }
};
/// From y = log_softmax(x): dx = dlse[r] · exp(y).
struct lse_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T y, T dlse) const { return dlse * std::exp(y); }
};
}  // namespace fn

/// (R, C) -> (R): log Σ_c exp(x[r, c]).
template <class T, class S, class B>
var<T, shape<S::static_extent(0)>, B> logsumexp_rows(const var<T, S, B>& x) {
  static_assert(S::rank() == 2, "logsumexp_rows: needs rank 2 (rows, cols)");
  using R = shape<S::static_extent(0)>;
  auto y = log_softmax(x.value());  // (R, C)
  tensor<T, R, B> lse(R::from_extents(std::array{x.extent(0)}));
  kernels<B>::generate(lse.size(), lse.data(), fn::lse_from_log_softmax<T>{x.value().data(), y.data(), x.extent(1)});
  return record("logsumexp_rows", lse, [x, y](const auto& dlse) {
    tensor<T, S, B> dx(x.shape());
    kernels<B>::map_cols(x.extent(0), x.extent(1), dx.data(), fn::lse_backward{}, y.data(), dlse.data());
    x.accumulate(dx);
  }, x);
}

}  // namespace moekit

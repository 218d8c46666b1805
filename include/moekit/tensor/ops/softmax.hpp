// moekit/tensor/ops/softmax.hpp — softmax and log-softmax over the last axis
// of a tensor of any rank (its matrix view: leading axes = rows), and the
// backward passes, which read only the forward's output.
#pragma once

#include "../tensor.hpp"

namespace moekit {

namespace detail {
/// out = kernel applied to the rows of x's matrix view.
template <class Kernel, class T, class S, class B>
tensor<T, S, B> softmax_rowwise(const tensor<T, S, B>& x, Kernel kernel) {
  static_assert(S::rank() >= 1, "softmax, log_softmax: need rank >= 1 (they normalise over the last axis)");
  const auto [rows, cols] = as_matrix(x.shape());
  tensor<T, S, B> out(x.shape());
  kernel(rows, cols, x.data(), out.data());
  return out;
}
/// dx = kernel(y, dy) over the rows of the matrix view; y and dy must have one shape.
template <class Kernel, class T, class SY, class SD, class B>
tensor<T, SY, B> softmax_rowwise_backward(const char* op, const tensor<T, SY, B>& y, const tensor<T, SD, B>& dy,
                                          Kernel kernel) {
  (void)elementwise_result(op, y.shape(), dy.shape());
  const auto [rows, cols] = as_matrix(y.shape());
  tensor<T, SY, B> dx(y.shape());
  kernel(rows, cols, y.data(), dy.data(), dx.data());
  return dx;
}
}  // namespace detail

/// exp(x) / sum(exp(x)) over the last axis; stable for large inputs.
template <class T, class S, class B>
tensor<T, S, B> softmax(const tensor<T, S, B>& x) {
  return detail::softmax_rowwise(x, [](auto... a) { kernels<B>::softmax_rows(a...); });
}
/// x - log(sum(exp(x))) over the last axis.
template <class T, class S, class B>
tensor<T, S, B> log_softmax(const tensor<T, S, B>& x) {
  return detail::softmax_rowwise(x, [](auto... a) { kernels<B>::log_softmax_rows(a...); });
}

/// dx for y = softmax(x) and the output gradient dy.
template <class T, class SY, class SD, class B>
tensor<T, SY, B> softmax_backward(const tensor<T, SY, B>& y, const tensor<T, SD, B>& dy) {
  return detail::softmax_rowwise_backward("softmax_backward", y, dy,
                                          [](auto... a) { kernels<B>::softmax_rows_backward(a...); });
}
/// dx for y = log_softmax(x) and the output gradient dy.
template <class T, class SY, class SD, class B>
tensor<T, SY, B> log_softmax_backward(const tensor<T, SY, B>& y, const tensor<T, SD, B>& dy) {
  return detail::softmax_rowwise_backward("log_softmax_backward", y, dy,
                                          [](auto... a) { kernels<B>::log_softmax_rows_backward(a...); });
}

}  // namespace moekit

// moekit/autograd/ops/top_k.hpp — differentiable top-k over the last axis:
// the selected values carry gradient back to the entries they came from; the
// indices are a plain tensor (a selection has no gradient).
#pragma once

#include <array>
#include <cstddef>

#include "../../core/host_device.hpp"
#include "../../tensor/ops/creation.hpp"
#include "../../tensor/ops/softmax.hpp"
#include "../../tensor/ops/top_k.hpp"
#include "../tape.hpp"

namespace moekit {

namespace fn {
/// Flat position in a (rows, cols) matrix of the i-th selected entry of a
/// (rows, k) selection: row i / k, column idx[i].
struct selected_position {
  const index_t* idx;
  std::size_t k, cols;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const {
    return static_cast<index_t>(i / k * cols + static_cast<std::size_t>(idx[i]));
  }
};
}  // namespace fn

namespace detail {
/// dx (rows, cols): zeros with dy (rows, k) added at the selected positions.
/// Seen as one-element rows, that is a row scatter-add at flat positions.
template <class T, class S, class SY, class SI, class B>
tensor<T, S, B> top_k_backward(const S& x_shape, const tensor<T, SY, B>& dy, const tensor<index_t, SI, B>& idx) {
  auto dx = zeros<T, B>(x_shape);
  tensor<index_t, shape<dyn>, B> flat(shape<dyn>{idx.size()});
  kernels<B>::generate(idx.size(), flat.data(), fn::selected_position{idx.data(), idx.extent(1), x_shape.extent(1)});
  kernels<B>::scatter_add_rows(idx.size(), 1, dy.data(), flat.data(), dx.data(), static_cast<const T*>(nullptr),
                               dx.size());
  return dx;
}

template <std::size_t K, class T, class S, class B>
auto top_k(const var<T, S, B>& x, std::size_t k) {
  auto sel = top_k<K>(x.value(), k);  // the tensor overload
  auto values = record("top_k", sel.values, [x, indices = sel.indices](const auto& dy) {
    x.accumulate(top_k_backward(x.shape(), dy, indices));
  }, x);
  return top_k_result<decltype(values), decltype(sel.indices)>{std::move(values), std::move(sel.indices)};
}
}  // namespace detail

/// The k largest entries of each row of x (rows, cols), descending: `values`
/// (a var, rows x k) and `indices` (a tensor). Gradient flows only to the
/// selected entries. Throws value_error unless 1 <= k <= cols.
template <class T, class S, class B>
auto top_k(const var<T, S, B>& x, std::size_t k) {
  return detail::top_k<dyn>(x, k);
}
/// With k fixed at compile time: results (rows, K).
template <std::size_t K, class T, class S, class B>
auto top_k(const var<T, S, B>& x) {
  return detail::top_k<K>(x, K);
}

/// softmax over the rows of logits (rows, cols) and its top k.
template <class VS, class VV, class I>
struct softmax_top_k_result {
  VS scores;   // (rows, cols) softmax(logits), a var
  VV values;   // (rows, k) the k largest scores, descending, a var
  I indices;   // (rows, k) their columns, a tensor
};

/// softmax(logits) and its top k from one kernel pass over each row (bit for
/// bit softmax then top_k), recorded as the same two tape nodes as softmax
/// then top_k, so the gradients are theirs: the router step of a top-k MoE.
template <class T, class S, class B>
auto softmax_top_k(const var<T, S, B>& logits, std::size_t k) {
  static_assert(S::rank() == 2, "softmax_top_k: logits must be (rows, cols)");
  using R = detail::top_k_shape_t<dyn, S>;
  detail::check_k(logits.shape(), k);
  const std::size_t rows = logits.extent(0), cols = logits.extent(1);
  const auto rs = R::from_extents(std::array{rows, k}, "softmax_top_k");
  tensor<T, S, B> probs(logits.shape());  // (rows, cols)
  tensor<T, R, B> values(rs);             // (rows, k)
  tensor<index_t, R, B> indices(rs);      // (rows, k)
  kernels<B>::softmax_top_k_rows(rows, cols, k, logits.value().data(), probs.data(), values.data(), indices.data());
  auto scores = record("softmax", probs, [logits, probs](const auto& dy) {
    logits.accumulate(softmax_backward(probs, dy));
  }, logits);
  auto selected = record("top_k", values, [scores, indices](const auto& dy) {
    scores.accumulate(detail::top_k_backward(scores.shape(), dy, indices));
  }, scores);
  return softmax_top_k_result<decltype(scores), decltype(selected), tensor<index_t, R, B>>{scores, selected, indices};
}

}  // namespace moekit

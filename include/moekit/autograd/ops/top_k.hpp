// moekit/autograd/ops/top_k.hpp — differentiable top-k over the last axis:
// the selected values carry gradient back to the entries they came from; the
// indices are a plain tensor (a selection has no gradient).
#pragma once

#include <cstddef>

#include "../../core/host_device.hpp"
#include "../../tensor/ops/creation.hpp"
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

}  // namespace moekit

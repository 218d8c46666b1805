// moekit/nn/linear.hpp — y = x·W + b. The weight is stored (in, out), so the
// forward product needs no transpose; static extents where known, and the
// same class with dyn takes its sizes at run time. Rows may also come as a
// CSR matrix (sparse bag-of-words features): the product is then an SpMM,
// the same values at the cost of the non-zeros.
#pragma once

#include <string>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/matmul.hpp"
#include "../autograd/ops/sparse.hpp"
#include "../core/error.hpp"
#include "../autograd/parameter.hpp"
#include "init.hpp"

namespace moekit::nn {

struct linear_options {
  bool bias = true;
  init weight_init = init::pytorch_default;
};

template <std::size_t In, std::size_t Out, class T = float, backend B = cpu>
class linear {
 public:
  using weight_shape = shape<In, Out>;
  using bias_shape = shape<Out>;

  explicit linear(rng& g, std::size_t in = In, std::size_t out = Out, linear_options o = {})
      : weight_(init_weight<T, B>(g, make<weight_shape>(in, out), in, out, o.weight_init)) {
    if (o.bias) bias_ = parameter<T, bias_shape, B>(init_bias<T, B>(g, make<bias_shape>(out), in, o.weight_init));
  }

  /// (N, in) -> (N, out); any leading axes, e.g. (batch, seq, in) -> (batch, seq, out),
  /// are flattened into N for one product and restored afterwards.
  template <class S>
  auto operator()(const var<T, S, B>& x) const {
    static_assert(S::rank() >= 2, "linear: x needs rank >= 2 (..., in)");
    if constexpr (S::rank() == 2) {
      auto y = matmul(x, weight_);  // (N, out)
      return has_bias() ? add_rows(y, bias_) : y;
    } else {
      const auto [rows, in] = as_matrix(x.shape());
      using flat = shape<dyn, last_extent_v<S>>;
      auto y = (*this)(reshape(x, flat::from_extents(std::array{rows, in}, "linear")));  // (rows, out)
      using R = set_axis_t<S::rank() - 1, Out, S>;
      auto ext = x.shape().extents();
      ext[S::rank() - 1] = out_features();
      return reshape(y, R::from_extents(ext, "linear"));  // (..., out)
    }
  }

  /// (N, in) given as CSR rows -> (N, out): spmm(x, W) + b. dW = xᵀ·dY; x
  /// itself is a constant (input features).
  template <class V>
  auto operator()(const graph::csr<V, B>& x) const {
    if (x.cols() != in_features())
      throw shape_error("linear: sparse input " + x.str() + " for " + std::to_string(in_features()) +
                        " input features");
    auto y = spmm(x, weight_);  // (N, out)
    return has_bias() ? add_rows(y, bias_) : y;
  }

  bool has_bias() const noexcept { return bias_.value().defined(); }
  std::size_t in_features() const noexcept { return weight_.extent(0); }
  std::size_t out_features() const noexcept { return weight_.extent(1); }
  parameter<T, weight_shape, B>& weight() noexcept { return weight_; }
  parameter<T, bias_shape, B>& bias() noexcept { return bias_; }

  template <class V>
  void parameters(V&& visit) {
    visit("weight", weight_);
    if (has_bias()) visit("bias", bias_);
  }

 private:
  // A shape of type S from all its extents (checks the static ones).
  template <class S, class... E>
  static S make(E... all) {
    return S::from_extents(std::array<std::size_t, sizeof...(E)>{static_cast<std::size_t>(all)...}, "linear");
  }

  parameter<T, weight_shape, B> weight_;  // (in, out)
  parameter<T, bias_shape, B> bias_;      // (out), undefined without bias
};

}  // namespace moekit::nn

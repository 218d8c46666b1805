// moekit/uoe/mlp_slices.hpp — the expert bank of a union of MLP experts: the
// dense MLP d -> F -> d cut as tensor parallelism cuts it. Expert e holds
// the column-parallel slice e of the first matrix and its bias,
// W1[:, e·Fe:(e+1)·Fe] and b1[e·Fe:(e+1)·Fe], and the row-parallel slice e
// of the second, W2[e·Fe:(e+1)·Fe, :], Fe = F / E:
//
//   expert_e(x) = act(x·W1_e + b1_e)·W2_e          (A, d) -> (A, d)
//
// Summed over all experts this is the dense MLP without its output bias b2;
// the UoME layer adds b2 once per token, as the dense layer does (the
// reference gives each expert its own copy of it instead).
//
// Runs on rows grouped by expert (the frame's plans): one grouped GEMM per
// matrix. Parameter names "w1" (E, d, Fe), "b1" (E, Fe), "w2" (E, Fe, d).
#pragma once

#include <cstddef>
#include <string>

#include "../autograd/ops/grouped.hpp"
#include "../autograd/parameter.hpp"
#include "../moe/expert_bank.hpp"
#include "../nn/init.hpp"

namespace moekit::uoe {

template <class T = float, backend B = cpu, moe::activation Act = moe::activation::gelu>
class mlp_slices {
 public:
  /// E slices of a dense MLP d -> F -> d drawn as nn::linear draws the dense
  /// matrices (fan-in d for W1 and b1, F for W2), so the union starts as a
  /// freshly drawn dense MLP would. F must be a multiple of E.
  mlp_slices(rng& g, std::size_t d, std::size_t f, std::size_t experts) {
    if (experts == 0 || f % experts != 0)
      throw value_error("uoe::mlp_slices: d_ff " + std::to_string(f) + " must be a positive multiple of the " +
                        std::to_string(experts) + " experts");
    const std::size_t fe = f / experts;
    w1_ = parameter<T, shape<dyn, dyn, dyn>, B>(
        nn::init_weight<T, B>(g, shape<dyn, dyn, dyn>{experts, d, fe}, d, f, nn::init::pytorch_default));
    b1_ = parameter<T, shape<dyn, dyn>, B>(nn::init_bias<T, B>(g, shape<dyn, dyn>{experts, fe}, d, nn::init::pytorch_default));
    w2_ = parameter<T, shape<dyn, dyn, dyn>, B>(
        nn::init_weight<T, B>(g, shape<dyn, dyn, dyn>{experts, fe, d}, f, d, nn::init::pytorch_default));
  }
  /// From given slices: w1 (E, d, Fe), b1 (E, Fe), w2 (E, Fe, d).
  mlp_slices(tensor<T, shape<dyn, dyn, dyn>, B> w1, tensor<T, shape<dyn, dyn>, B> b1, tensor<T, shape<dyn, dyn, dyn>, B> w2)
      : w1_(std::move(w1)), b1_(std::move(b1)), w2_(std::move(w2)) {
    const auto& a = w1_.value();
    if (b1_.extent(0) != a.extent(0) || b1_.extent(1) != a.extent(2) || w2_.extent(0) != a.extent(0) ||
        w2_.extent(1) != a.extent(2) || w2_.extent(2) != a.extent(1))
      throw shape_error("uoe::mlp_slices: w1 " + a.shape().str() + ", b1 " + b1_.shape().str() + ", w2 " +
                        w2_.shape().str() + ": need (E, d, Fe), (E, Fe), (E, Fe, d)");
  }

  /// rows (A, d) grouped by expert -> (A, d); offsets (E + 1) on B.
  template <class S>
  auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
    return moe::detail::ffn<Act, true>(rows, w1_, b1_, w2_, offsets);  // (A, d), through (A, Fe)
  }

  std::size_t experts() const noexcept { return w1_.extent(0); }
  std::size_t d_model() const noexcept { return w1_.extent(1); }
  std::size_t slice_width() const noexcept { return w1_.extent(2); }  // Fe
  auto& w1() noexcept { return w1_; }
  auto& b1() noexcept { return b1_; }
  auto& w2() noexcept { return w2_; }

  template <class V>
  void parameters(V&& visit) {
    visit("w1", w1_);
    visit("b1", b1_);
    visit("w2", w2_);
  }

 private:
  parameter<T, shape<dyn, dyn, dyn>, B> w1_;  // (E, d, Fe)
  parameter<T, shape<dyn, dyn>, B> b1_;       // (E, Fe)
  parameter<T, shape<dyn, dyn, dyn>, B> w2_;  // (E, Fe, d)
};

}  // namespace moekit::uoe

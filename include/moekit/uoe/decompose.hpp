// moekit/uoe/decompose.hpp — the equivalent decomposition: a dense layer cut
// into experts exactly as tensor parallelism cuts it.
//
//   decompose(g, mlp::feed_forward, E, options)  -> uoe::uome
//       W1 (d, F) by columns into E slices (d, F/E), b1 with it; W2 (F, d) by
//       rows into (F/E, d); b2 stays whole and is added once per token.
//   decompose(g, nn::multi_head_attention, options) -> uoe::smha
//       head h's columns of Wq, Wk, Wv (d, dh) and biases, and its rows of Wo
//       (dh, d); the output bias stays whole. Causal and RoPE follow the
//       attention's options.
//
// With every expert on every token (top_k = E, capacity 1) and faithful
// weights, the result computes the dense layer (tests/uoe: forward and every
// gradient). The router is drawn fresh from g: a dense layer has none.
#pragma once

#include <cstddef>
#include <string>

#include "../mlp/block.hpp"
#include "../nn/attention.hpp"
#include "smha.hpp"
#include "uome.hpp"

namespace moekit::uoe {

namespace detail {
/// w (in, out) on any backend -> (parts, in, out / parts): column slice p of w.
template <class T, class S, class B>
tensor<T, shape<dyn, dyn, dyn>, B> column_slices(const tensor<T, S, B>& w, std::size_t parts) {
  const auto host = w.template to<cpu>();
  const std::size_t in = w.extent(0), out = w.extent(1), width = out / parts;
  tensor<T, shape<dyn, dyn, dyn>, cpu> s(shape<dyn, dyn, dyn>{parts, in, width});
  for (std::size_t p = 0; p < parts; ++p)
    for (std::size_t i = 0; i < in; ++i)
      for (std::size_t j = 0; j < width; ++j) s.data()[(p * in + i) * width + j] = host.data()[i * out + p * width + j];
  return moekit::detail::to_backend<B>(s);
}
/// A bias (n) or undefined -> (parts, n / parts) (zeros when undefined).
template <class T, class S, class B>
tensor<T, shape<dyn, dyn>, B> bias_slices(const tensor<T, S, B>& b, std::size_t n, std::size_t parts) {
  if (!b.defined()) return zeros<T, B>(shape<dyn, dyn>{parts, n / parts});
  return b.reshape(shape<dyn, dyn>{parts, n / parts});
}
/// w (in, out) -> (parts, in / parts, out): row slice p of w (a view of the same layout).
template <class T, class S, class B>
tensor<T, shape<dyn, dyn, dyn>, B> row_slices(const tensor<T, S, B>& w, std::size_t parts) {
  return w.reshape(shape<dyn, dyn, dyn>{parts, w.extent(0) / parts, w.extent(1)}).clone();
}
template <class T, class S, class B>
tensor<T, shape<dyn>, B> whole_bias(const tensor<T, S, B>& b, std::size_t n) {
  if (!b.defined()) return zeros<T, B>(shape<dyn>{n});
  return b.reshape(shape<dyn>{n}).clone();
}
}  // namespace detail

/// The union of `o.experts` MLP experts equal to `dense` (o.d_model and
/// o.d_ff are taken from it; d_ff must be a multiple of the experts).
template <std::size_t D, std::size_t H, class T, backend B>
uome<T, B> decompose(rng& g, mlp::feed_forward<D, H, T, B>& dense, uome_options o) {
  auto& fc1 = dense.fc1();
  auto& fc2 = dense.fc2();
  o.d_model = fc1.in_features(), o.d_ff = fc1.out_features();
  if (o.experts == 0 || o.d_ff % o.experts != 0)
    throw value_error("uoe::decompose: d_ff " + std::to_string(o.d_ff) + " must be a positive multiple of the " +
                      std::to_string(o.experts) + " experts");
  const std::size_t e = o.experts;
  mlp_slices<T, B> slices(detail::column_slices(fc1.weight().value(), e),
                          detail::bias_slices(fc1.bias().value(), o.d_ff, e),
                          detail::row_slices(fc2.weight().value(), e));
  return uome<T, B>(router<T, B>(g, o.d_model, e, o.select), std::move(slices),
                    detail::whole_bias(fc2.bias().value(), o.d_model), o);
}

/// Selective multi-head attention equal to `dense`, one expert per head
/// (o.d_model, o.heads, o.causal, o.rope and o.rope_base are taken from it).
template <std::size_t D, std::size_t H, class T, backend B>
smha<T, B> decompose(rng& g, nn::multi_head_attention<D, H, T, B>& dense, smha_options o) {
  const std::size_t d = dense.d_model(), h = dense.heads();
  o.d_model = d, o.heads = h, o.causal = dense.options().causal, o.rope = dense.options().rope;
  o.rope_base = dense.options().rope_base;
  smha<T, B> s(g, o);
  using W = parameter<T, shape<dyn, dyn, dyn>, B>;
  using Bi = parameter<T, shape<dyn, dyn>, B>;
  s.wq() = W(detail::column_slices(dense.q_proj().weight().value(), h));
  s.wk() = W(detail::column_slices(dense.k_proj().weight().value(), h));
  s.wv() = W(detail::column_slices(dense.v_proj().weight().value(), h));
  s.bq() = Bi(detail::bias_slices(dense.q_proj().bias().value(), d, h));
  s.bk() = Bi(detail::bias_slices(dense.k_proj().bias().value(), d, h));
  s.bv() = Bi(detail::bias_slices(dense.v_proj().bias().value(), d, h));
  s.wo() = W(detail::row_slices(dense.out_proj().weight().value(), h));
  s.bo() = parameter<T, shape<dyn>, B>(detail::whole_bias(dense.out_proj().bias().value(), d));
  return s;
}

}  // namespace moekit::uoe

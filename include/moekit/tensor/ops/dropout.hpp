// moekit/tensor/ops/dropout.hpp — inverted dropout: a keep mask of 0 or
// 1/(1-p) drawn from the counter-based RNG. Element i is kept iff
// uniform_at(seed, offset + i) > p, so any backend (or a CUDA kernel drawing in
// any order) reproduces the same mask from the same (seed, offset).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "../../core/random.hpp"
#include "../tensor.hpp"
#include "elementwise.hpp"

namespace moekit {

namespace fn {
template <class T>
struct dropout_draw {
  std::uint64_t seed, offset;
  T p, scale;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const { return rng::uniform_at<T>(seed, offset + i) > p ? scale : T(0); }
  /// out[i] = (*this)(i) for i in [lo, hi), one Philox block per 4 elements
  /// (backends that fill ranges use it).
  void fill(std::size_t lo, std::size_t hi, T* out) const {
    philox4x32::for_each_word(seed, offset + lo, hi - lo, [&](std::uint64_t k, std::uint32_t w) {
      out[lo + k] = rng::uniform_of<T>(w) > p ? scale : T(0);
    });
  }
};
}  // namespace fn

namespace detail {
/// Dropout probabilities live in [0, 1): p = 1 would scale by 1/0.
template <class T>
void check_dropout_p(const char* op, T p) {
  if (!(p >= T(0) && p < T(1)))  // also rejects NaN
    throw value_error(std::string(op) + ": p = " + std::to_string(static_cast<double>(p)) +
                      " is outside [0, 1)");
}
}  // namespace detail

/// 0 with probability p, else 1/(1-p); draws size() words from g (element i uses word offset + i).
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> dropout_mask(rng& g, const S& s, std::type_identity_t<T> p) {
  detail::check_dropout_p("dropout_mask", p);
  tensor<T, S, B> out(s);
  kernels<B>::generate(out.size(), out.data(),
                       fn::dropout_draw<T>{g.seed(), g.advance(out.size()), p, T(1) / (T(1) - p)});
  return out;
}

/// x * dropout_mask(g, x.shape(), p). With p = 0 it returns x itself and draws nothing.
template <class T, class S, class B>
tensor<T, S, B> dropout(const tensor<T, S, B>& x, std::type_identity_t<T> p, rng& g) {
  detail::check_dropout_p("dropout", p);
  if (p == T(0)) return x;
  return x * dropout_mask<T, B>(g, x.shape(), p);
}

}  // namespace moekit

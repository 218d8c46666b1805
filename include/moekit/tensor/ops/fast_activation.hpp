// moekit/tensor/ops/fast_activation.hpp — GELU and SiLU functors whose float
// forms vectorise. std::erf and std::exp are library calls that stop a map
// loop from vectorising (GELU's erf cost more than a tenth of an MoE layer's
// forward+backward); the float forms here are branch-free polynomials of
// about 1e-7 relative error, so `#pragma omp simd` loops turn them into
// vector code. Double keeps the exact library functions (gradient checks).
// GCC vectorises them only with -fno-trapping-math (core/fast_exp.hpp says
// why); moekit's own targets set it (MOEKIT_NATIVE); add it to your
// project's flags too (it changes no result).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <type_traits>

#include "../../core/dtype.hpp"
#include "../../core/fast_exp.hpp"
#include "../../core/host_device.hpp"

namespace moekit {

namespace detail {

/// P(X > a) = erfc(a/√2)/2 for a >= 0 and X standard normal, in float, with
/// relative error ~3e-7: erfc(z) = t·e^(P(t) - z²) with t = 1/(1 + z/2) and P
/// a degree-9 least-squares fit (made for moekit) of log(erfc(z)·e^(z²)/t)
/// over t in (0, 1]. P − z², z² = a²/2, is kept as an unevaluated sum of two
/// floats (a² split exactly by an fma, the subtraction's rounding error by
/// two-sum): rounded to one float its error would grow with z² in the tail.
/// All float, so the loop vectorises (double here made GCC keep it scalar).
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE float normal_upper_tail_approx(float a) {
  const float t = 1.0f / (1.0f + 0.5f * float(std::numbers::sqrt2 / 2) * a);
  float p = 0.16885275f;
  p = p * t - 0.81374606f;
  p = p * t + 1.47406275f;
  p = p * t - 1.12194334f;
  p = p * t + 0.27187243f;
  p = p * t - 0.18415948f;
  p = p * t + 0.09643003f;
  p = p * t + 0.37412015f;
  p = p * t + 1.00002291f;
  p = p * t - 1.26551222f;
  const float sq = a * a;
  const float sq_lo = std::fma(a, a, -sq);  // a² = sq + sq_lo exactly
  const float arg_f = p - 0.5f * sq;        // 0.5·sq is exact
  const float v = arg_f - p;
  const float err = (p - (arg_f - v)) + (-0.5f * sq - v);  // two-sum: p − 0.5·sq = arg_f + err exactly
  const float lost = err - 0.5f * sq_lo;                   // e^(P − z²) = e^(arg_f)·(1 + lost)
  return 0.5f * t * exp_approx(arg_f) * (1.0f + lost);
}

/// Φ(x), the standard normal CDF. Float: from the tail beyond |x|, so the
/// negative tail keeps its relative accuracy (1 + erf(x) would cancel).
template <class T>
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T normal_cdf(T x) {
  if constexpr (storage_16<T>) {
    return T(normal_cdf(static_cast<float>(x)));  // bf16/half: in float
  } else if constexpr (std::is_same_v<T, float>) {
    const float tail = normal_upper_tail_approx(x < 0.0f ? -x : x);
    return x < 0.0f ? tail : 1.0f - tail;
  } else {
    return T(0.5) * std::erfc(-x * T(std::numbers::sqrt2 / 2));
  }
}

/// The standard normal density φ(x).
template <class T>
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T normal_pdf(T x) {
  if constexpr (storage_16<T>) {
    return T(normal_pdf(static_cast<float>(x)));  // bf16/half: in float
  } else {
    constexpr T scale = T(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
    if constexpr (std::is_same_v<T, float>) return exp_approx(-0.5f * x * x) * scale;
    else return std::exp(T(-0.5) * x * x) * scale;
  }
}

/// 1 / (1 + e^-x), never overflowing.
template <class T>
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T logistic(T x) {
  if constexpr (storage_16<T>) {
    return T(logistic(static_cast<float>(x)));  // bf16/half: in float
  } else if constexpr (std::is_same_v<T, float>) {
    const float e = exp_approx(x < 0.0f ? x : -x);  // e^-|x| in (0, 1]
    const float s = 1.0f / (1.0f + e);
    return x < 0.0f ? e * s : s;  // e/(1 + e), not 1 - s: no cancellation in the tail
  } else {
    return x >= T(0) ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
  }
}

}  // namespace detail

namespace fn {

/// GELU, exact erf form x·Φ(x); vectorisable in float.
struct gelu_fast {
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x) const { return x * detail::normal_cdf(x); }
};
/// dx = dy · (Φ(x) + x·φ(x)).
struct gelu_fast_backward {
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x, T dy) const {
    return dy * (detail::normal_cdf(x) + x * detail::normal_pdf(x));
  }
};

/// SiLU x·σ(x); vectorisable in float.
struct silu_fast {
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x) const { return x * detail::logistic(x); }
};
/// dx = dy · σ(x)·(1 + x·(1 - σ(x))).
struct silu_fast_backward {
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x, T dy) const {
    const T s = detail::logistic(x);
    return dy * s * (T(1) + x * (T(1) - s));
  }
};

/// f(h + b): a bias added before an activation, as one functor for row maps.
template <class F>
struct biased {
  F f;
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T h, T b) const { return f(h + b); }
};

}  // namespace fn
}  // namespace moekit

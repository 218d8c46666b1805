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

/// e^(−x²/2) in float, relative error ~2e-7 for |x| up to 13.1 (beyond,
/// exp_approx's clamp holds it at e^−87): x² is split exactly into
/// sq + sq_lo by an fma and e^(−sq_lo/2) ≈ 1 − sq_lo/2 puts back what
/// rounding x² lost (an error that would otherwise grow with x² in the tails).
/// Φ and φ below both start from it, so a loop that needs both (GELU and its
/// slope) computes it, and its exponential, once.
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE float half_square_exp(float x) {
  const float sq = x * x;
  const float sq_lo = std::fma(x, x, -sq);  // x² = sq + sq_lo exactly
  return exp_approx(-0.5f * sq) * (1.0f - 0.5f * sq_lo);
}

/// P(X > a) = erfc(a/√2)/2 for a >= 0 and X standard normal, in float, given
/// e = e^(−a²/2) (half_square_exp), relative error ~2e-7: erfc(z)·e^(z²) =
/// t·Q(t) with z = a/√2, t = 1/(1 + z/2) and Q a degree-10 fit (made for
/// moekit, weighted least squares for relative error) of erfc(z)·e^(z²)/t over
/// t in (0, 1]; Q(1) = 1 and Q(0) = 1/(2√π). All float, so the loop vectorises.
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE float normal_upper_tail_approx(float a, float e) {
  const float t = 1.0f / (1.0f + 0.5f * float(std::numbers::sqrt2 / 2) * a);
  float q = 0.0423539728f;
  q = q * t - 0.230863944f;
  q = q * t + 0.486191005f;
  q = q * t - 0.446990252f;
  q = q * t + 0.127097517f;
  q = q * t - 0.0572355688f;
  q = q * t + 0.0930012912f;
  q = q * t + 0.175376743f;
  q = q * t + 0.246880591f;
  q = q * t + 0.282093853f;
  q = q * t + 0.282094806f;
  return 0.5f * t * q * e;
}

/// Φ(x), the standard normal CDF. Float: from the tail beyond |x|, so the
/// negative tail keeps its relative accuracy (1 + erf(x) would cancel).
template <class T>
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T normal_cdf(T x) {
  if constexpr (storage_16<T>) {
    return T(normal_cdf(static_cast<float>(x)));  // bf16/half: in float
  } else if constexpr (std::is_same_v<T, float>) {
    const float tail = normal_upper_tail_approx(x < 0.0f ? -x : x, half_square_exp(x));
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
    if constexpr (std::is_same_v<T, float>) return half_square_exp(x) * scale;
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
/// dx = dy · f'(x), f'(x) = Φ(x) + x·φ(x). `slope` alone is what a forward
/// pass keeps for the backward (grouped_ffn): computed next to gelu_fast in
/// one loop, the two share Φ's and φ's one exponential.
struct gelu_fast_backward {
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T slope(T x) const {
    return detail::normal_cdf(x) + x * detail::normal_pdf(x);
  }
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x, T dy) const { return dy * slope(x); }
};

/// SiLU x·σ(x); vectorisable in float.
struct silu_fast {
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x) const { return x * detail::logistic(x); }
};
/// dx = dy · f'(x), f'(x) = σ(x)·(1 + x·(1 - σ(x))).
struct silu_fast_backward {
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T slope(T x) const {
    const T s = detail::logistic(x);
    return s * (T(1) + x * (T(1) - s));
  }
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x, T dy) const { return dy * slope(x); }
};

/// f(h + b): a bias added before an activation, as one functor for row maps.
template <class F>
struct biased {
  F f;
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T h, T b) const { return f(h + b); }
};

}  // namespace fn
}  // namespace moekit

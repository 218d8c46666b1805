// moekit/backend/functors.hpp — the element-wise functions every backend's
// map kernel applies. Plain structs (not lambdas) so CUDA kernels can call them.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <numbers>

#include "../core/host_device.hpp"

namespace moekit::fn {

struct identity {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T a) const { return a; }
};
/// An activation's backward functor that can give f'(x) alone (df.slope(x)),
/// so a forward pass can keep f'(z) and the backward is a product.
template <class DF>
concept has_slope = requires(const DF& df, float x) {
  { df.slope(x) } -> std::same_as<float>;
};

/// f'(x) as a unary functor, from a backward functor with a slope.
template <has_slope DF>
struct slope_of {
  DF df;
  template <class T> MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE T operator()(T x) const { return df.slope(x); }
};

struct add {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T a, T b) const { return a + b; }
};
struct sub {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T a, T b) const { return a - b; }
};
struct mul {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T a, T b) const { return a * b; }
};
struct div {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T a, T b) const { return a / b; }
};
struct max {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T a, T b) const { return a < b ? b : a; }
};
struct min {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T a, T b) const { return b < a ? b : a; }
};

/// x op s for a scalar s held by the functor.
template <class Op, class T>
struct with_scalar {
  T s;
  MOEKIT_HOST_DEVICE T operator()(T x) const { return Op{}(x, s); }
};
/// s op x.
template <class Op, class T>
struct scalar_first {
  T s;
  MOEKIT_HOST_DEVICE T operator()(T x) const { return Op{}(s, x); }
};

template <class T>
struct constant {
  T v;
  MOEKIT_HOST_DEVICE T operator()(std::size_t) const { return v; }
};

struct neg {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return -x; }
};
struct exp {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return std::exp(x); }
};
struct log {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return std::log(x); }
};
struct sqrt {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return std::sqrt(x); }
};
struct square {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return x * x; }
};

}  // namespace moekit::fn

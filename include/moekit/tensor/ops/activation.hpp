// moekit/tensor/ops/activation.hpp — activation functions and the derivatives
// their backward passes use, as functors every backend's map can apply.
#pragma once

#include <cmath>
#include <numbers>

#include "../../core/host_device.hpp"
#include "elementwise.hpp"

namespace moekit::fn {

struct relu {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return x > T(0) ? x : T(0); }
};
/// dx = dy * relu'(x).
struct relu_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x, T dy) const { return x > T(0) ? dy : T(0); }
};

/// GELU with the exact erf form: x * Φ(x).
struct gelu {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const {
    return T(0.5) * x * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
  }
};
struct gelu_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x, T dy) const {
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
    const T pdf = std::exp(T(-0.5) * x * x) * T(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
    return dy * (cdf + x * pdf);
  }
};

struct sigmoid {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const {
    // Split by sign so exp never overflows.
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
  }
};
/// From the output y = sigmoid(x): dx = dy * y * (1 - y).
struct sigmoid_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T y, T dy) const { return dy * y * (T(1) - y); }
};

/// SiLU (swish): x * sigmoid(x).
struct silu {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return x * sigmoid{}(x); }
};
struct silu_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x, T dy) const {
    const T s = sigmoid{}(x);
    return dy * s * (T(1) + x * (T(1) - s));
  }
};

struct tanh {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T x) const { return std::tanh(x); }
};
/// From the output y = tanh(x): dx = dy * (1 - y²).
struct tanh_backward {
  template <class T> MOEKIT_HOST_DEVICE T operator()(T y, T dy) const { return dy * (T(1) - y * y); }
};

template <class T>
struct elu {
  T alpha;
  MOEKIT_HOST_DEVICE T operator()(T x) const { return x > T(0) ? x : alpha * (std::exp(x) - T(1)); }
};
template <class T>
struct elu_backward {
  T alpha;
  MOEKIT_HOST_DEVICE T operator()(T x, T dy) const { return x > T(0) ? dy : dy * alpha * std::exp(x); }
};

template <class T>
struct leaky_relu {
  T slope;
  MOEKIT_HOST_DEVICE T operator()(T x) const { return x > T(0) ? x : slope * x; }
};
template <class T>
struct leaky_relu_backward {
  T slope;
  MOEKIT_HOST_DEVICE T operator()(T x, T dy) const { return x > T(0) ? dy : slope * dy; }
};

template <class T>
struct pow {
  T p;
  MOEKIT_HOST_DEVICE T operator()(T x) const { return std::pow(x, p); }
};
template <class T>
struct pow_backward {
  T p;
  MOEKIT_HOST_DEVICE T operator()(T x, T dy) const { return dy * p * std::pow(x, p - T(1)); }
};

}  // namespace moekit::fn

namespace moekit {

template <class T, class S, class B> tensor<T, S, B> relu(const tensor<T, S, B>& x) { return map(x, fn::relu{}); }
template <class T, class S, class B> tensor<T, S, B> gelu(const tensor<T, S, B>& x) { return map(x, fn::gelu{}); }
template <class T, class S, class B> tensor<T, S, B> silu(const tensor<T, S, B>& x) { return map(x, fn::silu{}); }
template <class T, class S, class B> tensor<T, S, B> sigmoid(const tensor<T, S, B>& x) { return map(x, fn::sigmoid{}); }
template <class T, class S, class B> tensor<T, S, B> tanh(const tensor<T, S, B>& x) { return map(x, fn::tanh{}); }
template <class T, class S, class B>
tensor<T, S, B> elu(const tensor<T, S, B>& x, std::type_identity_t<T> alpha = T(1)) { return map(x, fn::elu<T>{alpha}); }
template <class T, class S, class B>
tensor<T, S, B> leaky_relu(const tensor<T, S, B>& x, std::type_identity_t<T> slope = T(0.01)) {
  return map(x, fn::leaky_relu<T>{slope});
}
template <class T, class S, class B>
tensor<T, S, B> pow(const tensor<T, S, B>& x, std::type_identity_t<T> p) { return map(x, fn::pow<T>{p}); }

}  // namespace moekit

// moekit/tensor/ops/creation.hpp — making tensors: constants, ranges, random
// draws from the counter-based RNG, and literal values (tests, examples).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>

#include "../../backend/functors.hpp"
#include "../../core/random.hpp"
#include "../tensor.hpp"

namespace moekit {

/// Uninitialised.
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> empty(const S& s) {
  return tensor<T, S, B>(s);
}

template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> full(const S& s, T value) {
  tensor<T, S, B> out(s);
  kernels<B>::generate(out.size(), out.data(), fn::constant<T>{value});
  return out;
}
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> zeros(const S& s) {
  return full<T, B>(s, T(0));
}
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> ones(const S& s) {
  return full<T, B>(s, T(1));
}
/// out[i] = f(i) for every flat position i of a tensor of shape `s`, made on B.
template <class T, backend B = cpu, shape_like S, class F>
tensor<T, S, B> generate(const S& s, F f) {
  tensor<T, S, B> out(s);
  kernels<B>::generate(out.size(), out.data(), f);
  return out;
}
/// A tensor of zeros shaped like x.
template <class T, class S, class B>
tensor<T, S, B> zeros_like(const tensor<T, S, B>& x) {
  return zeros<T, B>(x.shape());
}

namespace fn {
template <class T>
struct affine_index {
  T start, step;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const { return start + step * static_cast<T>(i); }
};
template <class T>
struct uniform_draw {
  std::uint64_t seed, offset;
  T lo, hi;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const { return lo + (hi - lo) * rng::uniform_at<T>(seed, offset + i); }
};
template <class T>
struct normal_draw {
  std::uint64_t seed, offset;
  T mean, stddev;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const { return mean + stddev * rng::normal_at<T>(seed, offset, i); }
};
}  // namespace fn

/// start, start + step, ... (n values): shape (n).
template <class T, backend B = cpu>
tensor<T, shape<dyn>, B> arange(std::size_t n, T start = T(0), T step = T(1)) {
  tensor<T, shape<dyn>, B> out(shape<dyn>{n});
  kernels<B>::generate(n, out.data(), fn::affine_index<T>{start, step});
  return out;
}

/// Uniform in (lo, hi]; draws size() words from g (element i uses word offset + i).
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> uniform(rng& g, const S& s, T lo = T(0), T hi = T(1)) {
  tensor<T, S, B> out(s);
  kernels<B>::generate(out.size(), out.data(), fn::uniform_draw<T>{g.seed(), g.advance(out.size()), lo, hi});
  return out;
}

/// Normal(mean, stddev) by Box-Muller; draws 2 * size() words from g.
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> normal(rng& g, const S& s, T mean = T(0), T stddev = T(1)) {
  tensor<T, S, B> out(s);
  kernels<B>::generate(out.size(), out.data(), fn::normal_draw<T>{g.seed(), g.advance(2 * out.size()), mean, stddev});
  return out;
}

/// A host tensor holding `values` (row-major); throws shape_error on a count mismatch.
template <class T, shape_like S>
tensor<T, S, cpu> from_values(const S& s, std::span<const T> values) {
  if (values.size() != s.size())
    throw shape_error("from_values: " + s.str() + " needs " + std::to_string(s.size()) + " values, got " +
                      std::to_string(values.size()));
  tensor<T, S, cpu> out(s);
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return out;
}
template <class T, shape_like S>
tensor<T, S, cpu> from_values(const S& s, std::initializer_list<T> values) {
  return from_values<T>(s, std::span<const T>(values.begin(), values.size()));
}

}  // namespace moekit

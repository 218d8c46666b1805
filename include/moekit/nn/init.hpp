// moekit/nn/init.hpp — weight initialisations. `pytorch_default` reproduces
// torch.nn.Linear's reset_parameters (kaiming_uniform with a = √5, which is
// U(±1/√fan_in) for the weight, and U(±1/√fan_in) for the bias).
#pragma once

#include <cmath>

#include "../core/random.hpp"
#include "../tensor/ops/creation.hpp"

namespace moekit::nn {

enum class init { pytorch_default, xavier_uniform, xavier_normal, zeros };

/// A (fan_in, fan_out) weight drawn by `scheme`.
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> init_weight(rng& g, const S& s, std::size_t fan_in, std::size_t fan_out, init scheme) {
  const double in = static_cast<double>(fan_in), out = static_cast<double>(fan_out);
  switch (scheme) {
    case init::pytorch_default: {
      const T bound = static_cast<T>(1.0 / std::sqrt(in));
      return uniform<T, B>(g, s, -bound, bound);
    }
    case init::xavier_uniform: {
      const T bound = static_cast<T>(std::sqrt(6.0 / (in + out)));
      return uniform<T, B>(g, s, -bound, bound);
    }
    case init::xavier_normal:
      return normal<T, B>(g, s, T(0), static_cast<T>(std::sqrt(2.0 / (in + out))));
    case init::zeros:
      break;
  }
  return zeros<T, B>(s);
}

/// A bias: U(±1/√fan_in) for the PyTorch default, zeros otherwise.
template <class T, backend B = cpu, shape_like S>
tensor<T, S, B> init_bias(rng& g, const S& s, std::size_t fan_in, init scheme) {
  if (scheme != init::pytorch_default) return zeros<T, B>(s);
  const T bound = static_cast<T>(1.0 / std::sqrt(static_cast<double>(fan_in)));
  return uniform<T, B>(g, s, -bound, bound);
}

}  // namespace moekit::nn

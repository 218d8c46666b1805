// moekit/nn/activation.hpp — activation functions as parameter-free layers,
// for use inside sequential<...>.
#pragma once

#include "../autograd/ops/activation.hpp"

namespace moekit::nn {

#define MOEKIT_ACTIVATION_LAYER(name)                   \
  struct name {                                         \
    template <class X>                                  \
    X operator()(const X& x) const {                    \
      return moekit::name(x);                           \
    }                                                   \
    template <class V>                                  \
    void parameters(V&&) {}                             \
  };
MOEKIT_ACTIVATION_LAYER(relu)
MOEKIT_ACTIVATION_LAYER(gelu)
MOEKIT_ACTIVATION_LAYER(silu)
MOEKIT_ACTIVATION_LAYER(sigmoid)
MOEKIT_ACTIVATION_LAYER(tanh)
#undef MOEKIT_ACTIVATION_LAYER

}  // namespace moekit::nn

// moekit/tensor/ops/cast.hpp — element-type conversion: float <-> bf16/half
// storage, float <-> double. Values pass through float for 16-bit types
// (round to nearest even on the way down), so a cast never depends on the backend.
#pragma once

#include "../../core/dtype.hpp"
#include "../../core/host_device.hpp"
#include "../tensor.hpp"

namespace moekit {

namespace fn {
template <class U>
struct convert {
  template <class T>
  MOEKIT_HOST_DEVICE U operator()(T x) const {
    return U(static_cast<accumulate_t<U>>(static_cast<accumulate_t<T>>(x)));
  }
};
}  // namespace fn

/// x with elements of type U: `cast<bf16>(weights)`, `cast<float>(h)`.
template <class U, class T, class S, class B>
tensor<U, S, B> cast(const tensor<T, S, B>& x) {
  tensor<U, S, B> out(x.shape());
  kernels<B>::map(x.size(), out.data(), fn::convert<U>{}, x.data());
  return out;
}

}  // namespace moekit

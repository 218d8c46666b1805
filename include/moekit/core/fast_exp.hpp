// moekit/core/fast_exp.hpp — e^x in float as a branch-free polynomial, so
// that `#pragma omp simd` loops over it turn into vector code (std::exp is a
// library call that keeps a loop scalar). Used by the float activations
// (tensor/ops/fast_activation.hpp) and the CPU softmax.
// GCC vectorises it only with -fno-trapping-math: under the default
// -ftrapping-math it turns the clamp into branches, and the loop stays
// scalar (5x slower). moekit's own targets set it (MOEKIT_NATIVE).
#pragma once

#include <bit>
#include <cstdint>

#include "host_device.hpp"

namespace moekit::detail {

/// e^x in float, relative error ~1 ulp, for x in [-87, 88] (clamped there:
/// results stay normal and finite).
MOEKIT_HOST_DEVICE MOEKIT_ALWAYS_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // x = n·ln2 + r with n integral and |r| <= ln2/2; round by the 1.5·2^23 trick.
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693145751953125f;  // ln2, high bits (exact product)
  r = r - n * 1.42860682e-6f;            // ln2, the rest
  // Taylor series of e^r to degree 7: truncation error < 5e-9 on |r| <= 0.35.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;  // 2^n
  return p * std::bit_cast<float>(bits);
}

}  // namespace moekit::detail

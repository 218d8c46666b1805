// moekit/core/random.hpp — counter-based random numbers (Philox-4x32-10).
// The i-th number of a stream depends only on (seed, offset + i), so the CPU
// and a CUDA kernel can draw identical numbers in any order or in parallel.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "host_device.hpp"

namespace moekit {

/// Philox-4x32-10 (Salmon et al., SC'11): 4 x 32-bit outputs per 128-bit counter.
struct philox4x32 {
  static constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  static constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;

  using counter_type = std::array<std::uint32_t, 4>;
  using key_type = std::array<std::uint32_t, 2>;

  /// The generator itself: 10 rounds over a 128-bit counter with a 64-bit key.
  MOEKIT_HOST_DEVICE static constexpr counter_type rounds(counter_type c, key_type k) noexcept {
    for (int round = 0; round < 10; ++round) {
      const std::uint64_t p0 = std::uint64_t{m0} * c[0], p1 = std::uint64_t{m1} * c[2];
      c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
      k[0] += w0;
      k[1] += w1;
    }
    return c;
  }

  /// Block `counter` of the stream keyed by `seed`.
  MOEKIT_HOST_DEVICE static constexpr counter_type block(std::uint64_t seed, std::uint64_t counter) noexcept {
    return rounds({static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), 0u, 0u},
                  {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
  }

  /// The 32-bit word at position `index` of the stream.
  MOEKIT_HOST_DEVICE static constexpr std::uint32_t word(std::uint64_t seed, std::uint64_t index) noexcept {
    return block(seed, index / 4)[index % 4];
  }

  /// f(k, word(seed, index0 + k)) for k in [0, n), in order, computing each
  /// 4-word block once: a quarter of the rounds of n calls to word().
  template <class F>
  static constexpr void for_each_word(std::uint64_t seed, std::uint64_t index0, std::uint64_t n, F&& f) {
    for (std::uint64_t k = 0; k < n;) {
      const std::uint64_t index = index0 + k;
      const counter_type b = block(seed, index / 4);
      for (std::uint64_t j = index % 4; j < 4 && k < n; ++j, ++k) f(k, b[j]);
    }
  }
};

/// Uniform float in (0, 1] from 32 random bits (never 0, so log() is safe).
MOEKIT_HOST_DEVICE constexpr float to_unit_float(std::uint32_t bits) noexcept {
  return (static_cast<float>(bits >> 8) + 1.0f) * (1.0f / 16777216.0f);
}
/// Uniform double in (0, 1] from 32 random bits.
MOEKIT_HOST_DEVICE constexpr double to_unit_double(std::uint32_t bits) noexcept {
  return (static_cast<double>(bits) + 1.0) * (1.0 / 4294967296.0);
}

/// A random stream: (seed, offset). Drawing n numbers advances the offset by n
/// words (normals by 2 words each), so consecutive draws never overlap.
class rng {
 public:
  explicit constexpr rng(std::uint64_t seed = 0, std::uint64_t offset = 0) noexcept : seed_(seed), offset_(offset) {}

  constexpr std::uint64_t seed() const noexcept { return seed_; }
  constexpr std::uint64_t offset() const noexcept { return offset_; }

  /// Reserves `n` words and returns the offset of the first.
  constexpr std::uint64_t advance(std::uint64_t n) noexcept {
    const std::uint64_t start = offset_;
    offset_ += n;
    return start;
  }

  /// The i-th uniform in (0, 1] at `offset`; pure, usable from any thread.
  template <class T>
  MOEKIT_HOST_DEVICE static constexpr T uniform_at(std::uint64_t seed, std::uint64_t index) noexcept {
    return uniform_of<T>(philox4x32::word(seed, index));
  }
  /// The uniform in (0, 1] that uniform_at makes of a stream word.
  template <class T>
  MOEKIT_HOST_DEVICE static constexpr T uniform_of(std::uint32_t w) noexcept {
    if constexpr (sizeof(T) == 8) return static_cast<T>(to_unit_double(w));
    else return static_cast<T>(to_unit_float(w));
  }

  /// Standard normal by Box-Muller from the word pair (2i, 2i+1) after `index0`.
  template <class T>
  MOEKIT_HOST_DEVICE static T normal_at(std::uint64_t seed, std::uint64_t index0, std::uint64_t i) noexcept {
    const double u1 = to_unit_double(philox4x32::word(seed, index0 + 2 * i));
    const double u2 = to_unit_double(philox4x32::word(seed, index0 + 2 * i + 1));
    return static_cast<T>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
  }

  /// One 32-bit word (for shuffles and integer draws).
  constexpr std::uint32_t next_u32() noexcept { return philox4x32::word(seed_, advance(1)); }
  /// One uniform in (0, 1].
  template <class T = float>
  constexpr T next_uniform() noexcept {
    return uniform_at<T>(seed_, advance(1));
  }

 private:
  std::uint64_t seed_;
  std::uint64_t offset_;
};

}  // namespace moekit

// moekit/core/config.hpp — index type and the few macros moekit defines.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moekit {

/// Index element type of index tensors (expert ids, token ids, labels).
using index_t = std::int32_t;

}  // namespace moekit

#if defined(__GNUC__) || defined(__clang__)
#define MOEKIT_RESTRICT __restrict__
#else
#define MOEKIT_RESTRICT
#endif

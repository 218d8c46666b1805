// moekit/core/host_device.hpp — MOEKIT_HOST_DEVICE marks functors that both the
// CPU kernels and CUDA kernels call (empty for host compilers);
// MOEKIT_ALWAYS_INLINE, functions that must inline into the map loops to
// vectorise there (GCC's size heuristics would otherwise keep, e.g.,
// normal_cdf an out-of-line call).
#pragma once

#if defined(__CUDACC__)
#define MOEKIT_HOST_DEVICE __host__ __device__
#else
#define MOEKIT_HOST_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MOEKIT_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define MOEKIT_ALWAYS_INLINE inline
#endif

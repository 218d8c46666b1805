// moekit/core/host_device.hpp — MOEKIT_HOST_DEVICE marks functors that both the
// CPU kernels and CUDA kernels call (empty for host compilers).
#pragma once

#if defined(__CUDACC__)
#define MOEKIT_HOST_DEVICE __host__ __device__
#else
#define MOEKIT_HOST_DEVICE
#endif

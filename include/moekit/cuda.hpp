// moekit/cuda.hpp — the CUDA backend: `moekit::cuda` as the last template
// argument of any tensor, layer or model runs it on the GPU. Include from .cu
// files (nvcc); host-only code includes <moekit.hpp> and never needs nvcc.
#pragma once

#if !defined(__CUDACC__)
#error "moekit/cuda.hpp holds CUDA kernels: include it from a .cu file compiled by nvcc"
#endif

#include "backend/cuda/blas.cuh"
#include "backend/cuda/cuda.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/stream.cuh"

// tests/cuda/skip.cuh — the first line of every CUDA test case. Without a
// device the case prints the line ctest's SKIP_REGULAR_EXPRESSION looks for
// and returns, so a GPU-less machine builds the CUDA tests and reports them
// skipped rather than failed.
#pragma once

#include <catch2/catch.hpp>

#include <moekit/backend/cuda/cuda.cuh>

#define MOEKIT_SKIP_WITHOUT_CUDA_DEVICE()  \
  do {                                     \
    if (!::moekit::cuda_available()) {     \
      WARN("SKIPPED: no CUDA device");     \
      return;                              \
    }                                      \
  } while (0)

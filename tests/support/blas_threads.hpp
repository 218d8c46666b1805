// tests/support/blas_threads.hpp — thread-count determinism tests and the BLAS.
//
// moekit's own loops give the same bits on any thread count. Whether a
// multi-threaded BLAS call does depends on the BLAS kernel: OpenBLAS 0.3.21's
// SkylakeX kernels (Zen 4, AVX-512 Xeons) do; its Haswell/Zen kernels (Zen 3)
// round differently on 1 and 2 threads. A determinism test sets its thread
// counts through `thread_setting`: moekit gets n threads, and the BLAS gets n
// too where it is repeatable, else 1 (with a warning naming the kernel), so the
// test still pins everything moekit decides about threads.
#pragma once

#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include <moekit.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

extern "C" char* openblas_get_corename(void) __attribute__((weak));

namespace moekit::testing {

/// True when cblas_sgemm gives the same bits on 1 and 2 BLAS threads.
inline bool blas_repeatable_across_threads() {
  static const bool repeatable = [] {
    using namespace moekit;
    rng g(5);
    const auto a = normal<float>(g, shape<dyn, dyn>{256, 96});
    const auto b = normal<float>(g, shape<dyn, dyn>{96, 128});
    const int saved = num_threads();
    set_num_threads(1);
    const auto one = matmul(a, b);
    set_num_threads(2);
    const auto two = matmul(a, b);
    set_num_threads(saved);
    return std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0;
  }();
  return repeatable;
}

/// moekit on n threads; the BLAS on n threads where that is repeatable, else on 1.
inline void thread_setting(int n) {
  moekit::set_num_threads(n);
  if (!blas_repeatable_across_threads()) {
    if (::openblas_set_num_threads) ::openblas_set_num_threads(1);
    static bool warned = false;
    if (!warned) {
      warned = true;
      WARN("this BLAS (" << (openblas_get_corename ? openblas_get_corename() : "?")
                         << ") is not bitwise repeatable across its own thread counts: "
                            "determinism tests keep it on 1 thread and vary moekit's threads only");
    }
  }
}

}  // namespace moekit::testing

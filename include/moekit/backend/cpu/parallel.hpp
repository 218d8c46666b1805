// moekit/backend/cpu/parallel.hpp — the one thread pool (OpenMP) for moekit's
// own loops, and control of BLAS threads. Small loops run inline: waking a
// second thread costs ~3 µs when it spins and ~20 µs when it sleeps
// (OMP_WAIT_POLICY=PASSIVE, measured on a 2-vCPU VM), more than a map of up
// to a few hundred thousand elements takes.
#pragma once

#include <algorithm>
#include <cstddef>

#if defined(_OPENMP)
#include <omp.h>
#endif

extern "C" {
// OpenBLAS's thread control; weak so that another CBLAS still links.
void openblas_set_num_threads(int) __attribute__((weak));
int openblas_get_num_threads() __attribute__((weak));
}

namespace moekit {

/// Threads moekit's loops use (OpenMP's setting).
inline int num_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the threads for moekit's loops and for BLAS calls made outside them.
inline void set_num_threads(int n) noexcept {
  n = std::max(1, n);
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  if (openblas_set_num_threads) openblas_set_num_threads(n);
}

namespace detail {

/// Elements below which element-wise loops run on the calling thread (32 K
/// made a 2-thread C-T layer step 3x slower than 1 thread; issue #16).
inline constexpr std::size_t parallel_grain = std::size_t{1} << 18;

/// Calls body(begin, end) over [0, n) in contiguous chunks, one per thread,
/// when the work (n * cost_per_item) is large enough to pay for the fork.
template <class F>
void parallel_for(std::size_t n, std::size_t cost_per_item, F&& body) {
#if defined(_OPENMP)
  const int threads = omp_in_parallel() ? 1 : num_threads();
  if (threads > 1 && n * cost_per_item >= parallel_grain && n > 1) {
    const std::size_t chunks = std::min<std::size_t>(n, static_cast<std::size_t>(threads));
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static)
    for (std::size_t c = 0; c < chunks; ++c) body(n * c / chunks, n * (c + 1) / chunks);
    return;
  }
#else
  (void)cost_per_item;
#endif
  body(std::size_t{0}, n);
}

/// While alive, BLAS calls run on one thread, so that moekit can spread
/// independent BLAS calls over its own threads without oversubscription.
class blas_single_thread {
 public:
  blas_single_thread() noexcept
      : saved_(openblas_get_num_threads ? openblas_get_num_threads() : 1) {
    if (openblas_set_num_threads && saved_ != 1) openblas_set_num_threads(1);
  }
  ~blas_single_thread() {
    if (openblas_set_num_threads && saved_ != 1) openblas_set_num_threads(saved_);
  }
  blas_single_thread(const blas_single_thread&) = delete;
  blas_single_thread& operator=(const blas_single_thread&) = delete;

 private:
  int saved_;
};

}  // namespace detail
}  // namespace moekit

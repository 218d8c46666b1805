// moekit/backend/cpu/parallel.hpp — the one thread pool (OpenMP) for moekit's
// own loops, and control of BLAS threads. Small loops run inline: waking a
// second thread costs ~3 µs when it spins and ~20 µs when it sleeps
// (OMP_WAIT_POLICY=PASSIVE, measured on a 2-vCPU VM), more than a map of up
// to a few hundred thousand elements takes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>

#if defined(_OPENMP)
#include <omp.h>
#endif

extern "C" {
// OpenBLAS's thread control; weak so that another CBLAS still links.
void openblas_set_num_threads(int) __attribute__((weak));
int openblas_get_num_threads() __attribute__((weak));
int openblas_get_parallel() __attribute__((weak));  // 0 sequential, 1 pthreads, 2 OpenMP
}

namespace moekit {

// Threads moekit's loops use (OpenMP's setting); this thread's number in the
// parallel region it runs in (0 outside one); the threads of that region's
// team (1 outside one). Without OpenMP: 1, 0, 1.
#if defined(_OPENMP)
inline int num_threads() noexcept { return omp_get_max_threads(); }
inline std::size_t thread_num() noexcept { return static_cast<std::size_t>(omp_get_thread_num()); }
inline std::size_t team_size() noexcept { return static_cast<std::size_t>(omp_get_num_threads()); }
#else
inline int num_threads() noexcept { return 1; }
inline std::size_t thread_num() noexcept { return 0; }
inline std::size_t team_size() noexcept { return 1; }
#endif

/// Sets the threads for moekit's loops and for BLAS calls made outside them.
inline void set_num_threads(int n) noexcept {
  n = std::max(1, n);
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  if (openblas_set_num_threads) openblas_set_num_threads(n);
}

namespace detail {

/// Whether the loaded BLAS runs its threads from OpenMP's pool (OpenBLAS built
/// with USE_OPENMP, Debian's libopenblas0-openmp, which moekit's CMake
/// package prefers: cmake/moekit_dependencies.cmake). Then BLAS calls made
/// inside moekit's parallel regions run on one thread by themselves, and no
/// second pool of spinning threads competes with moekit's for the cores.
inline bool blas_uses_openmp() noexcept { return openblas_get_parallel && openblas_get_parallel() == 2; }

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

/// While alive, BLAS calls run on one thread. With an OpenMP BLAS, whose
/// openblas_set_num_threads also sets OpenMP's thread count, that count is
/// restored too.
class blas_single_thread {
 public:
  blas_single_thread() noexcept
      : saved_(openblas_get_num_threads ? openblas_get_num_threads() : 1), saved_openmp_(num_threads()) {
    if (openblas_set_num_threads && saved_ != 1) openblas_set_num_threads(1);
  }
  ~blas_single_thread() {
    if (!openblas_set_num_threads || saved_ == 1) return;
    openblas_set_num_threads(saved_);
#if defined(_OPENMP)
    if (blas_uses_openmp()) omp_set_num_threads(saved_openmp_);
#endif
  }
  blas_single_thread(const blas_single_thread&) = delete;
  blas_single_thread& operator=(const blas_single_thread&) = delete;

 private:
  int saved_, saved_openmp_;
};

/// While alive, moekit may spread independent BLAS calls over its own
/// threads without oversubscription: a pthreads BLAS is set to one thread
/// (blas_single_thread); an OpenMP BLAS needs nothing (inside a parallel
/// region it runs on the calling thread), and setting it would also drop
/// OpenMP's count to one for moekit's own loops.
class blas_calls_in_parallel {
 public:
  blas_calls_in_parallel() noexcept {
    if (!blas_uses_openmp()) one_.emplace();
  }

 private:
  std::optional<blas_single_thread> one_;
};

}  // namespace detail
}  // namespace moekit

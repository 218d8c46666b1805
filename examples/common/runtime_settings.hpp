// examples/common/runtime_settings.hpp — what every example and bench calls
// first. Two libraries read a setting only when they load, so when one is due
// the program starts itself again (one execv) with it set:
//
//   OMP_WAIT_POLICY=PASSIVE (examples): libgomp's default lets idle OpenMP
//     threads spin, and they then fight the pthreads build of OpenBLAS's own
//     threads for the cores: on a 2-core machine a step gets several times
//     slower (PyTorch, with the same two thread pools, needs the same
//     setting). moekit's CMake package loads OpenBLAS's OpenMP build where it
//     is installed (one pool, no fight); the setting stays for programs that
//     run on the pthreads build and for machines shared with other work.
//   OPENBLAS_CORETYPE (examples and benches): where OpenBLAS picked a slower
//     kernel than the CPU has (moekit::blas_info: 0.3.21 runs Prescott on
//     recent Xeons, 4-5x slower), the better one; MOEKIT_BLAS_CHOSEN_CORE
//     tells the new process what OpenBLAS had chosen.
//
// A variable the user set is never changed. print_blas_line then says which
// kernel runs.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <moekit/backend/cpu/blas_info.hpp>

namespace moekit::examples {

/// Whether relaunch_with_runtime_settings sets OMP_WAIT_POLICY.
enum class openmp_wait {
  passive,  ///< set PASSIVE unless the user set it (the examples)
  as_set,   ///< leave it (the benches: it is part of what they measure and record)
};

/// Starts the program again with the settings above when one is due; call it
/// first in main, before any OpenMP region or BLAS call.
inline void relaunch_with_runtime_settings(char** argv, openmp_wait wait = openmp_wait::passive) {
  bool changed = false;
  if (wait == openmp_wait::passive && std::getenv("OMP_WAIT_POLICY") == nullptr) {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    changed = true;
  }
  const bool blas = set_blas_kernel_env();
  if (!changed && !blas) return;
  ::execv("/proc/self/exe", argv);
  // Only on failure: run on as we are, and say nothing false about the kernel.
  if (blas) {
    ::unsetenv("OPENBLAS_CORETYPE");
    ::unsetenv("MOEKIT_BLAS_CHOSEN_CORE");
  }
}

/// One line on `out` naming the BLAS, the kernel it runs and the CPU:
/// "blas: OpenBLAS 0.3.21, kernel SkylakeX (AVX-512; OpenBLAS chose Haswell,
/// moekit set OPENBLAS_CORETYPE=SkylakeX); CPU AMD EPYC (...)".
inline void print_blas_line(std::FILE* out = stdout) {
  const blas_description d = blas_info();
  std::fprintf(out, "blas: %s; CPU %s\n", d.to_string().c_str(), d.cpu.to_string().c_str());
  std::fflush(out);
}

}  // namespace moekit::examples

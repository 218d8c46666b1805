// examples/common/passive_openmp.hpp — what every training example calls
// first. libgomp's default wait policy lets idle OpenMP threads spin, and they
// then fight OpenBLAS's own threads for the cores: on a 2-core machine a step
// gets several times slower (PyTorch, with the same two thread pools, needs
// the same setting). libgomp reads OMP_WAIT_POLICY only at start-up, so when
// it is unset the program starts itself again with it set to PASSIVE.
#pragma once

#include <unistd.h>

#include <cstdlib>

namespace moekit::examples {

inline void relaunch_with_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run on as we are
}

}  // namespace moekit::examples

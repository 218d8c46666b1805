// examples/common/backend_choice.hpp — the `--backend cpu|cuda|emulated` flag
// of the training examples. A program compiled by nvcc (CMake does so for
// CUDA-capable examples when the toolkit is there) offers cuda; one compiled
// by g++ says it has no CUDA instead of failing later.
#pragma once

#include <string>

#include <moekit/core/error.hpp>

#ifdef __CUDACC__
#include <moekit/cuda.hpp>
#endif

namespace moekit::examples {

/// Throws value_error, before any data is read, when `backend` names no
/// backend this build can run here.
inline void check_backend([[maybe_unused]] const std::string& program, const std::string& backend) {
  if (backend == "cpu" || backend == "emulated") return;
  if (backend != "cuda") throw value_error("--backend: '" + backend + "' is not one of cpu, cuda, emulated");
#ifdef __CUDACC__
  if (!cuda_available()) throw value_error("--backend cuda: no CUDA device is visible to this process");
#else
  throw value_error("--backend cuda: this build has no CUDA (" + program +
                    " was compiled without nvcc; configure with the CUDA toolkit installed and CMake compiles it "
                    "as CUDA)");
#endif
}

/// The backend as the output names it: "cpu", "emulated", or "cuda (<GPU name>)".
inline std::string backend_description(const std::string& backend) {
#ifdef __CUDACC__
  if (backend == "cuda") return "cuda (" + device_name() + ")";
#endif
  return backend;
}

}  // namespace moekit::examples

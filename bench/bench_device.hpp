// bench/bench_device.hpp — what a bench needs to run the same measurement on
// any backend (PERFORMANCE.md protocol, GPU part):
//
//   timeline<B>       marks on the clock that sees B's work: the host's steady
//                     clock, or on the GPU CUDA events on current_stream()
//   interleaved<B>    bench::interleaved timed on that clock
//   direct_gemm<B>    one row-major GEMM straight into the BLAS (cblas_sgemm;
//                     cublasSgemm / cublasGemmEx on the GPU): the ceilings
//   copy_gbps()       device-to-device copy bandwidth, same process (GPU)
// (Host syncs are counted with moekit::metered_device, backend/emulated.hpp.)
#pragma once

#include <cblas.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <string_view>
#include <type_traits>
#include <vector>

#include <moekit.hpp>

#ifdef __CUDACC__
#include <moekit/cuda.hpp>
#endif

#include "bench_util.hpp"

namespace bench {

/// C (m, n) = op(A)·op(B) + beta·C on row-major buffers of backend B: A stored
/// (m, k), or (k, m) when ta; B stored (k, n), or (n, k) when tb.
template <moekit::backend B>
struct direct_gemm {
  static void run(bool ta, bool tb, int m, int n, int k, const float* a, const float* b, float* c, float beta = 0.f) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.f, a,
                ta ? m : k, b, tb ? k : n, beta, c, n);
  }
};

/// Intervals between marks on the clock that sees backend B's work: the
/// host's steady clock for host-run backends; on the GPU, CUDA events recorded
/// on current_stream(), read once the device has passed the last one.
template <moekit::backend B>
class timeline {
 public:
  void mark() { marks_.push_back(now_ms()); }
  /// Milliseconds between consecutive marks; then starts afresh.
  std::vector<double> intervals() {
    std::vector<double> out;
    for (std::size_t i = 1; i < marks_.size(); ++i) out.push_back(marks_[i] - marks_[i - 1]);
    marks_.clear();
    return out;
  }

 private:
  std::vector<double> marks_;
};

#ifdef __CUDACC__
template <>
struct direct_gemm<moekit::cuda> {
  // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the
  // operands. float: cublasSgemm (TF32 as allow_tf32 says); bf16 and half:
  // cublasGemmEx with 16-bit operands and float accumulation.
  template <class T>
  static void run(bool ta, bool tb, int m, int n, int k, const T* a, const T* b, T* c, float beta = 0.f) {
    const float one = 1.f;
    cublasHandle_t h = moekit::detail::cublas_handle("direct_gemm");
    const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if constexpr (std::is_same_v<T, float>) {
      MOEKIT_CUBLAS_CHECK(cublasSgemm(h, op_b, op_a, n, m, k, &one, b, tb ? k : n, a, ta ? m : k, &beta, c, n),
                          "direct_gemm");
    } else {
      constexpr cudaDataType_t type = moekit::detail::cuda_data_type<T>;
      MOEKIT_CUBLAS_CHECK(cublasGemmEx(h, op_b, op_a, n, m, k, &one, b, type, tb ? k : n, a, type, ta ? m : k, &beta,
                                       c, type, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                          "direct_gemm");
    }
  }
};

template <>
class timeline<moekit::cuda> {
 public:
  timeline() = default;
  timeline(const timeline&) = delete;
  timeline& operator=(const timeline&) = delete;
  ~timeline() {
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
  }
  void mark() {
    if (used_ == events_.size()) {
      cudaEvent_t e = nullptr;
      MOEKIT_CUDA_CHECK(cudaEventCreate(&e), "timeline");
      events_.push_back(e);
    }
    MOEKIT_CUDA_CHECK(cudaEventRecord(events_[used_++], moekit::current_stream()), "timeline");
  }
  std::vector<double> intervals() {
    std::vector<double> out;
    if (used_ > 0) MOEKIT_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]), "timeline");
    for (std::size_t i = 1; i < used_; ++i) {
      float ms = 0;
      MOEKIT_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i - 1], events_[i]), "timeline");
      out.push_back(ms);
    }
    used_ = 0;
    return out;
  }

 private:
  std::vector<cudaEvent_t> events_;  // reused across calls: no event is created while timing
  std::size_t used_ = 0;
};

/// Device-to-device copy bandwidth (GB/s, bytes read + written) of a 256 MiB
/// buffer: the memory ceiling measured in the same process as the step.
inline double copy_gbps(int warmup, int reps) {
  using moekit::dyn;
  using moekit::shape;
  const std::size_t n = std::size_t(64) << 20;  // floats
  auto src = moekit::zeros<float, moekit::cuda>(shape<dyn>{n}), dst = moekit::zeros<float, moekit::cuda>(shape<dyn>{n});
  timeline<moekit::cuda> t;
  std::vector<double> ms;
  for (int r = -warmup; r < reps; ++r) {
    t.mark();
    MOEKIT_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), n * sizeof(float), cudaMemcpyDeviceToDevice,
                                      moekit::current_stream()),
                      "copy_gbps");
    t.mark();
    const double v = t.intervals()[0];
    if (r >= 0) ms.push_back(v);
  }
  return 2.0 * double(n * sizeof(float)) / (summarize(ms).median_ms * 1e6);
}
#endif

/// bench::interleaved on backend B's clock (CUDA events on the GPU).
template <moekit::backend B>
std::vector<stats> interleaved(const std::vector<std::function<void()>>& runs, int warmup, int reps) {
  if constexpr (B::host_accessible) {
    return bench::interleaved(runs, warmup, reps);
  } else {
    for (int w = 0; w < warmup; ++w)
      for (const auto& run : runs) run();
    std::vector<std::vector<double>> times(runs.size());
    timeline<B> t;
    for (int r = 0; r < reps; ++r)
      for (std::size_t i = 0; i < runs.size(); ++i) {
        t.mark();
        runs[i]();
        t.mark();
        times[i].push_back(t.intervals()[0]);
      }
    std::vector<stats> out;
    for (auto& v : times) out.push_back(summarize(std::move(v)));
    return out;
  }
}

}  // namespace bench

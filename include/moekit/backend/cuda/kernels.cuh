// moekit/backend/cuda/kernels.cuh — kernels<cuda>: the CUDA kernel set, the
// same names and arguments as kernels<cpu> (the test suite's oracle), one noun
// per header, gathered here. Every kernel is queued on current_stream() and
// none waits for the device.
#pragma once

#include "../backend.hpp"
#include "batch_norm.cuh"
#include "copy.cuh"
#include "cuda.cuh"
#include "gather.cuh"
#include "gemm.cuh"
#include "gemm_grouped.cuh"
#include "grouped_rows.cuh"
#include "histogram.cuh"
#include "map.cuh"
#include "norm.cuh"
#include "reduce.cuh"
#include "reduce_axis.cuh"
#include "routing.cuh"
#include "scan.cuh"
#include "softmax.cuh"
#include "sort.cuh"
#include "sparse.cuh"
#include "top_k.cuh"
#include "transpose.cuh"

namespace moekit {

template <>
struct kernels<cuda> : detail::cuda_gemm,
                       detail::cuda_gemm_grouped,
                       detail::cuda_grouped_rows,
                       detail::cuda_map,
                       detail::cuda_reduce,
                       detail::cuda_reduce_axis,
                       detail::cuda_softmax,
                       detail::cuda_norm,
                       detail::cuda_batch_norm,
                       detail::cuda_top_k,
                       detail::cuda_gather,
                       detail::cuda_sort,
                       detail::cuda_histogram,
                       detail::cuda_scan,
                       detail::cuda_copy,
                       detail::cuda_transpose,
                       detail::cuda_sparse,
                       detail::cuda_routing {};

}  // namespace moekit

// moekit/backend/cpu/kernels.hpp — kernels<cpu>: the CPU kernel set, one noun
// per header, gathered here. These are the reference oracle of the test suite.
#pragma once

#include "../backend.hpp"
#include "batch_norm.hpp"
#include "blas_info.hpp"
#include "copy.hpp"
#include "cpu.hpp"
#include "gather.hpp"
#include "gemm.hpp"
#include "gemm_grouped.hpp"
#include "grouped_rows.hpp"
#include "histogram.hpp"
#include "map.hpp"
#include "norm.hpp"
#include "reduce.hpp"
#include "reduce_axis.hpp"
#include "routing.hpp"
#include "scan.hpp"
#include "softmax.hpp"
#include "sort.hpp"
#include "sparse.hpp"
#include "top_k.hpp"
#include "transpose.hpp"

namespace moekit {

template <>
struct kernels<cpu> : detail::cpu_gemm,
                      detail::cpu_gemm_grouped,
                      detail::cpu_grouped_rows,
                      detail::cpu_map,
                      detail::cpu_reduce,
                      detail::cpu_reduce_axis,
                      detail::cpu_softmax,
                      detail::cpu_norm,
                      detail::cpu_batch_norm,
                      detail::cpu_top_k,
                      detail::cpu_gather,
                      detail::cpu_sort,
                      detail::cpu_histogram,
                      detail::cpu_scan,
                      detail::cpu_copy,
                      detail::cpu_transpose,
                      detail::cpu_sparse,
                      detail::cpu_routing {};

}  // namespace moekit

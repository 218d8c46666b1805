// moekit/merge/svd.hpp — the thin singular value decomposition of a host
// matrix through LAPACK's divide-and-conquer driver (sgesdd / dgesdd), and the
// stable rank Σ s² / max(s)² of its spectrum (MC-SMoE logs it to show that
// merged experts are lower-dimensional).
//
//   auto w = normal<double>(g, shape<dyn, dyn>{64, 16});
//   auto d = merge::thin_svd(w);              // d.u (64, 16), d.s (16), d.vt (16, 16): w = u·diag(s)·vt
//   double sr = merge::stable_rank(d.s);      // in [1, 16]
//
// LAPACK comes from the BLAS moekit already links: OpenBLAS (Debian's
// libopenblas.so included) exports the LAPACK symbols sgesdd_ / dgesdd_
// itself, so no separate liblapack is needed. A BLAS without LAPACK (a plain
// reference CBLAS) fails at link time with "undefined reference to sgesdd_";
// link a LAPACK then. The prototypes below assume LAPACK's default 32-bit
// integers (not an ILP64 build) and gfortran's hidden string-length argument
// after the others.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../tensor/tensor.hpp"

extern "C" {
// Fortran LAPACK (column-major): A (m, n) = U · diag(s) · VT, jobz 'S' gives the
// thin U (m, min) and VT (min, n). The trailing size_t is the length of `jobz`.
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s, float* u,
             const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* iwork, int* info,
             std::size_t jobz_len);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
             const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info,
             std::size_t jobz_len);
}

namespace moekit::merge {

/// a = u · diag(s) · vt with k = min(m, n) singular values, largest first.
template <class T>
struct svd_result {
  tensor<T, shape<dyn, dyn>, cpu> u;   // (m, k), orthonormal columns
  tensor<T, shape<dyn>, cpu> s;        // (k), descending, >= 0
  tensor<T, shape<dyn, dyn>, cpu> vt;  // (k, n), orthonormal rows
};

namespace detail {
template <class T>
void gesdd(const char* jobz, int m, int n, T* a, int lda, T* s, T* u, int ldu, T* vt, int ldvt, T* work, int lwork,
           int* iwork, int* info) {
  if constexpr (std::is_same_v<T, float>) sgesdd_(jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, work, &lwork, iwork, info, 1);
  else dgesdd_(jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, work, &lwork, iwork, info, 1);
}

[[noreturn]] inline void svd_fail(std::size_t m, std::size_t n, int info) {
  if (info < 0)
    throw value_error("thin_svd: LAPACK gesdd rejected argument " + std::to_string(-info) + " for a (" +
                      std::to_string(m) + ", " + std::to_string(n) + ") matrix");
  throw value_error("thin_svd: LAPACK gesdd did not converge on a (" + std::to_string(m) + ", " + std::to_string(n) +
                    ") matrix (info " + std::to_string(info) + "; a NaN or Inf in the input?)");
}
}  // namespace detail

/// The thin SVD of a row-major host matrix a (m, n), float or double. value_error
/// when LAPACK reports a problem (info != 0: a bad argument, or no convergence,
/// e.g. on NaN input) or a size exceeds LAPACK's int range. An empty matrix
/// gives empty factors.
template <class T, class S>
svd_result<T> thin_svd(const tensor<T, S, cpu>& a) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "thin_svd: float or double matrices only");
  static_assert(S::rank() == 2, "thin_svd: a must be a matrix (m, n)");
  const std::size_t m = a.extent(0), n = a.extent(1), k = std::min(m, n);
  svd_result<T> out{tensor<T, shape<dyn, dyn>, cpu>(shape<dyn, dyn>{m, k}), tensor<T, shape<dyn>, cpu>(shape<dyn>{k}),
                    tensor<T, shape<dyn, dyn>, cpu>(shape<dyn, dyn>{k, n})};
  if (k == 0) return out;
  constexpr auto int_max = static_cast<std::size_t>(std::numeric_limits<int>::max());
  if (m > int_max || n > int_max || m * n > int_max)
    throw value_error("thin_svd: a (" + std::to_string(m) + ", " + std::to_string(n) +
                      ") matrix exceeds LAPACK's 32-bit index range");
  // Row-major a (m, n) is column-major aᵀ (n, m). Decomposing aᵀ = U'·Σ·V'ᵀ
  // gives a = V'·Σ·U'ᵀ; LAPACK's column-major V'ᵀ (k, m) read row-major is
  // V' (m, k) = our u, and its U' (n, k) read row-major is U'ᵀ (k, n) = our vt.
  std::vector<T> work_a(a.data(), a.data() + m * n);  // gesdd overwrites its input
  const int cm = static_cast<int>(n), cn = static_cast<int>(m), ck = static_cast<int>(k);
  std::vector<int> iwork(8 * k);
  int info = 0;
  T query = 0;
  detail::gesdd<T>("S", cm, cn, work_a.data(), cm, out.s.data(), out.vt.data(), cm, out.u.data(), ck, &query, -1,
                   iwork.data(), &info);
  if (info != 0) detail::svd_fail(m, n, info);
  std::vector<T> work(static_cast<std::size_t>(query) + 1);
  detail::gesdd<T>("S", cm, cn, work_a.data(), cm, out.s.data(), out.vt.data(), cm, out.u.data(), ck, work.data(),
                   static_cast<int>(work.size()), iwork.data(), &info);
  if (info != 0) detail::svd_fail(m, n, info);
  return out;
}

/// Σ s² / max(s)² of singular values s (any order): how many directions carry
/// the energy, between 1 (rank one) and the number of nonzero values. 0 for
/// an all-zero (or empty) spectrum.
template <class T, class S>
double stable_rank(const tensor<T, S, cpu>& s) {
  double top = 0, energy = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const double v = static_cast<double>(s[i]);
    top = std::max(top, v * v);
    energy += v * v;
  }
  return top > 0 ? energy / top : 0.0;
}

}  // namespace moekit::merge

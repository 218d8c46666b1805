// The CUDA GEMM kernels (cuBLAS gemm, strided batches, moekit's grouped GEMM
// kernels) against the CPU kernel set on the same random data: fp32 and fp64
// to rounding, bf16/half to bf16 tolerances. Without a device every case
// prints "SKIPPED: no CUDA device" and returns.
#include <catch2/catch.hpp>

#include "skip.cuh"

#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <moekit.hpp>
#include <moekit/cuda.hpp>

// Not `using namespace moekit`: CUDA's headers declare a global `half`.
namespace mk = moekit;
using mk::bf16;
using mk::index_t;

namespace {

using cpu_kernels = mk::kernels<mk::cpu>;
using gpu_kernels = mk::kernels<mk::cuda>;

template <class T>
using host = mk::tensor<T, mk::shape<mk::dyn>, mk::cpu>;
template <class T>
using device = mk::tensor<T, mk::shape<mk::dyn>, mk::cuda>;

template <class T>
double to_double(T x) {
  if constexpr (mk::storage_16<T>) return static_cast<double>(static_cast<float>(x));
  else return static_cast<double>(x);
}

/// n standard normal values, rounded to T for 16-bit T.
template <class T>
host<T> random_host(mk::rng& g, std::size_t n) {
  if constexpr (mk::real<T>) {
    return mk::normal<T>(g, mk::shape<mk::dyn>{n});
  } else {
    const auto f = mk::normal<float>(g, mk::shape<mk::dyn>{n});
    host<T> out(mk::shape<mk::dyn>{n});
    for (std::size_t i = 0; i < n; ++i) out[i] = T(f[i]);
    return out;
  }
}

template <class T>
host<T> filled(std::size_t n, T value) {
  host<T> out(mk::shape<mk::dyn>{n});
  for (std::size_t i = 0; i < n; ++i) out[i] = value;
  return out;
}

template <class T>
T quiet_nan() {
  return T(std::numeric_limits<float>::quiet_NaN());
}

host<index_t> offsets_tensor(const std::vector<index_t>& v) {
  host<index_t> out(mk::shape<mk::dyn>{v.size()});
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = v[i];
  return out;
}

template <class T>
device<T> on_device(const host<T>& x) {
  return x.template to<mk::cuda>();
}

template <class T>
host<T> on_host(const device<T>& x) {
  return x.template to<mk::cpu>();
}

/// |got - want| <= atol + rtol·|want| everywhere; NaN only where want is NaN
/// (memory neither side may touch keeps its NaN fill).
template <class T>
void require_close(const host<T>& got, const host<T>& want, double rtol, double atol) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0, first_bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = to_double(got[i]), w = to_double(want[i]);
    const bool ok = std::isnan(w) ? std::isnan(g) : std::abs(g - w) <= atol + rtol * std::abs(w);
    if (!ok && bad++ == 0) first_bad = i;
  }
  INFO("first mismatch at " << first_bad << ": got " << to_double(got[first_bad]) << ", want "
                            << to_double(want[first_bad]) << " (" << bad << " mismatches of " << got.size() << ")");
  REQUIRE(bad == 0);
}

template <class T>
struct tolerance {
  static constexpr double rtol = 1e-4, atol = 1e-4;
};
template <>
struct tolerance<double> {
  static constexpr double rtol = 1e-11, atol = 1e-11;
};
template <>
struct tolerance<bf16> {
  static constexpr double rtol = 1e-2, atol = 1e-2;
};
template <>
struct tolerance<mk::half> {
  static constexpr double rtol = 1e-2, atol = 1e-2;
};

/// C = alpha·op(A)·op(B) + beta·C on both backends, with row strides wider
/// than the rows; compares the whole C buffer (its padding must stay as is).
template <class T>
void check_gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, float alpha, float beta,
                bool nan_c = false) {
  INFO("trans_a " << ta << ", trans_b " << tb << ", m " << m << ", n " << n << ", k " << k << ", beta " << beta);
  mk::rng g(11 + m + 7 * n + 13 * k + (ta ? 100 : 0) + (tb ? 200 : 0));
  const std::size_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
  const auto a = random_host<T>(g, (ta ? k : m) * lda), b = random_host<T>(g, (tb ? n : k) * ldb);
  const auto c = nan_c ? filled<T>(m * ldc, quiet_nan<T>()) : random_host<T>(g, m * ldc);
  auto want = c.clone();
  cpu_kernels::gemm(ta, tb, m, n, k, T(alpha), a.data(), lda, b.data(), ldb, T(beta), want.data(), ldc);
  const auto a_d = on_device(a), b_d = on_device(b);
  auto c_d = on_device(c);
  gpu_kernels::gemm(ta, tb, m, n, k, T(alpha), a_d.data(), lda, b_d.data(), ldb, T(beta), c_d.data(), ldc);
  require_close(on_host(c_d), want, tolerance<T>::rtol, tolerance<T>::atol);
}

template <class T>
void check_gemm_all_transposes() {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_gemm<T>(ta, tb, 37, 29, 23, 1.5f, -0.5f);
      check_gemm<T>(ta, tb, 5, 130, 67, 1.0f, 0.0f, /*nan_c=*/true);  // beta = 0 ignores C
    }
}

template <class T>
void check_strided_batched(bool ta, bool tb) {
  INFO("trans_a " << ta << ", trans_b " << tb);
  mk::rng g(ta * 2 + tb);
  const std::size_t m = 9, n = 7, k = 13, batch = 3;
  const std::size_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;
  const std::size_t stride_a = (ta ? k : m) * lda + 5, stride_b = (tb ? n : k) * ldb + 1, stride_c = m * ldc + 4;
  const auto a = random_host<T>(g, stride_a * batch), b = random_host<T>(g, stride_b * batch);
  const auto c = random_host<T>(g, stride_c * batch);
  auto want = c.clone();
  cpu_kernels::gemm_strided_batched(ta, tb, m, n, k, T(0.75f), a.data(), lda, stride_a, b.data(), ldb, stride_b,
                                    T(0.5f), want.data(), ldc, stride_c, batch);
  const auto a_d = on_device(a), b_d = on_device(b);
  auto c_d = on_device(c);
  gpu_kernels::gemm_strided_batched(ta, tb, m, n, k, T(0.75f), a_d.data(), lda, stride_a, b_d.data(), ldb, stride_b,
                                    T(0.5f), c_d.data(), ldc, stride_c, batch);
  require_close(on_host(c_d), want, tolerance<T>::rtol, tolerance<T>::atol);
}

/// Group offsets: empty groups, one-row groups, groups spanning several row
/// tiles (64 rows) and not starting at row 0 (rows before offsets[0] belong to
/// no group and must stay untouched).
const std::vector<index_t> fixed_offsets{3, 3, 4, 70, 70, 71, 200, 265, 265};

std::vector<index_t> random_offsets(mk::rng& g, std::size_t groups) {
  std::vector<index_t> offsets{static_cast<index_t>(g.next_uniform<float>() * 5)};
  for (std::size_t i = 0; i < groups; ++i) {
    const float u = g.next_uniform<float>(), v = g.next_uniform<float>();
    const index_t rows = u < 0.3f ? 0 : u < 0.45f ? 1 : static_cast<index_t>(v * 150);
    offsets.push_back(offsets.back() + rows);
  }
  return offsets;
}

/// The reference for 16-bit grouped GEMMs: the float CPU kernel on the same
/// (rounded) values, rounded once at the end, as the device kernel does.
template <class T>
host<float> widen(const host<T>& x) {
  host<float> out(x.shape());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i]);
  return out;
}
template <class T>
host<T> narrow(const host<float>& x) {
  host<T> out(x.shape());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = T(x[i]);
  return out;
}

template <class T>
void check_gemm_grouped(bool trans_w, const std::vector<index_t>& offsets_v, std::size_t k, std::size_t n, float alpha,
                        float beta) {
  INFO("trans_w " << trans_w << ", groups " << offsets_v.size() - 1 << ", rows " << offsets_v.back() << ", k " << k
                  << ", n " << n << ", beta " << beta);
  mk::rng g(offsets_v.back() + 31 * k + n + (trans_w ? 1000 : 0));
  const std::size_t groups = offsets_v.size() - 1, rows = static_cast<std::size_t>(offsets_v.back());
  const auto offsets = offsets_tensor(offsets_v);
  const auto a = random_host<T>(g, rows * k), w = random_host<T>(g, groups * k * n);
  const auto c = beta == 0.0f ? filled<T>(rows * n, quiet_nan<T>()) : random_host<T>(g, rows * n);
  host<T> want;
  if constexpr (mk::real<T>) {
    want = c.clone();
    cpu_kernels::gemm_grouped(trans_w, groups, offsets.data(), k, n, T(alpha), a.data(), w.data(), k * n, T(beta),
                              want.data());
  } else {
    auto want_f = widen(c);
    const auto a_f = widen(a), w_f = widen(w);
    cpu_kernels::gemm_grouped(trans_w, groups, offsets.data(), k, n, alpha, a_f.data(), w_f.data(), k * n, beta,
                              want_f.data());
    want = narrow<T>(want_f);
  }
  const auto offsets_d = on_device(offsets);
  const auto a_d = on_device(a), w_d = on_device(w);
  auto c_d = on_device(c);
  gpu_kernels::gemm_grouped(trans_w, groups, offsets_d.data(), k, n, T(alpha), a_d.data(), w_d.data(), k * n, T(beta),
                            c_d.data());
  require_close(on_host(c_d), want, tolerance<T>::rtol, tolerance<T>::atol);
}

template <class T>
void check_gemm_grouped_reduce(const std::vector<index_t>& offsets_v, std::size_t m, std::size_t n, float beta) {
  INFO("groups " << offsets_v.size() - 1 << ", rows " << offsets_v.back() << ", m " << m << ", n " << n << ", beta "
                 << beta);
  mk::rng g(offsets_v.back() + 17 * m + n);
  const std::size_t groups = offsets_v.size() - 1, rows = static_cast<std::size_t>(offsets_v.back());
  const auto offsets = offsets_tensor(offsets_v);
  const auto a = random_host<T>(g, rows * m), d = random_host<T>(g, rows * n);
  // beta = 0 must overwrite C (NaN included), empty groups with zeros.
  const auto c = beta == 0.0f ? filled<T>(groups * m * n, quiet_nan<T>()) : random_host<T>(g, groups * m * n);
  host<T> want;
  if constexpr (mk::real<T>) {
    want = c.clone();
    cpu_kernels::gemm_grouped_reduce(groups, offsets.data(), m, n, T(1.5f), a.data(), d.data(), T(beta), want.data(),
                                     m * n);
  } else {
    auto want_f = widen(c);
    const auto a_f = widen(a), d_f = widen(d);
    cpu_kernels::gemm_grouped_reduce(groups, offsets.data(), m, n, 1.5f, a_f.data(), d_f.data(), beta, want_f.data(),
                                     m * n);
    want = narrow<T>(want_f);
  }
  const auto offsets_d = on_device(offsets);
  const auto a_d = on_device(a), d_d = on_device(d);
  auto c_d = on_device(c);
  gpu_kernels::gemm_grouped_reduce(groups, offsets_d.data(), m, n, T(1.5f), a_d.data(), d_d.data(), T(beta),
                                   c_d.data(), m * n);
  const auto got = on_host(c_d);
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    REQUIRE(!std::isnan(to_double(got[i])));
  }
  require_close(got, want, tolerance<T>::rtol, tolerance<T>::atol);
}

template <class DF>
void check_bias_backward(const std::vector<index_t>& offsets_v, std::size_t n, DF df, bool with_db) {
  INFO("groups " << offsets_v.size() - 1 << ", rows " << offsets_v.back() << ", n " << n << ", db " << with_db);
  mk::rng g(offsets_v.back() + 3 * n + with_db);
  const std::size_t groups = offsets_v.size() - 1, rows = static_cast<std::size_t>(offsets_v.back());
  const auto offsets = offsets_tensor(offsets_v);
  const auto h = random_host<float>(g, rows * n), b = random_host<float>(g, groups * n);
  const auto dy = random_host<float>(g, rows * n);
  // Rows outside every group are not written: both sides start from the same dz.
  const auto dz0 = random_host<float>(g, rows * n), db0 = filled<float>(groups * n, quiet_nan<float>());
  auto dz_want = dz0.clone(), db_want = db0.clone();
  cpu_kernels::grouped_bias_activation_backward(groups, offsets.data(), n, h.data(), b.data(), dy.data(), df,
                                                dz_want.data(), with_db ? db_want.data() : nullptr);
  const auto offsets_d = on_device(offsets);
  const auto h_d = on_device(h), b_d = on_device(b), dy_d = on_device(dy);
  auto dz_d = on_device(dz0), db_d = on_device(db0);
  gpu_kernels::grouped_bias_activation_backward(groups, offsets_d.data(), n, h_d.data(), b_d.data(), dy_d.data(), df,
                                                dz_d.data(), with_db ? db_d.data() : nullptr);
  require_close(on_host(dz_d), dz_want, 1e-5, 1e-6);
  const auto db_got = on_host(db_d);
  if (with_db) {
    for (std::size_t i = 0; i < db_got.size(); ++i) {
      INFO("db element " << i);
      REQUIRE(!std::isnan(db_got[i]));  // every group's sums written, zeros for empty groups
    }
    require_close(db_got, db_want, 1e-4, 1e-4);
  } else {
    for (std::size_t i = 0; i < db_got.size(); ++i) REQUIRE(std::isnan(db_got[i]));  // db untouched
  }
}

}  // namespace

TEST_CASE("cuda gemm: every transpose combination matches the CPU, float and double", "[cuda][gemm]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  check_gemm_all_transposes<float>();
  check_gemm_all_transposes<double>();
}

TEST_CASE("cuda gemm: bf16 and half with float accumulation match the CPU", "[cuda][gemm]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  check_gemm_all_transposes<bf16>();
  check_gemm_all_transposes<mk::half>();
}

TEST_CASE("cuda gemm: k = 0 scales C by beta, m = 0 touches nothing", "[cuda][gemm]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  check_gemm<float>(false, false, 6, 4, 0, 1.0f, 0.5f);
  check_gemm<float>(true, true, 6, 4, 0, 1.0f, 0.0f, /*nan_c=*/true);
  check_gemm<float>(false, true, 0, 4, 3, 1.0f, 0.5f);
  check_gemm<bf16>(true, false, 6, 4, 0, 1.0f, 2.0f);
}

TEST_CASE("cuda gemm_strided_batched matches the CPU", "[cuda][gemm]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      check_strided_batched<float>(ta, tb);
      check_strided_batched<double>(ta, tb);
      check_strided_batched<bf16>(ta, tb);
    }
}

TEST_CASE("cuda gemm_grouped: fixed and random offsets, both weight layouts, match the CPU", "[cuda][gemm_grouped]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  mk::rng g(77);
  for (bool trans_w : {false, true}) {
    check_gemm_grouped<float>(trans_w, fixed_offsets, 37, 130, 1.25f, 0.75f);
    check_gemm_grouped<float>(trans_w, fixed_offsets, 16, 64, 1.0f, 0.0f);  // C starts as NaN
    check_gemm_grouped<float>(trans_w, fixed_offsets, 0, 9, 1.0f, 0.5f);    // k = 0: beta · C
    check_gemm_grouped<double>(trans_w, fixed_offsets, 37, 130, 1.25f, 0.75f);
    check_gemm_grouped<float>(trans_w, {0, 1}, 5, 3, 1.0f, 0.0f);  // one row, one group
    for (std::size_t groups : {1u, 7u, 64u}) {
      check_gemm_grouped<float>(trans_w, random_offsets(g, groups), 48, 96, 1.0f, 0.0f);
      check_gemm_grouped<double>(trans_w, random_offsets(g, groups), 21, 200, 0.5f, 1.0f);
    }
  }
}

TEST_CASE("cuda gemm_grouped: bf16 and half inputs with float accumulation", "[cuda][gemm_grouped]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  mk::rng g(78);
  for (bool trans_w : {false, true}) {
    check_gemm_grouped<bf16>(trans_w, fixed_offsets, 37, 130, 1.25f, 0.75f);
    check_gemm_grouped<mk::half>(trans_w, fixed_offsets, 40, 72, 1.0f, 0.0f);
    check_gemm_grouped<bf16>(trans_w, random_offsets(g, 16), 64, 128, 1.0f, 0.0f);
  }
}

TEST_CASE("cuda gemm_grouped_reduce: beta 0 and 1, empty groups, match the CPU", "[cuda][gemm_grouped]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  mk::rng g(79);
  for (float beta : {0.0f, 1.0f}) {
    check_gemm_grouped_reduce<float>(fixed_offsets, 70, 130, beta);
    check_gemm_grouped_reduce<double>(fixed_offsets, 70, 130, beta);
    check_gemm_grouped_reduce<float>({0, 0, 0}, 5, 7, beta);  // only empty groups: beta · C
    check_gemm_grouped_reduce<float>(random_offsets(g, 9), 33, 17, beta);
    check_gemm_grouped_reduce<bf16>(random_offsets(g, 5), 64, 40, beta);
  }
}

TEST_CASE("cuda grouped_bias_activation_backward: dz and deterministic db match the CPU", "[cuda][gemm_grouped]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  mk::rng g(80);
  for (bool with_db : {false, true}) {
    check_bias_backward(fixed_offsets, 45, mk::fn::gelu_backward{}, with_db);
    check_bias_backward(fixed_offsets, 32, mk::fn::relu_backward{}, with_db);
    check_bias_backward(random_offsets(g, 12), 100, mk::fn::silu_backward{}, with_db);
  }
}

// CPU GEMM on bf16/half storage: inputs widened to float, one sgemm, C
// rounded back; checked against a double reference on the 16-bit inputs, with
// padded leading dimensions (padding untouched) and k = 0 (C = beta·C).
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>
#include <moekit.hpp>
using namespace moekit;
template <class H>
void check16(double tol) {
  rng g(5);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const std::size_t m = 13, n = 11, k = 17, lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 3, ldc = n + 1;
      std::vector<H> a((ta ? k : m) * lda), b((tb ? n : k) * ldb), c(m * ldc);
      for (auto& x : a) x = H(g.next_uniform<float>() * 2 - 1);
      for (auto& x : b) x = H(g.next_uniform<float>() * 2 - 1);
      for (auto& x : c) x = H(g.next_uniform<float>() * 2 - 1);
      auto c0 = c;
      kernels<cpu>::gemm(ta, tb, m, n, k, H(1.5f), a.data(), lda, b.data(), ldb, H(0.5f), c.data(), ldc);
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
          double ref = 0.5 * double(float(c0[i * ldc + j]));
          for (std::size_t p = 0; p < k; ++p)
            ref += 1.5 * double(float(ta ? a[p * lda + i] : a[i * lda + p])) * double(float(tb ? b[j * ldb + p] : b[p * ldb + j]));
          REQUIRE(std::abs(double(float(c[i * ldc + j])) - ref) <= tol * (1 + std::abs(ref)));
        }
      REQUIRE(float(c[n]) == float(c0[n]));  // padding untouched
      std::vector<H> z(m * ldc, H(std::nanf("")));
      kernels<cpu>::gemm(ta, tb, m, n, 0, H(1.f), a.data(), lda, b.data(), ldb, H(0.f), z.data(), ldc);
      REQUIRE(float(z[0]) == 0.0f);
    }
}
TEST_CASE("cpu gemm: bf16 and half storage, every transpose", "[backend][gemm]") { check16<bf16>(1e-2); check16<half>(2e-3); }
TEST_CASE("cpu gemm: strided batched bf16", "[backend][gemm]") {
  std::vector<bf16> a(2 * 6, bf16(1.f)), b(2 * 6, bf16(2.f)), c(2 * 4, bf16(0.f));
  kernels<cpu>::gemm_strided_batched(false, false, 2, 2, 3, bf16(1.f), a.data(), 3, 6, b.data(), 2, 6, bf16(0.f), c.data(), 2, 4, 2);
  for (auto x : c) REQUIRE(float(x) == 6.0f);
}

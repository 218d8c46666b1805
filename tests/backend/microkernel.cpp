// moekit's own fp32 GEMM (backend/cpu/microkernel.hpp) and the grouped GEMMs
// on it (gemm_grouped.hpp), against cblas_sgemm: every instruction set this
// CPU has, odd sizes, edges of tiles and panels, empty and few-row groups,
// alpha/beta, epilogues, and the same bits with 1 and 2 threads.
#include <cblas.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <moekit.hpp>
#include <random>
#include <vector>

namespace microkernel_test {

using namespace moekit;
namespace mk = moekit::detail::microkernel;

std::vector<float> random_floats(std::mt19937& g, std::size_t n) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

/// max |x - y| / (1 + |y|)
double max_rel(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0;
  for (std::size_t i = 0; i < x.size(); ++i) e = std::max(e, std::fabs(double(x[i]) - y[i]) / (1 + std::fabs(y[i])));
  return e;
}

std::vector<mk::isa> isas_here() {
  std::vector<mk::isa> out{mk::isa::portable};
  if (mk::best_isa() >= mk::isa::avx2) out.push_back(mk::isa::avx2);
  if (mk::best_isa() >= mk::isa::avx512) out.push_back(mk::isa::avx512);
  return out;
}

/// Sets the tiles for a scope.
struct isa_scope {
  mk::isa saved = mk::active_isa();
  explicit isa_scope(mk::isa i) { mk::set_isa(i); }
  ~isa_scope() { mk::set_isa(saved); }
};

TEST_CASE("micro-kernel GEMM equals cblas_sgemm on odd shapes, every instruction set", "[backend][microkernel]") {
  std::mt19937 g(11);
  struct dims {
    std::size_t m, n, k;
  };
  const dims shapes[] = {{1, 1, 1},   {1, 33, 7},   {7, 1, 300},  {9, 31, 129}, {13, 17, 256},
                         {64, 128, 64}, {97, 65, 257}, {100, 100, 1}, {5, 200, 0}};
  for (const mk::isa i : isas_here())
    for (const auto& s : shapes)
      for (const bool trans : {false, true})
        for (const float beta : {0.0f, 0.5f}) {
          CAPTURE(mk::isa_name(i), s.m, s.n, s.k, trans, beta);
          const auto a = random_floats(g, s.m * s.k), b = random_floats(g, s.k * s.n);
          auto c = random_floats(g, s.m * s.n);
          auto expect = c;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, trans ? CblasTrans : CblasNoTrans, int(s.m), int(s.n), int(s.k),
                      1.5f, a.data(), int(std::max<std::size_t>(s.k, 1)), b.data(),
                      int(std::max<std::size_t>(trans ? s.k : s.n, 1)), beta, expect.data(), int(s.n));
          std::vector<float> packed(mk::packed_size(i, s.k, s.n) + 1);
          mk::pack(i, trans, s.k, s.n, b.data(), trans ? s.k : s.n, packed.data());
          std::size_t tiles_seen = 0, elements_seen = 0;
          auto count = [&](float*, std::size_t, std::size_t, std::size_t, std::size_t rows, std::size_t cols) {
            ++tiles_seen;
            elements_seen += rows * cols;
          };
          mk::gemm_block(i, 0, s.m, 0, s.n, s.n, s.k, 1.5f, {a.data(), s.k, 1}, mk::packed_panels(i, packed.data(), s.k), beta, c.data(), s.n,
                         count);
          CHECK(max_rel(c, expect) < 2e-5);
          CHECK(elements_seen == s.m * s.n);  // the epilogue saw every element once
          CHECK(tiles_seen > 0);
        }
}

TEST_CASE("micro-kernel GEMM reads a transposed A in place (the weight-gradient form)", "[backend][microkernel]") {
  std::mt19937 g(12);
  for (const mk::isa i : isas_here()) {
    const std::size_t rows = 45, m = 70, n = 37;  // C (m, n) = Aᵀ (m, rows) · D (rows, n)
    const auto a = random_floats(g, rows * m), d = random_floats(g, rows * n);
    std::vector<float> c(m * n), expect(m * n);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(m), int(n), int(rows), 1.0f, a.data(), int(m), d.data(),
                int(n), 0.0f, expect.data(), int(n));
    std::vector<float> packed(mk::packed_size(i, rows, n));
    mk::pack(i, false, rows, n, d.data(), n, packed.data());
    mk::gemm_block(i, 0, m, 0, n, n, rows, 1.0f, {a.data(), 1, m}, mk::packed_panels(i, packed.data(), rows), 0.0f, c.data(), n);
    CAPTURE(mk::isa_name(i));
    CHECK(max_rel(c, expect) < 2e-5);
  }
}

/// The grouped GEMMs of a layer step against per-group cblas_sgemm calls.
struct grouped_case {
  std::vector<index_t> offsets;
  std::size_t k, n;
};

/// `scale` widens the rounding tolerance for cases with many more outputs
/// (the largest of their rounding errors is larger).
void check_grouped(const grouped_case& gc, std::mt19937& g, double scale = 1) {
  const std::size_t groups = gc.offsets.size() - 1, rows = std::size_t(gc.offsets.back()), k = gc.k, n = gc.n;
  const auto x = random_floats(g, rows * k), w = random_floats(g, groups * k * n), dy = random_floats(g, rows * n);
  std::vector<float> y(rows * n), yt(rows * k), dw(groups * k * n, 7.0f);
  std::vector<float> y_ref(rows * n), yt_ref(rows * k), dw_ref(groups * k * n, 0.0f);
  for (std::size_t e = 0; e < groups; ++e) {
    const auto lo = std::size_t(gc.offsets[e]), r = std::size_t(gc.offsets[e + 1]) - lo;
    if (r == 0) continue;
    const float* we = w.data() + e * k * n;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(r), int(n), int(k), 1.0f, x.data() + lo * k, int(k),
                we, int(n), 0.0f, y_ref.data() + lo * n, int(n));  // y = x·W
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(r), int(k), int(n), 1.0f, dy.data() + lo * n, int(n), we,
                int(n), 0.0f, yt_ref.data() + lo * k, int(k));  // dx = dy·Wᵀ
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(k), int(n), int(r), 1.0f, x.data() + lo * k, int(k),
                dy.data() + lo * n, int(n), 0.0f, dw_ref.data() + e * k * n, int(n));  // dW = xᵀ·dy
  }
  kernels<cpu>::gemm_grouped(false, groups, gc.offsets.data(), k, n, 1.0f, x.data(), w.data(), k * n, 0.0f, y.data());
  kernels<cpu>::gemm_grouped(true, groups, gc.offsets.data(), n, k, 1.0f, dy.data(), w.data(), k * n, 0.0f,
                             yt.data());
  kernels<cpu>::gemm_grouped_reduce(groups, gc.offsets.data(), k, n, 1.0f, x.data(), dy.data(), 0.0f, dw.data(),
                                    k * n);
  // float rounding grows with the depth summed: 2e-5 up to 256 terms, in proportion beyond
  std::size_t most_rows = 0;
  for (std::size_t e = 0; e < groups; ++e) most_rows = std::max(most_rows, std::size_t(gc.offsets[e + 1] - gc.offsets[e]));
  auto tol = [&](std::size_t depth) { return scale * 2e-5 * std::max(1.0, double(depth) / 256); };
  CHECK(max_rel(y, y_ref) < tol(k));
  CHECK(max_rel(yt, yt_ref) < tol(n));
  CHECK(max_rel(dw, dw_ref) < tol(most_rows));  // empty groups: beta = 0 overwrote the 7s with zeros
}

TEST_CASE("grouped GEMMs on the micro-kernels equal per-group sgemm: empty, few-row and odd groups",
          "[backend][microkernel][grouped]") {
  std::mt19937 g(13);
  const grouped_case cases[] = {
      {{0, 0, 0}, 16, 8},                        // no rows at all
      {{0, 1, 1, 3, 7, 7}, 33, 17},              // few-row groups (the unpacked path) and empty ones
      {{0, 50, 50, 170, 230}, 256, 136},         // n not a multiple of any panel width
      {{0, 5, 200, 201, 310}, 65, 300},          // depth above the panel depth, 1-row group
      {{0, 64, 128, 192, 256}, 64, 128},         // C-T's per-expert shape
      {{0, 40, 100, 165}, 520, 64},              // several panel depths
      {{0, 70, 70, 600}, 48, 530},               // three column slabs, the last one partial
  };
  for (const mk::isa i : isas_here()) {
    isa_scope scope(i);
    for (const auto& gc : cases) {
      CAPTURE(mk::isa_name(i), gc.offsets.back(), gc.k, gc.n);
      check_grouped(gc, g);
    }
  }
}

TEST_CASE("grouped GEMMs on many small groups (C-F's shape, weights over 4 MB) equal per-group sgemm",
          "[backend][microkernel][grouped]") {
  std::mt19937 g(16);
  std::vector<index_t> offsets{0};  // 40 groups of 33 to 47 rows, one empty
  for (std::size_t e = 0; e < 40; ++e) offsets.push_back(offsets.back() + (e == 7 ? 0 : index_t(33 + e % 15)));
  const std::size_t k = 256, n = 136;  // n: a partial panel
  for (const mk::isa i : isas_here()) {
    isa_scope scope(i);
    CAPTURE(mk::isa_name(i));
    // 218 K outputs of 256 products each (the other cases of that depth: 31 K):
    // the largest relative rounding error measured 2.2e-5; the worst-case bound,
    // k·2⁻²⁴·Σ|x||w| / (1 + |y|), is about 1e-4 here.
    check_grouped({offsets, k, n}, g, 2);
  }
}

TEST_CASE("threads that own rows: every row of every slab once, in its owner's range; skew falls back",
          "[backend][microkernel][grouped]") {
  struct piece {
    std::size_t g, i0, i1, j0, flops;
    bool small;
  };
  using gg = detail::cpu_gemm_grouped;
  const std::size_t k = 64, n = 300, slab = 256;  // two column slabs, the second partial
  auto make = [&](const std::vector<index_t>& offsets, bool reduce) {
    std::vector<piece> pieces;
    for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
      const auto rows = std::size_t(offsets[g + 1] - offsets[g]);
      const std::size_t out = reduce ? k : rows, depth = reduce ? rows : k;
      if (out == 0) continue;
      if (rows <= 4) pieces.push_back({g, 0, out, 0, 2 * out * depth * n, true});
      else
        for (std::size_t j = 0; j < n; j += slab)
          pieces.push_back({g, 0, out, j, 2 * out * depth * std::min(slab, n - j), false});
    }
    return pieces;
  };
  const std::vector<index_t> offsets{5, 5, 40, 41, 300, 302, 700, 1000};  // empty, 1-row and 2-row groups
  const std::size_t first = 5, rows = 995, groups = offsets.size() - 1;
  for (const std::size_t threads : {2, 3}) {
    CAPTURE(threads);
    const auto pieces = make(offsets, false);
    const auto owned = gg::owner_split(pieces, groups, offsets.data(), false, threads);
    REQUIRE(owned.size() == threads);
    std::vector<int> covered(rows * 2, 0);  // (row, slab)
    std::size_t outside = 0;
    for (std::size_t t = 0; t < threads; ++t)
      for (const piece& p : owned[t]) {
        const std::size_t lo = first + rows * t / threads, hi = first + rows * (t + 1) / threads;
        const std::size_t b = std::size_t(offsets[p.g]);
        if (!p.small) outside += b + p.i0 < lo || b + p.i1 > hi;
        for (std::size_t r = p.i0; r < p.i1; ++r)
          for (std::size_t j = 0; j < n; j += slab)
            if (p.small || j == p.j0) ++covered[(b + r - first) * 2 + j / slab];
      }
    CHECK(outside == 0);
    CHECK(std::count(covered.begin(), covered.end(), 1) == std::ptrdiff_t(covered.size()));
    const auto grads = gg::owner_split(make(offsets, true), groups, offsets.data(), true, threads);
    // Weight gradients go whole to the owner of the group's middle row: rows 695 / 300 on 2 threads and
    // 297 / 398 / 300 on 3, over 10 % above an even share both times: the dynamic schedule instead.
    CHECK(grads.empty());
  }
  // Weight gradients: eight equal groups split evenly; one group with 90 % of the rows falls back (empty).
  const std::vector<index_t> even{0, 100, 200, 300, 400, 500, 600, 700, 800}, skew{0, 20, 40, 940, 960, 980, 1000};
  const auto split = gg::owner_split(make(even, true), 8, even.data(), true, 2);
  REQUIRE(split.size() == 2);
  CHECK(split[0].size() == split[1].size());
  CHECK(gg::owner_split(make(skew, true), 6, skew.data(), true, 2).empty());
}

TEST_CASE("grouped GEMMs give the same bits with 1 and 2 threads", "[backend][microkernel][grouped]") {
  std::mt19937 g(14);
  const std::size_t rows = 1000, k = 96, n = 288;  // 55 MFLOP: forks at 2 threads
  // Few pieces (rows split over the threads), then one group alone (all its work in row splits).
  for (const std::vector<index_t>& offsets :
       {std::vector<index_t>{0, 3, 300, 301, 351, 1000}, std::vector<index_t>{0, 1000}}) {
    const std::size_t groups = offsets.size() - 1;
    CAPTURE(groups);
    const auto x = random_floats(g, rows * k), w = random_floats(g, groups * k * n), dy = random_floats(g, rows * n);
    auto run = [&](int threads) {
      const int saved = num_threads();
      set_num_threads(threads);
      std::vector<float> y(rows * n), dx(rows * k), dw(groups * k * n);
      kernels<cpu>::gemm_grouped(false, groups, offsets.data(), k, n, 1.0f, x.data(), w.data(), k * n, 0.0f,
                                 y.data());
      kernels<cpu>::gemm_grouped(true, groups, offsets.data(), n, k, 1.0f, dy.data(), w.data(), k * n, 0.0f,
                                 dx.data());
      kernels<cpu>::gemm_grouped_reduce(groups, offsets.data(), k, n, 1.0f, x.data(), dy.data(), 0.0f, dw.data(),
                                        k * n);
      set_num_threads(saved);
      y.insert(y.end(), dx.begin(), dx.end());
      y.insert(y.end(), dw.begin(), dw.end());
      return y;
    };
    const auto one = run(1), two = run(2);
    REQUIRE(one.size() == two.size());
    std::size_t differ = 0;
    for (std::size_t i = 0; i < one.size(); ++i) differ += one[i] != two[i];
    CHECK(differ == 0);
    check_grouped({offsets, k, n}, g);  // and the values against sgemm, at the default thread count
  }
}

TEST_CASE("grouped GEMM epilogue: bias and activation fused on each finished tile", "[backend][microkernel][grouped]") {
  std::mt19937 g(15);
  const std::vector<index_t> offsets{0, 2, 40, 40, 131};  // a few-row, an empty and two packed groups
  const std::size_t groups = 4, rows = 131, k = 70, n = 300;  // two column slabs, the second partial
  const auto x = random_floats(g, rows * k), w = random_floats(g, groups * k * n), b = random_floats(g, groups * n);
  std::vector<float> plain(rows * n), fused(rows * n), pre(rows * n, 0.0f);
  kernels<cpu>::gemm_grouped(false, groups, offsets.data(), k, n, 1.0f, x.data(), w.data(), k * n, 0.0f, plain.data());
  std::vector<std::size_t> group_of(rows);
  for (std::size_t e = 0; e < groups; ++e)
    for (auto r = std::size_t(offsets[e]); r < std::size_t(offsets[e + 1]); ++r) group_of[r] = e;
  std::vector<int> visits(rows * n, 0);
  auto epi = [&](float* c, std::size_t ldc, std::size_t row, std::size_t col, std::size_t h, std::size_t wd) {
    for (std::size_t r = 0; r < h; ++r)
      for (std::size_t j = 0; j < wd; ++j) {
        float& v = c[r * ldc + j];
        const std::size_t at = (row + r) * n + col + j;
        ++visits[at];
        pre[at] = v + b[group_of[row + r] * n + col + j];
        v = std::max(pre[at], 0.0f);
      }
  };
  kernels<cpu>::gemm_grouped_epilogue(false, groups, offsets.data(), k, n, 1.0f, x.data(), w.data(), k * n, 0.0f,
                                      fused.data(), epi);
  std::size_t wrong = 0, not_once = 0;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < n; ++j) {
      const float z = plain[r * n + j] + b[group_of[r] * n + j];
      wrong += fused[r * n + j] != std::max(z, 0.0f) || pre[r * n + j] != z;
      not_once += visits[r * n + j] != 1;
    }
  CHECK(wrong == 0);
  CHECK(not_once == 0);
}

}  // namespace microkernel_test

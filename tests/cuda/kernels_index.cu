// The CUDA index and sparse kernels (top-k, fused softmax + top-k, gather,
// scatter-add, sort, histogram, scan, CSR) against kernels<cpu> on random
// inputs. Integer results must match exactly, and so must selections (top-k
// ties included, the order being total); floating-point results to rounding.
// Without a device every case prints "SKIPPED: no CUDA device" and returns.
#include <catch2/catch.hpp>

#include "skip.cuh"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <moekit.hpp>

#include "moekit/backend/cuda/cuda.cuh"
#include "moekit/backend/cuda/gather.cuh"
#include "moekit/backend/cuda/histogram.cuh"
#include "moekit/backend/cuda/scan.cuh"
#include "moekit/backend/cuda/softmax.cuh"
#include "moekit/backend/cuda/sort.cuh"
#include "moekit/backend/cuda/sparse.cuh"
#include "moekit/backend/cuda/top_k.cuh"

using namespace moekit;
using K = kernels<cpu>;

namespace {

/// The part of kernels<cuda> under test here (the mixins of those nouns).
struct G : detail::cuda_top_k,
           detail::cuda_softmax,
           detail::cuda_gather,
           detail::cuda_sort,
           detail::cuda_histogram,
           detail::cuda_scan,
           detail::cuda_sparse {};

template <class T>
using dvec = tensor<T, shape<dyn>, moekit::cuda>;

template <class T>
dvec<T> to_device(const std::vector<T>& v) {
  tensor<T, shape<dyn>, cpu> h(shape<dyn>{v.size()});
  std::copy(v.begin(), v.end(), h.data());
  return h.template to<moekit::cuda>();
}
template <class T>
dvec<T> device_empty(std::size_t n) {
  return dvec<T>(shape<dyn>{n});
}
template <class T>
std::vector<T> to_host(const dvec<T>& d) {
  auto h = d.template to<cpu>();
  return std::vector<T>(h.data(), h.data() + h.size());
}

/// Uniform in [-1, 1); with `levels` > 0 rounded to that many steps, so that ties are common.
template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t seed, int levels = 0) {
  rng g(seed);
  std::vector<T> v(n);
  for (auto& x : v) {
    double u = g.next_uniform<double>() * 2 - 1;
    if (levels > 0) u = static_cast<double>(static_cast<int>(u * levels)) / levels;
    x = static_cast<T>(u);
  }
  return v;
}
std::vector<index_t> random_keys(std::size_t n, std::uint64_t seed, index_t lo, index_t hi) {
  rng g(seed);
  std::vector<index_t> v(n);
  for (auto& x : v) x = lo + static_cast<index_t>(g.next_u32() % static_cast<std::uint32_t>(hi - lo));
  return v;
}

template <class T>
void require_close(const std::vector<T>& got, const std::vector<T>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    REQUIRE(static_cast<double>(got[i]) == Approx(static_cast<double>(want[i])).epsilon(tol).margin(tol));
  }
}

/// Tolerance for sums of a few hundred terms of magnitude about 1.
template <class T>
constexpr double tol = sizeof(T) == 8 ? 1e-12 : 2e-5;

/// A random CSR structure over `n` rows and columns with about a quarter
/// empty rows, its values (nnz · heads) and a random permutation of the entries.
struct random_csr {
  std::vector<index_t> row_ptr, col, perm;
  random_csr(std::size_t n, std::uint64_t seed) : row_ptr{0} {
    rng g(seed);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t degree = g.next_u32() % 4 == 0 ? 0 : g.next_u32() % 40;
      for (std::uint32_t d = 0; d < degree; ++d) col.push_back(static_cast<index_t>(g.next_u32() % n));
      row_ptr.push_back(static_cast<index_t>(col.size()));
    }
    perm.resize(col.size());
    for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<index_t>(i);
    for (std::size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[g.next_u32() % i]);
  }
  std::size_t nnz() const { return col.size(); }
};

}  // namespace

TEMPLATE_TEST_CASE("cuda top_k_rows: equal to the CPU, ties and large k included", "[cuda][top_k]", float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t rows = 97;
  for (std::size_t cols : {1u, 5u, 64u, 257u, 1500u}) {  // 1500: a block per row
    for (int levels : {0, 4}) {                            // 4: ties everywhere
      auto x = random_values<TestType>(rows * cols, 100 + cols, levels);
      for (std::size_t c = 0; c < cols; ++c) x[c] = (c % 2) ? TestType(-0.0) : TestType(0.0);  // ±0 tie
      const auto dx = to_device(x);
      for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{8}, cols}) {
        if (k > cols) continue;
        INFO("cols " << cols << " k " << k << " levels " << levels);
        std::vector<TestType> v(rows * k);
        std::vector<index_t> i(rows * k);
        K::top_k_rows(rows, cols, k, x.data(), v.data(), i.data());
        auto dv = device_empty<TestType>(rows * k);
        auto di = device_empty<index_t>(rows * k);
        G::top_k_rows(rows, cols, k, dx.data(), dv.data(), di.data());
        REQUIRE(to_host(di) == i);
        REQUIRE(to_host(dv) == v);
      }
    }
  }
}

TEMPLATE_TEST_CASE("cuda softmax_top_k_rows: softmax_rows then top_k_rows", "[cuda][top_k]", float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t rows = 300;
  for (std::size_t cols : {8u, 64u, 2000u}) {
    auto x = random_values<TestType>(rows * cols, 200 + cols, 16);  // repeated logits: tied probabilities
    const auto dx = to_device(x);
    for (std::size_t k : {1u, 2u, 8u}) {
      INFO("cols " << cols << " k " << k);
      std::vector<TestType> p(rows * cols), v(rows * k);
      std::vector<index_t> i(rows * k);
      K::softmax_top_k_rows(rows, cols, k, x.data(), p.data(), v.data(), i.data());
      auto dp = device_empty<TestType>(rows * cols), dv = device_empty<TestType>(rows * k);
      auto di = device_empty<index_t>(rows * k);
      G::softmax_top_k_rows(rows, cols, k, dx.data(), dp.data(), dv.data(), di.data());
      const auto hp = to_host(dp), hv = to_host(dv);
      const auto hi = to_host(di);
      require_close(hp, p, tol<TestType>);
      require_close(hv, v, tol<TestType>);
      REQUIRE(hi == i);  // logits 1/16 apart: rounding cannot reorder the probabilities
      // On the device too, fused = the two kernels bit for bit, values being the stored probabilities.
      auto dp2 = device_empty<TestType>(rows * cols);
      G::softmax_rows(rows, cols, dx.data(), dp2.data());
      REQUIRE(to_host(dp2) == hp);
      auto dv2 = device_empty<TestType>(rows * k);
      auto di2 = device_empty<index_t>(rows * k);
      G::top_k_rows(rows, cols, k, dp.data(), dv2.data(), di2.data());
      REQUIRE(to_host(di2) == hi);
      REQUIRE(to_host(dv2) == hv);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = 0; j < k; ++j)
          REQUIRE(hv[r * k + j] == hp[r * cols + static_cast<std::size_t>(hi[r * k + j])]);
    }
  }
}

TEMPLATE_TEST_CASE("cuda gather_rows and scatter_add_rows: equal to the CPU, deterministic", "[cuda][gather]", float,
                   double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t src_rows = 50, n = 1000;
  for (std::size_t cols : {1u, 7u, 130u}) {
    INFO("cols " << cols);
    const auto src = random_values<TestType>(src_rows * cols, 300 + cols);
    const auto idx = random_keys(n, 301, 0, static_cast<index_t>(src_rows));
    std::vector<TestType> g(n * cols);
    K::gather_rows(n, cols, src.data(), idx.data(), g.data());
    auto dg = device_empty<TestType>(n * cols);
    G::gather_rows(n, cols, to_device(src).data(), to_device(idx).data(), dg.data());
    REQUIRE(to_host(dg) == g);  // a copy: exact

    // Scatter n rows into 9 (heavy collisions) onto non-zero data, with and without scale.
    const std::size_t dst_rows = 9;
    const auto rows_src = random_values<TestType>(n * cols, 302 + cols);
    const auto into = random_keys(n, 303, 0, static_cast<index_t>(dst_rows));
    const auto scale = random_values<TestType>(n, 304);
    const auto start = random_values<TestType>(dst_rows * cols, 305);
    const auto d_src = to_device(rows_src);
    const auto d_into = to_device(into);
    const auto d_scale = to_device(scale);
    for (bool scaled : {false, true}) {
      INFO("scaled " << scaled);
      auto out = start;
      K::scatter_add_rows(n, cols, rows_src.data(), into.data(), out.data(), scaled ? scale.data() : nullptr);
      auto d1 = to_device(start), d2 = to_device(start);
      G::scatter_add_rows(n, cols, d_src.data(), d_into.data(), d1.data(), scaled ? d_scale.data() : nullptr);
      G::scatter_add_rows(n, cols, d_src.data(), d_into.data(), d2.data(), scaled ? d_scale.data() : nullptr);
      const auto h1 = to_host(d1);
      require_close(h1, out, 20 * tol<TestType>);  // ~110 terms per row
      REQUIRE(h1 == to_host(d2));                  // bit for bit, run to run
    }
  }
}

TEMPLATE_TEST_CASE("cuda gather_rows and scatter_add_rows: indices outside the bound as on the CPU", "[cuda][gather]",
                   float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t rows = 20, n = 300, cols = 5;
  const auto src = random_values<TestType>(rows * cols, 310);
  const auto idx = random_keys(n, 311, -5, static_cast<index_t>(rows + 5));  // about a third out of range
  std::vector<TestType> g(n * cols);
  K::gather_rows(n, cols, src.data(), idx.data(), g.data(), rows);
  auto dg = device_empty<TestType>(n * cols);
  G::gather_rows(n, cols, to_device(src).data(), to_device(idx).data(), dg.data(), rows);
  REQUIRE(to_host(dg) == g);  // zero rows where the index is out of range

  const auto rows_src = random_values<TestType>(n * cols, 312);
  auto out = random_values<TestType>(rows * cols, 313);
  auto d_out = to_device(out);
  K::scatter_add_rows(n, cols, rows_src.data(), idx.data(), out.data(), static_cast<const TestType*>(nullptr), rows);
  G::scatter_add_rows(n, cols, to_device(rows_src).data(), to_device(idx).data(), d_out.data(),
                      static_cast<const TestType*>(nullptr), rows);
  require_close(to_host(d_out), out, 20 * tol<TestType>);
}

TEST_CASE("cuda sort_pairs: stable, equal to the CPU, in place", "[cuda][sort]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t n = 5000;
  for (index_t span : {8, 1 << 20}) {
    INFO("span " << span);
    const auto keys = random_keys(n, 400 + static_cast<std::uint64_t>(span), -span / 4, span);  // negatives too
    std::vector<index_t> vals(n);
    for (std::size_t i = 0; i < n; ++i) vals[i] = static_cast<index_t>(i);
    std::vector<index_t> ko(n), vo(n);
    K::sort_pairs(n, keys.data(), vals.data(), ko.data(), vo.data());
    auto dk = to_device(keys), dv = to_device(vals);
    auto dko = device_empty<index_t>(n), dvo = device_empty<index_t>(n);
    G::sort_pairs(n, dk.data(), dv.data(), dko.data(), dvo.data());
    REQUIRE(to_host(dko) == ko);  // stable: the result is unique
    REQUIRE(to_host(dvo) == vo);
    G::sort_pairs(n, dk.data(), dv.data(), dk.data(), dv.data());  // outputs alias inputs
    REQUIRE(to_host(dk) == ko);
    REQUIRE(to_host(dv) == vo);
  }
}

TEST_CASE("cuda histogram: equal to the CPU, out-of-range keys skipped", "[cuda][histogram]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t n = 20000;
  for (std::size_t bins : {1u, 4u, 64u, 10000u}) {  // 10000: the global-atomics path
    INFO("bins " << bins);
    const auto keys = random_keys(n, 500 + bins, -3, static_cast<index_t>(bins + 3));
    std::vector<index_t> counts(bins);
    K::histogram(n, keys.data(), bins, counts.data());
    auto dc = to_device(std::vector<index_t>(bins, 77));  // must be overwritten, not added to
    G::histogram(n, to_device(keys).data(), bins, dc.data());
    REQUIRE(to_host(dc) == counts);
    G::histogram(0, to_device(keys).data(), bins, dc.data());
    REQUIRE(to_host(dc) == std::vector<index_t>(bins, 0));
  }
}

TEST_CASE("cuda exclusive_scan: integers exact and in place, floats to rounding", "[cuda][scan]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  for (std::size_t n : {1u, 33u, 100000u}) {
    INFO("n " << n);
    const auto in = random_keys(n, 600 + n, 0, 100);
    std::vector<index_t> out(n);
    K::exclusive_scan(n, in.data(), out.data());
    auto din = to_device(in);
    auto dout = device_empty<index_t>(n);
    G::exclusive_scan(n, din.data(), dout.data());
    REQUIRE(to_host(dout) == out);
    G::exclusive_scan(n, din.data(), din.data());
    REQUIRE(to_host(din) == out);

    const auto f = random_values<double>(n, 601 + n);
    std::vector<double> fo(n);
    K::exclusive_scan(n, f.data(), fo.data());
    auto dfo = device_empty<double>(n);
    G::exclusive_scan(n, to_device(f).data(), dfo.data());
    const auto h = to_host(dfo);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(h[i] == Approx(fo[i]).margin(1e-9));
  }
}

TEMPLATE_TEST_CASE("cuda CSR kernels: spmm, sddmm, segment softmax and its backward", "[cuda][sparse]", float,
                   double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const std::size_t n = 120;
  const random_csr a(n, 700);
  const std::size_t nnz = a.nnz();
  REQUIRE(std::adjacent_find(a.row_ptr.begin(), a.row_ptr.end()) != a.row_ptr.end());  // has empty rows
  const auto d_row_ptr = to_device(a.row_ptr), d_col = to_device(a.col), d_perm = to_device(a.perm);
  for (std::size_t heads : {1u, 3u}) {
    for (std::size_t feat : {1u, 5u, 40u}) {
      INFO("heads " << heads << " feat " << feat);
      const std::size_t width = heads * feat;
      const auto x = random_values<TestType>(n * width, 701 + width), x2 = random_values<TestType>(n * width, 702);
      const auto values = random_values<TestType>(nnz * heads, 703 + heads);
      const auto dx = to_device(x), dx2 = to_device(x2), dvalues = to_device(values);

      for (int variant = 0; variant < 3; ++variant) {  // weighted, weighted through perm, unweighted
        INFO("variant " << variant);
        const TestType* v = variant == 2 ? nullptr : values.data();
        const index_t* p = variant == 1 ? a.perm.data() : nullptr;
        std::vector<TestType> y(n * width, TestType(9));
        K::spmm_csr(n, heads, feat, a.row_ptr.data(), a.col.data(), v, p, x.data(), y.data());
        auto dy = to_device(std::vector<TestType>(n * width, TestType(9)));  // empty rows must become 0
        G::spmm_csr(n, heads, feat, d_row_ptr.data(), d_col.data(), variant == 2 ? nullptr : dvalues.data(),
                    variant == 1 ? d_perm.data() : nullptr, dx.data(), dy.data());
        require_close(to_host(dy), y, tol<TestType>);
      }

      std::vector<TestType> s(nnz * heads);
      K::sddmm_csr(n, heads, feat, a.row_ptr.data(), a.col.data(), x.data(), x2.data(), s.data());
      auto ds = device_empty<TestType>(nnz * heads);
      G::sddmm_csr(n, heads, feat, d_row_ptr.data(), d_col.data(), dx.data(), dx2.data(), ds.data());
      require_close(to_host(ds), s, tol<TestType>);

      const auto scores = random_values<TestType>(nnz * heads, 704);
      std::vector<TestType> y(nnz * heads);
      K::segment_softmax_csr(n, heads, a.row_ptr.data(), scores.data(), y.data());
      auto dy = device_empty<TestType>(nnz * heads);
      G::segment_softmax_csr(n, heads, d_row_ptr.data(), to_device(scores).data(), dy.data());
      require_close(to_host(dy), y, tol<TestType>);

      const auto g = random_values<TestType>(nnz * heads, 705);
      std::vector<TestType> gx(nnz * heads);
      K::segment_softmax_csr_backward(n, heads, a.row_ptr.data(), y.data(), g.data(), gx.data());
      auto dgx = device_empty<TestType>(nnz * heads);
      G::segment_softmax_csr_backward(n, heads, d_row_ptr.data(), to_device(y).data(), to_device(g).data(),
                                      dgx.data());
      require_close(to_host(dgx), gx, tol<TestType>);
    }
  }
}

// The CPU kernel set against straightforward reference loops. These kernels
// are the oracle every other backend is compared with, so they are tested
// directly here, including with several threads.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include <moekit.hpp>

using namespace moekit;
using K = kernels<cpu>;

namespace {
std::vector<double> random_vector(std::size_t n, std::uint64_t seed) {
  rng g(seed);
  std::vector<double> v(n);
  for (auto& x : v) x = g.next_uniform<double>() * 2 - 1;
  return v;
}
/// C = op(A) op(B), row-major, by the definition.
std::vector<double> naive_gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k,
                               const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> c(m * n, 0.0);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t p = 0; p < k; ++p)
        c[i * n + j] += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
  return c;
}
}  // namespace

TEST_CASE("gemm: every transpose combination, float and double", "[backend][gemm]") {
  const std::size_t m = 7, n = 5, k = 9;
  auto a = random_vector(m * k, 1), b = random_vector(k * n, 2);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      auto ref = naive_gemm(ta, tb, m, n, k, a, b);
      std::vector<double> c(m * n, 1.0);  // beta = 0 must ignore what is there
      K::gemm(ta, tb, m, n, k, 1.0, a.data(), ta ? m : k, b.data(), tb ? k : n, 0.0, c.data(), n);
      std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end()), cf(m * n);
      K::gemm(ta, tb, m, n, k, 1.0f, af.data(), ta ? m : k, bf.data(), tb ? k : n, 0.0f, cf.data(), n);
      for (std::size_t i = 0; i < m * n; ++i) {
        REQUIRE(c[i] == Approx(ref[i]).epsilon(1e-12));
        REQUIRE(cf[i] == Approx(ref[i]).epsilon(1e-5).margin(1e-5));
      }
    }
}

TEST_CASE("gemm: alpha and beta accumulate", "[backend][gemm]") {
  std::vector<double> a{1, 2, 3, 4}, b{5, 6, 7, 8}, c{1, 1, 1, 1};
  K::gemm(false, false, 2, 2, 2, 2.0, a.data(), 2, b.data(), 2, 1.0, c.data(), 2);
  REQUIRE(c == std::vector<double>{39, 45, 87, 101});  // 2·AB + C
}

TEST_CASE("gemm: strided batches, small (threaded) and large", "[backend][gemm]") {
  for (std::size_t size : {4u, 130u}) {
    const std::size_t batch = 3, m = size, n = size / 2 + 1, k = size;
    auto a = random_vector(batch * m * k, 3), b = random_vector(batch * k * n, 4);
    std::vector<double> c(batch * m * n);
    K::gemm_strided_batched(false, true, m, n, k, 1.0, a.data(), k, m * k, b.data(), k, n * k, 0.0, c.data(), n,
                            m * n, batch);
    for (std::size_t i = 0; i < batch; ++i) {
      std::vector<double> ai(a.begin() + i * m * k, a.begin() + (i + 1) * m * k);
      std::vector<double> bi(b.begin() + i * k * n, b.begin() + (i + 1) * k * n);
      auto ref = naive_gemm(false, true, m, n, k, ai, bi);
      for (std::size_t j = 0; j < m * n; ++j) REQUIRE(c[i * m * n + j] == Approx(ref[j]).epsilon(1e-10));
    }
  }
}

TEST_CASE("map: plain, row and column broadcasts, threaded sizes", "[backend][map]") {
  for (std::size_t rows : {3u, 5000u}) {
    const std::size_t cols = 17;
    auto a = random_vector(rows * cols, 5), row = random_vector(cols, 6), col = random_vector(rows, 7);
    std::vector<double> out(rows * cols), out_r(rows * cols), out_c(rows * cols);
    K::map(rows * cols, out.data(), fn::mul{}, a.data(), a.data());
    K::map_rows(rows, cols, out_r.data(), fn::sub{}, a.data(), row.data());
    K::map_cols(rows, cols, out_c.data(), fn::add{}, a.data(), col.data());
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < cols; ++c) {
        const std::size_t i = r * cols + c;
        REQUIRE(out[i] == a[i] * a[i]);
        REQUIRE(out_r[i] == a[i] - row[c]);
        REQUIRE(out_c[i] == a[i] + col[r]);
      }
  }
}

TEST_CASE("reductions: rows, columns, argmax", "[backend][reduce]") {
  const std::size_t rows = 4, cols = 6;
  auto a = random_vector(rows * cols, 8);
  std::vector<double> rs(rows), cs(cols), rmax(rows);
  K::reduce_rows(rows, cols, a.data(), rs.data(), 0.0, fn::add{});
  K::reduce_cols(rows, cols, a.data(), cs.data(), 0.0, fn::add{});
  K::reduce_rows(rows, cols, a.data(), rmax.data(), -1e300, fn::max{});
  std::vector<index_t> am(rows);
  K::argmax_rows(rows, cols, a.data(), am.data());
  for (std::size_t r = 0; r < rows; ++r) {
    double s = 0;
    for (std::size_t c = 0; c < cols; ++c) s += a[r * cols + c];
    REQUIRE(rs[r] == Approx(s));
    const auto* row = a.data() + r * cols;
    REQUIRE(rmax[r] == *std::max_element(row, row + cols));
    REQUIRE(am[r] == std::max_element(row, row + cols) - row);
  }
  for (std::size_t c = 0; c < cols; ++c) {
    double s = 0;
    for (std::size_t r = 0; r < rows; ++r) s += a[r * cols + c];
    REQUIRE(cs[c] == Approx(s));
  }
  std::vector<double> tie{1, 3, 3};
  index_t at = -1;
  K::argmax_rows(1, 3, tie.data(), &at);
  REQUIRE(at == 1);  // first of equal maxima
}

TEST_CASE("float row sums and row dots: SIMD rows against double, narrow rows in order, 1 and 2 threads",
          "[backend][reduce]") {
  // Widths on both sides of simd_cols, with a tail after the vector blocks;
  // 3000 rows of 200 are above the fork threshold.
  for (std::size_t cols : {std::size_t{1}, std::size_t{8}, K::simd_cols - 1, K::simd_cols, std::size_t{200}}) {
    const std::size_t rows = cols == 200 ? 3000 : 5;
    const auto av = random_vector(rows * cols, 40 + cols), bv = random_vector(rows * cols, 41 + cols);
    const std::vector<float> a(av.begin(), av.end()), b(bv.begin(), bv.end());
    const int saved = num_threads();
    std::vector<std::vector<float>> sums, dots;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      sums.emplace_back(rows), dots.emplace_back(rows);
      K::reduce_rows(rows, cols, a.data(), sums.back().data(), 0.25f, fn::add{});
      K::row_dots(rows, cols, a.data(), b.data(), dots.back().data());
    }
    set_num_threads(saved);
    CHECK(sums[0] == sums[1]);  // a fixed order per row
    CHECK(dots[0] == dots[1]);
    for (std::size_t r = 0; r < rows; ++r) {
      double s = 0.25, d = 0, magnitude = 0.25;
      float in_order = 0.25f;
      for (std::size_t c = 0; c < cols; ++c) {
        const std::size_t e = r * cols + c;
        s += a[e], d += double(a[e]) * double(b[e]), magnitude += std::abs(a[e]);
        in_order += a[e];
      }
      INFO("cols " << cols << " row " << r);
      REQUIRE(std::abs(sums[0][r] - s) <= 1e-6 * magnitude);
      REQUIRE(std::abs(dots[0][r] - d) <= 1e-6 * double(cols));
      if (!K::simd_row<float>(cols)) REQUIRE(sums[0][r] == in_order);  // narrow rows: the plain loop
    }
  }
}

TEST_CASE("softmax rows: sums to one, stable for large inputs, log form", "[backend][softmax]") {
  std::vector<double> x{1000, 1001, 1002, -5, 0, 5};
  std::vector<double> y(6), ly(6);
  K::softmax_rows(2, 3, x.data(), y.data());
  K::log_softmax_rows(2, 3, x.data(), ly.data());
  const double e = std::exp(1.0), z = 1 + e + e * e;
  REQUIRE(y[0] == Approx(1 / z));
  REQUIRE(y[2] == Approx(e * e / z));
  for (std::size_t i = 0; i < 6; ++i) REQUIRE(std::exp(ly[i]) == Approx(y[i]));
  REQUIRE(y[3] + y[4] + y[5] == Approx(1.0));
}

TEST_CASE("softmax rows in float (vector code): against double, masked entries, backward passes",
          "[backend][softmax]") {
  // Rows of 1 to 67 columns (vector bodies and remainders), logits in [-30, 30], a few -inf (masked).
  for (const std::size_t cols : {std::size_t{1}, std::size_t{8}, std::size_t{17}, std::size_t{64}, std::size_t{67}}) {
    CAPTURE(cols);
    const std::size_t rows = 40;
    const auto r = random_vector(rows * cols, 31 + cols), g = random_vector(rows * cols, 41 + cols);
    std::vector<float> x(rows * cols), dy(rows * cols);
    for (std::size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(30 * r[i]);
      dy[i] = static_cast<float>(g[i]);
    }
    for (std::size_t i = 0; i < rows; i += 3)
      if (cols > 1) x[i * cols + i % cols] = -std::numeric_limits<float>::infinity();
    std::vector<float> y(x.size()), ly(x.size()), dx(x.size()), dlx(x.size());
    K::softmax_rows(rows, cols, x.data(), y.data());
    K::log_softmax_rows(rows, cols, x.data(), ly.data());
    K::softmax_rows_backward(rows, cols, y.data(), dy.data(), dx.data());
    K::log_softmax_rows_backward(rows, cols, ly.data(), dy.data(), dlx.data());
    double p_err = 0, lp_err = 0, dx_err = 0, dlx_err = 0;
    std::size_t masked_nonzero = 0;
    for (std::size_t i = 0; i < rows; ++i) {
      const float* xr = x.data() + i * cols;
      const double m = *std::max_element(xr, xr + cols);
      double z = 0, dot = 0, gsum = 0;
      for (std::size_t c = 0; c < cols; ++c) z += std::exp(double(xr[c]) - m);
      for (std::size_t c = 0; c < cols; ++c) {
        const double p = std::exp(double(xr[c]) - m) / z;
        dot += double(dy[i * cols + c]) * y[i * cols + c];
        gsum += dy[i * cols + c];
        if (std::isinf(xr[c])) {
          masked_nonzero += y[i * cols + c] != 0.0f;
          continue;
        }
        // x - max is rounded to float first (as in any float softmax): e^d then carries |d|·2^-24 relative
        const double d = double(xr[c]) - m, rounding = 1e-6 + std::fabs(d) * 0x1p-23;
        p_err = std::max(p_err, std::fabs(y[i * cols + c] - p) / std::max(p, 1e-30) / rounding);
        lp_err = std::max(lp_err, std::fabs(ly[i * cols + c] - (double(xr[c]) - m - std::log(z))) /
                                      std::max(1.0, std::fabs(double(xr[c]) - m - std::log(z))));
      }
      for (std::size_t c = 0; c < cols; ++c) {
        const std::size_t at = i * cols + c;
        dx_err = std::max(dx_err, std::fabs(dx[at] - double(y[at]) * (dy[at] - dot)));
        dlx_err = std::max(dlx_err, std::fabs(dlx[at] - (dy[at] - std::exp(double(ly[at])) * gsum)));
      }
    }
    CHECK(p_err < 1);  // within the rounding above, down to probabilities of e^-60
    CHECK(lp_err < 2e-6);
    CHECK(dx_err < 1e-6);
    CHECK(dlx_err < 1e-5);
    CHECK(masked_nonzero == 0);  // a -inf logit gets probability exactly 0
  }
}

TEST_CASE("top-k rows: order and tie-breaking", "[backend][top_k]") {
  // Ties: higher score first, then lower index.
  std::vector<float> x{0.1f, 0.5f, 0.5f, 0.9f, 0.5f, /**/ 2, 2, 2, 2, 2};
  std::vector<float> v(6);
  std::vector<index_t> idx(6);
  K::top_k_rows(2, 5, 3, x.data(), v.data(), idx.data());
  REQUIRE(idx == std::vector<index_t>{3, 1, 2, 0, 1, 2});
  REQUIRE(v == std::vector<float>{0.9f, 0.5f, 0.5f, 2, 2, 2});
  // Against a full stable sort on random rows.
  const std::size_t rows = 50, cols = 40, k = 7;
  auto r = random_vector(rows * cols, 9);
  std::vector<double> vals(rows * k);
  std::vector<index_t> ids(rows * k);
  K::top_k_rows(rows, cols, k, r.data(), vals.data(), ids.data());
  for (std::size_t i = 0; i < rows; ++i) {
    std::vector<index_t> order(cols);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return r[i * cols + a] > r[i * cols + b]; });
    for (std::size_t j = 0; j < k; ++j) REQUIRE(ids[i * k + j] == order[j]);
  }
}

TEST_CASE("top-k rows of 64 to 256 floats (vector passes): equal to insertion, ties, -inf and NaN rows",
          "[backend][top_k]") {
  // The reference: insertion into a sorted list, the definition for every
  // row (NaN included), written out here.
  const auto insertion = [](std::size_t cols, std::size_t k, const float* x, float* v, index_t* at) {
    std::size_t filled = 0;
    for (std::size_t c = 0; c < cols; ++c) {
      if (filled == k && !(x[c] > v[k - 1])) continue;
      std::size_t pos = std::min(filled, k - 1);
      for (; pos > 0 && x[c] > v[pos - 1]; --pos) v[pos] = v[pos - 1], at[pos] = at[pos - 1];
      v[pos] = x[c], at[pos] = static_cast<index_t>(c);
      filled = std::min(filled + 1, k);
    }
  };
  const float inf = std::numeric_limits<float>::infinity();
  for (std::size_t cols : {64, 100, 128, 256})
    for (std::size_t k : {2, 4, 6, 16}) {
      const std::size_t rows = 40;
      const auto r = random_vector(rows * cols, 60 + cols + k);
      std::vector<float> x(rows * cols);
      for (std::size_t e = 0; e < x.size(); ++e) x[e] = std::round(float(r[e]) * 8) / 8;  // many ties
      for (std::size_t c = 0; c < cols; ++c) x[1 * cols + c] = c < 3 ? 1.0f : -inf;     // fewer than k above -inf
      x[2 * cols + 5] = std::numeric_limits<float>::quiet_NaN();                        // a NaN early
      x[3 * cols + cols - 1] = std::numeric_limits<float>::quiet_NaN();                 // and late
      for (std::size_t c = 0; c < cols; c += 7) x[4 * cols + c] = -inf;
      for (std::size_t c = 0; c < cols; ++c) x[5 * cols + c] = c % 2 ? 0.0f : -0.0f;  // equal, signs differ
      std::vector<float> v(rows * k), want_v(rows * k);
      std::vector<index_t> at(rows * k), want_at(rows * k);
      K::top_k_rows(rows, cols, k, x.data(), v.data(), at.data());
      for (std::size_t i = 0; i < rows; ++i) insertion(cols, k, x.data() + i * cols, &want_v[i * k], &want_at[i * k]);
      INFO("cols " << cols << " k " << k);
      REQUIRE(at == want_at);
      for (std::size_t e = 0; e < v.size(); ++e)
        REQUIRE(std::memcmp(&v[e], &want_v[e], sizeof(float)) == 0);  // the same bits (NaN, -0)
    }
}

TEST_CASE("softmax + top-k rows fused: equal to softmax_rows then top_k_rows", "[backend][top_k]") {
  // Random rows, plus rows of repeated logits whose probabilities tie exactly.
  const std::size_t rows = 40, cols = 9;
  auto x = random_vector(rows * cols, 12);
  for (std::size_t c = 0; c < cols; ++c) x[3 * cols + c] = (c % 3 == 0) ? 0.25 : -1.0;  // ties at 0, 3, 6
  for (std::size_t c = 0; c < cols; ++c) x[7 * cols + c] = 2.0;                       // all equal
  for (std::size_t k : {1u, 3u, 9u}) {
    std::vector<double> probs(rows * cols), vals(rows * k), ref_probs(rows * cols), ref_vals(rows * k);
    std::vector<index_t> ids(rows * k), ref_ids(rows * k);
    K::softmax_top_k_rows(rows, cols, k, x.data(), probs.data(), vals.data(), ids.data());
    K::softmax_rows(rows, cols, x.data(), ref_probs.data());
    K::top_k_rows(rows, cols, k, ref_probs.data(), ref_vals.data(), ref_ids.data());
    REQUIRE(probs == ref_probs);  // bit for bit
    REQUIRE(vals == ref_vals);
    REQUIRE(ids == ref_ids);
    if (k == 3) {
      REQUIRE(std::vector<index_t>(ids.begin() + 3 * 3, ids.begin() + 4 * 3) == std::vector<index_t>{0, 3, 6});
      REQUIRE(std::vector<index_t>(ids.begin() + 7 * 3, ids.begin() + 8 * 3) == std::vector<index_t>{0, 1, 2});
    }
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < k; ++j) REQUIRE(vals[r * k + j] == probs[r * cols + static_cast<std::size_t>(ids[r * k + j])]);
  }
  // Many rows: the threaded path gives the same as the row-by-row reference.
  const std::size_t big = 5000, e = 16, k = 2;
  std::vector<float> lf(big * e);
  auto lr = random_vector(big * e, 13);
  std::copy(lr.begin(), lr.end(), lf.begin());
  std::vector<float> p(big * e), v(big * k), rp(big * e), rv(big * k);
  std::vector<index_t> i(big * k), ri(big * k);
  K::softmax_top_k_rows(big, e, k, lf.data(), p.data(), v.data(), i.data());
  K::softmax_rows(big, e, lf.data(), rp.data());
  K::top_k_rows(big, e, k, rp.data(), rv.data(), ri.data());
  REQUIRE(p == rp);
  REQUIRE(v == rv);
  REQUIRE(i == ri);
}

TEST_CASE("gather and scatter-add rows", "[backend][gather]") {
  std::vector<double> src{1, 2, 3, 4, 5, 6};  // (3, 2)
  std::vector<index_t> idx{2, 0, 2};
  std::vector<double> g(6);
  K::gather_rows(3, 2, src.data(), idx.data(), g.data());
  REQUIRE(g == std::vector<double>{5, 6, 1, 2, 5, 6});
  std::vector<double> dst(6, 0.0), scale{1, 10, 100};
  K::scatter_add_rows(3, 2, src.data(), idx.data(), dst.data(), scale.data());
  REQUIRE(dst == std::vector<double>{30, 40, 0, 0, 501, 602});
}

TEST_CASE("gather and scatter-add rows: indices outside the bound are zero rows / skipped", "[backend][gather]") {
  std::vector<double> src{1, 2, 3, 4, 5, 6};  // (3, 2)
  std::vector<index_t> idx{2, -1, 3};         // one valid, two outside [0, 3)
  std::vector<double> g(6, -7.0);
  K::gather_rows(3, 2, src.data(), idx.data(), g.data(), 3);
  REQUIRE(g == std::vector<double>{5, 6, 0, 0, 0, 0});
  std::vector<double> dst(6, 1.0);
  K::scatter_add_rows(3, 2, src.data(), idx.data(), dst.data(), static_cast<const double*>(nullptr), 3);
  REQUIRE(dst == std::vector<double>{1, 1, 1, 1, 2, 3});
}

TEST_CASE("scatter-add rows: threaded sizes, the same bits at 1 and 2 threads", "[backend][gather]") {
  // 6000 source rows of 96 floats onto 1000 rows (collisions in every row,
  // some indices outside the bound): above the fork threshold. Float sums
  // depend on their order, so 1 and 2 threads must agree bit for bit, and
  // both must be the i-ordered loop (up to FMA contraction).
  const std::size_t n = 6000, cols = 96, rows = 1000;
  const auto sv = random_vector(n * cols, 5), wv = random_vector(n, 6);
  std::vector<float> src(sv.begin(), sv.end()), scale(wv.begin(), wv.end());
  std::vector<index_t> idx(n), inside(n);
  for (std::size_t i = 0; i < n; ++i) {
    idx[i] = static_cast<index_t>((i * 7919) % (rows + 3)) - 1;  // -1 .. rows + 1
    inside[i] = idx[i] >= static_cast<index_t>(rows) ? -1 : idx[i];
  }
  std::vector<double> want(rows * cols, 0.5);
  for (std::size_t i = 0; i < n; ++i)
    if (inside[i] >= 0)
      for (std::size_t c = 0; c < cols; ++c)
        want[static_cast<std::size_t>(inside[i]) * cols + c] += double(scale[i]) * double(src[i * cols + c]);
  const int saved = num_threads();
  std::vector<std::vector<float>> bounded, unbounded;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    bounded.emplace_back(rows * cols, 0.5f);
    K::scatter_add_rows(n, cols, src.data(), idx.data(), bounded.back().data(), scale.data(), rows);
    unbounded.emplace_back(rows * cols, 0.5f);  // as tall as the largest index needs
    K::scatter_add_rows(n, cols, src.data(), inside.data(), unbounded.back().data(), scale.data());
  }
  set_num_threads(saved);
  CHECK(bounded[0] == bounded[1]);
  CHECK(unbounded[0] == unbounded[1]);
  CHECK(bounded[0] == unbounded[0]);
  double worst = 0;
  for (std::size_t e = 0; e < want.size(); ++e) worst = std::max(worst, std::abs(bounded[0][e] - want[e]));
  CHECK(worst < 1e-4);
}

TEST_CASE("sort pairs: stable, counting and general paths", "[backend][sort]") {
  for (index_t span : {8, 1 << 20}) {  // small key range: counting sort; large: merge sort
    const std::size_t n = 1000;
    rng g(11);
    std::vector<index_t> keys(n), vals(n), ko(n), vo(n);
    for (std::size_t i = 0; i < n; ++i) keys[i] = static_cast<index_t>(g.next_u32() % static_cast<unsigned>(span)),
                                        vals[i] = static_cast<index_t>(i);
    K::sort_pairs(n, keys.data(), vals.data(), ko.data(), vo.data());
    for (std::size_t i = 0; i < n; ++i) {
      REQUIRE(keys[static_cast<std::size_t>(vo[i])] == ko[i]);  // pairs stay together
      if (i) {
        REQUIRE(ko[i - 1] <= ko[i]);
        if (ko[i - 1] == ko[i]) REQUIRE(vo[i - 1] < vo[i]);  // stable
      }
    }
  }
}

TEST_CASE("histogram and exclusive scan", "[backend][scan]") {
  std::vector<index_t> keys{0, 2, 2, 3, -1, 7, 2};
  std::vector<index_t> counts(4);
  K::histogram(keys.size(), keys.data(), 4, counts.data());
  REQUIRE(counts == std::vector<index_t>{1, 0, 3, 1});  // -1 and 7 are outside [0, 4)
  std::vector<index_t> offsets(4);
  K::exclusive_scan(4, counts.data(), offsets.data());
  REQUIRE(offsets == std::vector<index_t>{0, 1, 1, 4});
  K::exclusive_scan(4, counts.data(), counts.data());  // in place
  REQUIRE(counts == offsets);
}

TEST_CASE("host pool: size classes and reuse", "[backend][pool]") {
  using detail::host_pool;
  REQUIRE(host_pool::class_bytes(1) == 64);
  REQUIRE(host_pool::class_bytes(64) == 64);
  for (std::size_t b : {65u, 100u, 1000u, 4097u, 1u << 20}) {
    const std::size_t c = host_pool::class_bytes(b);
    REQUIRE(c >= b);
    REQUIRE(c % 64 == 0);           // aligned_alloc needs multiples of the alignment
    REQUIRE(c < b + b / 4 + 64);  // under 25 % waste (plus the 64-byte rounding)
  }
  auto& pool = host_pool::local();
  void* p = pool.allocate(1000);
  REQUIRE(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
  pool.deallocate(p, 1000);
  REQUIRE(pool.allocate(1000) == p);  // the freed block is served again
  pool.deallocate(p, 1000);
}

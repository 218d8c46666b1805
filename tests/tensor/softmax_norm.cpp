// Forward softmax, log_softmax, layer_norm, rms_norm and dropout against
// straightforward reference loops, their shape/value errors, and the dropout
// mask's statistics and reproducibility.
#include <catch2/catch.hpp>

#include <moekit/backend/cpu/kernels.hpp>
#include <moekit/backend/cpu/parallel.hpp>
#include <moekit/core/random.hpp>
#include <moekit/tensor/ops/creation.hpp>
#include <moekit/tensor/ops/dropout.hpp>
#include <moekit/tensor/ops/elementwise.hpp>
#include <moekit/tensor/ops/norm.hpp>
#include <moekit/tensor/ops/softmax.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

using namespace moekit;

namespace {

/// softmax of one row in double, the textbook way.
std::vector<double> reference_softmax(const double* x, std::size_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (std::size_t c = 0; c < n; ++c) m = std::max(m, x[c]);
  std::vector<double> y(n);
  double sum = 0;
  for (std::size_t c = 0; c < n; ++c) sum += y[c] = std::exp(x[c] - m);
  for (auto& v : y) v /= sum;
  return y;
}

/// Mean and biased variance of one row in double.
template <class T>
std::pair<double, double> row_moments(const T* x, std::size_t n) {
  double mean = 0, var = 0;
  for (std::size_t c = 0; c < n; ++c) mean += x[c];
  mean /= static_cast<double>(n);
  for (std::size_t c = 0; c < n; ++c) var += (x[c] - mean) * (x[c] - mean);
  return {mean, var / static_cast<double>(n)};
}

/// Restores the thread count a test changed.
struct thread_count_guard {
  int saved = num_threads();
  ~thread_count_guard() { set_num_threads(saved); }
};

}  // namespace

// ---- softmax / log_softmax -----------------------------------------------------

TEST_CASE("softmax: each row matches a reference loop and sums to 1", "[tensor][softmax]") {
  rng g(11);
  auto x = normal<double>(g, shape<dyn, 7>{5}, 0.0, 3.0);  // (5, 7)
  auto y = softmax(x);
  for (std::size_t r = 0; r < 5; ++r) {
    const auto ref = reference_softmax(&x(r, 0), 7);
    double sum = 0;
    for (std::size_t c = 0; c < 7; ++c) {
      REQUIRE(y(r, c) == Approx(ref[c]).epsilon(1e-12));
      sum += y(r, c);
    }
    REQUIRE(sum == Approx(1.0).epsilon(1e-12));
  }
}

TEST_CASE("softmax: rank 3 normalises over the last axis only", "[tensor][softmax]") {
  rng g(12);
  auto x = normal<float>(g, shape<2, 3, 4>{});  // (2, 3, 4)
  auto y = softmax(x);
  for (std::size_t r = 0; r < 6; ++r) {
    std::vector<double> row(4);
    for (std::size_t c = 0; c < 4; ++c) row[c] = x[r * 4 + c];
    const auto ref = reference_softmax(row.data(), 4);
    for (std::size_t c = 0; c < 4; ++c) REQUIRE(y[r * 4 + c] == Approx(ref[c]).epsilon(1e-6));
  }
}

TEST_CASE("log_softmax: equals log(softmax) and the reference", "[tensor][softmax]") {
  rng g(13);
  auto x = normal<double>(g, shape<dyn, 3, 6>{2}, 0.0, 2.0);  // (2, 3, 6)
  auto ls = log_softmax(x);
  auto sm = softmax(x);
  for (std::size_t r = 0; r < 6; ++r) {
    const auto ref = reference_softmax(&x[r * 6], 6);
    for (std::size_t c = 0; c < 6; ++c) {
      REQUIRE(ls[r * 6 + c] == Approx(std::log(sm[r * 6 + c])).epsilon(1e-12));
      REQUIRE(ls[r * 6 + c] == Approx(std::log(ref[c])).epsilon(1e-12));
    }
  }
}

TEST_CASE("softmax, log_softmax: inputs around 1000 do not overflow", "[tensor][softmax]") {
  auto x = from_values(shape<2, 3>{}, {1000.f, 1001.f, 1002.f, -1000.f, 0.f, 1000.f});
  auto y = softmax(x);
  auto ly = log_softmax(x);
  // Row 0 is softmax(0, 1, 2): shifting all inputs changes nothing.
  const double e0 = 1, e1 = std::exp(1.0), e2 = std::exp(2.0), s = e0 + e1 + e2;
  REQUIRE(y(0, 0) == Approx(e0 / s).epsilon(1e-6));
  REQUIRE(y(0, 1) == Approx(e1 / s).epsilon(1e-6));
  REQUIRE(y(0, 2) == Approx(e2 / s).epsilon(1e-6));
  REQUIRE(y(1, 0) == 0.0f);
  REQUIRE(y(1, 1) == Approx(0.0).margin(1e-30));
  REQUIRE(y(1, 2) == 1.0f);
  // x - log-sum-exp cancels around 1000, where a float step is 6e-5.
  REQUIRE(ly(0, 2) == Approx(std::log(e2 / s)).margin(2e-4));
  REQUIRE(ly(1, 0) == Approx(-2000.0).epsilon(1e-6));
  REQUIRE(ly(1, 1) == Approx(-1000.0).epsilon(1e-6));
  REQUIRE(ly(1, 2) == Approx(0.0).margin(1e-6));
  for (std::size_t i = 0; i < 6; ++i) REQUIRE((std::isfinite(y[i]) && std::isfinite(ly[i])));
}

TEST_CASE("softmax_backward: y and dy of different shapes throw shape_error", "[tensor][softmax]") {
  auto y = zeros<double>(shape<dyn, dyn>{2, 3});
  auto dy = zeros<double>(shape<dyn, dyn>{2, 4});
  REQUIRE_THROWS_AS(softmax_backward(y, dy), shape_error);
  REQUIRE_THROWS_WITH(softmax_backward(y, dy), Catch::Contains("softmax_backward") && Catch::Contains("(2, 3)") &&
                                                   Catch::Contains("(2, 4)"));
  REQUIRE_THROWS_WITH(log_softmax_backward(y, dy), Catch::Contains("log_softmax_backward"));
}

// ---- layer_norm ------------------------------------------------------------------

TEST_CASE("layer_norm: known values of a 3-element row", "[tensor][norm]") {
  // x = (1, 2, 3): mean 2, biased variance 2/3, so x̂ = (-1, 0, 1) * sqrt(3/2).
  auto x = from_values(shape<1, 3>{}, {1.0, 2.0, 3.0});
  const double s = std::sqrt(1.5);
  auto y = layer_norm(x, 0.0);
  REQUIRE(y[0] == Approx(-s).epsilon(1e-12));
  REQUIRE(y[1] == Approx(0.0).margin(1e-15));
  REQUIRE(y[2] == Approx(s).epsilon(1e-12));

  auto gamma = from_values(shape<3>{}, {2.0, 1.0, 1.0});
  auto beta = from_values(shape<3>{}, {0.0, 0.0, 1.0});
  auto ya = layer_norm(x, gamma, beta, 0.0);
  REQUIRE(ya[0] == Approx(-2 * s).epsilon(1e-12));
  REQUIRE(ya[1] == Approx(0.0).margin(1e-15));
  REQUIRE(ya[2] == Approx(s + 1).epsilon(1e-12));
}

TEST_CASE("layer_norm: without weights each row has mean 0 and variance 1", "[tensor][norm]") {
  rng g(21);
  auto x = normal<double>(g, shape<dyn, 16>{6}, 3.0, 5.0);  // (6, 16)
  auto y = layer_norm(x);
  for (std::size_t r = 0; r < 6; ++r) {
    const auto [mx, vx] = row_moments(&x(r, 0), 16);
    const auto [my, vy] = row_moments(&y(r, 0), 16);
    REQUIRE(my == Approx(0.0).margin(1e-12));
    REQUIRE(vy == Approx(vx / (vx + 1e-5)).epsilon(1e-12));  // eps keeps it just under 1
    REQUIRE(vy == Approx(1.0).epsilon(1e-5));
    for (std::size_t c = 0; c < 16; ++c)
      REQUIRE(y(r, c) == Approx((x(r, c) - mx) / std::sqrt(vx + 1e-5)).epsilon(1e-12));
  }
}

TEST_CASE("layer_norm: gamma and beta match a reference loop (rank 3, static and dyn weights)", "[tensor][norm]") {
  rng g(22);
  auto x = normal<double>(g, shape<2, 3, 5>{});  // (2, 3, 5)
  auto gamma = normal<double>(g, shape<5>{});
  auto beta = normal<double>(g, shape<5>{});
  const double eps = 1e-3;
  auto y = layer_norm(x, gamma, beta, eps);
  auto y_dyn = layer_norm(x, shape_cast<shape<dyn>>(gamma), shape_cast<shape<dyn>>(beta), eps);
  for (std::size_t r = 0; r < 6; ++r) {
    const auto [m, v] = row_moments(&x[r * 5], 5);
    for (std::size_t c = 0; c < 5; ++c) {
      const double ref = (x[r * 5 + c] - m) / std::sqrt(v + eps) * gamma[c] + beta[c];
      REQUIRE(y[r * 5 + c] == Approx(ref).epsilon(1e-12));
      REQUIRE(y_dyn[r * 5 + c] == y[r * 5 + c]);
    }
  }
}

TEST_CASE("layer_norm: float rows far from 0 keep accurate statistics", "[tensor][norm]") {
  // Around 1e4 a float sum of 1024 values loses the spread entirely; the kernel
  // accumulates the row statistics in double.
  rng g(23);
  auto x = normal<float>(g, shape<dyn, 1024>{4}, 1.0e4f, 0.05f);  // (4, 1024)
  auto y = layer_norm(x);
  for (std::size_t r = 0; r < 4; ++r) {
    const auto [m, v] = row_moments(&x(r, 0), 1024);
    for (std::size_t c = 0; c < 1024; ++c)
      REQUIRE(y(r, c) == Approx((x(r, c) - m) / std::sqrt(v + 1e-5)).margin(2e-3));
  }
}

// ---- rms_norm ----------------------------------------------------------------------

TEST_CASE("rms_norm: known values", "[tensor][norm]") {
  // Row (3, 4): rms = sqrt(12.5); row (-1, 1): rms = 1.
  auto x = from_values(shape<dyn, 2>{2}, {3.0, 4.0, -1.0, 1.0});
  auto gamma = from_values(shape<2>{}, {2.0, 0.5});
  auto y = rms_norm(x, gamma, 0.0);
  REQUIRE(y(0, 0) == Approx(2 * 3 / std::sqrt(12.5)).epsilon(1e-12));  // 1.6970562748
  REQUIRE(y(0, 1) == Approx(0.5 * 4 / std::sqrt(12.5)).epsilon(1e-12));  // 0.5656854249
  REQUIRE(y(1, 0) == Approx(-2.0).epsilon(1e-12));
  REQUIRE(y(1, 1) == Approx(0.5).epsilon(1e-12));

  auto plain = rms_norm(x);  // no weight, eps = 1e-6
  REQUIRE(plain(0, 0) == Approx(3 / std::sqrt(12.5 + 1e-6)).epsilon(1e-12));
  REQUIRE(plain(1, 1) == Approx(1 / std::sqrt(1 + 1e-6)).epsilon(1e-12));
}

TEST_CASE("rms_norm: rank 3 matches a reference loop", "[tensor][norm]") {
  rng g(24);
  auto x = normal<float>(g, shape<dyn, 2, 8>{3});  // (3, 2, 8)
  auto gamma = normal<float>(g, shape<dyn>{8});
  auto y = rms_norm(x, gamma);
  for (std::size_t r = 0; r < 6; ++r) {
    double sq = 0;
    for (std::size_t c = 0; c < 8; ++c) sq += double(x[r * 8 + c]) * x[r * 8 + c];
    const double rstd = 1 / std::sqrt(sq / 8 + 1e-6);
    for (std::size_t c = 0; c < 8; ++c) REQUIRE(y[r * 8 + c] == Approx(x[r * 8 + c] * rstd * gamma[c]).epsilon(1e-5));
  }
}

TEST_CASE("layer_norm, rms_norm: weights of the wrong length throw shape_error", "[tensor][norm]") {
  auto x = zeros<double>(shape<dyn, 3>{2});
  auto good = ones<double>(shape<dyn>{3});
  auto bad = ones<double>(shape<dyn>{4});
  REQUIRE_THROWS_AS(layer_norm(x, bad, good), shape_error);
  REQUIRE_THROWS_WITH(layer_norm(x, bad, good),
                      Catch::Contains("layer_norm") && Catch::Contains("gamma") && Catch::Contains("(2, 3)") &&
                          Catch::Contains("(4)"));
  REQUIRE_THROWS_WITH(layer_norm(x, good, bad), Catch::Contains("layer_norm") && Catch::Contains("beta"));
  REQUIRE_THROWS_AS(rms_norm(x, bad), shape_error);
  REQUIRE_THROWS_WITH(rms_norm(x, bad), Catch::Contains("rms_norm") && Catch::Contains("(2, 3)") &&
                                            Catch::Contains("(4)"));
  REQUIRE_NOTHROW(layer_norm(x, good, good));
}

TEST_CASE("norm kernels: backward results do not depend on the thread count", "[tensor][norm]") {
  thread_count_guard guard;
  constexpr std::size_t rows = 600, cols = 96;  // large enough to run threaded
  rng g(25);
  auto x = normal<float>(g, shape<rows, cols>{});
  auto dy = normal<float>(g, shape<rows, cols>{});
  auto gamma = normal<float>(g, shape<cols>{});
  auto beta = normal<float>(g, shape<cols>{});

  struct grads {
    std::vector<float> dx, dgamma, dbeta, rms_dx, rms_dgamma;
  };
  auto run = [&](int threads) {
    set_num_threads(threads);
    grads out{std::vector<float>(rows * cols), std::vector<float>(cols), std::vector<float>(cols),
              std::vector<float>(rows * cols), std::vector<float>(cols)};
    std::vector<float> y(rows * cols), mean(rows), rstd(rows);
    kernels<cpu>::layer_norm_rows(rows, cols, x.data(), gamma.data(), beta.data(), 1e-5f, y.data(), mean.data(),
                                  rstd.data());
    kernels<cpu>::layer_norm_rows_backward(rows, cols, x.data(), gamma.data(), mean.data(), rstd.data(), dy.data(),
                                           out.dx.data(), out.dgamma.data(), out.dbeta.data());
    kernels<cpu>::rms_norm_rows(rows, cols, x.data(), gamma.data(), 1e-6f, y.data(), rstd.data());
    kernels<cpu>::rms_norm_rows_backward(rows, cols, x.data(), gamma.data(), rstd.data(), dy.data(),
                                         out.rms_dx.data(), out.rms_dgamma.data());
    return out;
  };
  const grads one = run(1), four = run(4);
  REQUIRE(one.dx == four.dx);  // bit for bit
  REQUIRE(one.dgamma == four.dgamma);
  REQUIRE(one.dbeta == four.dbeta);
  REQUIRE(one.rms_dx == four.rms_dx);
  REQUIRE(one.rms_dgamma == four.rms_dgamma);
  // And they are the sums they claim to be: dbeta = column sums of dy.
  for (std::size_t c = 0; c < cols; ++c) {
    double ref = 0;
    for (std::size_t r = 0; r < rows; ++r) ref += dy(r, c);
    REQUIRE(one.dbeta[c] == Approx(ref).margin(1e-4));
  }
}

// ---- dropout -------------------------------------------------------------------------

TEST_CASE("dropout_mask: keeps about 1-p of 100k elements, each exactly 0 or 1/(1-p)", "[tensor][dropout]") {
  const float p = 0.3f;
  rng g(31, 5);
  auto m = dropout_mask<float>(g, shape<dyn>{100000}, p);
  REQUIRE(g.offset() == 5 + 100000);  // one word per element
  const float scale = 1.0f / (1.0f - p);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < m.size(); ++i) {
    REQUIRE((m[i] == 0.0f || m[i] == scale));
    kept += m[i] != 0.0f;
  }
  // The standard deviation of the kept fraction is sqrt(0.3 * 0.7 / 1e5) ≈ 0.0014.
  REQUIRE(static_cast<double>(kept) / 1e5 == Approx(0.7).margin(0.01));
  // The rule a CUDA kernel must follow: keep iff uniform_at(seed, offset + i) > p.
  // Every element (the CPU fills ranges block-wise, from an offset that is not
  // a multiple of 4, split over threads).
  std::size_t rule = 0;
  for (std::size_t i = 0; i < m.size(); ++i) rule += (m[i] != 0.0f) == (rng::uniform_at<float>(31, 5 + i) > p);
  REQUIRE(rule == m.size());
}

TEST_CASE("dropout_mask: same seed and offset give the same mask, another offset or seed another",
          "[tensor][dropout]") {
  rng a(7, 100), b(7, 100), c(7, 4196), d(8, 100);
  auto ma = dropout_mask<double>(a, shape<dyn, 64>{32}, 0.5);
  auto mb = dropout_mask<double>(b, shape<dyn, 64>{32}, 0.5);
  auto mc = dropout_mask<double>(c, shape<dyn, 64>{32}, 0.5);
  auto md = dropout_mask<double>(d, shape<dyn, 64>{32}, 0.5);
  std::size_t same_b = 0, same_c = 0, same_d = 0;
  for (std::size_t i = 0; i < ma.size(); ++i) {
    same_b += ma[i] == mb[i];
    same_c += ma[i] == mc[i];
    same_d += ma[i] == md[i];
  }
  REQUIRE(same_b == ma.size());
  // Independent masks agree on about half the elements (2048 ± 32).
  REQUIRE(same_c < ma.size() * 6 / 10);
  REQUIRE(same_d < ma.size() * 6 / 10);
  // Consecutive draws from one generator do not repeat the mask.
  auto ma2 = dropout_mask<double>(a, shape<dyn, 64>{32}, 0.5);
  std::size_t same_next = 0;
  for (std::size_t i = 0; i < ma.size(); ++i) same_next += ma[i] == ma2[i];
  REQUIRE(same_next < ma.size() * 6 / 10);
}

TEST_CASE("dropout: x times the mask; p = 0 returns x and draws nothing", "[tensor][dropout]") {
  rng g(41);
  auto x = normal<double>(g, shape<4, 5>{});
  rng g1(3), g2(3);
  auto y = dropout(x, 0.25, g1);
  auto m = dropout_mask<double>(g2, x.shape(), 0.25);
  REQUIRE(g1.offset() == g2.offset());
  std::size_t zeros_seen = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE(y[i] == x[i] * m[i]);
    zeros_seen += m[i] == 0.0;
  }
  REQUIRE(zeros_seen > 0);
  REQUIRE(zeros_seen < x.size());

  rng g0(3);
  auto same = dropout(x, 0.0, g0);
  REQUIRE(g0.offset() == 0);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(same[i] == x[i]);
}

TEST_CASE("dropout: p outside [0, 1) throws value_error naming dropout and p", "[tensor][dropout]") {
  rng g(1);
  auto x = ones<float>(shape<dyn>{8});
  for (float p : {1.0f, 1.5f, -0.1f, std::numeric_limits<float>::quiet_NaN()}) {
    INFO("p = " << p);
    REQUIRE_THROWS_AS(dropout(x, p, g), value_error);
    REQUIRE_THROWS_WITH(dropout(x, p, g), Catch::StartsWith("dropout:") && Catch::Contains("p ="));
    REQUIRE_THROWS_AS(dropout_mask<float>(g, shape<dyn>{8}, p), value_error);
    REQUIRE_THROWS_WITH(dropout_mask<float>(g, shape<dyn>{8}, p), Catch::Contains("dropout") &&
                                                                     Catch::Contains("p ="));
  }
  REQUIRE_THROWS_WITH(dropout(x, 1.5f, g), Catch::Contains("1.5"));
  REQUIRE(g.offset() == 0);  // a rejected call draws nothing
}

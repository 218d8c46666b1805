// The data pipeline: deterministic shuffling and batching, normalisation,
// MixUp and random crop / flip, against reference loops and distribution moments.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <vector>

#include <moekit/core/random.hpp>
#include <moekit/data/augment.hpp>
#include <moekit/data/batching.hpp>
#include <moekit/data/normalize.hpp>
#include <moekit/tensor/ops/creation.hpp>

using namespace moekit;

namespace {

template <class S>
std::vector<index_t> to_vector(const tensor<index_t, S>& t) {
  return {t.data(), t.data() + t.size()};
}

bool is_permutation_of_n(const std::vector<index_t>& v) {
  std::vector<index_t> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i)
    if (sorted[i] != static_cast<index_t>(i)) return false;
  return true;
}

/// Image i, row r, column c, channel k of a (n, H * W * C) tensor.
template <class T, class S>
T pixel(const tensor<T, S>& x, const data::image_layout& im, std::size_t i, std::ptrdiff_t r, std::ptrdiff_t c,
        std::size_t k) {
  const auto h = static_cast<std::ptrdiff_t>(im.height), w = static_cast<std::ptrdiff_t>(im.width);
  if (r < 0 || r >= h || c < 0 || c >= w) return T(0);
  return x(i, static_cast<std::size_t>(r * w + c) * im.channels + k);
}

/// Images with distinct positive values, so that every crop is recognisable.
tensor<float, shape<dyn, dyn>> distinct_images(std::size_t n, const data::image_layout& im) {
  tensor<float, shape<dyn, dyn>> x(shape<dyn, dyn>{n, im.size()});
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i + 1);
  return x;
}

struct moments {
  double mean, variance;
};
template <class F>
moments sample_moments(std::size_t n, F draw) {
  double sum = 0, sq = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = draw();
    sum += v;
    sq += v * v;
  }
  const double mean = sum / static_cast<double>(n);
  return {mean, sq / static_cast<double>(n) - mean * mean};
}

}  // namespace

// ---- shuffling --------------------------------------------------------------------

TEST_CASE("random_below: 64 x 64 -> high 64 bits", "[data][batching]") {
  using data::detail::mul_high;
  constexpr std::uint64_t max = ~std::uint64_t{0};
  STATIC_REQUIRE(mul_high(max, max) == max - 1);
  STATIC_REQUIRE(mul_high(std::uint64_t{1} << 32, std::uint64_t{1} << 32) == 1);
  STATIC_REQUIRE(mul_high(max, 10) == 9);
  STATIC_REQUIRE(mul_high(std::uint64_t{1} << 63, 3) == 1);
  STATIC_REQUIRE(mul_high(12345, 67890) == 0);
  // (2^64 - 1)(2^63 + 5) = 2^127 + 5 * 2^64 - 2^63 - 5 -> high word 2^63 + 4.
  STATIC_REQUIRE(mul_high(max, (std::uint64_t{1} << 63) + 5) == (std::uint64_t{1} << 63) + 4);
  for (std::uint64_t n : {1u, 2u, 7u, 1000u}) {
    for (std::uint64_t i = 0; i < 200; ++i) REQUIRE(data::detail::random_below(5, 2 * i, n) < n);
  }
}

TEST_CASE("shuffled_indices: a permutation, deterministic for a seed", "[data][batching]") {
  rng a(42), b(42), c(43);
  const auto pa = to_vector(data::shuffled_indices(1000, a));
  REQUIRE(is_permutation_of_n(pa));
  REQUIRE(pa == to_vector(data::shuffled_indices(1000, b)));
  REQUIRE(pa != to_vector(data::shuffled_indices(1000, c)));
  REQUIRE(a.offset() == 2 * 999);

  // The next epoch from the same generator is another order.
  const auto next = to_vector(data::shuffled_indices(1000, a));
  REQUIRE(is_permutation_of_n(next));
  REQUIRE(next != pa);
  // Not the identity either (1 / 1000! chance for a correct shuffle).
  std::vector<index_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  REQUIRE(pa != identity);

  rng small(1);
  REQUIRE(data::shuffled_indices(0, small).size() == 0);
  REQUIRE(to_vector(data::shuffled_indices(1, small)) == std::vector<index_t>{0});
  REQUIRE(small.offset() == 0);
}

TEST_CASE("shuffled_indices: all orders of 3 equally likely", "[data][batching]") {
  // Fisher–Yates picks each of the 6 orders with probability 1/6; the classic
  // off-by-one (j drawn from [0, n) at every step) does not.
  rng g(7);
  std::map<std::vector<index_t>, int> counts;
  const int draws = 12000;
  for (int i = 0; i < draws; ++i) ++counts[to_vector(data::shuffled_indices(3, g))];
  REQUIRE(counts.size() == 6);
  for (const auto& [order, k] : counts) REQUIRE(std::abs(k - draws / 6) < 200);  // sd ~ 41
}

// ---- batching -----------------------------------------------------------------------

TEST_CASE("batcher: batch sizes, last batch kept or dropped, every index once", "[data][batching]") {
  rng g(3);
  const data::batcher keep(data::shuffled_indices(10, g), 4);
  REQUIRE(keep.size() == 3);
  std::vector<std::size_t> sizes;
  std::vector<index_t> seen;
  for (auto idx : keep) {
    sizes.push_back(idx.size());
    for (std::size_t i = 0; i < idx.size(); ++i) seen.push_back(idx[i]);
  }
  REQUIRE(sizes == std::vector<std::size_t>{4, 4, 2});
  REQUIRE(is_permutation_of_n(seen));

  const data::batcher drop(10, 4, /*drop_last=*/true);
  REQUIRE(drop.size() == 2);
  REQUIRE(to_vector(drop[1]) == std::vector<index_t>{4, 5, 6, 7});
  int batches = 0;
  for (auto idx : drop) {
    REQUIRE(idx.size() == 4);
    ++batches;
  }
  REQUIRE(batches == 2);

  const data::batcher exact(8, 4, true);
  REQUIRE(exact.size() == 2);
  REQUIRE(data::batcher(8, 4).size() == 2);
  REQUIRE(data::batcher(3, 4, true).size() == 0);
  REQUIRE(data::batcher(0, 4).size() == 0);

  REQUIRE_THROWS_AS(data::batcher(10, 0), value_error);
  REQUIRE_THROWS_WITH(keep[3], Catch::Contains("batcher") && Catch::Contains("[0, 3)"));
}

TEST_CASE("gather_batch: rows of examples and labels", "[data][batching]") {
  rng g(5);
  auto x = normal<float>(g, shape<dyn, 6>{20});
  auto y = arange<index_t>(20, 100);
  const auto idx = from_values<index_t>(shape<dyn>{3}, {7, 0, 19});
  auto xb = data::gather_batch(x, idx);
  auto yb = data::gather_batch(y, idx);
  STATIC_REQUIRE(std::is_same_v<decltype(xb)::shape_type, shape<dyn, 6>>);
  REQUIRE(xb.extent(0) == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(yb[i] == 100 + idx[i]);
    for (std::size_t j = 0; j < 6; ++j) REQUIRE(xb(i, j) == x(static_cast<std::size_t>(idx[i]), j));
  }
  const auto bad = from_values<index_t>(shape<dyn>{2}, {1, 20});
  REQUIRE_THROWS_WITH(data::gather_batch(x, bad), Catch::Contains("gather_batch") && Catch::Contains("index 20"));
}

// ---- normalisation ------------------------------------------------------------------

TEST_CASE("normalize: per feature and global statistics", "[data][normalize]") {
  rng g(11);
  const std::size_t n = 400, d = 5;
  auto x = normal<double>(g, shape<dyn, dyn>{n, d});
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t c = 0; c < d; ++c) x(r, c) = 3.0 * static_cast<double>(c) + (1.0 + c) * x(r, c);
    x(r, 4) = 2.5;  // a constant feature
  }

  const auto fs = data::compute_feature_stats(x);
  for (std::size_t c = 0; c < d; ++c) {
    double mean = 0, var = 0;
    for (std::size_t r = 0; r < n; ++r) mean += x(r, c) / n;
    for (std::size_t r = 0; r < n; ++r) var += (x(r, c) - mean) * (x(r, c) - mean) / n;
    REQUIRE(fs.mean[c] == Approx(mean).epsilon(1e-12));
    REQUIRE(fs.stddev[c] == Approx(c == 4 ? 1.0 : std::sqrt(var)).epsilon(1e-12));
  }
  const auto z = data::normalize(x, fs);
  for (std::size_t c = 0; c < d; ++c) {
    double mean = 0, sq = 0;
    for (std::size_t r = 0; r < n; ++r) mean += z(r, c) / n;
    for (std::size_t r = 0; r < n; ++r) sq += (z(r, c) - mean) * (z(r, c) - mean) / n;
    REQUIRE(mean == Approx(0).margin(1e-12));
    REQUIRE(std::sqrt(sq) == Approx(c == 4 ? 0.0 : 1.0).margin(1e-12));
  }

  const auto gs = data::compute_global_stats(x);
  const auto zg = data::normalize(x, gs);
  double mean = 0, sq = 0;
  for (std::size_t i = 0; i < zg.size(); ++i) mean += zg[i] / zg.size();
  for (std::size_t i = 0; i < zg.size(); ++i) sq += (zg[i] - mean) * (zg[i] - mean) / zg.size();
  REQUIRE(mean == Approx(0).margin(1e-12));
  REQUIRE(std::sqrt(sq) == Approx(1).epsilon(1e-12));
  REQUIRE(zg(3, 2) == Approx((x(3, 2) - gs.mean) / gs.stddev));

  // Float data, large enough to run threaded: the same statistics for any thread count.
  auto big = uniform<float>(g, shape<dyn, dyn>{3000, 64});
  const int threads = num_threads();
  const auto s_many = data::compute_feature_stats(big);
  set_num_threads(1);
  const auto s_one = data::compute_feature_stats(big);
  set_num_threads(threads);
  for (std::size_t c = 0; c < 64; ++c) {
    REQUIRE(s_many.mean[c] == s_one.mean[c]);
    REQUIRE(s_many.stddev[c] == s_one.stddev[c]);
    REQUIRE(s_many.mean[c] == Approx(0.5).margin(0.02));
    REQUIRE(s_many.stddev[c] == Approx(std::sqrt(1.0 / 12)).margin(0.01));
  }
}

TEST_CASE("normalize: errors", "[data][normalize]") {
  auto x = zeros<float>(shape<dyn, dyn>{4, 3});
  auto mean = zeros<float>(shape<dyn>{3});
  auto stddev = ones<float>(shape<dyn>{3});
  stddev[1] = 0;
  REQUIRE_THROWS_WITH(data::normalize(x, mean, stddev), Catch::Contains("normalize") && Catch::Contains("stddev[1]"));
  REQUIRE_THROWS_AS(data::normalize(x, 0.0f, -1.0f), value_error);
  REQUIRE_THROWS_AS(data::normalize(x, ones<float>(shape<dyn>{2}), ones<float>(shape<dyn>{2})), shape_error);
  REQUIRE_THROWS_WITH(data::compute_feature_stats(zeros<float>(shape<dyn, dyn>{0, 3})), Catch::Contains("no examples"));
  REQUIRE_THROWS_AS(data::compute_global_stats(zeros<float>(shape<dyn, dyn>{0, 3})), value_error);
}

// ---- MixUp ----------------------------------------------------------------------------

TEST_CASE("mixup: λ x + (1 - λ) x[partner]", "[data][augment]") {
  rng g(21);
  auto x = normal<float>(g, shape<dyn, 7>{16});
  auto labels = from_values<index_t>(shape<16>{}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5});

  rng a(99), b(99), c(100);
  const auto m = data::mixup(x, labels, 0.4, a);
  STATIC_REQUIRE(std::is_same_v<decltype(m.x)::shape_type, shape<dyn, 7>>);
  const float lam = m.lambda;
  REQUIRE(lam >= 0.0f);
  REQUIRE(lam <= 1.0f);
  REQUIRE(is_permutation_of_n(to_vector(m.partner)));
  for (std::size_t i = 0; i < 16; ++i) {
    const auto p = static_cast<std::size_t>(m.partner[i]);
    REQUIRE(m.labels_a[i] == labels[i]);
    REQUIRE(m.labels_b[i] == labels[p]);
    // To float rounding: with -march=native the compiler may contract either
    // side into a fused multiply-add, so bitwise equality is not guaranteed.
    for (std::size_t j = 0; j < 7; ++j)
      REQUIRE(m.x(i, j) == Approx(lam * x(i, j) + (1.0f - lam) * x(p, j)).epsilon(1e-6).margin(1e-7));
  }

  // Deterministic for a seed; another seed gives another λ and partner.
  const auto again = data::mixup(x, labels, 0.4, b);
  REQUIRE(again.lambda == m.lambda);
  REQUIRE(to_vector(again.partner) == to_vector(m.partner));
  const auto other = data::mixup(x, labels, 0.4, c);
  REQUIRE((other.lambda != m.lambda || to_vector(other.partner) != to_vector(m.partner)));

  REQUIRE_THROWS_AS(data::mixup(x, labels, 0.0, g), value_error);
  REQUIRE_THROWS_AS(data::mixup(x, from_values<index_t>(shape<dyn>{2}, {0, 1}), 1.0, g), shape_error);
}

TEST_CASE("sample_beta: moments of Beta(a, b)", "[data][augment]") {
  rng g(2024);
  const std::size_t n = 40000;
  // (a, b): mean a / (a + b), variance ab / ((a + b)^2 (a + b + 1)).
  const std::pair<double, double> params[] = {{1, 1}, {0.2, 0.2}, {4, 4}, {2, 5}, {0.5, 3}};
  for (const auto& ab : params) {
    const double a = ab.first, b = ab.second;
    INFO("Beta(" << a << ", " << b << ")");
    bool in_range = true;
    const auto m = sample_moments(n, [&] {
      const double v = data::sample_beta(a, b, g);
      in_range = in_range && v >= 0 && v <= 1;
      return v;
    });
    REQUIRE(in_range);
    const double mean = a / (a + b), var = a * b / ((a + b) * (a + b) * (a + b + 1));
    REQUIRE(m.mean == Approx(mean).margin(4 * std::sqrt(var / n)));
    REQUIRE(m.variance == Approx(var).epsilon(0.05));
  }
  // α = 1 is the uniform distribution: a quarter of the draws below 1/4.
  int below = 0;
  for (std::size_t i = 0; i < n; ++i) below += data::sample_beta(1, 1, g) < 0.25;
  REQUIRE(static_cast<double>(below) / n == Approx(0.25).margin(0.01));

  REQUIRE_THROWS_AS(data::sample_beta(-1, 1, g), value_error);
}

// ---- crop and flip -----------------------------------------------------------------------

TEST_CASE("flip_horizontal: mirrors columns; twice is the identity", "[data][augment]") {
  const data::image_layout im{4, 5, 3};
  const auto x = distinct_images(3, im);
  const auto f = data::flip_horizontal(x, im);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::ptrdiff_t r = 0; r < 4; ++r)
      for (std::ptrdiff_t c = 0; c < 5; ++c)
        for (std::size_t k = 0; k < 3; ++k) REQUIRE(pixel(f, im, i, r, c, k) == pixel(x, im, i, r, 4 - c, k));
  const auto ff = data::flip_horizontal(f, im);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(ff[i] == x[i]);
  REQUIRE_THROWS_WITH(data::flip_horizontal(x, data::image_layout{4, 5, 1}),
                      Catch::Contains("flip_horizontal") && Catch::Contains("4 x 5 x 1"));
}

TEST_CASE("random_crop_flip: padding 0 and no flip is the identity", "[data][augment]") {
  const data::image_layout im{6, 6};
  const auto x = distinct_images(10, im);
  rng g(1);
  const auto y = data::random_crop_flip(x, im, {.padding = 0, .flip_probability = 0}, g);
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(y[i] == x[i]);
  REQUIRE(g.offset() == 5 * 10);
}

TEST_CASE("random_crop_flip: every image is a flipped crop of its padded original", "[data][augment]") {
  const data::image_layout im{5, 7, 2};
  const std::size_t n = 2000, p = 2;
  const auto x = distinct_images(n, im);
  rng g(8), same(8), other(9);
  const auto y = data::random_crop_flip(x, im, {.padding = p}, g);

  // Find, for each output image, the (dy, dx, flip) that produced it.
  std::map<std::tuple<int, int, bool>, int> seen;
  for (std::size_t i = 0; i < n; ++i) {
    int matches = 0;
    for (int dy = -int(p); dy <= int(p); ++dy)
      for (int dx = -int(p); dx <= int(p); ++dx)
        for (bool flip : {false, true}) {
          bool all = true;
          for (std::ptrdiff_t r = 0; r < 5 && all; ++r)
            for (std::ptrdiff_t c = 0; c < 7 && all; ++c)
              for (std::size_t k = 0; k < 2 && all; ++k)
                all = pixel(y, im, i, r, c, k) == pixel(x, im, i, r + dy, (flip ? 6 - c : c) + dx, k);
          if (all) {
            ++matches;
            ++seen[{dy, dx, flip}];
          }
        }
    REQUIRE(matches == 1);
  }
  // All 5 x 5 offsets and both orientations occur, about equally often
  // (40 times each on average, standard deviation about 6).
  REQUIRE(seen.size() == 50);
  for (const auto& [key, k] : seen) REQUIRE(std::abs(k - 40) < 30);

  const auto y_same = data::random_crop_flip(x, im, {.padding = p}, same);
  const auto y_other = data::random_crop_flip(x, im, {.padding = p}, other);
  bool equal = true, differ = false;
  for (std::size_t i = 0; i < y.size(); ++i) {
    equal = equal && y_same[i] == y[i];
    differ = differ || y_other[i] != y[i];
  }
  REQUIRE(equal);
  REQUIRE(differ);

  REQUIRE_THROWS_AS(data::random_crop_flip(x, im, {.padding = 1, .flip_probability = 1.5}, g), value_error);
  REQUIRE_THROWS_AS(data::random_crop_flip(x, data::image_layout{7, 5, 1}, {}, g), shape_error);
}

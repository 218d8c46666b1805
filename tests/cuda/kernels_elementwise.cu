// kernels<moekit::cuda> against kernels<cpu> (the oracle) for the element-wise, row
// and column kernels: map, reduce, softmax, norm, batch_norm, copy, transpose.
// Random host inputs, the CPU kernel on them, the CUDA kernel on device copies,
// then an element-wise comparison: exact where both sides do the same single
// IEEE operation per element, else within a tolerance for the different
// summation order (sums get a tolerance scaled by the sum of |terms|).
// Without a device every GPU case prints "SKIPPED: no CUDA device" and returns.
#include <catch2/catch.hpp>

#include "skip.cuh"

#include <moekit.hpp>

#include "moekit/cuda.hpp"

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

using namespace moekit;

namespace {

template <class T>
using host = tensor<T, shape<dyn>, cpu>;
template <class T>
using device = tensor<T, shape<dyn>, moekit::cuda>;

/// (rows, cols) cases: one row, one column, warp rows (≤ 1024 columns), block
/// rows (> 1024), columns not a multiple of 32, and enough rows for several blocks.
const std::vector<std::pair<std::size_t, std::size_t>> matrix_sizes = {
    {1, 1}, {1, 7}, {1, 1000}, {1, 1025}, {7, 33}, {64, 1}, {3, 1025}, {130, 32}, {257, 2000}, {2, 5000}, {1000, 3}};

template <class T>
host<T> random_host(rng& g, std::size_t n) {
  return normal<T>(g, shape<dyn>{n});
}
template <class T>
device<T> on_device(const host<T>& x) {
  return x.template to<moekit::cuda>();
}
template <class T>
device<T> device_empty(std::size_t n) {
  return device<T>(shape<dyn>{n});
}
template <class T>
host<T> host_empty(std::size_t n) {
  return host<T>(shape<dyn>{n});
}
template <class T>
host<T> back(const device<T>& x) {
  return x.template to<cpu>();
}

/// Relative and absolute tolerances of a kernel computed in T in two orders.
template <class T>
struct tolerance;
template <>
struct tolerance<float> {
  static constexpr double rel = 1e-5, abs = 1e-6, sum = 1e-6;
};
template <>
struct tolerance<double> {
  static constexpr double rel = 1e-12, abs = 1e-14, sum = 1e-14;
};

/// Relative tolerance of values divided by a row sum of `cols` positive terms:
/// a sequential float sum (the CPU's) drifts by about eps·√cols.
template <class T>
double row_sum_rel(std::size_t cols) {
  return tolerance<T>::rel + 4 * std::numeric_limits<T>::epsilon() * std::sqrt(static_cast<double>(cols));
}

/// Every got[i] within abs[i] + rel·|want[i]| of want[i]; reports the first miss.
template <class T>
void require_close(const host<T>& got, const host<T>& want, double rel, const std::vector<double>& abs,
                   const std::string& what) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (!(std::abs(g - w) <= abs[i] + rel * std::abs(w))) {
      if (bad++ == 0) first = i;
    }
  }
  INFO(what << ": " << bad << " of " << want.size() << " differ; first at " << first << ": got "
            << (bad ? static_cast<double>(got[first]) : 0.0) << ", want " << (bad ? static_cast<double>(want[first]) : 0.0));
  REQUIRE(bad == 0);
}
template <class T>
void require_close(const host<T>& got, const host<T>& want, double rel, double abs, const std::string& what) {
  require_close(got, want, rel, std::vector<double>(want.size(), abs), what);
}
template <class T>
void require_equal(const host<T>& got, const host<T>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (!(got[i] == want[i]) && bad++ == 0) first = i;
  INFO(what << ": " << bad << " of " << want.size() << " differ; first at " << first);
  REQUIRE(bad == 0);
}

std::string size_name(std::size_t rows, std::size_t cols) {
  return "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
}

template <class T>
const T* none() {
  return nullptr;
}
template <class T>
T* none_out() {
  return nullptr;
}

/// Tolerance of row sums: sum · Σ_c |in[r, c]| per row.
template <class T>
std::vector<double> row_sum_tolerance(const host<T>& in, std::size_t rows, std::size_t cols) {
  std::vector<double> tol(rows, 0.0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) tol[r] += tolerance<T>::sum * std::abs(static_cast<double>(in[r * cols + c]));
  return tol;
}
/// abs + |scale[i]| · row_tol[row of i] per element (scale = exp(y) when exp_scale).
template <class T>
std::vector<double> row_scaled_tolerance(const host<T>& scale, const std::vector<double>& row_tol, std::size_t cols,
                                         double abs, bool exp_scale) {
  std::vector<double> tol(scale.size());
  for (std::size_t i = 0; i < scale.size(); ++i) {
    const double s = static_cast<double>(scale[i]);
    tol[i] = abs + (exp_scale ? std::exp(s) : std::abs(s)) * row_tol[i / cols];
  }
  return tol;
}
/// Tolerance of column sums of term(r, c): sum · Σ_r |term| per column.
template <class T, class F>
std::vector<double> column_sum_tolerance(std::size_t rows, std::size_t cols, F term) {
  std::vector<double> tol(cols, 0.0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) tol[c] += tolerance<T>::sum * std::abs(static_cast<double>(term(r, c)));
  return tol;
}

// Functors with mixed and 16-bit argument types, as optimizer and cast ops pass.
struct scale_by_index {
  MOEKIT_HOST_DEVICE float operator()(float a, index_t k) const { return a * static_cast<float>(k); }
};
struct to_bf16 {
  MOEKIT_HOST_DEVICE bf16 operator()(float a) const { return bf16(a); }
};
struct to_half {
  MOEKIT_HOST_DEVICE moekit::half operator()(float a) const { return moekit::half(a); }
};
template <class S>
struct to_float {
  MOEKIT_HOST_DEVICE float operator()(S a) const { return static_cast<float>(a); }
};
struct bf16_add {
  MOEKIT_HOST_DEVICE bf16 operator()(bf16 a, bf16 b) const { return bf16(static_cast<float>(a) + static_cast<float>(b)); }
};
struct small_int {
  MOEKIT_HOST_DEVICE index_t operator()(float a) const { return static_cast<index_t>(a * 4.0f); }
};
/// Rounds to whole numbers in [-3, 3], so that rows have ties.
struct coarse {
  template <class T>
  MOEKIT_HOST_DEVICE T operator()(T a) const {
    const T v = std::round(a * T(2));
    return v < T(-3) ? T(-3) : (v > T(3) ? T(3) : v);
  }
};

/// 0, 1, 2, ...: every entry different, so a misplaced one shows.
template <class T>
host<T> distinct(std::size_t n) {
  host<T> out = host_empty<T>(n);
  kernels<cpu>::generate(n, out.data(), fn::affine_index<T>{T(0), T(1)});
  return out;
}

template <class To, class F, class From>
host<To> host_map(const host<From>& x, F f) {
  host<To> out = host_empty<To>(x.size());
  kernels<cpu>::map(x.size(), out.data(), f, x.data());
  return out;
}

}  // namespace

TEST_CASE("cuda kernels: matrix_walk steps (row, col) like division", "[cuda][map]") {
  // Pure index arithmetic: runs on the host, no device needed.
  for (std::size_t cols : {1u, 3u, 32u, 33u, 1000u}) {
    for (std::size_t stride : {1u, 7u, 256u, 1000u, 4096u}) {
      for (std::size_t start : {0u, 1u, 31u, 999u}) {
        detail::matrix_walk at(start, stride, cols);
        for (std::size_t i = start, k = 0; k < 200; i += stride, ++k, at.advance()) {
          INFO("cols " << cols << " stride " << stride << " i " << i);
          REQUIRE(at.row == i / cols);
          REQUIRE(at.col == i % cols);
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("cuda kernels: map and generate match the CPU", "[cuda][map]", float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  rng g(11);
  for (std::size_t n : {1u, 31u, 1000u, 100003u}) {
    INFO("n = " << n);
    const host<T> a = random_host<T>(g, n), b = random_host<T>(g, n);
    const device<T> da = on_device(a), db = on_device(b);

    host<T> want = host_empty<T>(n);
    device<T> got = device_empty<T>(n);
    kernels<cpu>::map(n, want.data(), fn::add{}, a.data(), b.data());
    kernels<moekit::cuda>::map(n, got.data(), fn::add{}, da.data(), db.data());
    require_equal(back(got), want, "map add");

    kernels<cpu>::map(n, want.data(), fn::with_scalar<fn::mul, T>{T(0.5)}, a.data());
    kernels<moekit::cuda>::map(n, got.data(), fn::with_scalar<fn::mul, T>{T(0.5)}, da.data());
    require_equal(back(got), want, "map scalar mul");

    // In place: out aliases the first input.
    host<T> a_in_place = a.clone();
    device<T> da_in_place = on_device(a);
    kernels<cpu>::map(n, a_in_place.data(), fn::mul{}, a_in_place.data(), b.data());
    kernels<moekit::cuda>::map(n, da_in_place.data(), fn::mul{}, da_in_place.data(), db.data());
    require_equal(back(da_in_place), a_in_place, "map in place");

    // exp, log: the device's libm differs from the host's in the last bits.
    kernels<cpu>::map(n, want.data(), fn::exp{}, a.data());
    kernels<moekit::cuda>::map(n, got.data(), fn::exp{}, da.data());
    require_close(back(got), want, 4 * tolerance<T>::rel, 0.0, "map exp");

    kernels<cpu>::generate(n, want.data(), fn::affine_index<T>{T(-3), T(0.25)});
    kernels<moekit::cuda>::generate(n, got.data(), fn::affine_index<T>{T(-3), T(0.25)});
    require_equal(back(got), want, "generate affine_index");

    // normal_draw: Box-Muller (log, sqrt, cos) on both sides.
    kernels<cpu>::generate(n, want.data(), fn::normal_draw<T>{7, 100, T(1), T(2)});
    kernels<moekit::cuda>::generate(n, got.data(), fn::normal_draw<T>{7, 100, T(1), T(2)});
    require_close(back(got), want, 8 * tolerance<T>::rel, 8 * tolerance<T>::rel, "generate normal_draw");
  }
}

TEST_CASE("cuda kernels: map with mixed and 16-bit element types", "[cuda][map]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  rng g(12);
  const std::size_t n = 4099;
  const host<float> a = random_host<float>(g, n), b = random_host<float>(g, n);
  const host<index_t> k = host_map<index_t>(b, small_int{});
  const device<float> da = on_device(a);
  const device<index_t> dk = on_device(k);

  host<float> want = host_empty<float>(n);
  device<float> got = device_empty<float>(n);
  kernels<cpu>::map(n, want.data(), scale_by_index{}, a.data(), k.data());
  kernels<moekit::cuda>::map(n, got.data(), scale_by_index{}, da.data(), dk.data());
  require_equal(back(got), want, "map (float, index_t) -> float");

  const host<bf16> ab = host_map<bf16>(a, to_bf16{}), bb = host_map<bf16>(b, to_bf16{});
  host<bf16> want_b = host_empty<bf16>(n);
  device<bf16> got_b = device_empty<bf16>(n);
  kernels<cpu>::map(n, want_b.data(), bf16_add{}, ab.data(), bb.data());
  kernels<moekit::cuda>::map(n, got_b.data(), bf16_add{}, on_device(ab).data(), on_device(bb).data());
  const host<bf16> got_b_host = back(got_b);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) bad += got_b_host[i].bits != want_b[i].bits;
  REQUIRE(bad == 0);

  // float -> half on the device, half -> float on the host: the same conversion both ways.
  device<moekit::half> got_h = device_empty<moekit::half>(n);
  kernels<moekit::cuda>::map(n, got_h.data(), to_half{}, da.data());
  const host<float> round_trip = host_map<float>(back(got_h), to_float<moekit::half>{});
  const host<float> want_h = host_map<float>(host_map<moekit::half>(a, to_half{}), to_float<moekit::half>{});
  require_equal(round_trip, want_h, "map float -> half");
}

TEMPLATE_TEST_CASE("cuda kernels: map_rows and map_cols match the CPU", "[cuda][map]", float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  rng g(13);
  for (auto [rows, cols] : matrix_sizes) {
    INFO(size_name(rows, cols));
    const host<T> a = random_host<T>(g, rows * cols), row = random_host<T>(g, cols), col = random_host<T>(g, rows);
    const device<T> da = on_device(a), drow = on_device(row), dcol = on_device(col);
    host<T> want = host_empty<T>(rows * cols);
    device<T> got = device_empty<T>(rows * cols);

    kernels<cpu>::map_rows(rows, cols, want.data(), fn::sub{}, a.data(), row.data());
    kernels<moekit::cuda>::map_rows(rows, cols, got.data(), fn::sub{}, da.data(), drow.data());
    require_equal(back(got), want, "map_rows");

    kernels<cpu>::map_cols(rows, cols, want.data(), fn::mul{}, a.data(), col.data());
    kernels<moekit::cuda>::map_cols(rows, cols, got.data(), fn::mul{}, da.data(), dcol.data());
    require_equal(back(got), want, "map_cols");

    device<T> in_place = on_device(a);  // out aliases a, as autograd's combine does
    kernels<moekit::cuda>::map_cols(rows, cols, in_place.data(), fn::mul{}, in_place.data(), dcol.data());
    require_equal(back(in_place), want, "map_cols in place");
  }
}

TEMPLATE_TEST_CASE("cuda kernels: reduce_rows and reduce_cols match the CPU", "[cuda][reduce]", float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  rng g(14);
  auto sizes = matrix_sizes;
  sizes.insert(sizes.end(), {{1, 100000}, {3, 70001}, {5000, 3}, {4097, 70}, {0, 5}, {5, 0}});
  for (auto [rows, cols] : sizes) {
    INFO(size_name(rows, cols));
    const host<T> x = random_host<T>(g, rows * cols);
    const device<T> dx = on_device(x);

    host<T> want_r = host_empty<T>(rows);
    device<T> got_r = device_empty<T>(rows);
    kernels<cpu>::reduce_rows(rows, cols, x.data(), want_r.data(), T(0), fn::add{});
    kernels<moekit::cuda>::reduce_rows(rows, cols, dx.data(), got_r.data(), T(0), fn::add{});
    const host<T> sums = back(got_r);
    require_close(sums, want_r, tolerance<T>::rel, row_sum_tolerance(x, rows, cols), "reduce_rows add");

    // Deterministic: the same bits on a second run.
    kernels<moekit::cuda>::reduce_rows(rows, cols, dx.data(), got_r.data(), T(0), fn::add{});
    require_equal(back(got_r), sums, "reduce_rows add, second run");

    const T lowest = -std::numeric_limits<T>::infinity();
    kernels<cpu>::reduce_rows(rows, cols, x.data(), want_r.data(), lowest, fn::max{});
    kernels<moekit::cuda>::reduce_rows(rows, cols, dx.data(), got_r.data(), lowest, fn::max{});
    require_equal(back(got_r), want_r, "reduce_rows max");

    host<T> want_c = host_empty<T>(cols);
    device<T> got_c = device_empty<T>(cols);
    kernels<cpu>::reduce_cols(rows, cols, x.data(), want_c.data(), T(0), fn::add{});
    kernels<moekit::cuda>::reduce_cols(rows, cols, dx.data(), got_c.data(), T(0), fn::add{});
    const host<T> col_sums = back(got_c);
    require_close(col_sums, want_c, tolerance<T>::rel,
                  column_sum_tolerance<T>(rows, cols, [&](std::size_t r, std::size_t c) { return x[r * cols + c]; }),
                  "reduce_cols add");
    kernels<moekit::cuda>::reduce_cols(rows, cols, dx.data(), got_c.data(), T(0), fn::add{});
    require_equal(back(got_c), col_sums, "reduce_cols add, second run");

    const T highest = std::numeric_limits<T>::infinity();
    kernels<cpu>::reduce_cols(rows, cols, x.data(), want_c.data(), highest, fn::min{});
    kernels<moekit::cuda>::reduce_cols(rows, cols, dx.data(), got_c.data(), highest, fn::min{});
    require_equal(back(got_c), want_c, "reduce_cols min");
  }
}

TEST_CASE("cuda kernels: reduce over index_t is exact", "[cuda][reduce]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  rng g(15);
  for (auto [rows, cols] : {std::pair<std::size_t, std::size_t>{3, 70001}, {300, 40}, {4097, 70}}) {
    INFO(size_name(rows, cols));
    const host<index_t> x = host_map<index_t>(random_host<float>(g, rows * cols), small_int{});
    const device<index_t> dx = on_device(x);
    host<index_t> want_r = host_empty<index_t>(rows), want_c = host_empty<index_t>(cols);
    device<index_t> got_r = device_empty<index_t>(rows), got_c = device_empty<index_t>(cols);
    kernels<cpu>::reduce_rows(rows, cols, x.data(), want_r.data(), index_t(0), fn::add{});
    kernels<moekit::cuda>::reduce_rows(rows, cols, dx.data(), got_r.data(), index_t(0), fn::add{});
    require_equal(back(got_r), want_r, "reduce_rows index_t");
    kernels<cpu>::reduce_cols(rows, cols, x.data(), want_c.data(), index_t(0), fn::add{});
    kernels<moekit::cuda>::reduce_cols(rows, cols, dx.data(), got_c.data(), index_t(0), fn::add{});
    require_equal(back(got_c), want_c, "reduce_cols index_t");
  }
}

TEMPLATE_TEST_CASE("cuda kernels: argmax_rows matches the CPU, ties and NaNs included", "[cuda][reduce]", float,
                   double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  rng g(16);
  for (auto [rows, cols] : matrix_sizes) {
    INFO(size_name(rows, cols));
    for (bool ties : {false, true}) {
      host<T> x = random_host<T>(g, rows * cols);
      if (ties) x = host_map<T>(x, coarse{});
      const device<T> dx = on_device(x);
      host<index_t> want = host_empty<index_t>(rows);
      device<index_t> got = device_empty<index_t>(rows);
      kernels<cpu>::argmax_rows(rows, cols, x.data(), want.data());
      kernels<moekit::cuda>::argmax_rows(rows, cols, dx.data(), got.data());
      require_equal(back(got), want, ties ? "argmax_rows with ties" : "argmax_rows");
    }
  }
  // NaN in column 0 keeps index 0 (the CPU's scan never leaves it); elsewhere a NaN never wins.
  const std::size_t rows = 4, cols = 1500;
  host<T> x = random_host<T>(g, rows * cols);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  x[0 * cols + 0] = nan;
  x[1 * cols + 700] = nan;
  x[2 * cols + 3] = nan;
  x[2 * cols + 1400] = T(100);
  for (std::size_t c = 0; c < cols; ++c) x[3 * cols + c] = c == 0 ? T(-5) : (c == 5 ? T(-1) : nan);
  host<index_t> want = host_empty<index_t>(rows);
  device<index_t> got = device_empty<index_t>(rows);
  kernels<cpu>::argmax_rows(rows, cols, x.data(), want.data());
  kernels<moekit::cuda>::argmax_rows(rows, cols, on_device(x).data(), got.data());
  REQUIRE(want[0] == 0);
  REQUIRE(want[2] == 1400);
  REQUIRE(want[3] == 5);
  require_equal(back(got), want, "argmax_rows with NaNs");
}

TEMPLATE_TEST_CASE("cuda kernels: softmax and log-softmax, forward and backward, match the CPU", "[cuda][softmax]",
                   float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  constexpr double abs = tolerance<T>::abs;
  rng g(17);
  auto sizes = matrix_sizes;
  sizes.push_back({3, 30000});
  for (auto [rows, cols] : sizes) {
    INFO(size_name(rows, cols));
    const std::size_t n = rows * cols;
    const double rel = row_sum_rel<T>(cols);
    const host<T> x = normal<T>(g, shape<dyn>{n}, T(0), T(3)), dy = random_host<T>(g, n);
    const device<T> dx_in = on_device(x), ddy = on_device(dy);
    host<T> y = host_empty<T>(n), want = host_empty<T>(n);
    device<T> got = device_empty<T>(n);

    kernels<cpu>::softmax_rows(rows, cols, x.data(), y.data());
    kernels<moekit::cuda>::softmax_rows(rows, cols, dx_in.data(), got.data());
    require_close(back(got), y, rel, abs, "softmax_rows");

    device<T> in_place = on_device(x);
    kernels<moekit::cuda>::softmax_rows(rows, cols, in_place.data(), in_place.data());
    require_close(back(in_place), y, rel, abs, "softmax_rows in place");

    // dx = y · (dy - Σ dy·y): the sum's rounding, scaled by y.
    const device<T> dy_out = on_device(y);
    kernels<cpu>::softmax_rows_backward(rows, cols, y.data(), dy.data(), want.data());
    kernels<moekit::cuda>::softmax_rows_backward(rows, cols, dy_out.data(), ddy.data(), got.data());
    host<T> dy_y = host_empty<T>(n);
    kernels<cpu>::map(n, dy_y.data(), fn::mul{}, dy.data(), y.data());
    require_close(back(got), want, rel, row_scaled_tolerance(y, row_sum_tolerance(dy_y, rows, cols), cols, abs, false),
                  "softmax_rows_backward");

    kernels<cpu>::log_softmax_rows(rows, cols, x.data(), y.data());
    kernels<moekit::cuda>::log_softmax_rows(rows, cols, dx_in.data(), got.data());
    require_close(back(got), y, rel, abs, "log_softmax_rows");

    const device<T> dlog_y = on_device(y);
    kernels<cpu>::log_softmax_rows_backward(rows, cols, y.data(), dy.data(), want.data());
    kernels<moekit::cuda>::log_softmax_rows_backward(rows, cols, dlog_y.data(), ddy.data(), got.data());
    // dx = dy - exp(y) · Σ dy: the sum's rounding, scaled by exp(y).
    require_close(back(got), want, rel, row_scaled_tolerance(y, row_sum_tolerance(dy, rows, cols), cols, abs, true),
                  "log_softmax_rows_backward");
  }
}

TEST_CASE("cuda kernels: bf16 softmax and layer norm follow the float CPU kernels", "[cuda][softmax][norm]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  rng g(18);
  for (auto [rows, cols] : {std::pair<std::size_t, std::size_t>{5, 33}, {3, 2000}}) {
    INFO(size_name(rows, cols));
    const std::size_t n = rows * cols;
    // The inputs rounded to bf16, so that both sides start from the same values.
    const host<bf16> xb = host_map<bf16>(random_host<float>(g, n), to_bf16{});
    const host<float> x = host_map<float>(xb, to_float<bf16>{});
    const device<bf16> dxb = on_device(xb);
    host<float> want = host_empty<float>(n);
    device<bf16> got = device_empty<bf16>(n);

    kernels<cpu>::softmax_rows(rows, cols, x.data(), want.data());
    kernels<moekit::cuda>::softmax_rows(rows, cols, dxb.data(), got.data());
    require_close(host_map<float>(back(got), to_float<bf16>{}), want, 1e-2, 1e-6, "bf16 softmax_rows");

    kernels<cpu>::layer_norm_rows(rows, cols, x.data(), none<float>(), none<float>(), 1e-5f, want.data(),
                                  none_out<float>(), none_out<float>());
    kernels<moekit::cuda>::layer_norm_rows(rows, cols, dxb.data(), none<bf16>(), none<bf16>(), bf16(1e-5f), got.data(),
                                   none_out<bf16>(), none_out<bf16>());
    require_close(host_map<float>(back(got), to_float<bf16>{}), want, 1e-2, 1e-2, "bf16 layer_norm_rows");
  }
}

TEMPLATE_TEST_CASE("cuda kernels: layer norm and RMS norm, forward and backward, match the CPU", "[cuda][norm]", float,
                   double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  constexpr double rel = tolerance<T>::rel, abs = 10 * tolerance<T>::abs;
  const T eps = T(1e-5);
  rng g(19);
  for (auto [rows, cols] : matrix_sizes) {
    if (cols < 2) continue;  // one column normalises to 0 with rstd = 1/√eps: no signal to compare
    INFO(size_name(rows, cols));
    const std::size_t n = rows * cols;
    const host<T> x = normal<T>(g, shape<dyn>{n}, T(1), T(2)), dy = random_host<T>(g, n);
    const host<T> gamma = normal<T>(g, shape<dyn>{cols}, T(1), T(0.5)), beta = random_host<T>(g, cols);
    const device<T> d_x = on_device(x), d_dy = on_device(dy), d_gamma = on_device(gamma), d_beta = on_device(beta);

    for (bool affine : {true, false}) {
      INFO("affine " << affine);
      const T* g_h = affine ? gamma.data() : none<T>();
      const T* b_h = affine ? beta.data() : none<T>();
      const T* g_d = affine ? d_gamma.data() : none<T>();
      const T* b_d = affine ? d_beta.data() : none<T>();

      // Layer norm forward.
      host<T> y = host_empty<T>(n), mean = host_empty<T>(rows), rstd = host_empty<T>(rows);
      device<T> gy = device_empty<T>(n), gmean = device_empty<T>(rows), grstd = device_empty<T>(rows);
      kernels<cpu>::layer_norm_rows(rows, cols, x.data(), g_h, b_h, eps, y.data(), mean.data(), rstd.data());
      kernels<moekit::cuda>::layer_norm_rows(rows, cols, d_x.data(), g_d, b_d, eps, gy.data(), gmean.data(), grstd.data());
      require_close(back(gy), y, rel, abs, "layer_norm_rows y");
      require_close(back(gmean), mean, rel, abs, "layer_norm_rows mean");
      require_close(back(grstd), rstd, rel, abs, "layer_norm_rows rstd");
      kernels<moekit::cuda>::layer_norm_rows(rows, cols, d_x.data(), g_d, b_d, eps, gy.data(), none_out<T>(), none_out<T>());
      require_close(back(gy), y, rel, abs, "layer_norm_rows y without statistics");

      // Layer norm backward, from the CPU's statistics on both sides.
      const device<T> d_mean = on_device(mean), d_rstd = on_device(rstd);
      host<T> dx = host_empty<T>(n), dgamma = host_empty<T>(cols), dbeta = host_empty<T>(cols);
      device<T> gdx = device_empty<T>(n), gdgamma = device_empty<T>(cols), gdbeta = device_empty<T>(cols);
      kernels<cpu>::layer_norm_rows_backward(rows, cols, x.data(), g_h, mean.data(), rstd.data(), dy.data(), dx.data(),
                                             dgamma.data(), dbeta.data());
      kernels<moekit::cuda>::layer_norm_rows_backward(rows, cols, d_x.data(), g_d, d_mean.data(), d_rstd.data(), d_dy.data(),
                                              gdx.data(), gdgamma.data(), gdbeta.data());
      auto x_hat = [&](std::size_t r, std::size_t c) { return (x[r * cols + c] - mean[r]) * rstd[r]; };
      require_close(back(gdx), dx, rel, 10 * abs, "layer_norm_rows_backward dx");
      require_close(back(gdgamma), dgamma, rel,
                    column_sum_tolerance<T>(rows, cols, [&](std::size_t r, std::size_t c) {
                      return dy[r * cols + c] * x_hat(r, c);
                    }),
                    "layer_norm_rows_backward dgamma");
      require_close(back(gdbeta), dbeta, rel,
                    column_sum_tolerance<T>(rows, cols, [&](std::size_t r, std::size_t c) { return dy[r * cols + c]; }),
                    "layer_norm_rows_backward dbeta");
      // Only dbeta wanted: dx and dgamma null.
      device<T> gdbeta_only = device_empty<T>(cols);
      kernels<moekit::cuda>::layer_norm_rows_backward(rows, cols, d_x.data(), g_d, d_mean.data(), d_rstd.data(), d_dy.data(),
                                              none_out<T>(), none_out<T>(), gdbeta_only.data());
      require_equal(back(gdbeta_only), back(gdbeta), "layer_norm_rows_backward dbeta alone");

      // RMS norm forward and backward.
      host<T> ry = host_empty<T>(n), rrstd = host_empty<T>(rows);
      device<T> gry = device_empty<T>(n), grrstd = device_empty<T>(rows);
      kernels<cpu>::rms_norm_rows(rows, cols, x.data(), g_h, eps, ry.data(), rrstd.data());
      kernels<moekit::cuda>::rms_norm_rows(rows, cols, d_x.data(), g_d, eps, gry.data(), grrstd.data());
      require_close(back(gry), ry, rel, abs, "rms_norm_rows y");
      require_close(back(grrstd), rrstd, rel, abs, "rms_norm_rows rstd");

      const device<T> d_rrstd = on_device(rrstd);
      host<T> rdx = host_empty<T>(n), rdgamma = host_empty<T>(cols);
      device<T> grdx = device_empty<T>(n), grdgamma = device_empty<T>(cols);
      kernels<cpu>::rms_norm_rows_backward(rows, cols, x.data(), g_h, rrstd.data(), dy.data(), rdx.data(),
                                           rdgamma.data());
      kernels<moekit::cuda>::rms_norm_rows_backward(rows, cols, d_x.data(), g_d, d_rrstd.data(), d_dy.data(), grdx.data(),
                                            grdgamma.data());
      require_close(back(grdx), rdx, rel, 10 * abs, "rms_norm_rows_backward dx");
      require_close(back(grdgamma), rdgamma, rel,
                    column_sum_tolerance<T>(rows, cols, [&](std::size_t r, std::size_t c) {
                      return dy[r * cols + c] * x[r * cols + c] * rrstd[r];
                    }),
                    "rms_norm_rows_backward dgamma");
      device<T> grdx_only = device_empty<T>(n);
      kernels<moekit::cuda>::rms_norm_rows_backward(rows, cols, d_x.data(), g_d, d_rrstd.data(), d_dy.data(), grdx_only.data(),
                                            none_out<T>());
      require_equal(back(grdx_only), back(grdx), "rms_norm_rows_backward dx alone");
    }
  }
}

TEMPLATE_TEST_CASE("cuda kernels: batch norm statistics, forward and backward match the CPU", "[cuda][batch_norm]",
                   float, double) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  constexpr double rel = tolerance<T>::rel, abs = 10 * tolerance<T>::abs;
  const T eps = T(1e-5);
  rng g(20);
  auto sizes = matrix_sizes;
  sizes.insert(sizes.end(), {{5000, 3}, {4097, 70}});
  for (auto [rows, cols] : sizes) {
    if (rows < 2) continue;  // one row: variance 0, x̂ = 0
    INFO(size_name(rows, cols));
    const std::size_t n = rows * cols;
    const host<T> x = normal<T>(g, shape<dyn>{n}, T(-1), T(3)), dy = random_host<T>(g, n);
    const host<T> gamma = normal<T>(g, shape<dyn>{cols}, T(1), T(0.5)), beta = random_host<T>(g, cols);
    const device<T> d_x = on_device(x), d_dy = on_device(dy), d_gamma = on_device(gamma), d_beta = on_device(beta);

    host<T> mean = host_empty<T>(cols), var = host_empty<T>(cols);
    device<T> gmean = device_empty<T>(cols), gvar = device_empty<T>(cols);
    kernels<cpu>::batch_norm_stats(rows, cols, x.data(), mean.data(), var.data());
    kernels<moekit::cuda>::batch_norm_stats(rows, cols, d_x.data(), gmean.data(), gvar.data());
    const auto mean_tol = column_sum_tolerance<T>(rows, cols, [&](std::size_t r, std::size_t c) {
      return x[r * cols + c] / static_cast<T>(rows);
    });
    require_close(back(gmean), mean, rel, mean_tol, "batch_norm_stats mean");
    require_close(back(gvar), var, rel, abs, "batch_norm_stats var");

    for (bool affine : {true, false}) {
      INFO("affine " << affine);
      host<T> y = host_empty<T>(n), rstd = host_empty<T>(cols);
      device<T> gy = device_empty<T>(n), grstd = device_empty<T>(cols);
      const device<T> d_mean = on_device(mean), d_var = on_device(var);
      kernels<cpu>::batch_norm_forward(rows, cols, x.data(), mean.data(), var.data(), affine ? gamma.data() : none<T>(),
                                       affine ? beta.data() : none<T>(), eps, y.data(), rstd.data());
      kernels<moekit::cuda>::batch_norm_forward(rows, cols, d_x.data(), d_mean.data(), d_var.data(),
                                        affine ? d_gamma.data() : none<T>(), affine ? d_beta.data() : none<T>(), eps,
                                        gy.data(), grstd.data());
      require_close(back(gy), y, rel, abs, "batch_norm_forward y");
      require_close(back(grstd), rstd, rel, abs, "batch_norm_forward rstd");

      const device<T> d_rstd = on_device(rstd);
      for (bool batch_stats : {true, false}) {
        INFO("batch_stats " << batch_stats);
        host<T> dx = host_empty<T>(n), dgamma = host_empty<T>(cols), dbeta = host_empty<T>(cols);
        device<T> gdx = device_empty<T>(n), gdgamma = device_empty<T>(cols), gdbeta = device_empty<T>(cols);
        kernels<cpu>::batch_norm_backward(rows, cols, x.data(), mean.data(), rstd.data(),
                                          affine ? gamma.data() : none<T>(), dy.data(), batch_stats, dx.data(),
                                          dgamma.data(), dbeta.data());
        kernels<moekit::cuda>::batch_norm_backward(rows, cols, d_x.data(), d_mean.data(), d_rstd.data(),
                                           affine ? d_gamma.data() : none<T>(), d_dy.data(), batch_stats, gdx.data(),
                                           gdgamma.data(), gdbeta.data());
        require_close(back(gdx), dx, rel, 10 * abs, "batch_norm_backward dx");
        require_close(back(gdgamma), dgamma, rel,
                      column_sum_tolerance<T>(rows, cols, [&](std::size_t r, std::size_t c) {
                        return dy[r * cols + c] * (x[r * cols + c] - mean[c]) * rstd[c];
                      }),
                      "batch_norm_backward dgamma");
        require_close(back(gdbeta), dbeta, rel,
                      column_sum_tolerance<T>(rows, cols, [&](std::size_t r, std::size_t c) { return dy[r * cols + c]; }),
                      "batch_norm_backward dbeta");
        // Only dx wanted.
        device<T> gdx_only = device_empty<T>(n);
        kernels<moekit::cuda>::batch_norm_backward(rows, cols, d_x.data(), d_mean.data(), d_rstd.data(),
                                           affine ? d_gamma.data() : none<T>(), d_dy.data(), batch_stats,
                                           gdx_only.data(), none_out<T>(), none_out<T>());
        require_equal(back(gdx_only), back(gdx), "batch_norm_backward dx alone");
      }
    }
  }
}

TEMPLATE_TEST_CASE("cuda kernels: copy and copy_blocks match the CPU", "[cuda][copy]", float, double, index_t) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  rng g(21);
  const std::size_t n = 10007;
  const host<T> src = distinct<T>(n);
  const device<T> d_src = on_device(src);

  device<T> got = device_empty<T>(n);
  kernels<moekit::cuda>::copy(n, d_src.data(), got.data());
  require_equal(back(got), src, "copy");

  // concat's pattern: 7 blocks of 13 into a (7, 40) whole at column 5, and split's reverse.
  const std::size_t blocks = 7, len = 13, whole_stride = 40, at = 5;
  host<T> whole = host_map<T>(random_host<float>(g, blocks * whole_stride), coarse{});  // values ≤ 3, src's mostly larger
  device<T> d_whole = on_device(whole);
  kernels<cpu>::copy_blocks(blocks, len, src.data(), len, whole.data() + at, whole_stride);
  kernels<moekit::cuda>::copy_blocks(blocks, len, d_src.data(), len, d_whole.data() + at, whole_stride);
  require_equal(back(d_whole), whole, "copy_blocks into the whole");

  host<T> part = host_empty<T>(blocks * len);
  device<T> d_part = device_empty<T>(blocks * len);
  kernels<cpu>::copy_blocks(blocks, len, whole.data() + at, whole_stride, part.data(), len);
  kernels<moekit::cuda>::copy_blocks(blocks, len, d_whole.data() + at, whole_stride, d_part.data(), len);
  require_equal(back(d_part), part, "copy_blocks out of the whole");

  // One block copies len entries whatever the strides.
  device<T> one = device_empty<T>(len);
  kernels<moekit::cuda>::copy_blocks(1, len, d_src.data(), 0, one.data(), 0);
  host<T> want_one = host_empty<T>(len);
  kernels<cpu>::copy_blocks(1, len, src.data(), 0, want_one.data(), 0);
  require_equal(back(one), want_one, "copy_blocks, one block");
}

TEMPLATE_TEST_CASE("cuda kernels: transpose_2d and transpose_2d_batched match the CPU", "[cuda][transpose]", float,
                   double, index_t) {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using T = TestType;
  auto sizes = matrix_sizes;
  sizes.insert(sizes.end(), {{33, 65}, {1, 3000}, {3000, 1}, {70000, 2}});
  for (auto [rows, cols] : sizes) {
    INFO(size_name(rows, cols));
    const std::size_t n = rows * cols;
    const host<T> x = distinct<T>(n);
    host<T> want = host_empty<T>(n);
    device<T> got = device_empty<T>(n);
    kernels<cpu>::transpose_2d(rows, cols, x.data(), want.data());
    kernels<moekit::cuda>::transpose_2d(rows, cols, on_device(x).data(), got.data());
    require_equal(back(got), want, "transpose_2d");
    for (std::size_t r = 0; r < std::min<std::size_t>(rows, 3); ++r)  // the oracle itself: out[c, r] = in[r, c]
      for (std::size_t c = 0; c < std::min<std::size_t>(cols, 3); ++c) REQUIRE(want[c * rows + r] == x[r * cols + c]);

    const std::size_t batch = 3;
    const host<T> xb = distinct<T>(batch * n);
    host<T> want_b = host_empty<T>(batch * n);
    device<T> got_b = device_empty<T>(batch * n);
    kernels<cpu>::transpose_2d_batched(batch, rows, cols, xb.data(), want_b.data());
    kernels<moekit::cuda>::transpose_2d_batched(batch, rows, cols, on_device(xb).data(), got_b.data());
    require_equal(back(got_b), want_b, "transpose_2d_batched");
  }
}

TEST_CASE("cuda kernels: transpose moves 16-bit values bit for bit", "[cuda][transpose]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  rng g(23);
  const std::size_t batch = 2, rows = 45, cols = 77, n = batch * rows * cols;
  const host<bf16> x = host_map<bf16>(random_host<float>(g, n), to_bf16{});
  host<bf16> want = host_empty<bf16>(n);
  device<bf16> got = device_empty<bf16>(n);
  kernels<cpu>::transpose_2d_batched(batch, rows, cols, x.data(), want.data());
  kernels<moekit::cuda>::transpose_2d_batched(batch, rows, cols, on_device(x).data(), got.data());
  const host<bf16> got_h = back(got);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) bad += got_h[i].bits != want[i].bits;
  REQUIRE(bad == 0);
}

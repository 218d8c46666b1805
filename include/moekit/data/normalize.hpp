// moekit/data/normalize.hpp — standardising a data set: (x - mean) / std,
// per feature or with one global mean and std, with the statistics computed
// from a training set (and then applied unchanged to the test set).
//
//   auto s = data::compute_global_stats(train.images);   // Fashion-MNIST: 0.286, 0.353
//   auto x = data::normalize(train.images, s);
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "../backend/cpu/parallel.hpp"
#include "../core/error.hpp"
#include "../tensor/ops/elementwise.hpp"
#include "../tensor/tensor.hpp"

namespace moekit::data {

/// One mean and standard deviation for every value.
template <class T>
struct global_stats {
  T mean, stddev;
};

/// A mean and standard deviation per feature (column).
template <class T, backend B = cpu>
struct feature_stats {
  tensor<T, shape<dyn>, B> mean;  // (features)
  tensor<T, shape<dyn>, B> stddev;  // (features)
};

namespace detail {

/// Per column c of the (rows, cols) matrix x: the sum over rows of f(c, x[r, c]),
/// accumulated in double. Threads split the columns, so the result does not
/// depend on the thread count.
template <class T, class F>
std::vector<double> column_sums(const T* x, std::size_t rows, std::size_t cols, F f) {
  std::vector<double> out(cols, 0.0);
  moekit::detail::parallel_for(cols, rows, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t r = 0; r < rows; ++r) {
      const T* row = x + r * cols;
      for (std::size_t c = lo; c < hi; ++c) out[c] += f(c, static_cast<double>(row[c]));
    }
  });
  return out;
}

inline double total(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

/// A constant feature has std 0: it is centred but not scaled (std 1), as
/// scikit-learn's StandardScaler does, rather than divided by zero.
inline double usable_std(double variance) { return variance > 0 ? std::sqrt(variance) : 1.0; }

template <class T, class S, class B>
void check_stats_input(const char* op, const tensor<T, S, B>& x) {
  static_assert(S::rank() == 2, "data statistics: x must be (examples, features)");
  static_assert(B::host_accessible, "data statistics are computed on the host: pass a cpu tensor");
  if (x.extent(0) == 0) throw value_error(std::string(op) + ": no examples in " + x.shape().str());
}

}  // namespace detail

/// Mean and (population) standard deviation of each column of x (n, features).
template <class T, class S, class B>
feature_stats<T, B> compute_feature_stats(const tensor<T, S, B>& x) {
  detail::check_stats_input("compute_feature_stats", x);
  const std::size_t n = x.extent(0), d = x.extent(1);
  const auto sums = detail::column_sums(x.data(), n, d, [](std::size_t, double v) { return v; });
  std::vector<double> mean(d);
  for (std::size_t c = 0; c < d; ++c) mean[c] = sums[c] / static_cast<double>(n);
  const auto squares = detail::column_sums(x.data(), n, d, [&](std::size_t c, double v) {
    return (v - mean[c]) * (v - mean[c]);
  });
  feature_stats<T, B> out{tensor<T, shape<dyn>, B>(shape<dyn>{d}), tensor<T, shape<dyn>, B>(shape<dyn>{d})};
  for (std::size_t c = 0; c < d; ++c) {
    out.mean[c] = static_cast<T>(mean[c]);
    out.stddev[c] = static_cast<T>(detail::usable_std(squares[c] / static_cast<double>(n)));
  }
  return out;
}

/// Mean and (population) standard deviation over every value of x (n, features).
template <class T, class S, class B>
global_stats<T> compute_global_stats(const tensor<T, S, B>& x) {
  detail::check_stats_input("compute_global_stats", x);
  const std::size_t n = x.extent(0), d = x.extent(1);
  const double count = static_cast<double>(n) * static_cast<double>(d);
  const double mean = detail::total(detail::column_sums(x.data(), n, d, [](std::size_t, double v) { return v; })) / count;
  const double squares =
      detail::total(detail::column_sums(x.data(), n, d, [&](std::size_t, double v) { return (v - mean) * (v - mean); }));
  return {static_cast<T>(mean), static_cast<T>(detail::usable_std(squares / count))};
}

/// (x - mean) / stddev with one mean and stddev per feature (the last axis of x).
/// value_error when a stddev is not positive (checked for host tensors).
template <class T, class S, class SM, class SS, class B>
tensor<T, S, B> normalize(const tensor<T, S, B>& x, const tensor<T, SM, B>& mean, const tensor<T, SS, B>& stddev) {
  if constexpr (B::host_accessible) {
    for (std::size_t i = 0; i < stddev.size(); ++i)
      if (!(stddev[i] > T(0)) || !std::isfinite(stddev[i]))
        throw value_error("normalize: stddev[" + std::to_string(i) + "] = " +
                          std::to_string(static_cast<double>(stddev[i])) + " is not a positive number");
  }
  return div_rows(sub_rows(x, mean), stddev);
}

/// (x - mean) / stddev with one mean and stddev for every value.
template <class T, class S, class B>
tensor<T, S, B> normalize(const tensor<T, S, B>& x, std::type_identity_t<T> mean, std::type_identity_t<T> stddev) {
  if (!(stddev > T(0)) || !std::isfinite(stddev))
    throw value_error("normalize: stddev = " + std::to_string(static_cast<double>(stddev)) + " is not a positive number");
  return (x - mean) / stddev;
}

template <class T, class S, class B>
tensor<T, S, B> normalize(const tensor<T, S, B>& x, const feature_stats<T, B>& s) {
  return normalize(x, s.mean, s.stddev);
}
template <class T, class S, class B>
tensor<T, S, B> normalize(const tensor<T, S, B>& x, const global_stats<T>& s) {
  return normalize(x, s.mean, s.stddev);
}

}  // namespace moekit::data

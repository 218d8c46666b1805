// moekit/tensor/ops/loss.hpp — the tensor-level pieces of the losses in
// autograd/ops/loss.hpp: shape and label checks, and the per-row functors that
// every backend's generate kernel applies (forward rows and backward elements).
//
// Every loss is computed as "rows": one weighted value per row (per element for
// mse) whose plain sum is the reduced loss. The weight folds in the reduction
// (1/N for mean, 1 for sum and none) and any other constant factor, so the
// backward of row i is always weight * dy[i * dy_stride] (dy_stride 0 for a
// scalar loss, 1 for reduction::none).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

#include "../../core/config.hpp"
#include "../../core/host_device.hpp"
#include "../tensor.hpp"
#include "creation.hpp"
#include "elementwise.hpp"
#include "reduce.hpp"

namespace moekit {

/// How a loss combines its rows: PyTorch's `reduction` argument. kl_div's
/// `mean` is PyTorch's 'batchmean' (sum / rows).
enum class reduction { mean, sum, none };

/// The type of a loss over rows of shape RowShape: a scalar, or the rows themselves for none.
template <reduction R, class RowShape>
using loss_shape_t = std::conditional_t<R == reduction::none, RowShape, scalar_shape>;

namespace fn {

/// Whether label y adds to the loss: not ignore_index and a class in [0, cols).
/// Host labels are validated before any kernel runs (value_error); device
/// labels cannot be without a device-to-host copy, so there an out-of-range
/// label is treated like ignore_index (adds nothing, leaves mean's
/// denominator) instead of being read out of bounds.
MOEKIT_HOST_DEVICE inline bool label_counts(index_t y, index_t ignore, std::size_t cols) {
  return y != ignore && y >= 0 && static_cast<std::size_t>(y) < cols;
}

/// One set of class labels and its weight in the loss: a device scalar, so
/// that `mean`'s data-dependent denominator (rows not ignored) stays on the device.
template <class T>
struct label_set {
  const index_t* labels;
  const T* weight;
};

/// Row i of the (label-smoothed) negative log-likelihood, summed over K label sets:
///   Σ_k weight_k · [(1-ε)(-logp[i, y_k]) + ε/C · Σ_c(-logp[i, c])], 0 where y_k is ignored.
/// `row_sum` (Σ_c logp[i, c]) is read only when ε > 0.
template <class T, std::size_t K>
struct nll_rows {
  const T* logp;
  const T* row_sum;
  std::size_t cols;
  T eps;
  index_t ignore;
  label_set<T> sets[K];
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    T out = 0;
    for (std::size_t k = 0; k < K; ++k) {
      const index_t y = sets[k].labels[i];
      if (!label_counts(y, ignore, cols)) continue;
      T row = (T(1) - eps) * logp[i * cols + static_cast<std::size_t>(y)];
      if (eps != T(0)) row += eps / static_cast<T>(cols) * row_sum[i];
      out -= *sets[k].weight * row;
    }
    return out;
  }
};

/// d logits[i, c] of nll_rows over log_softmax(logits): Σ_k g_k · (p[i, c] - t_k[i, c]),
/// t_k the smoothed one-hot target, g_k = weight_k · dy, p = exp(logp).
template <class T, std::size_t K>
struct cross_entropy_backward {
  const T* logp;
  const T* dy;
  std::size_t dy_stride, cols;
  T eps;
  index_t ignore;
  label_set<T> sets[K];
  MOEKIT_HOST_DEVICE T operator()(std::size_t f) const {
    const std::size_t i = f / cols, c = f % cols;
    const T p = std::exp(logp[f]), g = dy[i * dy_stride];
    T out = 0;
    for (std::size_t k = 0; k < K; ++k) {
      const index_t y = sets[k].labels[i];
      if (!label_counts(y, ignore, cols)) continue;
      const T target = eps / static_cast<T>(cols) + (c == static_cast<std::size_t>(y) ? T(1) - eps : T(0));
      out += *sets[k].weight * g * (p - target);
    }
    return out;
  }
};

/// d logp[i, c] of nll_rows without smoothing: -weight · dy at the label, 0 elsewhere.
template <class T>
struct nll_backward {
  const T* dy;
  std::size_t dy_stride, cols;
  index_t ignore;
  label_set<T> set;
  MOEKIT_HOST_DEVICE T operator()(std::size_t f) const {
    const std::size_t i = f / cols;
    const index_t y = set.labels[i];
    if (!label_counts(y, ignore, cols) || f % cols != static_cast<std::size_t>(y)) return T(0);
    return -*set.weight * dy[i * dy_stride];
  }
};

/// 1 where the label counts (label_counts), 0 where it is ignore_index.
template <class T>
struct kept_label {
  const index_t* labels;
  index_t ignore;
  std::size_t cols;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const { return label_counts(labels[i], ignore, cols) ? T(1) : T(0); }
};

/// λ / kept for mean: 0 when every row is ignored (PyTorch would give NaN).
template <class T>
struct mean_weight {
  T lambda;
  MOEKIT_HOST_DEVICE T operator()(T kept) const { return kept > T(0) ? lambda / kept : T(0); }
};

/// Row i of cross entropy against soft targets t, smoothed to t' = (1-ε)t + ε/C:
///   weight · Σ_c(-t'[i, c] logp[i, c]) = -weight · [(1-ε) Σ_c t logp + ε/C · Σ_c logp].
template <class T>
struct soft_cross_entropy_rows {
  const T* logp;
  const T* target;
  const T* row_sum;
  std::size_t cols;
  T eps, weight;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    T dot = 0;
    for (std::size_t c = 0; c < cols; ++c) dot += target[i * cols + c] * logp[i * cols + c];
    return -weight * ((T(1) - eps) * dot + eps / static_cast<T>(cols) * row_sum[i]);
  }
};

/// d logits[i, c] of soft_cross_entropy_rows: weight · dy · (p Σ_c t' - t'), with
/// Σ_c t' = (1-ε) Σ_c t + ε (targets need not sum to one).
template <class T>
struct soft_cross_entropy_backward {
  const T* logp;
  const T* target;
  const T* target_sum;
  const T* dy;
  std::size_t dy_stride, cols;
  T eps, weight;
  MOEKIT_HOST_DEVICE T operator()(std::size_t f) const {
    const std::size_t i = f / cols;
    const T t = (T(1) - eps) * target[f] + eps / static_cast<T>(cols);
    const T t_sum = (T(1) - eps) * target_sum[i] + eps;
    return weight * dy[i * dy_stride] * (std::exp(logp[f]) * t_sum - t);
  }
};

/// Row i of KL(p || q) = Σ_c p (log p - log q), with 0 · log 0 := 0. `logp` may be
/// null (then log p is computed from p), and the row is scaled by `weight`.
template <class T>
struct kl_rows {
  const T* logq;
  const T* p;
  const T* logp;
  std::size_t cols;
  T weight;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    T out = 0;
    for (std::size_t f = i * cols; f < (i + 1) * cols; ++f)
      if (p[f] > T(0)) out += p[f] * ((logp ? logp[f] : std::log(p[f])) - logq[f]);
    return weight * out;
  }
};

/// d log_q of weight · KL(p || q) where log q is the input itself: -weight · dy · p.
template <class T>
struct kl_input_backward {
  const T* p;
  const T* dy;
  std::size_t dy_stride, cols;
  T weight;
  MOEKIT_HOST_DEVICE T operator()(std::size_t f) const { return -weight * dy[f / cols * dy_stride] * p[f]; }
};

/// d s of weight · KL(p || softmax(s / τ)): weight/τ · dy · (q Σ_c p - p), q = exp(logq).
template <class T>
struct kl_student_backward {
  const T* logq;
  const T* p;
  const T* p_sum;
  const T* dy;
  std::size_t dy_stride, cols;
  T weight_over_tau;
  MOEKIT_HOST_DEVICE T operator()(std::size_t f) const {
    const std::size_t i = f / cols;
    return weight_over_tau * dy[i * dy_stride] * (std::exp(logq[f]) * p_sum[i] - p[f]);
  }
};

/// d t of weight · KL(softmax(t / τ) || q): weight/τ · dy · p (log p - log q - KL_i),
/// KL_i the unweighted row divergence.
template <class T>
struct kl_teacher_backward {
  const T* logq;
  const T* p;
  const T* logp;
  const T* kl;
  const T* dy;
  std::size_t dy_stride, cols;
  T weight_over_tau;
  MOEKIT_HOST_DEVICE T operator()(std::size_t f) const {
    const std::size_t i = f / cols;
    return weight_over_tau * dy[i * dy_stride] * p[f] * (logp[f] - logq[f] - kl[i]);
  }
};

/// weight · (a - b)².
template <class T>
struct weighted_square {
  T weight;
  MOEKIT_HOST_DEVICE T operator()(T d) const { return weight * d * d; }
};
/// d a of weight · (a - b)²: 2 weight · (a - b) · dy.
template <class T>
struct squared_error_backward {
  T weight;
  MOEKIT_HOST_DEVICE T operator()(T d, T dy) const { return T(2) * weight * d * dy; }
};

}  // namespace fn

namespace detail {

/// Rank-2 (rows, classes) logits; `classes` must be non-zero.
template <class S>
void check_loss_classes(const char* op, const S& s) {
  static_assert(S::rank() == 2, "loss: logits must be (rows, classes)");
  if (s.extent(1) == 0) throw shape_error(std::string(op) + ": logits " + s.str() + " have no classes");
}

/// Logits (N, C) and labels (N): row counts agree and every label is in [0, C)
/// or ignore_index. Labels are validated where they are host-accessible; on a
/// device that check would need a device-to-host copy, which no op hides, so
/// the loss functors skip out-of-range device labels (fn::label_counts).
/// Validate device labels on the host before moving them, or pass host labels
/// (the loss overloads taking cpu labels check and then move them).
template <class SX, class SY, class B>
void check_loss_labels(const char* op, const SX& logits, const tensor<index_t, SY, B>& labels, index_t ignore) {
  static_assert(SY::rank() == 1, "loss: labels must be (rows)");
  static_assert(extents_match<SX::static_extent(0), SY::static_extent(0)>::value, "loss: row counts differ");
  check_loss_classes(op, logits);
  if (labels.extent(0) != logits.extent(0))
    shape_mismatch(op, "logits " + logits.str(), " vs ", "labels " + labels.shape().str(), "row counts differ");
  if constexpr (B::host_accessible) {
    const auto classes = static_cast<index_t>(logits.extent(1));
    for (std::size_t i = 0; i < labels.size(); ++i) {
      const index_t y = labels[i];
      if (y != ignore && (y < 0 || y >= classes))
        throw value_error(std::string(op) + ": label " + std::to_string(y) + " at row " + std::to_string(i) +
                          " is outside [0, " + std::to_string(classes) + ") and is not ignore_index (" +
                          std::to_string(ignore) + ")");
    }
  }
}

/// A ratio in [0, 1] (label smoothing, the mixing weight).
inline void check_loss_ratio(const char* op, const char* what, double v) {
  if (!(v >= 0 && v <= 1))
    throw value_error(std::string(op) + ": " + what + " must be in [0, 1], got " + std::to_string(v));
}

/// The weight of one label set's rows: λ / (rows whose label counts) for mean, λ otherwise.
template <reduction R, class T, class SY, class B>
tensor<T, scalar_shape, B> loss_label_weight(const tensor<index_t, SY, B>& labels, index_t ignore, std::size_t cols,
                                             T lambda) {
  if constexpr (R != reduction::mean) {
    return full<T, B>(scalar_shape{}, lambda);
  } else {
    tensor<T, SY, B> kept(labels.shape());  // (N)
    kernels<B>::generate(kept.size(), kept.data(), fn::kept_label<T>{labels.data(), ignore, cols});
    return map(sum(kept), fn::mean_weight<T>{lambda});
  }
}

/// Where row i reads its output gradient: dy[i * dy_stride] (dy is a scalar unless none).
template <reduction R>
inline constexpr std::size_t dy_stride = R == reduction::none ? 1 : 0;

/// The weight of each row when N rows are reduced: 1/N for mean (0 for no rows), else 1.
template <reduction R, class T>
T loss_row_weight(std::size_t n) {
  return R == reduction::mean ? (n ? T(1) / static_cast<T>(n) : T(0)) : T(1);
}

/// Rows (N) or elements from a generate functor, of shape `s`.
template <class T, class B, class S, class F>
tensor<T, S, B> generate_loss(const S& s, F f) {
  tensor<T, S, B> out(s);
  kernels<B>::generate(out.size(), out.data(), f);
  return out;
}

/// The loss from its weighted rows: their sum, or the rows themselves for none.
template <reduction R, class T, class S, class B>
tensor<T, loss_shape_t<R, S>, B> reduce_loss(const tensor<T, S, B>& rows) {
  if constexpr (R == reduction::none) return rows;
  else return sum(rows);
}

/// The (N) shape of the rows of a (N, C) matrix shape, keeping N static where it is.
template <class S>
using loss_rows_t = shape<S::static_extent(0)>;
template <class S>
loss_rows_t<S> loss_rows(const S& s) {
  return loss_rows_t<S>::from_extents(std::array{s.extent(0)});
}

/// log_softmax over the rows of (N, C) x / τ (no copy of x when τ is 1).
template <class T, class S, class B>
tensor<T, S, B> log_softmax_scaled(const tensor<T, S, B>& x, T tau = T(1)) {
  tensor<T, S, B> out(x.shape());
  const T* in = x.data();
  tensor<T, S, B> scaled;
  if (tau != T(1)) {
    scaled = x * (T(1) / tau);
    in = scaled.data();
  }
  kernels<B>::log_softmax_rows(x.extent(0), x.extent(1), in, out.data());
  return out;
}

}  // namespace detail

}  // namespace moekit

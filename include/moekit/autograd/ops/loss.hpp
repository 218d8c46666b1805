// moekit/autograd/ops/loss.hpp — differentiable losses with PyTorch's
// definitions: cross_entropy (class labels, MixUp label pairs, soft targets),
// nll, kl_div (plain and the distillation form) and mse.
//
// Each loss is one fused tape node: the forward keeps only what its backward
// reads (log-probabilities, labels, weights) and the backward writes the input
// gradient directly, e.g. dlogits = (softmax - target) · dy / denominator.
//
// The reduction is a template argument because `none` changes the result's
// shape: `cross_entropy(logits, labels)` is a scalar, while
// `cross_entropy<reduction::none>(logits, labels)` is one loss per row (N)
// (for mse, one per element).
#pragma once

#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <string>

#include "../../tensor/ops/expand.hpp"
#include "../../tensor/ops/loss.hpp"
#include "../tape.hpp"
#include "constant.hpp"

namespace moekit {

struct cross_entropy_options {
  double label_smoothing = 0;   // ε in [0, 1]: the target is (1-ε)·one_hot + ε/C
  index_t ignore_index = -100;  // rows with this label add nothing and leave mean's denominator
};

struct nll_options {
  index_t ignore_index = -100;
};

/// Teacher probabilities for the distillation form of kl_div (as opposed to teacher logits).
template <class T, class S, class B>
struct probabilities {
  tensor<T, S, B> value;
};
template <class T, class S, class B>
probabilities(tensor<T, S, B>) -> probabilities<T, S, B>;

/// Where class labels of a loss on backend B may live: on B, or on the host
/// (validated there, then copied to B: the usual case for a device model fed
/// host batches).
template <class BL, class B>
concept label_backend = std::same_as<BL, B> || (std::same_as<BL, cpu> && transferable<cpu, B>);

namespace detail {

/// Cross entropy (log_softmax = true) or nll over the log-probabilities of
/// `x`, against K label sets mixed by `lambda`. One tape node; the label sets
/// are already checked.
template <reduction R, bool log_softmax, std::size_t K, class T, class S, class B>
var<T, loss_shape_t<R, loss_rows_t<S>>, B> label_loss(const char* op, const var<T, S, B>& x,
                                                      const std::array<tensor<index_t, shape<dyn>, B>, K>& labels,
                                                      const std::array<T, K>& lambda, T eps, index_t ignore) {
  tensor<T, S, B> logp = log_softmax ? log_softmax_scaled(x.value()) : x.value();  // (N, C)
  tensor<T, loss_rows_t<S>, B> row_sum;                                            // (N), read for ε > 0
  if (eps != T(0)) row_sum = sum<1>(logp);
  std::array<tensor<T, scalar_shape, B>, K> weight;
  fn::nll_rows<T, K> rows_fn{logp.data(), row_sum.data(), x.extent(1), eps, ignore, {}};
  for (std::size_t k = 0; k < K; ++k) {
    weight[k] = loss_label_weight<R>(labels[k], ignore, x.extent(1), lambda[k]);
    rows_fn.sets[k] = {labels[k].data(), weight[k].data()};
  }
  auto rows = generate_loss<T, B>(loss_rows(x.shape()), rows_fn);  // (N)

  if constexpr (log_softmax) {
    return record(op, reduce_loss<R>(rows), [x, logp, labels, weight, eps, ignore](const auto& dy) {
      fn::cross_entropy_backward<T, K> f{logp.data(), dy.data(), dy_stride<R>, x.extent(1), eps, ignore, {}};
      for (std::size_t k = 0; k < K; ++k) f.sets[k] = {labels[k].data(), weight[k].data()};
      x.accumulate(generate_loss<T, B>(x.shape(), f));
    }, x);
  } else {
    static_assert(K == 1, "nll: one label set");
    return record(op, reduce_loss<R>(rows), [x, labels, weight, ignore](const auto& dy) {
      fn::nll_backward<T> f{dy.data(), dy_stride<R>, x.extent(1), ignore, {labels[0].data(), weight[0].data()}};
      x.accumulate(generate_loss<T, B>(x.shape(), f));
    }, x);
  }
}

/// Checked labels on the loss's backend B, seen as (N) whatever their static
/// extent, so label sets of different shape types share one array. Host labels
/// for a device loss are range-checked on the host, then copied to B.
template <class B, class SX, class SY, class BL>
tensor<index_t, shape<dyn>, B> checked_labels(const char* op, const SX& logits, const tensor<index_t, SY, BL>& labels,
                                              index_t ignore) {
  check_loss_labels(op, logits, labels, ignore);
  return labels.reshape(shape<dyn>{labels.size()}).template to<B>();
}

/// Student and teacher (N, C) of one shape, and a usable temperature.
template <class SS, class ST, class T>
void check_distill(const SS& student, const ST& teacher, T tau) {
  (void)elementwise_result("kl_div", student, teacher);
  check_loss_classes("kl_div", student);
  if (!(tau > T(0)) || !std::isfinite(tau))
    throw value_error("kl_div: temperature must be positive and finite, got " + std::to_string(tau));
}

/// KL(p || softmax(s / τ)) · τ² with the teacher p given (and, for teacher
/// logits, their log-probabilities `logp` and the var they came from). The
/// caller has run check_distill.
template <reduction R, class T, class S, class ST, class B>
var<T, loss_shape_t<R, loss_rows_t<S>>, B> distill_kl(const var<T, S, B>& student, const var<T, ST, B>& teacher,
                                                       const tensor<T, ST, B>& p, const tensor<T, ST, B>& logp,
                                                       T tau) {
  const T weight = loss_row_weight<R, T>(student.extent(0)) * tau * tau;
  auto logq = log_softmax_scaled(student.value(), tau);  // (N, C)
  auto kl = generate_loss<T, B>(loss_rows(student.shape()),
                                fn::kl_rows<T>{logq.data(), p.data(), logp.defined() ? logp.data() : nullptr,
                                               student.extent(1), T(1)});  // (N), unweighted
  auto p_sum = sum<1>(p);                                                   // (N)

  const T grad_scale = weight / tau;  // d/ds = (1/τ) d/d(s/τ)
  return record("kl_div", reduce_loss<R>(kl * weight), [student, teacher, logq, p, logp, kl, p_sum,
                                                        grad_scale](const auto& dy) {
    const std::size_t cols = student.extent(1);
    if (student.requires_grad())
      student.accumulate(generate_loss<T, B>(student.shape(), fn::kl_student_backward<T>{
          logq.data(), p.data(), p_sum.data(), dy.data(), dy_stride<R>, cols, grad_scale}));
    if (teacher.requires_grad())
      teacher.accumulate(generate_loss<T, B>(p.shape(), fn::kl_teacher_backward<T>{
          logq.data(), p.data(), logp.data(), kl.data(), dy.data(), dy_stride<R>, cols, grad_scale}));
  }, student, teacher);
}

}  // namespace detail

// ---- cross entropy against class labels ---------------------------------------

/// torch.nn.functional.cross_entropy(logits, labels, ignore_index, label_smoothing):
/// row i adds (1-ε)(-log p_i[y_i]) + ε · mean_c(-log p_i[c]), p_i = softmax(logits_i);
/// rows labelled ignore_index add 0 and are not counted by mean. If every row is
/// ignored, mean is 0 (PyTorch returns NaN there, from 0/0).
/// (N, C) logits, (N) labels (on the logits' backend, or on the host) -> scalar,
/// or (N) for reduction::none.
template <reduction R = reduction::mean, class T, class S, class SY, class B, label_backend<B> BL>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> cross_entropy(const var<T, S, B>& logits,
                                                                 const tensor<index_t, SY, BL>& labels,
                                                                 const cross_entropy_options& opt = {}) {
  const char* op = "cross_entropy";
  detail::check_loss_ratio(op, "label_smoothing", opt.label_smoothing);
  return detail::label_loss<R, true, 1>(op, logits,
                                        {detail::checked_labels<B>(op, logits.shape(), labels, opt.ignore_index)},
                                        {T(1)}, static_cast<T>(opt.label_smoothing), opt.ignore_index);
}

/// MixUp / CutMix: λ · cross_entropy(logits, labels_a) + (1-λ) · cross_entropy(logits, labels_b),
/// each term with its own ignored rows and mean denominator; one tape node.
template <reduction R = reduction::mean, class T, class S, class SA, class SB, class B, label_backend<B> BA,
          label_backend<B> BB>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> cross_entropy_mix(const var<T, S, B>& logits,
                                                                     const tensor<index_t, SA, BA>& labels_a,
                                                                     const tensor<index_t, SB, BB>& labels_b,
                                                                     std::type_identity_t<T> lambda,
                                                                     const cross_entropy_options& opt = {}) {
  const char* op = "cross_entropy_mix";
  detail::check_loss_ratio(op, "label_smoothing", opt.label_smoothing);
  detail::check_loss_ratio(op, "lambda", static_cast<double>(lambda));
  return detail::label_loss<R, true, 2>(op, logits,
                                        {detail::checked_labels<B>(op, logits.shape(), labels_a, opt.ignore_index),
                                         detail::checked_labels<B>(op, logits.shape(), labels_b, opt.ignore_index)},
                                        {lambda, T(1) - lambda}, static_cast<T>(opt.label_smoothing),
                                        opt.ignore_index);
}

/// torch.nn.functional.nll_loss(log_probs, labels, ignore_index): row i adds
/// -log_probs[i, y_i]; ignored rows as in cross_entropy.
template <reduction R = reduction::mean, class T, class S, class SY, class B, label_backend<B> BL>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> nll(const var<T, S, B>& log_probs,
                                                       const tensor<index_t, SY, BL>& labels,
                                                       const nll_options& opt = {}) {
  const char* op = "nll";
  return detail::label_loss<R, false, 1>(op, log_probs,
                                         {detail::checked_labels<B>(op, log_probs.shape(), labels, opt.ignore_index)},
                                         {T(1)}, T(0), opt.ignore_index);
}

// ---- cross entropy against soft targets ----------------------------------------

/// torch.nn.functional.cross_entropy with class-probability targets t (N, C):
/// row i adds -Σ_c t'_ic log p_ic with t' = (1-ε)t + ε/C; mean divides by N.
/// `ignore_index` does not apply (as in PyTorch). No gradient flows to t.
template <reduction R = reduction::mean, class T, class S, class ST, class B>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> cross_entropy(const var<T, S, B>& logits,
                                                                 const tensor<T, ST, B>& target,
                                                                 const cross_entropy_options& opt = {}) {
  const char* op = "cross_entropy";
  (void)elementwise_result(op, logits.shape(), target.shape());
  detail::check_loss_classes(op, logits.shape());
  detail::check_loss_ratio(op, "label_smoothing", opt.label_smoothing);
  const T eps = static_cast<T>(opt.label_smoothing);
  const T weight = detail::loss_row_weight<R, T>(logits.extent(0));
  auto logp = detail::log_softmax_scaled(logits.value());  // (N, C)
  auto logp_sum = sum<1>(logp);                            // (N)
  auto rows = detail::generate_loss<T, B>(detail::loss_rows(logits.shape()), fn::soft_cross_entropy_rows<T>{
      logp.data(), target.data(), logp_sum.data(), logits.extent(1), eps, weight});  // (N)

  return record(op, detail::reduce_loss<R>(rows), [logits, logp, target, eps, weight](const auto& dy) {
    auto target_sum = sum<1>(target);  // (N)
    logits.accumulate(detail::generate_loss<T, B>(logits.shape(), fn::soft_cross_entropy_backward<T>{
        logp.data(), target.data(), target_sum.data(), dy.data(), detail::dy_stride<R>, logits.extent(1), eps,
        weight}));
  }, logits);
}

// ---- KL divergence -------------------------------------------------------------

/// torch.nn.functional.kl_div(input=log_q, target=p, reduction='batchmean'):
/// Σ_ic p (log p - log q) / N, with 0 · log 0 := 0. reduction::mean is
/// 'batchmean' (PyTorch's 'mean', which divides by N·C, is not offered);
/// reduction::none gives the per-row sums (N). No gradient flows to p.
template <reduction R = reduction::mean, class T, class S, class SP, class B>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> kl_div(const var<T, S, B>& log_q, const tensor<T, SP, B>& p) {
  const char* op = "kl_div";
  (void)elementwise_result(op, log_q.shape(), p.shape());
  detail::check_loss_classes(op, log_q.shape());
  const T weight = detail::loss_row_weight<R, T>(log_q.extent(0));
  auto rows = detail::generate_loss<T, B>(detail::loss_rows(log_q.shape()), fn::kl_rows<T>{
      log_q.value().data(), p.data(), nullptr, log_q.extent(1), weight});  // (N)

  return record(op, detail::reduce_loss<R>(rows), [log_q, p, weight](const auto& dy) {
    log_q.accumulate(detail::generate_loss<T, B>(log_q.shape(), fn::kl_input_backward<T>{
        p.data(), dy.data(), detail::dy_stride<R>, log_q.extent(1), weight}));
  }, log_q);
}

/// Knowledge distillation: KL(softmax(t/τ) || softmax(s/τ)) · τ², batchmean
/// (the τ² keeps gradient magnitudes independent of τ). Gradients flow to the
/// student logits s and, when they require grad, to the teacher logits t.
template <reduction R = reduction::mean, class T, class S, class ST, class B>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> kl_div(const var<T, S, B>& student_logits,
                                                          const var<T, ST, B>& teacher_logits,
                                                          std::type_identity_t<T> temperature) {
  detail::check_distill(student_logits.shape(), teacher_logits.shape(), temperature);
  auto logp = detail::log_softmax_scaled(teacher_logits.value(), temperature);  // (N, C)
  return detail::distill_kl<R>(student_logits, teacher_logits, exp(logp), logp, temperature);
}
/// The distillation form with constant teacher logits.
template <reduction R = reduction::mean, class T, class S, class ST, class B>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> kl_div(const var<T, S, B>& student_logits,
                                                          const tensor<T, ST, B>& teacher_logits,
                                                          std::type_identity_t<T> temperature) {
  return kl_div<R>(student_logits, constant(teacher_logits), temperature);
}
/// The distillation form with teacher probabilities p (already at temperature τ):
/// KL(p || softmax(s/τ)) · τ², 0 · log 0 := 0: `kl_div(s, probabilities{p}, tau)`.
template <reduction R = reduction::mean, class T, class S, class SP, class B>
var<T, loss_shape_t<R, detail::loss_rows_t<S>>, B> kl_div(const var<T, S, B>& student_logits,
                                                          const probabilities<T, SP, B>& teacher,
                                                          std::type_identity_t<T> temperature) {
  detail::check_distill(student_logits.shape(), teacher.value.shape(), temperature);
  return detail::distill_kl<R>(student_logits, constant(teacher.value), teacher.value, {}, temperature);
}

// ---- mean squared error --------------------------------------------------------

/// torch.nn.functional.mse_loss(a, b): mean (or sum) of (a - b)² over every
/// element; reduction::none gives the squared errors, shaped like a. Gradients
/// flow to both arguments.
template <reduction R = reduction::mean, class T, class SA, class SB, class B>
auto mse(const var<T, SA, B>& a, const var<T, SB, B>& b) {
  auto diff = zip("mse", a.value(), b.value(), fn::sub{});  // shaped like a and b
  const T weight = detail::loss_row_weight<R, T>(diff.size());
  return record("mse", detail::reduce_loss<R>(map(diff, fn::weighted_square<T>{weight})),
                [a, b, diff, weight](const auto& dy) {
    auto g = [&] {
      if constexpr (R == reduction::none) return dy;
      else return expand_scalar(dy, diff.shape());
    }();
    auto da = zip("mse", diff, g, fn::squared_error_backward<T>{weight});
    if (b.requires_grad()) b.accumulate(-da);
    a.accumulate(da);
  }, a, b);
}
/// mse against a constant target.
template <reduction R = reduction::mean, class T, class SA, class SB, class B>
auto mse(const var<T, SA, B>& a, const tensor<T, SB, B>& b) {
  return mse<R>(a, constant(b));
}

}  // namespace moekit

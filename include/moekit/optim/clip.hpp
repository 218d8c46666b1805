// moekit/optim/clip.hpp — global-norm gradient clipping as
// torch.nn.utils.clip_grad_norm_: the L2 norm of all gradients together, and
// when it exceeds max_norm, every gradient scaled by max_norm / (norm + 1e-6).
// The norm is summed in double, in fixed-size blocks added in order, so it
// does not depend on the thread count.
//
// On a device backend the blocks' sums of squares are reduced on the device
// (in the gradients' type, each block in order), and the one host read of the
// step brings those partial sums back to add them in double: clipping needs
// the norm on the host to return it as a double, which costs one wait for the
// device per call.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "../backend/cpu/parallel.hpp"
#include "../core/error.hpp"
#include "optimizer.hpp"

namespace moekit::optim {

struct clip_options {
  /// Throw value_error when the norm is inf or NaN (torch's error_if_nonfinite;
  /// otherwise the gradients are scaled by a NaN or zero factor, as torch does).
  bool error_if_nonfinite = false;
};

namespace detail {

/// Σ x[i]² in double over fixed blocks of 4096, blocks summed in order.
template <class T>
double sum_squares(const T* x, std::size_t n) {
  constexpr std::size_t block = 4096;
  std::vector<double> partial((n + block - 1) / block);
  moekit::detail::parallel_for(partial.size(), block, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t b = lo; b < hi; ++b) {
      const std::size_t end = std::min(n, (b + 1) * block);
      double acc = 0;
      for (std::size_t i = b * block; i < end; ++i) acc += static_cast<double>(x[i]) * static_cast<double>(x[i]);
      partial[b] = acc;
    }
  });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

/// acc + x²: the fold of a sum of squares.
struct add_square {
  template <class T>
  MOEKIT_HOST_DEVICE T operator()(T acc, T x) const {
    return acc + x * x;
  }
};

/// Σ x² over the gradients of device views: each gradient's blocks of 4096 are
/// folded on the device into one partial array, which is read back once and
/// added in double, block after block.
template <class T, class B, class ForEach>
double device_sum_squares(const ForEach& for_each) {
  constexpr std::size_t block = 4096;
  std::size_t blocks = 0;
  for_each([&](const auto& p) {
    if (p.grad.defined()) blocks += (p.grad.size() + block - 1) / block;
  });
  if (blocks == 0) return 0;
  tensor<T, shape<dyn>, B> partial(shape<dyn>{blocks});  // (blocks)
  std::size_t at = 0;
  for_each([&](const auto& p) {
    if (!p.grad.defined()) return;
    const std::size_t n = p.grad.size(), full = n / block, tail = n - full * block;
    kernels<B>::reduce_rows(full, block, p.grad.data(), partial.data() + at, T(0), add_square{});
    if (tail) kernels<B>::reduce_rows(1, tail, p.grad.data() + full * block, partial.data() + at + full, T(0), add_square{});
    at += full + (tail ? 1 : 0);
  });
  const auto host = partial.template to<cpu>();  // the one device-to-host read
  double total = 0;
  for (std::size_t i = 0; i < host.size(); ++i) total += static_cast<double>(host[i]);
  return total;
}

/// The clipping itself, over whatever for_each(f) visits (parameter_view<T, B>s).
template <class T, class B, class ForEach>
double clip_views(const ForEach& for_each, double max_norm, const clip_options& o) {
  if (!(max_norm >= 0)) throw value_error("clip_grad_norm: max_norm = " + std::to_string(max_norm) + " must be >= 0");
  double squares = 0;
  if constexpr (B::host_accessible) {
    for_each([&](const parameter_view<T, B>& p) {
      if (p.grad.defined()) squares += sum_squares(p.grad.data(), p.grad.size());
    });
  } else {
    squares = device_sum_squares<T, B>(for_each);
  }
  const double norm = std::sqrt(squares);
  if (o.error_if_nonfinite && !std::isfinite(norm))
    throw value_error("clip_grad_norm: the total gradient norm is " + std::to_string(norm) +
                      " (non-finite), so it cannot be clipped");
  const double coef = max_norm / (norm + 1e-6);
  if (!(coef >= 1.0)) for_each([&](const auto& p) { scale_grad(p, coef); });  // NaN scales too, as torch
  return norm;
}

}  // namespace detail

/// Clips the gradients of `views` to global L2 norm max_norm; returns the norm before clipping.
template <class T, class B>
double clip_grad_norm(const std::vector<parameter_view<T, B>>& views, double max_norm, const clip_options& o = {}) {
  return detail::clip_views<T, B>([&](auto&& f) { for (const auto& p : views) f(p); }, max_norm, o);
}
/// Clips the gradients of every parameter the optimizer updates.
template <class T, class O, class B>
double clip_grad_norm(const optimizer<T, O, B>& opt, double max_norm, const clip_options& o = {}) {
  return detail::clip_views<T, B>([&](auto&& f) { opt.for_each_param(f); }, max_norm, o);
}
/// Clips the gradients of every parameter of element type T under `model`:
/// `clip_grad_norm<float>(model, 1.0)`.
template <class T, backend B = cpu, parameterized M>
double clip_grad_norm(M& model, double max_norm, const clip_options& o = {}) {
  return clip_grad_norm(parameter_views<T, B>(model), max_norm, o);
}

}  // namespace moekit::optim

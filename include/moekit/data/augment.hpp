// moekit/data/augment.hpp — data augmentation, deterministic for a given rng:
//
// - MixUp (Zhang et al., ICLR 2018): x' = λ x + (1 - λ) x[partner] with
//   λ ~ Beta(α, α) and a random permutation as partner; train with
//   λ CE(logits, labels_a) + (1 - λ) CE(logits, labels_b).
// - Random crop with zero padding, then horizontal flip (the standard CIFAR
//   recipe) for images stored as rows of height * width * channels values,
//   channels last: value (r, c, ch) of an image is at (r * width + c) * channels + ch.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../backend/cpu/parallel.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../core/shape_rules.hpp"
#include "../tensor/ops/elementwise.hpp"
#include "../tensor/ops/index.hpp"
#include "../tensor/tensor.hpp"
#include "batching.hpp"

namespace moekit::data {

namespace detail {

/// log of a Gamma(a, 1) variate, by Marsaglia and Tsang (ACM TOMS 2000):
/// exact rejection sampling from normal and uniform draws of g. For a < 1,
/// Gamma(a) = Gamma(a + 1) U^(1/a), kept in logs so that small a cannot
/// underflow to 0.
inline double log_gamma_variate(double a, rng& g) {
  if (a < 1) {
    const double u = g.next_uniform<double>();
    return log_gamma_variate(a + 1, g) + std::log(u) / a;
  }
  const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    const double z = rng::normal_at<double>(g.seed(), g.advance(2), 0);
    const double v = 1.0 + c * z;
    if (v <= 0) continue;
    const double v3 = v * v * v;
    const double u = g.next_uniform<double>();
    if (std::log(u) < 0.5 * z * z + d - d * v3 + d * std::log(v3)) return std::log(d * v3);
  }
}

}  // namespace detail

/// A Beta(a, b) variate in [0, 1]: X / (X + Y) for X ~ Gamma(a), Y ~ Gamma(b).
inline double sample_beta(double a, double b, rng& g) {
  if (!(a > 0) || !(b > 0) || !std::isfinite(a) || !std::isfinite(b))
    throw value_error("sample_beta: parameters " + std::to_string(a) + ", " + std::to_string(b) +
                      " must be positive and finite");
  const double log_x = detail::log_gamma_variate(a, g), log_y = detail::log_gamma_variate(b, g);
  return 1.0 / (1.0 + std::exp(log_y - log_x));
}

/// A MixUp batch: the mixed inputs, both label sets and the mixing weight.
template <class T, class S, backend B = cpu>
struct mixup_batch {
  tensor<T, S, B> x;                        // (n, ...) λ x + (1 - λ) x[partner]
  tensor<index_t, shape<dyn>, B> labels_a;  // (n) the labels (shares their storage)
  tensor<index_t, shape<dyn>, B> labels_b;  // (n) labels[partner]
  tensor<index_t, shape<dyn>, B> partner;   // (n) the example each one is mixed with (a permutation)
  T lambda;                                 // λ ~ Beta(alpha, alpha)
};

/// MixUp of a batch x (n, ...) with labels (n): draws λ ~ Beta(alpha, alpha),
/// then a random permutation, from g.
template <class T, class S, class SL, class B>
mixup_batch<T, S, B> mixup(const tensor<T, S, B>& x, const tensor<index_t, SL, B>& labels, double alpha, rng& g) {
  static_assert(B::host_accessible, "mixup: draws its permutation on the host; pass cpu tensors");
  static_assert(SL::rank() == 1, "mixup: labels must have rank 1, one per example");
  const std::size_t n = x.extent(0);
  if (labels.extent(0) != n)
    moekit::detail::shape_mismatch("mixup", x.shape().str(), " with labels ", labels.shape().str(),
                                   "one label per example");
  if (!(alpha > 0) || !std::isfinite(alpha))
    throw value_error("mixup: alpha = " + std::to_string(alpha) + " must be positive and finite");
  const T lambda = static_cast<T>(sample_beta(alpha, alpha, g));
  auto partner = shuffled_indices(n, g);  // (n)
  auto flat_labels = labels.reshape(shape<dyn>{n});
  auto mixed = lambda * x + (T(1) - lambda) * moekit::detail::gather_rows("mixup", x, partner);
  return {shape_cast<S>(mixed), flat_labels,
          moekit::detail::gather_rows("mixup", flat_labels, partner), partner, lambda};
}

/// How a row of values is an image: height x width x channels, channels last.
struct image_layout {
  std::size_t height, width, channels = 1;
  std::size_t size() const noexcept { return height * width * channels; }
};

struct crop_flip_options {
  std::size_t padding = 4;        // zeros added on every side before cropping back to height x width
  double flip_probability = 0.5;  // chance that an image is mirrored left to right
};

namespace detail {

/// out(r, c) = in(r + dy, (flip ? W - 1 - c : c) + dx), zero outside the image:
/// a crop of the zero-padded image at offset (dy + p, dx + p), then a mirror.
struct shift_flip {
  std::ptrdiff_t dy = 0, dx = 0;
  bool flip = false;
};

template <class T>
void shift_flip_image(const T* in, T* out, const image_layout& im, shift_flip s) {
  const auto h = static_cast<std::ptrdiff_t>(im.height), w = static_cast<std::ptrdiff_t>(im.width);
  const std::size_t ch = im.channels;
  for (std::ptrdiff_t r = 0; r < h; ++r) {
    const std::ptrdiff_t from_r = r + s.dy;
    for (std::ptrdiff_t c = 0; c < w; ++c) {
      const std::ptrdiff_t from_c = (s.flip ? w - 1 - c : c) + s.dx;
      T* o = out + static_cast<std::size_t>(r * w + c) * ch;
      const bool inside = from_r >= 0 && from_r < h && from_c >= 0 && from_c < w;
      const T* i = in + static_cast<std::size_t>(inside ? from_r * w + from_c : 0) * ch;
      for (std::size_t k = 0; k < ch; ++k) o[k] = inside ? i[k] : T(0);
    }
  }
}

/// Applies shift_flip `of(i)` to every image i of x (n, H * W * C); images are
/// independent, so threads split them without changing the result.
template <class T, class S, class B, class Of>
tensor<T, S, B> transform_images(const char* op, const tensor<T, S, B>& x, const image_layout& im, Of of) {
  static_assert(S::rank() == 2, "image transforms: x must be (images, height * width * channels)");
  static_assert(B::host_accessible, "image transforms run on the host: pass a cpu tensor");
  if (x.extent(1) != im.size())
    throw shape_error(std::string(op) + ": rows of " + x.shape().str() + " hold " + std::to_string(x.extent(1)) +
                      " values, not " + std::to_string(im.height) + " x " + std::to_string(im.width) + " x " +
                      std::to_string(im.channels) + " images");
  tensor<T, S, B> out(x.shape());
  moekit::detail::parallel_for(x.extent(0), im.size(), [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) shift_flip_image(x.data() + i * im.size(), out.data() + i * im.size(), im, of(i));
  });
  return out;
}

}  // namespace detail

/// Every image mirrored left to right.
template <class T, class S, class B>
tensor<T, S, B> flip_horizontal(const tensor<T, S, B>& x, const image_layout& im) {
  return detail::transform_images("flip_horizontal", x, im, [](std::size_t) { return detail::shift_flip{0, 0, true}; });
}

/// Each image padded with `padding` zeros on every side, cropped back to its
/// size at a uniformly random offset, then mirrored with `flip_probability`.
/// Image i uses words offset + 5i ... + 5i + 4 of g (g advances by 5n), so the
/// result depends only on g's state.
template <class T, class S, class B>
tensor<T, S, B> random_crop_flip(const tensor<T, S, B>& x, const image_layout& im, const crop_flip_options& opt,
                                 rng& g) {
  if (!(opt.flip_probability >= 0 && opt.flip_probability <= 1))
    throw value_error("random_crop_flip: flip_probability = " + std::to_string(opt.flip_probability) +
                      " is outside [0, 1]");
  const std::uint64_t seed = g.seed(), offset = g.advance(5 * x.extent(0));
  const std::uint64_t positions = 2 * opt.padding + 1;
  const auto pad = static_cast<std::ptrdiff_t>(opt.padding);
  return detail::transform_images("random_crop_flip", x, im, [&](std::size_t i) {
    const std::uint64_t w = offset + 5 * i;
    return detail::shift_flip{static_cast<std::ptrdiff_t>(detail::random_below(seed, w, positions)) - pad,
                              static_cast<std::ptrdiff_t>(detail::random_below(seed, w + 2, positions)) - pad,
                              rng::uniform_at<double>(seed, w + 4) <= opt.flip_probability};
  });
}

}  // namespace moekit::data

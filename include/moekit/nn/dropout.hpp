// moekit/nn/dropout.hpp — inverted dropout as a layer: it holds p, its own
// random stream (seeded at construction, advanced by every training call, so
// a run is reproducible from the seed) and a training flag; in eval mode it is
// the identity. No parameters.
#pragma once

#include <cstdint>

#include "../autograd/ops/dropout.hpp"
#include "../core/random.hpp"

namespace moekit::nn {

class dropout {
 public:
  /// p in [0, 1) (value_error otherwise).
  explicit dropout(double p = 0.5, std::uint64_t seed = 0) : p_(p), g_(seed) { detail::check_dropout_p("dropout", p); }

  /// x with each element zeroed with probability p and the rest scaled by 1/(1-p); x itself in eval mode.
  template <class T, class S, class B>
  var<T, S, B> operator()(const var<T, S, B>& x) {
    return moekit::dropout(x, static_cast<T>(p_), g_, training_);
  }

  void train() noexcept { training_ = true; }
  void eval() noexcept { training_ = false; }
  void set_training(bool on) noexcept { training_ = on; }
  bool training() const noexcept { return training_; }
  double p() const noexcept { return p_; }
  /// The stream masks are drawn from (its offset says how many words were used).
  rng& generator() noexcept { return g_; }

  template <class V>
  void parameters(V&&) {}

 private:
  double p_;
  rng g_;
  bool training_ = true;
};

}  // namespace moekit::nn

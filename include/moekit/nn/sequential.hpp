// moekit/nn/sequential.hpp — flat composition: sequential<A, B, C> applies its
// layers in order (a fold, not nested types); repeat<N, L> holds N layers of
// one type (N may be dyn); residual<L> adds its input to L's output. Parameter
// names: a sequential's and a repeat's children are "0", "1", ...; residual is
// transparent.
#pragma once

#include <cstddef>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../autograd/ops/arithmetic.hpp"
#include "../core/error.hpp"
#include "../core/shape.hpp"

namespace moekit::nn {

template <class... Layers>
class sequential {
 public:
  explicit sequential(Layers... layers) : layers_(std::move(layers)...) {}

  template <class X>
  auto operator()(const X& x) {
    return apply<0>(x);
  }

  template <std::size_t I>
  auto& get() noexcept {
    return std::get<I>(layers_);
  }
  static constexpr std::size_t size() noexcept { return sizeof...(Layers); }

  template <class V>
  void parameters(V&& visit) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (visit(std::to_string(I), std::get<I>(layers_)), ...);
    }(std::index_sequence_for<Layers...>{});
  }

 private:
  template <std::size_t I, class X>
  auto apply(const X& x) {
    if constexpr (I == sizeof...(Layers)) return x;
    else return apply<I + 1>(std::get<I>(layers_)(x));
  }
  std::tuple<Layers...> layers_;
};

/// N layers of type L applied in order; the output type must equal the input type.
template <std::size_t N, class L>
class repeat {
 public:
  /// make(i) builds layer i.
  template <class Make>
  explicit repeat(Make&& make, std::size_t n = N) {
    if (N != dyn && n != N) throw value_error("repeat: " + std::to_string(n) + " layers for repeat<" +
                                              std::to_string(N) + ">");
    layers_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) layers_.push_back(make(i));
  }

  template <class X>
  X operator()(const X& x) {
    X h = x;
    for (auto& l : layers_) h = l(h);
    return h;
  }

  L& operator[](std::size_t i) noexcept { return layers_[i]; }
  std::size_t size() const noexcept { return layers_.size(); }

  template <class V>
  void parameters(V&& visit) {
    for (std::size_t i = 0; i < layers_.size(); ++i) visit(std::to_string(i), layers_[i]);
  }

 private:
  std::vector<L> layers_;
};

/// x + inner(x).
template <class L>
class residual {
 public:
  explicit residual(L inner) : inner_(std::move(inner)) {}

  template <class X>
  X operator()(const X& x) {
    return x + inner_(x);
  }
  L& inner() noexcept { return inner_; }

  template <class V>
  void parameters(V&& visit) {
    inner_.parameters(visit);
  }

 private:
  L inner_;
};

}  // namespace moekit::nn

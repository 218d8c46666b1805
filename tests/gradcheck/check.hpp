// tests/gradcheck/check.hpp — what every gradcheck test file shares: random
// double inputs and the assertion that prints the first disagreeing element.
#pragma once

#include <catch2/catch.hpp>

#include <moekit/autograd/gradcheck.hpp>
#include <moekit/tensor/ops/creation.hpp>

namespace moekit::testing {

template <class S>
tensor<double, S> randn(rng& g, const S& s) {
  return normal<double>(g, s);
}
/// Strictly positive inputs for log, sqrt, pow and division.
template <class S>
tensor<double, S> positive(rng& g, const S& s) {
  return uniform<double>(g, s, 0.5, 2.0);
}

}  // namespace moekit::testing

/// REQUIRE that check_gradients(args...) passes and compared something.
#define REQUIRE_GRADIENTS(...)                    \
  do {                                            \
    auto r_ = ::moekit::check_gradients(__VA_ARGS__); \
    INFO(r_.message);                             \
    REQUIRE(r_.ok);                               \
    REQUIRE(r_.checked > 0);                      \
  } while (0)

/// REQUIRE that check_parameter_gradients(model, f, ...) passes and compared something.
#define REQUIRE_PARAMETER_GRADIENTS(...)                          \
  do {                                                            \
    auto r_ = ::moekit::check_parameter_gradients(__VA_ARGS__);   \
    INFO(r_.message);                                             \
    REQUIRE(r_.ok);                                               \
    REQUIRE(r_.checked > 0);                                      \
  } while (0)

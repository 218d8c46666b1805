// tests/support/compare.hpp — the largest absolute difference of two tensors
// or vectors of the same size (anything with data() and size()), in double.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace moekit::testing {

template <class A, class B>
double max_diff(const A& a, const B& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i])));
  return m;
}

}  // namespace moekit::testing

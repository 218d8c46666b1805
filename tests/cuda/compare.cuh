// tests/cuda/compare.cuh — what the layer-level CUDA tests share: results
// copied to the host as doubles, and a closeness check scaled to the largest
// expected value.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <moekit/cuda.hpp>

namespace moekit::testing {

/// Any tensor's values on the host, as doubles.
template <class X>
std::vector<double> host_values(const X& t) {
  const auto h = t.template to<moekit::cpu>();
  return std::vector<double>(h.data(), h.data() + h.size());
}

/// |got - want| <= rtol·|want| + margin·max|want| everywhere (exact when both are 0).
inline void require_close(const std::vector<double>& got, const std::vector<double>& want, const std::string& what,
                          double rtol = 1e-4, double margin = 1e-5) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("at " << i << ": " << got[i] << " vs " << want[i] << " (largest |value| " << scale << ")");
    REQUIRE(std::abs(got[i] - want[i]) <= rtol * std::abs(want[i]) + margin * scale);
  }
}

}  // namespace moekit::testing

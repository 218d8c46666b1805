// expect: matmul: inner dimensions differ
// Static inner extents that differ (3 vs 4) must not compile, and the
// diagnostic must name the rule.
#include <moekit.hpp>

int main() {
  auto a = moekit::zeros<float>(moekit::shape<2, 3>{});
  auto b = moekit::zeros<float>(moekit::shape<4, 5>{});
  auto c = moekit::matmul(a, b);
  return static_cast<int>(c.size());
}

// expect: matmul: inner dimensions differ
// The same rule holds for differentiable vars and parameters.
#include <moekit.hpp>

int main() {
  moekit::tape t;
  moekit::parameter<float, moekit::shape<8, 4>> w(moekit::zeros<float>(moekit::shape<8, 4>{}));
  auto x = t.input(moekit::zeros<float>(moekit::shape<moekit::dyn, 6>{3}));
  auto y = moekit::matmul(x, w);
  return static_cast<int>(y.size());
}

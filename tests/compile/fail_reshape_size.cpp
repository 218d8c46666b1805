// expect: reshape: sizes differ
// Reshaping between static shapes of different sizes must not compile.
#include <moekit.hpp>

int main() {
  auto a = moekit::zeros<float>(moekit::shape<2, 3>{});
  auto b = a.reshape<moekit::shape<4, 2>>();
  return static_cast<int>(b.size());
}

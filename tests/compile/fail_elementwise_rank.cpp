// expect: elementwise: ranks differ
// Element-wise ops need equal ranks; broadcasting is explicit (add_rows, add_cols).
#include <moekit.hpp>

int main() {
  auto a = moekit::zeros<float>(moekit::shape<2, 3>{});
  auto b = moekit::zeros<float>(moekit::shape<3>{});
  auto c = a * b;
  return static_cast<int>(c.size());
}

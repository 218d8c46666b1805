// expect: elementwise: extents differ
// Adding (2, 3) and (2, 4), both static, must not compile.
#include <moekit.hpp>

int main() {
  auto a = moekit::zeros<float>(moekit::shape<2, 3>{});
  auto b = moekit::zeros<float>(moekit::shape<2, 4>{});
  auto c = a + b;
  return static_cast<int>(c.size());
}

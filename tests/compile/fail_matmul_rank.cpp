// expect: matmul: operands must have rank 2
// matmul takes matrices; batches go through bmm.
#include <moekit.hpp>

int main() {
  auto a = moekit::zeros<float>(moekit::shape<2, 3, 4>{});
  auto b = moekit::zeros<float>(moekit::shape<4, 5>{});
  auto c = moekit::matmul(a, b);
  return static_cast<int>(c.size());
}

// Positive control for the compile-fail tests: the same expressions with
// fitting shapes compile, and dyn extents defer the check to run time.
#include <moekit.hpp>

int main() {
  using namespace moekit;
  auto a = zeros<float>(shape<2, 3>{});
  auto b = zeros<float>(shape<3, 5>{});
  auto c = matmul(a, b) + zeros<float>(shape<dyn, 5>{2});
  auto d = a.reshape<shape<3, 2>>();
  try {
    (void)matmul(zeros<float>(shape<dyn, dyn>{2, 4}), b);  // run-time mismatch
    return 1;
  } catch (const shape_error&) {
  }
  return c.size() == 10 && d.size() == 6 ? 0 : 1;
}

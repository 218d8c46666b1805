// expect: host_accessible
// A tensor on a device backend cannot be indexed from the host: the element
// lives in device memory. (emulated_device stands in for cuda here.)
#include <moekit.hpp>

int main() {
  auto x = moekit::zeros<float, moekit::emulated_device>(moekit::shape<4>{});
  return static_cast<int>(x[0]);
}

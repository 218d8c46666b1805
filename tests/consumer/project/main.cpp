// Uses moekit through the umbrella header only; see CMakeLists.txt beside it.
#include <moekit.hpp>

int main() {
  moekit::shape<2, moekit::dyn> s{3};
  return s.size() == 6 ? 0 : 1;
}

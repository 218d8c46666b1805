// Positive control for tests/compile: the umbrella header compiles on its own
// with the same flags as the compile-fail tests.
#include <moekit.hpp>

int main() { return 0; }

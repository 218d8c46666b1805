// expect: not declared|undeclared
// Self-test of the compile-fail machinery (tests/compile/expect_failure.cmake):
// calling a function that does not exist must fail to compile with a
// "not declared" (g++) or "undeclared identifier" (clang) error.
#include <moekit.hpp>

int main() { return moekit_selftest_function_that_does_not_exist(); }

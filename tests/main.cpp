// The one Catch2 main of moekit's tests, compiled once (moekit_catch_main)
// and linked into every moekit_test_<area> executable.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

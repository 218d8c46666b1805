# expect_failure.cmake — run by ctest for each tests/compile/fail_*.cpp:
#
#   cmake -DBUILD_DIR=<build tree> -DTARGET=<object library> -DSOURCE=<file>
#         [-DCONFIG=<config>] -P expect_failure.cmake
#
# Builds TARGET and passes only when
#   1. the build fails (non-zero exit), and
#   2. its output matches the regex on SOURCE's first line: // expect: <regex>
#
# Before matching, every occurrence of the file's name (it appears in the
# command line, the object path and each diagnostic) is replaced by
# "<source>", so the regex cannot match merely because of the file name.

foreach(var BUILD_DIR TARGET SOURCE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "expect_failure.cmake: -D${var}=... is required")
  endif()
endforeach()

file(STRINGS "${SOURCE}" first_line LIMIT_COUNT 1)
if(NOT first_line MATCHES "^// expect: (.+)$")
  message(FATAL_ERROR
    "${SOURCE}: the first line must be `// expect: <regex>`, found: ${first_line}")
endif()
string(STRIP "${CMAKE_MATCH_1}" expected)

set(config_args "")
if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
  set(config_args --config "${CONFIG}")
endif()

execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}" ${config_args}
  RESULT_VARIABLE result
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)

get_filename_component(stem "${SOURCE}" NAME_WE)
string(REPLACE "${stem}" "<source>" scrubbed "${output}")

# message() without a mode prints the text as it is (FATAL_ERROR re-wraps it).
if(result EQUAL 0)
  message("--- build output ---\n${output}")
  message(FATAL_ERROR
    "compile-fail test ${stem}: the file COMPILED, but it must not "
    "(expected an error matching: ${expected})")
endif()
if(NOT scrubbed MATCHES "${expected}")
  message("--- build output (the file name shown as <source>) ---\n${scrubbed}")
  message(FATAL_ERROR
    "compile-fail test ${stem}: the build failed, but its output does not "
    "match the expected regex: ${expected}")
endif()
message(STATUS "compile-fail test ${stem}: failed to compile as expected "
               "(matched: ${expected})")

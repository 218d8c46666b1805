# pkg_config.cmake — ctest consumer.pkg_config, included by run.cmake (which
# defines step() and the variables used here): install moekit to a prefix,
# then build project/main.cpp with the compiler alone, driven by
#   pkg-config --cflags --libs moekit
# and run it. Prints "SKIPPED: ..." (the ctest's skip line) without pkg-config.

find_program(pkg_config NAMES pkg-config pkgconf NO_CACHE)
if(NOT pkg_config)
  message("consumer.pkg_config: SKIPPED: pkg-config not found (Debian: apt-get install pkgconf)")
  return()
endif()
set(cxx "${CXX_COMPILER}")
if(cxx STREQUAL "")
  set(cxx c++)
endif()

step("install moekit to ${prefix}" QUIET
  "${CMAKE_COMMAND}" --install "${MOEKIT_BINARY_DIR}" --prefix "${prefix}" --config "${CONFIG}")
set(ENV{PKG_CONFIG_PATH} "${prefix}/share/pkgconfig")

# pkg_config_query(<var> <args...>): pkg-config's answer, or stop.
function(pkg_config_query var)
  execute_process(COMMAND "${pkg_config}" ${ARGN} moekit
    RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE error
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "consumer.pkg_config: pkg-config ${ARGN} moekit failed (${result}): ${error}")
  endif()
  set(${var} "${output}" PARENT_SCOPE)
endfunction()

# The installed file answers, and its relocatable prefix points at the install.
pkg_config_query(includedir --variable=includedir)
file(REAL_PATH "${includedir}" includedir)
file(REAL_PATH "${prefix}/include" expected)
if(NOT includedir STREQUAL expected)
  message(FATAL_ERROR "consumer.pkg_config: includedir is ${includedir}, expected ${expected}")
endif()
pkg_config_query(flags --cflags --libs)
message(STATUS "consumer.pkg_config: pkg-config --cflags --libs moekit: ${flags}")
separate_arguments(flags UNIX_COMMAND "${flags}")

file(MAKE_DIRECTORY "${build}")
step("compile and link with ${cxx}" "${cxx}" "${project_dir}/main.cpp" ${flags} -o "${build}/app")
step("run ${build}/app" "${build}/app")
message(STATUS "consumer.pkg_config: OK")

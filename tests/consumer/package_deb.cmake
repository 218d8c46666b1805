# package_deb.cmake — ctest package.deb: `cpack -G DEB` builds moekit's
# Debian package, which must hold the headers, the CMake package and moekit.pc.
#
#   cmake -DMOEKIT_SOURCE_DIR=<moekit source> -DWORK_DIR=<scratch dir>
#         [-DGENERATOR=<gen>] [-DMAKE_PROGRAM=<path>] [-DCXX_COMPILER=<path>]
#         -P package_deb.cmake
#
# It configures moekit afresh in WORK_DIR (tests, examples, benchmarks, CUDA
# and MPI off: nothing to build, so cpack's pre-install build is empty) rather
# than packaging the build tree under test, whose `all` may not be built.
# Prints "SKIPPED: ..." (the ctest's skip line) without dpkg-deb.

foreach(var MOEKIT_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "package_deb.cmake: -D${var}=... is required")
  endif()
endforeach()
find_program(dpkg_deb NAMES dpkg-deb NO_CACHE)
if(NOT dpkg_deb)
  message("package.deb: SKIPPED: dpkg-deb not found (Debian: apt-get install dpkg)")
  return()
endif()
if(NOT DEFINED GENERATOR OR GENERATOR STREQUAL "")
  set(GENERATOR Ninja)
endif()
get_filename_component(cmake_dir "${CMAKE_COMMAND}" DIRECTORY)
find_program(cpack NAMES cpack HINTS "${cmake_dir}" NO_CACHE REQUIRED)

set(build "${WORK_DIR}/build")
set(out "${WORK_DIR}/out")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${out}")

# run(<what> <command...>): run a command, keep its output in <what>_output,
# stop with that output on failure.
macro(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result
    OUTPUT_VARIABLE ${what}_output ERROR_VARIABLE ${what}_output)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "package.deb: ${what} failed (${result}):\n${${what}_output}")
  endif()
endmacro()

set(configure_args -S "${MOEKIT_SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
  -DCMAKE_BUILD_TYPE=Release -DMOEKIT_BUILD_TESTS=OFF -DMOEKIT_BUILD_EXAMPLES=OFF
  -DMOEKIT_BUILD_BENCHMARKS=OFF -DMOEKIT_CUDA=OFF -DMOEKIT_MPI=OFF)
include("${CMAKE_CURRENT_LIST_DIR}/toolchain_args.cmake")
consumer_toolchain_args(configure_args)
run(configure "${CMAKE_COMMAND}" ${configure_args})
run(cpack "${cpack}" -G DEB --config "${build}/CPackConfig.cmake" -B "${out}")

file(GLOB debs "${out}/*.deb")
list(LENGTH debs count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "package.deb: expected one .deb in ${out}, found ${count}: ${debs}\n${cpack_output}")
endif()
get_filename_component(deb_name "${debs}" NAME)
if(NOT deb_name MATCHES "^moekit-dev_[0-9]+\\.[0-9]+\\.[0-9]+_all\\.deb$")
  message(FATAL_ERROR "package.deb: unexpected file name ${deb_name}")
endif()

# The file list: headers, the CMake package, moekit.pc, under the package's
# install prefix (CPACK_PACKAGING_INSTALL_PREFIX of the configuration cpack read).
include("${build}/CPackConfig.cmake")
set(root ".${CPACK_PACKAGING_INSTALL_PREFIX}")
run(list "${dpkg_deb}" -c "${debs}")
foreach(file IN ITEMS
    include/moekit.hpp
    include/moekit/io/atomic_file.hpp
    share/cmake/moekit/moekitConfig.cmake
    share/cmake/moekit/moekitConfigVersion.cmake
    share/cmake/moekit/moekitTargets.cmake
    share/cmake/moekit/moekit_dependencies.cmake
    share/pkgconfig/moekit.pc)
  string(FIND "${list_output}" " ${root}/${file}\n" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "package.deb: ${deb_name} lacks ${file}; it holds:\n${list_output}")
  endif()
endforeach()

# The control fields a consumer's machine relies on.
run(fields "${dpkg_deb}" -f "${debs}" Package Architecture Depends)
foreach(field IN ITEMS "Package: moekit-dev" "Architecture: all" "zlib1g-dev" "blas")
  string(FIND "${fields_output}" "${field}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "package.deb: control fields lack '${field}':\n${fields_output}")
  endif()
endforeach()

# Unpacked anywhere, its moekit.pc finds the headers beside it.
find_program(pkg_config NAMES pkg-config pkgconf NO_CACHE)
if(pkg_config)
  run(extract "${dpkg_deb}" -x "${debs}" "${WORK_DIR}/root")
  set(ENV{PKG_CONFIG_PATH} "${WORK_DIR}/root${CPACK_PACKAGING_INSTALL_PREFIX}/share/pkgconfig")
  run(includedir "${pkg_config}" --variable=includedir moekit)
  string(STRIP "${includedir_output}" includedir)
  file(REAL_PATH "${includedir}" includedir)
  if(NOT EXISTS "${includedir}/moekit.hpp")
    message(FATAL_ERROR "package.deb: the packaged moekit.pc's includedir ${includedir} holds no moekit.hpp")
  endif()
endif()
message(STATUS "package.deb: ${deb_name} OK")

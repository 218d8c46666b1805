# run.cmake — ctest consumer.<mode>: build and run tests/consumer/project.
#
#   cmake -DMODE=find_package|add_subdirectory|fetchcontent|pkg_config
#         -DMOEKIT_SOURCE_DIR=<moekit source> -DMOEKIT_BINARY_DIR=<moekit build>
#         -DWORK_DIR=<scratch dir> [-DGENERATOR=<gen>] [-DMAKE_PROGRAM=<path>]
#         [-DCXX_COMPILER=<path>] [-DCONFIG=<config>] -P run.cmake
#
# find_package: installs the moekit build tree to WORK_DIR/prefix first, then
# configures the consumer with CMAKE_PREFIX_PATH=WORK_DIR/prefix.
# pkg_config: installs likewise, then compiles project/main.cpp with no CMake
# at all: <CXX_COMPILER> main.cpp $(pkg-config --cflags --libs moekit), with
# PKG_CONFIG_PATH=WORK_DIR/prefix/share/pkgconfig; prints a skip line without
# pkg-config. -DEXPECT_BLAS_OPENMP=1 (the moekit build found OpenBLAS's
# OpenMP build): the CMake modes' app must have loaded it (pkg-config's flags
# name the system's choice).

foreach(var MODE MOEKIT_SOURCE_DIR MOEKIT_BINARY_DIR WORK_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED GENERATOR OR GENERATOR STREQUAL "")
  set(GENERATOR Ninja)
endif()
if(NOT DEFINED CONFIG OR CONFIG STREQUAL "")
  set(CONFIG Release)
endif()

set(project_dir "${CMAKE_CURRENT_LIST_DIR}/project")
set(prefix "${WORK_DIR}/prefix")
set(build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# step(<what> [QUIET] <command...>): run a command, stop on failure. QUIET
# keeps its output unless it fails.
function(step what)
  message(STATUS "consumer.${MODE}: ${what}")
  set(command ${ARGN})
  if(ARGV1 STREQUAL "QUIET")
    list(POP_FRONT command)
    execute_process(COMMAND ${command} RESULT_VARIABLE result
      OUTPUT_VARIABLE output ERROR_VARIABLE output)
    if(NOT result EQUAL 0)
      message("${output}")
    endif()
  else()
    execute_process(COMMAND ${command} RESULT_VARIABLE result)
  endif()
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "consumer.${MODE}: ${what} failed (${result})")
  endif()
endfunction()

if(MODE STREQUAL "pkg_config")
  include("${CMAKE_CURRENT_LIST_DIR}/pkg_config.cmake")
  return()
endif()

set(configure_args
  -S "${project_dir}" -B "${build}" -G "${GENERATOR}"
  "-DCMAKE_BUILD_TYPE=${CONFIG}"
  "-DMOEKIT_CONSUMER_MODE=${MODE}")
include("${CMAKE_CURRENT_LIST_DIR}/toolchain_args.cmake")
consumer_toolchain_args(configure_args)

if(MODE STREQUAL "find_package")
  step("install moekit to ${prefix}" QUIET
    "${CMAKE_COMMAND}" --install "${MOEKIT_BINARY_DIR}" --prefix "${prefix}"
    --config "${CONFIG}")
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${prefix}"
    # Only the fresh install may satisfy find_package(moekit).
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "add_subdirectory" OR MODE STREQUAL "fetchcontent")
  list(APPEND configure_args "-DMOEKIT_SOURCE_DIR=${MOEKIT_SOURCE_DIR}")
else()
  message(FATAL_ERROR "run.cmake: unknown MODE ${MODE}")
endif()

step("configure" "${CMAKE_COMMAND}" ${configure_args})
step("build" "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")

find_program(app NAMES app PATHS "${build}" "${build}/${CONFIG}"
  NO_DEFAULT_PATH NO_CACHE REQUIRED)
if(EXPECT_BLAS_OPENMP AND NOT MODE STREQUAL "pkg_config")
  step("run ${app}" "${app}" --expect-openmp-blas)
else()
  step("run ${app}" "${app}")
endif()
message(STATUS "consumer.${MODE}: OK")

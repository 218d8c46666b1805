# moekit_programs.cmake — one executable per source file, as examples/ and
# bench/ both build them.
#
#   moekit_add_programs(<out_var> <dir> <what> [CUDA_CAPABLE <stem>...])
#       Builds <dir>/<stem>.cpp (and <stem>.cu when the CUDA language is
#       enabled) as executable <stem> in build/bin/, linked to moekit::moekit
#       (moekit::cuda for .cu), with moekit's warnings and
#       MOEKIT_SHARED_DATA_DIR. Sets <out_var> to the list of stems.
#       A CUDA_CAPABLE stem's .cpp is compiled by nvcc (and linked to
#       moekit::cuda) when the CUDA language is enabled: one source offers
#       `--backend cuda` where nvcc is there and stays plain C++ elsewhere
#       (it tests __CUDACC__).
#       Every program gets moekit_program_flags (below).
#
#   moekit_program_flags(<target>)
#       Links the library moekit_program_flags (made at the first call):
#       examples/common/flags.cpp, the CLI11 side of "common/flags.hpp", the
#       programs' flags parser (not part of moekit). It puts examples/ on the
#       include path, so examples/, bench/ and tests/io include
#       "common/flags.hpp". CLI11 (Debian: libcli11-dev) is compiled there
#       once: in every program it would add ~9 s of compile time.

include_guard(GLOBAL)

function(moekit_program_flags target)
  if(NOT TARGET moekit_program_flags)
    find_package(CLI11 2 REQUIRED CONFIG GLOBAL)
    add_library(moekit_program_flags STATIC "${PROJECT_SOURCE_DIR}/examples/common/flags.cpp")
    target_link_libraries(moekit_program_flags PUBLIC moekit::moekit PRIVATE CLI11::CLI11)
    target_include_directories(moekit_program_flags PUBLIC "${PROJECT_SOURCE_DIR}/examples")
    moekit_target_warnings(moekit_program_flags)
  endif()
  target_link_libraries(${target} PRIVATE moekit_program_flags)
endfunction()

# moekit_cuda_depends_on_headers(<source>...): CMake 3.25 gets no header
# dependencies from nvcc 13 under Ninja, so a CUDA object would not rebuild
# when a moekit header changes (a bench would time the old code). These
# sources depend on every header instead. Call it in the directory that
# adds the sources' target.
function(moekit_cuda_depends_on_headers)
  file(GLOB_RECURSE headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/*.hpp"
       "${PROJECT_SOURCE_DIR}/include/*.inl" "${PROJECT_SOURCE_DIR}/include/*.cuh"
       "${PROJECT_SOURCE_DIR}/examples/common/*.hpp" "${PROJECT_SOURCE_DIR}/bench/*.hpp")
  set_property(SOURCE ${ARGN} APPEND PROPERTY OBJECT_DEPENDS ${headers})
endfunction()

function(moekit_add_programs out_var dir what)
  cmake_parse_arguments(PARSE_ARGV 3 arg "" "" "CUDA_CAPABLE")
  set(with_cuda FALSE)
  if(TARGET moekit::cuda AND MOEKIT_CUDA_LANGUAGE)
    set(with_cuda TRUE)
  endif()
  file(GLOB sources CONFIGURE_DEPENDS LIST_DIRECTORIES false "${dir}/*.cpp")
  if(with_cuda)
    file(GLOB cuda_sources CONFIGURE_DEPENDS LIST_DIRECTORIES false "${dir}/*.cu")
    list(APPEND sources ${cuda_sources})
  endif()
  list(SORT sources)

  set(stems "")
  foreach(source IN LISTS sources)
    get_filename_component(stem "${source}" NAME_WE)
    get_filename_component(ext "${source}" LAST_EXT)
    if(TARGET ${stem})
      message(FATAL_ERROR "${what}: a target named '${stem}' exists already "
                          "(two sources with the same stem, or a clash between examples/ and bench/?)")
    endif()
    add_executable(${stem} "${source}")
    if(with_cuda AND stem IN_LIST arg_CUDA_CAPABLE)
      set_source_files_properties("${source}" PROPERTIES LANGUAGE CUDA)
      set(ext ".cu")
    endif()
    if(ext STREQUAL ".cu")
      moekit_cuda_depends_on_headers("${source}")
      target_link_libraries(${stem} PRIVATE moekit::cuda)
    else()
      target_link_libraries(${stem} PRIVATE moekit::moekit)
    endif()
    target_compile_definitions(${stem} PRIVATE
      "MOEKIT_SHARED_DATA_DIR=\"${MOEKIT_SHARED_DATA_DIR}\"")
    moekit_target_warnings(${stem})
    moekit_program_flags(${stem})
    list(APPEND stems ${stem})
  endforeach()
  set(${out_var} ${stems} PARENT_SCOPE)
endfunction()

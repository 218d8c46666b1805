# moekit_programs.cmake — one executable per source file, as examples/ and
# bench/ both build them.
#
#   moekit_add_programs(<out_var> <dir> <what>)
#       Builds <dir>/<stem>.cpp (and <stem>.cu when the CUDA language is
#       enabled) as executable <stem> in build/bin/, linked to moekit::moekit
#       (moekit::cuda for .cu), with moekit's warnings and
#       MOEKIT_SHARED_DATA_DIR. Sets <out_var> to the list of stems.

include_guard(GLOBAL)

function(moekit_add_programs out_var dir what)
  file(GLOB sources CONFIGURE_DEPENDS LIST_DIRECTORIES false "${dir}/*.cpp")
  if(TARGET moekit::cuda AND MOEKIT_CUDA_LANGUAGE)
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
    if(ext STREQUAL ".cu")
      target_link_libraries(${stem} PRIVATE moekit::cuda)
    else()
      target_link_libraries(${stem} PRIVATE moekit::moekit)
    endif()
    target_compile_definitions(${stem} PRIVATE
      "MOEKIT_SHARED_DATA_DIR=\"${MOEKIT_SHARED_DATA_DIR}\"")
    moekit_target_warnings(${stem})
    list(APPEND stems ${stem})
  endforeach()
  set(${out_var} ${stems} PARENT_SCOPE)
endfunction()

# moekit_pkgconfig.cmake — the compile and link flags of moekit::moekit for
# pkg-config (cmake/moekit.pc.in), derived from the targets the build found.
#
#   moekit_pkgconfig_flags(<cflags_var> <libs_var>)
#       <cflags_var>: the C++ standard and OpenMP's compile flags (-std=c++20 -fopenmp).
#       <libs_var>:   OpenMP's flags, then BLAS (and LAPACK when separate) and
#                     zlib as -l<name>; -L<dir> only for a folder outside the
#                     compiler's own (so the file suits any machine of the same
#                     distribution, whatever its architecture folder).
#
# Called after moekit_find_dependencies (BLAS::BLAS, OpenMP::OpenMP_CXX,
# ZLIB::ZLIB and MOEKIT_LAPACK_LIBRARIES exist).

include_guard(GLOBAL)

# Appends the link flags of one item (a target, a library path, a name or a
# flag) to the list <out_var>.
function(_moekit_pc_link_item item out_var)
  set(out ${${out_var}})
  if(item MATCHES "^\\$<")
    message(STATUS "moekit.pc: a generator expression in the link libraries is left out: ${item}")
  elseif(TARGET "${item}")
    get_target_property(type "${item}" TYPE)
    if(NOT type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(location "${item}" IMPORTED_LOCATION_RELEASE)
      if(NOT location)
        get_target_property(location "${item}" IMPORTED_LOCATION)
      endif()
      if(location)
        _moekit_pc_link_item("${location}" out)
      endif()
    endif()
    get_target_property(deps "${item}" INTERFACE_LINK_LIBRARIES)
    if(deps)
      foreach(dep IN LISTS deps)
        _moekit_pc_link_item("${dep}" out)
      endforeach()
    endif()
  elseif(item MATCHES "^-")
    list(APPEND out "${item}")
  elseif(IS_ABSOLUTE "${item}")
    get_filename_component(dir "${item}" DIRECTORY)
    get_filename_component(file "${item}" NAME)
    if(file MATCHES "^lib(.+)\\.(so|a|dylib)(\\.[0-9.]+)?$")
      if(NOT dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
        list(APPEND out "-L${dir}")
      endif()
      list(APPEND out "-l${CMAKE_MATCH_1}")
    else()
      list(APPEND out "${item}")
    endif()
  elseif(NOT item STREQUAL "")
    list(APPEND out "-l${item}")
  endif()
  set(${out_var} ${out} PARENT_SCOPE)
endfunction()

function(moekit_pkgconfig_flags cflags_var libs_var)
  # OpenMP: the compiler's flag (-fopenmp) compiles the pragmas and links the
  # runtime; its library list (libgomp, libpthread) is the compiler's business.
  separate_arguments(openmp UNIX_COMMAND "${OpenMP_CXX_FLAGS}")
  set(libs ${openmp})
  foreach(item IN ITEMS BLAS::BLAS ${MOEKIT_LAPACK_LIBRARIES} ZLIB::ZLIB)
    _moekit_pc_link_item("${item}" libs)
  endforeach()
  list(REMOVE_DUPLICATES libs)
  list(JOIN libs " " libs)
  set(cflags -std=c++20 ${openmp})
  list(JOIN cflags " " cflags)
  set(${cflags_var} "${cflags}" PARENT_SCOPE)
  set(${libs_var} "${libs}" PARENT_SCOPE)
endfunction()

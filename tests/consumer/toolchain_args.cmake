# toolchain_args.cmake — included by run.cmake and package_deb.cmake:
#   consumer_toolchain_args(<list var>) appends -DCMAKE_MAKE_PROGRAM and
#   -DCMAKE_CXX_COMPILER for the MAKE_PROGRAM / CXX_COMPILER the ctest passed
#   (-D... on the cmake -P line), so a nested configure uses the same tools.
include_guard(GLOBAL)

function(consumer_toolchain_args out_var)
  set(args ${${out_var}})
  if(DEFINED MAKE_PROGRAM AND NOT MAKE_PROGRAM STREQUAL "")
    list(APPEND args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
  endif()
  if(DEFINED CXX_COMPILER AND NOT CXX_COMPILER STREQUAL "")
    list(APPEND args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
  endif()
  set(${out_var} ${args} PARENT_SCOPE)
endfunction()

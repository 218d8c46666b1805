# cmake/check_floors.cmake — checks the include floors of include/moekit/.
#
#   cmake -P cmake/check_floors.cmake        (from the source tree; ctest -R floors runs it)
#
# Every folder under include/moekit/ lies on one floor; floors stack, bottom
# to top, as listed in moekit_floors below (docs/design.md, "Floors", says
# why). A header may include headers of its own floor and of floors below,
# never of a floor above. The script reads every `#include "..."` line of every
# header under include/moekit/ (relative paths resolved against the header's
# folder, then against include/), and prints one line per violation:
#
#   floors: include/moekit/X/a.hpp includes include/moekit/Y/b.hpp (floor Y is above X)
#
# and then fails. Also errors: a folder that is on no floor (add it below and
# to docs/design.md), a quoted include of a moekit path that does not exist
# (left behind by a move), and a floor header that includes an umbrella.
# Umbrella headers (include/moekit.hpp, include/moekit/<name>.hpp such as
# cuda.hpp, graph.hpp, optim.hpp) are exempt: they gather every floor.
#
# Options: -DMOEKIT_SOURCE_DIR=<root> (default: the folder above this script).
# Needs nothing but CMake.
cmake_minimum_required(VERSION 3.25)

# Floors, bottom to top. Folders in one entry share a floor (and may include
# one another); a new folder under include/moekit/ must be added here.
set(moekit_floors
  "core"
  "backend"
  "tensor"
  "autograd"
  "nn"
  "optim"
  "data"
  "io"
  "moe"
  "mlp mowst graph uoe coe merge dist")

if(NOT DEFINED MOEKIT_SOURCE_DIR)
  get_filename_component(MOEKIT_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
endif()
set(include_root "${MOEKIT_SOURCE_DIR}/include")
if(NOT IS_DIRECTORY "${include_root}/moekit")
  message(FATAL_ERROR "floors: ${include_root}/moekit: no such folder (pass -DMOEKIT_SOURCE_DIR=<moekit source tree>)")
endif()

# floor_of_<folder> = index of its floor.
set(level 0)
foreach(entry IN LISTS moekit_floors)
  string(REPLACE " " ";" folders "${entry}")
  foreach(folder IN LISTS folders)
    set(floor_of_${folder} ${level})
  endforeach()
  math(EXPR level "${level} + 1")
endforeach()

# The floor folder of a path relative to include/ ("moekit/nn/layer.hpp" -> "nn");
# empty for an umbrella header ("moekit.hpp", "moekit/cuda.hpp").
function(moekit_floor_folder rel out)
  if(rel MATCHES "^moekit/([^/]+)/")
    set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

file(GLOB_RECURSE headers RELATIVE "${include_root}" LIST_DIRECTORIES false
  "${include_root}/moekit/*.hpp" "${include_root}/moekit/*.cuh"
  "${include_root}/moekit/*.h" "${include_root}/moekit/*.inl")
list(SORT headers)

set(problems "")
set(checked_headers 0)
set(checked_includes 0)
foreach(rel IN LISTS headers)
  moekit_floor_folder("${rel}" from_folder)
  if(from_folder STREQUAL "")
    continue()  # umbrella header
  endif()
  if(NOT DEFINED floor_of_${from_folder})
    list(APPEND problems "floors: include/${rel}: folder moekit/${from_folder} is on no floor (add it to moekit_floors in cmake/check_floors.cmake and to docs/design.md)")
    continue()
  endif()
  math(EXPR checked_headers "${checked_headers} + 1")
  get_filename_component(dir "${include_root}/${rel}" DIRECTORY)
  file(STRINGS "${include_root}/${rel}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"[^\"]+\"")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*$" "\\1" included "${line}")
    # As the compiler looks: next to the header, then on the include path.
    get_filename_component(target "${dir}/${included}" ABSOLUTE)
    if(NOT EXISTS "${target}")
      get_filename_component(target "${include_root}/${included}" ABSOLUTE)
    endif()
    if(NOT EXISTS "${target}")
      if(included MATCHES "^\\.\\./|^moekit/")
        list(APPEND problems "floors: include/${rel} includes \"${included}\", which does not exist")
      endif()
      continue()  # a quoted include from outside moekit
    endif()
    file(RELATIVE_PATH to_rel "${include_root}" "${target}")
    if(NOT to_rel MATCHES "^moekit(/|\\.hpp$)")
      continue()  # outside include/moekit
    endif()
    math(EXPR checked_includes "${checked_includes} + 1")
    moekit_floor_folder("${to_rel}" to_folder)
    if(to_folder STREQUAL "")
      list(APPEND problems "floors: include/${rel} includes include/${to_rel} (an umbrella header: include the headers it needs)")
    elseif(NOT DEFINED floor_of_${to_folder})
      # Reported once for the folder's own headers above.
    elseif(floor_of_${to_folder} GREATER floor_of_${from_folder})
      list(APPEND problems "floors: include/${rel} includes include/${to_rel} (floor ${to_folder} is above ${from_folder})")
    endif()
  endforeach()
endforeach()

if(problems)
  list(LENGTH problems n)
  foreach(p IN LISTS problems)
    message("${p}")
  endforeach()
  set(order "")
  foreach(entry IN LISTS moekit_floors)
    if(entry MATCHES " ")
      string(REPLACE " " ", " entry "${entry}")
      set(entry "(${entry})")
    endif()
    string(APPEND order "${order_sep}${entry}")
    set(order_sep " -> ")
  endforeach()
  message(FATAL_ERROR "floors: ${n} problem(s) in ${checked_headers} headers; floors, bottom to top: ${order} (see docs/design.md, \"Floors\")")
endif()
message(STATUS "floors: ${checked_headers} headers, ${checked_includes} includes of moekit headers: every one stays on its floor or below")

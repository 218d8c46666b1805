# moekit_warnings.cmake — compile/link settings for moekit's *own* targets
# (tests, examples, benchmarks). Never applied to moekit::moekit itself, so
# consumers do not inherit them.
#
#   moekit_target_warnings(<target>)
#       CXX : -Wall -Wextra -Wpedantic            (+ -Werror if MOEKIT_WERROR)
#       CUDA: the same for the host compiler through -Xcompiler, without
#             -Wpedantic (nvcc's generated host code uses GNU line markers,
#             which -Wpedantic reports in every translation unit); with
#             MOEKIT_WERROR also nvcc's device-side warnings are errors
#       MOEKIT_NATIVE: -march=native -fno-math-errno -fno-trapping-math (CXX;
#             CUDA host code through -Xcompiler). Without -fno-math-errno GCC
#             keeps std::sqrt scalar (errno), and AdamW's update pass runs 3x
#             slower; without -fno-trapping-math GCC 12 turns the clamps of the
#             float GELU/SiLU (tensor/ops/fast_activation.hpp) into branches
#             and keeps those loops scalar, 5x slower. Neither changes a result.
#       MOEKIT_SANITIZE: -fsanitize=address,undefined -fno-omit-frame-pointer
#             -fno-sanitize-recover=all for compiling and linking.

include_guard(GLOBAL)

function(moekit_target_warnings target)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    set(scope INTERFACE)
  else()
    set(scope PRIVATE)
  endif()

  set(cxx_warnings -Wall -Wextra -Wpedantic)
  set(cuda_warnings -Xcompiler=-Wall -Xcompiler=-Wextra)
  if(MOEKIT_WERROR)
    list(APPEND cxx_warnings -Werror)
    # nvcc's own (device-side) warnings too: "-Werror all-warnings".
    list(APPEND cuda_warnings -Xcompiler=-Werror "SHELL:-Werror all-warnings")
  endif()
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} ${scope}
      "$<$<COMPILE_LANGUAGE:CXX>:${cxx_warnings}>"
      "$<$<COMPILE_LANGUAGE:CUDA>:${cuda_warnings}>")
  elseif(MSVC)
    target_compile_options(${target} ${scope}
      "$<$<COMPILE_LANGUAGE:CXX>:/W4;$<$<BOOL:${MOEKIT_WERROR}>:/WX>>")
  endif()

  if(MOEKIT_NATIVE AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} ${scope}
      "$<$<COMPILE_LANGUAGE:CXX>:-march=native;-fno-math-errno;-fno-trapping-math>"
      "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-march=native;-Xcompiler=-fno-math-errno;-Xcompiler=-fno-trapping-math>")
  endif()

  if(MOEKIT_SANITIZE)
    set(san -fsanitize=address,undefined -fno-omit-frame-pointer
            -fno-sanitize-recover=all)
    # nvcc splits -Xcompiler arguments at commas: one flag per -Xcompiler.
    set(cuda_san -Xcompiler=-fsanitize=address -Xcompiler=-fsanitize=undefined
                 -Xcompiler=-fno-omit-frame-pointer
                 -Xcompiler=-fno-sanitize-recover=all)
    target_compile_options(${target} ${scope}
      "$<$<COMPILE_LANGUAGE:CXX>:${san}>"
      "$<$<COMPILE_LANGUAGE:CUDA>:${cuda_san}>")
    target_link_options(${target} ${scope} ${san})
    # GCC: "sanitizers tend to increase the rate of false positive warnings,
    # most notably those around -Wmaybe-uninitialized" (GCC manual,
    # -fsanitize=address); libstdc++'s <regex> (used by Catch2) trips it.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} ${scope}
        "$<$<COMPILE_LANGUAGE:CXX>:-Wno-maybe-uninitialized>")
    endif()
  endif()
endfunction()

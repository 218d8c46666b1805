# moekit_dependencies.cmake — the one place where moekit's dependencies are
# looked up. Used by the top-level CMakeLists.txt (build tree) and installed
# next to moekitConfig.cmake (install tree), so both find them the same way.
#
#   moekit_find_dependencies(<ok_var> <message_var> [QUIET])
#       BLAS (OpenBLAS preferred, any BLAS accepted with a warning; imported
#       target BLAS::BLAS), cblas.h, OpenMP (OpenMP::OpenMP_CXX), zlib
#       (ZLIB::ZLIB; the IDX reader reads .gz data sets), and LAPACK for
#       merge/svd.hpp (sgesdd_/dgesdd_): OpenBLAS exports it itself; with
#       another BLAS, LAPACK::LAPACK when found. Sets MOEKIT_LAPACK_LIBRARIES
#       (what to link besides BLAS::BLAS: empty or LAPACK::LAPACK) and
#       MOEKIT_HAVE_LAPACK in the caller's scope; LAPACK is optional (only
#       the merge module's SVD needs it).
#       Where Debian's OpenMP build of OpenBLAS is installed, programs load
#       it through an rpath (MOEKIT_BLAS_OPENMP, default ON; sets
#       MOEKIT_BLAS_OPENMP_DIR). Sets <ok_var> to TRUE/FALSE and
#       <message_var> to why it failed.
#
#   moekit_find_cuda_dependencies(<ok_var>)
#       Optional: CUDAToolkit (CUDA::cudart, CUDA::cublas) and CCCL
#       (CCCL::CCCL; Thrust, CUB, libcu++ as shipped with the toolkit).
#       Sets <ok_var> to TRUE only when all of them are available, and then
#       also CUDAToolkit_{FOUND,VERSION,BIN_DIR,INCLUDE_DIRS,LIBRARY_DIR,
#       LIBRARY_ROOT,NVCC_EXECUTABLE} in the caller's scope.
#
#   moekit_find_mpi_dependencies(<ok_var>)
#       Optional: MPI's C interface as MPI::MPI_CXX (the deprecated C++
#       bindings skipped), for moekit::dist. Sets <ok_var> TRUE when found.
#
#   moekit_find_nccl(<ok_var>)
#       Optional, after moekit_find_cuda_dependencies: NCCL (nccl.h and
#       libnccl), looked for in the CUDA toolkit's directories first
#       (CUDAToolkit_INCLUDE_DIRS, CUDAToolkit_LIBRARY_DIR), then in the
#       system's. Creates the imported target NCCL::NCCL (unless one exists)
#       and sets <ok_var> TRUE only when both are found; for
#       moekit/dist/nccl.cuh.
#
# All are functions: result variables of the Find modules stay local, the
# imported targets they create are directory-scoped and stay visible.

include_guard(GLOBAL)

function(moekit_find_dependencies ok_var message_var)
  cmake_parse_arguments(PARSE_ARGV 2 arg "QUIET" "" "")
  set(${ok_var} FALSE PARENT_SCOPE)

  # --- BLAS -----------------------------------------------------------------
  if(NOT TARGET BLAS::BLAS)
    if(DEFINED BLA_VENDOR AND NOT BLA_VENDOR STREQUAL "")
      # The user picked a vendor: respect it and do not second-guess.
      find_package(BLAS QUIET)
    else()
      set(BLA_VENDOR OpenBLAS)
      find_package(BLAS QUIET)
      if(NOT BLAS_FOUND)
        unset(BLA_VENDOR)
        find_package(BLAS QUIET)
        if(BLAS_FOUND AND NOT arg_QUIET)
          message(WARNING
            "moekit: OpenBLAS was not found; using another BLAS "
            "(${BLAS_LIBRARIES}). CPU matrix products may be much slower. "
            "On Debian/Ubuntu: apt-get install libopenblas-dev")
        endif()
      endif()
    endif()
    if(NOT TARGET BLAS::BLAS)
      set(${message_var} "moekit needs a BLAS library with the CBLAS interface \
(OpenBLAS preferred). On Debian/Ubuntu: apt-get install libopenblas-dev"
        PARENT_SCOPE)
      return()
    endif()
  endif()

  # --- OpenBLAS built with OpenMP (preferred) -----------------------------------
  # Debian builds OpenBLAS three ways (pthreads, OpenMP, serial) into sibling
  # folders, and its alternatives make the pthreads one libopenblas.so.0.
  # That build keeps a thread pool of its own, which fights moekit's OpenMP
  # threads for the cores: on 2 cores, under libgomp's default wait policy, a
  # C-S MoE layer step ran slower on 2 threads than on 1 (issue #16). When the
  # OpenMP build is installed (libopenblas0-openmp), programs linked with
  # moekit load it instead, through an rpath: the same soname and symbols,
  # one pool. MOEKIT_BLAS_OPENMP=OFF keeps the system's choice; a BLA_VENDOR
  # the user picked is left alone. Sets MOEKIT_BLAS_OPENMP_DIR (that folder,
  # or empty) in the caller's scope.
  set(MOEKIT_BLAS_OPENMP_DIR "" PARENT_SCOPE)
  if((NOT DEFINED MOEKIT_BLAS_OPENMP OR MOEKIT_BLAS_OPENMP) AND
     (NOT DEFINED BLA_VENDOR OR BLA_VENDOR STREQUAL "" OR BLA_VENDOR STREQUAL "OpenBLAS"))
    get_target_property(blas_libs BLAS::BLAS INTERFACE_LINK_LIBRARIES)
    set(openmp_dir "")
    foreach(lib IN LISTS blas_libs)
      if(IS_ABSOLUTE "${lib}" AND lib MATCHES "openblas")
        get_filename_component(dir "${lib}" DIRECTORY)
        foreach(candidate IN ITEMS "${dir}/openblas-openmp" "${dir}/../openblas-openmp")
          if(openmp_dir STREQUAL "" AND EXISTS "${candidate}/libopenblas.so.0")
            get_filename_component(openmp_dir "${candidate}" REALPATH)
          endif()
        endforeach()
      endif()
    endforeach()
    if(NOT openmp_dir STREQUAL "")
      get_target_property(options BLAS::BLAS INTERFACE_LINK_OPTIONS)
      if(NOT options OR NOT "LINKER:-rpath,${openmp_dir}" IN_LIST options)
        set_property(TARGET BLAS::BLAS APPEND PROPERTY INTERFACE_LINK_OPTIONS "LINKER:-rpath,${openmp_dir}")
      endif()
      set(MOEKIT_BLAS_OPENMP_DIR "${openmp_dir}" PARENT_SCOPE)
      if(NOT arg_QUIET)
        message(STATUS "moekit: OpenBLAS's OpenMP build is loaded from ${openmp_dir} (rpath)")
      endif()
    elseif(NOT arg_QUIET AND blas_libs MATCHES "openblas")
      message(STATUS "moekit: OpenBLAS's OpenMP build was not found: its own thread pool will compete "
                     "with moekit's OpenMP threads. On Debian/Ubuntu: apt-get install libopenblas0-openmp")
    endif()
  endif()

  # --- cblas.h ---------------------------------------------------------------
  get_property(languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if(NOT DEFINED MOEKIT_HAVE_CBLAS_H OR NOT MOEKIT_HAVE_CBLAS_H)
    # Keep the caller's check settings out of this check.
    set(CMAKE_REQUIRED_FLAGS "")
    set(CMAKE_REQUIRED_DEFINITIONS "")
    set(CMAKE_REQUIRED_INCLUDES "")
    set(CMAKE_REQUIRED_LIBRARIES "")
    set(CMAKE_REQUIRED_LINK_OPTIONS "")
    set(CMAKE_REQUIRED_QUIET ${arg_QUIET})
    if("CXX" IN_LIST languages)
      include(CheckIncludeFileCXX)
      check_include_file_cxx(cblas.h MOEKIT_HAVE_CBLAS_H)
    elseif("C" IN_LIST languages)
      include(CheckIncludeFile)
      check_include_file(cblas.h MOEKIT_HAVE_CBLAS_H)
    else()
      set(MOEKIT_HAVE_CBLAS_H TRUE) # no compiler to ask; trust BLAS::BLAS
    endif()
    if(NOT MOEKIT_HAVE_CBLAS_H)
      # Forget the failure so that a re-run after installing the package
      # checks again instead of reading the cached result.
      unset(MOEKIT_HAVE_CBLAS_H CACHE)
      set(${message_var} "moekit: cblas.h was not found. On Debian/Ubuntu: \
apt-get install libopenblas-dev"
        PARENT_SCOPE)
      return()
    endif()
  endif()

  # --- LAPACK (optional: merge/svd.hpp) ----------------------------------------
  set(MOEKIT_LAPACK_LIBRARIES "" PARENT_SCOPE)
  set(MOEKIT_HAVE_LAPACK FALSE PARENT_SCOPE)
  if("CXX" IN_LIST languages)
    if(NOT DEFINED MOEKIT_BLAS_HAS_LAPACK)
      include(CheckCXXSourceCompiles)
      set(CMAKE_REQUIRED_FLAGS "")
      set(CMAKE_REQUIRED_DEFINITIONS "")
      set(CMAKE_REQUIRED_INCLUDES "")
      set(CMAKE_REQUIRED_LINK_OPTIONS "")
      set(CMAKE_REQUIRED_LIBRARIES BLAS::BLAS)
      set(CMAKE_REQUIRED_QUIET ON)
      check_cxx_source_compiles("extern \"C\" void sgesdd_(); int main() { sgesdd_(); }" MOEKIT_BLAS_HAS_LAPACK)
      set(CMAKE_REQUIRED_LIBRARIES "")
    endif()
    if(MOEKIT_BLAS_HAS_LAPACK)
      set(MOEKIT_HAVE_LAPACK TRUE PARENT_SCOPE)
    else()
      if(NOT TARGET LAPACK::LAPACK)
        find_package(LAPACK QUIET)
      endif()
      if(TARGET LAPACK::LAPACK)
        set(MOEKIT_LAPACK_LIBRARIES LAPACK::LAPACK PARENT_SCOPE)
        set(MOEKIT_HAVE_LAPACK TRUE PARENT_SCOPE)
      elseif(NOT arg_QUIET)
        message(STATUS "moekit: no LAPACK (the BLAS does not export sgesdd_ and none was found): "
                       "merge/svd.hpp will not link. On Debian/Ubuntu: apt-get install libopenblas-dev")
      endif()
    endif()
  endif()

  # --- OpenMP ----------------------------------------------------------------
  if(NOT TARGET OpenMP::OpenMP_CXX)
    find_package(OpenMP QUIET COMPONENTS CXX)
    if(NOT TARGET OpenMP::OpenMP_CXX)
      set(${message_var} "moekit needs OpenMP for C++ (OpenMP::OpenMP_CXX); \
with g++ it comes with the compiler (libgomp)"
        PARENT_SCOPE)
      return()
    endif()
  endif()

  # --- zlib ------------------------------------------------------------------
  if(NOT TARGET ZLIB::ZLIB)
    find_package(ZLIB QUIET)
    if(NOT TARGET ZLIB::ZLIB)
      set(${message_var} "moekit needs zlib (ZLIB::ZLIB) to read gzipped data \
sets. On Debian/Ubuntu: apt-get install zlib1g-dev"
        PARENT_SCOPE)
      return()
    endif()
  endif()

  set(${message_var} "" PARENT_SCOPE)
  set(${ok_var} TRUE PARENT_SCOPE)
endfunction()

function(moekit_find_cuda_dependencies ok_var)
  set(${ok_var} FALSE PARENT_SCOPE)

  if(NOT TARGET CUDA::cudart OR NOT TARGET CUDA::cublas)
    find_package(CUDAToolkit QUIET)
    if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cudart
       OR NOT TARGET CUDA::cublas)
      return()
    endif()
  endif()
  if(NOT DEFINED CUDAToolkit_LIBRARY_DIR)
    # The targets came from an earlier lookup in another scope; ask again
    # (cheap, cached) for the directories.
    find_package(CUDAToolkit QUIET)
  endif()

  if(NOT TARGET CCCL::CCCL)
    # CCCL (Thrust, CUB, libcu++) ships with the toolkit and has a package
    # config under <toolkit>/lib64/cmake/cccl.
    find_package(CCCL CONFIG QUIET
      HINTS "${CUDAToolkit_LIBRARY_DIR}/cmake"
            "${CUDAToolkit_LIBRARY_ROOT}/lib64/cmake"
            "${CUDAToolkit_LIBRARY_ROOT}/lib/cmake")
  endif()
  if(NOT TARGET CCCL::CCCL)
    # Fallback: the headers are in the toolkit, in include/cccl since
    # CUDA 13 and directly in include before.
    set(cccl_include "")
    foreach(dir IN LISTS CUDAToolkit_INCLUDE_DIRS)
      if(EXISTS "${dir}/cccl/cub/cub.cuh")
        set(cccl_include "${dir}/cccl")
        break()
      elseif(EXISTS "${dir}/cub/cub.cuh")
        set(cccl_include "${dir}")
        break()
      endif()
    endforeach()
    if(cccl_include STREQUAL "")
      return()
    endif()
    add_library(CCCL::CCCL INTERFACE IMPORTED)
    set_target_properties(CCCL::CCCL PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${cccl_include}")
  endif()

  # Hand the toolkit's description to the caller.
  foreach(var IN ITEMS FOUND VERSION BIN_DIR INCLUDE_DIRS LIBRARY_DIR
                       LIBRARY_ROOT NVCC_EXECUTABLE)
    set(CUDAToolkit_${var} "${CUDAToolkit_${var}}" PARENT_SCOPE)
  endforeach()
  set(${ok_var} TRUE PARENT_SCOPE)
endfunction()

function(moekit_find_mpi_dependencies ok_var)
  set(MPI_CXX_SKIP_MPICXX ON)
  if(NOT TARGET MPI::MPI_CXX)
    find_package(MPI QUIET COMPONENTS CXX)
  endif()
  if(TARGET MPI::MPI_CXX)
    set(${ok_var} TRUE PARENT_SCOPE)
    set(MPI_CXX_LIBRARIES "${MPI_CXX_LIBRARIES}" PARENT_SCOPE)
  else()
    set(${ok_var} FALSE PARENT_SCOPE)
  endif()
endfunction()

function(moekit_find_nccl ok_var)
  set(${ok_var} FALSE PARENT_SCOPE)
  if(NOT TARGET NCCL::NCCL)
    if(NOT DEFINED CUDAToolkit_LIBRARY_DIR)
      find_package(CUDAToolkit QUIET)
    endif()
    find_path(MOEKIT_NCCL_INCLUDE_DIR nccl.h
      HINTS ${CUDAToolkit_INCLUDE_DIRS} "${CUDAToolkit_LIBRARY_ROOT}/include"
      DOC "Directory of NCCL's nccl.h (for moekit/dist/nccl.cuh)")
    find_library(MOEKIT_NCCL_LIBRARY NAMES nccl
      HINTS "${CUDAToolkit_LIBRARY_DIR}" "${CUDAToolkit_LIBRARY_ROOT}/lib64"
            "${CUDAToolkit_LIBRARY_ROOT}/lib"
      DOC "NCCL's library (for moekit/dist/nccl.cuh)")
    if(NOT MOEKIT_NCCL_INCLUDE_DIR OR NOT MOEKIT_NCCL_LIBRARY)
      return()
    endif()
    add_library(NCCL::NCCL UNKNOWN IMPORTED)
    set_target_properties(NCCL::NCCL PROPERTIES
      IMPORTED_LOCATION "${MOEKIT_NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${MOEKIT_NCCL_INCLUDE_DIR}")
  endif()
  set(${ok_var} TRUE PARENT_SCOPE)
endfunction()

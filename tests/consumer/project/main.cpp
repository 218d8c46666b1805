// Uses moekit through the umbrella header only; see CMakeLists.txt beside it.
// It calls into each library the CPU backend links, so a build that misses
// one (CMake target or pkg-config flags) fails to link.
#include <moekit.hpp>

#include <string_view>

// --expect-openmp-blas: the CMake package's rpath must have loaded OpenBLAS's
// OpenMP build (cmake/moekit_dependencies.cmake).
int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "--expect-openmp-blas" && moekit::blas_threading_name() != "OpenMP")
    return 4;

  moekit::shape<2, moekit::dyn> s{3};
  if (s.size() != 6) return 1;

  // A matrix product goes through CBLAS (BLAS).
  const auto a = moekit::full<float>(moekit::shape<2, 3>{}, 1.0f);  // (2, 3)
  const auto b = moekit::full<float>(moekit::shape<3, 4>{}, 2.0f);  // (3, 4)
  const auto c = moekit::matmul(a, b);                               // (2, 4), each 1*2*3
  for (std::size_t i = 0; i < c.size(); ++i)
    if (c[i] != 6.0f) return 2;

  // The IDX reader reads gzipped files through zlib; a missing file is an io_error.
  try {
    (void)moekit::io::read_idx("no-such-file.idx.gz");
    return 3;
  } catch (const moekit::io_error&) {
  }
  return 0;
}

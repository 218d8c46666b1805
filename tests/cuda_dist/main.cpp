// The Catch2 main of the NCCL tests: MPI lives for the whole run (NCCL's
// communicators are built from communicator::world()), and every rank runs
// every test case (mpirun -np 1 bin/moekit_test_nccl; with one GPU per rank
// also -np P). Checks are CHECKs wherever a collective follows, as in tests/dist.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <moekit/dist/communicator.hpp>

int main(int argc, char** argv) {
  moekit::dist::environment mpi(argc, argv);
  const int failed = Catch::Session().run(argc, argv);
  return failed;
}

// The Catch2 main of the distributed tests: MPI lives for the whole run, and
// every rank runs every test case (mpirun -np P bin/moekit_test_dist). A
// failed check on any rank makes that rank, and so mpirun, exit non-zero.
// Checks are CHECKs, not REQUIREs, wherever a collective follows: a rank that
// left a test case early would leave its peers waiting in the next exchange.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <moekit/dist/communicator.hpp>

int main(int argc, char** argv) {
  moekit::dist::environment mpi(argc, argv);
  const int failed = Catch::Session().run(argc, argv);
  return failed;
}

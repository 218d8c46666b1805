// moekit/dist.hpp — expert and data parallelism over MPI (link moekit::dist):
// the communicator, the differentiable row exchange, dist::expert_parallel (a
// moe::layer whose experts are sharded over ranks), gradient synchronisation
// and global-norm clipping, and sharded checkpoints loadable on any rank
// count. The CUDA transport (NCCL, pinned host buffers) is dist/nccl.cuh, for
// .cu files. docs/distributed.md.
#pragma once

#include "moe.hpp"
#include "dist/checkpoint.hpp"
#include "dist/communicator.hpp"
#include "dist/data_parallel.hpp"
#include "dist/exchange.hpp"
#include "dist/expert_parallel.hpp"

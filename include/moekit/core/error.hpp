// moekit/core/error.hpp — the exception hierarchy. Every error moekit raises
// derives from moekit::error and names the op, shape, file or flag involved.
#pragma once

#include <stdexcept>
#include <string>

namespace moekit {

/// Base of every exception moekit throws.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Shapes that do not fit the op: `matmul: (2, 3) x (4, 5): inner dimensions 3 != 4`.
class shape_error : public error {
 public:
  using error::error;
};

/// A value outside what the op accepts (k > columns, negative probability, no tape, ...).
class value_error : public error {
 public:
  using error::error;
};

/// A file that cannot be read or written, or whose contents are malformed.
class io_error : public error {
 public:
  using error::error;
};

/// Memory that cannot be had: a request over the allocation limit
/// (core/allocation.hpp) or one the allocator refused; the message names the size.
class allocation_error : public error {
 public:
  using error::error;
};

/// A failed CUDA runtime or library call; the message names the call and the op.
class cuda_error : public error {
 public:
  using error::error;
};

/// A failed call of the process transport (MPI, NCCL); the message names the
/// call and the op: `dist: MPI_Alltoallv (expert_parallel forward): ...`.
class dist_error : public error {
 public:
  using error::error;
};

}  // namespace moekit

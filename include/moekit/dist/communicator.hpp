// moekit/dist/communicator.hpp — the process transport: a small, typed face of
// MPI (the only moekit header that includes <mpi.h>). What the distributed
// layers need and nothing more: rank and size, an all-to-all of counts, an
// all-to-all-v of rows (blocking and non-blocking), an all-reduce, a
// broadcast and a barrier. Every MPI call's error comes back as dist_error
// naming the call and the op that made it; the communicator never aborts.
//
//   int main(int argc, char** argv) {
//     moekit::dist::environment mpi(argc, argv);      // MPI_Init_thread ... MPI_Finalize
//     auto comm = moekit::dist::communicator::world();
//     std::printf("rank %d of %d\n", comm.rank(), comm.size());
//   }
//
// Rows: a row is `row_elems` consecutive elements; counts and displacements
// are in rows, so a count overflows MPI's int only past 2^31 rows (checked).
#pragma once

// The C interface only: MPI's deprecated C++ bindings are neither used nor
// clean under -Wextra.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace moekit::dist {

namespace detail {

/// dist_error "dist: <call> (<op>): <MPI's message>" unless rc is MPI_SUCCESS.
inline void check(int rc, const char* call, const std::string& op) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw dist_error("dist: " + std::string(call) + " (" + op + "): " +
                   (len > 0 ? std::string(text, static_cast<std::size_t>(len)) : "error " + std::to_string(rc)));
}

/// MPI's type for an arithmetic element type.
template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return MPI_UINT64_T;
  else static_assert(sizeof(T) == 0, "dist: no MPI type for this element type (float, double, int32, int64, uint64)");
}

inline int checked_int(std::size_t n, const char* what, const std::string& op) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw dist_error("dist: " + std::string(what) + " (" + op + "): " + std::to_string(n) +
                     " is over MPI's count limit " + std::to_string(INT_MAX));
  return static_cast<int>(n);
}

/// value_error unless there is one send and one receive count per rank.
inline void check_peer_counts(std::span<const std::size_t> send_rows, std::span<const std::size_t> recv_rows,
                              std::size_t ranks, const std::string& op, const char* who) {
  if (send_rows.size() != ranks || recv_rows.size() != ranks)
    throw value_error("dist: all_to_all_v (" + op + "): counts for " + std::to_string(send_rows.size()) + " and " +
                      std::to_string(recv_rows.size()) + " ranks, " + who + " has " + std::to_string(ranks));
}

/// A contiguous datatype of one row of `bytes` bytes, freed on scope exit.
class row_type {
 public:
  row_type(std::size_t bytes, const std::string& op) {
    check(MPI_Type_contiguous(checked_int(bytes, "MPI_Type_contiguous", op), MPI_BYTE, &type_),
          "MPI_Type_contiguous", op);
    check(MPI_Type_commit(&type_), "MPI_Type_commit", op);
  }
  ~row_type() {
    if (type_ != MPI_DATATYPE_NULL) MPI_Type_free(&type_);
  }
  row_type(const row_type&) = delete;
  row_type& operator=(const row_type&) = delete;
  MPI_Datatype get() const noexcept { return type_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

/// Counts and displacements of an all-to-all-v, as MPI's ints.
struct layout {
  std::vector<int> counts, displs;
  layout(std::span<const std::size_t> rows, const std::string& op) {
    std::size_t at = 0;
    for (std::size_t n : rows) {
      counts.push_back(checked_int(n, "MPI_Alltoallv counts", op));
      displs.push_back(checked_int(at, "MPI_Alltoallv displacements", op));
      at += n;
    }
  }
};

}  // namespace detail

/// MPI for the life of this object: MPI_Init_thread (MPI_THREAD_FUNNELED:
/// OpenMP threads inside a rank, MPI calls from its main thread) and
/// MPI_Finalize, unless MPI was already initialised by someone else.
class environment {
 public:
  environment() : environment(nullptr, nullptr) {}
  environment(int& argc, char**& argv) : environment(&argc, &argv) {}
  ~environment() {
    int finalized = 0;
    if (owner_ && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
  }
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;

  /// Whether MPI is initialised (by anyone) and not yet finalised.
  static bool active() {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
  }

 private:
  environment(int* argc, char*** argv) {
    int init = 0;
    detail::check(MPI_Initialized(&init), "MPI_Initialized", "environment");
    if (init) return;
    int provided = 0;
    detail::check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", "environment");
    owner_ = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  bool owner_ = false;
};

/// A non-blocking operation in flight; wait() completes it (the destructor
/// waits too, so buffers are never released under a running exchange).
class request {
 public:
  request() = default;
  request(MPI_Request r, std::string op, std::shared_ptr<const void> keep = {})
      : r_(r), op_(std::move(op)), keep_(std::move(keep)) {}
  request(request&& o) noexcept : r_(o.r_), op_(std::move(o.op_)), keep_(std::move(o.keep_)) {
    o.r_ = MPI_REQUEST_NULL;
  }
  request& operator=(request&& o) noexcept {
    if (this != &o) {
      finish_quietly();
      r_ = o.r_, op_ = std::move(o.op_), keep_ = std::move(o.keep_);
      o.r_ = MPI_REQUEST_NULL;
    }
    return *this;
  }
  ~request() { finish_quietly(); }

  void wait() {
    if (r_ == MPI_REQUEST_NULL) return;
    detail::check(MPI_Wait(&r_, MPI_STATUS_IGNORE), "MPI_Wait", op_);
  }
  /// Whether it has completed (MPI_Test). Calling this between pieces of
  /// compute drives MPI's progress engine: without a progress thread, a
  /// non-blocking exchange mostly advances only inside MPI calls.
  bool test() {
    if (r_ == MPI_REQUEST_NULL) return true;
    int flag = 0;
    detail::check(MPI_Test(&r_, &flag, MPI_STATUS_IGNORE), "MPI_Test", op_);
    return flag != 0;
  }
  bool done() const noexcept { return r_ == MPI_REQUEST_NULL; }

 private:
  void finish_quietly() noexcept {
    if (r_ != MPI_REQUEST_NULL) MPI_Wait(&r_, MPI_STATUS_IGNORE);
  }
  MPI_Request r_ = MPI_REQUEST_NULL;
  std::string op_;
  std::shared_ptr<const void> keep_;  // what MPI reads until completion (the count arrays)
};

class communicator {
 public:
  /// All processes (MPI_COMM_WORLD); MPI must be initialised (an environment alive).
  static communicator world() {
    if (!environment::active())
      throw dist_error("dist: communicator::world: MPI is not initialised (create a moekit::dist::environment first)");
    detail::check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", "world");
    return communicator(MPI_COMM_WORLD);
  }

  /// This process alone (MPI_COMM_SELF): one rank.
  static communicator self() {
    if (!environment::active())
      throw dist_error("dist: communicator::self: MPI is not initialised (create a moekit::dist::environment first)");
    return communicator(MPI_COMM_SELF);
  }

  /// The ranks with the same `color`, ordered by `key` (MPI_Comm_split): e.g.
  /// split(rank / 2, rank) makes groups of two. The new communicator is freed
  /// when its last copy goes.
  communicator split(int color, int key) const {
    MPI_Comm c = MPI_COMM_NULL;
    detail::check(MPI_Comm_split(comm_, color, key, &c), "MPI_Comm_split", "split");
    detail::check(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", "split");
    communicator out(c);
    out.owned_ = std::shared_ptr<void>(nullptr, [c](void*) mutable {
      int fin = 0;
      if (MPI_Finalized(&fin) == MPI_SUCCESS && !fin) MPI_Comm_free(&c);
    });
    return out;
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  /// size() as a count.
  std::size_t ranks() const noexcept { return static_cast<std::size_t>(size_); }
  MPI_Comm native() const noexcept { return comm_; }

  /// Each rank sends `per_rank` values to every rank (send: size() · per_rank,
  /// block p for rank p) and receives as many from each (block p from rank p).
  template <class T>
  std::vector<T> all_to_all(std::span<const T> send, std::size_t per_rank, const std::string& op) const {
    if (send.size() != per_rank * ranks())
      throw value_error("dist: all_to_all (" + op + "): " + std::to_string(send.size()) + " values for " +
                        std::to_string(ranks()) + " ranks of " + std::to_string(per_rank));
    std::vector<T> recv(send.size());
    const int n = detail::checked_int(per_rank, "MPI_Alltoall", op);
    detail::check(MPI_Alltoall(send.data(), n, detail::mpi_type<T>(), recv.data(), n, detail::mpi_type<T>(), comm_),
                  "MPI_Alltoall", op);
    return recv;
  }

  /// Rows of `row_bytes` bytes: send_rows[p] consecutive rows of `send` go to
  /// rank p (in rank order), recv_rows[p] rows arrive from rank p into `recv`
  /// (in rank order). recv_rows must match what the peers send.
  void all_to_all_v(const void* send, std::span<const std::size_t> send_rows, void* recv,
                    std::span<const std::size_t> recv_rows, std::size_t row_bytes, const std::string& op) const {
    check_peers(send_rows, recv_rows, op);
    if (row_bytes == 0) return;
    const detail::row_type row(row_bytes, op);
    const detail::layout s(send_rows, op), r(recv_rows, op);
    detail::check(MPI_Alltoallv(send, s.counts.data(), s.displs.data(), row.get(), recv, r.counts.data(),
                                r.displs.data(), row.get(), comm_),
                  "MPI_Alltoallv", op);
  }
  /// The same, non-blocking (MPI_Ialltoallv): both buffers must stay alive
  /// and untouched until the request completes.
  request start_all_to_all_v(const void* send, std::span<const std::size_t> send_rows, void* recv,
                             std::span<const std::size_t> recv_rows, std::size_t row_bytes,
                             const std::string& op) const {
    check_peers(send_rows, recv_rows, op);
    if (row_bytes == 0) return {};
    const detail::row_type row(row_bytes, op);  // MPI keeps its own reference while the operation runs
    // A non-blocking collective reads its count arrays until it completes:
    // the request keeps them.
    const auto layouts = std::make_shared<std::pair<detail::layout, detail::layout>>(
        detail::layout(send_rows, op), detail::layout(recv_rows, op));
    const auto& [s, r] = *layouts;
    MPI_Request req = MPI_REQUEST_NULL;
    detail::check(MPI_Ialltoallv(send, s.counts.data(), s.displs.data(), row.get(), recv, r.counts.data(),
                                 r.displs.data(), row.get(), comm_, &req),
                  "MPI_Ialltoallv", op);
    return request(req, op, layouts);
  }

  /// data (n) <- Σ over ranks, in place.
  template <class T>
  void all_reduce_sum(T* data, std::size_t n, const std::string& op) const {
    if (n == 0) return;
    detail::check(MPI_Allreduce(MPI_IN_PLACE, data, detail::checked_int(n, "MPI_Allreduce", op),
                                detail::mpi_type<T>(), MPI_SUM, comm_),
                  "MPI_Allreduce", op);
  }
  /// The largest value over ranks.
  template <class T>
  T all_reduce_max(T value, const std::string& op) const {
    detail::check(MPI_Allreduce(MPI_IN_PLACE, &value, 1, detail::mpi_type<T>(), MPI_MAX, comm_), "MPI_Allreduce",
                  op);
    return value;
  }
  /// bytes (n) <- root's bytes.
  void broadcast(void* data, std::size_t bytes, int root, const std::string& op) const {
    if (bytes == 0) return;
    detail::check(MPI_Bcast(data, detail::checked_int(bytes, "MPI_Bcast", op), MPI_BYTE, root, comm_), "MPI_Bcast",
                  op);
  }
  void barrier(const std::string& op = "barrier") const { detail::check(MPI_Barrier(comm_), "MPI_Barrier", op); }

 private:
  explicit communicator(MPI_Comm c) : comm_(c) {
    detail::check(MPI_Comm_rank(c, &rank_), "MPI_Comm_rank", "communicator");
    detail::check(MPI_Comm_size(c, &size_), "MPI_Comm_size", "communicator");
  }
  void check_peers(std::span<const std::size_t> send_rows, std::span<const std::size_t> recv_rows,
                   const std::string& op) const {
    detail::check_peer_counts(send_rows, recv_rows, ranks(), op, "the communicator");
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::shared_ptr<void> owned_;  // frees a communicator this one made (split)
};

}  // namespace moekit::dist

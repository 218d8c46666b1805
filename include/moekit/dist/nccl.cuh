// moekit/dist/nccl.cuh — the device transport of the expert exchange on the
// CUDA backend: NCCL for rows that stay on the GPU, and a fallback that stages
// them through pinned host buffers over MPI. Include from .cu files (nvcc);
// link NCCL (CMake: moekit_find_nccl, target NCCL::NCCL) besides moekit::cuda
// and moekit::dist.
//
//   dist::environment mpi(argc, argv);
//   auto comm = dist::communicator::world();
//   cudaSetDevice(local_rank);                         // one GPU per rank, chosen first
//   dist::nccl_communicator nccl(comm);                // collective: every rank
//   dist::nccl_scope use(comm, nccl);                  // cuda row exchanges over comm now use NCCL
//   auto y = ep(x);                                    // an expert_parallel<..., moekit::cuda> layer
//
// What each piece does, and where the host waits for the device:
//
//   nccl_communicator::exchange_counts   P·k int64 counts, device to device
//       (grouped ncclSend/ncclRecv on the stream); no host sync.
//   exchange_counts_to_host              the same, then the sent and received
//       counts copied to the host: ONE cudaStreamSynchronize. This is the one
//       sync of an NCCL exchange: the host must know how many rows arrive to
//       size (allocate) the receive buffer, and ncclSend/ncclRecv take their
//       counts as host arguments.
//   nccl_communicator::all_to_all_v      rows with host-known per-peer counts,
//       device to device (grouped ncclSend/ncclRecv on the stream); no host sync.
//   nccl_communicator::all_reduce_sum    in place on the device (gradient
//       synchronisation); no host sync.
//   staged_exchange                      device -> pinned host -> MPI -> pinned
//       host -> device: one cudaStreamSynchronize per exchange (MPI reads host
//       memory, so the rows must have arrived there), the copy back is async.
//   exchange_device_rows                 what dist::detail::exchange_tensor
//       does for tensor<T, S, moekit::cuda>: NCCL inside an nccl_scope for the
//       communicator, else the staged fallback; no sync beyond the above.
//       Keep the nccl_scope alive over forward AND backward: the backward's
//       exchange looks it up again (same host thread).
//
// Every failed NCCL or CUDA call of this file throws moekit::dist_error naming
// the call and the op: "dist: ncclGroupEnd (expert_parallel): unhandled cuda error ...".
// A failure on one rank can leave its peers waiting in the next collective, as
// with MPI; NCCL communicators here are blocking (the default).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#if !defined(NCCL_VERSION_CODE) || NCCL_VERSION_CODE < NCCL_VERSION(2, 13, 0)
#error "moekit/dist/nccl.cuh needs NCCL 2.13 or newer (ncclGetLastError, grouped ncclSend/ncclRecv to self)"
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../backend/cuda/cuda.cuh"
#include "../backend/cuda/stream.cuh"
#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../tensor/tensor.hpp"
#include "communicator.hpp"

namespace moekit::dist {

namespace detail {

/// dist_error "dist: <call> (<op>): <NCCL's message>[: <NCCL's last error>]" unless rc is ncclSuccess.
inline void check_nccl(ncclResult_t rc, const char* call, const std::string& op, ncclComm_t comm = nullptr) {
  if (rc == ncclSuccess) return;
  std::string what = ncclGetErrorString(rc);
  if (const char* last = ncclGetLastError(comm); last && *last) what += std::string(": ") + last;
  throw dist_error("dist: " + std::string(call) + " (" + op + "): " + what);
}

/// dist_error "dist: <call> (<op>): <CUDA's name> (<CUDA's message>)" unless err is cudaSuccess.
inline void check_cuda_call(cudaError_t err, const char* call, const std::string& op) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  throw dist_error("dist: " + std::string(call) + " (" + op + "): " + cudaGetErrorName(err) + " (" +
                   cudaGetErrorString(err) + ")");
}

/// NCCL's type for an element type.
template <class T>
ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return ncclInt32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return ncclInt64;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return ncclUint8;
  else if constexpr (std::is_same_v<T, moekit::half>) return ncclFloat16;  // IEEE binary16 bits
  else if constexpr (std::is_same_v<T, moekit::bf16>) return ncclBfloat16;
  else static_assert(sizeof(T) == 0, "dist: no NCCL type for this element type (float, double, int32, int64, uint8, half, bf16)");
}

/// The current CUDA device.
inline int current_device(const std::string& op) {
  int device = 0;
  check_cuda_call(cudaGetDevice(&device), "cudaGetDevice", op);
  return device;
}

/// Σ counts.
inline std::size_t total(std::span<const std::size_t> counts) noexcept {
  std::size_t n = 0;
  for (std::size_t c : counts) n += c;
  return n;
}

}  // namespace detail

/// An NCCL communicator (ncclComm_t) over the processes of a dist::communicator,
/// one rank per process, each on the CUDA device that was current when it was
/// built; its calls must run with that device current. Move-only.
class nccl_communicator {
 public:
  /// Collective over `comm`: rank 0 makes an ncclUniqueId, communicator::broadcast
  /// hands it to every rank, each joins with ncclCommInitRank on its current
  /// device (select it first: two ranks on one device is an NCCL error).
  explicit nccl_communicator(const communicator& comm, const std::string& op = "nccl_communicator")
      : rank_(comm.rank()), size_(comm.size()), device_(detail::current_device(op)) {
    // Rank 0 broadcasts whether it got an id, so a failure there fails every
    // rank here instead of leaving them waiting in ncclCommInitRank.
    struct {
      std::int32_t ok = 1;
      ncclUniqueId id{};
    } msg;
    ncclResult_t rc = ncclSuccess;
    if (comm.rank() == 0) {
      rc = ncclGetUniqueId(&msg.id);
      msg.ok = rc == ncclSuccess ? 1 : 0;
    }
    comm.broadcast(&msg, sizeof msg, 0, op + " unique id");
    if (comm.rank() == 0) detail::check_nccl(rc, "ncclGetUniqueId", op);
    if (!msg.ok) throw dist_error("dist: ncclGetUniqueId (" + op + "): failed on rank 0");
    detail::check_nccl(ncclCommInitRank(&comm_, size_, msg.id, rank_), "ncclCommInitRank", op);
  }

  /// One process, no MPI: a communicator of one rank on the current device
  /// (ncclCommInitAll over that one device).
  static nccl_communicator single(const std::string& op = "nccl_communicator::single") {
    const int device = detail::current_device(op);
    ncclComm_t c = nullptr;
    detail::check_nccl(ncclCommInitAll(&c, 1, &device), "ncclCommInitAll", op);
    return nccl_communicator(c, 0, 1, device);
  }

  ~nccl_communicator() {
    // Errors are dropped: this runs in destructors, also at exit.
    if (comm_) (void)ncclCommDestroy(comm_);
  }
  nccl_communicator(nccl_communicator&& o) noexcept
      : comm_(std::exchange(o.comm_, nullptr)), rank_(o.rank_), size_(o.size_), device_(o.device_) {}
  nccl_communicator& operator=(nccl_communicator&& o) noexcept {
    if (this != &o) {
      if (comm_) (void)ncclCommDestroy(comm_);
      comm_ = std::exchange(o.comm_, nullptr);
      rank_ = o.rank_, size_ = o.size_, device_ = o.device_;
    }
    return *this;
  }
  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  std::size_t ranks() const noexcept { return static_cast<std::size_t>(size_); }
  /// The CUDA device this rank's communicator lives on.
  int device() const noexcept { return device_; }
  ncclComm_t native() const noexcept { return comm_; }

  /// Counts on the device: send (P · per_rank), block q for rank q; recv
  /// (P · per_rank) <- block p from rank p. Grouped ncclSend/ncclRecv of
  /// int64 on `stream`; no host sync (the counts stay on the device: see
  /// exchange_counts_to_host for the one sync that sizing a receive needs).
  void exchange_counts(const std::int64_t* send, std::int64_t* recv, std::size_t per_rank, cudaStream_t stream,
                       const std::string& op) const {
    check_device(op);
    if (per_rank == 0) return;
    group(op, [&](auto&& step) {
      for (int q = 0; q < size_; ++q) {
        const std::size_t at = static_cast<std::size_t>(q) * per_rank;
        step(ncclSend(send + at, per_rank, ncclInt64, q, comm_, stream), "ncclSend");
        step(ncclRecv(recv + at, per_rank, ncclInt64, q, comm_, stream), "ncclRecv");
      }
    });
  }

  /// Rows of `row_bytes` bytes, device to device: send_rows[q] consecutive
  /// rows of `send` go to rank q (in rank order), recv_rows[p] rows arrive
  /// from rank p into `recv` (in rank order). The counts are host values and
  /// must match what the peers send. Grouped ncclSend/ncclRecv of bytes on
  /// `stream`; no host sync. A peer with no rows either way is skipped on
  /// both sides (its counts agree).
  void all_to_all_v(const void* send, std::span<const std::size_t> send_rows, void* recv,
                    std::span<const std::size_t> recv_rows, std::size_t row_bytes, cudaStream_t stream,
                    const std::string& op) const {
    check_peers(send_rows, recv_rows, op);
    check_device(op);
    if (row_bytes == 0 || detail::total(send_rows) + detail::total(recv_rows) == 0) return;
    const auto* from = static_cast<const unsigned char*>(send);
    auto* to = static_cast<unsigned char*>(recv);
    group(op, [&](auto&& step) {
      std::size_t sent = 0, received = 0;  // rows before peer q
      for (int q = 0; q < size_; ++q) {
        const auto i = static_cast<std::size_t>(q);
        if (send_rows[i] != 0)
          step(ncclSend(from + sent * row_bytes, send_rows[i] * row_bytes, ncclUint8, q, comm_, stream), "ncclSend");
        if (recv_rows[i] != 0)
          step(ncclRecv(to + received * row_bytes, recv_rows[i] * row_bytes, ncclUint8, q, comm_, stream),
               "ncclRecv");
        sent += send_rows[i];
        received += recv_rows[i];
      }
    });
  }

  /// data (n) <- Σ over ranks, in place on the device (ncclAllReduce on
  /// `stream`; gradient synchronisation); no host sync.
  template <class T>
  void all_reduce_sum(T* data, std::size_t n, cudaStream_t stream, const std::string& op) const {
    check_device(op);
    if (n == 0) return;
    detail::check_nccl(ncclAllReduce(data, data, n, detail::nccl_type<T>(), ncclSum, comm_, stream), "ncclAllReduce",
                       op, comm_);
  }

 private:
  nccl_communicator(ncclComm_t c, int rank, int size, int device) noexcept
      : comm_(c), rank_(rank), size_(size), device_(device) {}

  /// ncclGroupStart; body(step) with step(rc, call) for each call; ncclGroupEnd,
  /// also after a failed call (the group must be closed), then the first error.
  template <class Body>
  void group(const std::string& op, Body&& body) const {
    detail::check_nccl(ncclGroupStart(), "ncclGroupStart", op, comm_);
    ncclResult_t first = ncclSuccess;
    const char* failed = "";
    body([&](ncclResult_t rc, const char* call) {
      if (first == ncclSuccess && rc != ncclSuccess) {
        first = rc;
        failed = call;
      }
    });
    const ncclResult_t end = ncclGroupEnd();
    detail::check_nccl(first, failed, op, comm_);
    detail::check_nccl(end, "ncclGroupEnd", op, comm_);
  }

  void check_device(const std::string& op) const {
    const int device = detail::current_device(op);
    if (device != device_)
      throw dist_error("dist: " + op + ": the NCCL communicator lives on device " + std::to_string(device_) +
                       ", the current device is " + std::to_string(device));
  }

  void check_peers(std::span<const std::size_t> send_rows, std::span<const std::size_t> recv_rows,
                   const std::string& op) const {
    detail::check_peer_counts(send_rows, recv_rows, ranks(), op, "the NCCL communicator");
  }

  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
};

/// Counts exchanged on the device and then read by the host.
struct host_counts {
  std::vector<std::int64_t> sent;      // (P · per_rank) block q: to rank q
  std::vector<std::int64_t> received;  // (P · per_rank) block p: from rank p
};

/// nccl.exchange_counts on `stream`, then both count arrays copied to the
/// host. THE HOST SYNC of the NCCL path: one cudaStreamSynchronize(stream)
/// after the two cudaMemcpyAsync, because the host needs the received total
/// to allocate the receive buffer and the per-peer counts as ncclSend/ncclRecv
/// arguments. send: (P · per_rank) device counts.
inline host_counts exchange_counts_to_host(const nccl_communicator& nccl, const std::int64_t* send,
                                           std::size_t per_rank, cudaStream_t stream, const std::string& op) {
  const std::size_t n = nccl.ranks() * per_rank;
  host_counts out{std::vector<std::int64_t>(n), std::vector<std::int64_t>(n)};
  if (n == 0) return out;
  const stream_guard on(stream);  // the receive buffer is allocated and freed in `stream`'s order
  auto recv = tensor<std::int64_t, shape<dyn>, moekit::cuda>(shape<dyn>{n});
  nccl.exchange_counts(send, recv.data(), per_rank, stream, op);
  const std::size_t bytes = n * sizeof(std::int64_t);
  detail::check_cuda_call(cudaMemcpyAsync(out.sent.data(), send, bytes, cudaMemcpyDeviceToHost, stream),
                          "cudaMemcpyAsync", op + " counts");
  detail::check_cuda_call(cudaMemcpyAsync(out.received.data(), recv.data(), bytes, cudaMemcpyDeviceToHost, stream),
                          "cudaMemcpyAsync", op + " counts");
  detail::check_cuda_call(cudaStreamSynchronize(stream), "cudaStreamSynchronize", op + " counts");
  return out;
}

/// The fallback without NCCL: device rows staged through pinned host buffers
/// (cudaMallocHost, kept and reused across calls, grown to the largest
/// exchange seen) and exchanged with communicator::all_to_all_v. Per call:
/// one device-to-host copy of the rows sent, one cudaStreamSynchronize (MPI
/// reads host memory), one blocking MPI_Alltoallv, one host-to-device copy of
/// the rows received, queued on the stream without waiting (pinned memory
/// makes it truly asynchronous; the next call waits for it before reusing
/// the buffer). Move-only; one object per host thread.
class staged_exchange {
 public:
  staged_exchange() = default;
  ~staged_exchange() { release(); }
  staged_exchange(staged_exchange&& o) noexcept
      : send_(std::exchange(o.send_, buffer{})), recv_(std::exchange(o.recv_, buffer{})),
        copied_back_(std::exchange(o.copied_back_, nullptr)) {}
  staged_exchange& operator=(staged_exchange&& o) noexcept {
    if (this != &o) {
      release();
      send_ = std::exchange(o.send_, buffer{});
      recv_ = std::exchange(o.recv_, buffer{});
      copied_back_ = std::exchange(o.copied_back_, nullptr);
    }
    return *this;
  }
  staged_exchange(const staged_exchange&) = delete;
  staged_exchange& operator=(const staged_exchange&) = delete;

  /// Like nccl_communicator::all_to_all_v (device buffers, host counts, rows
  /// of `row_bytes` bytes), over MPI through the host, ordered on `stream`.
  void all_to_all_v(const communicator& comm, const void* send, std::span<const std::size_t> send_rows, void* recv,
                    std::span<const std::size_t> recv_rows, std::size_t row_bytes, cudaStream_t stream,
                    const std::string& op) {
    const std::size_t send_bytes = detail::total(send_rows) * row_bytes;
    const std::size_t recv_bytes = detail::total(recv_rows) * row_bytes;
    // The last call's copy back may still read recv_: wait for it before
    // reusing or growing the buffer.
    if (copied_back_)
      detail::check_cuda_call(cudaEventSynchronize(copied_back_), "cudaEventSynchronize", op + " staging");
    else
      detail::check_cuda_call(cudaEventCreateWithFlags(&copied_back_, cudaEventDisableTiming), "cudaEventCreate",
                              op + " staging");
    reserve(send_, send_bytes, op);
    reserve(recv_, recv_bytes, op);
    if (send_bytes != 0) {
      detail::check_cuda_call(cudaMemcpyAsync(send_.data, send, send_bytes, cudaMemcpyDeviceToHost, stream),
                              "cudaMemcpyAsync", op + " staging");
    }
    // The staging sync: MPI reads send_ from the host.
    detail::check_cuda_call(cudaStreamSynchronize(stream), "cudaStreamSynchronize", op + " staging");
    comm.all_to_all_v(send_.data, send_rows, recv_.data, recv_rows, row_bytes, op);
    if (recv_bytes != 0) {
      detail::check_cuda_call(cudaMemcpyAsync(recv, recv_.data, recv_bytes, cudaMemcpyHostToDevice, stream),
                              "cudaMemcpyAsync", op + " staging");
    }
    detail::check_cuda_call(cudaEventRecord(copied_back_, stream), "cudaEventRecord", op + " staging");
  }

  /// Pinned bytes held (both buffers).
  std::size_t capacity() const noexcept { return send_.bytes + recv_.bytes; }

 private:
  struct buffer {
    void* data = nullptr;
    std::size_t bytes = 0;
  };

  static void reserve(buffer& b, std::size_t bytes, const std::string& op) {
    if (bytes <= b.bytes) return;
    const std::size_t want = std::max(bytes, b.bytes + b.bytes / 2);  // grow by 1.5x at least
    if (b.data) detail::check_cuda_call(cudaFreeHost(b.data), "cudaFreeHost", op + " staging");
    b = buffer{};
    detail::check_cuda_call(cudaMallocHost(&b.data, want), "cudaMallocHost", op + " staging");
    b.bytes = want;
  }

  void release() noexcept {
    // Errors are dropped: this runs in destructors, also at exit.
    if (copied_back_) {
      (void)cudaEventSynchronize(copied_back_);
      (void)cudaEventDestroy(copied_back_);
    }
    if (send_.data) (void)cudaFreeHost(send_.data);
    if (recv_.data) (void)cudaFreeHost(recv_.data);
    (void)cudaGetLastError();
    send_ = recv_ = buffer{};
    copied_back_ = nullptr;
  }

  buffer send_, recv_;
  cudaEvent_t copied_back_ = nullptr;
};

namespace detail {

/// The NCCL communicators registered for MPI communicators on this host
/// thread (innermost nccl_scope last).
inline std::vector<std::pair<MPI_Comm, const nccl_communicator*>>& nccl_registry() {
  thread_local std::vector<std::pair<MPI_Comm, const nccl_communicator*>> registry;
  return registry;
}

/// This thread's staging buffers for exchanges without NCCL.
inline staged_exchange& thread_staged_exchange() {
  thread_local staged_exchange staged;
  return staged;
}

}  // namespace detail

/// While alive, exchange_device_rows over `comm` (and so expert_parallel
/// layers on moekit::cuda, once wired) uses `nccl` instead of the staged
/// fallback, on this host thread; scopes nest. `nccl` must outlive the scope
/// and span the same processes in the same rank order as `comm`.
class nccl_scope {
 public:
  nccl_scope(const communicator& comm, const nccl_communicator& nccl) {
    if (nccl.size() != comm.size() || nccl.rank() != comm.rank())
      throw value_error("dist: nccl_scope: NCCL rank " + std::to_string(nccl.rank()) + " of " +
                        std::to_string(nccl.size()) + " for MPI rank " + std::to_string(comm.rank()) + " of " +
                        std::to_string(comm.size()));
    detail::nccl_registry().emplace_back(comm.native(), &nccl);
  }
  ~nccl_scope() { detail::nccl_registry().pop_back(); }
  nccl_scope(const nccl_scope&) = delete;
  nccl_scope& operator=(const nccl_scope&) = delete;

  /// The NCCL communicator registered for `comm` on this thread, or nullptr.
  static const nccl_communicator* find(const communicator& comm) noexcept {
    const auto& r = detail::nccl_registry();
    for (auto it = r.rbegin(); it != r.rend(); ++it)
      if (it->first == comm.native()) return it->second;
    return nullptr;
  }
};

/// rows (N, ...) on the device -> (Σ recv_rows, ...): send_rows[q] consecutive
/// rows go to rank q, recv_rows[p] arrive from rank p, in source-rank order.
/// What dist::detail::exchange_tensor does for tensor<T, S, moekit::cuda>
/// (found there by argument-dependent lookup when this header is included):
/// grouped ncclSend/ncclRecv when an nccl_scope for `comm` is alive, else
/// the pinned-host staging; both on current_stream(), which the result is
/// allocated on and ordered after. The counts are host values (the host sized
/// the result with them: see exchange_counts_to_host); no further sync on the
/// NCCL path, one (staging) on the fallback.
template <class T, class S>
tensor<T, S, moekit::cuda> exchange_device_rows(const communicator& comm, const tensor<T, S, moekit::cuda>& rows,
                                                std::span<const std::size_t> send_rows,
                                                std::span<const std::size_t> recv_rows, const std::string& op) {
  static_assert(S::rank() >= 1, "exchange_device_rows: rows need a first (row) axis");
  const std::size_t n = rows.extent(0);
  if (send_rows.size() != comm.ranks() || recv_rows.size() != comm.ranks())
    throw value_error("dist: " + op + ": counts for " + std::to_string(send_rows.size()) + " and " +
                      std::to_string(recv_rows.size()) + " ranks, the communicator has " +
                      std::to_string(comm.ranks()));
  if (detail::total(send_rows) != n)
    throw value_error("dist: " + op + ": " + std::to_string(detail::total(send_rows)) + " rows to send, " +
                      rows.shape().str() + " given");
  auto ext = rows.shape().extents();
  std::size_t row_elems = 1;  // the product of the other extents (also for N = 0)
  for (std::size_t i = 1; i < ext.size(); ++i) row_elems *= ext[i];
  ext[0] = detail::total(recv_rows);
  auto out = tensor<T, S, moekit::cuda>(S::from_extents(ext, op.c_str()));
  const std::size_t row_bytes = row_elems * sizeof(T);
  const cudaStream_t stream = current_stream();
  if (const nccl_communicator* nccl = nccl_scope::find(comm))
    nccl->all_to_all_v(rows.data(), send_rows, out.data(), recv_rows, row_bytes, stream, op);
  else
    detail::thread_staged_exchange().all_to_all_v(comm, rows.data(), send_rows, out.data(), recv_rows, row_bytes,
                                                  stream, op);
  return out;
}

}  // namespace moekit::dist

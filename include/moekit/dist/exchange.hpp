// moekit/dist/exchange.hpp — moving rows between ranks, differentiably.
//
//   exchange_plan::make(comm, set_offsets, sets_per_rank, needs_grad, op)
//       from this rank's rows grouped by weight set (offsets (G + 1) over the
//       G global sets, rank q owning sets [q·G/P, (q+1)·G/P)): one all-to-all
//       of per-set counts, and what follows from it: rows to send to and
//       receive from each rank, the received rows' order by local set
//       (set-major, then source rank), and the local sets' offsets.
//   exchange_rows(comm, rows, send_rows, recv_rows, plan's grad flag, op)
//       one all-to-all-v of rows; its backward is the reverse all-to-all-v of
//       the gradients.
//
// A collective in a backward pass must run on every rank, in the same order:
// the tape runs nodes in reverse recording order, and every rank records the
// same layers, so the order holds. Whether a rank records the exchange at all
// is agreed on in the count exchange (any rank needing gradients makes every
// rank record it), so a rank whose own rows need no gradient still sends the
// gradients its peers need back.
//
// Rows of a backend that the host cannot read (a device) go through that
// backend's transport when one is included (dist/nccl.cuh: NCCL on the
// layer's stream, or pinned host buffers over MPI), else they are staged
// through host memory with plain copies (docs/distributed.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/ops/index.hpp"
#include "../autograd/tape.hpp"
#include "../tensor/ops/creation.hpp"
#include "communicator.hpp"

namespace moekit::dist {

/// Who sends what to whom in one expert-parallel exchange, seen from one rank.
template <backend B>
struct exchange_plan {
  std::vector<std::size_t> send_rows;   // (P) rows to each rank, in rank order
  std::vector<std::size_t> recv_rows;   // (P) rows from each rank
  std::size_t received = 0;             // M = Σ recv_rows
  tensor<index_t, shape<dyn>, B> order;    // (M) received row of each local row (local set, then source rank)
  tensor<index_t, shape<dyn>, B> inverse;  // (M) local row of each received row
  group_offsets<B> local_offsets;       // (G/P + 1) local set bounds in local-row order
  bool needs_grad = false;              // some rank backpropagates through this exchange

  /// Plans one exchange from this rank's rows grouped by global weight set.
  /// set_offsets: (G + 1) host offsets; sets_per_rank = G / P.
  static exchange_plan make(const communicator& comm, std::span<const index_t> set_offsets,
                            std::size_t sets_per_rank, bool needs_grad, const std::string& op) {
    const std::size_t p = comm.ranks(), g_local = sets_per_rank;
    if (set_offsets.size() != p * g_local + 1)
      throw value_error("dist: " + op + ": " + std::to_string(set_offsets.size()) + " set offsets for " +
                        std::to_string(p) + " ranks of " + std::to_string(g_local) + " sets");
    // Per peer: the counts of its sets, then this rank's grad flag.
    std::vector<std::int64_t> send(p * (g_local + 1));
    exchange_plan out;
    out.send_rows.assign(p, 0);
    for (std::size_t q = 0; q < p; ++q) {
      for (std::size_t s = 0; s < g_local; ++s) {
        const std::size_t g = q * g_local + s;
        const auto n = static_cast<std::int64_t>(set_offsets[g + 1] - set_offsets[g]);
        send[q * (g_local + 1) + s] = n;
        out.send_rows[q] += static_cast<std::size_t>(n);
      }
      send[q * (g_local + 1) + g_local] = needs_grad ? 1 : 0;
    }
    const auto recv = comm.all_to_all<std::int64_t>(send, g_local + 1, op + " counts");
    // Received rows arrive source-major (source rank, then set); the local
    // sets want them set-major (set, then source rank).
    std::vector<std::size_t> source_start(p + 1, 0);
    out.recv_rows.assign(p, 0);
    for (std::size_t q = 0; q < p; ++q) {
      for (std::size_t s = 0; s < g_local; ++s) out.recv_rows[q] += static_cast<std::size_t>(recv[q * (g_local + 1) + s]);
      source_start[q + 1] = source_start[q] + out.recv_rows[q];
      out.needs_grad = out.needs_grad || recv[q * (g_local + 1) + g_local] != 0;
    }
    out.received = source_start[p];
    auto order = tensor<index_t, shape<dyn>, cpu>(shape<dyn>{out.received});
    auto inverse = tensor<index_t, shape<dyn>, cpu>(shape<dyn>{out.received});
    auto offsets = tensor<index_t, shape<dyn>, cpu>(shape<dyn>{g_local + 1});
    std::vector<std::size_t> within(p, 0);  // rows of source q before set s
    std::size_t at = 0;
    for (std::size_t s = 0; s < g_local; ++s) {
      offsets[s] = static_cast<index_t>(at);
      for (std::size_t q = 0; q < p; ++q) {
        const auto n = static_cast<std::size_t>(recv[q * (g_local + 1) + s]);
        for (std::size_t i = 0; i < n; ++i, ++at) {
          const std::size_t from = source_start[q] + within[q] + i;
          order[at] = static_cast<index_t>(from);
          inverse[from] = static_cast<index_t>(at);
        }
        within[q] += n;
      }
    }
    offsets[g_local] = static_cast<index_t>(at);
    out.order = moekit::detail::to_backend<B>(order);
    out.inverse = moekit::detail::to_backend<B>(inverse);
    out.local_offsets = moekit::detail::to_backend<B>(offsets);
    return out;
  }
};

namespace detail {

/// rows (N, ...) -> (Σ recv, ...) through one all-to-all-v; staged through
/// the host when B's memory is not host-readable.
template <class T, class S, class B>
tensor<T, S, B> exchange_tensor(const communicator& comm, const tensor<T, S, B>& rows,
                                std::span<const std::size_t> send_rows, std::span<const std::size_t> recv_rows,
                                const std::string& op) {
  std::size_t total = 0;
  for (std::size_t n : recv_rows) total += n;
  auto ext = rows.shape().extents();
  std::size_t row_elems = 1;  // from the extents, not the row count: a rank may send no rows
  for (std::size_t i = 1; i < ext.size(); ++i) row_elems *= ext[i];
  ext[0] = total;
  const auto out_shape = S::from_extents(ext, op.c_str());
  if constexpr (B::host_accessible) {
    auto out = tensor<T, S, B>(out_shape);
    comm.all_to_all_v(rows.data(), send_rows, out.data(), recv_rows, row_elems * sizeof(T), op);
    return out;
  } else if constexpr (requires { exchange_device_rows(comm, rows, send_rows, recv_rows, op); }) {
    // The backend's own transport, found by argument-dependent lookup:
    // dist/nccl.cuh for moekit::cuda (NCCL, or pinned host buffers over MPI).
    // Include it in every translation unit that runs a layer on that backend.
    return exchange_device_rows(comm, rows, send_rows, recv_rows, op);
  } else {
    const auto host = rows.template to<cpu>();
    auto out = tensor<T, S, cpu>(out_shape);
    comm.all_to_all_v(host.data(), send_rows, out.data(), recv_rows, row_elems * sizeof(T), op);
    return moekit::detail::to_backend<B>(out);
  }
}

}  // namespace detail

/// rows (N, D): send_rows[q] consecutive rows go to rank q; returns the
/// (Σ recv_rows, D) rows received, in source-rank order. Differentiable: the
/// backward sends the gradients back the reverse way. With `needs_grad`
/// (agreed by every rank, see exchange_plan) the exchange is recorded on the
/// tape even where `rows` needs no gradient, so every rank joins the backward.
template <class T, class S, class B>
var<T, S, B> exchange_rows(const communicator& comm, const var<T, S, B>& rows, std::vector<std::size_t> send_rows,
                           std::vector<std::size_t> recv_rows, bool needs_grad, const std::string& op) {
  auto out = detail::exchange_tensor(comm, rows.value(), send_rows, recv_rows, op);
  tape* t = rows.tape_ptr() ? rows.tape_ptr() : tape::current();
  if (!needs_grad || !grad_enabled() || !t) return var<T, S, B>(std::move(out), t, nullptr);
  return t->record_collective(std::move(out), [comm, rows, send = std::move(send_rows), recv = std::move(recv_rows),
                                    op](const auto& dy) {
    rows.accumulate(detail::exchange_tensor(comm, dy, recv, send, op + " backward"));
  });
}

}  // namespace moekit::dist

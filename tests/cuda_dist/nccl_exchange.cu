// moekit/dist/nccl.cuh on the GPU: the count exchange and the row
// all-to-all-v over NCCL (grouped ncclSend/ncclRecv), the pinned-host staged
// fallback over MPI, the all-reduce, and exchange_device_rows (what the
// expert-parallel layer's exchange does on moekit::cuda) against the host
// exchange of dist::detail::exchange_tensor. Written for any number of ranks
// (one GPU each: rank r uses device r mod #devices); ctest runs one rank,
// where every send is a self send. Without a device every case prints
// "SKIPPED: no CUDA device" and returns.
#include <catch2/catch.hpp>

#include "../cuda/skip.cuh"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/cuda.hpp>
#include <moekit/dist/communicator.hpp>
#include <moekit/dist/exchange.hpp>
#include <moekit/dist/nccl.cuh>

// Not `using namespace moekit`: CUDA's headers declare a global `half` and a namespace `cuda`.
namespace mk = moekit;
namespace dist = moekit::dist;
using gpu = mk::cuda;
using mk::dyn;
using mk::shape;

namespace {

/// One GPU per rank: rank r on device r mod #devices.
void select_device(const dist::communicator& comm) {
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  REQUIRE(cudaSetDevice(comm.rank() % count) == cudaSuccess);
}

/// Rows rank `from` sends rank `to`: 2 + (from + 2·to) mod 3, none when
/// (from + to) mod 4 == 3 (with several ranks: uneven counts and empty peers).
std::size_t rows_between(int from, int to) {
  if ((from + to) % 4 == 3) return 0;
  return 2 + static_cast<std::size_t>((from + 2 * to) % 3);
}

/// The value of element j of row i that rank `from` sends rank `to`.
float value(int from, int to, std::size_t i, std::size_t j) {
  return static_cast<float>(1000 * from + 100 * to) + static_cast<float>(10 * i + j) + 0.25f;
}

using rows_shape = shape<dyn, 2, 3>;  // a row is 6 elements
constexpr std::size_t row_elems = 6;

/// This rank's rows (in destination-rank order) and the per-peer counts both ways.
struct exchange_case {
  std::vector<std::size_t> send, recv;
  mk::tensor<float, rows_shape, mk::cpu> rows;  // host
};

exchange_case make_case(const dist::communicator& comm) {
  exchange_case c;
  const int r = comm.rank();
  std::size_t n = 0;
  for (int q = 0; q < comm.size(); ++q) {
    c.send.push_back(rows_between(r, q));
    c.recv.push_back(rows_between(q, r));
    n += c.send.back();
  }
  c.rows = mk::tensor<float, rows_shape, mk::cpu>(rows_shape{n});
  std::size_t at = 0;
  for (int q = 0; q < comm.size(); ++q)
    for (std::size_t i = 0; i < c.send[static_cast<std::size_t>(q)]; ++i, ++at)
      for (std::size_t j = 0; j < row_elems; ++j) c.rows[at * row_elems + j] = value(r, q, i, j);
  return c;
}

/// What this rank must receive: peer p's rows for it, in source-rank order.
std::vector<float> expected_rows(const dist::communicator& comm) {
  std::vector<float> out;
  for (int p = 0; p < comm.size(); ++p)
    for (std::size_t i = 0; i < rows_between(p, comm.rank()); ++i)
      for (std::size_t j = 0; j < row_elems; ++j) out.push_back(value(p, comm.rank(), i, j));
  return out;
}

template <class T, class S>
std::vector<T> on_host(const mk::tensor<T, S, gpu>& x) {
  const auto h = x.template to<mk::cpu>();  // waits for the device
  return std::vector<T>(h.data(), h.data() + h.size());
}

/// The hook proposed for dist::detail::exchange_tensor's device branch: an
/// unqualified call that argument-dependent lookup resolves to
/// dist::exchange_device_rows for tensors of moekit::cuda (and to nothing for
/// the host backend).
template <class T, class S, class B>
concept device_exchangeable = requires(const dist::communicator& c, const mk::tensor<T, S, B>& rows,
                                       std::span<const std::size_t> n, const std::string& op) {
  exchange_device_rows(c, rows, n, n, op);
};
static_assert(device_exchangeable<float, rows_shape, gpu>);
static_assert(!device_exchangeable<float, rows_shape, mk::cpu>);

}  // namespace

TEST_CASE("nccl: per-peer counts exchanged on the device arrive from their senders", "[cuda][nccl]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto comm = dist::communicator::world();
  select_device(comm);
  const dist::nccl_communicator nccl(comm);
  REQUIRE(nccl.size() == comm.size());
  REQUIRE(nccl.rank() == comm.rank());

  constexpr std::size_t k = 3;  // counts per peer (e.g. G/P set counts and a flag)
  const std::size_t p = comm.ranks();
  auto count = [](int from, int to, std::size_t s) { return std::int64_t{100 * from + 10 * to} + static_cast<std::int64_t>(s); };
  mk::tensor<std::int64_t, shape<dyn>, mk::cpu> send_h(shape<dyn>{p * k});
  for (std::size_t q = 0; q < p; ++q)
    for (std::size_t s = 0; s < k; ++s) send_h[q * k + s] = count(comm.rank(), static_cast<int>(q), s);
  const auto send = send_h.to<gpu>();
  auto recv = mk::tensor<std::int64_t, shape<dyn>, gpu>(shape<dyn>{p * k});

  nccl.exchange_counts(send.data(), recv.data(), k, mk::current_stream(), "test counts");
  const auto got = on_host(recv);
  for (std::size_t q = 0; q < p; ++q)
    for (std::size_t s = 0; s < k; ++s) CHECK(got[q * k + s] == count(static_cast<int>(q), comm.rank(), s));

  // The same, read by the host (the one sync of the NCCL path).
  const auto host = dist::exchange_counts_to_host(nccl, send.data(), k, mk::current_stream(), "test counts");
  CHECK(host.received == got);
  CHECK(host.sent == std::vector<std::int64_t>(send_h.data(), send_h.data() + send_h.size()));
}

TEST_CASE("nccl: the rows' all-to-all-v delivers each peer's rows in source-rank order", "[cuda][nccl]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto comm = dist::communicator::world();
  select_device(comm);
  const dist::nccl_communicator nccl(comm);
  const auto c = make_case(comm);
  const auto rows = c.rows.to<gpu>();
  std::size_t total = 0;
  for (std::size_t n : c.recv) total += n;
  auto out = mk::tensor<float, rows_shape, gpu>(rows_shape{total});

  nccl.all_to_all_v(rows.data(), c.send, out.data(), c.recv, row_elems * sizeof(float), mk::current_stream(),
                    "test rows");
  CHECK(on_host(out) == expected_rows(comm));
  if (comm.size() == 1) CHECK(on_host(out) == on_host(rows));  // a self send gives back the input
}

TEST_CASE("nccl: the staged fallback (pinned host buffers, MPI) gives the same rows", "[cuda][nccl]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto comm = dist::communicator::world();
  select_device(comm);
  const auto c = make_case(comm);
  const auto rows = c.rows.to<gpu>();
  std::size_t total = 0;
  for (std::size_t n : c.recv) total += n;

  dist::staged_exchange staged;
  // Twice the same exchange: the pinned buffers are reused.
  for (int round = 0; round < 2; ++round) {
    auto out = mk::tensor<float, rows_shape, gpu>(rows_shape{total});
    staged.all_to_all_v(comm, rows.data(), c.send, out.data(), c.recv, row_elems * sizeof(float),
                        mk::current_stream(), "test staged");
    CHECK(on_host(out) == expected_rows(comm));
  }
  const std::size_t held = staged.capacity();
  CHECK(held >= (rows.size() + total * row_elems) * sizeof(float));

  // More than anything before, to itself: the buffers grow.
  const std::size_t big = 4 * (rows.extent(0) + total) + 8;
  std::vector<std::size_t> counts(comm.ranks(), 0);
  counts[static_cast<std::size_t>(comm.rank())] = big;
  auto big_rows = mk::tensor<float, rows_shape, mk::cpu>(rows_shape{big});
  for (std::size_t i = 0; i < big_rows.size(); ++i) big_rows[i] = static_cast<float>(i) * 0.5f;
  const auto big_in = big_rows.to<gpu>();
  auto big_out = mk::tensor<float, rows_shape, gpu>(rows_shape{big});
  staged.all_to_all_v(comm, big_in.data(), counts, big_out.data(), counts, row_elems * sizeof(float),
                      mk::current_stream(), "test staged grow");
  CHECK(staged.capacity() > held);
  CHECK(on_host(big_out) == on_host(big_in));
}

TEST_CASE("nccl: exchange_device_rows equals the host exchange, over NCCL and staged", "[cuda][nccl]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto comm = dist::communicator::world();
  select_device(comm);
  const auto c = make_case(comm);
  const auto rows = c.rows.to<gpu>();
  const auto on_cpu = dist::detail::exchange_tensor(comm, c.rows, c.send, c.recv, "test host");
  const std::vector<float> want(on_cpu.data(), on_cpu.data() + on_cpu.size());
  CHECK(want == expected_rows(comm));

  {
    const auto staged = dist::exchange_device_rows(comm, rows, c.send, c.recv, "test staged");  // no nccl_scope
    CHECK(staged.shape().extents() == on_cpu.shape().extents());
    CHECK(on_host(staged) == want);
  }
  {
    const dist::nccl_communicator nccl(comm);
    const dist::nccl_scope use(comm, nccl);
    CHECK(dist::nccl_scope::find(comm) == &nccl);
    const auto over_nccl = dist::exchange_device_rows(comm, rows, c.send, c.recv, "test nccl");
    CHECK(over_nccl.shape().extents() == on_cpu.shape().extents());
    CHECK(on_host(over_nccl) == want);
    // The backward's direction: the received rows go back where they came from.
    const auto back = dist::exchange_device_rows(comm, over_nccl, c.recv, c.send, "test nccl backward");
    CHECK(on_host(back) == on_host(rows));
  }
  CHECK(dist::nccl_scope::find(comm) == nullptr);

  // Counts that do not describe the rows are refused before any transfer.
  std::vector<std::size_t> too_many = c.send;
  too_many[0] += 1;
  CHECK_THROWS_AS(dist::exchange_device_rows(comm, rows, too_many, c.recv, "test"), mk::value_error);
  CHECK_THROWS_AS(dist::exchange_device_rows(comm, rows, std::vector<std::size_t>(comm.ranks() + 1, 0), c.recv,
                                             "test"),
                  mk::value_error);
}

TEST_CASE("nccl: all_reduce_sum sums a device buffer over the ranks", "[cuda][nccl]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto comm = dist::communicator::world();
  select_device(comm);
  const dist::nccl_communicator nccl(comm);
  constexpr std::size_t n = 37;
  mk::tensor<float, shape<dyn>, mk::cpu> h(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) h[i] = static_cast<float>(comm.rank() + 1) + static_cast<float>(i);
  auto d = h.to<gpu>();
  nccl.all_reduce_sum(d.data(), n, mk::current_stream(), "test all_reduce");
  const auto got = on_host(d);
  const float p = static_cast<float>(comm.size());
  for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == p * (p + 1) / 2 + p * static_cast<float>(i));
}

TEST_CASE("nccl: a single-process communicator without MPI exchanges with itself", "[cuda][nccl]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto comm = dist::communicator::world();
  select_device(comm);  // each rank its own, independent one-rank communicator
  auto nccl = dist::nccl_communicator::single();
  CHECK(nccl.size() == 1);
  CHECK(nccl.rank() == 0);
  mk::tensor<float, rows_shape, mk::cpu> h(rows_shape{5});
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>(i) - 7.5f;
  const auto in = h.to<gpu>();
  auto out = mk::tensor<float, rows_shape, gpu>(rows_shape{5});
  const std::vector<std::size_t> five{5};
  nccl.all_to_all_v(in.data(), five, out.data(), five, row_elems * sizeof(float), mk::current_stream(), "test single");
  CHECK(on_host(out) == on_host(in));
  // Moving keeps one owner of the communicator.
  const dist::nccl_communicator moved = std::move(nccl);
  CHECK(moved.native() != nullptr);
  CHECK(nccl.native() == nullptr);
  const std::vector<std::size_t> two{1, 1};
  CHECK_THROWS_AS(moved.all_to_all_v(in.data(), two, out.data(), two, 4, mk::current_stream(), "test"),
                  mk::value_error);
}

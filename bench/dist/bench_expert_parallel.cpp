// bench_expert_parallel — dist::expert_parallel (a moe::layer sharded over MPI
// ranks: top-k router, GELU FFN experts, fp32) on the CPU, one thread per
// rank, weak scaling (fixed tokens per rank). Launched as
//
//   mpirun -np P build/bin/bench_expert_parallel [flags]        # P = 1, 2, 4, ...
//
// every rank computes and rank 0 prints one JSON object per line on stdout
// and a human table on stderr. What it measures, all in one run:
//   1. step: forward+backward of the layer (loss = sum(y ⊙ G)) through the
//      library's expert_parallel::operator(), with a barrier before each
//      repetition; a repetition's time is the slowest rank's;
//   2. the same step through the bench's own copy of that forward, built from
//      the public calls (router.route, exchange_plan::make, moe::dispatch,
//      gather_rows, the expert bank, moe::combine) with the two row
//      exchanges replaced by a differentiable all-to-all-v that times itself
//      in the forward and in the backward: the time spent in communication
//      inside a real step (waits for slower peers included). Its output and
//      input gradient are checked against the library's first;
//   3. the same exchanges in isolation (the step's counts, preallocated
//      buffers, barrier first): the transfer cost without compute skew;
//   4. bytes sent and received per rank per step, from the exchange plan:
//      forward dispatch + combine, their backward, and the count exchange;
//   5. ceilings in the same run: one core's FMA peak, cblas_sgemm of the
//      expert GEMMs' total size, and the GEMM FLOP rate the step reaches;
//   6. overlap: a blocking all-to-all-v (the dispatch's counts) followed by a
//      compute, against start_all_to_all_v; compute; wait. Compute = the
//      shared-expert FFN GEMMs of the same tokens, and a GEMM sized to match
//      the exchange's own time; and start; compute in 8 pieces with MPI_Test
//      (request::test) between them; wait: progress without a thread;
//   7. the all-to-all-v transport: communicator::all_to_all_v (MPI_Alltoallv)
//      over message sizes per peer, fitted to t = alpha + bytes / beta
//      (bytes: what one rank sends to the other ranks in one call);
//   8. a weak-scaling model to 8 ... 64 ranks (see model_lines for its
//      assumptions), from the measured compute and the fitted or assumed
//      alpha and beta.
//
// With more ranks on a node than cores ("oversubscribed": true) the timings
// measure time-sharing of the cores, not scaling.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/dist/communicator.hpp>
#include <moekit/dist/exchange.hpp>
#include <moekit/dist/expert_parallel.hpp>
#include <moekit/moe.hpp>

#include "../bench_device.hpp"
#include "../bench_util.hpp"
#include "common/flags.hpp"

namespace {

using namespace moekit;

struct options {
  std::size_t tokens = 1024, d_model = 256, d_ff = 1024, experts = 8, k = 2;
  int threads = 1, warmup = 3, reps = 15, sweep_reps = 7;
  std::size_t sweep_min = 8, sweep_max = std::size_t(16) << 20;  // bytes per peer
  bool table = true, model = true;
  std::uint64_t seed = 42;
};

using expert_t = moe::ffn_expert<dyn, dyn, moe::activation::gelu, /*Bias=*/false>;
using router_t = moe::top_k_router<dyn, dyn, dyn, float>;
using layer_t = moe::layer<router_t, expert_t, float>;
using ep_t = dist::expert_parallel<router_t, expert_t, float>;
using matrix = tensor<float, shape<dyn, dyn>, cpu>;

/// Where the ranks run: cores of this node, ranks on it, CPUs this rank may use.
struct placement {
  int ranks = 1, local_ranks = 1, cores = 1, bound_cpus = 1;
  bool oversubscribed = false;
  std::string mpi;
};

placement place(const dist::communicator& comm, int threads) {
  placement p;
  p.ranks = comm.size();
  MPI_Comm node = MPI_COMM_NULL;
  if (MPI_Comm_split_type(comm.native(), MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_size(node, &p.local_ranks);
    MPI_Comm_free(&node);
  }
  p.cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) p.bound_cpus = CPU_COUNT(&set);
  // Any node with more threads than cores makes the run oversubscribed.
  const int over = p.local_ranks * threads > p.cores ? 1 : 0;
  p.oversubscribed = comm.all_reduce_max(over, "placement") != 0;
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  MPI_Get_library_version(version, &len);
  p.mpi = std::string(version, static_cast<std::size_t>(std::max(len, 0)));
  p.mpi = p.mpi.substr(0, p.mpi.find_first_of(",\n"));
  return p;
}

/// Times `runs` interleaved (A B C A B C ...), a barrier before each run; a
/// run's time in one repetition is the slowest rank's. wall[i]: run i's wall
/// times; cpu[i]: its thread CPU times (bench::thread_cpu_ms: leaves out the
/// time other processes hold the core; MPI's busy waits count as CPU time).
struct collective_times {
  std::vector<std::vector<double>> wall, cpu;
};
collective_times timed_collective(const dist::communicator& comm, const std::vector<std::function<void()>>& runs,
                                  int warmup, int reps) {
  for (int w = 0; w < warmup; ++w)
    for (const auto& run : runs) {
      comm.barrier("warm-up");
      run();
    }
  collective_times out{std::vector<std::vector<double>>(runs.size()), std::vector<std::vector<double>>(runs.size())};
  for (int r = 0; r < reps; ++r)
    for (std::size_t i = 0; i < runs.size(); ++i) {
      comm.barrier("repetition");
      const double c0 = bench::thread_cpu_ms(), t0 = bench::now_ms();
      runs[i]();
      const double t1 = bench::now_ms(), c1 = bench::thread_cpu_ms();
      out.wall[i].push_back(t1 - t0), out.cpu[i].push_back(c1 - c0);
    }
  for (auto* clock : {&out.wall, &out.cpu})
    for (auto& times : *clock)
      for (auto& t : times) t = comm.all_reduce_max(t, "slowest rank");
  return out;
}

/// The mean and the largest over ranks of one value.
struct over_ranks {
  double mean = 0, max = 0;
};
over_ranks across(const dist::communicator& comm, double v) {
  double sum = v;
  comm.all_reduce_sum(&sum, 1, "mean over ranks");
  return {sum / double(comm.size()), comm.all_reduce_max(v, "max over ranks")};
}

/// Milliseconds spent in the all-to-all-v calls of one instrumented step.
struct comm_timers {
  double counts = 0, fwd_dispatch = 0, fwd_combine = 0, bwd_combine = 0, bwd_dispatch = 0;
  double total() const { return counts + fwd_dispatch + fwd_combine + bwd_combine + bwd_dispatch; }
};

/// rows (N, D) -> (Σ recv, D) through communicator::all_to_all_v, timed.
matrix exchange_timed(const dist::communicator& comm, const matrix& rows, const std::vector<std::size_t>& send,
                      const std::vector<std::size_t>& recv, double& ms, const std::string& op) {
  std::size_t total = 0;
  for (std::size_t n : recv) total += n;
  matrix out(shape<dyn, dyn>{total, rows.extent(1)});
  const double t0 = bench::now_ms();
  comm.all_to_all_v(rows.data(), send, out.data(), recv, rows.extent(1) * sizeof(float), op);
  ms += bench::now_ms() - t0;
  return out;
}

/// dist::exchange_rows with a stopwatch on its forward and backward all-to-all-v.
var<float, shape<dyn, dyn>, cpu> exchange_rows_timed(const dist::communicator& comm,
                                                     const var<float, shape<dyn, dyn>, cpu>& rows,
                                                     std::vector<std::size_t> send, std::vector<std::size_t> recv,
                                                     double& fwd_ms, double& bwd_ms, const std::string& op) {
  auto out = exchange_timed(comm, rows.value(), send, recv, fwd_ms, op);
  tape* t = rows.tape_ptr() ? rows.tape_ptr() : tape::current();
  if (!grad_enabled() || !t) return var<float, shape<dyn, dyn>, cpu>(std::move(out), t, nullptr);
  return t->record_collective(std::move(out), [comm, rows, send = std::move(send), recv = std::move(recv), op,
                                               &bwd_ms](const auto& dy) {
    rows.accumulate(exchange_timed(comm, dy, recv, send, bwd_ms, op + " backward"));
  });
}

/// The slot -> weight-set map as moe::by_weight_set wants to see a bank.
struct slots_as_bank {
  const moe::slot_map<cpu>* m;
  const moe::slot_map<cpu>& slots() const noexcept { return *m; }
  std::size_t weight_sets() const noexcept { return m->weight_sets(); }
};

/// What one step sends: per peer, rows of the dispatch (this rank's
/// assignments) and of the combine (the rows its experts received).
struct step_traffic {
  std::vector<std::size_t> send_rows, recv_rows;
  std::size_t count_values = 0;  // int64 values per peer in the count exchange
};

/// expert_parallel::operator() (no shared expert) step by step, with the row
/// exchanges timed; returns the layer output.
var<float, shape<dyn, dyn>, cpu> instrumented_forward(ep_t& ep, const var<float, shape<dyn, dyn>, cpu>& x,
                                                      comm_timers& ct, step_traffic* traffic) {
  const auto& comm = ep.comm();
  auto plan = ep.router().route(x);
  const auto p = moe::by_weight_set(slots_as_bank{&ep.slots()}, plan);  // grouped by set = by owner rank
  const auto offsets = p.offsets.template to<cpu>();
  const double t0 = bench::now_ms();
  const auto ex = dist::exchange_plan<cpu>::make(comm, std::span(offsets.data(), offsets.size()),
                                                 ep.experts().weight_sets(), true, "bench counts");
  ct.counts += bench::now_ms() - t0;
  if (traffic) *traffic = {ex.send_rows, ex.recv_rows, ep.experts().weight_sets() + 1};
  auto rows = moe::dispatch(x, p);                                                           // (A, D)
  auto received = exchange_rows_timed(comm, rows, ex.send_rows, ex.recv_rows, ct.fwd_dispatch, ct.bwd_dispatch,
                                      "bench dispatch");                                     // (M, D)
  auto y = ep.experts()(gather_rows(received, ex.order), ex.local_offsets);                  // (M, D)
  auto back = exchange_rows_timed(comm, gather_rows(y, ex.inverse), ex.recv_rows, ex.send_rows, ct.fwd_combine,
                                  ct.bwd_combine, "bench combine");                          // (A, D)
  auto out = moe::combine(back, p, x.extent(0));                                             // (T, D)
  return add_auxiliary_loss(out, plan.aux_loss);
}

double max_abs_diff(const matrix& a, const matrix& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a.data()[i] - b.data()[i])));
  return m;
}

/// Row-major (m, k)·(k, n) GEMM pairs: an FFN's two matrices over `rows` tokens.
struct ffn_gemms {
  std::size_t rows, d, ff;
  std::vector<float> x, w1, w2, h, y;
  ffn_gemms(std::size_t rows_, std::size_t d_, std::size_t ff_, rng& g)
      : rows(rows_), d(d_), ff(ff_), x(rows * d), w1(d * ff), w2(ff * d), h(rows * ff), y(rows * d) {
    auto fill = [&](std::vector<float>& v) {
      const auto t = normal<float>(g, shape<dyn>{v.size()});
      std::copy(t.data(), t.data() + t.size(), v.begin());
    };
    fill(x), fill(w1), fill(w2);
  }
  void operator()() { rows_range(0, rows); }
  /// The FFN on rows [first, last) only: the compute cut into pieces.
  void rows_range(std::size_t first, std::size_t last) {
    if (last <= first) return;
    const int n = int(last - first);
    bench::direct_gemm<cpu>::run(false, false, n, int(ff), int(d), x.data() + first * d, w1.data(), h.data() + first * ff);
    bench::direct_gemm<cpu>::run(false, false, n, int(d), int(ff), h.data() + first * ff, w2.data(), y.data() + first * d);
  }
  double flop() const { return 2.0 * 2.0 * double(rows) * double(d) * double(ff); }
  std::string name() const {
    return "cblas_sgemm " + std::to_string(rows) + "x" + std::to_string(d) + "x" + std::to_string(ff) + " x2";
  }
};

/// Off-rank and total bytes of one all-to-all-v, seen from this rank.
struct bytes_moved {
  double sent_off = 0, recv_off = 0, sent_all = 0, recv_all = 0;
};
bytes_moved bytes_of(const std::vector<std::size_t>& send, const std::vector<std::size_t>& recv, double row_bytes,
                     int self) {
  bytes_moved b;
  for (std::size_t q = 0; q < send.size(); ++q) {
    b.sent_all += double(send[q]) * row_bytes, b.recv_all += double(recv[q]) * row_bytes;
    if (int(q) != self) b.sent_off += double(send[q]) * row_bytes, b.recv_off += double(recv[q]) * row_bytes;
  }
  return b;
}

/// t = alpha + x / beta by least squares on relative error (weights 1/t²),
/// so the small messages fix alpha and the large ones beta. x in bytes, t in ms.
struct fit {
  double alpha_ms = 0, ms_per_byte = 0;
  double beta_gbps() const { return ms_per_byte > 0 ? 1e-6 / ms_per_byte : 0; }
};
fit fit_linear(const std::vector<double>& x, const std::vector<double>& t) {
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double w = 1.0 / (t[i] * t[i]);
    sw += w, sx += w * x[i], sy += w * t[i], sxx += w * x[i] * x[i], sxy += w * x[i] * t[i];
  }
  const double det = sw * sxx - sx * sx;
  if (det <= 0) return {sy / sw, 0};
  return {(sxx * sy - sx * sxy) / det, (sw * sxy - sx * sy) / det};
}

void run(const options& o, const dist::communicator& comm) {
  const int rank = comm.rank(), P = comm.size();
  const bool root = rank == 0;
  const placement pl = place(comm, o.threads);
  const bench::machine_info m = bench::describe_machine();  // every rank at once: the FMA peak under this load
  const over_ranks fma = across(comm, m.fma_peak_core);
  const double fma_min = -comm.all_reduce_max(-m.fma_peak_core, "fma min");

  // The layer: the same weights on every rank (one seed), each rank its own tokens.
  rng g(o.seed);
  router_t router(g, moe::top_k_options{}, o.d_model, o.experts, o.k);  // softmax, renormalised, dropless
  layer_t::bank_type bank(g, o.experts, o.d_model, o.d_ff);
  auto ep = ep_t::shard(comm, layer_t(std::move(router), std::move(bank)));
  rng data(o.seed + 1 + std::uint64_t(rank));
  const auto x = normal<float>(data, shape<dyn, dyn>{o.tokens, o.d_model});  // (T, D) this rank's tokens
  const auto G = normal<float>(data, shape<dyn, dyn>{o.tokens, o.d_model});  // (T, D) upstream gradient

  // Numerics first: the instrumented copy against the library's forward+backward.
  step_traffic traffic;
  double diff_y = 0, diff_dx = 0;
  {
    matrix y_lib, dx_lib;
    {
      tape t;
      auto xv = t.variable(x);
      auto y = ep(xv);
      t.backward(sum(y * t.input(G)));
      y_lib = y.value().clone(), dx_lib = xv.grad().clone();
    }
    comm_timers ct;
    tape t;
    auto xv = t.variable(x);
    auto y = instrumented_forward(ep, xv, ct, &traffic);
    t.backward(sum(y * t.input(G)));
    diff_y = across(comm, max_abs_diff(y.value(), y_lib)).max;
    diff_dx = across(comm, max_abs_diff(xv.grad(), dx_lib)).max;
  }

  // Bytes per step: the dispatch sends `send_rows`, receives `recv_rows`; the
  // combine the reverse; the backward repeats both; plus the count exchange.
  const double row_bytes = double(o.d_model * sizeof(float));
  const bytes_moved disp = bytes_of(traffic.send_rows, traffic.recv_rows, row_bytes, rank);
  const double count_bytes_off = double(P - 1) * double(traffic.count_values * sizeof(std::int64_t));
  const double step_sent_off = 2 * (disp.sent_off + disp.recv_off) + count_bytes_off;  // = received, by symmetry
  const double step_sent_all = 2 * (disp.sent_all + disp.recv_all) + double(P) * double(traffic.count_values * 8);
  const over_ranks bytes_off = across(comm, step_sent_off);
  std::size_t received_rows = 0;
  for (auto n : traffic.recv_rows) received_rows += n;
  const over_ranks expert_rows = across(comm, double(received_rows));

  // Preallocated buffers for the isolated exchanges (the step's counts).
  std::size_t assigned = 0;
  for (auto n : traffic.send_rows) assigned += n;
  std::vector<float> a_rows(std::max<std::size_t>(assigned, 1) * o.d_model),
      m_rows(std::max<std::size_t>(received_rows, 1) * o.d_model);
  std::vector<std::int64_t> count_values(traffic.count_values * comm.ranks(), 1);

  auto lib_step = [&] {
    tape t;
    auto y = ep(t.variable(x));
    t.backward(sum(y * t.input(G)));
  };
  std::vector<comm_timers> timers;  // one per instrumented step, warm-ups included
  auto instrumented_step = [&] {
    comm_timers ct;
    {
      tape t;
      auto y = instrumented_forward(ep, t.variable(x), ct, nullptr);
      t.backward(sum(y * t.input(G)));
    }
    timers.push_back(ct);
  };
  std::vector<double> iso_counts, iso_rows;
  auto isolated = [&] {  // the counts, then the four row exchanges of one step
    double t0 = bench::now_ms();
    (void)comm.all_to_all<std::int64_t>(count_values, traffic.count_values, "isolated counts");
    double t1 = bench::now_ms();
    iso_counts.push_back(t1 - t0);
    const std::size_t rb = o.d_model * sizeof(float);
    for (int pass = 0; pass < 2; ++pass) {  // forward, then backward
      comm.all_to_all_v(a_rows.data(), traffic.send_rows, m_rows.data(), traffic.recv_rows, rb, "isolated dispatch");
      comm.all_to_all_v(m_rows.data(), traffic.recv_rows, a_rows.data(), traffic.send_rows, rb, "isolated combine");
    }
    iso_rows.push_back(bench::now_ms() - t1);
  };
  rng gg(o.seed + 7);
  ffn_gemms sgemm(o.tokens * o.k, o.d_model, o.d_ff, gg);  // the expert GEMMs' total size (forward)
  const auto timed = timed_collective(comm, {lib_step, instrumented_step, isolated, [&] { sgemm(); }}, o.warmup,
                                      o.reps);
  const auto& s = timed.wall;
  const auto step_cpu = bench::summarize(timed.cpu[0]), sg_cpu = bench::summarize(timed.cpu[3]);
  const auto step = bench::summarize(s[0]), instr = bench::summarize(s[1]), iso = bench::summarize(s[2]),
             sg = bench::summarize(s[3]);

  // Communication inside the instrumented step: per rank the median of each
  // part over the timed repetitions, then the mean and max over ranks.
  auto median_of = [&](auto part) {
    std::vector<double> v;
    for (std::size_t i = timers.size() - std::size_t(o.reps); i < timers.size(); ++i) v.push_back(part(timers[i]));
    return across(comm, bench::summarize(v).median_ms);
  };
  const over_ranks c_total = median_of([](const comm_timers& c) { return c.total(); }),
                   c_counts = median_of([](const comm_timers& c) { return c.counts; }),
                   c_fd = median_of([](const comm_timers& c) { return c.fwd_dispatch; }),
                   c_fc = median_of([](const comm_timers& c) { return c.fwd_combine; }),
                   c_bc = median_of([](const comm_timers& c) { return c.bwd_combine; }),
                   c_bd = median_of([](const comm_timers& c) { return c.bwd_dispatch; });
  const over_ranks i_counts = across(comm, bench::summarize(std::vector<double>(iso_counts.end() - o.reps, iso_counts.end())).median_ms),
                   i_rows = across(comm, bench::summarize(std::vector<double>(iso_rows.end() - o.reps, iso_rows.end())).median_ms);

  const double gf = 1e6;
  const double step_flop = 3 * 2.0 * 2.0 * expert_rows.mean * double(o.d_model * o.d_ff);  // per rank, mean
  const double step_gflops = step_flop / (step.median_ms * gf), sgemm_gflops = sg.median_ms > 0 ? sgemm.flop() / (sg.median_ms * gf) : 0;
  const double compute_ms = std::max(0.0, instr.median_ms - c_total.mean);

  auto common = [&](const char* what) {
    bench::json_line j;
    j.add("bench", what).add("backend", "cpu").add("dtype", "f32").add("ranks", P).add("local_ranks", pl.local_ranks)
        .add("cores", pl.cores).add("bound_cpus", pl.bound_cpus).add("oversubscribed", pl.oversubscribed ? "true" : "false")
        .add("threads", o.threads).add("tokens_per_rank", double(o.tokens)).add("d_model", double(o.d_model))
        .add("d_ff", double(o.d_ff)).add("experts", double(o.experts)).add("k", double(o.k)).add("clock", "wall");
    return j;
  };
  auto machine = [&](bench::json_line& j) {
    j.add("machine", m.host).add("cpu", m.cpu).add("blas_core", m.blas_core).add("omp_wait_policy", m.omp_wait_policy)
        .add("mpi", pl.mpi);
  };
  if (root) {
    auto j = common("ep_step");
    j.add("impl", "dist::expert_parallel").add("pass", "fwd+bwd").add("", step).add("cpu_", step_cpu).add("gflops", step_gflops)
        .add("gflops_cpu_clock", step_flop / (step_cpu.median_ms * gf)).add("ceiling_gflops_cpu_clock", sgemm.flop() / (sg_cpu.median_ms * gf))
        .add("gflops_all_ranks", step_gflops * P).add("expert_gflop_per_rank", step_flop / 1e9)
        .add("ceiling", sgemm.name()).add("ceiling_gflops", sgemm_gflops).add("fma_peak_gflops", m.fma_peak_core)
        .add("fma_peak_gflops_mean_over_ranks", fma.mean).add("fma_peak_gflops_min_over_ranks", fma_min)
        .add("share_of_fma_peak", m.fma_peak_core > 0 ? step_gflops / m.fma_peak_core : 0.0)
        .add("share_of_sgemm", sgemm_gflops > 0 ? step_gflops / sgemm_gflops : 0.0)
        .add("bytes_sent_off_rank_per_step", bytes_off.mean).add("bytes_sent_off_rank_per_step_max", bytes_off.max)
        .add("bytes_sent_incl_self_per_step", step_sent_all).add("expert_rows_mean", expert_rows.mean)
        .add("expert_rows_max", expert_rows.max).add("check_max_abs_diff_y", diff_y)
        .add("check_max_abs_diff_dx", diff_dx);
    machine(j);
    j.print();
    common("ep_comm").add("impl", "instrumented copy of the forward (public calls), timed all-to-all-v").add("", instr)
        .add("comm_ms_mean", c_total.mean).add("comm_ms_max", c_total.max).add("comm_share", c_total.mean / instr.median_ms)
        .add("counts_ms", c_counts.mean).add("fwd_dispatch_ms", c_fd.mean).add("fwd_combine_ms", c_fc.mean)
        .add("bwd_combine_ms", c_bc.mean).add("bwd_dispatch_ms", c_bd.mean).add("compute_ms", compute_ms)
        .add("isolated_comm_ms", i_counts.mean + i_rows.mean).add("isolated_counts_ms", i_counts.mean)
        .add("isolated_rows_ms", i_rows.mean).add("isolated_slowest_rank_", iso)
        .add("isolated_comm_share", (i_counts.mean + i_rows.mean) / step.median_ms)
        .add("bytes_sent_off_rank_per_step", bytes_off.mean)
        .add("dispatch_bytes_sent_off_rank", disp.sent_off).add("dispatch_bytes_recv_off_rank", disp.recv_off)
        .add("count_bytes_sent_off_rank", count_bytes_off)
        .add("isolated_rows_gbps", i_rows.mean > 0 ? 2 * (disp.sent_off + disp.recv_off) / (i_rows.mean * gf) : 0.0)
        .print();
  }

  // Overlap: the dispatch's all-to-all-v against FFN GEMMs.
  const std::size_t rb = o.d_model * sizeof(float);
  auto exchange = [&] {
    comm.all_to_all_v(a_rows.data(), traffic.send_rows, m_rows.data(), traffic.recv_rows, rb, "overlap blocking");
  };
  // The exchange alone first, to size the matched compute.
  const double ex_alone = bench::summarize(timed_collective(comm, {exchange}, o.warmup, o.reps).wall[0]).median_ms;
  rng go(o.seed + 11);
  ffn_gemms shared_ffn(o.tokens, o.d_model, o.d_ff, go);  // a shared expert over this rank's tokens
  const double per_row_ms = [&] {
    ffn_gemms probe(256, o.d_model, o.d_ff, go);
    probe();
    const double t0 = bench::now_ms();
    for (int i = 0; i < 3; ++i) probe();
    return (bench::now_ms() - t0) / 3 / 256;
  }();
  const double matched_local = ex_alone / std::max(per_row_ms, 1e-9);
  const std::size_t matched_rows =
      std::max<std::size_t>(1, std::size_t(comm.all_reduce_max(matched_local, "matched rows")));
  ffn_gemms matched(std::min<std::size_t>(matched_rows, 1 << 16), o.d_model, o.d_ff, go);
  for (auto* work : {&shared_ffn, &matched}) {
    auto& w = *work;
    auto blocking = [&] {
      exchange();
      w();
    };
    auto overlapped = [&] {
      auto r = comm.start_all_to_all_v(a_rows.data(), traffic.send_rows, m_rows.data(), traffic.recv_rows, rb,
                                       "overlap start");
      w();
      r.wait();
    };
    // The same with the compute in 8 pieces, with and without MPI_Test between
    // them (progress without a thread); the pieces alone price the cut.
    auto pieces = [&](bool poll) {
      auto r = comm.start_all_to_all_v(a_rows.data(), traffic.send_rows, m_rows.data(), traffic.recv_rows, rb,
                                       "overlap pieces");
      constexpr std::size_t n = 8;
      for (std::size_t k = 0; k < n; ++k) {
        w.rows_range(k * w.rows / n, (k + 1) * w.rows / n);
        if (poll) r.test();
      }
      r.wait();
    };
    const auto ov = timed_collective(
        comm, {exchange, [&] { w(); }, blocking, overlapped, [&] { pieces(true); }, [&] { pieces(false); }},
        o.warmup, o.reps).wall;
    const auto e = bench::summarize(ov[0]), c = bench::summarize(ov[1]), b = bench::summarize(ov[2]),
               n = bench::summarize(ov[3]), pl = bench::summarize(ov[4]), pc = bench::summarize(ov[5]);
    const double saved = b.median_ms - n.median_ms, ideal = std::min(e.median_ms, c.median_ms);
    const double saved_polled = b.median_ms - pl.median_ms, polling_gain = pc.median_ms - pl.median_ms;
    if (root) {
      common("ep_overlap").add("compute", work == &shared_ffn ? "shared expert FFN GEMMs" : "GEMMs sized to the exchange")
          .add("compute_gemm", w.name()).add("exchange_bytes_sent_off_rank", disp.sent_off)
          .add("exchange_", e).add("compute_", c).add("blocking_then_compute_", b).add("start_compute_wait_", n)
          .add("saved_ms", saved).add("ideal_saved_ms", ideal).add("overlap_efficiency", ideal > 0 ? saved / ideal : 0.0)
          .add("start_polled_compute_wait_", pl).add("start_pieces_wait_", pc).add("saved_polled_ms", saved_polled)
          .add("polling_gain_ms", polling_gain)
          .add("overlap_efficiency_polled", ideal > 0 ? saved_polled / ideal : 0.0)
          .print();
      if (o.table)
        std::fprintf(stderr,
                     "overlap (%s): exchange %.3f ms, compute %.3f ms, blocking+compute %.3f ms, "
                     "start;compute;wait %.3f ms: saved %.3f ms of at most %.3f; compute in 8 pieces %.3f ms, "
                     "with MPI_Test between them %.3f ms: polling gains %.3f ms\n",
                     w.name().c_str(), e.median_ms, c.median_ms, b.median_ms, n.median_ms, saved, ideal,
                     pc.median_ms, pl.median_ms, polling_gain);
    }
  }

  // The transport: MPI_Alltoallv with the same message to every peer.
  std::vector<double> sizes, xs, ts;
  for (std::size_t bytes = o.sweep_min; bytes <= o.sweep_max; bytes *= 4) sizes.push_back(double(bytes));
  if (sizes.empty() || sizes.back() != double(o.sweep_max)) sizes.push_back(double(o.sweep_max));
  {
    std::vector<char> sbuf(o.sweep_max * comm.ranks()), rbuf(o.sweep_max * comm.ranks());
    std::memset(sbuf.data(), 1, sbuf.size());
    const std::vector<std::size_t> ones(comm.ranks(), 1);
    for (double size : sizes) {
      const auto bytes = std::size_t(size);
      const int inner = int(std::clamp<std::size_t>((std::size_t(4) << 20) / (bytes * comm.ranks()), 1, 100));
      auto call = [&] {
        for (int i = 0; i < inner; ++i)
          comm.all_to_all_v(sbuf.data(), ones, rbuf.data(), ones, bytes, "sweep");
      };
      const auto st = bench::summarize(timed_collective(comm, {call}, 1, o.sweep_reps).wall[0]);
      const double per_call = st.median_ms / inner;
      const double off = P > 1 ? double(P - 1) * size : size;  // P = 1: the self copy
      xs.push_back(off), ts.push_back(per_call);
      if (root)
        common("alltoallv").add("bytes_per_peer", size).add("bytes_sent_off_rank", P > 1 ? off : 0.0)
            .add("calls_per_rep", inner).add("median_ms", per_call).add("p10_ms", st.p10_ms / inner)
            .add("p90_ms", st.p90_ms / inner).add("gbps_off_rank", P > 1 ? off / (per_call * gf) : 0.0).print();
    }
  }
  const fit f = fit_linear(xs, ts);
  const double alpha_msg_us = 1e3 * f.alpha_ms / double(std::max(P - 1, 1));
  if (root) {
    common("alltoallv_fit").add("model", "t = alpha + bytes_sent_off_rank / beta (per MPI_Alltoallv call)")
        .add("transport", P > 1 ? "MPI (shared memory on one node)" : "self copy only (P = 1)")
        .add("alpha_us", 1e3 * f.alpha_ms).add("alpha_us_per_peer_message", alpha_msg_us).add("beta_gbps", f.beta_gbps())
        .add("smallest_call_us", 1e3 * ts.front()).add("largest_call_gbps", xs.back() / (ts.back() * gf)).print();
  }

  // The weak-scaling model (see the assumptions below).
  if (root && o.model) {
    struct profile {
      const char* name;
      double alpha_us, beta_gbps;
      const char* basis;
    };
    std::vector<profile> profiles{
        {"infiniband-100g", 2.0, 12.0, "assumed: 100 Gb/s InfiniBand, 12 GB/s per rank, 2 us per message"},
        {"nvlink-class", 2.0, 150.0, "assumed: NVLink-class 150 GB/s per rank, 2 us per message"}};
    if (P > 1)
      profiles.insert(profiles.begin(),
                      {"measured", alpha_msg_us, f.beta_gbps(),
                       pl.oversubscribed ? "this run's fit; OVERSUBSCRIBED run: not a transport figure"
                                         : "this run's fit (one node, shared memory)"});
    const double a_rows_uniform = double(o.tokens * o.k);  // assignments per rank (dropless top-k)
    for (const auto& pr : profiles)
      for (int q : {2, 4, 8, 16, 32, 64}) {
        const double Pq = q, off_rows = a_rows_uniform * (Pq - 1) / Pq;
        const double per_exchange_ms = (Pq - 1) * pr.alpha_us * 1e-3 + off_rows * row_bytes / (pr.beta_gbps * gf);
        const double counts_ms = (Pq - 1) * pr.alpha_us * 1e-3;
        const double comm_ms = 4 * per_exchange_ms + counts_ms, total = compute_ms + comm_ms;
        common("ep_model").add("profile", pr.name).add("model_ranks", q).add("experts_at_model_ranks", double(std::max<std::size_t>(o.experts, std::size_t(q))))
            .add("alpha_us_per_message", pr.alpha_us).add("beta_gbps", pr.beta_gbps)
            .add("bytes_sent_off_rank_per_step", 4 * off_rows * row_bytes).add("messages_per_step", 5 * (Pq - 1))
            .add("compute_ms", compute_ms).add("comm_ms", comm_ms).add("step_ms", total)
            .add("comm_share", comm_ms / total).add("weak_scaling_efficiency", compute_ms / total).add("basis", pr.basis)
            .print();
        if (o.table && (q == 8 || q == 64))
          std::fprintf(stderr, "model %-16s P=%2d: compute %.2f ms + comm %.3f ms = %.2f ms (comm %.1f %%)\n", pr.name,
                       q, compute_ms, comm_ms, total, 100 * comm_ms / total);
      }
  }

  if (root && o.table) {
    std::fprintf(stderr,
                 "bench_expert_parallel: P=%d ranks (%d on this node, %d cores%s), %d thread(s)/rank, T=%zu/rank "
                 "d=%zu ff=%zu E=%zu k=%zu\n"
                 "  step fwd+bwd   %9.3f ms [%8.3f, %8.3f]  %6.1f GFLOP/s/rank (%.1f %% of FMA peak %.1f, sgemm %.1f); "
                 "cpu clock %.3f ms\n"
                 "  instrumented   %9.3f ms, comm %.3f ms (%.1f %%; max rank %.3f): counts %.3f, fwd %.3f + %.3f, "
                 "bwd %.3f + %.3f\n"
                 "  isolated comm  %9.3f ms (%.1f %% of the step)   bytes off-rank/step/rank %.0f\n"
                 "  alltoallv fit  alpha %.2f us (%.2f us per peer message), beta %.2f GB/s\n"
                 "  check          max |dy| %.2g, max |dx| %.2g (instrumented vs library)\n"
                 "  machine        %s, OpenBLAS %s, %s\n",
                 P, pl.local_ranks, pl.cores, pl.oversubscribed ? ", OVERSUBSCRIBED" : "", o.threads, o.tokens,
                 o.d_model, o.d_ff, o.experts, o.k, step.median_ms, step.p10_ms, step.p90_ms, step_gflops,
                 m.fma_peak_core > 0 ? 100 * step_gflops / m.fma_peak_core : 0.0, m.fma_peak_core, sgemm_gflops,
                 step_cpu.median_ms, instr.median_ms, c_total.mean, 100 * c_total.mean / instr.median_ms, c_total.max, c_counts.mean,
                 c_fd.mean, c_fc.mean, c_bc.mean, c_bd.mean, i_counts.mean + i_rows.mean,
                 100 * (i_counts.mean + i_rows.mean) / step.median_ms, bytes_off.mean, 1e3 * f.alpha_ms, alpha_msg_us,
                 f.beta_gbps(), diff_y, diff_dx, m.cpu.c_str(), m.blas_core.c_str(), pl.mpi.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  bench::relaunch(argv);  // before MPI starts
  moekit::dist::environment mpi(argc, argv);
  try {
    const auto comm = moekit::dist::communicator::world();
    options o;
    moekit::flags cli("bench_expert_parallel",
                      "dist::expert_parallel (top-k router, GELU FFN experts, fp32) forward+backward per step, its\n"
                      "communication share, bytes exchanged, MPI_Alltoallv alpha/beta, compute/exchange overlap and a\n"
                      "weak-scaling model. Run as mpirun -np P bench_expert_parallel; rank 0 prints JSON lines on\n"
                      "stdout and a table on stderr.");
    cli.add("tokens", o.tokens, "tokens per rank (weak scaling)");
    cli.add("d-model", o.d_model, "D");
    cli.add("d-ff", o.d_ff, "hidden width of an expert");
    cli.add("experts", o.experts, "E (a multiple of the rank count)");
    cli.add("k", o.k, "experts per token");
    cli.add("threads", o.threads, "OpenMP and BLAS threads per rank");
    cli.add("warmup", o.warmup, "untimed repetitions first");
    cli.add("reps", o.reps, "timed repetitions (median reported)");
    cli.add("sweep-reps", o.sweep_reps, "timed repetitions per message size of the MPI_Alltoallv sweep");
    cli.add("sweep-min", o.sweep_min, "smallest MPI_Alltoallv message per peer, bytes");
    cli.add("sweep-max", o.sweep_max, "largest MPI_Alltoallv message per peer, bytes (sizes step x4)");
    cli.add("table", o.table, "the human table on stderr (rank 0)");
    cli.add("model", o.model, "the weak-scaling model lines (8 ... 64 ranks)");
    cli.add("seed", o.seed, "weights (the same on every rank), inputs and G (per rank)");
    std::ostringstream help;
    if (!cli.parse(argc, argv, help)) {
      if (comm.rank() == 0) std::printf("%s", help.str().c_str());
      return 0;
    }
    if (o.reps < 1 || o.warmup < 0 || o.threads < 1 || o.sweep_reps < 1 || o.sweep_min < 1 ||
        o.sweep_max < o.sweep_min || o.tokens < 1 || o.k < 1 || o.k > o.experts)
      throw moekit::value_error("need --reps, --sweep-reps, --threads, --tokens >= 1, "
                                "--warmup >= 0, 1 <= --sweep-min <= --sweep-max, 1 <= --k <= --experts");
    if (o.experts % comm.ranks() != 0)
      throw moekit::value_error("--experts " + std::to_string(o.experts) +
                                " does not divide over " + std::to_string(comm.size()) + " ranks");
    moekit::set_num_threads(o.threads);
    if (comm.rank() == 0 && o.table) bench::print_blas_line();
    if (comm.rank() == 0 && o.table)
      std::fprintf(stderr, "bench_expert_parallel: %d rank(s), %d thread(s) per rank, %d warm-up, %d timed repetitions\n",
                   comm.size(), o.threads, o.warmup, o.reps);
    run(o, comm);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_expert_parallel: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);  // a rank that left would leave its peers waiting in a collective
    return 2;
  }
}

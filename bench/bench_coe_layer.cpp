// bench_coe_layer — coe::layer (Chain-of-Experts) forward and forward+backward
// against the MoE of equal routed-expert FLOPs, timed interleaved in one run
// (issue #12, item 7). The PyTorch baseline is bench/python/coe_torch.py: the
// reference's training path (modeling_coe.py, a boolean-mask loop over
// experts), run on the weights this bench dumps, numerics checked first.
//
// The layer as the reference code configures it (uoe-coe.md 2.2):
//   x(0) = RMSNorm(a)                                  norm_placement::reference
//   x(t) = x(t-1) + Σ_j g(t,j)·E_idx(t,j)(x(t-1)) + S(x(t-1))   t = 1..C, inner residual
//   out  = x(C)                                        no outer residual
// SwiGLU experts (N routed of width Fe, one shared S of width Fs, run every
// iteration), one router per iteration: softmax, top-K, gates NOT
// renormalised, the sequence-level aux loss (α = 0.001, on by default; the
// router computes it in one mean over (T, N) and a histogram) riding on each
// iteration's output. "moe-kK" is the same layer with C = 1: the reference's
// MoE baseline (RMSNorm, MoE, inner residual), whose MoE part is moe::layer
// exactly (tests/coe/coe.cpp), so every row shares one code path.
//
// Rows (--configs): moe-k4, coe-c2-k2 (routed FLOPs of moe-k4), moe-k8,
// coe-c2-k4 (routed FLOPs of moe-k8: the issue's "CoE(C=2,K) <= 1.15x
// MoE(2K)"), moe-k12. Any "moe-kK" or "coe-cC-kK" is accepted; a CoE row is
// compared with moe-k(C·K) when that row runs too.
//
// FLOPs count expert matrices only (PERFORMANCE.md), shared expert included:
// forward = 2·T·D·3·C·(K·Fe + Fs), fwd+bwd = 3 × forward. With Fs = Fe,
// CoE(C=2,K) runs 2·(K+1) expert FFNs per token against 2K+1 for MoE(2K),
// so its FLOP ratio is above 1 (10/9 for K = 4); the JSON lines carry it.
//
// Ceilings measured in the same run: one core's FP32 FMA rate (a register-only
// loop of vector FMAs), cblas_sgemm on the forward's expert GEMM shapes
// ((T·4) × D × Fe, 3 GEMMs) interleaved with the layer, and OpenBLAS's kernel
// name (openblas_get_corename; never time on the generic "Prescott" one).
//
//   build/bin/bench_coe_layer --threads 1
//   build/bin/bench_coe_layer --dump /tmp/coe --no-time   # then bench/python/coe_torch.py --check /tmp/coe
//
// JSON lines on stdout (PERFORMANCE.md fields), a table on stderr.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>


#include <moekit.hpp>
#include <moekit/coe.hpp>

#include "bench_device.hpp"
#include "bench_util.hpp"
#include "common/flags.hpp"

namespace {

using namespace moekit;
using coe_t = coe::reference_layer<float>;

struct options {
  std::string configs = "moe-k4,coe-c2-k2,moe-k8,coe-c2-k4,moe-k12", dump, clock = "wall";
  std::size_t tokens = 2048, seq_len = 512, d_model = 256, d_ff = 128, experts = 16, shared_ff = 128;
  double aux_alpha = 0.001;
  int threads = 1, warmup = 3, reps = 15;
  bool time = true;
  std::uint64_t seed = 42;
};

/// One row: C iterations of top-K over the one expert pool.
struct config {
  std::string name;
  std::size_t c = 1, k = 1;
  /// The MoE of the same routed-expert FLOPs (none for an MoE row).
  std::string equal_flops_moe() const { return c > 1 ? "moe-k" + std::to_string(c * k) : ""; }
};

config parse_config(const std::string& name) {
  config c{name};
  int n = 0;
  const bool ok = std::sscanf(name.c_str(), "moe-k%zu%n", &c.k, &n) == 1 ||
                  std::sscanf(name.c_str(), "coe-c%zu-k%zu%n", &c.c, &c.k, &n) == 2;
  if (!ok || n != int(name.size()) || c.c == 0 || c.k == 0)
    throw value_error("--configs: '" + name + "' is not moe-kK or coe-cC-kK");
  return c;
}

std::vector<config> parse_configs(const std::string& list) {
  try {
    return bench::parse_list(list, parse_config, "--configs");
  } catch (const std::invalid_argument& e) {
    throw value_error(e.what());
  }
}

/// Expert-matrix FLOPs of one forward: 2·T·D·3·C·(K·Fe + Fs).
double forward_flop(const config& c, const options& o) {
  const double width = double(c.k * o.d_ff + o.shared_ff);  // hidden units a token meets per iteration
  return 2.0 * double(o.tokens) * double(o.d_model) * 3.0 * double(c.c) * width;
}

/// The reference's layer (see the header), C = c.c routers of top-c.k.
coe_t make_layer(const config& c, const options& o, rng& g) {
  return coe::make_layer<float>(g, {.d_model = o.d_model, .experts = o.experts, .expert_ff = o.d_ff, .top_k = c.k,
                                    .shared_ff = o.shared_ff, .chain = {.iterations = c.c},
                                    .sequence_balance_weight = o.aux_alpha, .seq_len = o.seq_len});
}

/// One forward+backward with fresh gradients, written to DIR/<config>.safetensors:
/// x, G, out, grad.x, every parameter and its grad.<name>, and per iteration t
/// the routing choice routing.t.choice (T, K) and the unweighted aux term aux.t.
template <class X>
void dump(const config& c, const options& o, coe_t& layer, const X& x, const X& G) {
  visit_parameters(layer, [](const std::string&, auto& p) { p.zero_grad(); });
  tape t;
  auto xv = t.variable(x);                   // (T, D)
  auto y = layer(xv);                        // (T, D)
  t.backward(sum(y * t.input(G)));           // + Σ_t α·aux_t, riding on y

  std::vector<io::tensor_record> records{io::record_of("x", x), io::record_of("G", G),
                                         io::record_of("out", y.value()), io::record_of("grad.x", xv.grad())};
  visit_parameters(layer, [&](const std::string& path, auto& p) {
    records.push_back(io::record_of(path, p.value()));
    records.push_back(io::record_of("grad." + path, p.grad()));
  });
  for (std::size_t it = 0; it < c.c; ++it) {
    const auto& plan = layer.last_routing(it);
    records.push_back(io::record_of("routing." + std::to_string(it) + ".choice", plan.choice));  // (T, K)
    if (!plan.aux_terms.empty()) records.push_back(io::record_of("aux." + std::to_string(it), plan.aux_terms[0].term));
  }
  auto str = [](std::size_t v) { return std::to_string(v); };
  auto exact = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return std::string(buf);
  };
  std::filesystem::create_directories(o.dump);
  const auto file = std::filesystem::path(o.dump) / (c.name + ".safetensors");
  io::save_safetensors(file, records,
                       {{"config", c.name}, {"iterations", str(c.c)}, {"k", str(c.k)}, {"tokens", str(o.tokens)},
                        {"seq_len", str(o.seq_len)}, {"d_model", str(o.d_model)}, {"d_ff", str(o.d_ff)},
                        {"experts", str(o.experts)}, {"shared_ff", str(o.shared_ff)},
                        {"aux_alpha", exact(o.aux_alpha)}, {"rms_eps", "1e-6"},
                        {"layer", "norm reference, inner residual, no outer residual, gates not renormalised"},
                        {"loss", "sum(out * G) + sum_t aux_alpha * aux_t"},
                        {"weights", "(in, out) per expert and router, like nn::linear"}});
  std::fprintf(stderr, "%s: wrote %s\n", c.name.c_str(), file.string().c_str());
}

/// The forward's expert GEMM shapes as direct cblas_sgemm calls over
/// rows = T·4: x·Wg, x·Wu (rows × D × Fe), h·Wd (rows × Fe × D).
struct sgemm_ceiling {
  std::size_t rows, d, ff;
  tensor<float, shape<dyn>> x, wg, wu, wd, h, y;
  sgemm_ceiling(const options& o, rng& g) : rows(o.tokens * 4), d(o.d_model), ff(o.d_ff) {
    x = normal<float>(g, shape<dyn>{rows * d}), h = normal<float>(g, shape<dyn>{rows * ff});
    wg = normal<float>(g, shape<dyn>{d * ff}), wu = normal<float>(g, shape<dyn>{d * ff});
    wd = normal<float>(g, shape<dyn>{ff * d}), y = tensor<float, shape<dyn>>(shape<dyn>{rows * d});
  }
  void operator()() {
    using gemm = bench::direct_gemm<cpu>;
    gemm::run(false, false, int(rows), int(ff), int(d), x.data(), wg.data(), h.data());
    gemm::run(false, false, int(rows), int(ff), int(d), x.data(), wu.data(), h.data());
    gemm::run(false, false, int(rows), int(d), int(ff), h.data(), wd.data(), y.data());
  }
  double flop() const { return 2.0 * double(rows * d * ff) * 3; }
  std::string name() const {
    return "cblas_sgemm " + std::to_string(rows) + "x" + std::to_string(d) + "x" + std::to_string(ff) + " x3";
  }
};

/// Timed results of one row.
struct row {
  config c;
  bench::stats fwd, fwd_bwd;
};

/// The ceilings the rows are stated against, measured in this run.
struct ceilings {
  std::string sgemm;  // what the sgemm figure is
  double sgemm_gflops = 0, fma_peak = 0;  // fma_peak: per core × threads
};

/// FFN passes (routed + shared) a token meets in one forward: C·(K + 1).
double ffn_per_token(const config& c, const options& o) {
  return double(c.c) * (double(c.k) + (o.shared_ff > 0 ? 1.0 : 0.0));
}

/// The two JSON lines (fwd, fwd+bwd) of row r; moe: its equal-FLOPs MoE row, if timed.
void json_lines(const row& r, const row* moe, const options& o, const bench::machine_info& m, const ceilings& ce) {
  const double flop = forward_flop(r.c, o);
  for (const auto& [pass, st, f] : {std::tuple{"fwd", r.fwd, flop}, std::tuple{"fwd+bwd", r.fwd_bwd, 3 * flop}}) {
    const double gflops = f / (st.median_ms * 1e6);
    bench::json_line j;
    j.add("bench", "coe_layer").add("config", r.c.name).add("backend", "cpu").add("impl", "moekit coe::layer")
        .add("dtype", "f32").add("threads", o.threads).add("clock", o.clock).add("pass", pass).add("", st)
        .add("gflops", gflops).add("expert_gflop", f / 1e9).add("iterations", double(r.c.c)).add("k", double(r.c.k))
        .add("ffn_per_token", ffn_per_token(r.c, o)).add("tokens", double(o.tokens)).add("seq_len", double(o.seq_len))
        .add("d_model", double(o.d_model)).add("d_ff", double(o.d_ff)).add("experts", double(o.experts))
        .add("shared_ff", double(o.shared_ff)).add("aux_alpha", o.aux_alpha).add("machine", m.host).add("cpu", m.cpu)
        .add("blas_core", m.blas_core).add("omp_wait_policy", m.omp_wait_policy).add("ceiling", ce.sgemm)
        .add("ceiling_gflops", ce.sgemm_gflops).add("fma_peak_gflops", ce.fma_peak)
        .add("share_of_fma_peak", ce.fma_peak > 0 ? gflops / ce.fma_peak : 0.0);
    if (moe) {
      const auto& theirs = pass == std::string("fwd") ? moe->fwd : moe->fwd_bwd;
      j.add("equal_flops_moe", moe->c.name).add("flop_ratio_to_moe", flop / forward_flop(moe->c, o))
          .add("ratio_to_moe", st.median_ms / theirs.median_ms);
    }
    j.print();
  }
}

/// The human table on stderr: one line per row, then the ceilings.
void table(const std::vector<std::pair<row, const row*>>& rows, const options& o, const bench::machine_info& m,
           const ceilings& ce) {
  std::fprintf(stderr, "%-10s %2s %3s %6s | %9s %9s %9s %7s | %9s %9s %9s %7s %6s | %-8s %6s %6s %6s\n", "config",
               "C", "K", "FFN/tk", "fwd ms", "p10", "p90", "GFLOP/s", "f+b ms", "p10", "p90", "GFLOP/s", "%peak",
               "vs", "flops", "fwd", "f+b");
  for (const auto& [r, moe] : rows) {
    const double flop = forward_flop(r.c, o), fb_gflops = 3 * flop / (r.fwd_bwd.median_ms * 1e6);
    std::fprintf(stderr, "%-10s %2zu %3zu %6.0f | %9.3f %9.3f %9.3f %7.1f | %9.3f %9.3f %9.3f %7.1f %5.1f%% | %-8s ",
                 r.c.name.c_str(), r.c.c, r.c.k, ffn_per_token(r.c, o), r.fwd.median_ms, r.fwd.p10_ms, r.fwd.p90_ms,
                 flop / (r.fwd.median_ms * 1e6), r.fwd_bwd.median_ms, r.fwd_bwd.p10_ms, r.fwd_bwd.p90_ms, fb_gflops,
                 ce.fma_peak > 0 ? 100 * fb_gflops / ce.fma_peak : 0.0, moe ? moe->c.name.c_str() : "-");
    if (moe)
      std::fprintf(stderr, "%6.3f %6.3f %6.3f\n", flop / forward_flop(moe->c, o), r.fwd.median_ms / moe->fwd.median_ms,
                   r.fwd_bwd.median_ms / moe->fwd_bwd.median_ms);
    else
      std::fprintf(stderr, "\n");
  }
  std::fprintf(stderr, "ceilings: %s %.1f GFLOP/s; FMA peak %.1f GFLOP/s (%d thread(s)); %s, OpenBLAS %s, "
                       "OMP_WAIT_POLICY %s\n",
               ce.sgemm.c_str(), ce.sgemm_gflops, ce.fma_peak, o.threads, m.cpu.c_str(), m.blas_core.c_str(),
               m.omp_wait_policy.c_str());
  std::fprintf(stderr, "last columns: the expert FLOP ratio (shared expert included) and the time ratios (medians) "
                       "to the equal-FLOPs MoE; target coe-c2-k4 f+b <= 1.15 x moe-k8\n");
}

void run(const options& o) {
  const auto configs = parse_configs(o.configs);
  for (const auto& c : configs)
    if (c.k > o.experts) throw value_error(c.name + ": K > --experts");
  if (o.seq_len == 0 || o.tokens % o.seq_len != 0)  // (batch, seq) as the reference sees it; the seq aux loss
    throw value_error("--seq-len must divide --tokens");
  rng data(o.seed);
  const auto x = normal<float>(data, shape<dyn, dyn>{o.tokens, o.d_model});  // (T, D) layer input a
  const auto G = normal<float>(data, shape<dyn, dyn>{o.tokens, o.d_model});  // (T, D) upstream gradient
  std::vector<coe_t> layers;
  for (std::size_t i = 0; i < configs.size(); ++i) {
    rng g(o.seed + 1000 * configs[i].c + configs[i].k);  // a row's weights do not depend on the other rows
    layers.push_back(make_layer(configs[i], o, g));
    if (!o.dump.empty()) dump(configs[i], o, layers.back(), x, G);
  }
  if (!o.time) return;

  const bench::machine_info m = bench::describe_machine();
  rng g(o.seed);
  sgemm_ceiling sg(o, g);
  std::vector<std::function<void()>> runs;
  for (auto& layer : layers) {
    runs.push_back([&] {
      tape t;
      auto y = layer(t.variable(x));  // (T, D)
    });
    runs.push_back([&] {
      tape t;
      auto y = layer(t.variable(x));  // (T, D)
      t.backward(sum(y * t.input(G)));
    });
  }
  runs.push_back([&] { sg(); });
  const auto s = bench::interleaved(runs, o.warmup, o.reps, o.clock == "cpu" ? bench::thread_cpu_ms : bench::now_ms);
  const ceilings ce{sg.name(), sg.flop() / (s.back().median_ms * 1e6), m.fma_peak_core * o.threads};
  std::vector<std::pair<row, const row*>> rows;  // each row and its equal-FLOPs MoE
  for (std::size_t i = 0; i < configs.size(); ++i) rows.push_back({{configs[i], s[2 * i], s[2 * i + 1]}, nullptr});
  for (auto& [r, moe] : rows)
    for (const auto& [other, _] : rows)
      if (other.c.name == r.c.equal_flops_moe()) moe = &other;
  for (const auto& [r, moe] : rows) json_lines(r, moe, o, m, ce);
  table(rows, o, m, ce);
}

}  // namespace

int main(int argc, char** argv) try {
  bench::relaunch(argv);
  options o;
  moekit::flags cli("bench_coe_layer",
                    "Chain-of-Experts layer (coe::layer, the reference's configuration) forward and forward+backward\n"
                    "against the MoE of equal routed-expert FLOPs, interleaved; --dump writes the weights, output and\n"
                    "gradients for bench/python/coe_torch.py --check. JSON lines on stdout; a table on stderr.");
  cli.add("configs", o.configs, "comma-separated rows: moe-kK (C = 1) or coe-cC-kK");
  cli.add("tokens", o.tokens, "T = batch x seq-len");
  cli.add("seq-len", o.seq_len, "tokens per sequence (the sequence-level aux loss)");
  cli.add("d-model", o.d_model, "D");
  cli.add("d-ff", o.d_ff, "Fe, hidden width of a routed SwiGLU expert");
  cli.add("experts", o.experts, "N routed experts");
  cli.add("shared-ff", o.shared_ff, "hidden width of the shared SwiGLU expert (0: none)");
  cli.add("aux-alpha", o.aux_alpha, "weight of the sequence-level aux loss per router and iteration (0: off)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed repetitions first");
  cli.add("reps", o.reps, "timed repetitions (median reported)");
  cli.add("clock", o.clock, "wall (steady_clock, the protocol's) or cpu (thread CPU time, loaded machines, 1 thread)");
  cli.add("seed", o.seed, "weights, input and G");
  cli.add("dump", o.dump, "directory for <config>.safetensors (input, weights, output, gradients, routing)");
  cli.add("time", o.time, "time the rows (--no-time: only --dump)");
  if (!cli.parse(argc, argv)) return 0;
  bench::print_blas_line();
  if (o.clock != "wall" && o.clock != "cpu")
    throw moekit::value_error("--clock must be wall or cpu, got " + o.clock);
  if (o.reps < 1 || o.warmup < 0 || o.threads < 1)
    throw moekit::value_error("need --reps >= 1, --warmup >= 0, --threads >= 1");
  moekit::set_num_threads(o.threads);
  std::fprintf(stderr,
               "bench_coe_layer: %d thread(s), %d warm-up, %d timed repetitions, %s clock; T=%zu (seq %zu) D=%zu "
               "N=%zu Fe=%zu shared Fs=%zu, aux alpha %g\n",
               o.threads, o.warmup, o.reps, o.clock.c_str(), o.tokens, o.seq_len, o.d_model, o.experts, o.d_ff,
               o.shared_ff, o.aux_alpha);
  run(o);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_coe_layer: %s\n", e.what());
  return 2;
}

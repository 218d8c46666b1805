// bench_moe_layer — moe::layer (softmax → top-k → renormalise router, GELU FFN
// experts with 2 matrices, no biases) on the C configurations of
// PERFORMANCE.md, timed interleaved in one run:
//   1. forward and forward+backward (loss = sum(y ⊙ G), G fixed and random),
//      as the PyTorch eager baseline (bench/python/moe_torch.py) does;
//   2. one forward split into its stages by calling the public ops the layer
//      calls: router.route, gather_rows, the expert bank, the weighted combine;
//   3. the expert GEMMs alone (grouped, over the layer's real offsets) against
//      plain cblas_sgemm calls of the same total size ((T·k) × d × ff).
// `--dump DIR` writes DIR/<config>.safetensors: the inputs, weights, output
// and gradients of one forward+backward, for moe_torch.py to check against.
// JSON lines on stdout (PERFORMANCE.md fields), a table on stderr.
#include <cblas.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/io/flags.hpp>
#include <moekit/io/safetensors.hpp>
#include <moekit/moe.hpp>

#include "bench_util.hpp"

namespace {

using namespace moekit;

struct config {
  const char* name;
  std::size_t tokens, d_model, d_ff, experts, k;
};
// PERFORMANCE.md, "Configurations" (the fp32 CPU rows).
constexpr config configs[] = {
    {"C-T", 128, 64, 128, 4, 2},
    {"C-S", 512, 256, 512, 8, 2},
    {"C-F", 512, 256, 128, 64, 6},
    {"C-M", 2048, 512, 1024, 8, 2},
};

struct options {
  std::string config = "C-S", backend = "cpu", dump, clock = "wall";
  int threads = 1, warmup = 3, reps = 15;
  bool all = false;
  std::uint64_t seed = 42;
};

using router_t = moe::top_k_router<dyn, dyn, dyn>;
using expert_t = moe::ffn_expert<dyn, dyn, moe::activation::gelu, /*Bias=*/false>;
using layer_t = moe::layer<router_t, expert_t>;
using matrix = tensor<float, shape<dyn, dyn>>;

layer_t make_layer(const config& c, rng& g) {
  router_t router(g, moe::top_k_options{}, c.d_model, c.experts, c.k);  // softmax, renormalised, dropless
  layer_t::bank_type bank(g, c.experts, c.d_model, c.d_ff);
  return layer_t(std::move(router), std::move(bank));
}

/// Expert-matrix FLOPs of one forward: 2·T·k·d·ff per matrix, 2 matrices.
double forward_flop(const config& c) {
  return 2.0 * double(c.tokens * c.k) * double(c.d_model) * double(c.d_ff) * 2.0;
}

/// Runs one forward+backward with fresh gradients and writes everything the
/// PyTorch baseline needs to check itself against moekit.
void dump(const config& c, layer_t& layer, const matrix& x, const matrix& G, const std::string& dir) {
  visit_parameters(layer, [](const std::string&, auto& p) { p.zero_grad(); });
  tape t;
  auto xv = t.variable(x);
  auto y = layer(xv);
  t.backward(sum(y * t.input(G)));

  std::vector<io::tensor_record> records{io::record_of("x", x), io::record_of("G", G),
                                         io::record_of("out", y.value()), io::record_of("grad.x", xv.grad())};
  visit_parameters(layer, [&](const std::string& path, auto& p) {
    records.push_back(io::record_of(path, p.value()));
    records.push_back(io::record_of("grad." + path, p.grad()));
  });
  std::filesystem::create_directories(dir);
  const auto file = std::filesystem::path(dir) / (std::string(c.name) + ".safetensors");
  io::save_safetensors(file, records,
                       {{"config", c.name}, {"tokens", std::to_string(c.tokens)},
                        {"d_model", std::to_string(c.d_model)}, {"d_ff", std::to_string(c.d_ff)},
                        {"experts", std::to_string(c.experts)}, {"k", std::to_string(c.k)},
                        {"weights", "(in, out) per expert, like nn::linear"}});
  std::fprintf(stderr, "%s: wrote %s\n", c.name, file.string().c_str());
}

/// The expert GEMMs of one layer step over fixed offsets, grouped (as the
/// bank runs them) or as plain sgemm calls of the same total size.
struct gemm_problem {
  std::size_t rows, d, ff, experts;
  offsets_tensor offsets;
  std::vector<float> x, w1, w2, h, y, dx, dh, dw1, dw2;

  gemm_problem(const config& c, offsets_tensor off, rng& g)
      : rows(static_cast<std::size_t>(off[c.experts])), d(c.d_model), ff(c.d_ff), experts(c.experts),
        offsets(std::move(off)) {
    auto fill = [&](std::vector<float>& v, std::size_t n) {
      auto t = normal<float>(g, shape<dyn>{n});
      v.assign(t.data(), t.data() + n);
    };
    fill(x, rows * d), fill(w1, experts * d * ff), fill(w2, experts * ff * d);
    h.resize(rows * ff), y.resize(rows * d), dx.resize(rows * d), dh.resize(rows * ff);
    dw1.resize(experts * d * ff), dw2.resize(experts * ff * d);
  }

  // Forward: h = x·W1, y = h·W2 (per expert segment).
  void grouped_forward() {
    const index_t* o = offsets.data();
    kernels<cpu>::gemm_grouped(false, experts, o, d, ff, 1.f, x.data(), w1.data(), d * ff, 0.f, h.data());
    kernels<cpu>::gemm_grouped(false, experts, o, ff, d, 1.f, h.data(), w2.data(), ff * d, 0.f, y.data());
  }
  // Backward: dh = dy·W2ᵀ, dW2 = hᵀ·dy, dx = dh·W1ᵀ, dW1 = xᵀ·dh (dy := y).
  void grouped_backward() {
    const index_t* o = offsets.data();
    kernels<cpu>::gemm_grouped(true, experts, o, d, ff, 1.f, y.data(), w2.data(), ff * d, 0.f, dh.data());
    kernels<cpu>::gemm_grouped_reduce(experts, o, ff, d, 1.f, h.data(), y.data(), 0.f, dw2.data(), ff * d);
    kernels<cpu>::gemm_grouped(true, experts, o, ff, d, 1.f, dh.data(), w1.data(), d * ff, 0.f, dx.data());
    kernels<cpu>::gemm_grouped_reduce(experts, o, d, ff, 1.f, x.data(), dh.data(), 0.f, dw1.data(), d * ff);
  }
  // The same GEMMs as single sgemm calls over all rows (one weight matrix).
  void plain_forward() {
    gemm(false, false, rows, ff, d, x.data(), w1.data(), h.data());
    gemm(false, false, rows, d, ff, h.data(), w2.data(), y.data());
  }
  void plain_backward() {
    gemm(false, true, rows, ff, d, y.data(), w2.data(), dh.data());
    gemm(true, false, ff, d, rows, h.data(), y.data(), dw2.data());
    gemm(false, true, rows, d, ff, dh.data(), w1.data(), dx.data());
    gemm(true, false, d, ff, rows, x.data(), dh.data(), dw1.data());
  }

 private:
  // C(m, n) = op(A)·op(B), row-major, A stored (m, k) or (k, m), B (k, n) or (n, k).
  static void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const float* a, const float* b,
                   float* c) {
    const int M = int(m), N = int(n), K = int(k);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.f, a,
                ta ? M : K, b, tb ? K : N, 0.f, c, N);
  }
};

/// Milliseconds on the chosen clock: "wall" (steady_clock, the protocol's), or
/// "cpu" (this thread's CPU time: on a loaded machine it leaves out the time
/// other processes hold the core; meaningful with --threads 1 only).
double clock_ms(const std::string& clock) {
  if (clock == "wall") return bench::now_ms();
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

/// bench::interleaved on the chosen clock.
std::vector<bench::stats> interleaved(const std::vector<std::function<void()>>& runs, const options& o) {
  if (o.clock == "wall") return bench::interleaved(runs, o.warmup, o.reps);
  for (int w = 0; w < o.warmup; ++w)
    for (const auto& run : runs) run();
  std::vector<std::vector<double>> times(runs.size());
  for (int r = 0; r < o.reps; ++r)
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const double t0 = clock_ms(o.clock);
      runs[i]();
      times[i].push_back(clock_ms(o.clock) - t0);
    }
  std::vector<bench::stats> out;
  for (auto& t : times) out.push_back(bench::summarize(std::move(t)));
  return out;
}

/// Per-stage times of the staged forward, one entry per timed repetition.
struct stage_times {
  std::vector<double> router, gather, experts, combine, total;
};

void bench_config(const config& c, const options& o) {
  rng g(o.seed);
  auto layer = make_layer(c, g);
  auto x = normal<float>(g, shape<dyn, dyn>{c.tokens, c.d_model});  // (T, d)
  auto G = normal<float>(g, shape<dyn, dyn>{c.tokens, c.d_model});  // (T, d) upstream gradient
  if (!o.dump.empty()) dump(c, layer, x, G, o.dump);

  auto forward = [&] {
    tape t;
    auto y = layer(t.variable(x));
  };
  auto forward_backward = [&] {
    tape t;
    auto y = layer(t.variable(x));
    t.backward(sum(y * t.input(G)));
  };
  // moe::layer::operator() step by step, through the same public calls.
  stage_times st;
  auto staged = [&] {
    tape t;
    auto xv = t.variable(x);
    const double t0 = clock_ms(o.clock);
    auto plan = layer.router().route(xv);
    const double t1 = clock_ms(o.clock);
    auto rows = moe::dispatch(xv, plan);  // (A, d) in expert order
    const double t2 = clock_ms(o.clock);
    auto y = layer.experts()(rows, plan.offsets);  // (A, d)
    const double t3 = clock_ms(o.clock);
    auto out = moe::combine(y, plan, c.tokens);  // (T, d)
    const double t4 = clock_ms(o.clock);
    st.router.push_back(t1 - t0), st.gather.push_back(t2 - t1), st.experts.push_back(t3 - t2);
    st.combine.push_back(t4 - t3), st.total.push_back(t4 - t0);
  };

  offsets_tensor offsets;
  {
    tape t;
    offsets = layer.router().route(t.variable(x)).offsets.clone();
  }
  gemm_problem gp(c, std::move(offsets), g);

  auto s = interleaved({forward, forward_backward, staged, [&] { gp.grouped_forward(); }, [&] { gp.plain_forward(); },
                        [&] { gp.grouped_backward(); }, [&] { gp.plain_backward(); }},
                       o);
  // The staged forward also recorded its warm-ups: keep the timed repetitions.
  auto keep_last = [&](std::vector<double>& v) {
    if (v.size() > std::size_t(o.reps)) v.erase(v.begin(), v.end() - o.reps);
    return bench::summarize(v);
  };
  const auto router = keep_last(st.router), gather = keep_last(st.gather), experts = keep_last(st.experts),
             combine = keep_last(st.combine), total = keep_last(st.total);

  const double fwd_flop = forward_flop(c), gf = 1e6;
  const double sgemm_fwd_gflops = fwd_flop / (s[4].median_ms * gf);
  const double sgemm_all_gflops = 3 * fwd_flop / ((s[4].median_ms + s[6].median_ms) * gf);
  const double tokens_per_expert = double(c.tokens * c.k) / double(c.experts);
  auto common = [&](const char* bench_name) {
    bench::json_line j;
    j.add("bench", bench_name).add("config", c.name).add("backend", "cpu").add("dtype", "f32")
        .add("threads", o.threads).add("clock", o.clock);
    return j;
  };
  const std::string ceiling = "cblas_sgemm " + std::to_string(c.tokens * c.k) + "x" + std::to_string(c.d_model) +
                              "x" + std::to_string(c.d_ff);
  common("moe_layer").add("pass", "fwd").add("", s[0]).add("gflops", fwd_flop / (s[0].median_ms * gf))
      .add("ceiling", ceiling).add("ceiling_gflops", sgemm_fwd_gflops).add("tokens_per_expert", tokens_per_expert)
      .print();
  common("moe_layer").add("pass", "fwd+bwd").add("", s[1]).add("gflops", 3 * fwd_flop / (s[1].median_ms * gf))
      .add("ceiling", ceiling).add("ceiling_gflops", sgemm_all_gflops).add("tokens_per_expert", tokens_per_expert)
      .print();
  const double overhead = router.median_ms + gather.median_ms + combine.median_ms;
  common("moe_layer_stages").add("pass", "fwd").add("", total).add("router_ms", router.median_ms)
      .add("gather_ms", gather.median_ms).add("experts_ms", experts.median_ms).add("combine_ms", combine.median_ms)
      .add("router_permute_combine_share", overhead / total.median_ms).print();
  const double grouped_fwd_gflops = fwd_flop / (s[3].median_ms * gf);
  const double grouped_all_gflops = 3 * fwd_flop / ((s[3].median_ms + s[5].median_ms) * gf);
  common("moe_expert_gemm").add("pass", "fwd").add("", s[3]).add("gflops", grouped_fwd_gflops)
      .add("ceiling", ceiling).add("ceiling_median_ms", s[4].median_ms).add("ceiling_gflops", sgemm_fwd_gflops)
      .add("ratio", grouped_fwd_gflops / sgemm_fwd_gflops).print();
  common("moe_expert_gemm").add("pass", "fwd+bwd").add("median_ms", s[3].median_ms + s[5].median_ms)
      .add("gflops", grouped_all_gflops).add("ceiling", ceiling)
      .add("ceiling_median_ms", s[4].median_ms + s[6].median_ms).add("ceiling_gflops", sgemm_all_gflops)
      .add("ratio", grouped_all_gflops / sgemm_all_gflops).print();

  std::fprintf(stderr,
               "%-4s T=%zu d=%zu ff=%zu E=%zu k=%zu (%.0f tokens/expert)\n"
               "     fwd      %9.3f ms [%8.3f, %8.3f] %6.1f GFLOP/s\n"
               "     fwd+bwd  %9.3f ms [%8.3f, %8.3f] %6.1f GFLOP/s\n"
               "     stages   router %.3f  gather %.3f  experts %.3f  combine %.3f  (of %.3f ms): "
               "router+permute+combine %.1f %%\n"
               "     GEMMs    grouped fwd %.1f GFLOP/s vs sgemm %.1f (%.1f %%) | fwd+bwd %.1f vs %.1f (%.1f %%)\n",
               c.name, c.tokens, c.d_model, c.d_ff, c.experts, c.k, tokens_per_expert, s[0].median_ms, s[0].p10_ms,
               s[0].p90_ms, fwd_flop / (s[0].median_ms * gf), s[1].median_ms, s[1].p10_ms, s[1].p90_ms,
               3 * fwd_flop / (s[1].median_ms * gf), router.median_ms, gather.median_ms, experts.median_ms,
               combine.median_ms, total.median_ms, 100 * overhead / total.median_ms, grouped_fwd_gflops,
               sgemm_fwd_gflops, 100 * grouped_fwd_gflops / sgemm_fwd_gflops, grouped_all_gflops, sgemm_all_gflops,
               100 * grouped_all_gflops / sgemm_all_gflops);
}

}  // namespace

int main(int argc, char** argv) try {
  options o;
  moekit::flags cli("bench_moe_layer",
                    "moe::layer forward and forward+backward on the C configurations of PERFORMANCE.md, its stage\n"
                    "split, and its expert GEMMs against plain cblas_sgemm. JSON lines on stdout; a table on stderr.");
  cli.add("config", o.config, "C-T, C-S, C-F or C-M");
  cli.add("all", o.all, "every configuration");
  cli.add("backend", o.backend, "cpu (the only backend built)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed repetitions first");
  cli.add("reps", o.reps, "timed repetitions (median reported)");
  cli.add("seed", o.seed, "weights, inputs and G");
  cli.add("clock", o.clock, "wall (steady_clock) or cpu (thread CPU time, for loaded machines; 1 thread)");
  cli.add("dump", o.dump, "directory for <config>.safetensors (inputs, weights, output, gradients)");
  if (!cli.parse(argc, argv)) return 0;
  if (o.backend != "cpu")
    throw moekit::value_error("bench_moe_layer: --backend " + o.backend + " is not available; only cpu is built");
  if (o.clock != "wall" && o.clock != "cpu")
    throw moekit::value_error("bench_moe_layer: --clock must be wall or cpu, got " + o.clock);
  if (o.reps < 1 || o.warmup < 0 || o.threads < 1)
    throw moekit::value_error("bench_moe_layer: need --reps >= 1, --warmup >= 0, --threads >= 1");
  std::vector<config> chosen;
  for (const auto& c : configs)
    if (o.all || o.config == c.name) chosen.push_back(c);
  if (chosen.empty())
    throw moekit::value_error("bench_moe_layer: unknown --config " + o.config + " (C-T, C-S, C-F or C-M)");
  moekit::set_num_threads(o.threads);
  std::fprintf(stderr, "bench_moe_layer: %d thread(s), %d warm-up, %d timed repetitions, %s clock\n", o.threads,
               o.warmup, o.reps, o.clock.c_str());
  for (const auto& c : chosen) bench_config(c, o);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 2;
}

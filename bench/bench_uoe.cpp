// bench_uoe — the Union-of-Experts transformer block (uoe::block: SMHA +
// UoME, pre-norm) forward and forward+backward against the dense block of the
// same width (moe::transformer_block: nn::multi_head_attention + the dense
// GELU FFN), timed interleaved in one run. The PyTorch baseline is
// bench/python/uoe_torch.py: the reference's forward (uoe-coe.md 1.3-1.4:
// per-expert top-c token selection, gathered xs (E, B, c, d), baddbmm over the
// stacked slices, attention on the compacted sequences, scatter_add back) run
// on the weights this bench dumps, numerics checked first.
//
// Every UoE row is cut from the one dense block (uoe::decompose: head h's
// columns of Wq/Wk/Wv and rows of Wo, MLP slice e of W1/b1/W2; the routers are
// drawn from one seed, so every row routes alike). Rows (--configs):
//   dense            moe::transformer_block, causal MHA + dense FFN d -> F -> d
//   faithful-cP      uoe::block, faithful mode (gates only select), top_k = E
//                    for the UoME and H for the SMHA (every token marks every
//                    expert), so the capacity P % alone sets the work: each
//                    expert (MLP slice, head) keeps c = floor(P/100 · seq) tokens
//                    of each sample; faithful-c100 is the dense block exactly
//   gated-cP         the same, each expert output weighted by its gate
//   causal-cP        arrival-order selection (with top_k = E: the first c tokens)
// --top-k / --attn-top-k set the marks per token (0: every expert).
//
// FLOPs count matrix products, routers included, attention's two bmm over
// the full (unmasked) c x c score matrix as the kernels compute it:
//   dense  fwd = 8·T·d² + 4·B·S²·d + 4·T·d·F
//   UoE    fwd = 8·B·c·d² + 4·B·c²·d + 4·B·c·d·F + 2·T·d·(H + E)
// T = B·S tokens; fwd+bwd = 3 x fwd. At c = S/2 the UoE block has 47 % of the
// dense block's FLOPs (d 256, F 1024, S 256): projections and FFN halve, the
// attention quarters.
//
// Ceilings measured in the same run: one core's FP32 FMA rate, cblas_sgemm on
// the dense block's forward GEMM shapes (4 x T·d·d, T·d·F, T·F·d) and on the
// UoME slices at capacity 50 % (E x ((B·c)·d·Fe, (B·c)·Fe·d)), interleaved with
// the rows, and OpenBLAS's kernel name (openblas_get_corename). Each row is
// timed on the wall clock and on this thread's CPU time (the figure to read on
// a loaded machine, at 1 thread).
//
//   build/bin/bench_uoe --threads 1
//   build/bin/bench_uoe --dump DIR --no-time   # then bench/python/uoe_torch.py --check DIR
//   build/bin/bench_uoe --parts                # + attention, FFN and selection alone per row
//
// JSON lines on stdout (PERFORMANCE.md fields), a table on stderr.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <moekit.hpp>
#include <moekit/mlp/block.hpp>
#include <moekit/moe/transformer_block.hpp>
#include <moekit/uoe.hpp>

#include "bench_device.hpp"
#include "bench_util.hpp"
#include "common/flags.hpp"

namespace {

using namespace moekit;

struct options {
  std::string configs = "dense,faithful-c100,faithful-c75,faithful-c50,faithful-c25,gated-c50", dump;
  std::size_t batch = 8, seq = 256, d_model = 256, heads = 8, d_ff = 1024, experts = 4, top_k = 0, attn_top_k = 0;
  bool causal = true, time = true, parts = false;
  int threads = 1, warmup = 3, reps = 15;
  std::uint64_t seed = 42;
};

/// One row: the dense block, or a UoE block in a mode at a capacity.
struct config {
  std::string name;
  bool dense = true;
  uoe::mode mode = uoe::mode::faithful;
  int percent = 100;
  double capacity() const { return percent / 100.0; }
};

config parse_config(const std::string& name) {
  if (name == "dense") return {name};
  config c{name, false};
  const auto dash = name.find("-c");
  const std::string mode = name.substr(0, dash);
  int n = 0;
  const bool number = dash != std::string::npos &&
                      std::sscanf(name.c_str() + dash, "-c%d%n", &c.percent, &n) == 1 &&
                      dash + std::size_t(n) == name.size() && c.percent >= 1 && c.percent <= 100;
  if (mode == "faithful") c.mode = uoe::mode::faithful;
  else if (mode == "gated") c.mode = uoe::mode::gated;
  else if (mode == "causal") c.mode = uoe::mode::causal;
  if (!number || (mode != "faithful" && mode != "gated" && mode != "causal"))
    throw value_error("--configs: '" + name + "' is not dense or {faithful,gated,causal}-cP, P in [1, 100]");
  return c;
}

std::vector<config> parse_configs(const std::string& list) {
  try {
    return bench::parse_list(list, parse_config, "--configs");
  } catch (const std::invalid_argument& e) {
    throw value_error(e.what());
  }
}

/// The dense FFN d -> F -> d (GELU, biases) as a transformer_block FFN (as
/// examples/common/char_model.hpp's dense_ffn, with the inner layer exposed
/// for uoe::decompose).
class dense_ffn {
 public:
  dense_ffn(rng& g, std::size_t d, std::size_t ff) : ff_(g, d, ff) {}
  template <class S>
  auto operator()(const var<float, S, cpu>& x) {
    return ff_(x);
  }
  mlp::feed_forward<dyn, dyn, float, cpu>& ff() noexcept { return ff_; }
  void train(bool = true) noexcept {}
  template <class V>
  void parameters(V&& visit) {
    ff_.parameters(visit);
  }

 private:
  mlp::feed_forward<dyn, dyn, float, cpu> ff_;
};

using dense_block = moe::transformer_block<dense_ffn, float>;
using uoe_block = uoe::block<uoe::uome<float>, float>;
using x_t = tensor<float, shape<dyn, dyn, dyn>>;
using xv_t = var<float, shape<dyn, dyn, dyn>, cpu>;

/// Slots per (expert, sample) of a row: c (seq for the dense block).
std::size_t slots(const config& c, const options& o) {
  return c.dense ? o.seq : uoe::slots_of({.capacity = c.capacity()}, o.seq);
}

/// Matrix FLOPs of one forward (see the header).
double forward_flop(const config& c, const options& o) {
  const double b = double(o.batch), s = double(o.seq), d = double(o.d_model), f = double(o.d_ff),
               cs = double(slots(c, o)), t = b * s;
  const double body = 8 * b * cs * d * d + 4 * b * cs * cs * d + 4 * b * cs * d * f;
  return c.dense ? body : body + 2 * t * d * double(o.heads + o.experts);
}

/// One row's block: the dense one, or a UoE block cut from it.
struct model {
  config c;
  dense_block* dense = nullptr;  // the shared dense block (row "dense")
  std::optional<uoe_block> uoe;

  xv_t operator()(const xv_t& x) { return dense ? (*dense)(x) : (*uoe)(x); }
  template <class V>
  void visit(V&& v) {
    if (dense) visit_parameters(*dense, v);
    else visit_parameters(*uoe, v);
  }
};

uoe::selection_options selection_of(const config& c, std::size_t top_k, std::size_t experts) {
  return {.mode = c.mode, .top_k = top_k ? top_k : experts, .capacity = c.capacity()};
}

/// The UoE block equal to `dense` at capacity 1 (faithful): its SMHA and UoME
/// cut from dense's attention and FFN; routers from one seed for every row.
void make_uoe(model& m, dense_block& dense, const options& o) {
  rng g(o.seed + 1);
  const auto attn = selection_of(m.c, o.attn_top_k, o.heads), ffn = selection_of(m.c, o.top_k, o.experts);
  const uoe::smha_options so{.d_model = o.d_model, .heads = o.heads, .select = attn, .causal = o.causal};
  m.uoe.emplace(g, so, uoe::decompose(g, dense.moe().ff(), uoe::uome_options{.experts = o.experts, .select = ffn}));
  m.uoe->attention() = uoe::decompose(g, dense.attention(), so);
}

/// One forward+backward with fresh gradients, written to DIR/<config>.safetensors:
/// x, G, out, grad.x, every parameter and its grad.<name>, and the selections:
/// select.attention.token (H·B·c) b·seq + position per (head, sample, slot),
/// select.ffn.token / select.ffn.expert (A) the UoME's kept (token, expert) pairs.
void dump(model& m, const options& o, const x_t& x, const x_t& G) {
  m.visit([](const std::string&, auto& p) { p.zero_grad(); });
  tape t;
  auto xv = t.variable(x);              // (B, S, d)
  auto y = m(xv);                       // (B, S, d)
  t.backward(sum(y * t.input(G)));
  std::vector<io::tensor_record> records{io::record_of("x", x), io::record_of("G", G),
                                         io::record_of("out", y.value()), io::record_of("grad.x", xv.grad())};
  m.visit([&](const std::string& path, auto& p) {
    records.push_back(io::record_of(path, p.value()));
    if (p.grad().defined()) records.push_back(io::record_of("grad." + path, p.grad()));
  });
  if (m.uoe) {
    records.push_back(io::record_of("select.attention.token", m.uoe->attention().last_selection().token));
    const auto& plan = m.uoe->moe().last_routing();
    records.push_back(io::record_of("select.ffn.token", plan.token));
    records.push_back(io::record_of("select.ffn.expert", plan.expert));
  }
  auto str = [](std::size_t v) { return std::to_string(v); };
  std::filesystem::create_directories(o.dump);
  const auto file = std::filesystem::path(o.dump) / (m.c.name + ".safetensors");
  io::save_safetensors(
      file, records,
      {{"config", m.c.name}, {"block", m.c.dense ? "dense" : "uoe"}, {"mode", uoe::mode_name(m.c.mode)},
       {"capacity", std::to_string(m.c.capacity())}, {"slots", str(slots(m.c, o))}, {"batch", str(o.batch)},
       {"seq", str(o.seq)}, {"d_model", str(o.d_model)}, {"heads", str(o.heads)}, {"d_ff", str(o.d_ff)},
       {"experts", str(o.experts)}, {"top_k", str(o.top_k ? o.top_k : o.experts)},
       {"attn_top_k", str(o.attn_top_k ? o.attn_top_k : o.heads)}, {"causal", o.causal ? "1" : "0"},
       {"epsilon", "1e-8"}, {"ln_eps", "1e-5"}, {"activation", "gelu (erf)"},
       {"block_form", "h = x + attn(LN1(x)); y = h + ffn(LN2(h))"}, {"loss", "sum(out * G)"},
       {"weights", "(in, out) like nn::linear; experts stacked (E, in, out)"}});
  std::fprintf(stderr, "%s: wrote %s\n", m.c.name.c_str(), file.string().c_str());
}

/// Direct cblas_sgemm calls on given (m, n, k) shapes, each `times` times.
struct sgemm_ceiling {
  struct gemm {
    int m, n, k, times;
  };
  std::string name;
  std::vector<gemm> shapes;
  std::vector<tensor<float, shape<dyn>>> a, b, c;
  sgemm_ceiling(std::string label, std::vector<gemm> s, rng& g) : name(std::move(label)), shapes(std::move(s)) {
    for (const auto& x : shapes) {
      a.push_back(normal<float>(g, shape<dyn>{std::size_t(x.m * x.k)}));
      b.push_back(normal<float>(g, shape<dyn>{std::size_t(x.k * x.n)}));
      c.push_back(tensor<float, shape<dyn>>(shape<dyn>{std::size_t(x.m * x.n)}));
    }
  }
  void operator()() {
    for (std::size_t i = 0; i < shapes.size(); ++i)
      for (int r = 0; r < shapes[i].times; ++r)
        bench::direct_gemm<cpu>::run(false, false, shapes[i].m, shapes[i].n, shapes[i].k, a[i].data(), b[i].data(),
                                     c[i].data());
  }
  double flop() const {
    double f = 0;
    for (const auto& x : shapes) f += 2.0 * x.m * x.n * x.k * x.times;
    return f;
  }
};

/// Timed results of one row: forward and fwd+bwd, wall and thread-CPU clocks.
struct row {
  config c;
  bench::stats fwd, fwd_bwd, fwd_cpu, fwd_bwd_cpu;
};

struct ceilings {
  std::string dense, slices;
  double dense_gflops = 0, slices_gflops = 0, fma_peak = 0;  // fma_peak: per core × threads
};

void json_lines(const row& r, const row* dense, const options& o, const bench::machine_info& m, const ceilings& ce) {
  const double flop = forward_flop(r.c, o);
  for (const auto& [pass, st, cpu_st, f] : {std::tuple{"fwd", r.fwd, r.fwd_cpu, flop},
                                            std::tuple{"fwd+bwd", r.fwd_bwd, r.fwd_bwd_cpu, 3 * flop}}) {
    const double gflops = f / (st.median_ms * 1e6), cpu_gflops = f / (cpu_st.median_ms * 1e6);
    bench::json_line j;
    j.add("bench", "uoe_block").add("config", r.c.name).add("backend", "cpu")
        .add("impl", r.c.dense ? "moekit moe::transformer_block (dense)" : "moekit uoe::block<uoe::uome>")
        .add("dtype", "f32").add("threads", o.threads).add("pass", pass).add("", st).add("cpu_", cpu_st)
        .add("gflops", gflops).add("cpu_gflops", cpu_gflops).add("gflop", f / 1e9)
        .add("mode", r.c.dense ? "dense" : uoe::mode_name(r.c.mode)).add("capacity", r.c.capacity())
        .add("slots", double(slots(r.c, o))).add("batch", double(o.batch)).add("seq", double(o.seq))
        .add("d_model", double(o.d_model)).add("heads", double(o.heads)).add("d_ff", double(o.d_ff))
        .add("experts", double(o.experts)).add("top_k", double(o.top_k ? o.top_k : o.experts))
        .add("attn_top_k", double(o.attn_top_k ? o.attn_top_k : o.heads)).add("causal", o.causal ? 1 : 0)
        .add("machine", m.host).add("cpu", m.cpu).add("blas_core", m.blas_core)
        .add("omp_wait_policy", m.omp_wait_policy).add("ceiling", ce.dense).add("ceiling_gflops", ce.dense_gflops)
        .add("ceiling_slices", ce.slices).add("ceiling_slices_gflops", ce.slices_gflops)
        .add("fma_peak_gflops", ce.fma_peak).add("share_of_fma_peak", ce.fma_peak > 0 ? cpu_gflops / ce.fma_peak : 0.0);
    if (dense) {
      const bool f_pass = pass == std::string("fwd");
      const auto& w = f_pass ? dense->fwd : dense->fwd_bwd;
      const auto& wc = f_pass ? dense->fwd_cpu : dense->fwd_bwd_cpu;
      j.add("flop_ratio_to_dense", flop / forward_flop(dense->c, o)).add("ratio_to_dense", st.median_ms / w.median_ms)
          .add("cpu_ratio_to_dense", cpu_st.median_ms / wc.median_ms);
    }
    j.print();
  }
}

void table(const std::vector<row>& rows, const row* dense, const options& o, const bench::machine_info& m,
           const ceilings& ce) {
  std::fprintf(stderr, "%-14s %5s | %8s %8s | %9s %9s %9s %9s %7s %6s | %6s %6s %6s\n", "config", "c", "fwd ms",
               "fwd cpu", "f+b ms", "p10", "p90", "f+b cpu", "GFLOP/s", "%peak", "flops", "t/dns", "cpu/dn");
  for (const auto& r : rows) {
    const double flop = forward_flop(r.c, o), gf = 3 * flop / (r.fwd_bwd_cpu.median_ms * 1e6);
    std::fprintf(stderr, "%-14s %5zu | %8.2f %8.2f | %9.2f %9.2f %9.2f %9.2f %7.1f %5.1f%% | ", r.c.name.c_str(),
                 slots(r.c, o), r.fwd.median_ms, r.fwd_cpu.median_ms, r.fwd_bwd.median_ms, r.fwd_bwd.p10_ms,
                 r.fwd_bwd.p90_ms, r.fwd_bwd_cpu.median_ms, gf, ce.fma_peak > 0 ? 100 * gf / ce.fma_peak : 0.0);
    if (dense)
      std::fprintf(stderr, "%6.3f %6.3f %6.3f\n", flop / forward_flop(dense->c, o),
                   r.fwd_bwd.median_ms / dense->fwd_bwd.median_ms,
                   r.fwd_bwd_cpu.median_ms / dense->fwd_bwd_cpu.median_ms);
    else
      std::fprintf(stderr, "\n");
  }
  std::fprintf(stderr,
               "ceilings: %s %.1f GFLOP/s; %s %.1f GFLOP/s; FMA peak %.1f GFLOP/s (%d thread(s)); %s, OpenBLAS %s, "
               "OMP_WAIT_POLICY %s\n",
               ce.dense.c_str(), ce.dense_gflops, ce.slices.c_str(), ce.slices_gflops, ce.fma_peak, o.threads,
               m.cpu.c_str(), m.blas_core.c_str(), m.omp_wait_policy.c_str());
  std::fprintf(stderr, "GFLOP/s and %%peak on thread-CPU time; last columns: FLOP ratio, wall and CPU time ratios "
                       "(fwd+bwd medians) to dense; target: the 50 %% row <= 0.60 of dense\n");
}

/// --parts: each row's attention sublayer and FFN sublayer alone (fwd+bwd on
/// x, no norm, no residual) and, for UoE rows, the two routers' selections
/// (forward only), interleaved; JSON lines with "part".
void time_parts(std::vector<model>& models, const options& o, const x_t& x, const x_t& G,
                const bench::machine_info& m) {
  std::vector<std::function<void()>> runs;
  std::vector<std::pair<std::string, std::string>> names;  // (config, part)
  const std::size_t t_rows = o.batch * o.seq;
  for (auto& md : models) {
    runs.push_back([&] {
      tape t;
      auto xv = t.variable(x);
      auto y = md.dense ? md.dense->attention()(xv) : md.uoe->attention()(xv);
      t.backward(sum(y * t.input(G)));
    });
    names.push_back({md.c.name, "attention"});
    runs.push_back([&] {
      tape t;
      auto xv = t.variable(x);
      auto y = md.dense ? moe::apply_ffn(md.dense->moe(), xv) : moe::apply_ffn(md.uoe->moe(), xv);
      t.backward(sum(y * t.input(G)));
    });
    names.push_back({md.c.name, "ffn"});
    if (md.uoe) {
      runs.push_back([&] {
        tape t;
        auto rows = t.input(x.reshape(shape<dyn, dyn>{t_rows, o.d_model}));
        auto a = md.uoe->attention().router_layer().select(rows, o.batch, o.seq);
        auto f = md.uoe->moe().router_layer().select(rows, o.batch, o.seq);
      });
      names.push_back({md.c.name, "select"});
    }
  }
  const auto s = bench::interleaved_clocks(runs, o.warmup, o.reps, {bench::now_ms, bench::thread_cpu_ms});
  std::fprintf(stderr, "parts (fwd+bwd; select: forward of both routers' selections):\n");
  for (std::size_t i = 0; i < runs.size(); ++i) {
    bench::json_line j;
    j.add("bench", "uoe_block_part").add("config", names[i].first).add("part", names[i].second)
        .add("threads", o.threads).add("pass", names[i].second == "select" ? "fwd" : "fwd+bwd").add("", s[0][i])
        .add("cpu_", s[1][i]).add("machine", m.host).add("blas_core", m.blas_core);
    j.print();
    std::fprintf(stderr, "  %-14s %-10s %9.2f ms wall %9.2f ms cpu\n", names[i].first.c_str(), names[i].second.c_str(),
                 s[0][i].median_ms, s[1][i].median_ms);
  }
}

void run(const options& o) {
  const auto configs = parse_configs(o.configs);
  if (o.d_model % o.heads != 0 || o.d_ff % o.experts != 0)
    throw value_error("--d-model must be a multiple of --heads and --d-ff of --experts");
  rng data(o.seed);
  const shape<dyn, dyn, dyn> xs{o.batch, o.seq, o.d_model};
  const auto x = normal<float>(data, xs);  // (B, S, d) block input
  const auto G = normal<float>(data, xs);  // (B, S, d) upstream gradient
  rng g(o.seed + 2);
  dense_block dense(g, o.d_model, o.heads, dense_ffn(g, o.d_model, o.d_ff), nn::attention_options{.causal = o.causal});
  std::vector<model> models(configs.size());
  for (std::size_t i = 0; i < configs.size(); ++i) {
    models[i].c = configs[i];
    if (configs[i].dense) models[i].dense = &dense;
    else make_uoe(models[i], dense, o);
  }
  {  // faithful at capacity 1 computes the dense block: say how closely
    model full;
    full.c = parse_config("faithful-c100");
    make_uoe(full, dense, o);
    tape t;
    const auto a = dense(t.input(x)).value(), b = full(t.input(x)).value();
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      err = std::max(err, double(std::abs(a.data()[i] - b.data()[i])));
      scale = std::max(scale, double(std::abs(a.data()[i])));
    }
    std::fprintf(stderr, "check: faithful-c100 vs dense forward: max |diff| %.3e (max |dense| %.3e)\n", err, scale);
  }
  if (!o.dump.empty())
    for (auto& md : models) dump(md, o, x, G);
  if (!o.time) return;

  const bench::machine_info m = bench::describe_machine();
  rng cg(o.seed + 3);
  const int t_rows = int(o.batch * o.seq), d = int(o.d_model), f = int(o.d_ff), e = int(o.experts);
  const int half = int(o.batch * uoe::slots_of({.capacity = 0.5}, o.seq)), fe = f / e;
  sgemm_ceiling dense_gemms("cblas_sgemm dense fwd 4x" + std::to_string(t_rows) + "x" + std::to_string(d) + "x" +
                                std::to_string(d) + " + " + std::to_string(t_rows) + "x" + std::to_string(d) + "x" +
                                std::to_string(f) + " + " + std::to_string(t_rows) + "x" + std::to_string(f) + "x" +
                                std::to_string(d),
                            {{t_rows, d, d, 4}, {t_rows, f, d, 1}, {t_rows, d, f, 1}}, cg);
  sgemm_ceiling slice_gemms("cblas_sgemm UoME slices at 50% " + std::to_string(e) + "x(" + std::to_string(half) + "x" +
                                std::to_string(d) + "x" + std::to_string(fe) + " + " + std::to_string(half) + "x" +
                                std::to_string(fe) + "x" + std::to_string(d) + ")",
                            {{half, fe, d, e}, {half, d, fe, e}}, cg);
  std::vector<std::function<void()>> runs;
  for (auto& md : models) {
    runs.push_back([&] {
      tape t;
      auto y = md(t.variable(x));  // (B, S, d)
    });
    runs.push_back([&] {
      tape t;
      auto y = md(t.variable(x));  // (B, S, d)
      t.backward(sum(y * t.input(G)));
    });
  }
  runs.push_back([&] { dense_gemms(); });
  runs.push_back([&] { slice_gemms(); });
  const auto s = bench::interleaved_clocks(runs, o.warmup, o.reps, {bench::now_ms, bench::thread_cpu_ms});
  const auto& wall = s[0];
  const std::size_t n = runs.size();
  const ceilings ce{dense_gemms.name, slice_gemms.name, dense_gemms.flop() / (wall[n - 2].median_ms * 1e6),
                    slice_gemms.flop() / (wall[n - 1].median_ms * 1e6), m.fma_peak_core * o.threads};
  std::vector<row> rows;
  for (std::size_t i = 0; i < models.size(); ++i)
    rows.push_back({configs[i], wall[2 * i], wall[2 * i + 1], s[1][2 * i], s[1][2 * i + 1]});
  const row* dense_row = nullptr;
  for (const auto& r : rows)
    if (r.c.dense) dense_row = &r;
  for (const auto& r : rows) json_lines(r, dense_row, o, m, ce);
  table(rows, dense_row, o, m, ce);
  if (o.parts) time_parts(models, o, x, G, m);
}

}  // namespace

int main(int argc, char** argv) try {
  bench::relaunch(argv);
  options o;
  moekit::flags cli("bench_uoe",
                    "Union-of-Experts block (uoe::block: SMHA + UoME, pre-norm) forward and forward+backward at\n"
                    "several capacities against the dense block of the same width, interleaved; --dump writes the\n"
                    "weights, output and gradients for bench/python/uoe_torch.py --check. JSON lines on stdout; a\n"
                    "table on stderr.");
  cli.add("configs", o.configs, "comma-separated rows: dense, {faithful,gated,causal}-cP (capacity P %)");
  cli.add("batch", o.batch, "B samples");
  cli.add("seq", o.seq, "S tokens per sample");
  cli.add("d-model", o.d_model, "d");
  cli.add("heads", o.heads, "H attention heads (the SMHA's experts)");
  cli.add("d-ff", o.d_ff, "F, the dense FFN's hidden width (E slices of F/E)");
  cli.add("experts", o.experts, "E UoME experts");
  cli.add("top-k", o.top_k, "UoME experts each token marks (0: all E)");
  cli.add("attn-top-k", o.attn_top_k, "heads each token marks (0: all H)");
  cli.add("causal", o.causal, "causal attention (--no-causal: bidirectional)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed repetitions first");
  cli.add("reps", o.reps, "timed repetitions (median reported)");
  cli.add("seed", o.seed, "weights, input and G");
  cli.add("dump", o.dump, "directory for <config>.safetensors (input, weights, output, gradients, selections)");
  cli.add("time", o.time, "time the rows (--no-time: only the check and --dump)");
  cli.add("parts", o.parts, "also time each row's attention, FFN and selection alone");
  if (!cli.parse(argc, argv)) return 0;
  bench::print_blas_line();
  if (o.reps < 1 || o.warmup < 0 || o.threads < 1)
    throw moekit::value_error("need --reps >= 1, --warmup >= 0, --threads >= 1");
  moekit::set_num_threads(o.threads);
  std::fprintf(stderr,
               "bench_uoe: %d thread(s), %d warm-up, %d timed repetitions; B=%zu S=%zu d=%zu H=%zu F=%zu E=%zu, "
               "top_k %zu, attn top_k %zu, %s\n",
               o.threads, o.warmup, o.reps, o.batch, o.seq, o.d_model, o.heads, o.d_ff, o.experts,
               o.top_k ? o.top_k : o.experts, o.attn_top_k ? o.attn_top_k : o.heads,
               o.causal ? "causal" : "bidirectional");
  run(o);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_uoe: %s\n", e.what());
  return 2;
}

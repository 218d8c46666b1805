// bench_moe_layer — moe::layer (softmax → top-k → renormalise router, no
// biases) on the configurations of PERFORMANCE.md, timed interleaved in one
// run: the C configurations (GELU FFN experts, 2 matrices) on the CPU, the G
// configurations (SwiGLU experts, 3 matrices) on the GPU:
//   1. forward and forward+backward (the output's gradient seeded with G,
//      fixed and random: tape.backward(y, G), no loss op), as the PyTorch
//      baselines (bench/python/moe_torch.py, moe_torch_cuda.py) do (y.backward(G));
//   2. one forward split into its stages by calling the public ops the layer
//      calls: router.route, dispatch (gather), the expert bank, the weighted combine;
//   3. the expert GEMMs alone (grouped, over the layer's real offsets) against
//      direct BLAS calls of the same total size ((T·k) × d × ff per matrix):
//      cblas_sgemm on the CPU; on the GPU cublasSgemm (TF32 off), and for the
//      record a bf16 cublasGemmEx forward (PyTorch's bf16 ceiling).
//
//   build/bin/bench_moe_layer --config C-S --threads 1        # CPU, the C configurations
//   build/bin/bench_moe_layer --backend cuda --config G-O     # GPU (nvcc builds)
//   build/bin/bench_moe_layer --backend cuda --all --skew zipf
//
// GPU protocol (PERFORMANCE.md): every time is taken with CUDA events on
// current_stream(); TF32 is off; the dense cuBLAS reference and the
// device-to-device copy bandwidth are measured in the same process; every JSON
// line names the GPU.
//
// Deviation: PERFORMANCE.md specifies the G configurations in bf16; here they
// run in fp32 ("dtype": "f32"). bf16 storage exists for kernels, casts and
// GEMMs, but the MoE layer's backward accumulates gradients with arithmetic
// on T, which moekit has only for float and double. The bf16 dense GEMM is
// reported beside the fp32 one so the gap can be judged.
//
// --skew zipf (as moe_torch_cuda.py): expert popularity ∝ Zipf(1.2), i.e. the
// router logits get a fixed bias log p_e, p_e = (e + 1)^-1.2 / Σ_j (j + 1)^-1.2,
// before the softmax (the gates carry it too). The router has no bias term,
// so the bench makes its weight produce one: the input's last feature is the
// constant 1 and the router weight's last row is the bias, so
//   logits_e = Σ_{i < d-1} x_i·W_ie + log p_e,
// a router over d - 1 random features plus the bias. Timing is unaffected
// (same shapes, same work).
//
// host_syncs: moekit waits for the device only in transfer<device, cpu>. The
// bench counts those copies in one forward+backward step of a small layer of
// the same router options and expert type on moekit::metered_device (CPU
// kernels, device code paths, a counter on its copies to the host): the layer
// code above the kernels is the same on every backend, so that is the count of
// host syncs per layer step on the GPU (0 for a dropless router).
//
// `--dump DIR` writes DIR/<config>.safetensors: the inputs, weights, output
// and gradients of one forward+backward, for moe_torch.py to check against.
// JSON lines on stdout (PERFORMANCE.md fields), a table on stderr.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <moekit.hpp>
#include <moekit/io/safetensors.hpp>
#include <moekit/moe.hpp>

#ifdef __CUDACC__
#include <moekit/cuda.hpp>
#endif

#include "bench_device.hpp"
#include "bench_util.hpp"
#include "common/flags.hpp"

namespace {

using namespace moekit;

struct config {
  const char* name;
  std::size_t tokens, d_model, d_ff, experts, k;
  bool swiglu;  // SwiGLU experts (3 matrices), else GELU FFN experts (2 matrices)
  std::size_t matrices() const { return swiglu ? 3 : 2; }
  bool gpu() const { return name[0] == 'G'; }
};
// PERFORMANCE.md, "Configurations".
constexpr config configs[] = {
    {"C-T", 128, 64, 128, 4, 2, false},
    {"C-S", 512, 256, 512, 8, 2, false},
    {"C-F", 512, 256, 128, 64, 6, false},
    {"C-M", 2048, 512, 1024, 8, 2, false},
    {"G-M", 8192, 4096, 14336, 8, 2, true},
    {"G-O", 16384, 2048, 1024, 64, 8, true},
    {"G-F", 16384, 2048, 768, 128, 8, true},
};

struct options {
  std::string config = "C-S", backend = "cpu", dump, clock = "wall", skew = "none", backward = "seed";
  int threads = 1, warmup = 3, reps = 15;
  std::size_t share = 1;  // slots per shared weight set (1: no sharing)
  std::size_t tokens = 0, experts = 0;  // --tokens, --experts: override the configuration's (0: keep)
  bool all = false, force = false;
  std::uint64_t seed = 42;
};

using gelu_expert = moe::ffn_expert<dyn, dyn, moe::activation::gelu, /*Bias=*/false>;
using swiglu_expert = moe::swiglu_expert<dyn, dyn>;
template <class Expert, backend B>
using layer_of = moe::layer<moe::top_k_router<dyn, dyn, dyn, float, B>, Expert, float, B>;

template <class Expert, backend B>
layer_of<Expert, B> make_layer(const config& c, rng& g) {
  using layer_t = layer_of<Expert, B>;
  moe::top_k_router<dyn, dyn, dyn, float, B> router(g, moe::top_k_options{}, c.d_model, c.experts,
                                                    c.k);  // softmax, renormalised, dropless
  typename layer_t::bank_type bank(g, c.experts, c.d_model, c.d_ff);
  return layer_t(std::move(router), std::move(bank));
}

/// --share n: slots e and e' share a weight set when e / n == e' / n (a merged
/// model: the same routing and compute, E / n weight sets).
template <class Layer>
void share_slots(std::size_t n, Layer& layer) {
  if (n <= 1) return;
  const std::size_t e = layer.experts().experts();
  if (e % n != 0)
    throw value_error("--share " + std::to_string(n) + " must divide the expert count " + std::to_string(e));
  std::vector<index_t> map(e);
  for (std::size_t s = 0; s < e; ++s) map[s] = static_cast<index_t>(s / n);
  using map_type = std::remove_cvref_t<decltype(layer.experts().slots())>;
  layer.experts().share(map_type(map));
}

/// Expert-matrix FLOPs of one forward: 2·T·k·d·ff per matrix.
double forward_flop(const config& c) {
  return 2.0 * double(c.tokens * c.k) * double(c.d_model) * double(c.d_ff) * double(c.matrices());
}

/// (E) log p_e, p_e = (e + 1)^-1.2 normalised: moe_torch_cuda.py's zipf_bias.
std::vector<float> zipf_bias(std::size_t experts) {
  std::vector<double> p(experts);
  double total = 0;
  for (std::size_t e = 0; e < experts; ++e) total += p[e] = std::pow(double(e + 1), -1.2);
  std::vector<float> out(experts);
  for (std::size_t e = 0; e < experts; ++e) out[e] = static_cast<float>(std::log(p[e] / total));
  return out;
}

/// --skew zipf (see the header): x's last feature := 1 and the router weight's
/// last row := the bias, so the router adds log p_e to every token's logits.
template <class Layer>
void apply_skew(const std::string& skew, Layer& layer, tensor<float, shape<dyn, dyn>>& x) {
  if (skew == "none") return;
  const std::size_t d = x.extent(1), tokens = x.extent(0);
  for (std::size_t t = 0; t < tokens; ++t) x(t, d - 1) = 1.f;
  layer.router().parameters([&](const std::string&, auto& w) {  // (d, E)
    using B = typename std::remove_cvref_t<decltype(w.value())>::backend_type;
    auto host = w.value().clone().template to<cpu>();
    const auto bias = zipf_bias(host.extent(1));
    for (std::size_t e = 0; e < bias.size(); ++e) host(d - 1, e) = bias[e];
    w.value() = host.template to<B>();
  });
}

/// Runs one forward+backward with fresh gradients and writes everything the
/// PyTorch baseline needs to check itself against moekit.
template <class Layer, class X>
void dump(const config& c, Layer& layer, const X& x, const X& G, const std::string& dir) {
  visit_parameters(layer, [](const std::string&, auto& p) { p.zero_grad(); });
  tape t;
  auto xv = t.variable(x);
  auto y = layer(xv);
  t.backward(y, G);  // dL/dy = G

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

/// Copies to the host (host syncs, on a GPU) in one forward+backward step of
/// a small layer with this configuration's router and expert type, run on
/// moekit::metered_device (see the header).
template <class Expert>
std::size_t host_syncs_per_step(const config& c, const options& o) {
  using metered = moekit::metered_device;
  const config small{c.name, 4 * c.experts, 8, 8, c.experts, c.k, c.swiglu};
  rng g(o.seed);
  auto layer = make_layer<Expert, metered>(small, g);
  auto x = normal<float>(g, shape<dyn, dyn>{small.tokens, small.d_model});  // (T, d)
  auto G = normal<float>(g, shape<dyn, dyn>{small.tokens, small.d_model});
  apply_skew(o.skew, layer, x);
  const auto xd = x.to<metered>(), Gd = G.to<metered>();
  const std::size_t before = moekit::metered_device::host_reads();
  {
    tape t;
    auto y = layer(t.variable(xd));
    t.backward(y, Gd);
  }
  return moekit::metered_device::host_reads() - before;
}

/// The expert GEMMs of one layer step over fixed offsets, grouped (as the
/// bank runs them) or as direct BLAS calls of the same total size. The
/// matrices reading x are "in" (FFN: W1; SwiGLU: gate and up), the one
/// producing y is "out"; the SwiGLU product is left out (GEMMs only).
template <backend B>
struct gemm_problem {
  using buffer = tensor<float, shape<dyn>, B>;
  std::size_t rows, d, ff, experts;
  group_offsets<B> offsets;
  buffer x, w_out, y, dx, dh, dw_out;
  std::vector<buffer> w_in, h, dw_in;

  gemm_problem(const config& c, group_offsets<B> off, rng& g)
      : rows(static_cast<std::size_t>(off.rows(c.experts, c.experts + 1).template to<cpu>()[0])), d(c.d_model),
        ff(c.d_ff), experts(c.experts), offsets(std::move(off)) {
    const std::size_t inputs = c.matrices() - 1;
    x = normal<float, B>(g, shape<dyn>{rows * d});
    for (std::size_t i = 0; i < inputs; ++i) w_in.push_back(normal<float, B>(g, shape<dyn>{experts * d * ff}));
    w_out = normal<float, B>(g, shape<dyn>{experts * ff * d});
    for (std::size_t i = 0; i < inputs; ++i) {
      h.push_back(buffer(shape<dyn>{rows * ff}));
      dw_in.push_back(buffer(shape<dyn>{experts * d * ff}));
    }
    y = buffer(shape<dyn>{rows * d}), dx = buffer(shape<dyn>{rows * d}), dh = buffer(shape<dyn>{rows * ff});
    dw_out = buffer(shape<dyn>{experts * ff * d});
  }

  // Forward: h_i = x·W_i, y = h·W_out (per expert segment).
  void grouped_forward() {
    const index_t* o = offsets.data();
    for (std::size_t i = 0; i < w_in.size(); ++i)
      kernels<B>::gemm_grouped(false, experts, o, d, ff, 1.f, x.data(), w_in[i].data(), d * ff, 0.f, h[i].data());
    kernels<B>::gemm_grouped(false, experts, o, ff, d, 1.f, h[0].data(), w_out.data(), ff * d, 0.f, y.data());
  }
  // Backward (dy := y): dh = dy·W_outᵀ, dW_out = hᵀ·dy, dx = Σ_i dh·W_iᵀ, dW_i = xᵀ·dh.
  void grouped_backward() {
    const index_t* o = offsets.data();
    kernels<B>::gemm_grouped(true, experts, o, d, ff, 1.f, y.data(), w_out.data(), ff * d, 0.f, dh.data());
    kernels<B>::gemm_grouped_reduce(experts, o, ff, d, 1.f, h[0].data(), y.data(), 0.f, dw_out.data(), ff * d);
    for (std::size_t i = 0; i < w_in.size(); ++i) {
      kernels<B>::gemm_grouped(true, experts, o, ff, d, 1.f, dh.data(), w_in[i].data(), d * ff, i ? 1.f : 0.f,
                               dx.data());
      kernels<B>::gemm_grouped_reduce(experts, o, d, ff, 1.f, x.data(), dh.data(), 0.f, dw_in[i].data(), d * ff);
    }
  }
  // The same GEMMs as single direct calls over all rows (expert 0's weights).
  void plain_forward() {
    for (std::size_t i = 0; i < w_in.size(); ++i) gemm(false, false, rows, ff, d, x, w_in[i], h[i]);
    gemm(false, false, rows, d, ff, h[0], w_out, y);
  }
  void plain_backward() {
    gemm(false, true, rows, ff, d, y, w_out, dh);
    gemm(true, false, ff, d, rows, h[0], y, dw_out);
    for (std::size_t i = 0; i < w_in.size(); ++i) {
      gemm(false, true, rows, d, ff, dh, w_in[i], dx, i ? 1.f : 0.f);
      gemm(true, false, d, ff, rows, x, dh, dw_in[i]);
    }
  }

 private:
  static void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const buffer& a, const buffer& b,
                   buffer& c, float beta = 0.f) {
    bench::direct_gemm<B>::run(ta, tb, int(m), int(n), int(k), a.data(), b.data(), c.data(), beta);
  }
};

#ifdef __CUDACC__
/// The forward's expert GEMMs as dense bf16 cublasGemmEx calls over all rows
/// (float accumulation): the ceiling PyTorch's bf16 MoE is measured against,
/// for the record next to the fp32 one.
struct bf16_forward {
  using buffer = tensor<bf16, shape<dyn>, moekit::cuda>;
  std::size_t rows, d, ff, matrices;
  buffer x, w_in, w_out, h, y;

  bf16_forward(const config& c, std::size_t rows_, rng& g) : rows(rows_), d(c.d_model), ff(c.d_ff), matrices(c.matrices()) {
    auto random = [&](std::size_t n) { return cast<bf16>(normal<float, moekit::cuda>(g, shape<dyn>{n})); };
    x = random(rows * d), w_in = random(d * ff), w_out = random(ff * d);
    h = buffer(shape<dyn>{rows * ff}), y = buffer(shape<dyn>{rows * d});
  }
  void operator()() {
    using gemm = bench::direct_gemm<moekit::cuda>;
    const int m = int(rows), dm = int(d), f = int(ff);
    for (std::size_t i = 0; i + 1 < matrices; ++i) gemm::run(false, false, m, f, dm, x.data(), w_in.data(), h.data());
    gemm::run(false, false, m, dm, f, h.data(), w_out.data(), y.data());
  }
};
#endif

/// Milliseconds on the chosen clock: "wall" (steady_clock, the protocol's), or
/// "cpu" (this thread's CPU time: on a loaded machine it leaves out the time
/// other processes hold the core; meaningful with --threads 1 only).
double clock_ms(const std::string& clock) {
  if (clock == "wall") return bench::now_ms();
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

/// Interleaved timing on B's clock: the chosen host clock on the CPU, CUDA
/// events on the GPU (bench::interleaved<B>).
template <backend B>
std::vector<bench::stats> interleaved(const std::vector<std::function<void()>>& runs, const options& o) {
  if constexpr (!B::host_accessible) {
    return bench::interleaved<B>(runs, o.warmup, o.reps);
  } else {
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
}

/// Marks between the stages of one forward: the chosen host clock on the CPU,
/// CUDA events on the GPU (read after the forward, so no stage waits).
template <backend B>
class stage_clock {
 public:
  explicit stage_clock(const std::string& clock) : clock_(clock) {}
  void mark() {
    if constexpr (B::host_accessible) marks_.push_back(clock_ms(clock_));
    else events_.mark();
  }
  std::vector<double> intervals() {
    if constexpr (!B::host_accessible) {
      return events_.intervals();
    } else {
      std::vector<double> out;
      for (std::size_t i = 1; i < marks_.size(); ++i) out.push_back(marks_[i] - marks_[i - 1]);
      marks_.clear();
      return out;
    }
  }

 private:
  std::string clock_;
  std::vector<double> marks_;
  bench::timeline<B> events_;
};

/// Per-stage times of the staged forward, one entry per timed repetition.
struct stage_times {
  std::vector<double> router, gather, experts, combine, total;
};

/// Where the run happens, as the JSON lines and the table say it.
struct device_info {
  std::string backend, clock, gpu;  // gpu: CUDA only
  double copy_gbps = 0;
};

template <backend B, class Expert>
void bench_config(const config& c, const options& o, const device_info& dev) {
  rng g(o.seed);
  auto layer = make_layer<Expert, B>(c, g);
  share_slots(o.share, layer);
  auto x_host = normal<float>(g, shape<dyn, dyn>{c.tokens, c.d_model});  // (T, d)
  auto G_host = normal<float>(g, shape<dyn, dyn>{c.tokens, c.d_model});  // (T, d) upstream gradient
  apply_skew(o.skew, layer, x_host);
  const auto x = x_host.to<B>(), G = G_host.to<B>();  // on the CPU: the same tensors
  if (!o.dump.empty()) dump(c, layer, x, G, o.dump);

  auto forward = [&] {
    tape t;
    auto y = layer(t.variable(x));
  };
  auto forward_backward = [&] {
    tape t;
    auto y = layer(t.variable(x));
    if (o.backward == "seed") t.backward(y, G);  // dL/dy = G
    else t.backward(sum(y * t.input(G)));        // --backward loss: the same gradients through a loss op
  };
  // moe::layer::operator() step by step, through the same public calls.
  stage_times st;
  stage_clock<B> marks(o.clock);
  auto staged = [&] {
    tape t;
    auto xv = t.variable(x);
    marks.mark();
    auto plan = moe::by_weight_set(layer.experts(), layer.router().route(xv));  // (with --share: regrouped)
    marks.mark();
    auto rows = moe::dispatch(xv, plan);  // (A, d) in expert order
    marks.mark();
    auto y = layer.experts()(rows, plan.offsets);  // (A, d)
    marks.mark();
    auto out = moe::combine(y, plan, c.tokens);  // (T, d)
    marks.mark();
    const auto iv = marks.intervals();  // on the GPU: waits for this forward (its own time is not used)
    st.router.push_back(iv[0]), st.gather.push_back(iv[1]), st.experts.push_back(iv[2]);
    st.combine.push_back(iv[3]), st.total.push_back(iv[0] + iv[1] + iv[2] + iv[3]);
  };

  group_offsets<B> offsets;
  std::vector<std::size_t> per_expert;
  config by_set = c;  // with --share: the GEMMs of E / n weight sets
  by_set.experts = layer.experts().weight_sets();
  {
    tape t;
    auto plan = moe::by_weight_set(layer.experts(), layer.router().route(t.variable(x)));
    offsets = plan.offsets.clone();
    per_expert = plan.counts();
  }
  gemm_problem<B> gp(by_set, std::move(offsets), g);

  std::vector<std::function<void()>> runs{forward,
                                          forward_backward,
                                          staged,
                                          [&] { gp.grouped_forward(); },
                                          [&] { gp.plain_forward(); },
                                          [&] { gp.grouped_backward(); },
                                          [&] { gp.plain_backward(); }};
#ifdef __CUDACC__
  std::optional<bf16_forward> bf16_dense;
  if constexpr (std::is_same_v<B, moekit::cuda>) {
    bf16_dense.emplace(c, gp.rows, g);
    runs.push_back([&] { (*bf16_dense)(); });
  }
#endif
  const std::size_t host_syncs = B::host_accessible ? 0 : host_syncs_per_step<Expert>(c, o);
  auto s = interleaved<B>(runs, o);
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
  const double grouped_fwd_gflops = fwd_flop / (s[3].median_ms * gf);
  const double grouped_all_gflops = 3 * fwd_flop / ((s[3].median_ms + s[5].median_ms) * gf);
  const double tokens_per_expert = double(c.tokens * c.k) / double(c.experts);
  double max_tokens_per_expert = 0;
  for (auto n : per_expert) max_tokens_per_expert = std::max(max_tokens_per_expert, double(n));
  auto common = [&](const char* bench_name) {
    bench::json_line j;
    j.add("bench", bench_name).add("config", c.name).add("backend", dev.backend).add("dtype", "f32")
        .add("threads", o.threads).add("clock", dev.clock).add("skew", o.skew).add("backward", o.backward)
        .add("weight_sets", double(c.experts / std::max<std::size_t>(o.share, 1)));
    if (!dev.gpu.empty()) j.add("gpu", dev.gpu).add("tf32", "off").add("copy_gbps", dev.copy_gbps);
    return j;
  };
  const std::string sizes = std::to_string(c.tokens * c.k) + "x" + std::to_string(c.d_model) + "x" +
                            std::to_string(c.d_ff);
  const std::string ceiling = dev.gpu.empty() ? "cblas_sgemm " + sizes
                                              : "cublasSgemm " + sizes + " x" + std::to_string(c.matrices()) +
                                                    " (TF32 off)";
  auto layer_line = [&](const char* pass, const bench::stats& t, double flop, double ceiling_gflops, double share) {
    auto j = common("moe_layer");
    j.add("pass", pass).add("", t).add("gflops", flop / (t.median_ms * gf)).add("ceiling", ceiling)
        .add("ceiling_gflops", ceiling_gflops).add("tokens_per_expert", tokens_per_expert)
        .add("max_tokens_per_expert", max_tokens_per_expert).add("grouped_gemm_share_of_dense", share);
    if (!B::host_accessible) j.add("host_syncs", double(host_syncs));
    j.print();
  };
  layer_line("fwd", s[0], fwd_flop, sgemm_fwd_gflops, grouped_fwd_gflops / sgemm_fwd_gflops);
  layer_line("fwd+bwd", s[1], 3 * fwd_flop, sgemm_all_gflops, grouped_all_gflops / sgemm_all_gflops);
  const double overhead = router.median_ms + gather.median_ms + combine.median_ms;
  common("moe_layer_stages").add("pass", "fwd").add("", total).add("router_ms", router.median_ms)
      .add("gather_ms", gather.median_ms).add("experts_ms", experts.median_ms).add("combine_ms", combine.median_ms)
      .add("router_permute_share", (router.median_ms + gather.median_ms) / total.median_ms)
      .add("router_permute_combine_share", overhead / total.median_ms).print();
  common("moe_expert_gemm").add("pass", "fwd").add("", s[3]).add("gflops", grouped_fwd_gflops)
      .add("ceiling", ceiling).add("ceiling_median_ms", s[4].median_ms).add("ceiling_gflops", sgemm_fwd_gflops)
      .add("ratio", grouped_fwd_gflops / sgemm_fwd_gflops).print();
  common("moe_expert_gemm").add("pass", "fwd+bwd").add("median_ms", s[3].median_ms + s[5].median_ms)
      .add("gflops", grouped_all_gflops).add("ceiling", ceiling)
      .add("ceiling_median_ms", s[4].median_ms + s[6].median_ms).add("ceiling_gflops", sgemm_all_gflops)
      .add("ratio", grouped_all_gflops / sgemm_all_gflops).print();
  double bf16_gflops = 0;
  if (s.size() > 7) {
    bf16_gflops = fwd_flop / (s[7].median_ms * gf);
    common("ceilings").add("dense_median_ms", s[4].median_ms).add("dense_gflops", sgemm_fwd_gflops)
        .add("dense_bf16_median_ms", s[7].median_ms).add("dense_bf16_gflops", bf16_gflops)
        .add("dense", ceiling).add("dense_bf16", "cublasGemmEx bf16 " + sizes + " x" + std::to_string(c.matrices()))
        .print();
  }

  std::fprintf(stderr,
               "%-4s T=%zu d=%zu ff=%zu E=%zu k=%zu (%.0f tokens/expert, busiest %.0f), skew %s\n"
               "     fwd      %9.3f ms [%8.3f, %8.3f] %8.1f GFLOP/s\n"
               "     fwd+bwd  %9.3f ms [%8.3f, %8.3f] %8.1f GFLOP/s\n"
               "     stages   router %.3f  gather %.3f  experts %.3f  combine %.3f  (of %.3f ms): "
               "router+permute %.1f %%, +combine %.1f %%\n"
               "     GEMMs    grouped fwd %.1f GFLOP/s vs dense %.1f (%.1f %%) | fwd+bwd %.1f vs %.1f (%.1f %%)\n",
               c.name, c.tokens, c.d_model, c.d_ff, c.experts, c.k, tokens_per_expert, max_tokens_per_expert,
               o.skew.c_str(), s[0].median_ms, s[0].p10_ms, s[0].p90_ms, fwd_flop / (s[0].median_ms * gf),
               s[1].median_ms, s[1].p10_ms, s[1].p90_ms, 3 * fwd_flop / (s[1].median_ms * gf), router.median_ms,
               gather.median_ms, experts.median_ms, combine.median_ms, total.median_ms,
               100 * (router.median_ms + gather.median_ms) / total.median_ms, 100 * overhead / total.median_ms,
               grouped_fwd_gflops, sgemm_fwd_gflops, 100 * grouped_fwd_gflops / sgemm_fwd_gflops, grouped_all_gflops,
               sgemm_all_gflops, 100 * grouped_all_gflops / sgemm_all_gflops);
  if (!B::host_accessible) std::fprintf(stderr, "     host syncs per layer step (fwd+bwd): %zu\n", host_syncs);
  if (bf16_gflops > 0)
    std::fprintf(stderr, "     ceilings on %s: dense fp32 %.1f GFLOP/s, dense bf16 %.1f GFLOP/s, copy %.0f GB/s\n",
                 dev.gpu.c_str(), sgemm_fwd_gflops, bf16_gflops, dev.copy_gbps);
}

template <backend B>
void bench_backend(const std::vector<config>& chosen, const options& o, device_info dev) {
  for (const auto& c : chosen) {
    if (c.swiglu) bench_config<B, swiglu_expert>(c, o, dev);
    else bench_config<B, gelu_expert>(c, o, dev);
  }
}

/// What --config / --all pick: --all is every configuration of the backend
/// (G-* on cuda, C-* on the host backends). A host backend (cpu, emulated)
/// refuses a G configuration unless --force (fp32 expert weights alone:
/// G-M 5.6 GB, G-O 1.6 GB, G-F 2.4 GB).
std::vector<config> choose(const options& o) {
  const bool on_gpu = o.backend == "cuda";
  std::vector<config> chosen;
  for (const auto& c : configs)
    if (o.all ? c.gpu() == on_gpu : o.config == c.name) chosen.push_back(c);
  if (chosen.empty())
    throw value_error("unknown --config " + o.config + " (C-T, C-S, C-F, C-M, G-M, G-O or G-F)");
  for (auto& c : chosen) {  // a sweep around a configuration (scripts/make_plot_data speed)
    if (o.tokens > 0) c.tokens = o.tokens;
    if (o.experts > 0) c.experts = o.experts;
    if (c.k > c.experts)
      throw value_error("--experts " + std::to_string(c.experts) + " is below the configuration's top-k " +
                        std::to_string(c.k));
  }
  for (const auto& c : chosen)
    if (!on_gpu && c.gpu() && !o.force) {
      const double gb = double(c.experts * c.d_model * c.d_ff * c.matrices() * sizeof(float)) / 1e9;
      throw value_error("--config " + std::string(c.name) + " is a GPU configuration (" +
                        std::to_string(gb).substr(0, 4) + " GB of fp32 expert weights, more for gradients and " +
                        "activations): run it with --backend cuda, or add --force to run it on the CPU anyway");
    }
  return chosen;
}

}  // namespace

int main(int argc, char** argv) try {
  bench::relaunch(argv);
  options o;
  moekit::flags cli("bench_moe_layer",
                    "moe::layer forward and forward+backward on the configurations of PERFORMANCE.md (C-* on the CPU,\n"
                    "G-* on the GPU), its stage split, and its expert GEMMs against direct BLAS GEMMs of the same size.\n"
                    "JSON lines on stdout; a table on stderr.");
  cli.add("config", o.config, "C-T, C-S, C-F, C-M (CPU, GELU experts) or G-M, G-O, G-F (GPU, SwiGLU experts, fp32)");
  cli.add("all", o.all, "every configuration of the backend (G-* on cuda, C-* on cpu and emulated)");
  cli.add("backend", o.backend,
          "cpu | cuda (builds compiled by nvcc) | emulated (the device code path on the CPU, for testing)");
  cli.add("skew", o.skew, "none | zipf (router logits + log p_e, p_e ∝ (e + 1)^-1.2, as moe_torch_cuda.py)");
  cli.add("force", o.force, "run a G configuration on a host backend (cpu, emulated) anyway");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed repetitions first");
  cli.add("reps", o.reps, "timed repetitions (median reported)");
  cli.add("seed", o.seed, "weights, inputs and G");
  cli.add("share", o.share, "slots per shared weight set: slots e / n share one (a merged model; 1: none)");
  cli.add("backward", o.backward,
          "seed: fwd+bwd seeds the output's gradient with G (y.backward(G)); loss: through a loss sum(y * G) "
          "(two element-wise passes and a reduction more; what this bench timed before 2026-12-07)");
  cli.add("clock", o.clock, "cpu backend: wall (steady_clock) or cpu (thread CPU time, for loaded machines; 1 thread)");
  cli.add("dump", o.dump, "directory for <config>.safetensors (inputs, weights, output, gradients)");
  cli.add("tokens", o.tokens, "tokens per batch instead of the configuration's (0: the configuration's)");
  cli.add("experts", o.experts, "experts instead of the configuration's (0: the configuration's)");
  if (!cli.parse(argc, argv)) return 0;
  bench::print_blas_line();
  if (o.clock != "wall" && o.clock != "cpu")
    throw moekit::value_error("--clock must be wall or cpu, got " + o.clock);
  if (o.clock != "wall" && o.backend != "cpu")
    throw moekit::value_error("--clock cpu is for --backend cpu");
  if (o.backward != "seed" && o.backward != "loss")
    throw moekit::value_error("--backward must be seed or loss, got " + o.backward);
  if (o.skew != "none" && o.skew != "zipf")
    throw moekit::value_error("--skew must be none or zipf, got " + o.skew);
  if (o.reps < 1 || o.warmup < 0 || o.threads < 1)
    throw moekit::value_error("need --reps >= 1, --warmup >= 0, --threads >= 1");
  if (o.backend != "cpu" && o.backend != "cuda" && o.backend != "emulated")
    throw moekit::value_error("--backend '" + o.backend + "' is not one of cpu, cuda, emulated");
#ifndef __CUDACC__
  if (o.backend == "cuda")
    throw moekit::value_error("--backend cuda: this build has no CUDA (bench_moe_layer was compiled "
                              "without nvcc; configure with the CUDA toolkit installed and CMake compiles it as CUDA)");
#else
  if (o.backend == "cuda" && !moekit::cuda_available())
    throw moekit::value_error("--backend cuda: no CUDA device is visible to this process");
#endif
  const auto chosen = choose(o);
  moekit::set_num_threads(o.threads);
  std::fprintf(stderr, "bench_moe_layer: %s, %d thread(s), %d warm-up, %d timed repetitions, %s clock\n",
               o.backend.c_str(), o.threads, o.warmup, o.reps, o.backend == "cuda" ? "cuda-events" : o.clock.c_str());
  if (o.backend == "emulated") bench_backend<moekit::emulated_device>(chosen, o, {"emulated", o.clock, "", 0});
#ifdef __CUDACC__
  if (o.backend == "cuda") {
    moekit::allow_tf32(false);  // the protocol: fp32 GEMMs stay fp32, on both sides of the ratio
    const device_info dev{"cuda", "cuda-events", moekit::device_name(), bench::copy_gbps(o.warmup, o.reps)};
    bench_backend<moekit::cuda>(chosen, o, dev);
  }
#endif
  if (o.backend == "cpu") bench_backend<moekit::cpu>(chosen, o, {"cpu", o.clock, "", 0});
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_moe_layer: %s\n", e.what());
  return 2;
}

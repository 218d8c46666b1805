// bench_mlp — one training step of a Scaling-MLPs bottleneck MLP (default
// B_6-Wi_512, 784 inputs, 10 classes, batch 256, AdamW, cross entropy):
// images/s against the ceiling of the same run, the step's GEMMs alone as
// direct BLAS calls (forward x·W, backward dY·Wᵀ and Xᵀ·dY per linear layer;
// the stem needs no dX): cblas_sgemm on the CPU, cublasSgemm on the GPU.
// bench/python/mlp_torch.py prints the same JSON fields for PyTorch eager;
// bench/compare_mlp runs both.
//
//   build/bin/bench_mlp --threads 2               # JSON lines on stdout, a table on stderr
//   build/bin/bench_mlp --split                   # also forward / backward / optimizer medians
//   build/bin/bench_mlp --backend cuda --batch 4096   # builds compiled by nvcc
//
// On the GPU (PERFORMANCE.md protocol): every time is taken with CUDA events
// on current_stream(), TF32 is off, and the JSON names the GPU and carries the
// device-to-device copy bandwidth measured in the same process.
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/optim/adamw.hpp>

#ifdef __CUDACC__
#include <moekit/cuda.hpp>
#endif

#include "bench_device.hpp"
#include "bench_util.hpp"
#include "common/flags.hpp"

namespace {

using namespace moekit;

struct options {
  std::string model = "B_6-Wi_512", backend = "cpu";
  int batch = 256, threads = 1, warmup = 3, reps = 15, seed = 0;
  bool split = false;
};

/// The (in, out) of every linear layer, in forward order.
std::vector<std::pair<std::size_t, std::size_t>> linear_layers(const mlp::config& c) {
  const std::size_t h = mlp::expansion_of(c) * c.width;
  std::vector<std::pair<std::size_t, std::size_t>> out{{c.in, c.width}};
  for (std::size_t b = 0; b < c.blocks; ++b) out.insert(out.end(), {{c.width, h}, {h, c.width}});
  out.emplace_back(c.width, c.classes);
  return out;
}

/// FLOPs of one step's GEMMs: 2·N·in·out per product, three products per layer but the stem's two.
double step_gemm_flops(const mlp::config& c, std::size_t n) {
  double f = 0;
  bool first = true;
  for (auto [in, out] : linear_layers(c)) {
    f += (first ? 2.0 : 3.0) * 2.0 * static_cast<double>(n * in * out);
    first = false;
  }
  return f;
}

/// The step's GEMMs, each as one direct BLAS call on buffers of the right sizes.
template <backend B>
class gemm_ceiling {
 public:
  gemm_ceiling(const mlp::config& c, std::size_t n) : layers_(linear_layers(c)), n_(n) {
    std::size_t widest = 0, largest = 0;
    for (auto [in, out] : layers_) widest = std::max({widest, in, out}), largest = std::max(largest, in * out);
    rng g(7);
    x_ = uniform<float, B>(g, shape<dyn>{n * widest});
    dy_ = uniform<float, B>(g, shape<dyn>{n * widest});
    out_ = zeros<float, B>(shape<dyn>{n * widest});
    w_ = uniform<float, B>(g, shape<dyn>{largest});
    dw_ = zeros<float, B>(shape<dyn>{largest});
  }
  void operator()() {
    using gemm = bench::direct_gemm<B>;
    const int n = static_cast<int>(n_);
    bool first = true;
    for (auto [in_, out_n] : layers_) {
      const int in = static_cast<int>(in_), out = static_cast<int>(out_n);
      gemm::run(false, false, n, out, in, x_.data(), w_.data(), out_.data());             // y = x·W
      if (!first) gemm::run(false, true, n, in, out, dy_.data(), w_.data(), out_.data());  // dX = dY·Wᵀ
      gemm::run(true, false, in, out, n, x_.data(), dy_.data(), dw_.data());              // dW = Xᵀ·dY
      first = false;
    }
  }

 private:
  std::vector<std::pair<std::size_t, std::size_t>> layers_;
  std::size_t n_;
  tensor<float, shape<dyn>, B> x_, dy_, out_, w_, dw_;
};

/// What the JSON line and the table say about where the step ran.
struct device_info {
  std::string backend, ceiling, gpu;
  double copy_gbps = 0;  // GPU only
};

template <backend B>
int run(const options& o) {
  const auto sizes = mlp::parse_model_name(o.model, "--model").with_io(784, 10);
  const auto n = static_cast<std::size_t>(o.batch);
  rng g(static_cast<std::uint64_t>(o.seed));
  mlp::bottleneck_mlp<mlp::config{.in = 784, .classes = 10}, float, B> model(g, sizes);
  optim::adamw<float, B> opt(model, {.lr = 1e-3});  // torch.optim.AdamW's defaults
  const auto x = normal<float, B>(g, shape<dyn, 784>{n});
  tensor<index_t, shape<dyn>> y_host(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) y_host[i] = static_cast<index_t>(rng::uniform_at<double>(1, i) * 10) % 10;
  const auto y = y_host.to<B>();

  device_info dev{"cpu", "step GEMMs as cblas_sgemm", "", 0};
#ifdef __CUDACC__
  if constexpr (std::is_same_v<B, moekit::cuda>) {
    allow_tf32(false);  // the protocol: fp32 GEMMs stay fp32, on both sides of the ratio
    dev = {"cuda", "step GEMMs as cublasSgemm (TF32 off)", moekit::device_name(), bench::copy_gbps(o.warmup, o.reps)};
  }
#endif

  // One whole step; with `split`, marks between forward, backward and optimizer.
  bench::timeline<B> split_marks;
  auto step = [&](bool split) {
    if (split) split_marks.mark();
    opt.zero_grad();
    tape t;
    auto loss = cross_entropy(model(t.input(x)), y);
    if (split) split_marks.mark();
    t.backward(loss);
    if (split) split_marks.mark();
    opt.step();
    if (split) split_marks.mark();
  };
  gemm_ceiling<B> ceiling(sizes, n);
  auto s = bench::interleaved<B>({[&] { step(false); }, ceiling}, o.warmup, o.reps);
  const double flops = step_gemm_flops(sizes, n);
  const double ips = static_cast<double>(n) / (s[0].median_ms * 1e-3);
  bench::json_line j;
  j.add("bench", "mlp_train_step").add("impl", "moekit").add("config", o.model).add("backend", dev.backend);
  if (!dev.gpu.empty()) j.add("gpu", dev.gpu).add("tf32", "off").add("copy_gbps", dev.copy_gbps);
  j.add("threads", o.threads).add("batch", o.batch).add("params", static_cast<double>(count_parameters(model)))
      .add("", s[0]).add("images_per_s", ips).add("gflops", flops / (s[0].median_ms * 1e6))
      .add("ceiling", dev.ceiling).add("ceiling_median_ms", s[1].median_ms)
      .add("ceiling_gflops", flops / (s[1].median_ms * 1e6)).add("fraction_of_ceiling", s[1].median_ms / s[0].median_ms)
      .print();
  std::fprintf(stderr, "%s batch %d, %s: step %.2f ms (p10 %.2f, p90 %.2f) = %.0f images/s, %.1f GFLOP/s | "
                       "GEMMs alone %.2f ms = %.1f GFLOP/s | step at %.0f%% of the GEMM ceiling\n",
               o.model.c_str(), o.batch,
               dev.gpu.empty() ? (std::to_string(o.threads) + " thread(s)").c_str() : dev.gpu.c_str(),
               s[0].median_ms, s[0].p10_ms, s[0].p90_ms, ips, flops / (s[0].median_ms * 1e6), s[1].median_ms,
               flops / (s[1].median_ms * 1e6), 100 * s[1].median_ms / s[0].median_ms);
  if (o.split) {
    // Separate steps after the timed ones: on the GPU, reading the marks waits
    // for the device after each step, which the figures above must not see.
    std::vector<double> fwd_ms, bwd_ms, opt_ms;
    for (int r = 0; r < o.reps; ++r) {
      step(true);
      const auto iv = split_marks.intervals();  // forward, backward, optimizer
      fwd_ms.push_back(iv[0]), bwd_ms.push_back(iv[1]), opt_ms.push_back(iv[2]);
    }
    const auto f = bench::summarize(fwd_ms), b = bench::summarize(bwd_ms), u = bench::summarize(opt_ms);
    bench::json_line().add("bench", "mlp_train_step_split").add("impl", "moekit").add("config", o.model)
        .add("backend", dev.backend).add("threads", o.threads).add("batch", o.batch).add("forward_", f)
        .add("backward_", b).add("optimizer_", u).print();
    std::fprintf(stderr, "  forward %.2f ms | backward %.2f ms | optimizer %.2f ms (medians)\n", f.median_ms,
                 b.median_ms, u.median_ms);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  bench::relaunch(argv);
  options o;
  flags cli("bench_mlp", "Training images/s of a bottleneck MLP (AdamW, cross entropy) against the step's GEMMs as direct sgemm calls.");
  cli.add("model", o.model, "B_<blocks>-Wi_<width> on 784 inputs, 10 classes");
  cli.add("backend", o.backend, "cpu | cuda (builds compiled by nvcc)");
  cli.add("batch", o.batch, "images per step");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed steps first");
  cli.add("reps", o.reps, "timed steps (median reported)");
  cli.add("seed", o.seed, "random seed");
  cli.add("split", o.split, "also time forward, backward and optimizer step separately");
  if (!cli.parse(argc, argv)) return 0;
  bench::print_blas_line();
  if (o.batch < 1 || o.threads < 1 || o.warmup < 0 || o.reps < 1) throw value_error("bad --batch/--threads/--warmup/--reps");
  set_num_threads(o.threads);
  if (o.backend == "cpu") return run<cpu>(o);
  if (o.backend == "cuda") {
#ifdef __CUDACC__
    if (!cuda_available()) throw value_error("--backend cuda: no CUDA device is visible to this process");
    return run<moekit::cuda>(o);
#else
    throw value_error("--backend cuda: this build has no CUDA (bench_mlp was compiled without nvcc; "
                      "configure with the CUDA toolkit installed and CMake compiles it as CUDA)");
#endif
  }
  throw value_error("--backend: '" + o.backend + "' is not one of cpu, cuda");
} catch (const moekit::error& e) {
  std::fprintf(stderr, "bench_mlp: %s\n", e.what());
  return 2;
}

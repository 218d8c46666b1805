// bench_mlp — one training step of a Scaling-MLPs bottleneck MLP (default
// B_6-Wi_512, 784 inputs, 10 classes, batch 256, AdamW, cross entropy):
// images/s against the ceiling of the same run, the step's GEMMs alone as
// direct cblas_sgemm calls (forward x·W, backward dY·Wᵀ and Xᵀ·dY per linear
// layer; the stem needs no dX). bench/python/mlp_torch.py prints the same
// JSON fields for PyTorch eager; bench/compare_mlp runs both.
//
//   build/bin/bench_mlp --threads 2               # JSON lines on stdout, a table on stderr
//   build/bin/bench_mlp --split                   # also forward / backward / optimizer medians
#include <cblas.h>

#include <cstdio>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/io/flags.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/optim/adamw.hpp>

#include "bench_util.hpp"

namespace {

using namespace moekit;

struct options {
  std::string model = "B_6-Wi_512";
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

/// The step's GEMMs, each as one direct cblas_sgemm on buffers of the right sizes.
class gemm_ceiling {
 public:
  gemm_ceiling(const mlp::config& c, std::size_t n) : layers_(linear_layers(c)), n_(n) {
    std::size_t widest = 0, largest = 0;
    for (auto [in, out] : layers_) widest = std::max({widest, in, out}), largest = std::max(largest, in * out);
    rng g(7);
    x_ = uniform<float>(g, shape<dyn>{n * widest});
    dy_ = uniform<float>(g, shape<dyn>{n * widest});
    out_ = zeros<float>(shape<dyn>{n * widest});
    w_ = uniform<float>(g, shape<dyn>{largest});
    dw_ = zeros<float>(shape<dyn>{largest});
  }
  void operator()() {
    const int n = static_cast<int>(n_);
    bool first = true;
    for (auto [in_, out_n] : layers_) {
      const int in = static_cast<int>(in_), out = static_cast<int>(out_n);
      // y = x·W; dX = dY·Wᵀ; dW = Xᵀ·dY
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, out, in, 1.f, x_.data(), in, w_.data(), out, 0.f,
                  out_.data(), out);
      if (!first)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, in, out, 1.f, dy_.data(), out, w_.data(), out, 0.f,
                    out_.data(), in);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, out, n, 1.f, x_.data(), in, dy_.data(), out, 0.f,
                  dw_.data(), out);
      first = false;
    }
  }

 private:
  std::vector<std::pair<std::size_t, std::size_t>> layers_;
  std::size_t n_;
  tensor<float, shape<dyn>> x_, dy_, out_, w_, dw_;
};

}  // namespace

int main(int argc, char** argv) try {
  options o;
  flags cli("bench_mlp", "Training images/s of a bottleneck MLP (AdamW, cross entropy) against the step's GEMMs as direct sgemm calls.");
  cli.add("model", o.model, "B_<blocks>-Wi_<width> on 784 inputs, 10 classes");
  cli.add("batch", o.batch, "images per step");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed steps first");
  cli.add("reps", o.reps, "timed steps (median reported)");
  cli.add("seed", o.seed, "random seed");
  cli.add("split", o.split, "also time forward, backward and optimizer step separately");
  if (!cli.parse(argc, argv)) return 0;
  if (o.batch < 1 || o.threads < 1 || o.warmup < 0 || o.reps < 1) throw value_error("bench_mlp: bad --batch/--threads/--warmup/--reps");
  set_num_threads(o.threads);

  const auto sizes = mlp::parse_model_name(o.model, "--model").with_io(784, 10);
  const auto n = static_cast<std::size_t>(o.batch);
  rng g(static_cast<std::uint64_t>(o.seed));
  mlp::bottleneck_mlp<mlp::config{.in = 784, .classes = 10}> model(g, sizes);
  optim::adamw<float> opt(model, {.lr = 1e-3});  // torch.optim.AdamW's defaults
  const auto x = normal<float>(g, shape<dyn, 784>{n});
  tensor<index_t, shape<dyn>> y(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<index_t>(rng::uniform_at<double>(1, i) * 10) % 10;

  // fwd / bwd / optimizer medians, read when --split.
  std::vector<double> fwd_ms, bwd_ms, opt_ms;
  auto step = [&] {
    const double t0 = bench::now_ms();
    opt.zero_grad();
    tape t;
    auto loss = cross_entropy(model(t.input(x)), y);
    const double t1 = bench::now_ms();
    t.backward(loss);
    const double t2 = bench::now_ms();
    opt.step();
    const double t3 = bench::now_ms();
    fwd_ms.push_back(t1 - t0), bwd_ms.push_back(t2 - t1), opt_ms.push_back(t3 - t2);
  };
  gemm_ceiling ceiling(sizes, n);
  auto s = bench::interleaved({step, ceiling}, o.warmup, o.reps);
  const double flops = step_gemm_flops(sizes, n);
  const double ips = static_cast<double>(n) / (s[0].median_ms * 1e-3);
  bench::json_line()
      .add("bench", "mlp_train_step").add("impl", "moekit").add("config", o.model).add("backend", "cpu")
      .add("threads", o.threads).add("batch", o.batch).add("params", static_cast<double>(count_parameters(model)))
      .add("", s[0]).add("images_per_s", ips).add("gflops", flops / (s[0].median_ms * 1e6))
      .add("ceiling", "step GEMMs as cblas_sgemm").add("ceiling_median_ms", s[1].median_ms)
      .add("ceiling_gflops", flops / (s[1].median_ms * 1e6)).add("fraction_of_ceiling", s[1].median_ms / s[0].median_ms)
      .print();
  std::fprintf(stderr, "%s batch %d, %d thread(s): step %.2f ms (p10 %.2f, p90 %.2f) = %.0f images/s, %.1f GFLOP/s | "
                       "GEMMs alone %.2f ms = %.1f GFLOP/s | step at %.0f%% of the GEMM ceiling\n",
               o.model.c_str(), o.batch, o.threads, s[0].median_ms, s[0].p10_ms, s[0].p90_ms, ips,
               flops / (s[0].median_ms * 1e6), s[1].median_ms, flops / (s[1].median_ms * 1e6),
               100 * s[1].median_ms / s[0].median_ms);
  if (o.split) {
    // Drop the warm-ups, as the step's own median does.
    auto tail = [&](std::vector<double>& v) { return bench::summarize({v.begin() + o.warmup, v.end()}); };
    const auto f = tail(fwd_ms), b = tail(bwd_ms), u = tail(opt_ms);
    bench::json_line().add("bench", "mlp_train_step_split").add("impl", "moekit").add("config", o.model)
        .add("threads", o.threads).add("batch", o.batch).add("forward_", f).add("backward_", b).add("optimizer_", u).print();
    std::fprintf(stderr, "  forward %.2f ms | backward %.2f ms | optimizer %.2f ms (medians)\n", f.median_ms,
                 b.median_ms, u.median_ms);
  }
  return 0;
} catch (const moekit::error& e) {
  std::fprintf(stderr, "bench_mlp: %s\n", e.what());
  return 2;
}

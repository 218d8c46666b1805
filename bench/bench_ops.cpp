// bench_ops — the foundation's microbenchmarks:
//   1. moekit matmul vs a direct cblas_sgemm (256³, 1024³, 2048³): the ratio
//      shows what moekit's tensor layer costs on top of BLAS (target ≥ 0.95);
//   2. element-wise add bandwidth vs memcpy;
//   3. the overhead of one recorded tape op, forward + backward, on a
//      1-element tensor (target ≤ 0.5 µs; LibTorch eager ≈ 3.3 µs).
// JSON lines on stdout, a table on stderr.
#include <cblas.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <moekit.hpp>

#include "bench_util.hpp"
#include "common/flags.hpp"

namespace {

struct options {
  int threads = 1, warmup = 3, reps = 15;
  bool quick = false;
};

void bench_gemm(const options& o, std::size_t n) {
  using namespace moekit;
  rng g(1);
  auto a = normal<float>(g, shape<dyn, dyn>{n, n});
  auto b = normal<float>(g, shape<dyn, dyn>{n, n});
  std::vector<float> c(n * n);
  const int N = static_cast<int>(n);
  auto ours = [&] { auto out = matmul(a, b); };
  auto blas = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a.data(), N, b.data(), N, 0.0f, c.data(), N);
  };
  const int reps = n >= 2048 && o.quick ? 5 : o.reps;
  auto s = bench::interleaved({ours, blas}, o.warmup, reps);
  const double flop = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
  const double ours_gf = flop / (s[0].median_ms * 1e6), blas_gf = flop / (s[1].median_ms * 1e6);
  const std::string cfg = std::to_string(n) + "^3";
  bench::json_line()
      .add("bench", "gemm").add("config", cfg).add("backend", "cpu").add("dtype", "f32").add("threads", o.threads)
      .add("", s[0]).add("gflops", ours_gf)
      .add("ceiling", "cblas_sgemm").add("ceiling_median_ms", s[1].median_ms).add("ceiling_gflops", blas_gf)
      .add("ratio", s[1].median_ms / s[0].median_ms).print();
  std::fprintf(stderr, "gemm %-8s  moekit %8.3f ms %7.1f GFLOP/s | sgemm %8.3f ms %7.1f GFLOP/s | ratio %.3f\n",
               cfg.c_str(), s[0].median_ms, ours_gf, s[1].median_ms, blas_gf, s[1].median_ms / s[0].median_ms);
}

void bench_add(const options& o) {
  using namespace moekit;
  const std::size_t n = std::size_t{1} << 24;  // 64 MiB per operand: beyond the caches
  rng g(2);
  auto a = uniform<float>(g, shape<dyn>{n}), b = uniform<float>(g, shape<dyn>{n});
  std::vector<float> dst(n);
  auto ours = [&] { auto c = a + b; };
  auto copy = [&] { std::memcpy(dst.data(), a.data(), n * sizeof(float)); };
  auto s = bench::interleaved({ours, copy}, o.warmup, o.reps);
  // Bytes moved: add reads 2 and writes 1 operand; memcpy reads 1 and writes 1.
  const double mib = static_cast<double>(n * sizeof(float));
  const double add_gbs = 3 * mib / (s[0].median_ms * 1e6), copy_gbs = 2 * mib / (s[1].median_ms * 1e6);
  bench::json_line()
      .add("bench", "elementwise_add").add("config", "16M f32").add("backend", "cpu").add("threads", o.threads)
      .add("", s[0]).add("gbytes_per_s", add_gbs)
      .add("ceiling", "memcpy").add("ceiling_median_ms", s[1].median_ms).add("ceiling_gbytes_per_s", copy_gbs)
      .add("ratio", add_gbs / copy_gbs).print();
  std::fprintf(stderr, "add 16M f32       moekit %8.3f ms %6.1f GB/s | memcpy %8.3f ms %6.1f GB/s | ratio %.3f\n",
               s[0].median_ms, add_gbs, s[1].median_ms, copy_gbs, add_gbs / copy_gbs);
}

void bench_tape(const options& o) {
  using namespace moekit;
  constexpr int ops = 1000;
  tape t;
  auto x0 = ones<float>(shape<1>{});
  // A chain of `ops` recorded multiplications, then backward, then reset.
  auto recorded = [&] {
    auto x = t.variable(x0);
    auto y = x;
    for (int i = 0; i < ops; ++i) y = y * 1.0001f;
    t.backward(y);
    t.reset();
  };
  // The same chain untaped: what the op costs without autograd.
  auto plain = [&] {
    auto y = x0;
    for (int i = 0; i < ops; ++i) y = y * 1.0001f;
  };
  auto s = bench::interleaved({recorded, plain}, o.warmup, o.reps);
  const double per_op_ns = s[0].median_ms * 1e6 / ops, plain_ns = s[1].median_ms * 1e6 / ops;
  bench::json_line()
      .add("bench", "tape_op_overhead").add("config", "1-element mul, fwd+bwd").add("backend", "cpu")
      .add("threads", o.threads).add("", s[0]).add("ns_per_op", per_op_ns).add("forward_only_ns_per_op", plain_ns)
      .add("ceiling", "libtorch eager autograd 3300 ns (performance-anchors.md)").add("ratio", 3300.0 / per_op_ns)
      .print();
  std::fprintf(stderr, "tape op (1 elem)  fwd+bwd %7.1f ns/op | untaped forward %6.1f ns/op\n", per_op_ns, plain_ns);
}

}  // namespace

int main(int argc, char** argv) try {
  bench::relaunch(argv);
  options o;
  moekit::flags cli("bench_ops", "GEMM vs cblas_sgemm, element-wise add vs memcpy, tape-op overhead.\n"
                                 "JSON lines on stdout; a table on stderr.");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed repetitions first");
  cli.add("reps", o.reps, "timed repetitions (median reported)");
  cli.add("quick", o.quick, "fewer repetitions of the 2048^3 GEMM");
  if (!cli.parse(argc, argv)) return 0;
  bench::print_blas_line();
  moekit::set_num_threads(o.threads);
  std::fprintf(stderr, "bench_ops: %d thread(s), %d warm-up, %d timed repetitions\n", o.threads, o.warmup, o.reps);
  for (std::size_t n : {256u, 1024u, 2048u}) bench_gemm(o, n);
  bench_add(o);
  bench_tape(o);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_ops: %s\n", e.what());
  return 2;
}

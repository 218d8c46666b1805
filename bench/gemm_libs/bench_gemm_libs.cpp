// bench_gemm_libs.cpp — the expert GEMMs of one MoE layer step (fp32, one
// thread) through OpenBLAS, BLIS, libxsmm and oneDNN (moekit issue #16,
// "measure first"). Standalone: not part of the CMake build (bench/*.cpp is
// globbed, this folder is not), so CI never needs these libraries.
//
// Debian 12: apt-get install libopenblas-dev libblis-serial-dev libxsmm-dev libdnnl-dev
// Build and run both kernel settings: bench/gemm_libs/run [BUILD_DIR]. By hand:
//   I=/usr/include/x86_64-linux-gnu L=/usr/lib/x86_64-linux-gnu
//   g++ -std=c++20 -O3 -march=native -Wall -Wextra -Wpedantic -Wconversion
//     -isystem $I/openblas-pthread -isystem $I/blis-serial bench/gemm_libs/bench_gemm_libs.cpp
//     -o build-libs/bench_gemm_libs -lopenblas $L/blis-serial/libblis.so.4 /usr/lib/libxsmm.a
//     -ldnnl -lpthread -ldl -lrt
// (OpenBLAS's include folder first: BLIS's folder has a cblas.h of its own.)
//   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 BLIS_NUM_THREADS=1 build-libs/bench_gemm_libs [reps] [configs]
// OpenBLAS comes first on the link line, so cblas_sgemm is OpenBLAS's (BLIS
// exports one too); BLIS is called through its own typed API, bli_sgemm.
//
// Per configuration (T tokens, d, ff, E experts, top-k; rows = T*k/E per
// expert) and per GEMM kind, one sample runs that kind's GEMM for all E
// experts (own weights and activations each). Each library's result is first
// checked against a double-precision reference (experts 0 and E-1). Then
// warm-ups and interleaved repetitions (library order rotates); the median is
// reported. Stdout: JSON lines; stderr: a table (GFLOP/s). Configurations:
// C-T C-S C-F C-M of PERFORMANCE.md, and C-F-hot (C-F's expert shapes with 4
// experts, so the 1 MB of weights stays in cache: what C-F loses to memory).
#include <cblas.h>
#include <blis.h>
#include <libxsmm.h>
#include <oneapi/dnnl/dnnl.h>
#include <immintrin.h>

#include <moekit/backend/cpu/gemm_grouped.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

struct Config { const char* name; long T, d, ff, E, k; };
const Config kConfigs[] = {{"C-T", 128, 64, 128, 4, 2}, {"C-S", 512, 256, 512, 8, 2},
                           {"C-F", 512, 256, 128, 64, 6}, {"C-M", 2048, 512, 1024, 8, 2},
                           // C-F's per-expert GEMMs with 4 experts: 1 MB of weights, cache-resident
                           {"C-F-hot", 32, 256, 128, 4, 6}};

// One row-major GEMM kind: C (M x N) = op(A) op(B); ta/tb 'N' or 'T'.
// A, B, C hold E experts' matrices back to back (strides sa, sb, sc).
struct Gemm {
  const char* name; char ta, tb; long M, N, K;
  const float* A; long lda, sa; const float* B; long ldb, sb; float* C; long ldc, sc;
};

struct Lib {
  std::string name;
  std::function<void(const Gemm&)> prepare;  // JIT / scratch; not timed
  std::function<void(const Gemm&, long e)> run;  // expert e's GEMM
};

long current_experts = 1;  // E of the configuration being run (moekit's grouped call)

int i32(long v) { return static_cast<int>(v); }  // OpenBLAS's and libxsmm's int

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// One core's FMA peak: 12 independent chains of 512-bit FMAs, best of 5.
__attribute__((target("avx512f"))) double fma_peak_gflops() {
  double best = 0;
  for (int trial = 0; trial < 5; ++trial) {
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    asm("" : "+v"(x), "+v"(y));  // opaque: kept in registers, not re-read from memory
    auto init = [](int i) { return _mm512_set1_ps(static_cast<float>(i) * 1e-3f); };
    __m512 a0 = init(0), a1 = init(1), a2 = init(2), a3 = init(3), a4 = init(4), a5 = init(5),
           a6 = init(6), a7 = init(7), a8 = init(8), a9 = init(9), a10 = init(10),
           a11 = init(11);  // distinct (or the chains merge) and named (kept in registers)
    const long iters = 4'000'000;
    auto t0 = clock_type::now();
    for (long it = 0; it < iters; ++it) {
      a0 = _mm512_fmadd_ps(a0, x, y), a1 = _mm512_fmadd_ps(a1, x, y), a2 = _mm512_fmadd_ps(a2, x, y);
      a3 = _mm512_fmadd_ps(a3, x, y), a4 = _mm512_fmadd_ps(a4, x, y), a5 = _mm512_fmadd_ps(a5, x, y);
      a6 = _mm512_fmadd_ps(a6, x, y), a7 = _mm512_fmadd_ps(a7, x, y), a8 = _mm512_fmadd_ps(a8, x, y);
      a9 = _mm512_fmadd_ps(a9, x, y), a10 = _mm512_fmadd_ps(a10, x, y), a11 = _mm512_fmadd_ps(a11, x, y);
    }
    const double s = seconds_since(t0);
    const __m512 sum = _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                      _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
        _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, sum);
    volatile float sink = lanes[0];  // keeps the chains alive
    (void)sink;
    best = std::max(best, static_cast<double>(iters) * 12 * 16 * 2 / s * 1e-9);
  }
  return best;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// max |C - ref| / max |ref| over experts 0 and E-1, ref in double.
double check(const Gemm& g, long E) {
  double err = 0, scale = 0;
  std::vector<double> b(static_cast<size_t>(g.K * g.N)), acc(static_cast<size_t>(g.N));
  for (long e : {0L, E - 1}) {
    const float* A = g.A + e * g.sa;
    const float* B = g.B + e * g.sb;
    const float* C = g.C + e * g.sc;
    for (long p = 0; p < g.K; ++p)
      for (long j = 0; j < g.N; ++j)
        b[static_cast<size_t>(p * g.N + j)] = g.tb == 'N' ? B[p * g.ldb + j] : B[j * g.ldb + p];
    for (long i = 0; i < g.M; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (long p = 0; p < g.K; ++p) {
        const double a = g.ta == 'N' ? A[i * g.lda + p] : A[p * g.lda + i];
        const double* brow = &b[static_cast<size_t>(p * g.N)];
        for (long j = 0; j < g.N; ++j) acc[static_cast<size_t>(j)] += a * brow[j];
      }
      for (long j = 0; j < g.N; ++j) {
        const double r = acc[static_cast<size_t>(j)];
        err = std::max(err, std::abs(C[i * g.ldc + j] - r));
        scale = std::max(scale, std::abs(r));
      }
    }
  }
  return err / scale;
}

std::vector<Lib> make_libs() {
  std::vector<Lib> libs;
  auto none = [](const Gemm&) {};
  libs.push_back({"openblas", none, [](const Gemm& g, long e) {
    cblas_sgemm(CblasRowMajor, g.ta == 'N' ? CblasNoTrans : CblasTrans,
                g.tb == 'N' ? CblasNoTrans : CblasTrans, i32(g.M),
                i32(g.N), i32(g.K), 1.0f, g.A + e * g.sa,
                i32(g.lda), g.B + e * g.sb, i32(g.ldb), 0.0f,
                g.C + e * g.sc, i32(g.ldc));
  }});
  libs.push_back({"blis", none, [](const Gemm& g, long e) {
    float one = 1.0f, zero = 0.0f;
    bli_sgemm(g.ta == 'N' ? BLIS_NO_TRANSPOSE : BLIS_TRANSPOSE,
              g.tb == 'N' ? BLIS_NO_TRANSPOSE : BLIS_TRANSPOSE, g.M, g.N, g.K, &one,
              const_cast<float*>(g.A + e * g.sa), g.lda, 1, const_cast<float*>(g.B + e * g.sb),
              g.ldb, 1, &zero, g.C + e * g.sc, g.ldc, 1);
  }});
  // libxsmm JIT kernels are column-major: row-major C = op(A) op(B) is
  // column-major C' = op(B)' op(A)'. Its JIT has no transposed first operand
  // (row-major NT): there B is transposed first (libxsmm_otrans, timed).
  struct Xsmm { libxsmm_smmfunction kernel = nullptr; std::vector<float> bt; };
  auto xs = std::make_shared<Xsmm>();
  libs.push_back({"libxsmm", [xs](const Gemm& g) {
    const float one = 1.0f, zero = 0.0f;
    const int prefetch = LIBXSMM_PREFETCH_NONE;
    const int flags = g.ta == 'T' ? LIBXSMM_GEMM_FLAG_TRANS_B : LIBXSMM_GEMM_FLAG_NONE;
    const libxsmm_blasint lda = i32(g.tb == 'T' ? g.N : g.ldb), ldb = i32(g.lda), ldc = i32(g.ldc);
    xs->kernel = libxsmm_smmdispatch(i32(g.N), i32(g.M), i32(g.K), &lda, &ldb, &ldc, &one, &zero, &flags, &prefetch);
    if (!xs->kernel) { std::fprintf(stderr, "libxsmm: no kernel for %s\n", g.name); std::exit(1); }
    xs->bt.assign(static_cast<size_t>(g.K * g.N), 0.0f);
  }, [xs](const Gemm& g, long e) {
    const float* b = g.B + e * g.sb;
    if (g.tb == 'T') {  // B stored N x K: make it K x N
      libxsmm_otrans(xs->bt.data(), b, sizeof(float), i32(g.K), i32(g.N), i32(g.ldb), i32(g.N));
      b = xs->bt.data();
    }
    xs->kernel(b, g.A + e * g.sa, g.C + e * g.sc);
  }});
  libs.push_back({"onednn", none, [](const Gemm& g, long e) {
    dnnl_sgemm(g.ta, g.tb, g.M, g.N, g.K, 1.0f, g.A + e * g.sa, g.lda, g.B + e * g.sb, g.ldb,
               0.0f, g.C + e * g.sc, g.ldc);
  }});
  // moekit's grouped GEMM: one call runs all E experts (packing included),
  // so it runs at e == 0 and the other e are empty.
  struct Offsets { std::vector<moekit::index_t> v; };
  auto off = std::make_shared<Offsets>();
  libs.push_back({"moekit", [off](const Gemm& g) {
    const long rows = g.ta == 'N' ? g.M : g.K, E = current_experts;
    off->v.resize(static_cast<size_t>(E + 1));
    for (long e = 0; e <= E; ++e) off->v[static_cast<size_t>(e)] = static_cast<moekit::index_t>(e * rows);
  }, [off](const Gemm& g, long e) {
    if (e != 0) return;
    using G = moekit::detail::cpu_gemm_grouped;
    const size_t E = off->v.size() - 1;
    if (g.ta == 'N')
      G::gemm_grouped(g.tb == 'T', E, off->v.data(), static_cast<size_t>(g.K), static_cast<size_t>(g.N), 1.0f,
                      g.A, g.B, static_cast<size_t>(g.sb), 0.0f, g.C);
    else
      G::gemm_grouped_reduce(E, off->v.data(), static_cast<size_t>(g.M), static_cast<size_t>(g.N), 1.0f, g.A, g.B,
                             0.0f, g.C, static_cast<size_t>(g.sc));
  }});
  return libs;
}

const char* onednn_isa() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 15, warmup = 3;
  const std::string only = argc > 2 ? argv[2] : "C-T,C-S,C-F,C-M";
  openblas_set_num_threads(1);
  bli_init();
  libxsmm_init();
  const dnnl_version_t* dv = dnnl_version();
  const std::string load0 = loadavg();
  const double peak0 = fma_peak_gflops();
  char versions[512];
  std::snprintf(versions, sizeof versions,
                "OpenBLAS kernel %s | BLIS %s arch %s | libxsmm target %s | oneDNN %d.%d.%d %s",
                openblas_get_corename(), bli_info_get_version_str(),
                bli_arch_string(bli_arch_query_id()), libxsmm_get_target_arch(), dv->major,
                dv->minor, dv->patch, onednn_isa());
  std::printf("{\"cpu\":\"%s\",\"libs\":\"%s\",\"reps\":%d,\"warmup\":%d,\"loadavg_start\":\"%s\","
              "\"fma_peak_start\":%.1f}\n",
              cpu_model().c_str(), versions, reps, warmup, load0.c_str(), peak0);
  std::fprintf(stderr, "%s | %s | load %s\n", cpu_model().c_str(), versions, load0.c_str());

  std::vector<Lib> libs = make_libs();
  if (const char* keep = std::getenv("LIBS")) {  // LIBS=openblas,moekit: only these
    const std::string k = std::string(",") + keep + ",";
    std::erase_if(libs, [&](const Lib& l) { return k.find("," + l.name + ",") == std::string::npos; });
  }
  const size_t nlib = libs.size();
  std::mt19937 rng(16);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  struct Row { std::string config, kind; std::vector<double> us; std::vector<double> err; double flops; };
  std::vector<Row> rows;
  bool ok = true;
  for (const Config& c : kConfigs) {
    if (("," + only + ",").find("," + std::string(c.name) + ",") == std::string::npos) continue;
    const long r = c.T * c.k / c.E, d = c.d, ff = c.ff, E = c.E;
    current_experts = E;
    auto buf = [&](long n, bool fill) {
      std::vector<float> v(static_cast<size_t>(n * E));
      if (fill) for (float& x : v) x = dist(rng);
      return v;
    };
    // inputs (per expert): X, dY (r x d); H, dH (r x ff); W1 (d x ff); W2 (ff x d)
    auto X = buf(r * d, true), dY = buf(r * d, true), H = buf(r * ff, true), dH = buf(r * ff, true);
    auto W1 = buf(d * ff, true), W2 = buf(ff * d, true);
    auto Hout = buf(r * ff, false), Y = buf(r * d, false), dHout = buf(r * ff, false);
    auto dX = buf(r * d, false), dW2 = buf(ff * d, false), dW1 = buf(d * ff, false);
    const std::vector<Gemm> gemms = {
        {"H=X.W1", 'N', 'N', r, ff, d, X.data(), d, r * d, W1.data(), ff, d * ff, Hout.data(), ff, r * ff},
        {"Y=H.W2", 'N', 'N', r, d, ff, H.data(), ff, r * ff, W2.data(), d, ff * d, Y.data(), d, r * d},
        {"dH=dY.W2t", 'N', 'T', r, ff, d, dY.data(), d, r * d, W2.data(), d, ff * d, dHout.data(), ff, r * ff},
        {"dX=dH.W1t", 'N', 'T', r, d, ff, dH.data(), ff, r * ff, W1.data(), ff, d * ff, dX.data(), d, r * d},
        {"dW2=Ht.dY", 'T', 'N', ff, d, r, H.data(), ff, r * ff, dY.data(), d, r * d, dW2.data(), d, ff * d},
        {"dW1=Xt.dH", 'T', 'N', d, ff, r, X.data(), d, r * d, dH.data(), ff, r * ff, dW1.data(), ff, d * ff}};
    // Results check: each library on each kind, before timing.
    std::vector<std::vector<double>> err(gemms.size(), std::vector<double>(nlib));
    for (size_t g = 0; g < gemms.size(); ++g)
      for (size_t l = 0; l < nlib; ++l) {
        libs[l].prepare(gemms[g]);
        for (long e = 0; e < E; ++e) libs[l].run(gemms[g], e);
        err[g][l] = check(gemms[g], E);
        if (!(err[g][l] < 1e-5)) {
          std::fprintf(stderr, "%s %s %s: max rel error %.3g\n", c.name, gemms[g].name,
                       libs[l].name.c_str(), err[g][l]);
          ok = false;
        }
      }
    // Timing: per repetition, every kind, every library (rotating order).
    std::vector<std::vector<std::vector<double>>> t(gemms.size(),
        std::vector<std::vector<double>>(nlib));
    for (int rep = -warmup; rep < reps; ++rep)
      for (size_t g = 0; g < gemms.size(); ++g)
        for (size_t i = 0; i < nlib; ++i) {
          const size_t l = (i + static_cast<size_t>(rep + warmup)) % nlib;
          libs[l].prepare(gemms[g]);
          auto t0 = clock_type::now();
          for (long e = 0; e < E; ++e) libs[l].run(gemms[g], e);
          const double s = seconds_since(t0);
          if (rep >= 0) t[g][l].push_back(s * 1e6);
        }
    const double flops = 2.0 * static_cast<double>(r * d * ff * E);
    for (size_t g = 0; g < gemms.size(); ++g) {
      Row row{c.name, gemms[g].name, {}, err[g], flops};
      for (size_t l = 0; l < nlib; ++l) row.us.push_back(median(t[g][l]));
      rows.push_back(row);
    }
  }
  const double peak1 = fma_peak_gflops();
  const double peak = std::max(peak0, peak1);
  const std::string load1 = loadavg();
  std::printf("{\"fma_peak_end\":%.1f,\"loadavg_end\":\"%s\",\"all_checks_passed\":%s}\n", peak1,
              load1.c_str(), ok ? "true" : "false");

  // JSON lines (per kind, then per-config totals = sum of the kinds' medians).
  auto emit = [&](const std::string& config, const std::string& kind, size_t l, double us,
                  double flops, double e) {
    const double gf = flops / us * 1e-3;
    std::printf("{\"config\":\"%s\",\"kind\":\"%s\",\"lib\":\"%s\",\"median_us\":%.1f,"
                "\"gflops\":%.1f,\"peak_share\":%.3f,\"max_rel_err\":%.2e}\n",
                config.c_str(), kind.c_str(), libs[l].name.c_str(), us, gf, gf / peak, e);
  };
  std::fprintf(stderr, "FMA peak %.1f (start %.1f, end %.1f) GFLOP/s, load at end %s\n", peak,
               peak0, peak1, load1.c_str());
  std::fprintf(stderr, "%-5s %-10s", "cfg", "GEMM");
  for (const Lib& l : libs) std::fprintf(stderr, " %14s", l.name.c_str());
  std::fprintf(stderr, "   (GFLOP/s, %% of FMA peak)\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    std::fprintf(stderr, "%-5s %-10s", row.config.c_str(), row.kind.c_str());
    for (size_t l = 0; l < nlib; ++l) {
      emit(row.config, row.kind, l, row.us[l], row.flops, row.err[l]);
      const double gf = row.flops / row.us[l] * 1e-3;
      std::fprintf(stderr, " %7.1f (%3.0f%%)", gf, 100 * gf / peak);
    }
    std::fprintf(stderr, "\n");
    if (i + 1 == rows.size() || rows[i + 1].config != row.config) {  // config total
      std::fprintf(stderr, "%-5s %-10s", row.config.c_str(), "total");
      for (size_t l = 0; l < nlib; ++l) {
        double us = 0, flops = 0, e = 0;
        for (const Row& x : rows)
          if (x.config == row.config) us += x.us[l], flops += x.flops, e = std::max(e, x.err[l]);
        emit(row.config, "total", l, us, flops, e);
        const double gf = flops / us * 1e-3;
        std::fprintf(stderr, " %7.1f (%3.0f%%)", gf, 100 * gf / peak);
      }
      std::fprintf(stderr, "\n");
    }
  }
  return ok ? 0 : 1;
}

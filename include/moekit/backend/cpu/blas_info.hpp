// moekit/backend/cpu/blas_info.hpp — which BLAS moekit calls, which kernel it
// runs, what the CPU could run, and a measured sgemm ceiling.
//
// OpenBLAS built with DYNAMIC_ARCH picks its kernel from a table of CPUs it
// knows at load time. On CPUs newer than the library (0.3.21 on an Intel Xeon
// family 6 model 207, on an AMD Zen 5) it falls back to an older kernel and
// sgemm runs at a half to a fifth of the machine's speed. The choice here is
// made by rule, from CPUID and the kernel's name (no timing: see
// docs/design.md), so that a test can replay recorded CPU/kernel pairs.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "parallel.hpp"

extern "C" {
// OpenBLAS's self-description; weak so that another CBLAS still links.
char* openblas_get_corename(void) __attribute__((weak));
char* openblas_get_config(void) __attribute__((weak));
}

namespace moekit {

/// The CPU as the BLAS sees it: vendor, family and model as Linux shows them
/// in /proc/cpuinfo, and the vector ISA the CPU has and the OS saves (XCR0).
/// All empty / false off x86.
struct cpu_isa {
  std::string vendor;  ///< "GenuineIntel", "AuthenticAMD", ...; empty off x86
  std::string brand;   ///< "Intel(R) Xeon(R) Processor", "AMD EPYC", ...
  int family = 0, model = 0;
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false, amx_tile = false, amx_bf16 = false;

  bool x86() const noexcept { return !vendor.empty(); }
  bool intel() const noexcept { return vendor == "GenuineIntel"; }
  bool amd() const noexcept { return vendor == "AuthenticAMD" || vendor == "HygonGenuine"; }
  /// The subset OpenBLAS's AVX-512 kernels use: F, BW, VL and DQ.
  bool avx512() const noexcept { return avx512f && avx512bw && avx512vl && avx512dq; }

  /// "AVX2, AVX-512, AVX-512-BF16, AMX"; "SSE" below AVX2+FMA; "" off x86.
  std::string isa() const {
    if (!x86()) return "";
    std::string s = avx2 && fma ? "AVX2" : "SSE";
    if (avx512()) s += ", AVX-512";
    if (avx512_bf16) s += ", AVX-512-BF16";
    if (amx_tile && amx_bf16) s += ", AMX";
    return s;
  }
  /// "AMD EPYC (AuthenticAMD family 26 model 2: AVX2, AVX-512, AVX-512-BF16)".
  std::string to_string() const {
    if (!x86()) return "not x86 (no CPUID)";
    return (brand.empty() ? vendor : brand) + " (" + vendor + " family " + std::to_string(family) + " model " +
           std::to_string(model) + ": " + isa() + ")";
  }
};

/// This CPU, through CPUID and XGETBV.
inline cpu_isa detect_cpu() {
  cpu_isa c;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, cx = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &cx, &d)) return c;
  const unsigned max_leaf = a;
  char vendor[13] = {};
  const unsigned words[3] = {b, d, cx};
  for (unsigned w = 0; w < 3; ++w)
    for (unsigned i = 0; i < 4; ++i) vendor[4 * w + i] = static_cast<char>((words[w] >> (8 * i)) & 0xffu);
  c.vendor = vendor;

  __get_cpuid(1, &a, &b, &cx, &d);
  // Linux's x86_family / x86_model: the extended family counts only when the
  // base family is 15, the extended model from family 6 on.
  const unsigned base_family = (a >> 8) & 0xfu;
  unsigned family = base_family, model = (a >> 4) & 0xfu;
  if (base_family == 0xfu) family += (a >> 20) & 0xffu;
  if (family >= 6) model += ((a >> 16) & 0xfu) << 4;
  c.family = static_cast<int>(family);
  c.model = static_cast<int>(model);
  const bool fma = (cx >> 12) & 1u, osxsave = (cx >> 27) & 1u, avx = (cx >> 28) & 1u;

  // XCR0: which register state the OS saves. AVX needs XMM+YMM (bits 1, 2),
  // AVX-512 also opmask, ZMM0-15 upper halves and ZMM16-31 (5, 6, 7), AMX
  // the tile config and data (17, 18).
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0u));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  const bool os_avx = (xcr0 & 0x6u) == 0x6u, os_avx512 = os_avx && (xcr0 & 0xe0u) == 0xe0u;
  const bool os_amx = (xcr0 & 0x60000u) == 0x60000u;
  c.fma = fma && avx && os_avx;

  if (max_leaf >= 7) {
    __get_cpuid_count(7, 0, &a, &b, &cx, &d);
    const unsigned max_sub = a;
    c.avx2 = ((b >> 5) & 1u) && os_avx;
    c.avx512f = ((b >> 16) & 1u) && os_avx512;
    c.avx512dq = ((b >> 17) & 1u) && os_avx512;
    c.avx512bw = ((b >> 30) & 1u) && os_avx512;
    c.avx512vl = ((b >> 31) & 1u) && os_avx512;
    c.amx_bf16 = ((d >> 22) & 1u) && os_amx;
    c.amx_tile = ((d >> 24) & 1u) && os_amx;
    if (max_sub >= 1) {
      __get_cpuid_count(7, 1, &a, &b, &cx, &d);
      c.avx512_bf16 = ((a >> 5) & 1u) && os_avx512;
    }
  }

  if (__get_cpuid(0x80000000u, &a, &b, &cx, &d) && a >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned leaf = 0; leaf < 3; ++leaf) {
      unsigned r[4] = {};
      __get_cpuid(0x80000002u + leaf, &r[0], &r[1], &r[2], &r[3]);
      for (unsigned j = 0; j < 4; ++j)
        for (unsigned i = 0; i < 4; ++i) brand[16 * leaf + 4 * j + i] = static_cast<char>((r[j] >> (8 * i)) & 0xffu);
    }
    std::string s = brand;
    const auto first = s.find_first_not_of(' '), last = s.find_last_not_of(' ');
    c.brand = first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
  }
#endif
  return c;
}

/// The vector ISA an OpenBLAS x86 kernel is written for.
enum class blas_kernel_class { unknown, pre_avx2, avx2, avx512 };

namespace detail {

inline bool same_name(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char ch) { return ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch - 'A' + 'a') : ch; };
           return lower(x) == lower(y);
         });
}

}  // namespace detail

/// The class of an OpenBLAS core name (openblas_get_corename: "Haswell" from a
/// DYNAMIC_ARCH build, "HASWELL" from a TARGET build; compared without case).
/// Names of other architectures (ARMV8, POWER10, ...) are `unknown`.
inline blas_kernel_class classify_openblas_core(std::string_view corename) {
  static constexpr std::string_view avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
  static constexpr std::string_view avx2[] = {"Haswell", "Zen"};
  static constexpr std::string_view older[] = {
      "Prescott",   "Core2",      "Penryn",    "Dunnington", "Nehalem",  "Sandybridge", "Atom",
      "Katmai",     "Coppermine", "Northwood", "Banias",     "Athlon",   "Opteron",     "Opteron_SSE3",
      "Barcelona",  "Shanghai",   "Istanbul",  "Bobcat",     "Bulldozer", "Piledriver", "Steamroller",
      "Excavator",  "Nano",       "Unknown"};
  auto in = [&](const auto& names) {
    return std::any_of(std::begin(names), std::end(names),
                       [&](std::string_view n) { return detail::same_name(n, corename); });
  };
  if (in(avx512)) return blas_kernel_class::avx512;
  if (in(avx2)) return blas_kernel_class::avx2;
  if (in(older)) return blas_kernel_class::pre_avx2;
  return blas_kernel_class::unknown;
}

/// True when the CPU runs 512-bit FMAs at twice the 256-bit rate: Intel's
/// AVX-512 cores and AMD from Zen 5 (family 26) on. Zen 4 (family 25) splits
/// a 512-bit FMA in two halves: there OpenBLAS's AVX2 kernel is as fast. (A
/// family-26 part with 256-bit datapaths loses nothing by the AVX-512 kernel:
/// on Zen 4 it runs as fast as the AVX2 one.)
inline bool full_rate_avx512_fma(const cpu_isa& cpu) noexcept {
  if (!cpu.avx512() || !cpu.fma) return false;
  if (cpu.intel()) return true;
  return cpu.vendor == "AuthenticAMD" && cpu.family >= 26;
}

/// The OPENBLAS_CORETYPE this CPU should run instead of OpenBLAS's `corename`,
/// or "" when the kernel is right (or unknown, or the BLAS is not OpenBLAS:
/// corename empty). SkylakeX where the CPU has full-rate AVX-512 and the
/// kernel is not an AVX-512 one; Haswell (Intel) or Zen (AMD) where the CPU
/// has AVX2+FMA and the kernel is older than AVX2.
inline std::string recommend_openblas_coretype(const cpu_isa& cpu, std::string_view corename) {
  if (!cpu.x86() || corename.empty()) return "";
  const blas_kernel_class k = classify_openblas_core(corename);
  if (k == blas_kernel_class::unknown || k == blas_kernel_class::avx512) return "";
  if (full_rate_avx512_fma(cpu)) return "SkylakeX";
  if (k == blas_kernel_class::pre_avx2 && cpu.avx2 && cpu.fma) return cpu.amd() ? "Zen" : "Haswell";
  return "";
}

/// "AVX-512", "AVX2", "pre-AVX2" or "" for a kernel class.
inline std::string_view kernel_class_name(blas_kernel_class k) noexcept {
  switch (k) {
    case blas_kernel_class::avx512: return "AVX-512";
    case blas_kernel_class::avx2: return "AVX2";
    case blas_kernel_class::pre_avx2: return "pre-AVX2";
    case blas_kernel_class::unknown: break;
  }
  return "";
}

/// The sgemm speed-up to expect from one kernel over another: the factor
/// ("about 2x") and what it rests on (the machines docs/benchmarks.md names).
struct blas_speedup {
  std::string_view factor, evidence;
};

/// blas_speedup of the kernel `recommended` over `corename`; empty when none.
inline blas_speedup expected_blas_speedup(std::string_view corename, std::string_view recommended) {
  const blas_kernel_class from = classify_openblas_core(corename), to = classify_openblas_core(recommended);
  if (to == blas_kernel_class::avx512 && from == blas_kernel_class::pre_avx2)
    return {"about 4-5x", "Xeon family 6 model 207: Prescott 32 GFLOP/s, SkylakeX 145-152"};
  if (to == blas_kernel_class::avx512 && from == blas_kernel_class::avx2)
    return {"about 2x", "Zen 5: Haswell ~100 GFLOP/s per core, SkylakeX 180-200"};
  if (to == blas_kernel_class::avx2 && from == blas_kernel_class::pre_avx2)
    return {"2-4x", "256-bit FMA against 128-bit SSE; an estimate, not measured"};
  return {};
}

/// The sgemm ceiling: n x n x n, best of `reps` after one warm-up, on one
/// BLAS thread and on the BLAS's current thread count.
struct sgemm_ceiling {
  std::size_t n = 0;
  double gflops_1thread = 0;  ///< NaN where the BLAS's threads cannot be set (not OpenBLAS)
  double gflops = 0;          ///< on `threads` BLAS threads
  int threads = 0;            ///< 0 where the BLAS does not say
};

/// Measures sgemm_ceiling (n = 512, 5 repetitions: ~20-60 ms at 100 GFLOP/s).
inline sgemm_ceiling measure_sgemm_gflops(std::size_t n = 512, int reps = 5) {
  n = std::max<std::size_t>(n, 16);
  reps = std::max(reps, 1);
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<float>(i % 7) * 0.25f - 0.75f;
    b[i] = static_cast<float>(i % 5) * 0.5f - 1.0f;
  }
  const int N = static_cast<int>(n);
  auto best = [&] {
    double best_s = 1e300;
    for (int r = 0; r <= reps; ++r) {  // r == 0: warm-up
      const auto t0 = std::chrono::steady_clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a.data(), N, b.data(), N, 0.0f, c.data(),
                  N);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) best_s = std::min(best_s, s);
    }
    const double nd = static_cast<double>(n);
    return 2.0 * nd * nd * nd / (std::max(best_s, 1e-9) * 1e9);
  };
  sgemm_ceiling out;
  out.n = n;
  out.threads = openblas_get_num_threads ? openblas_get_num_threads() : 0;
  out.gflops = best();
  if (!openblas_set_num_threads) out.gflops_1thread = std::nan("");
  else if (out.threads == 1) out.gflops_1thread = out.gflops;
  else {
    detail::blas_single_thread one;
    out.gflops_1thread = best();
  }
  return out;
}

/// "OpenMP", "pthreads" or "sequential" (openblas_get_parallel); "" when the
/// BLAS is not OpenBLAS: the "blas_threads" of bench lines.
inline std::string blas_threading_name() {
  if (openblas_get_parallel == nullptr) return "";
  switch (openblas_get_parallel()) {
    case 0: return "sequential";
    case 1: return "pthreads";
    case 2: return "OpenMP";
    default: return "unknown";
  }
}

/// Whether blas_info measures the sgemm ceiling.
enum class blas_measure { no, yes };

/// The BLAS moekit calls and the kernel it runs.
struct blas_description {
  std::string library;   ///< "OpenBLAS" or "CBLAS (not OpenBLAS)"
  std::string version;   ///< "0.3.21" (from openblas_get_config); "" when unknown
  std::string kernel;    ///< openblas_get_corename(): "SkylakeX", "Haswell", ...; "" when not OpenBLAS
  std::string config;    ///< openblas_get_config()
  bool dynamic_arch = false;  ///< built with DYNAMIC_ARCH: OPENBLAS_CORETYPE picks the kernel
  /// Where OpenBLAS's threads come from: "OpenMP" (moekit's own pool),
  /// "pthreads" (a second pool), "sequential"; "" when not OpenBLAS.
  std::string threading;
  cpu_isa cpu;
  /// A faster kernel for this CPU (recommend_openblas_coretype); "" when the kernel is right.
  std::string recommended_coretype;
  std::string coretype_env;        ///< OPENBLAS_CORETYPE as set; "" when unset
  bool coretype_set_by_user = false;  ///< OPENBLAS_CORETYPE set, and not by moekit's re-execution
  /// The kernel OpenBLAS had chosen before moekit's re-execution set
  /// OPENBLAS_CORETYPE (MOEKIT_BLAS_CHOSEN_CORE); "" otherwise.
  std::string chosen_by_openblas;
  sgemm_ceiling sgemm;  ///< n == 0 unless measured

  bool openblas() const noexcept { return !kernel.empty(); }

  /// One line: "OpenBLAS 0.3.21, kernel SkylakeX (AVX-512; OpenBLAS chose
  /// Haswell, moekit set OPENBLAS_CORETYPE=SkylakeX)", plus the sgemm
  /// ceiling when measured.
  std::string to_string() const {
    std::string s = library + (version.empty() ? "" : " " + version) +
                    (threading.empty() ? "" : " (" + threading + " threads)");
    if (!openblas()) {
      s += ", kernel unknown";
    } else {
      s += ", kernel " + kernel + " (";
      const std::string_view cls = kernel_class_name(classify_openblas_core(kernel));
      if (!cls.empty()) s += std::string(cls) + "; ";
      const std::string better =
          recommended_coretype.empty()
              ? std::string()
              : recommended_coretype + " would be " +
                    std::string(expected_blas_speedup(kernel, recommended_coretype).factor) + " faster";
      if (!chosen_by_openblas.empty())
        s += "OpenBLAS chose " + chosen_by_openblas + ", moekit set OPENBLAS_CORETYPE=" + coretype_env;
      else if (!coretype_env.empty())
        s += "OPENBLAS_CORETYPE=" + coretype_env + " set by the user" + (better.empty() ? "" : "; " + better);
      else if (better.empty())
        s += "OpenBLAS's choice";
      else
        s += "OpenBLAS's choice; " + better +
             (dynamic_arch ? ": export OPENBLAS_CORETYPE=" + recommended_coretype
                           : std::string(", but this OpenBLAS is built for one kernel"));
      s += ")";
    }
    if (sgemm.n > 0) {
      char buf[160];
      const std::string sz = std::to_string(sgemm.n);
      if (std::isfinite(sgemm.gflops_1thread))
        std::snprintf(buf, sizeof buf, "; sgemm %s^3: %.0f GFLOP/s on 1 thread, %.0f on %d", sz.c_str(),
                      sgemm.gflops_1thread, sgemm.gflops, sgemm.threads);
      else
        std::snprintf(buf, sizeof buf, "; sgemm %s^3: %.0f GFLOP/s", sz.c_str(), sgemm.gflops);
      s += buf;
    }
    return s;
  }
};

namespace detail {

inline std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

/// "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." -> "0.3.21".
inline std::string openblas_version(std::string_view config) {
  constexpr std::string_view prefix = "OpenBLAS ";
  if (config.substr(0, prefix.size()) != prefix) return "";
  config.remove_prefix(prefix.size());
  return std::string(config.substr(0, config.find(' ')));
}

}  // namespace detail

/// The BLAS moekit calls, its kernel, the CPU, and the kernel to run instead
/// when OpenBLAS picked a slower one; with blas_measure::yes also the sgemm
/// ceiling (measure_sgemm_gflops: ~0.1 s).
inline blas_description blas_info(blas_measure measure = blas_measure::no) {
  blas_description d;
  d.cpu = detect_cpu();
  if (openblas_get_corename != nullptr) {
    const char* core = openblas_get_corename();
    d.kernel = core ? core : "";
  }
  if (openblas_get_config != nullptr) {
    const char* config = openblas_get_config();
    d.config = config ? config : "";
  }
  d.library = d.kernel.empty() ? "CBLAS (not OpenBLAS)" : "OpenBLAS";
  d.version = detail::openblas_version(d.config);
  d.dynamic_arch = d.config.find("DYNAMIC_ARCH") != std::string::npos;
  d.threading = blas_threading_name();
  d.recommended_coretype = recommend_openblas_coretype(d.cpu, d.kernel);
  d.coretype_env = detail::env_or_empty("OPENBLAS_CORETYPE");
  d.chosen_by_openblas = d.coretype_env.empty() ? "" : detail::env_or_empty("MOEKIT_BLAS_CHOSEN_CORE");
  d.coretype_set_by_user = !d.coretype_env.empty() && d.chosen_by_openblas.empty();
  if (measure == blas_measure::yes) d.sgemm = measure_sgemm_gflops();
  return d;
}

/// OpenBLAS's kernel name, or "unknown (not OpenBLAS)": the "blas_kernel" of bench lines.
inline std::string blas_kernel_name() {
  const char* core = openblas_get_corename ? openblas_get_corename() : nullptr;
  return core ? std::string(core) : std::string("unknown (not OpenBLAS)");
}

/// For a program that starts itself again (moekit's examples and benches do,
/// first thing in main): when OpenBLAS runs a slower kernel than this CPU has,
/// the build can switch (DYNAMIC_ARCH) and OPENBLAS_CORETYPE is unset, sets
/// OPENBLAS_CORETYPE to the better kernel and MOEKIT_BLAS_CHOSEN_CORE to
/// OpenBLAS's own choice. True when it changed the environment: OpenBLAS reads
/// the variable only when it loads, so the caller must then exec itself.
inline bool set_blas_kernel_env() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return false;
  const blas_description d = blas_info();
  if (d.recommended_coretype.empty() || !d.dynamic_arch) return false;
  ::setenv("OPENBLAS_CORETYPE", d.recommended_coretype.c_str(), 1);
  ::setenv("MOEKIT_BLAS_CHOSEN_CORE", d.kernel.c_str(), 1);
  return true;
}

namespace detail {

/// The warning for `d`, or "" when none is due: the kernel is right, the BLAS
/// is not OpenBLAS, or OPENBLAS_CORETYPE is set (by the user or by moekit).
inline std::string blas_kernel_warning(const blas_description& d) {
  if (d.recommended_coretype.empty() || !d.coretype_env.empty()) return "";
  const std::string_view from = kernel_class_name(classify_openblas_core(d.kernel));
  const blas_speedup gain = expected_blas_speedup(d.kernel, d.recommended_coretype);
  std::string s = "moekit: warning: OpenBLAS " + d.version + " runs its " + d.kernel + " kernel (" + std::string(from) +
                  ") on this " + d.cpu.to_string() + "; its " + d.recommended_coretype + " kernel runs sgemm " +
                  std::string(gain.factor) + " faster (" + std::string(gain.evidence) + "). Remedy: ";
  if (d.dynamic_arch)
    s += "`export OPENBLAS_CORETYPE=" + d.recommended_coretype + "` before starting the program";
  else
    s += "this OpenBLAS is built for one kernel; use one built with DYNAMIC_ARCH=1 (then `export OPENBLAS_CORETYPE=" +
         d.recommended_coretype + "`)";
  return s + ". (MOEKIT_NO_BLAS_WARNING=1 silences this.)";
}

/// Prints blas_kernel_warning once per process to stderr, unless
/// MOEKIT_NO_BLAS_WARNING is set. After the first call: one guard check.
inline void warn_blas_kernel_once() noexcept {
  static const bool done = [] {
    try {
      if (std::getenv("MOEKIT_NO_BLAS_WARNING") != nullptr) return true;
      const std::string w = blas_kernel_warning(blas_info());
      if (!w.empty()) std::fprintf(stderr, "%s\n", w.c_str());
    } catch (...) {  // a warning must never stop a GEMM
    }
    return true;
  }();
  (void)done;
}

}  // namespace detail
}  // namespace moekit

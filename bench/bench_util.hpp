// bench/bench_util.hpp — the measurement protocol of PERFORMANCE.md shared by
// every bench executable: warm-ups, interleaved timed repetitions, median and
// spread, one JSON object per line on stdout (each naming the BLAS kernel it
// ran on), a human table on stderr.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

#include <moekit/backend/cpu/blas_info.hpp>

#include "common/runtime_settings.hpp"

namespace bench {

/// First thing in every bench's main: starts the program again with the
/// better OpenBLAS kernel where OpenBLAS picked a slower one and the user did
/// not set OPENBLAS_CORETYPE (examples/common/runtime_settings.hpp).
/// OMP_WAIT_POLICY is left as it is: the benches record it.
inline void relaunch(char** argv) {
  moekit::examples::relaunch_with_runtime_settings(argv, moekit::examples::openmp_wait::as_set);
}

/// The "blas: ..." line (library, kernel, who chose it, CPU) on stderr.
inline void print_blas_line() { moekit::examples::print_blas_line(stderr); }

struct stats {
  double median_ms = 0, p10_ms = 0, p90_ms = 0;
};

inline stats summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[static_cast<std::size_t>(q * static_cast<double>(ms.size() - 1) + 0.5)]; };
  return {at(0.5), at(0.1), at(0.9)};
}

inline double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

/// This thread's CPU time in milliseconds: on a loaded machine it leaves out
/// the time other processes hold the core (meaningful with 1 thread only).
inline double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

/// Times several candidates interleaved (A B A B ...), so drift in machine
/// speed hits all of them alike, on every clock of `clocks` at once (now_ms:
/// wall; thread_cpu_ms). Returns out[c][i]: the stats of candidate i on clocks[c].
inline std::vector<std::vector<stats>> interleaved_clocks(const std::vector<std::function<void()>>& runs, int warmup,
                                                          int reps, const std::vector<double (*)()>& clocks) {
  for (int w = 0; w < warmup; ++w)
    for (const auto& run : runs) run();
  std::vector<std::vector<std::vector<double>>> times(clocks.size(), std::vector<std::vector<double>>(runs.size()));
  std::vector<double> t0(clocks.size());
  for (int r = 0; r < reps; ++r)
    for (std::size_t i = 0; i < runs.size(); ++i) {
      for (std::size_t c = 0; c < clocks.size(); ++c) t0[c] = clocks[c]();
      runs[i]();
      for (std::size_t c = clocks.size(); c-- > 0;) times[c][i].push_back(clocks[c]() - t0[c]);
    }
  std::vector<std::vector<stats>> out(clocks.size());
  for (std::size_t c = 0; c < clocks.size(); ++c)
    for (auto& t : times[c]) out[c].push_back(summarize(std::move(t)));
  return out;
}

/// Times several candidates interleaved (A B A B ...), so drift in machine
/// speed hits all of them alike, on `clock` (now_ms: wall; thread_cpu_ms).
/// Returns one stats per candidate.
inline std::vector<stats> interleaved(const std::vector<std::function<void()>>& runs, int warmup, int reps,
                                      double (*clock)()) {
  return interleaved_clocks(runs, warmup, reps, {clock})[0];
}
inline std::vector<stats> interleaved(const std::vector<std::function<void()>>& runs, int warmup, int reps) {
  return interleaved(runs, warmup, reps, now_ms);
}

/// One JSON object on one line: {"k": v, ...}. Values are numbers or strings.
/// Every line ends with "blas_kernel" and "blas_threads": OpenBLAS's kernel
/// name and where its threads come from, unless the bench added the kernel
/// itself.
class json_line {
 public:
  json_line& add(const std::string& k, const std::string& v) {
    items_.emplace_back(k, quoted(v));
    return *this;
  }
  json_line& add(const std::string& k, const char* v) { return add(k, std::string(v)); }
  json_line& add(const std::string& k, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    items_.emplace_back(k, std::isfinite(v) ? std::string(buf) : std::string("null"));  // JSON has no nan/inf
    return *this;
  }
  json_line& add(const std::string& k, int v) { return add(k, static_cast<double>(v)); }
  json_line& add(const std::string& k, const stats& s) {
    return add(k + "median_ms", s.median_ms).add(k + "p10_ms", s.p10_ms).add(k + "p90_ms", s.p90_ms);
  }
  std::string str() const {
    std::string s = "{";
    bool kernel = false;
    for (std::size_t i = 0; i < items_.size(); ++i) {
      s += (i ? ", " : "") + quoted(items_[i].first) + ": " + items_[i].second;
      kernel = kernel || items_[i].first == "blas_kernel";
    }
    if (!kernel) s += (items_.empty() ? "" : ", ") + quoted("blas_kernel") + ": " + quoted(moekit::blas_kernel_name());
    if (!kernel) s += ", " + quoted("blas_threads") + ": " + quoted(moekit::blas_threading_name());
    return s + "}";
  }
  void print() const { std::printf("%s\n", str().c_str()); std::fflush(stdout); }

 private:
  /// A JSON string: quotes, backslashes and control characters escaped.
  static std::string quoted(const std::string& v) {
    std::string out = "\"";
    for (const char c : v) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char esc[8];
        std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
        out += esc;
      } else {
        out += c;
      }
    }
    return out + "\"";
  }

  std::vector<std::pair<std::string, std::string>> items_;
};

/// parse(item) for each non-empty item of a comma list; throws std::invalid_argument
/// naming `what` when the list has none.
template <class Parse>
auto parse_list(const std::string& list, Parse parse, const std::string& what) {
  std::vector<decltype(parse(std::string()))> out;
  for (std::size_t at = 0; at <= list.size();) {
    const std::size_t end = std::min(list.find(',', at), list.size());
    if (end > at) out.push_back(parse(list.substr(at, end - at)));
    at = end + 1;
  }
  if (out.empty()) throw std::invalid_argument(what + " is empty");
  return out;
}

/// One core's FP32 FMA rate in GFLOP/s: 12 independent chains of vector FMAs
/// (enough to hide latency on two FMA ports; distinct starting values, or the
/// compiler merges the chains into one), best of 5 rounds.
template <int Lanes, class Set, class Fma>
[[gnu::noinline]] double fma_rate(Set set1, Fma fma) {
  constexpr int chains = 12;
  constexpr long iters = 4'000'000;
  using V = decltype(set1(0.f));
  V acc[chains];
  for (int j = 0; j < chains; ++j) acc[j] = set1(1.f + 0.01f * float(j));
  const V m = set1(0.9999999f), add = set1(1e-7f);
  double best_ms = 1e300;
  for (int round = 0; round < 5; ++round) {
    const double t0 = now_ms();
    for (long i = 0; i < iters; ++i)
      for (auto& a : acc) a = fma(a, m, add);
    best_ms = std::min(best_ms, now_ms() - t0);
  }
  V total = acc[0];
  for (int j = 1; j < chains; ++j) total = total + acc[j];
  float lane[Lanes];
  std::memcpy(lane, &total, sizeof lane);
  volatile float keep = lane[0];  // the loop has an observable result
  (void)keep;
  return 2.0 * Lanes * chains * double(iters) / (best_ms * 1e6);
}

/// The widest FMA this build targets (-march=native): AVX-512, AVX2+FMA; else 0 (unknown).
inline double fma_peak_per_core() {
#if defined(__x86_64__) && !defined(__CUDACC__) && defined(__AVX512F__)
  return fma_rate<16>([](float v) { return _mm512_set1_ps(v); },
                      [](__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); });
#elif defined(__x86_64__) && !defined(__CUDACC__) && defined(__AVX2__) && defined(__FMA__)
  return fma_rate<8>([](float v) { return _mm256_set1_ps(v); },
                     [](__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); });
#else
  return 0;
#endif
}

/// Where the run happens: the PERFORMANCE.md fields of every line.
struct machine_info {
  std::string host, cpu, blas_core, omp_wait_policy;
  double fma_peak_core = 0;  // GFLOP/s, one core
};

/// Host name, "model name (family F model M)" from /proc/cpuinfo, OpenBLAS's
/// kernel name (openblas_get_corename; never time on the generic "Prescott"),
/// OMP_WAIT_POLICY, and one core's FMA peak (fma_peak_per_core, ~1 s).
inline machine_info describe_machine() {
  machine_info m;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) m.host = host;
  std::ifstream in("/proc/cpuinfo");
  std::string model = "unknown", family, number;
  for (std::string line; std::getline(in, line) && line.find("flags") != 0;) {
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon + 2 > line.size()) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1), value = line.substr(colon + 2);
    if (key == "model name") model = value;
    else if (key == "cpu family") family = value;
    else if (key == "model") number = value;
  }
  m.cpu = model + " (family " + family + " model " + number + ")";
  m.blas_core = moekit::blas_kernel_name();
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  m.omp_wait_policy = wait ? wait : "(unset)";
  m.fma_peak_core = fma_peak_per_core();
  return m;
}

}  // namespace bench

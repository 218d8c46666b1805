// bench/bench_util.hpp — the measurement protocol of PERFORMANCE.md shared by
// every bench executable: warm-ups, interleaved timed repetitions, median and
// spread, one JSON object per line on stdout, a human table on stderr.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace bench {

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
/// speed hits all of them alike, on `clock` (now_ms: wall; thread_cpu_ms).
/// Returns one stats per candidate.
inline std::vector<stats> interleaved(const std::vector<std::function<void()>>& runs, int warmup, int reps,
                                      double (*clock)()) {
  for (int w = 0; w < warmup; ++w)
    for (const auto& run : runs) run();
  std::vector<std::vector<double>> times(runs.size());
  for (int r = 0; r < reps; ++r)
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const double t0 = clock();
      runs[i]();
      times[i].push_back(clock() - t0);
    }
  std::vector<stats> out;
  for (auto& t : times) out.push_back(summarize(std::move(t)));
  return out;
}
inline std::vector<stats> interleaved(const std::vector<std::function<void()>>& runs, int warmup, int reps) {
  return interleaved(runs, warmup, reps, now_ms);
}

/// One JSON object on one line: {"k": v, ...}. Values are numbers or strings.
class json_line {
 public:
  json_line& add(const std::string& k, const std::string& v) {
    items_.emplace_back(k, "\"" + v + "\"");
    return *this;
  }
  json_line& add(const std::string& k, const char* v) { return add(k, std::string(v)); }
  json_line& add(const std::string& k, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    items_.emplace_back(k, buf);
    return *this;
  }
  json_line& add(const std::string& k, int v) { return add(k, static_cast<double>(v)); }
  json_line& add(const std::string& k, const stats& s) {
    return add(k + "median_ms", s.median_ms).add(k + "p10_ms", s.p10_ms).add(k + "p90_ms", s.p90_ms);
  }
  std::string str() const {
    std::string s = "{";
    for (std::size_t i = 0; i < items_.size(); ++i)
      s += (i ? ", \"" : "\"") + items_[i].first + "\": " + items_[i].second;
    return s + "}";
  }
  void print() const { std::printf("%s\n", str().c_str()); std::fflush(stdout); }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace bench

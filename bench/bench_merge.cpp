// bench_merge — the MC-SMoE pipeline (include/moekit/merge/) stage by stage.
// Each stage is one function `void stage_NAME(const options&, const
// bench::machine_info&)` listed in `stages()`; --stages picks them.
//
//   lsa    merge::linear_sum_assignment on random uniform [0, 1) costs
//          (n, n), minimised, n from --sizes (the reference's d_ff is 3072;
//          scipy solves the same problem with the same O(n³) family).
//   align  merge::align_bank (weight matching to set 0) on random FFN banks
//          G x (d, ff) from --banks: per set one (ff, ff) similarity from
//          GEMMs (w1ᵀw1 + b1⊗b1 + w2w2ᵀ), an LSA, the permutation applied.
//          Also the similarity alone for one pair, so the LSA's share shows.
//          Each timed repetition aligns a fresh copy of the random bank.
//
//   pipeline  every step of MC-SMoE after training, on L MoE layers of E
//          random FFN experts (ReLU, no biases, Switch top-1) from --models
//          LxExDxFF: align (weight matching), routing statistics over
//          --tokens random calibration tokens (the layers' forward), grouping
//          (global budget, E/4 groups per layer on average), frequency
//          merge, compression (thin SVD at rank --rank of every merged
//          matrix), packing. Training and distillation steps are the
//          example's (build/bin/mcsmoe reports their seconds).
//
//   build/bin/bench_merge                         # every stage
//   build/bin/bench_merge --stages lsa --sizes 512,1024,3072 --repeats 5
//   build/bin/bench_merge --stages align --banks 16x128x512,2x768x3072
//   build/bin/bench_merge --stages pipeline --models 2x16x64x256,1x8x768x3072
//
// JSON lines on stdout (PERFORMANCE.md fields), a table on stderr. Times are
// wall clock and this thread's CPU time (the figure to read on a loaded
// machine at --threads 1).
#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/merge.hpp>
#include <moekit/moe.hpp>

#include "bench_util.hpp"
#include "common/flags.hpp"

namespace {

using namespace moekit;

struct options {
  std::string stages = "lsa,align,pipeline", sizes = "512,1024,3072", banks = "16x128x512,2x768x3072";
  std::string models = "2x16x64x256,1x8x768x3072";
  int threads = 1, warmup = 1, repeats = 3, tokens = 4096, rank = 32;
  std::uint64_t seed = 42;
};

/// One FFN bank shape: G weight sets of (d, ff).
struct bank_shape {
  std::size_t sets = 0, d = 0, ff = 0;
};

bank_shape parse_bank(const std::string& s) {
  bank_shape b;
  int n = 0;
  if (std::sscanf(s.c_str(), "%zux%zux%zu%n", &b.sets, &b.d, &b.ff, &n) != 3 || std::size_t(n) != s.size() ||
      b.sets < 1 || b.d < 1 || b.ff < 1)
    throw value_error("--banks: '" + s + "' is not GxDxFF (e.g. 16x128x512)");
  return b;
}

std::size_t parse_size(const std::string& s) {
  std::size_t n = 0;
  int used = 0;
  if (std::sscanf(s.c_str(), "%zu%n", &n, &used) != 1 || std::size_t(used) != s.size() || n < 1)
    throw value_error("--sizes: '" + s + "' is not a positive integer");
  return n;
}

template <class T, class Parse>
std::vector<T> parse(const std::string& list, Parse p, const std::string& what) {
  try {
    return bench::parse_list(list, p, what);
  } catch (const std::invalid_argument& e) {
    throw value_error(e.what());
  }
}

/// Wall and thread-CPU stats of `reps` timed calls of run(), each after an
/// untimed prepare() (and `warmup` untimed rounds of both first).
struct timing {
  bench::stats wall, cpu;
};
timing time_it(int warmup, int reps, const std::function<void()>& prepare, const std::function<void()>& run) {
  for (int w = 0; w < warmup; ++w) prepare(), run();
  std::vector<double> wall, cpu;
  for (int r = 0; r < reps; ++r) {
    prepare();
    const double w0 = bench::now_ms(), c0 = bench::thread_cpu_ms();
    run();
    cpu.push_back(bench::thread_cpu_ms() - c0);
    wall.push_back(bench::now_ms() - w0);
  }
  return {bench::summarize(wall), bench::summarize(cpu)};
}

bench::json_line& machine_fields(bench::json_line& j, const options& o, const bench::machine_info& m) {
  return j.add("backend", "cpu").add("threads", o.threads).add("machine", m.host).add("cpu", m.cpu)
      .add("blas_core", m.blas_core).add("omp_wait_policy", m.omp_wait_policy).add("fma_peak_gflops", m.fma_peak_core);
}

// ------------------------------------------------------------------ stages

void stage_lsa(const options& o, const bench::machine_info& m) {
  for (std::size_t n : parse<std::size_t>(o.sizes, parse_size, "--sizes")) {
    std::mt19937_64 g(o.seed + n);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<double> c(n * n);  // (n, n)
    for (auto& x : c) x = u(g);
    merge::assignment a;
    const timing t = time_it(o.warmup, o.repeats, [] {}, [&] { a = merge::linear_sum_assignment(c, n, n); });
    bench::json_line j;
    j.add("bench", "merge").add("stage", "lsa").add("impl", "moekit merge::linear_sum_assignment")
        .add("dtype", "f64").add("n", double(n)).add("costs", "uniform[0,1)").add("", t.wall).add("cpu_", t.cpu)
        .add("total", a.total);
    machine_fields(j, o, m).print();
    std::fprintf(stderr, "  lsa    n=%-5zu  %10.1f ms wall  %10.1f ms cpu  (p10 %.1f, p90 %.1f)\n", n,
                 t.wall.median_ms, t.cpu.median_ms, t.wall.p10_ms, t.wall.p90_ms);
  }
}

void stage_align(const options& o, const bench::machine_info& m) {
  using bank_t = moe::ffn_expert<dyn, dyn, moe::activation::gelu>::bank<dyn, float, cpu>;
  for (const bank_shape& s : parse<bank_shape>(o.banks, parse_bank, "--banks")) {
    rng g(o.seed + s.ff);
    const bank_t original(g, s.sets, s.d, s.ff);
    bank_t bank = original;
    const timing whole = time_it(o.warmup, o.repeats, [&] { bank = original; }, [&] { merge::align_bank(bank); });
    timing costs{};
    if (s.sets > 1)
      costs = time_it(o.warmup, o.repeats, [] {}, [&] { (void)merge::weight_matching_costs(bank, 0, 1); });
    const double pairs = double(s.sets - 1);
    const double gflop = pairs * 2.0 * double(s.ff) * double(s.ff) * (2.0 * double(s.d) + 1.0) / 1e9;
    bench::json_line j;
    j.add("bench", "merge").add("stage", "align").add("impl", "moekit merge::align_bank (weight matching)")
        .add("dtype", "f32").add("expert", "ffn gelu, biases").add("sets", double(s.sets)).add("d_model", double(s.d))
        .add("d_ff", double(s.ff)).add("", whole.wall).add("cpu_", whole.cpu)
        .add("per_set_ms", pairs > 0 ? whole.wall.median_ms / pairs : 0.0)
        .add("costs_per_set_median_ms", costs.wall.median_ms).add("similarity_gflop", gflop);
    machine_fields(j, o, m).print();
    std::fprintf(stderr,
                 "  align  %zux(%zu, %zu)  %10.1f ms wall  %10.1f ms cpu  (%.1f ms per set, similarity %.1f ms of it)\n",
                 s.sets, s.d, s.ff, whole.wall.median_ms, whole.cpu.median_ms,
                 pairs > 0 ? whole.wall.median_ms / pairs : 0.0, costs.wall.median_ms);
  }
}

/// L MoE layers of E experts (d, ff): what the pipeline stage works on.
struct model_shape {
  std::size_t layers = 0, experts = 0, d = 0, ff = 0;
};

model_shape parse_model(const std::string& s) {
  model_shape m;
  int n = 0;
  if (std::sscanf(s.c_str(), "%zux%zux%zux%zu%n", &m.layers, &m.experts, &m.d, &m.ff, &n) != 4 ||
      std::size_t(n) != s.size() || m.layers < 1 || m.experts < 2 || m.d < 1 || m.ff < 1)
    throw value_error("--models: '" + s + "' is not LxExDxFF with E >= 2 (e.g. 2x16x64x256)");
  return m;
}

/// A stack of MoE layers, visited as "<i>.router", "<i>.experts".
template <class Layer>
struct layer_stack {
  std::vector<Layer> layers;
  template <class V>
  void parameters(V&& visit) {
    for (std::size_t i = 0; i < layers.size(); ++i) visit(std::to_string(i), layers[i]);
  }
};

void stage_pipeline(const options& o, const bench::machine_info& m) {
  using router_t = moe::top_k_router<dyn, dyn, dyn, float, cpu>;
  using spec = moe::ffn_expert<dyn, dyn, moe::activation::relu, false>;
  using layer_t = moe::layer<router_t, spec, float, cpu>;
  for (const model_shape& s : parse<model_shape>(o.models, parse_model, "--models")) {
    rng g(o.seed + s.ff);
    layer_stack<layer_t> model;
    for (std::size_t l = 0; l < s.layers; ++l)
      model.layers.emplace_back(router_t(g, {}, s.d, s.experts, 1), layer_t::bank_type(g, s.experts, s.d, s.ff));
    const auto x = normal<float>(g, shape<dyn, dyn>{std::size_t(o.tokens), s.d});  // (tokens, d)
    const std::size_t rank = std::min<std::size_t>(std::size_t(o.rank), std::min(s.d, s.ff));
    std::vector<moe::routing_stats> stats;
    std::vector<merge::layer_grouping> groups;
    layer_stack<moe::layer<router_t, merge::low_rank_sparse<spec>, float, cpu>> compressed;
    std::vector<std::pair<std::string, double>> ms;  // step, median wall ms
    auto step = [&](const char* name, const std::function<void()>& prepare, const std::function<void()>& run) {
      const timing t = time_it(0, o.repeats, prepare, run);
      ms.emplace_back(name, t.wall.median_ms);
    };
    const layer_stack<layer_t> original = model;
    step("align", [&] { model = original; }, [&] { merge::for_each_moe_layer(model, [](std::size_t, auto& l) { merge::align_bank(l.experts()); }); });
    step("stats", [&] { stats.assign(s.layers, moe::routing_stats{}); }, [&] {
      no_grad guard;
      for (std::size_t l = 0; l < s.layers; ++l) {
        tape t;
        (void)model.layers[l](t.input(x));
        stats[l].add(model.layers[l].last_routing());
      }
    });
    step("group", [] {}, [&] { groups = merge::group_experts(stats, {.average_groups = std::max<std::size_t>(1, s.experts / 4)}); });
    const layer_stack<layer_t> aligned = model;
    step("merge", [&] { model = aligned; }, [&] { merge::merge_model(model, groups, stats); });
    step("compress", [&] { compressed.layers.clear(); }, [&] {
      for (const auto& l : model.layers) compressed.layers.push_back(merge::compress(l, rank));
    });
    step("pack", [&] {
      compressed.layers.clear();
      for (const auto& l : model.layers) compressed.layers.push_back(merge::compress(l, rank));
    }, [&] { merge::for_each_moe_layer(compressed, [](std::size_t, auto& l) { l.experts().pack(); }); });
    double total = 0;
    bench::json_line j;
    j.add("bench", "merge").add("stage", "pipeline").add("impl", "moekit merge (after training)").add("dtype", "f32")
        .add("expert", "ffn relu, no biases").add("layers", double(s.layers)).add("experts", double(s.experts))
        .add("d_model", double(s.d)).add("d_ff", double(s.ff)).add("tokens", double(o.tokens)).add("rank", double(rank))
        .add("groups_per_layer", double(std::max<std::size_t>(1, s.experts / 4)));
    for (const auto& [name, t] : ms) j.add(std::string(name) + "_median_ms", t), total += t;
    j.add("total_ms", total);
    machine_fields(j, o, m).print();
    std::fprintf(stderr, "  pipeline %zux%zux(%zu, %zu):", s.layers, s.experts, s.d, s.ff);
    for (const auto& [name, t] : ms) std::fprintf(stderr, "  %s %.1f", name.c_str(), t);
    std::fprintf(stderr, "  total %.1f ms\n", total);
  }
}

struct stage {
  const char* name;
  void (*run)(const options&, const bench::machine_info&);
};
const std::vector<stage>& stages() {
  static const std::vector<stage> all = {{"lsa", stage_lsa}, {"align", stage_align}, {"pipeline", stage_pipeline}};
  return all;
}

}  // namespace

int main(int argc, char** argv) try {
  bench::relaunch(argv);
  options o;
  moekit::flags cli("bench_merge",
                    "The MC-SMoE pipeline (moekit/merge) stage by stage: the linear sum assignment at the reference's\n"
                    "sizes, permutation alignment of expert banks, every step after training. JSON lines on stdout; a\n"
                    "table on stderr.");
  cli.add("stages", o.stages, "comma-separated stages: lsa, align, pipeline");
  cli.add("sizes", o.sizes, "lsa: comma-separated n of the (n, n) random problems");
  cli.add("banks", o.banks, "align: comma-separated FFN banks GxDxFF (weight sets x d_model x d_ff)");
  cli.add("models", o.models, "pipeline: comma-separated models LxExDxFF (MoE layers x experts x d_model x d_ff)");
  cli.add("tokens", o.tokens, "pipeline: calibration tokens for the routing statistics");
  cli.add("rank", o.rank, "pipeline: rank of the compression (capped at min(d, ff))");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS (the LSA itself is single-threaded)");
  cli.add("warmup", o.warmup, "untimed repetitions first");
  cli.add("repeats", o.repeats, "timed repetitions (median reported)");
  cli.add("seed", o.seed, "random costs and banks");
  if (!cli.parse(argc, argv)) return 0;
  bench::print_blas_line();
  if (o.repeats < 1 || o.warmup < 0 || o.threads < 1 || o.tokens < 1 || o.rank < 1)
    throw moekit::value_error("need --repeats >= 1, --warmup >= 0, --threads, --tokens, --rank >= 1");
  const auto chosen = parse<std::string>(o.stages, [](const std::string& s) { return s; }, "--stages");
  for (const auto& name : chosen)
    if (std::none_of(stages().begin(), stages().end(), [&](const stage& s) { return name == s.name; }))
      throw moekit::value_error("--stages: unknown stage '" + name + "' (lsa, align, pipeline)");
  moekit::set_num_threads(o.threads);
  const bench::machine_info m = bench::describe_machine();
  std::fprintf(stderr, "bench_merge: %d thread(s), %d warm-up, %d timed repetitions; %s; BLAS %s\n", o.threads,
               o.warmup, o.repeats, m.cpu.c_str(), m.blas_core.c_str());
  for (const auto& s : stages())
    if (std::find(chosen.begin(), chosen.end(), s.name) != chosen.end()) s.run(o, m);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_merge: %s\n", e.what());
  return 2;
}

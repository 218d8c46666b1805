// char_lm — a character-level language model bench: a small pre-norm
// decoder-only transformer (causal multi-head attention with RoPE) trained on
// a text file (tinyshakespeare by default, 90/10 train/validation split), whose
// MLP block is dense or one of the baseline MoEs of moe/baselines.hpp (Switch,
// GShard, expert choice, DeepSeek-style fine + shared experts), each matching
// the dense FFN's active expert weights per token (as moe_compare matches
// them). AdamW (decay on matrices only), linear warm-up + cosine decay to a
// tenth, gradient clipping at norm 1; the routers' load-balancing losses ride
// on the MoE outputs' backward.
//
//   build/bin/char_lm                                     # dense, defaults (~2-3 min on 2 cores)
//   build/bin/char_lm --model all --seeds 3               # the table of docs/moe.md
//   build/bin/char_lm --model switch,deepseek --steps 300 --experts 16
//   build/bin/char_lm --stop-after 150 --save run.safetensors   # ... later:
//   build/bin/char_lm --resume run.safetensors                  # steps 151-300, as one run
//
// Expert choice is NOT causal: each expert picks its tokens among all tokens of
// the batch, so whether a token is processed depends on later tokens (and on
// other sequences). Its loss is not a fair language-model loss; the table
// marks it.
//
// Training windows are drawn at random from the training part, each step from
// its own random stream (seed, step), so a resumed run draws the same batches
// as an uninterrupted one; validation uses every non-overlapping window of the
// validation part (or the first --eval-tokens of them), in batches of --batch.
//
// Output: a progress line on stderr; a table on stdout (validation loss in
// nats per character and bits per character, mean ± std over seeds, training
// tokens per second, forward FLOPs per token of the matrix products counted
// from the shapes, total and active parameters, peak resident memory, expert
// load on the validation set), whose last line is one JSON object.
#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <moekit.hpp>
#include <moekit/io/checkpoint.hpp>
#include <moekit/io/flags.hpp>
#include <moekit/io/text.hpp>
#include <moekit/moe.hpp>
#include <moekit/moe/baselines.hpp>
#include <moekit/optim.hpp>

#include "common/char_model.hpp"
#include "common/passive_openmp.hpp"

using namespace moekit;

namespace {

#ifdef MOEKIT_SHARED_DATA_DIR
const std::string default_data =
    std::string(MOEKIT_SHARED_DATA_DIR).empty() ? "" : MOEKIT_SHARED_DATA_DIR "/tinyshakespeare/input.txt";
#else
const std::string default_data = "../shared/data/tinyshakespeare/input.txt";
#endif

const std::vector<std::string> all_models = {"dense", "switch", "gshard", "expert_choice", "deepseek"};

struct options {
  std::string data = default_data, model = "dense";
  int d_model = 128, layers = 2, heads = 4, ff = 0, seq = 64, batch = 32, steps = 300;
  int experts = 8, granularity = 4, shared = 1;
  int seeds = 1, seed = 0, threads = 2, warmup = 30, eval_tokens = 0, eval_every = 0, save_every = 0, stop_after = 0;
  double lr = 3e-3, weight_decay = 0.1, min_lr_factor = 0.1, clip = 1.0, val_fraction = 0.1, max_loss = 0;
  bool byte_vocabulary = false;
  std::string save, resume;
};

/// One training run (one model, one seed).
struct run_result {
  double val_loss = 0, train_loss = 0, train_seconds = 0, eval_seconds = 0, tokens_per_s = 0, peak_rss_mib = 0;
  std::size_t steps_run = 0;
  // MoE only: over the validation set, averaged over layers.
  double load_max_over_mean = 0, load_cv = 0, dropped = 0;
  std::vector<std::vector<double>> load_share;  // per layer, per expert: share of the kept assignments
};

/// One model over all seeds.
struct model_result {
  std::string name;
  bool causal = true;
  std::size_t total_params = 0, active_params = 0, flops_per_token = 0, experts = 0;
  std::vector<run_result> runs;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The process's resident-set high-water mark in MiB (VmHWM), reset by
/// reset_peak_rss(); getrusage's ru_maxrss where /proc is not there.
double peak_rss_mib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}
/// Starts a new high-water mark at the current resident set (Linux: clear_refs 5).
void reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (out) out << "5";
}

/// OpenBLAS's kernel name ("Zen", "SkylakeX", "Prescott" = generic), or "unknown".
std::string blas_core_name() {
  using fn_t = char* (*)();
  if (auto f = reinterpret_cast<fn_t>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) return f();
  return "unknown";
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

moe::baseline parse_baseline(const std::string& name) {
  for (auto b : {moe::baseline::switch_top1, moe::baseline::gshard_top2, moe::baseline::expert_choice,
                 moe::baseline::deepseek})
    if (name == moe::baseline_name(b)) return b;
  throw value_error("--model: '" + name + "' is not one of all, dense, switch, gshard, expert_choice, deepseek");
}

std::size_t ffn_width(const options& o) {
  return o.ff > 0 ? static_cast<std::size_t>(o.ff) : 4 * static_cast<std::size_t>(o.d_model);
}

moe::baseline_spec spec_of(const options& o) {
  return {.d_model = static_cast<std::size_t>(o.d_model), .d_ff = ffn_width(o),
          .experts = static_cast<std::size_t>(o.experts), .granularity = static_cast<std::size_t>(o.granularity),
          .shared_experts = static_cast<std::size_t>(o.shared)};
}

/// s as the inside of a JSON string.
std::string json_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

/// What a checkpoint carries: the settings a resumed run must share.
io::metadata_map run_metadata(const options& o, const std::string& model, int seed, std::size_t vocabulary) {
  return {{"example", "char_lm"}, {"model", model}, {"d_model", std::to_string(o.d_model)},
          {"layers", std::to_string(o.layers)}, {"heads", std::to_string(o.heads)}, {"ff", std::to_string(ffn_width(o))},
          {"seq", std::to_string(o.seq)}, {"batch", std::to_string(o.batch)}, {"steps", std::to_string(o.steps)},
          {"experts", std::to_string(o.experts)}, {"granularity", std::to_string(o.granularity)},
          {"shared", std::to_string(o.shared)}, {"seed", std::to_string(seed)}, {"warmup", std::to_string(o.warmup)},
          {"lr", num(o.lr)}, {"weight_decay", num(o.weight_decay)}, {"min_lr_factor", num(o.min_lr_factor)},
          {"clip", num(o.clip)}, {"val_fraction", num(o.val_fraction)}, {"vocabulary", std::to_string(vocabulary)}};
}

template <class M>
constexpr bool has_router = requires(M& m) { m.ffn(0).last_routing(); };

/// Mean validation loss (nats per character) over non-overlapping windows;
/// for an MoE also its routing statistics there.
template <class M>
double evaluate(M& model, const tensor<index_t, shape<dyn>>& val, const options& o, run_result* r) {
  no_grad guard;
  model.train(false);
  const auto seq = static_cast<std::size_t>(o.seq), batch = static_cast<std::size_t>(o.batch);
  std::size_t windows = (val.size() - 1) / seq;
  if (o.eval_tokens > 0) windows = std::min(windows, std::max<std::size_t>(1, static_cast<std::size_t>(o.eval_tokens) / seq));
  std::vector<moe::routing_stats> routing;
  if constexpr (has_router<M>) routing.resize(model.layers());
  double sum = 0;
  std::size_t count = 0;
  for (std::size_t w = 0; w < windows; w += batch) {
    std::vector<std::size_t> starts;
    for (std::size_t i = w; i < std::min(windows, w + batch); ++i) starts.push_back(i * seq);
    const auto b = examples::make_char_batch(val, starts, seq);
    tape t;
    auto loss = cross_entropy(model(b.inputs), b.targets);
    sum += static_cast<double>(loss.value().template to<cpu>()[0]) * static_cast<double>(b.targets.size());
    count += b.targets.size();
    if constexpr (has_router<M>)
      if (r)
        for (std::size_t l = 0; l < routing.size(); ++l) routing[l].add(model.ffn(l).last_routing());
  }
  if (r && !routing.empty()) {
    r->load_max_over_mean = r->load_cv = r->dropped = 0;
    r->load_share.clear();
    const auto layers = static_cast<double>(routing.size());
    for (const auto& st : routing) {
      const auto lb = st.load_balance();
      r->load_max_over_mean += lb.max_over_mean / layers;
      r->load_cv += lb.cv / layers;
      r->dropped += static_cast<double>(st.dropped()) / static_cast<double>(st.dropped() + st.assignments()) / layers;
      std::vector<double> share;
      for (auto c : st.counts()) share.push_back(static_cast<double>(c) / static_cast<double>(st.assignments()));
      r->load_share.push_back(std::move(share));
    }
  }
  model.train(true);
  return sum / static_cast<double>(count);
}

/// Trains `model` with seed `seed` and evaluates it on the validation part.
template <class M>
run_result train(const options& o, M& model, const std::string& name, int seed, const io::text_split& data,
                 std::size_t vocabulary) {
  using opt_t = optim::adamw<float, cpu>;
  auto [vectors, matrices] = optim::split_groups(parameter_views<float, cpu>(model), [](const auto& p) {
    return p.extents.size() < 2;
  });
  std::vector<opt_t::group_spec> groups;
  groups.push_back({std::move(matrices), {.lr = o.lr, .weight_decay = o.weight_decay}});
  groups.push_back({std::move(vectors), {.lr = o.lr, .weight_decay = 0}});
  opt_t opt(std::move(groups));
  const auto total = static_cast<std::size_t>(o.steps);
  const optim::cosine_schedule schedule({.total_steps = total,
                                         .warmup_steps = std::min(total, static_cast<std::size_t>(o.warmup)),
                                         .min_factor = o.min_lr_factor});
  const io::metadata_map meta = run_metadata(o, name, seed, vocabulary);
  if (!o.resume.empty()) {
    const auto saved = io::load_checkpoint(o.resume, model, opt);
    for (const auto& [key, value] : meta)
      if (!saved.contains(key) || saved.at(key) != value)
        throw value_error("--resume: " + o.resume + " was written with " + key + " = " +
                          (saved.contains(key) ? saved.at(key) : "(none)") + ", this run has " + value);
    std::fprintf(stderr, "char_lm: resumed from %s at step %zu\n", o.resume.c_str(), opt.steps());
  }
  auto save = [&] {
    if (o.save.empty()) return;
    auto m = meta;
    m["step"] = std::to_string(opt.steps());
    io::save_checkpoint(o.save, model, opt, m);
  };

  const auto seq = static_cast<std::size_t>(o.seq), batch = static_cast<std::size_t>(o.batch);
  const std::size_t stop = o.stop_after > 0 ? std::min(total, static_cast<std::size_t>(o.stop_after)) : total;
  run_result r;
  std::vector<double> losses;
  const auto t0 = std::chrono::steady_clock::now();
  double last_report = -1, eval_seconds = 0;
  if (o.eval_every > 0 && opt.steps() == 0) {
    const auto te = std::chrono::steady_clock::now();
    const double v = evaluate(model, data.val, o, nullptr);
    eval_seconds += seconds_since(te);
    std::fprintf(stderr, "\r%-14s seed %d  step %5d  val loss %.4f (%.3f bpc)%20s\n", name.c_str(), seed, 0, v,
                 v / std::log(2.0), "");
  }
  while (opt.steps() < stop) {
    const std::size_t step = opt.steps();
    rng g(static_cast<std::uint64_t>(seed), (static_cast<std::uint64_t>(step) + 1) << 32);  // this step's own stream
    const auto b = examples::make_char_batch(data.train, examples::random_starts(g, data.train.size(), seq, batch), seq);
    optim::set_lr_factor(opt, schedule(step));
    opt.zero_grad();
    tape t;
    auto loss = cross_entropy(model(b.inputs), b.targets);
    t.backward(loss);
    if (o.clip > 0) optim::clip_grad_norm(opt, o.clip);
    opt.step();
    losses.push_back(static_cast<double>(loss.value()[0]));
    ++r.steps_run;
    if (o.save_every > 0 && opt.steps() % static_cast<std::size_t>(o.save_every) == 0) save();
    const double elapsed = seconds_since(t0) - eval_seconds;
    if (elapsed - last_report >= 1.0 || opt.steps() == stop) {
      last_report = elapsed;
      const std::size_t k = std::min<std::size_t>(losses.size(), 20);
      double recent = 0;
      for (std::size_t i = losses.size() - k; i < losses.size(); ++i) recent += losses[i] / static_cast<double>(k);
      std::fprintf(stderr, "\r%-14s seed %d  step %zu/%zu  loss %.4f  %.0f tokens/s  %.0f s   ", name.c_str(), seed,
                   opt.steps(), total, recent, static_cast<double>(r.steps_run * batch * seq) / elapsed, elapsed);
    }
    if (o.eval_every > 0 && opt.steps() % static_cast<std::size_t>(o.eval_every) == 0 && opt.steps() < stop) {
      const auto te = std::chrono::steady_clock::now();
      const double v = evaluate(model, data.val, o, nullptr);
      eval_seconds += seconds_since(te);
      std::fprintf(stderr, "\n%-14s seed %d  step %5zu  val loss %.4f (%.3f bpc)\n", name.c_str(), seed, opt.steps(),
                   v, v / std::log(2.0));
    }
  }
  r.train_seconds = seconds_since(t0) - eval_seconds;
  if (o.stop_after > 0 || o.save_every <= 0 || opt.steps() % static_cast<std::size_t>(o.save_every) != 0) save();
  std::fprintf(stderr, "\n");
  r.tokens_per_s = r.train_seconds > 0 ? static_cast<double>(r.steps_run * batch * seq) / r.train_seconds : 0;
  const std::size_t k = std::min<std::size_t>(losses.size(), 50);
  for (std::size_t i = losses.size() - k; i < losses.size(); ++i) r.train_loss += losses[i] / static_cast<double>(k);
  const auto te = std::chrono::steady_clock::now();
  r.val_loss = evaluate(model, data.val, o, &r);
  r.eval_seconds = seconds_since(te);
  return r;
}

/// Builds model `name` for each seed, trains and evaluates it.
model_result run_model(const options& o, const std::string& name, const io::text_split& data, std::size_t vocabulary) {
  model_result m;
  m.name = name;
  const examples::char_model_config c{.vocabulary = vocabulary, .d_model = static_cast<std::size_t>(o.d_model),
                                      .layers = static_cast<std::size_t>(o.layers),
                                      .heads = static_cast<std::size_t>(o.heads)};
  const std::size_t outer = examples::char_transformer<examples::dense_ffn<>>::non_ffn_flops(c, static_cast<std::size_t>(o.seq));
  const auto spec = spec_of(o);
  for (int s = 0; s < o.seeds; ++s) {
    const int seed = o.seed + s;
    rng g(static_cast<std::uint64_t>(seed));
    reset_peak_rss();
    run_result r;
    if (name == "dense") {
      examples::char_transformer<examples::dense_ffn<>> model(
          g, c, [&](rng& gg, std::size_t) { return examples::dense_ffn<>(gg, spec.d_model, spec.d_ff); });
      m.total_params = m.active_params = count_parameters(model);
      m.flops_per_token = outer + c.layers * moe::dense_ffn_cost(spec.d_model, spec.d_ff).expert_flops;
      r = train(o, model, name, seed, data, vocabulary);
    } else {
      const auto layout = moe::baseline_layout_of(parse_baseline(name), spec);
      const auto cost = moe::cost_of(layout);
      m.experts = layout.experts;
      m.causal = layout.kind != moe::baseline::expert_choice;
      auto fill_and_train = [&](auto& model) {
        m.total_params = count_parameters(model);
        m.active_params = m.total_params - c.layers * (cost.total_params - cost.active_params);
        m.flops_per_token = outer + c.layers * (cost.expert_flops + cost.router_flops);
        r = train(o, model, name, seed, data, vocabulary);
      };
      if (layout.kind == moe::baseline::expert_choice) {
        examples::char_transformer<moe::expert_choice_moe<>> model(
            g, c, [&](rng& gg, std::size_t) { return moe::make_expert_choice<float>(gg, spec); });
        fill_and_train(model);
      } else {
        examples::char_transformer<moe::token_choice_moe<>> model(
            g, c, [&](rng& gg, std::size_t) { return moe::make_token_choice<float>(gg, layout); });
        fill_and_train(model);
      }
    }
    r.peak_rss_mib = peak_rss_mib();
    std::fprintf(stderr, "%-14s seed %d  val loss %.4f nats/char (%.3f bpc)  %.0f tokens/s  train %.1f s  eval %.1f s\n",
                 name.c_str(), seed, r.val_loss, r.val_loss / std::log(2.0), r.tokens_per_s, r.train_seconds,
                 r.eval_seconds);
    m.runs.push_back(std::move(r));
  }
  return m;
}

struct stat {
  double mean = 0, std = 0;
};
template <class F>
stat over_runs(const model_result& m, F f) {
  stat s;
  for (const auto& r : m.runs) s.mean += f(r) / static_cast<double>(m.runs.size());
  if (m.runs.size() > 1) {
    for (const auto& r : m.runs) s.std += (f(r) - s.mean) * (f(r) - s.mean);
    s.std = std::sqrt(s.std / static_cast<double>(m.runs.size() - 1));  // sample std
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_passive_openmp(argv);
  options o;
  flags cli("char_lm",
            "Trains a small decoder-only transformer (pre-norm, causal attention with RoPE) as a character-level\n"
            "language model on a text file, with a dense or MoE MLP block (Switch, GShard, expert choice,\n"
            "DeepSeek-style) at matched active expert weights, and reports validation loss and cost.\n"
            "The last stdout line is a JSON object with one row per model.");
  cli.add("data", o.data, "text file (tinyshakespeare: shared/data/tinyshakespeare/input.txt)");
  cli.add("model", o.model, "dense, switch, gshard, expert_choice, deepseek, a comma list of them, or all");
  cli.add("d-model", o.d_model, "model width");
  cli.add("layers", o.layers, "transformer blocks");
  cli.add("heads", o.heads, "attention heads (d-model / heads must be even, for RoPE)");
  cli.add("ff", o.ff, "hidden width of the dense FFN, the active width the MoEs match (0: 4 * d-model)");
  cli.add("experts", o.experts, "experts per MoE (DeepSeek: before the fine split)");
  cli.add("granularity", o.granularity, "DeepSeek: fine experts per coarse expert (each 1/granularity wide)");
  cli.add("shared", o.shared, "DeepSeek: shared (always-on) fine experts");
  cli.add("seq", o.seq, "characters per training window (context length)");
  cli.add("batch", o.batch, "windows per step (also per validation batch)");
  cli.add("steps", o.steps, "training steps");
  cli.add("lr", o.lr, "AdamW peak learning rate");
  cli.add("weight-decay", o.weight_decay, "AdamW decoupled weight decay of weight matrices and the embedding");
  cli.add("warmup", o.warmup, "steps of linear warm-up before the cosine decay");
  cli.add("min-lr-factor", o.min_lr_factor, "learning rate at the last step, as a fraction of --lr");
  cli.add("clip", o.clip, "clip the gradient's global norm to this (0: off)");
  cli.add("val-fraction", o.val_fraction, "the last this fraction of the text is the validation part");
  cli.add("byte-vocabulary", o.byte_vocabulary, "use all 256 byte values as the vocabulary (else: the bytes the file has)");
  cli.add("eval-tokens", o.eval_tokens, "evaluate on the first N validation characters only (0: all)");
  cli.add("eval-every", o.eval_every, "also print the validation loss every N steps and at step 0 (0: only at the end)");
  cli.add("seeds", o.seeds, "seeds per model (--seed, --seed + 1, ...): mean ± std");
  cli.add("seed", o.seed, "first random seed (init, training windows)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("save", o.save, "write a checkpoint (model, AdamW state, step) here at the end (and every --save-every steps)");
  cli.add("save-every", o.save_every, "with --save: also save every N steps (0: at the end only)");
  cli.add("resume", o.resume, "continue from this checkpoint (same flags as the run that wrote it)");
  cli.add("stop-after", o.stop_after, "stop after this step as if interrupted (0: run all --steps); with --save, for --resume");
  cli.add("max-loss", o.max_loss, "exit 1 when any run's validation loss (nats/char) is above this (0: no check)");
  if (!cli.parse(argc, argv)) return 0;
  if (o.d_model < 1 || o.layers < 1 || o.heads < 1 || o.seq < 1 || o.batch < 1 || o.steps < 1 || o.threads < 1 ||
      o.seeds < 1 || o.experts < 1 || o.granularity < 1)
    throw value_error("--d-model, --layers, --heads, --seq, --batch, --steps, --threads, --seeds, --experts, "
                      "--granularity must be >= 1");
  if (o.ff < 0 || o.shared < 0 || o.warmup < 0 || o.eval_tokens < 0 || o.eval_every < 0 || o.save_every < 0 ||
      o.stop_after < 0 || o.lr <= 0 || o.weight_decay < 0 || o.clip < 0 || o.max_loss < 0)
    throw value_error("--ff, --shared, --warmup, --eval-tokens, --eval-every, --save-every, --stop-after, "
                      "--weight-decay, --clip, --max-loss must be >= 0 and --lr > 0");
  if (o.d_model % o.heads != 0 || (o.d_model / o.heads) % 2 != 0)
    throw value_error("--d-model " + std::to_string(o.d_model) + " / --heads " + std::to_string(o.heads) +
                      " must be an even whole number (RoPE rotates pairs of dimensions)");
  std::vector<std::string> names = o.model == "all" ? all_models : split_list(o.model);
  if (names.empty()) throw value_error("--model: empty list");
  for (const auto& name : names)
    if (name != "dense") moe::baseline_layout_of(parse_baseline(name), spec_of(o));  // bad names and sizes fail first
  if ((!o.save.empty() || !o.resume.empty()) && (names.size() != 1 || o.seeds != 1))
    throw value_error("--save and --resume need one --model and --seeds 1");
  set_num_threads(o.threads);

  if (o.data.empty()) throw value_error("--data FILE is required (e.g. shared/data/tinyshakespeare/input.txt)");
  io::text_corpus text;
  try {
    text = io::load_text(o.data, {.full_byte_vocabulary = o.byte_vocabulary});
  } catch (const io_error& e) {
    throw io_error(std::string(e.what()) +
                   ". tinyshakespeare is in shared/data/tinyshakespeare/input.txt (see shared/data/README.md); "
                   "pass --data FILE for another text");
  }
  const auto data = io::split_text(text, o.val_fraction);
  const auto seq = static_cast<std::size_t>(o.seq);
  if (data.train.size() < seq + 2 || data.val.size() < seq + 1)
    throw value_error(o.data + ": the training part (" + std::to_string(data.train.size()) +
                      " characters) or the validation part (" + std::to_string(data.val.size()) +
                      ") is too short for windows of --seq " + std::to_string(o.seq));
  const std::size_t n_train = data.train.size();
  const double unigram = text.unigram_entropy(n_train, text.size());
  const std::string blas = blas_core_name();
  std::printf("char_lm: %s: %zu characters (%zu train / %zu validation), vocabulary %zu; d_model %d, %d layers, "
              "%d heads, FFN %zu, seq %d, batch %d, %d steps, %d experts, %d seed(s), %d threads, BLAS core %s\n",
              o.data.c_str(), text.size(), n_train, data.val.size(), text.vocabulary_size(), o.d_model, o.layers,
              o.heads, ffn_width(o), o.seq, o.batch, o.steps, o.experts, o.seeds, o.threads, blas.c_str());
  std::printf("validation unigram entropy %.4f nats/char (%.3f bits): a model that ignores context gets this\n", unigram,
              unigram / std::log(2.0));
  std::fflush(stdout);

  std::vector<model_result> rows;
  for (const auto& name : names) rows.push_back(run_model(o, name, data, text.vocabulary_size()));

  const double ln2 = std::log(2.0);
  std::printf("\n%-15s %17s %15s %10s %12s %12s %12s %9s %14s %8s\n", "model", "val loss (nats)", "bits/char",
              "tokens/s", "FLOPs/token", "total params", "active params", "peak MiB", "load max/mean", "dropped");
  for (const auto& m : rows) {
    const auto loss = over_runs(m, [](const run_result& r) { return r.val_loss; });
    const auto tps = over_runs(m, [](const run_result& r) { return r.tokens_per_s; });
    const auto rss = over_runs(m, [](const run_result& r) { return r.peak_rss_mib; });
    const std::string name = m.causal ? m.name : m.name + "*";
    char loss_s[40], bpc_s[40];
    std::snprintf(loss_s, sizeof loss_s, "%.4f ± %.4f", loss.mean, loss.std);
    std::snprintf(bpc_s, sizeof bpc_s, "%.3f ± %.3f", loss.mean / ln2, loss.std / ln2);
    std::printf("%-15s %17s %15s %10.0f %12zu %12zu %12zu %9.0f", name.c_str(), loss_s, bpc_s, tps.mean,
                m.flops_per_token, m.total_params, m.active_params, rss.mean);
    if (m.name == "dense") std::printf(" %14s %8s\n", "-", "-");
    else
      std::printf(" %14.2f %7.2f%%\n", over_runs(m, [](const run_result& r) { return r.load_max_over_mean; }).mean,
                  100 * over_runs(m, [](const run_result& r) { return r.dropped; }).mean);
  }
  for (const auto& m : rows)
    if (!m.causal)
      std::printf("* %s is not causal: each expert picks its tokens among the whole batch, later tokens included\n",
                  m.name.c_str());

  std::printf("{\"example\": \"char_lm\", \"data\": \"%s\", \"characters\": %zu, \"train_characters\": %zu, "
              "\"val_characters\": %zu, \"vocabulary\": %zu, \"val_unigram_entropy\": %.5f, \"d_model\": %d, "
              "\"layers\": %d, \"heads\": %d, \"ff\": %zu, \"seq\": %d, \"batch\": %d, \"steps\": %d, \"lr\": %g, "
              "\"experts\": %d, \"granularity\": %d, \"shared\": %d, \"seeds\": %d, \"threads\": %d, "
              "\"blas_core\": \"%s\", \"rows\": [",
              json_escape(o.data).c_str(), text.size(), n_train, data.val.size(), text.vocabulary_size(), unigram, o.d_model,
              o.layers, o.heads, ffn_width(o), o.seq, o.batch, o.steps, o.lr, o.experts, o.granularity, o.shared,
              o.seeds, o.threads, blas.c_str());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& m = rows[i];
    const auto loss = over_runs(m, [](const run_result& r) { return r.val_loss; });
    std::printf("%s{\"model\": \"%s\", \"causal\": %s, \"experts\": %zu, \"total_params\": %zu, \"active_params\": %zu, "
                "\"flops_per_token\": %zu, \"val_loss_mean\": %.5f, \"val_loss_std\": %.5f, \"bpc_mean\": %.5f, "
                "\"bpc_std\": %.5f, \"runs\": [",
                i ? ", " : "", m.name.c_str(), m.causal ? "true" : "false", m.experts, m.total_params, m.active_params,
                m.flops_per_token, loss.mean, loss.std, loss.mean / ln2, loss.std / ln2);
    for (std::size_t s = 0; s < m.runs.size(); ++s) {
      const auto& r = m.runs[s];
      std::printf("%s{\"seed\": %d, \"val_loss\": %.5f, \"bpc\": %.5f, \"final_train_loss\": %.5f, \"steps_run\": %zu, "
                  "\"train_seconds\": %.2f, \"eval_seconds\": %.2f, \"tokens_per_s\": %.1f, \"peak_rss_mib\": %.1f",
                  s ? ", " : "", o.seed + static_cast<int>(s), r.val_loss, r.val_loss / ln2, r.train_loss, r.steps_run,
                  r.train_seconds, r.eval_seconds, r.tokens_per_s, r.peak_rss_mib);
      if (m.name != "dense") {
        std::printf(", \"load_max_over_mean\": %.4f, \"load_cv\": %.4f, \"dropped\": %.5f, \"load_share\": [",
                    r.load_max_over_mean, r.load_cv, r.dropped);
        for (std::size_t l = 0; l < r.load_share.size(); ++l) {
          std::printf("%s[", l ? ", " : "");
          for (std::size_t e = 0; e < r.load_share[l].size(); ++e)
            std::printf("%s%.4f", e ? ", " : "", r.load_share[l][e]);
          std::printf("]");
        }
        std::printf("]");
      }
      std::printf("}");
    }
    std::printf("]}");
  }
  std::printf("]}\n");
  int status = 0;
  if (o.max_loss > 0)
    for (const auto& m : rows)
      for (const auto& r : m.runs)
        if (r.val_loss > o.max_loss) {
          std::fprintf(stderr, "char_lm: %s validation loss %.4f is above --max-loss %.4f\n", m.name.c_str(),
                       r.val_loss, o.max_loss);
          status = 1;
        }
  return status;
} catch (const moekit::error& e) {
  std::fprintf(stderr, "char_lm: %s\n", e.what());
  return 2;
}

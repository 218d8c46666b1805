// examples/common/char_training.hpp — training and evaluating a character
// model (char_model.hpp) for char_lm and coe, and the small reporting helpers
// both print with:
//
//   AdamW (decay on matrices only), linear warm-up + cosine decay to
//   min_lr_factor, gradient clipping; each step draws its windows from its own
//   random stream (seed, step), so a resumed run draws the batches of an
//   uninterrupted one; validation over every non-overlapping window of the
//   validation part (or the first eval_tokens), optionally scoring only the
//   targets that follow one input character (a task's answers);
//   every eval_every steps a point of the validation curve.
#pragma once

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <moekit.hpp>
#include <moekit/io/checkpoint.hpp>
#include <moekit/io/text.hpp>
#include <moekit/moe.hpp>
#include <moekit/optim.hpp>

#include "char_model.hpp"

namespace moekit::examples {

/// tinyshakespeare in the shared data folder the build was configured with
/// (MOEKIT_SHARED_DATA_DIR), else where it lies beside a source checkout.
inline std::string default_text_path() {
#ifdef MOEKIT_SHARED_DATA_DIR
  return std::string(MOEKIT_SHARED_DATA_DIR).empty() ? "" : MOEKIT_SHARED_DATA_DIR "/tinyshakespeare/input.txt";
#else
  return "../shared/data/tinyshakespeare/input.txt";
#endif
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The process's resident-set high-water mark in MiB (VmHWM), reset by
/// reset_peak_rss(); getrusage's ru_maxrss where /proc is not there.
inline double peak_rss_mib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}
/// Starts a new high-water mark at the current resident set (Linux: clear_refs 5).
inline void reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (out) out << "5";
}

/// OpenBLAS's kernel name ("Zen", "SkylakeX", "Prescott" = generic), or "unknown".
inline std::string blas_core_name() {
  using fn_t = char* (*)();
  if (auto f = reinterpret_cast<fn_t>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) return f();
  return "unknown";
}

inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

/// s as the inside of a JSON string.
inline std::string json_escape(const std::string& s) {
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

inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

/// Mean and sample standard deviation of f over xs.
struct mean_std {
  double mean = 0, std = 0;
  template <class Xs, class F>
  static mean_std of(const Xs& xs, F f) {
    mean_std s;
    for (const auto& x : xs) s.mean += f(x) / static_cast<double>(xs.size());
    if (xs.size() > 1) {
      for (const auto& x : xs) s.std += (f(x) - s.mean) * (f(x) - s.mean);
      s.std = std::sqrt(s.std / static_cast<double>(xs.size() - 1));
    }
    return s;
  }
};

struct training_options {
  int seq = 64, batch = 32, steps = 300, warmup = 30;
  int eval_tokens = 0, eval_every = 0, save_every = 0, stop_after = 0;
  double lr = 3e-3, weight_decay = 0.1, min_lr_factor = 0.1, clip = 1.0;
  std::string save, resume;
  index_t score_after = -1;  // score only targets whose input is this id (-1: every target)
};

/// One point of a validation curve.
struct eval_point {
  std::size_t step = 0;
  double val_loss = 0, val_accuracy = 0, seconds = 0;  // seconds: training time so far
};

/// One training run (one model, one seed).
struct run_result {
  double val_loss = 0, val_accuracy = 0, train_loss = 0, train_seconds = 0, eval_seconds = 0, tokens_per_s = 0,
         peak_rss_mib = 0;
  std::size_t steps_run = 0;
  std::vector<eval_point> curve;
  // MoE only: over the validation set, averaged over layers (and iterations).
  double load_max_over_mean = 0, load_cv = 0, dropped = 0;
  std::vector<std::vector<double>> load_share;  // per layer (and iteration), per expert: share of kept assignments
};

/// f(plan) for every plan the FFN of a block made in its last forward: one
/// for an moe::layer, one per iteration for a coe::layer, none for a dense FFN.
template <class Ffn, class F>
void for_each_plan(const Ffn& ffn, F&& f) {
  if constexpr (requires { ffn.last_routing(std::size_t{}); })
    for (std::size_t t = 0; t < ffn.iterations(); ++t) f(ffn.last_routing(t));
  else if constexpr (requires { ffn.last_routing(); })
    f(ffn.last_routing());
}

/// Validation loss (nats per scored character) and accuracy over
/// non-overlapping windows; for an MoE also its routing statistics there.
template <class M>
std::pair<double, double> evaluate(M& model, const tensor<index_t, shape<dyn>>& val, const training_options& o,
                                   run_result* r) {
  no_grad guard;
  model.train(false);
  const auto seq = static_cast<std::size_t>(o.seq), batch = static_cast<std::size_t>(o.batch);
  std::size_t windows = (val.size() - 1) / seq;
  if (o.eval_tokens > 0)
    windows = std::min(windows, std::max<std::size_t>(1, static_cast<std::size_t>(o.eval_tokens) / seq));
  std::vector<moe::routing_stats> routing;
  double sum = 0;
  std::size_t count = 0, correct = 0;
  for (std::size_t w = 0; w < windows; w += batch) {
    std::vector<std::size_t> starts;
    for (std::size_t i = w; i < std::min(windows, w + batch); ++i) starts.push_back(i * seq);
    const auto b = make_char_batch(val, starts, seq);
    std::vector<index_t> rows;  // the scored positions
    for (std::size_t i = 0; i < b.targets.size(); ++i)
      if (o.score_after < 0 || b.inputs.data()[i] == o.score_after) rows.push_back(static_cast<index_t>(i));
    if (rows.empty()) continue;
    tensor<index_t, shape<dyn>> idx(shape<dyn>{rows.size()}), targets(shape<dyn>{rows.size()});
    for (std::size_t i = 0; i < rows.size(); ++i) idx[i] = rows[i], targets[i] = b.targets[static_cast<std::size_t>(rows[i])];
    tape t;
    auto logits = gather_rows(model(b.inputs), idx);  // (scored, vocabulary)
    const auto loss = cross_entropy(logits, targets);
    sum += static_cast<double>(loss.value().template to<cpu>()[0]) * static_cast<double>(rows.size());
    count += rows.size();
    const auto best = argmax(logits.value()).template to<cpu>();  // (scored)
    for (std::size_t i = 0; i < rows.size(); ++i) correct += best[i] == targets[i];
    if (r) {
      std::size_t p = 0;
      for (std::size_t l = 0; l < model.layers(); ++l)
        for_each_plan(model.ffn(l), [&](const auto& plan) {
          if (routing.size() <= p) routing.emplace_back();
          routing[p++].add(plan);
        });
    }
  }
  if (count == 0) throw value_error("evaluate: no validation target follows the scored character");
  if (r && !routing.empty()) {
    r->load_max_over_mean = r->load_cv = r->dropped = 0;
    r->load_share.clear();
    const auto n = static_cast<double>(routing.size());
    for (const auto& st : routing) {
      const auto lb = st.load_balance();
      r->load_max_over_mean += lb.max_over_mean / n;
      r->load_cv += lb.cv / n;
      r->dropped += static_cast<double>(st.dropped()) / static_cast<double>(st.dropped() + st.assignments()) / n;
      std::vector<double> share;
      for (auto c : st.counts()) share.push_back(static_cast<double>(c) / static_cast<double>(st.assignments()));
      r->load_share.push_back(std::move(share));
    }
  }
  model.train(true);
  return {sum / static_cast<double>(count), static_cast<double>(correct) / static_cast<double>(count)};
}

/// AdamW over every parameter of `model`, weight decay on matrices only
/// (biases, norms and other vectors take none).
template <class M>
optim::adamw<float, cpu> adamw_for(M& model, double lr, double weight_decay) {
  using opt_t = optim::adamw<float, cpu>;
  auto [vectors, matrices] = optim::split_groups(parameter_views<float, cpu>(model), [](const auto& p) {
    return p.extents.size() < 2;
  });
  std::vector<opt_t::group_spec> groups;
  groups.push_back({std::move(matrices), {.lr = lr, .weight_decay = weight_decay}});
  groups.push_back({std::move(vectors), {.lr = lr, .weight_decay = 0}});
  return opt_t(std::move(groups));
}

/// Linear warm-up and cosine decay over o.steps (o: steps, warmup, min_lr_factor).
template <class O>
optim::cosine_schedule cosine_for(const O& o) {
  const auto total = static_cast<std::size_t>(o.steps);
  return optim::cosine_schedule({.total_steps = total,
                                 .warmup_steps = std::min(total, static_cast<std::size_t>(o.warmup)),
                                 .min_factor = o.min_lr_factor});
}

/// Trains `model` (seed `seed`) and evaluates it on data.val. `meta` goes
/// into checkpoints and must match the one a resumed checkpoint carries.
/// How train() spreads a step over processes: one process (this), or
/// char_lm's data + expert parallel group (--ranks), with the same members.
struct single_process {
  std::size_t rank() const noexcept { return 0; }
  std::size_t ranks() const noexcept { return 1; }
  bool prints() const noexcept { return true; }
  template <class M>
  void synchronize(M&) const noexcept {}
  template <class M, class O>
  double clip(M&, O& opt, double max_norm) const { return optim::clip_grad_norm(opt, max_norm); }
  double mean(double v) const noexcept { return v; }
  template <class M, class O>
  void save(const std::string& path, M& model, const O& opt, const io::metadata_map& m) const {
    io::save_checkpoint(path, model, opt, m);
  }
  template <class M, class O>
  io::metadata_map load(const std::string& path, M& model, O& opt) const {
    return io::load_checkpoint(path, model, opt);
  }
};

/// Trains `model` for o.steps; with a process group of P ranks each rank
/// takes its 1/P of every step's windows (o.batch must divide by P), and the
/// group synchronises gradients, clips by the global norm and averages the
/// logged loss.
template <class M, class Group = single_process>
run_result train(const training_options& o, M& model, const std::string& name, int seed, const io::text_split& data,
                 const io::metadata_map& meta, const Group& group = {}) {
  auto opt = adamw_for(model, o.lr, o.weight_decay);
  const auto total = static_cast<std::size_t>(o.steps);
  const auto schedule = cosine_for(o);
  if (!o.resume.empty()) {
    const auto saved = group.load(o.resume, model, opt);
    for (const auto& [key, value] : meta)
      if (!saved.contains(key) || saved.at(key) != value)
        throw value_error("--resume: " + o.resume + " was written with " + key + " = " +
                          (saved.contains(key) ? saved.at(key) : "(none)") + ", this run has " + value);
    if (group.prints())
      std::fprintf(stderr, "%s: resumed from %s at step %zu\n", name.c_str(), o.resume.c_str(), opt.steps());
  }
  auto save = [&] {
    if (o.save.empty()) return;
    auto m = meta;
    m["step"] = std::to_string(opt.steps());
    group.save(o.save, model, opt, m);
  };

  const auto seq = static_cast<std::size_t>(o.seq), batch = static_cast<std::size_t>(o.batch);
  const std::size_t stop = o.stop_after > 0 ? std::min(total, static_cast<std::size_t>(o.stop_after)) : total;
  run_result r;
  std::vector<double> losses;
  const auto t0 = std::chrono::steady_clock::now();
  double last_report = -1, eval_seconds = 0;
  auto curve_point = [&](bool newline_before) {
    const auto te = std::chrono::steady_clock::now();
    const auto [v, acc] = evaluate(model, data.val, o, nullptr);
    const double trained = seconds_since(t0) - eval_seconds;
    eval_seconds += seconds_since(te);
    r.curve.push_back({opt.steps(), v, acc, trained});
    if (group.prints())
      std::fprintf(stderr, "%s%-14s seed %d  step %5zu  val loss %.4f (%.3f bits)  accuracy %.3f%20s\n",
                 newline_before ? "\n" : "\r", name.c_str(), seed, opt.steps(), v, v / std::log(2.0), acc, "");
  };
  if (o.eval_every > 0 && opt.steps() == 0) curve_point(false);
  while (opt.steps() < stop) {
    const std::size_t step = opt.steps();
    rng g(static_cast<std::uint64_t>(seed), (static_cast<std::uint64_t>(step) + 1) << 32);  // this step's own stream
    const auto starts = random_starts(g, data.train.size(), seq, batch);
    const auto part = batch / group.ranks(), first = group.rank() * part;  // this rank's windows
    const auto b = make_char_batch(data.train, {starts.begin() + static_cast<std::ptrdiff_t>(first),
                                                starts.begin() + static_cast<std::ptrdiff_t>(first + part)}, seq);
    optim::set_lr_factor(opt, schedule(step));
    opt.zero_grad();
    tape t;
    auto loss = cross_entropy(model(b.inputs), b.targets);
    t.backward(loss);
    group.synchronize(model);
    if (o.clip > 0) group.clip(model, opt, o.clip);
    opt.step();
    losses.push_back(group.mean(static_cast<double>(loss.value()[0])));
    ++r.steps_run;
    if (o.save_every > 0 && opt.steps() % static_cast<std::size_t>(o.save_every) == 0) save();
    const double elapsed = seconds_since(t0) - eval_seconds;
    if (group.prints() && (elapsed - last_report >= 1.0 || opt.steps() == stop)) {
      last_report = elapsed;
      const std::size_t k = std::min<std::size_t>(losses.size(), 20);
      double recent = 0;
      for (std::size_t i = losses.size() - k; i < losses.size(); ++i) recent += losses[i] / static_cast<double>(k);
      std::fprintf(stderr, "\r%-14s seed %d  step %zu/%zu  loss %.4f  %.0f tokens/s  %.0f s   ", name.c_str(), seed,
                   opt.steps(), total, recent, static_cast<double>(r.steps_run * batch * seq) / elapsed, elapsed);
    }
    if (o.eval_every > 0 && opt.steps() % static_cast<std::size_t>(o.eval_every) == 0 && opt.steps() < stop)
      curve_point(true);
  }
  r.train_seconds = seconds_since(t0) - eval_seconds;
  if (o.stop_after > 0 || o.save_every <= 0 || opt.steps() % static_cast<std::size_t>(o.save_every) != 0) save();
  if (group.prints()) std::fprintf(stderr, "\n");
  r.tokens_per_s = r.train_seconds > 0 ? static_cast<double>(r.steps_run * batch * seq) / r.train_seconds : 0;
  const std::size_t k = std::min<std::size_t>(losses.size(), 50);
  for (std::size_t i = losses.size() - k; i < losses.size(); ++i) r.train_loss += losses[i] / static_cast<double>(k);
  const auto te = std::chrono::steady_clock::now();
  std::tie(r.val_loss, r.val_accuracy) = evaluate(model, data.val, o, &r);
  r.eval_seconds = seconds_since(te);
  r.curve.push_back({opt.steps(), r.val_loss, r.val_accuracy, r.train_seconds});
  return r;
}

}  // namespace moekit::examples

// uoe — does Union-of-Experts beat dense and MoE transformers at the same
// forward FLOPs per token? Two small tasks, several seeds each:
//
//   text     a character LM on tinyshakespeare (char_lm's model: pre-norm
//            decoder, causal attention with RoPE at the original positions);
//            metric: validation loss (nats and bits per character)
//   fashion  a ViT-style classifier of Fashion-MNIST cut into 4 × 4 patches
//            (49 tokens; examples/common/patch_classifier.hpp: patch embedding,
//            learned positions, non-causal attention, mean pool, linear head);
//            metric: accuracy on a fixed subset of the test set
//
// Variants (--variants, default all):
//
//   dense          multi-head attention + the dense FFN d -> ff -> d (ff = 4·d)
//   switch         + Switch top-1 over --experts experts of ff (capacity 1.25)
//   gshard         + GShard top-2 over --experts experts of ff/2 (capacity 2)
//   deepseek       + DeepSeek-style: --experts·--granularity fine experts of ff/m, top-(m−s) + s shared
//   uoe_faithful   UoE block: selective multi-head attention (heads = attention experts,
//                  each keeping --attn-capacity of a sample's tokens among those that marked
//                  it in their --attn-top-k) + UoME (--uoe-experts MLP slices, top-k marks,
//                  each keeping --capacity of a sample's tokens; data paradigm); gates only
//                  select (the paper's code: the routers never train)
//   uoe_gated      the same, outputs weighted by the gates (the routers train)
//   uoe_causal     the same, each expert keeping the first tokens that marked it (arrival
//                  order): the only mode whose selection does not look at later tokens
//
// The baselines (moe/baselines.hpp) match the dense FFN's active expert
// weights. The UoE variants are matched on the WHOLE model's forward FLOPs per
// token, counted from the shapes (uoe/spec.hpp, moe::cost_of: 2 per
// multiply-add of every matrix product, attention scores included, the
// routers included; norms, softmax and activations not): selective attention
// and half-capacity experts cost about half of the dense layers, so the UoME's
// hidden width (--uoe-ff, 0: chosen here) is widened until the model's FLOPs
// per token equal the mean of the four baselines' (within a slice width's
// rounding; the table prints every variant's FLOPs and its ratio to dense).
//
// NOT causal: uoe_faithful and uoe_gated select by scores over the whole
// sequence (and batch), later tokens included, so on the text task their loss
// is not a fair language-model loss: the table marks them. On Fashion-MNIST
// nothing is causal (the attention sees every patch) and uoe_causal's arrival
// order is the patches' raster order; it runs there for completeness only.
//
//   build/bin/uoe                                   # both tasks, all variants, 3 seeds
//   build/bin/uoe --task text --variants dense,uoe_causal --seeds 1 --steps 100
//   build/bin/uoe --task fashion --csv runs.csv > table.txt
//
// Output: a progress line on stderr; per task a table on stdout (metric mean ±
// std over seeds, FLOPs per token and their ratio to dense, parameters,
// training tokens/s, causal), the per-seed differences of every UoE variant
// against the best baseline, and a one-line verdict; per-run rows in --csv;
// the last stdout line is one JSON object.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/io/idx.hpp>
#include <moekit/io/text.hpp>
#include <moekit/moe.hpp>
#include <moekit/moe/baselines.hpp>
#include <moekit/uoe.hpp>

#include "common/char_model.hpp"
#include "common/char_training.hpp"
#include "common/flags.hpp"
#include "common/output_path.hpp"
#include "common/runtime_settings.hpp"
#include "common/patch_classifier.hpp"

using namespace moekit;

namespace {

const std::string default_data = examples::default_text_path();

const std::vector<std::string> all_variants = {"dense", "switch", "gshard", "deepseek",
                                               "uoe_faithful", "uoe_gated", "uoe_causal"};
const std::vector<std::string> baseline_variants = {"dense", "switch", "gshard", "deepseek"};

struct options : examples::training_options {
  options() { steps = 400, batch = 16, seq = 64, warmup = 30, eval_tokens = 16384; }
  std::string task = "all", data = default_data, fashion = io::fashion_mnist_dir.string(), variants = "all", csv;
  int d_model = 64, layers = 2, heads = 4;
  int experts = 8, granularity = 4, shared = 1;                        // baselines
  int uoe_experts = 4, uoe_top_k = 2, attn_top_k = 2, uoe_ff = 0;      // UoE
  double capacity = 0.5, attn_capacity = 0.5, uoe_balance = 0.01;
  int fashion_steps = 200, fashion_batch = 64, patch = 4, eval_images = 2000;
  int seeds = 3, seed = 0, threads = 1;
  double max_loss = 0, min_accuracy = 0;
};

bool is_uoe(const std::string& v) { return v.rfind("uoe_", 0) == 0; }

uoe::mode mode_of(const std::string& v) {
  return v == "uoe_gated" ? uoe::mode::gated : v == "uoe_causal" ? uoe::mode::causal : uoe::mode::faithful;
}

/// One task's setting: tokens per sample and the FLOPs the baselines spend.
struct task_shape {
  std::string task;
  std::size_t seq = 0;  // tokens per sample: characters per window, or patches per image
};

/// The UoE selections of a variant (the routers of faithful mode never train: no balance loss).
uoe::selection_options attention_select(const options& o, uoe::mode m) {
  return {.mode = m, .top_k = static_cast<std::size_t>(o.attn_top_k), .capacity = o.attn_capacity,
          .balance_weight = m == uoe::mode::faithful ? 0 : o.uoe_balance};
}
uoe::uome_options uome_options_of(const options& o, uoe::mode m, std::size_t fe) {
  return {.d_model = static_cast<std::size_t>(o.d_model), .d_ff = fe * static_cast<std::size_t>(o.uoe_experts),
          .experts = static_cast<std::size_t>(o.uoe_experts), .paradigm = uoe::paradigm::data,
          .select = {.mode = m, .top_k = static_cast<std::size_t>(o.uoe_top_k), .capacity = o.capacity,
                     .balance_weight = m == uoe::mode::faithful ? 0 : o.uoe_balance}};
}
uoe::smha_options smha_options_of(const options& o, uoe::mode m, bool causal) {
  return {.d_model = static_cast<std::size_t>(o.d_model), .heads = static_cast<std::size_t>(o.heads),
          .select = attention_select(o, m), .causal = causal, .rope = causal};
}

moe::baseline_spec spec_of(const options& o) {
  return {.d_model = static_cast<std::size_t>(o.d_model), .d_ff = 4 * static_cast<std::size_t>(o.d_model),
          .experts = static_cast<std::size_t>(o.experts), .granularity = static_cast<std::size_t>(o.granularity),
          .shared_experts = static_cast<std::size_t>(o.shared)};
}

moe::baseline baseline_of(const std::string& v) {
  return v == "switch" ? moe::baseline::switch_top1 : v == "gshard" ? moe::baseline::gshard_top2 : moe::baseline::deepseek;
}

/// One FFN's cost in variant v (UoE: the UoME of slice width fe).
moe::moe_cost ffn_cost(const options& o, const std::string& v, std::size_t seq, std::size_t fe) {
  const auto s = spec_of(o);
  if (v == "dense") return moe::dense_ffn_cost(s.d_model, s.d_ff);
  if (is_uoe(v)) return uoe::cost_of(uome_options_of(o, mode_of(v), fe), seq);
  return moe::cost_of(moe::baseline_layout_of(baseline_of(v), s));
}

/// One block's attention cost: multi-head attention (4 projections, scores and
/// values over all seq keys) or, for UoE, selective attention.
moe::moe_cost attention_cost(const options& o, const std::string& v, std::size_t seq) {
  const auto d = static_cast<std::size_t>(o.d_model);
  if (is_uoe(v)) return uoe::cost_of(smha_options_of(o, mode_of(v), false), seq);
  const std::size_t p = 4 * d * d + 4 * d;
  return {p, p, 2 * 4 * d * d + 2 * 2 * seq * d, 0};
}

/// Forward FLOPs per token of the whole model of variant v.
double flops_per_token(const options& o, const task_shape& t, const std::string& v, std::size_t fe,
                       std::size_t vocabulary) {
  const auto d = static_cast<double>(o.d_model), layers = static_cast<double>(o.layers);
  const auto a = attention_cost(o, v, t.seq);
  const auto f = ffn_cost(o, v, t.seq, fe);
  const double blocks = layers * static_cast<double>(a.expert_flops + a.router_flops + f.expert_flops + f.router_flops);
  if (t.task == "text") return blocks + 2 * d * static_cast<double>(vocabulary);  // embedding lookup: no product
  const examples::patch_model_config c{.patch = static_cast<std::size_t>(o.patch), .d_model = static_cast<std::size_t>(o.d_model)};
  return blocks + static_cast<double>(examples::patch_outer_flops_per_image(c)) / static_cast<double>(t.seq);
}

/// The UoME slice width that brings the UoE model's FLOPs per token closest
/// to the mean of the baselines' (--uoe-ff / --uoe-experts when given).
std::size_t matched_slice_width(const options& o, const task_shape& t, std::size_t vocabulary) {
  if (o.uoe_ff > 0) return static_cast<std::size_t>(o.uoe_ff / o.uoe_experts);
  double target = 0;
  for (const auto& b : baseline_variants) target += flops_per_token(o, t, b, 0, vocabulary) / baseline_variants.size();
  const double at0 = flops_per_token(o, t, "uoe_causal", 0, vocabulary);
  const double per_unit = static_cast<double>(o.layers) *
                          uoe::slots_per_token(static_cast<std::size_t>(o.uoe_experts),
                                               uome_options_of(o, uoe::mode::causal, 1).select, t.seq) *
                          4 * o.d_model;  // 2·2·d per slice column per slot
  return static_cast<std::size_t>(std::max(1.0, std::round((target - at0) / per_unit)));
}

struct variant_result {
  std::string name;
  bool causal = true;
  double flops = 0;
  std::size_t total_params = 0, uoe_ff = 0;
  std::vector<examples::run_result> runs;
};

struct task_result {
  std::string task;
  std::size_t seq = 0;
  std::vector<variant_result> rows;
};

/// Fashion-MNIST, or an io_error that says how to get it.
examples::image_set load_fashion(const std::string& dir, const std::string& split) {
  for (const char* kind : {"-images-idx3-ubyte.gz", "-labels-idx1-ubyte.gz"})
    if (!std::filesystem::exists(std::filesystem::path(dir) / (split + kind)))
      throw io_error("Fashion-MNIST not found: " + (std::filesystem::path(dir) / (split + kind)).string() +
                     " is missing. Install it with `apt-get install dataset-fashion-mnist` or pass --fashion DIR");
  auto d = io::load_fashion_mnist<float>(dir, split);
  return {d.images, d.labels};
}

/// Trains every variant for every seed on the text task.
task_result run_text(const options& o, const std::vector<std::string>& names) {
  if (o.data.empty()) throw value_error("--data FILE is required for --task text");
  const auto text = io::load_text(o.data);
  const auto data = io::split_text(text, 0.1);
  const std::size_t vocab = text.vocabulary_size(), seq = static_cast<std::size_t>(o.seq);
  if (data.val.size() < seq + 1 || data.train.size() < seq + 2)
    throw value_error(o.data + ": too short for windows of --seq " + std::to_string(o.seq));
  const task_shape t{"text", seq};
  const std::size_t fe = matched_slice_width(o, t, vocab);
  std::printf("text: %s, %zu characters, vocabulary %zu; seq %d, batch %d, %d steps, validation on %d characters\n",
              text.path.filename().string().c_str(), text.size(), vocab, o.seq, o.batch, o.steps, o.eval_tokens);
  std::fflush(stdout);
  task_result res{"text", seq, {}};
  const auto spec = spec_of(o);
  for (const auto& v : names) {
    variant_result m{.name = v, .causal = !is_uoe(v) || mode_of(v) == uoe::mode::causal,
                     .flops = flops_per_token(o, t, v, fe, vocab), .uoe_ff = is_uoe(v) ? fe * o.uoe_experts : 0, .runs = {}};
    examples::char_model_config c{.vocabulary = vocab, .d_model = static_cast<std::size_t>(o.d_model),
                                  .layers = static_cast<std::size_t>(o.layers), .heads = static_cast<std::size_t>(o.heads)};
    for (int s = 0; s < o.seeds; ++s) {
      const int seed = o.seed + s;
      rng g(static_cast<std::uint64_t>(seed));
      const io::metadata_map meta{{"example", "uoe"}, {"variant", v}};
      auto go = [&](auto& model) {
        m.total_params = count_parameters(model);
        return examples::train(o, model, v, seed, data, meta);
      };
      examples::run_result r;
      if (v == "dense") {
        examples::char_transformer<examples::dense_ffn<>> model(
            g, c, [&](rng& gg, std::size_t) { return examples::dense_ffn<>(gg, spec.d_model, spec.d_ff); });
        r = go(model);
      } else if (is_uoe(v)) {
        c.smha_select = attention_select(o, mode_of(v));
        const auto u = uome_options_of(o, mode_of(v), fe);
        examples::char_uoe_transformer<uoe::uome<>> model(g, c, [&](rng& gg, std::size_t) { return uoe::uome<>(gg, u); });
        r = go(model);
      } else {
        const auto layout = moe::baseline_layout_of(baseline_of(v), spec);
        examples::char_transformer<moe::token_choice_moe<>> model(
            g, c, [&](rng& gg, std::size_t) { return moe::make_token_choice<float>(gg, layout); });
        r = go(model);
      }
      std::fprintf(stderr, "text    %-13s seed %d  val loss %.4f (%.3f bits/char)  %.0f tokens/s  %.1f s\n", v.c_str(),
                   seed, r.val_loss, r.val_loss / std::log(2.0), r.tokens_per_s, r.train_seconds);
      m.runs.push_back(std::move(r));
    }
    res.rows.push_back(std::move(m));
  }
  return res;
}

/// Trains every variant for every seed on the fashion task.
task_result run_fashion(const options& o, const std::vector<std::string>& names) {
  const auto train_set = load_fashion(o.fashion, "train");
  const auto test = load_fashion(o.fashion, "t10k");
  const examples::patch_model_config c{.patch = static_cast<std::size_t>(o.patch),
                                       .d_model = static_cast<std::size_t>(o.d_model),
                                       .layers = static_cast<std::size_t>(o.layers)};
  const task_shape t{"fashion", c.tokens()};
  const std::size_t fe = matched_slice_width(o, t, 0);
  const examples::classifier_options co{.steps = o.fashion_steps, .batch = o.fashion_batch, .warmup = o.warmup,
                                        .eval_images = o.eval_images, .lr = o.lr, .weight_decay = o.weight_decay,
                                        .min_lr_factor = o.min_lr_factor, .clip = o.clip};
  std::printf("fashion: Fashion-MNIST (%zu train / first %d of %zu test images), %d x %d patches -> %zu tokens; "
              "batch %d, %d steps\n",
              train_set.size(), std::min<int>(o.eval_images, static_cast<int>(test.size())), test.size(), o.patch,
              o.patch, c.tokens(), o.fashion_batch, o.fashion_steps);
  std::fflush(stdout);
  task_result res{"fashion", c.tokens(), {}};
  const auto spec = spec_of(o);
  const auto d = static_cast<std::size_t>(o.d_model), heads = static_cast<std::size_t>(o.heads);
  for (const auto& v : names) {
    variant_result m{.name = v, .causal = false, .flops = flops_per_token(o, t, v, fe, 0),
                     .uoe_ff = is_uoe(v) ? fe * o.uoe_experts : 0, .runs = {}};
    for (int s = 0; s < o.seeds; ++s) {
      const int seed = o.seed + s;
      rng g(static_cast<std::uint64_t>(seed));
      auto go = [&](auto& model) {
        m.total_params = count_parameters(model);
        return examples::train_classifier(co, model, v, seed, train_set, test);
      };
      examples::run_result r;
      if (v == "dense") {
        using block_t = moe::transformer_block<examples::dense_ffn<>>;
        examples::patch_classifier<block_t> model(g, c, [&](rng& gg, std::size_t) {
          return block_t(gg, d, heads, examples::dense_ffn<>(gg, spec.d_model, spec.d_ff));
        });
        r = go(model);
      } else if (is_uoe(v)) {
        using block_t = uoe::block<uoe::uome<>>;
        const auto u = uome_options_of(o, mode_of(v), fe);
        const auto a = smha_options_of(o, mode_of(v), false);
        examples::patch_classifier<block_t> model(g, c, [&](rng& gg, std::size_t) {
          return block_t(gg, a, uoe::uome<>(gg, u));
        });
        r = go(model);
      } else {
        using block_t = moe::transformer_block<moe::token_choice_moe<>>;
        const auto layout = moe::baseline_layout_of(baseline_of(v), spec);
        examples::patch_classifier<block_t> model(g, c, [&](rng& gg, std::size_t) {
          return block_t(gg, d, heads, moe::make_token_choice<float>(gg, layout));
        });
        r = go(model);
      }
      std::fprintf(stderr, "fashion %-13s seed %d  test accuracy %.4f  loss %.4f  %.0f tokens/s  %.1f s\n", v.c_str(),
                   seed, r.val_accuracy, r.val_loss, r.tokens_per_s, r.train_seconds);
      m.runs.push_back(std::move(r));
    }
    res.rows.push_back(std::move(m));
  }
  return res;
}

/// The task's metric of one run, and whether larger is better.
double metric(const task_result& t, const examples::run_result& r) {
  return t.task == "text" ? r.val_loss : r.val_accuracy;
}
bool higher_is_better(const task_result& t) { return t.task != "text"; }

/// Paired per-seed differences of one UoE variant against the best baseline.
struct paired {
  std::string variant, baseline, verdict;
  std::vector<double> diffs;  // uoe − baseline, per seed (text: loss, lower is better; fashion: accuracy)
  double mean = 0, std = 0;
  int wins = 0;
};

std::vector<paired> compare(const task_result& t, std::string& best_name) {
  std::vector<paired> out;
  const variant_result* best = nullptr;
  double best_mean = 0;
  const bool up = higher_is_better(t);
  for (const auto& m : t.rows) {
    if (is_uoe(m.name)) continue;
    const double mean = examples::mean_std::of(m.runs, [&](const auto& r) { return metric(t, r); }).mean;
    if (!best || (up ? mean > best_mean : mean < best_mean)) best = &m, best_mean = mean;
  }
  best_name = best ? best->name : "";
  if (!best) return out;
  for (const auto& m : t.rows) {
    if (!is_uoe(m.name)) continue;
    paired p;
    p.variant = m.name, p.baseline = best->name;
    const std::size_t n = std::min(m.runs.size(), best->runs.size());
    for (std::size_t s = 0; s < n; ++s) {
      const double dlt = metric(t, m.runs[s]) - metric(t, best->runs[s]);
      p.diffs.push_back(dlt);
      p.wins += up ? dlt > 0 : dlt < 0;
    }
    const auto ms = examples::mean_std::of(p.diffs, [](double x) { return x; });
    p.mean = ms.mean, p.std = ms.std;
    const bool better = up ? p.mean > 0 : p.mean < 0;
    p.verdict = static_cast<std::size_t>(p.wins) == n && n > 0 ? "beats"
                : p.wins == 0                                   ? "loses to"
                : better                                        ? "is better on average (not on every seed) than"
                                                                : "is worse on average (not on every seed) than";
    out.push_back(p);
  }
  return out;
}

void print_table(const options& o, const task_result& t) {
  using examples::mean_std;
  const bool text = t.task == "text";
  double dense_flops = 0;
  for (const auto& m : t.rows)
    if (m.name == "dense") dense_flops = m.flops;
  std::printf("\n%s (%zu tokens per sample, %d seeds)\n", text ? "tiny Shakespeare, character LM" : "Fashion-MNIST, 4x4 patches",
              t.seq, o.seeds);
  std::printf("%-13s %17s %17s %13s %9s %10s %9s %10s %7s\n", "variant", text ? "val loss (nats)" : "test accuracy",
              text ? "bits/char" : "test loss", "FLOPs/token", "x dense", "params", "UoME ff", "tokens/s", "causal");
  for (const auto& m : t.rows) {
    const auto loss = mean_std::of(m.runs, [](const auto& r) { return r.val_loss; });
    const auto acc = mean_std::of(m.runs, [](const auto& r) { return r.val_accuracy; });
    const auto tps = mean_std::of(m.runs, [](const auto& r) { return r.tokens_per_s; });
    char a[48], b[48], ratio[32] = "-", ff[32] = "-";
    if (text) {
      std::snprintf(a, sizeof a, "%.4f ± %.4f", loss.mean, loss.std);
      std::snprintf(b, sizeof b, "%.3f ± %.3f", loss.mean / std::log(2.0), loss.std / std::log(2.0));
    } else {
      std::snprintf(a, sizeof a, "%.4f ± %.4f", acc.mean, acc.std);
      std::snprintf(b, sizeof b, "%.4f ± %.4f", loss.mean, loss.std);
    }
    if (dense_flops > 0) std::snprintf(ratio, sizeof ratio, "%.3f", m.flops / dense_flops);
    if (m.uoe_ff) std::snprintf(ff, sizeof ff, "%zu", m.uoe_ff);
    std::printf("%-13s %17s %17s %13.0f %9s %10zu %9s %10.0f %7s\n", m.name.c_str(), a, b, m.flops, ratio,
                m.total_params, ff, tps.mean, text ? (m.causal ? "yes" : "NO") : "n/a");
  }
  std::string best;
  const auto pairs = compare(t, best);
  if (!pairs.empty()) {
    std::printf("paired per-seed differences against the best baseline, %s (%s):\n", best.c_str(),
                text ? "val loss, negative = UoE better" : "accuracy, positive = UoE better");
    for (const auto& p : pairs) {
      std::printf("  %-13s", p.variant.c_str());
      for (std::size_t s = 0; s < p.diffs.size(); ++s) std::printf(" seed %d %+.4f", o.seed + static_cast<int>(s), p.diffs[s]);
      std::printf("   mean %+.4f ± %.4f   better on %d of %zu seeds\n", p.mean, p.std, p.wins, p.diffs.size());
    }
    for (const auto& p : pairs)
      std::printf("verdict: %s %s %s at %.3fx its FLOPs per token%s\n", p.variant.c_str(), p.verdict.c_str(),
                  p.baseline.c_str(),
                  [&] {
                    double bf = 1, uf = 1;
                    for (const auto& m : t.rows) {
                      if (m.name == p.baseline) bf = m.flops;
                      if (m.name == p.variant) uf = m.flops;
                    }
                    return uf / bf;
                  }(),
                  text && mode_of(p.variant) != uoe::mode::causal ? " (not causal: its loss sees later tokens)" : "");
  }
  if (text)
    std::printf("causal NO: the selection of tokens looks at later tokens of the sequence (and at the other sequences "
                "of the batch), so the loss is not a fair language-model loss\n");
  else
    std::printf("fashion: attention sees every patch; uoe_causal keeps patches in raster order (run for completeness)\n");
}

void print_json_task(const task_result& t, const options& o, bool first) {
  std::string best;
  const auto pairs = compare(t, best);
  std::printf("%s{\"task\": \"%s\", \"tokens_per_sample\": %zu, \"metric\": \"%s\", \"best_baseline\": \"%s\", \"rows\": [",
              first ? "" : ", ", t.task.c_str(), t.seq, t.task == "text" ? "val_loss" : "accuracy", best.c_str());
  double dense_flops = 0;
  for (const auto& m : t.rows)
    if (m.name == "dense") dense_flops = m.flops;
  for (std::size_t i = 0; i < t.rows.size(); ++i) {
    const auto& m = t.rows[i];
    const auto ms = examples::mean_std::of(m.runs, [&](const auto& r) { return metric(t, r); });
    std::printf("%s{\"variant\": \"%s\", \"causal\": %s, \"flops_per_token\": %.1f, \"flops_vs_dense\": %.4f, "
                "\"total_params\": %zu, \"uoe_ff\": %zu, \"metric_mean\": %.5f, \"metric_std\": %.5f, \"runs\": [",
                i ? ", " : "", m.name.c_str(), t.task == "text" && m.causal ? "true" : "false", m.flops,
                dense_flops > 0 ? m.flops / dense_flops : 0.0, m.total_params, m.uoe_ff, ms.mean, ms.std);
    for (std::size_t s = 0; s < m.runs.size(); ++s) {
      const auto& r = m.runs[s];
      std::printf("%s{\"seed\": %d, \"val_loss\": %.5f, \"val_accuracy\": %.5f, \"final_train_loss\": %.5f, "
                  "\"tokens_per_s\": %.1f, \"train_seconds\": %.2f}",
                  s ? ", " : "", o.seed + static_cast<int>(s), r.val_loss, r.val_accuracy, r.train_loss, r.tokens_per_s,
                  r.train_seconds);
    }
    std::printf("]}");
  }
  std::printf("], \"paired\": [");
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const auto& p = pairs[i];
    std::printf("%s{\"variant\": \"%s\", \"baseline\": \"%s\", \"diffs\": [", i ? ", " : "", p.variant.c_str(),
                p.baseline.c_str());
    for (std::size_t s = 0; s < p.diffs.size(); ++s) std::printf("%s%.5f", s ? ", " : "", p.diffs[s]);
    std::printf("], \"mean\": %.5f, \"std\": %.5f, \"better_seeds\": %d, \"verdict\": \"%s\"}", p.mean, p.std, p.wins,
                p.verdict.c_str());
  }
  std::printf("]}");
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("uoe",
            "Union-of-Experts (selective multi-head attention + UoME, in the paper's faithful mode, gated, and\n"
            "causal) against dense, Switch, GShard and DeepSeek-style transformers at matched forward FLOPs per\n"
            "token (counted from the shapes), on tiny Shakespeare (character LM) and Fashion-MNIST patches\n"
            "(ViT-style classifier); several seeds; a table per task, paired per-seed differences against the best\n"
            "baseline and a verdict, per-run rows in --csv, a JSON last line.\n"
            "uoe_faithful and uoe_gated are NOT causal on text (the selection sees later tokens); the table marks them.");
  cli.add("task", o.task, "text, fashion, or all");
  cli.add("variants", o.variants, "comma list of dense, switch, gshard, deepseek, uoe_faithful, uoe_gated, uoe_causal; or all");
  cli.add("data", o.data, "text file for the text task (tinyshakespeare)");
  cli.add("fashion", o.fashion, "Fashion-MNIST directory (apt-get install dataset-fashion-mnist)");
  cli.add("d-model", o.d_model, "model width (both tasks)");
  cli.add("layers", o.layers, "transformer blocks");
  cli.add("heads", o.heads, "attention heads (= SMHA's attention experts); d-model / heads even");
  cli.add("experts", o.experts, "Switch / GShard experts; DeepSeek coarse experts");
  cli.add("granularity", o.granularity, "DeepSeek: fine experts per coarse expert");
  cli.add("shared", o.shared, "DeepSeek: shared fine experts");
  cli.add("uoe-experts", o.uoe_experts, "UoME: MLP slices (experts)");
  cli.add("uoe-top-k", o.uoe_top_k, "UoME: slices each token marks");
  cli.add("capacity", o.capacity, "UoME: fraction of each sample's tokens a slice keeps");
  cli.add("attn-top-k", o.attn_top_k, "SMHA: heads each token marks");
  cli.add("attn-capacity", o.attn_capacity, "SMHA: fraction of each sample's tokens a head keeps");
  cli.add("uoe-balance", o.uoe_balance, "gated and causal UoE: load-balance loss weight on the marks (faithful: none)");
  cli.add("uoe-ff", o.uoe_ff, "UoME hidden width (0: the width that matches the baselines' mean FLOPs per token)");
  cli.add("seq", o.seq, "text: characters per window");
  cli.add("batch", o.batch, "text: windows per step (and per validation batch)");
  cli.add("steps", o.steps, "text: training steps");
  cli.add("eval-tokens", o.eval_tokens, "text: validate on the first N validation characters (0: all)");
  cli.add("fashion-steps", o.fashion_steps, "fashion: training steps");
  cli.add("fashion-batch", o.fashion_batch, "fashion: images per step (and per evaluation batch)");
  cli.add("patch", o.patch, "fashion: patch side in pixels (must divide 28)");
  cli.add("eval-images", o.eval_images, "fashion: evaluate on the first N test images");
  cli.add("lr", o.lr, "AdamW peak learning rate");
  cli.add("warmup", o.warmup, "warm-up steps before the cosine decay");
  cli.add("seeds", o.seeds, "seeds per variant (--seed, --seed + 1, ...)");
  cli.add("seed", o.seed, "first seed (initialisation and batches)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("csv", o.csv, "write one row per run here (\"\": not at all)");
  cli.add("max-loss", o.max_loss, "exit 1 when a text run's validation loss is above this (0: no check)");
  cli.add("min-accuracy", o.min_accuracy, "exit 1 when a fashion run's test accuracy is below this (0: no check)");
  if (!cli.parse(argc, argv)) return 0;
  examples::print_blas_line();
  examples::require_writable_parent("--csv", o.csv);  // before any training
  if (o.d_model < 1 || o.layers < 1 || o.heads < 1 || o.seq < 1 || o.batch < 1 || o.steps < 1 || o.seeds < 1 ||
      o.threads < 1 || o.experts < 1 || o.granularity < 1 || o.uoe_experts < 1 || o.uoe_top_k < 1 || o.attn_top_k < 1 ||
      o.fashion_steps < 1 || o.fashion_batch < 1 || o.patch < 1 || o.eval_images < 1 || o.shared < 0 || o.uoe_ff < 0 ||
      o.eval_tokens < 0 || o.lr <= 0 || o.uoe_balance < 0)
    throw value_error("sizes and counts must be >= 1 (--shared, --uoe-ff, --eval-tokens, --uoe-balance >= 0), --lr > 0");
  if (o.d_model % o.heads != 0 || (o.d_model / o.heads) % 2 != 0)
    throw value_error("--d-model / --heads must be an even whole number (RoPE)");
  if (o.uoe_ff % o.uoe_experts != 0) throw value_error("--uoe-ff must be a multiple of --uoe-experts");
  if (28 % o.patch != 0) throw value_error("--patch must divide 28");
  if (o.task != "text" && o.task != "fashion" && o.task != "all")
    throw value_error("--task: '" + o.task + "' is not text, fashion or all");
  const auto names = o.variants == "all" ? all_variants : examples::split_list(o.variants);
  if (names.empty()) throw value_error("--variants: empty list");
  for (const auto& v : names) {
    if (std::find(all_variants.begin(), all_variants.end(), v) == all_variants.end())
      throw value_error("--variants: '" + v + "' is not one of " + "dense, switch, gshard, deepseek, uoe_faithful, uoe_gated, uoe_causal");
    if (is_uoe(v)) {
      const auto m = mode_of(v);
      for (std::size_t seq : {static_cast<std::size_t>(o.seq), static_cast<std::size_t>((28 / o.patch) * (28 / o.patch))}) {
        uoe::check_selection("UoME", uome_options_of(o, m, 1).select, static_cast<std::size_t>(o.uoe_experts), seq);
        uoe::check_selection("SMHA", attention_select(o, m), static_cast<std::size_t>(o.heads), seq);
      }
    } else if (v != "dense") moe::baseline_layout_of(baseline_of(v), spec_of(o));
  }
  set_num_threads(o.threads);
  const std::string blas = examples::blas_core_name();
  std::printf("uoe: d_model %d, %d layers, %d heads; baselines: %d experts (DeepSeek %d x %d, %d shared); UoE: SMHA "
              "top-%d heads, capacity %g; UoME %d slices, top-%d, capacity %g, data selection; %d seed(s), %d threads, "
              "BLAS core %s\n",
              o.d_model, o.layers, o.heads, o.experts, o.experts, o.granularity, o.shared, o.attn_top_k, o.attn_capacity,
              o.uoe_experts, o.uoe_top_k, o.capacity, o.seeds, o.threads, blas.c_str());
  std::fflush(stdout);

  std::vector<task_result> tasks;
  if (o.task == "text" || o.task == "all") tasks.push_back(run_text(o, names));
  if (o.task == "fashion" || o.task == "all") tasks.push_back(run_fashion(o, names));

  if (!o.csv.empty()) {
    std::ofstream csv(o.csv);
    if (!csv) throw io_error("--csv: cannot write " + o.csv);
    csv << "task,variant,seed,causal,flops_per_token,total_params,uoe_ff,val_loss,bits_per_char,accuracy,"
           "final_train_loss,tokens_per_s,train_seconds\n";
    for (const auto& t : tasks)
      for (const auto& m : t.rows)
        for (std::size_t s = 0; s < m.runs.size(); ++s) {
          const auto& r = m.runs[s];
          csv << t.task << ',' << m.name << ',' << o.seed + static_cast<int>(s) << ','
              << (t.task == "text" ? (m.causal ? "yes" : "no") : "n/a") << ',' << examples::num(m.flops) << ','
              << m.total_params << ',' << m.uoe_ff << ',' << examples::num(r.val_loss) << ','
              << (t.task == "text" ? examples::num(r.val_loss / std::log(2.0)) : "") << ','
              << (t.task == "text" ? "" : examples::num(r.val_accuracy)) << ',' << examples::num(r.train_loss) << ','
              << examples::num(r.tokens_per_s) << ',' << examples::num(r.train_seconds) << '\n';
        }
  }
  for (const auto& t : tasks) print_table(o, t);
  std::printf("FLOPs/token: forward, whole model, matrix products counted from the shapes (uoe/spec.hpp); "
              "UoE's UoME width is chosen to match the baselines' mean\n");

  std::printf("{\"example\": \"uoe\", \"d_model\": %d, \"layers\": %d, \"heads\": %d, \"experts\": %d, \"granularity\": %d, "
              "\"shared\": %d, \"uoe_experts\": %d, \"uoe_top_k\": %d, \"capacity\": %g, \"attn_top_k\": %d, "
              "\"attn_capacity\": %g, \"uoe_balance\": %g, \"seq\": %d, \"batch\": %d, \"steps\": %d, \"eval_tokens\": %d, "
              "\"fashion_steps\": %d, \"fashion_batch\": %d, \"patch\": %d, \"eval_images\": %d, \"lr\": %g, "
              "\"seeds\": %d, \"seed\": %d, \"threads\": %d, \"blas_core\": \"%s\", \"tasks\": [",
              o.d_model, o.layers, o.heads, o.experts, o.granularity, o.shared, o.uoe_experts, o.uoe_top_k, o.capacity,
              o.attn_top_k, o.attn_capacity, o.uoe_balance, o.seq, o.batch, o.steps, o.eval_tokens, o.fashion_steps,
              o.fashion_batch, o.patch, o.eval_images, o.lr, o.seeds, o.seed, o.threads, blas.c_str());
  for (std::size_t i = 0; i < tasks.size(); ++i) print_json_task(tasks[i], o, i == 0);
  std::printf("]}\n");

  int status = 0;
  for (const auto& t : tasks)
    for (const auto& m : t.rows)
      for (const auto& r : m.runs) {
        if (t.task == "text" && o.max_loss > 0 && r.val_loss > o.max_loss) {
          std::fprintf(stderr, "uoe: text %s validation loss %.4f is above --max-loss %.4f\n", m.name.c_str(), r.val_loss,
                       o.max_loss);
          status = 1;
        }
        if (t.task == "fashion" && o.min_accuracy > 0 && r.val_accuracy < o.min_accuracy) {
          std::fprintf(stderr, "uoe: fashion %s test accuracy %.4f is below --min-accuracy %.4f\n", m.name.c_str(),
                       r.val_accuracy, o.min_accuracy);
          status = 1;
        }
      }
  return status;
} catch (const moekit::error& e) {
  std::fprintf(stderr, "uoe: %s\n", e.what());
  return 2;
}

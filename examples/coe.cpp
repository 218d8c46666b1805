// coe — does Chain-of-Experts beat a plain MoE? The same small decoder-only
// character transformer as char_lm (causal attention with RoPE), whose FFN is
// the reference's CoE layer (coe/spec.hpp: SwiGLU experts, softmax top-K
// routers without renormalisation, sequence-level balance loss 0.001 per
// router per iteration, RMSNorm once before the loop, inner residual, no outer
// residual); an MoE is the same layer with one iteration. Variants, for the
// MoE's K = --k over one pool of --experts:
//
//   moe                MoE(K = k)             the baseline
//   coe                CoE(C = 2, K = k/2)    the same expert FLOPs as moe (the paper's headline)
//   coe_shared_router  CoE(C = 2, K = k/2), one router re-evaluated each iteration ("noig")
//   coe_no_inner       CoE(C = 2, K = k/2), no inner residual, outer residual on (the paper's I_r = 0)
//   coe_k              CoE(C = 2, K = k)      2 iterations ...
//   moe_2k             MoE(K = 2k)            ... against the same expert FLOPs in one iteration
//   moe_3k             MoE(K = 3k)            ... and against 3x the selections ("2 iterations match 3x")
//
// and, outside the paper's set (--variants all), the clean pre-norm placement
// (norm_placement::pre_norm: x(0) = the residual stream, each iteration
// normalises its own input, inner residual; a standard pre-norm block at C = 1):
//
//   moe_pre_norm       MoE(K = k), pre-norm
//   coe_pre_norm       CoE(C = 2, K = k/2), pre-norm
//
// Tasks: `text` (tinyshakespeare, or --data FILE) and `chain`, a generated
// multi-step task where each step depends on the last: records like
// "7+3*4-2=8;" (digits mod 10, --chain-steps operations, applied left to
// right), scored on the answer after '=' only, the kind of task on which more
// sequential computation per token should help if it helps at all.
//
//   build/bin/coe                                  # text, the paper's 7 variants, 3 seeds (~50 min at 1 thread)
//   build/bin/coe --task chain --csv chain.csv     # the multi-step task
//   build/bin/coe --variants moe,coe --seeds 1 --steps 100
//   python3 scripts/plot_coe.py text.csv chain.csv -o docs/coe_curves.png
//
// Output: a progress line on stderr; validation curves (every --eval-every
// steps) in --csv; a table on stdout (validation loss mean ± std over seeds,
// answer accuracy for chain, expert FLOPs per token, parameters, tokens/s,
// peak resident memory) whose last line is one JSON object.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/coe.hpp>
#include <moekit/io/text.hpp>

#include "common/char_model.hpp"
#include "common/char_training.hpp"
#include "common/flags.hpp"
#include "common/output_path.hpp"
#include "common/runtime_settings.hpp"

using namespace moekit;

namespace {

const std::string default_data = examples::default_text_path();

const std::vector<std::string> paper_variants = {"moe", "coe", "coe_shared_router", "coe_no_inner",
                                                 "coe_k", "moe_2k", "moe_3k"};
const std::vector<std::string> pre_norm_variants = {"moe_pre_norm", "coe_pre_norm"};

struct options : examples::training_options {
  options() { steps = 600, eval_every = 50, eval_tokens = 32768, batch = 32, seq = 60; }
  std::string task = "text", data = default_data, variants = "paper", csv = "coe_curves.csv";
  int d_model = 128, layers = 2, heads = 4, experts = 16, expert_ff = 64, k = 4, shared = 0;
  int seeds = 3, seed = 0, threads = 1, chain_steps = 3, chain_records = 200000;
  double max_loss = 0;
};

/// The CoE spec of one variant.
coe::spec variant_spec(const options& o, const std::string& v) {
  const auto k = static_cast<std::size_t>(o.k);
  coe::spec s{.d_model = static_cast<std::size_t>(o.d_model), .experts = static_cast<std::size_t>(o.experts),
              .expert_ff = static_cast<std::size_t>(o.expert_ff),
              .shared_ff = static_cast<std::size_t>(o.shared * o.expert_ff), .seq_len = static_cast<std::size_t>(o.seq)};
  auto chain = [&](std::size_t c, std::size_t top_k) { s.chain.iterations = c, s.top_k = top_k; };
  if (v == "moe") chain(1, k);
  else if (v == "coe") chain(2, k / 2);
  else if (v == "coe_shared_router") chain(2, k / 2), s.shared_router = true;
  else if (v == "coe_no_inner") chain(2, k / 2), s.chain.inner_residual = false, s.chain.outer_residual = true;
  else if (v == "coe_k") chain(2, k);
  else if (v == "moe_2k") chain(1, 2 * k);
  else if (v == "moe_3k") chain(1, 3 * k);
  else if (v == "moe_pre_norm") chain(1, k), s.chain.norm = coe::norm_placement::pre_norm;
  else if (v == "coe_pre_norm") chain(2, k / 2), s.chain.norm = coe::norm_placement::pre_norm;
  else throw value_error("--variants: '" + v + "' is not one of moe, coe, coe_shared_router, coe_no_inner, coe_k, "
                         "moe_2k, moe_3k, moe_pre_norm, coe_pre_norm");
  if (s.top_k == 0 || s.top_k > s.experts)
    throw value_error("--variants " + v + ": K = " + std::to_string(s.top_k) + " with --k " + std::to_string(o.k) +
                      " does not fit " + std::to_string(o.experts) + " experts (--k must be even, 3k <= experts)");
  return s;
}

std::string label(const coe::spec& s) {
  return (s.chain.iterations == 1 ? "MoE(K=" + std::to_string(s.top_k) + ")"
                                  : "CoE(C=" + std::to_string(s.chain.iterations) + ",K=" + std::to_string(s.top_k) + ")") +
         (s.shared_router ? " shared router" : "") + (s.chain.inner_residual ? "" : " no inner res.") +
         (s.chain.norm == coe::norm_placement::pre_norm ? " pre-norm" : "");
}

/// The chain task: `records` records "v o a o a ... =r;" of `steps`
/// operations (+ - *) on digits mod 10, applied left to right, drawn from g.
std::string chain_text(rng& g, std::size_t records, std::size_t steps) {
  std::string out;
  out.reserve(records * (2 * steps + 4));
  const char ops[] = {'+', '-', '*'};
  for (std::size_t r = 0; r < records; ++r) {
    int v = static_cast<int>(g.next_u32() % 10);
    out += static_cast<char>('0' + v);
    for (std::size_t i = 0; i < steps; ++i) {
      const char op = ops[g.next_u32() % 3];
      const int a = static_cast<int>(g.next_u32() % 10);
      v = op == '+' ? (v + a) % 10 : op == '-' ? (v - a + 10) % 10 : (v * a) % 10;
      out += op, out += static_cast<char>('0' + a);
    }
    out += '=', out += static_cast<char>('0' + v), out += ';';
  }
  return out;
}

struct variant_result {
  std::string name, label;
  coe::spec spec;
  moe::moe_cost cost;
  std::size_t total_params = 0;
  std::vector<examples::run_result> runs;
};

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("coe",
            "Chain-of-Experts against MoE at matched expert FLOPs (and 2 iterations against 2x and 3x the\n"
            "selections), with the shared-router and no-inner-residual ablations, on text or on a multi-step\n"
            "arithmetic task; 3 seeds each; validation curves to CSV, a table, and a JSON last line.");
  cli.add("task", o.task, "text (a character LM on --data) or chain (generated multi-step arithmetic)");
  cli.add("data", o.data, "text file for --task text");
  cli.add("variants", o.variants,
          "comma list of moe, coe, coe_shared_router, coe_no_inner, coe_k, moe_2k, moe_3k, moe_pre_norm, coe_pre_norm; "
          "paper (the first seven) or all");
  cli.add("k", o.k, "the MoE's experts per token (even; the CoE runs k/2 per iteration)");
  cli.add("experts", o.experts, "routed SwiGLU experts in the one pool");
  cli.add("expert-ff", o.expert_ff, "hidden width of one expert");
  cli.add("shared", o.shared, "shared experts of --expert-ff, run every iteration (the reference has 1)");
  cli.add("d-model", o.d_model, "model width");
  cli.add("layers", o.layers, "transformer blocks");
  cli.add("heads", o.heads, "attention heads");
  cli.add("seq", o.seq, "characters per window (chain: a multiple of the record length keeps records whole)");
  cli.add("batch", o.batch, "windows per step");
  cli.add("steps", o.steps, "training steps");
  cli.add("lr", o.lr, "AdamW peak learning rate");
  cli.add("warmup", o.warmup, "warm-up steps before the cosine decay");
  cli.add("eval-every", o.eval_every, "a validation point every N steps (and at step 0)");
  cli.add("eval-tokens", o.eval_tokens, "validate on the first N validation characters (0: all)");
  cli.add("chain-steps", o.chain_steps, "chain: operations per record");
  cli.add("chain-records", o.chain_records, "chain: records generated (the last 10 % validate)");
  cli.add("seeds", o.seeds, "seeds per variant (--seed, --seed + 1, ...)");
  cli.add("seed", o.seed, "first seed (initialisation and batches; the chain text has its own fixed seed)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("csv", o.csv, "write the validation curves here (\"\": not at all)");
  cli.add("max-loss", o.max_loss, "exit 1 when any run's validation loss is above this (0: no check)");
  if (!cli.parse(argc, argv)) return 0;
  examples::print_blas_line();
  examples::require_writable_parent("--csv", o.csv);  // before any training
  if (o.d_model < 1 || o.layers < 1 || o.heads < 1 || o.seq < 1 || o.batch < 1 || o.steps < 1 || o.seeds < 1 ||
      o.threads < 1 || o.experts < 1 || o.expert_ff < 1 || o.k < 2 || o.k % 2 || o.chain_steps < 1 ||
      o.chain_records < 20 || o.shared < 0 || o.eval_every < 0 || o.eval_tokens < 0 || o.lr <= 0)
    throw value_error("sizes and counts must be >= 1, --k even and >= 2, --chain-records >= 20, --lr > 0");
  if (o.d_model % o.heads != 0 || (o.d_model / o.heads) % 2 != 0)
    throw value_error("--d-model / --heads must be an even whole number (RoPE)");
  if (o.task != "text" && o.task != "chain") throw value_error("--task: '" + o.task + "' is not text or chain");
  auto names = o.variants == "paper" || o.variants == "all" ? paper_variants : examples::split_list(o.variants);
  if (o.variants == "all") names.insert(names.end(), pre_norm_variants.begin(), pre_norm_variants.end());
  if (names.empty()) throw value_error("--variants: empty list");
  for (const auto& v : names) variant_spec(o, v);  // bad names and sizes fail before any training
  set_num_threads(o.threads);

  io::text_corpus text;
  if (o.task == "chain") {
    rng g(20250301);  // the task is the same for every seed and run
    text = io::text_from_bytes(chain_text(g, static_cast<std::size_t>(o.chain_records),
                                          static_cast<std::size_t>(o.chain_steps)),
                               "chain task");
    o.score_after = text.id_of[static_cast<unsigned char>('=')];
  } else {
    if (o.data.empty()) throw value_error("--data FILE is required for --task text");
    text = io::load_text(o.data);
  }
  // chain: the last tenth of the records, so the validation part starts at a record
  const std::size_t record = 2 * static_cast<std::size_t>(o.chain_steps) + 4, n = text.size();
  const auto data = o.task == "chain"
                        ? io::text_split{text.tokens.rows(0, n - o.chain_records / 10 * record),
                                         text.tokens.rows(n - o.chain_records / 10 * record, n)}
                        : io::split_text(text, 0.1);
  if (data.val.size() < static_cast<std::size_t>(o.seq) + 1)
    throw value_error("the validation part is shorter than one --seq window");
  const std::string blas = examples::blas_core_name();
  std::printf("coe: task %s (%s, %zu characters, vocabulary %zu); d_model %d, %d layers, %d experts of %d, k %d, "
              "shared %d, seq %d, batch %d, %d steps, %d seed(s), %d threads, BLAS core %s\n",
              o.task.c_str(), text.path.string().c_str(), text.size(), text.vocabulary_size(), o.d_model, o.layers,
              o.experts, o.expert_ff, o.k, o.shared, o.seq, o.batch, o.steps, o.seeds, o.threads, blas.c_str());
  std::fflush(stdout);

  std::ofstream csv;
  if (!o.csv.empty()) {
    csv.open(o.csv);
    if (!csv) throw io_error("--csv: cannot write " + o.csv);
    csv << "task,variant,label,seed,step,train_seconds,val_loss,val_accuracy\n";
  }
  const examples::char_model_config c{.vocabulary = text.vocabulary_size(), .d_model = static_cast<std::size_t>(o.d_model),
                                      .layers = static_cast<std::size_t>(o.layers),
                                      .heads = static_cast<std::size_t>(o.heads),
                                      .wiring = moe::ffn_wiring::direct};
  std::vector<variant_result> rows;
  for (const auto& name : names) {
    variant_result v;
    v.name = name, v.spec = variant_spec(o, name), v.label = label(v.spec), v.cost = coe::cost_of(v.spec);
    for (int s = 0; s < o.seeds; ++s) {
      const int seed = o.seed + s;
      rng g(static_cast<std::uint64_t>(seed));
      examples::reset_peak_rss();
      examples::char_transformer<coe::reference_layer<>> model(
          g, c, [&](rng& gg, std::size_t) { return coe::make_layer<float>(gg, v.spec); });
      v.total_params = count_parameters(model);
      auto r = examples::train(o, model, name, seed, data, {{"example", "coe"}, {"variant", name}});
      r.peak_rss_mib = examples::peak_rss_mib();
      for (const auto& p : r.curve)
        if (csv) csv << o.task << ',' << name << ",\"" << v.label << "\"," << seed << ',' << p.step << ',' << p.seconds
                     << ',' << p.val_loss << ',' << p.val_accuracy << '\n';
      std::fprintf(stderr, "%-18s seed %d  val loss %.4f  accuracy %.4f  %.0f tokens/s\n", name.c_str(), seed,
                   r.val_loss, r.val_accuracy, r.tokens_per_s);
      v.runs.push_back(std::move(r));
    }
    rows.push_back(std::move(v));
  }

  using examples::mean_std;
  using run = examples::run_result;
  const bool chain = o.task == "chain";
  std::printf("\n%-18s %-28s %17s %17s %14s %12s %10s %9s\n", "variant", "model", "val loss",
              chain ? "answer accuracy" : "bits/char", "expert FLOPs", "params", "tokens/s", "peak MiB");
  for (const auto& v : rows) {
    const auto loss = mean_std::of(v.runs, [](const run& r) { return r.val_loss; });
    const auto second = chain ? mean_std::of(v.runs, [](const run& r) { return r.val_accuracy; })
                              : mean_std::of(v.runs, [](const run& r) { return r.val_loss / std::log(2.0); });
    char a[40], b[40];
    std::snprintf(a, sizeof a, "%.4f ± %.4f", loss.mean, loss.std);
    std::snprintf(b, sizeof b, "%.4f ± %.4f", second.mean, second.std);
    std::printf("%-18s %-28s %17s %17s %14zu %12zu %10.0f %9.0f\n", v.name.c_str(), v.label.c_str(), a, b,
                v.cost.expert_flops, v.total_params,
                mean_std::of(v.runs, [](const run& r) { return r.tokens_per_s; }).mean,
                mean_std::of(v.runs, [](const run& r) { return r.peak_rss_mib; }).mean);
  }
  std::printf("expert FLOPs: forward, per token per layer (routers excluded); %s\n",
              chain ? "loss and accuracy on the answer after '=' only" : "loss in nats per character");

  std::printf("{\"example\": \"coe\", \"task\": \"%s\", \"data\": \"%s\", \"d_model\": %d, \"layers\": %d, \"experts\": %d, "
              "\"expert_ff\": %d, \"k\": %d, \"shared\": %d, \"seq\": %d, \"batch\": %d, \"steps\": %d, \"lr\": %g, "
              "\"threads\": %d, \"blas_core\": \"%s\", \"rows\": [",
              o.task.c_str(), examples::json_escape(text.path.string()).c_str(), o.d_model, o.layers, o.experts,
              o.expert_ff, o.k, o.shared, o.seq, o.batch, o.steps, o.lr, o.threads, blas.c_str());
  int status = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& v = rows[i];
    std::printf("%s{\"variant\": \"%s\", \"label\": \"%s\", \"iterations\": %zu, \"top_k\": %zu, \"expert_flops\": %zu, "
                "\"total_params\": %zu, \"runs\": [",
                i ? ", " : "", v.name.c_str(), v.label.c_str(), v.spec.chain.iterations, v.spec.top_k,
                v.cost.expert_flops, v.total_params);
    for (std::size_t s = 0; s < v.runs.size(); ++s) {
      const auto& r = v.runs[s];
      std::printf("%s{\"seed\": %d, \"val_loss\": %.5f, \"val_accuracy\": %.5f, \"tokens_per_s\": %.1f, "
                  "\"peak_rss_mib\": %.1f, \"load_max_over_mean\": %.4f}",
                  s ? ", " : "", o.seed + static_cast<int>(s), r.val_loss, r.val_accuracy, r.tokens_per_s,
                  r.peak_rss_mib, r.load_max_over_mean);
      if (o.max_loss > 0 && r.val_loss > o.max_loss) {
        std::fprintf(stderr, "coe: %s seed %zu validation loss %.4f is above --max-loss %.4f\n", v.name.c_str(), s,
                     r.val_loss, o.max_loss);
        status = 1;
      }
    }
    std::printf("]}");
  }
  std::printf("]}\n");
  return status;
} catch (const moekit::error& e) {
  std::fprintf(stderr, "coe: %s\n", e.what());
  return 2;
}

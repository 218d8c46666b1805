// char_lm — a character-level language model bench: a small pre-norm
// decoder-only transformer (causal multi-head attention with RoPE) trained on
// a text file (tinyshakespeare by default, 90/10 train/validation split), whose
// MLP block is dense or one of the baseline MoEs of moe/baselines.hpp (Switch,
// GShard, expert choice, DeepSeek-style fine + shared experts), each matching
// the dense FFN's active expert weights per token (as moe_compare matches
// them), or a Chain-of-Experts layer in the reference's conventions
// (coe/spec.hpp: --iterations C routings of --top-k K over one pool of SwiGLU
// experts; the block hands it the un-normalised residual stream, which it
// normalises once and does not add back, as modeling_coe.py does), or a
// Union-of-Experts MLP (--mlp uoe: uoe::uome, the dense MLP cut into --experts
// tensor-parallel slices, each expert keeping --capacity of each sequence's
// tokens in the data paradigm, or each token choosing --top-k slices in the
// expert paradigm; slice width matched to the dense FFN's active weights).
// The attention is multi-head (--attention mha) or UoE's selective multi-head
// attention (--attention smha: the heads are experts, each keeping
// --attn-capacity of each sequence's tokens that marked it among their
// --attn-top-k heads; causal on the original positions, RoPE at them).
// AdamW (decay on matrices only), linear warm-up + cosine decay to a
// tenth, gradient clipping at norm 1; the routers' load-balancing losses ride
// on the MoE outputs' backward.
//
//   build/bin/char_lm                                     # dense, defaults (~2-3 min on 2 cores)
//   build/bin/char_lm --model all --seeds 3               # the table of docs/moe.md
//   build/bin/char_lm --model switch,deepseek --steps 300 --experts 16
//   build/bin/char_lm --mlp coe --iterations 2 --top-k 2 --experts 16
//   build/bin/char_lm --mlp uoe --experts 4 --top-k 2 --capacity 0.5 --uoe-mode causal --attention smha
//   build/bin/char_lm --stop-after 150 --save run.safetensors   # ... later:
//   build/bin/char_lm --resume run.safetensors                  # steps 151-300, as one run
//   mpirun -np 2 build/bin/char_lm --ranks 2 --model switch --threads 1
//       # data parallel over 2 processes, experts sharded over them (dist/)
//
// Expert choice is NOT causal: each expert picks its tokens among all tokens of
// the batch, so whether a token is processed depends on later tokens (and on
// other sequences). Its loss is not a fair language-model loss; the table
// marks it. The same holds for UoE's data selection in modes faithful and gated
// (an expert or head keeps the top --capacity of a sequence's tokens by a score
// normalised over the batch): --mlp uoe and --attention smha are causal only
// with --uoe-mode causal (each expert keeps the first tokens that chose it, in
// arrival order), or, for the UoME, with --paradigm expert and --patch 1.
//
// Training windows are drawn at random from the training part, each step from
// its own random stream (seed, step), so a resumed run draws the same batches
// as an uninterrupted one; validation uses every non-overlapping window of the
// validation part (or the first --eval-tokens of them), in batches of --batch.
//
// --ranks P (built with MPI; launched by mpirun -np P): each step's --batch
// windows are split over the P processes, the MoE layers' experts are sharded
// over them (dist::expert_parallel: each token's row goes to the process
// holding its expert and back), the other weights are replicated and their
// gradients averaged; --save and --resume write and read sharded checkpoints
// (loadable on any number of processes). Routing groups are per process, so
// capacity limits and load-balance losses act on each process's windows.
// Rank 0 prints; every rank evaluates the whole validation part.
//
// Output: a progress line on stderr; a table on stdout (validation loss in
// nats per character and bits per character, mean ± std over seeds, training
// tokens per second, forward FLOPs per token of the matrix products counted
// from the shapes, total and active parameters, peak resident memory, expert
// load on the validation set), whose last line is one JSON object.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <moekit.hpp>
#include <moekit/coe.hpp>
#include <moekit/io/text.hpp>
#include <moekit/moe.hpp>
#include <moekit/moe/baselines.hpp>
#include <moekit/uoe.hpp>

#include "common/char_model.hpp"
#include "common/char_training.hpp"
#include "common/flags.hpp"
#include "common/output_path.hpp"
#include "common/runtime_settings.hpp"

#ifdef MOEKIT_WITH_MPI
#include <moekit/dist/checkpoint.hpp>
#include <moekit/dist/data_parallel.hpp>
#include <moekit/dist/expert_parallel.hpp>
#endif

using namespace moekit;

namespace {

#ifdef MOEKIT_WITH_MPI
/// --ranks: the processes of one data + expert parallel run (examples::train's group).
struct process_group {
  dist::communicator comm;
  std::size_t rank() const noexcept { return static_cast<std::size_t>(comm.rank()); }
  std::size_t ranks() const noexcept { return comm.ranks(); }
  bool prints() const noexcept { return comm.rank() == 0; }
  template <class M>
  void synchronize(M& model) const {
    dist::synchronize_gradients(comm, model);
  }
  template <class M, class O>
  double clip(M& model, O&, double max_norm) const {
    return dist::clip_grad_norm(comm, model, max_norm);
  }
  double mean(double v) const {
    comm.all_reduce_sum(&v, 1, "char_lm loss");
    return v / static_cast<double>(comm.ranks());
  }
  template <class M, class O>
  void save(const std::string& path, M& model, const O& opt, const io::metadata_map& m) const {
    dist::save_sharded(path, comm, model, opt, m);
  }
  template <class M, class O>
  io::metadata_map load(const std::string& path, M& model, O& opt) const {
    return dist::load_sharded(path, comm, model, opt);
  }
};
bool prints(const process_group* g) { return !g || g->prints(); }
#else
struct process_group {};  // --ranks needs a build with MPI
bool prints(const process_group*) { return true; }
#endif

const std::string default_data = examples::default_text_path();

const std::vector<std::string> all_models = {"dense", "switch", "gshard", "expert_choice", "deepseek", "coe", "uoe"};

struct options : examples::training_options {
  std::string data = default_data, model = "dense";
  int d_model = 128, layers = 2, heads = 4, ff = 0;
  int experts = 8, granularity = 4, shared = 1, iterations = 2, top_k = 2, expert_ff = 0;
  int seeds = 1, seed = 0, threads = 2, ranks = 0;
  double val_fraction = 0.1, max_loss = 0;
  // UoE: --mlp uoe and --attention smha
  std::string attention = "mha", uoe_mode = "causal", paradigm = "data";
  int patch = 1, attn_top_k = 0;
  double capacity = 0.5, attn_capacity = 0.5, uoe_balance = 0.01;
  bool byte_vocabulary = false;
};

using examples::run_result;
using examples::mean_std;

/// One model over all seeds.
struct model_result {
  std::string name;
  bool causal = true;
  std::size_t total_params = 0, active_params = 0, flops_per_token = 0, experts = 0;
  std::vector<run_result> runs;
};

moe::baseline parse_baseline(const std::string& name) {
  for (auto b : {moe::baseline::switch_top1, moe::baseline::gshard_top2, moe::baseline::expert_choice,
                 moe::baseline::deepseek})
    if (name == moe::baseline_name(b)) return b;
  throw value_error("--model: '" + name + "' is not one of all, dense, switch, gshard, expert_choice, deepseek, coe, uoe");
}

uoe::mode parse_uoe_mode(const std::string& m) {
  for (auto x : {uoe::mode::faithful, uoe::mode::gated, uoe::mode::causal})
    if (m == uoe::mode_name(x)) return x;
  throw value_error("--uoe-mode: '" + m + "' is not faithful, gated or causal");
}

bool smha(const options& o) { return o.attention == "smha"; }

/// The heads' selection of --attention smha.
uoe::selection_options attention_select(const options& o) {
  const auto m = parse_uoe_mode(o.uoe_mode);
  return {.mode = m,
          .top_k = o.attn_top_k > 0 ? static_cast<std::size_t>(o.attn_top_k) : std::max<std::size_t>(1, static_cast<std::size_t>(o.heads) / 2),
          .capacity = o.attn_capacity,
          .balance_weight = m == uoe::mode::faithful ? 0 : o.uoe_balance};
}

std::size_t ffn_width(const options& o) {
  return o.ff > 0 ? static_cast<std::size_t>(o.ff) : 4 * static_cast<std::size_t>(o.d_model);
}

/// --model coe: the reference's Chain-of-Experts layer (coe/spec.hpp):
/// --iterations C, --top-k K per iteration over --experts SwiGLU experts of
/// --expert-ff (default: 2·ff / (3·C·K), the dense FFN's active matrix
/// weights), --shared shared experts of that width run every iteration.
coe::spec coe_spec_of(const options& o) {
  const auto c = static_cast<std::size_t>(o.iterations), k = static_cast<std::size_t>(o.top_k);
  const std::size_t fe = o.expert_ff > 0 ? static_cast<std::size_t>(o.expert_ff)
                                         : std::max<std::size_t>(1, (2 * ffn_width(o) + 3 * c * k / 2) / (3 * c * k));
  return {.d_model = static_cast<std::size_t>(o.d_model), .experts = static_cast<std::size_t>(o.experts),
          .expert_ff = fe, .top_k = k, .shared_ff = static_cast<std::size_t>(o.shared) * fe,
          .chain = {.iterations = c}, .seq_len = static_cast<std::size_t>(o.seq)};
}

moe::baseline_spec spec_of(const options& o) {
  return {.d_model = static_cast<std::size_t>(o.d_model), .d_ff = ffn_width(o),
          .experts = static_cast<std::size_t>(o.experts), .granularity = static_cast<std::size_t>(o.granularity),
          .shared_experts = static_cast<std::size_t>(o.shared)};
}

/// --mlp uoe: --experts slices of width --expert-ff (default: the dense FFN's
/// width over the slots a token pays for, E·c/seq or top_k, so its active
/// expert weights match the dense FFN's), data or expert paradigm.
uoe::uome_options uome_options_of(const options& o) {
  const auto m = parse_uoe_mode(o.uoe_mode);
  uoe::uome_options u{.d_model = static_cast<std::size_t>(o.d_model), .experts = static_cast<std::size_t>(o.experts),
                      .paradigm = o.paradigm == "expert" ? uoe::paradigm::expert : uoe::paradigm::data,
                      .select = {.mode = m, .top_k = static_cast<std::size_t>(o.top_k), .capacity = o.capacity,
                                 .patch = static_cast<std::size_t>(o.patch),
                                 .balance_weight = m == uoe::mode::faithful ? 0 : o.uoe_balance}};
  const double slots = uoe::slots_per_token(u.experts, u.select, static_cast<std::size_t>(o.seq), u.paradigm);
  const std::size_t fe = o.expert_ff > 0 ? static_cast<std::size_t>(o.expert_ff)
                                         : std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(
                                                                        static_cast<double>(ffn_width(o)) / slots)));
  u.d_ff = fe * u.experts;
  return u;
}

/// Whether --mlp uoe is causal: a data selection only in causal mode; an
/// expert selection when each token chooses for itself (patch 1).
bool uome_causal(const uoe::uome_options& u) {
  return u.paradigm == uoe::paradigm::expert ? u.select.patch == 1 : u.select.mode == uoe::mode::causal;
}

io::metadata_map run_metadata_base(const options& o, const std::string& model, int seed, std::size_t vocabulary);

/// What a checkpoint carries: the settings a resumed run must share (the UoE
/// settings only where they are used, so checkpoints of other runs still load).
io::metadata_map run_metadata(const options& o, const std::string& model, int seed, std::size_t vocabulary) {
  auto m = run_metadata_base(o, model, seed, vocabulary);
  if (model == "uoe" || smha(o)) m["uoe_mode"] = o.uoe_mode, m["uoe_balance"] = examples::num(o.uoe_balance);
  if (model == "uoe")
    m["paradigm"] = o.paradigm, m["capacity"] = examples::num(o.capacity), m["patch"] = std::to_string(o.patch);
  if (smha(o))
    m["attention"] = o.attention, m["attn_top_k"] = std::to_string(attention_select(o).top_k),
    m["attn_capacity"] = examples::num(o.attn_capacity);
  return m;
}

io::metadata_map run_metadata_base(const options& o, const std::string& model, int seed, std::size_t vocabulary) {
  return {{"example", "char_lm"}, {"model", model}, {"d_model", std::to_string(o.d_model)},
          {"layers", std::to_string(o.layers)}, {"heads", std::to_string(o.heads)}, {"ff", std::to_string(ffn_width(o))},
          {"seq", std::to_string(o.seq)}, {"batch", std::to_string(o.batch)}, {"steps", std::to_string(o.steps)},
          {"experts", std::to_string(o.experts)}, {"granularity", std::to_string(o.granularity)},
          {"shared", std::to_string(o.shared)}, {"seed", std::to_string(seed)}, {"warmup", std::to_string(o.warmup)},
          {"lr", examples::num(o.lr)}, {"weight_decay", examples::num(o.weight_decay)}, {"min_lr_factor", examples::num(o.min_lr_factor)},
          {"clip", examples::num(o.clip)}, {"val_fraction", examples::num(o.val_fraction)}, {"vocabulary", std::to_string(vocabulary)},
          {"iterations", std::to_string(o.iterations)}, {"top_k", std::to_string(o.top_k)},
          {"expert_ff", std::to_string(o.expert_ff)}};
}

/// Builds model `name` for each seed, trains and evaluates it.
model_result run_model(const options& o, const std::string& name, const io::text_split& data, std::size_t vocabulary,
                       const process_group* group) {
  model_result m;
  m.name = name;
  const auto seq = static_cast<std::size_t>(o.seq);
  const examples::char_model_config c{.vocabulary = vocabulary, .d_model = static_cast<std::size_t>(o.d_model),
                                      .layers = static_cast<std::size_t>(o.layers),
                                      .heads = static_cast<std::size_t>(o.heads), .smha_select = attention_select(o)};
  const std::size_t outer = smha(o) ? examples::char_uoe_transformer<examples::dense_ffn<>>::non_ffn_flops(c, seq)
                                    : examples::char_transformer<examples::dense_ffn<>>::non_ffn_flops(c, seq);
  // Per-token parameters the selective attention does not use (0 for multi-head attention).
  std::size_t attention_idle = 0;
  if (smha(o)) {
    const auto a = uoe::cost_of(examples::char_uoe_transformer<examples::dense_ffn<>>::smha_options_of(c), seq);
    attention_idle = c.layers * (a.total_params - a.active_params);
    m.causal = attention_select(o).mode == uoe::mode::causal;
  }
  const auto spec = spec_of(o);
  for (int s = 0; s < o.seeds; ++s) {
    const int seed = o.seed + s;
    rng g(static_cast<std::uint64_t>(seed));
    examples::reset_peak_rss();
    const auto meta = run_metadata(o, name, seed, vocabulary);
    run_result r;
    // Builds the model with multi-head or selective attention around make's FFNs, fills the
    // cost columns (ffn: one FFN's moe_cost) and trains it.
    auto build_and_train = [&]<class Ffn>(std::type_identity<Ffn>, const moe::moe_cost& ffn, auto&& make,
                                          const examples::char_model_config& config) {
      auto go = [&](auto& model) {
        m.total_params = count_parameters(model);
        m.active_params = m.total_params - c.layers * (ffn.total_params - ffn.active_params) - attention_idle;
        m.flops_per_token = outer + c.layers * (ffn.expert_flops + ffn.router_flops);
#ifdef MOEKIT_WITH_MPI
        if (group) {
          m.total_params = dist::count_parameters(group->comm, model);
          m.active_params = m.total_params - c.layers * (ffn.total_params - ffn.active_params) - attention_idle;
          r = examples::train(o, model, name, seed, data, meta, *group);
          return;
        }
#endif
        r = examples::train(o, model, name, seed, data, meta);
      };
      if (smha(o)) {
        examples::char_uoe_transformer<Ffn> model(g, config, make);
        go(model);
      } else {
        examples::char_transformer<Ffn> model(g, config, make);
        go(model);
      }
    };
    if (name == "dense") {
      build_and_train(std::type_identity<examples::dense_ffn<>>{}, moe::dense_ffn_cost(spec.d_model, spec.d_ff),
                      [&](rng& gg, std::size_t) { return examples::dense_ffn<>(gg, spec.d_model, spec.d_ff); }, c);
    } else if (name == "coe") {
      const auto cs = coe_spec_of(o);
      auto wired = c;
      wired.wiring = moe::ffn_wiring::direct;  // the layer normalises once and keeps its own residual (reference)
      m.experts = cs.experts;
      auto cost = coe::cost_of(cs);
      examples::char_transformer<coe::reference_layer<>> model(
          g, wired, [&](rng& gg, std::size_t) { return coe::make_layer<float>(gg, cs); });
      m.total_params = count_parameters(model);
      m.active_params = m.total_params - c.layers * (cost.total_params - cost.active_params);
      m.flops_per_token = outer + c.layers * (cost.expert_flops + cost.router_flops);
      r = examples::train(o, model, name, seed, data, meta);
    } else if (name == "uoe") {
      const auto u = uome_options_of(o);
      m.experts = u.experts;
      m.causal = m.causal && uome_causal(u);
      build_and_train(std::type_identity<uoe::uome<>>{}, uoe::cost_of(u, seq),
                      [&](rng& gg, std::size_t) { return uoe::uome<>(gg, u); }, c);
    } else {
      const auto layout = moe::baseline_layout_of(parse_baseline(name), spec);
      const auto cost = moe::cost_of(layout);
      m.experts = layout.experts;
      m.causal = m.causal && layout.kind != moe::baseline::expert_choice;
#ifdef MOEKIT_WITH_MPI
      if (group) {  // the same layers, each rank holding its share of the experts
        if (layout.kind == moe::baseline::expert_choice)
          build_and_train(std::type_identity<dist::sharded_t<moe::expert_choice_moe<>>>{}, cost, [&](rng& gg, std::size_t) {
            return dist::sharded_t<moe::expert_choice_moe<>>::shard(group->comm, moe::make_expert_choice<float>(gg, spec));
          }, c);
        else
          build_and_train(std::type_identity<dist::sharded_t<moe::token_choice_moe<>>>{}, cost, [&](rng& gg, std::size_t) {
            return dist::sharded_t<moe::token_choice_moe<>>::shard(group->comm, moe::make_token_choice<float>(gg, layout));
          }, c);
      } else
#endif
      if (layout.kind == moe::baseline::expert_choice)
        build_and_train(std::type_identity<moe::expert_choice_moe<>>{}, cost,
                        [&](rng& gg, std::size_t) { return moe::make_expert_choice<float>(gg, spec); }, c);
      else
        build_and_train(std::type_identity<moe::token_choice_moe<>>{}, cost,
                        [&](rng& gg, std::size_t) { return moe::make_token_choice<float>(gg, layout); }, c);
    }
    r.peak_rss_mib = examples::peak_rss_mib();
    if (prints(group))
      std::fprintf(stderr, "%-14s seed %d  val loss %.4f nats/char (%.3f bpc)  %.0f tokens/s  train %.1f s  eval %.1f s\n",
                 name.c_str(), seed, r.val_loss, r.val_loss / std::log(2.0), r.tokens_per_s, r.train_seconds,
                 r.eval_seconds);
    m.runs.push_back(std::move(r));
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("char_lm",
            "Trains a small decoder-only transformer (pre-norm, causal attention with RoPE) as a character-level\n"
            "language model on a text file, with a dense or MoE MLP block (Switch, GShard, expert choice,\n"
            "DeepSeek-style, Chain-of-Experts, Union-of-Experts) at matched active expert weights, and multi-head or\n"
            "UoE's selective multi-head attention, and reports validation loss and cost.\n"
            "Expert choice, and UoE's data selection in modes faithful and gated (--mlp uoe, --attention smha), are not\n"
            "causal: whether a token is processed depends on later tokens; the table marks them with *.\n"
            "The last stdout line is a JSON object with one row per model.");
  cli.add("data", o.data, "text file (tinyshakespeare: shared/data/tinyshakespeare/input.txt)");
  cli.add("model", o.model, "dense, switch, gshard, expert_choice, deepseek, coe, uoe, a comma list of them, or all");
  cli.add("mlp", o.model, "the same as --model");
  cli.add("d-model", o.d_model, "model width");
  cli.add("layers", o.layers, "transformer blocks");
  cli.add("heads", o.heads, "attention heads (d-model / heads must be even, for RoPE)");
  cli.add("ff", o.ff, "hidden width of the dense FFN, the active width the MoEs match (0: 4 * d-model)");
  cli.add("experts", o.experts, "experts per MoE (DeepSeek: before the fine split; uoe: MLP slices)");
  cli.add("granularity", o.granularity, "DeepSeek: fine experts per coarse expert (each 1/granularity wide)");
  cli.add("shared", o.shared, "DeepSeek: shared (always-on) fine experts; coe: shared experts of --expert-ff, every iteration");
  cli.add("iterations", o.iterations, "coe: routing iterations C over the one expert pool (1: the reference's MoE)");
  cli.add("top-k", o.top_k, "coe: experts per token per iteration; uoe: slices each token marks (data) or chooses (expert)");
  cli.add("expert-ff", o.expert_ff,
          "coe: hidden width of one SwiGLU expert (0: 2 * ff / (3 * iterations * top-k)); uoe: width of one slice "
          "(0: ff / slots per token, slots = experts * capacity (data) or top-k (expert): the dense FFN's active weights)");
  cli.add("capacity", o.capacity, "uoe: fraction of each sequence's tokens (patches) a slice keeps (data paradigm)");
  cli.add("uoe-mode", o.uoe_mode,
          "uoe and smha: faithful (gates only select; the paper's code), gated (outputs weighted by the gates), or "
          "causal (each expert keeps the first tokens that marked it: the only causal data selection)");
  cli.add("uoe-balance", o.uoe_balance, "uoe and smha, gated and causal modes: Switch load-balance loss weight on the marks");
  cli.add("patch", o.patch, "uoe: tokens per patch l_p (selection unit; must divide --seq; causal mode: 1)");
  cli.add("paradigm", o.paradigm, "uoe: data (slices choose tokens) or expert (tokens choose top-k slices)");
  cli.add("attention", o.attention,
          "mha (multi-head attention) or smha (UoE's selective multi-head attention: heads choose tokens; not with coe)");
  cli.add("attn-top-k", o.attn_top_k, "smha: heads each token marks (0: heads / 2)");
  cli.add("attn-capacity", o.attn_capacity, "smha: fraction of each sequence's tokens a head keeps");
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
  cli.add("threads", o.threads, "threads for moekit loops and BLAS (per process with --ranks)");
  cli.add("ranks", o.ranks,
          "data + expert parallel over this many processes, launched as `mpirun -np N char_lm --ranks N`: "
          "each takes batch/N windows per step and experts/N experts per MoE layer (0: one process; needs MPI)");
  cli.add("save", o.save, "write a checkpoint (model, AdamW state, step) here at the end (and every --save-every steps)");
  cli.add("save-every", o.save_every, "with --save: also save every N steps (0: at the end only)");
  cli.add("resume", o.resume, "continue from this checkpoint (same flags as the run that wrote it)");
  cli.add("stop-after", o.stop_after, "stop after this step as if interrupted (0: run all --steps); with --save, for --resume");
  cli.add("max-loss", o.max_loss, "exit 1 when any run's validation loss (nats/char) is above this (0: no check)");
  if (!cli.parse(argc, argv)) return 0;
  examples::require_writable_parent("--save", o.save);  // before any training
  if (o.d_model < 1 || o.layers < 1 || o.heads < 1 || o.seq < 1 || o.batch < 1 || o.steps < 1 || o.threads < 1 ||
      o.seeds < 1 || o.experts < 1 || o.granularity < 1 || o.iterations < 1 || o.top_k < 1)
    throw value_error("--d-model, --layers, --heads, --seq, --batch, --steps, --threads, --seeds, --experts, "
                      "--granularity, --iterations, --top-k must be >= 1");
  if (o.expert_ff < 0 || o.ff < 0 || o.shared < 0 || o.warmup < 0 || o.eval_tokens < 0 || o.eval_every < 0 || o.save_every < 0 ||
      o.stop_after < 0 || o.lr <= 0 || o.weight_decay < 0 || o.clip < 0 || o.max_loss < 0)
    throw value_error("--expert-ff, --ff, --shared, --warmup, --eval-tokens, --eval-every, --save-every, --stop-after, "
                      "--weight-decay, --clip, --max-loss must be >= 0 and --lr > 0");
  if (o.d_model % o.heads != 0 || (o.d_model / o.heads) % 2 != 0)
    throw value_error("--d-model " + std::to_string(o.d_model) + " / --heads " + std::to_string(o.heads) +
                      " must be an even whole number (RoPE rotates pairs of dimensions)");
  if (o.attention != "mha" && o.attention != "smha") throw value_error("--attention: '" + o.attention + "' is not mha or smha");
  if (o.paradigm != "data" && o.paradigm != "expert") throw value_error("--paradigm: '" + o.paradigm + "' is not data or expert");
  if (o.patch < 1 || o.attn_top_k < 0 || o.uoe_balance < 0) throw value_error("--patch must be >= 1, --attn-top-k and --uoe-balance >= 0");
  parse_uoe_mode(o.uoe_mode);
  if (smha(o))
    uoe::check_selection("--attention smha", attention_select(o), static_cast<std::size_t>(o.heads),
                         static_cast<std::size_t>(o.seq));
  std::vector<std::string> names = o.model == "all" ? all_models : examples::split_list(o.model);
  if (names.empty()) throw value_error("--model: empty list");
  if (smha(o) && o.model == "all") names.erase(std::find(names.begin(), names.end(), "coe"));
  for (const auto& name : names)
    if (name == "coe") {
      if (o.top_k > o.experts) throw value_error("--top-k " + std::to_string(o.top_k) + " is more than --experts");
      if (smha(o)) throw value_error("--attention smha does not take --model coe (its layer owns its norm and residual)");
    } else if (name == "uoe") {
      const auto u = uome_options_of(o);
      uoe::check_selection("--mlp uoe", u.select, u.experts, static_cast<std::size_t>(o.seq));
    } else if (name != "dense") moe::baseline_layout_of(parse_baseline(name), spec_of(o));  // bad names and sizes fail first
  if ((!o.save.empty() || !o.resume.empty()) && (names.size() != 1 || o.seeds != 1))
    throw value_error("--save and --resume need one --model and --seeds 1");
  set_num_threads(o.threads);
  const process_group* group = nullptr;
#ifdef MOEKIT_WITH_MPI
  std::optional<dist::environment> mpi;
  std::optional<process_group> ranks;
  if (o.ranks > 0) {
    for (const auto& name : names)
      if (name == "coe" || name == "uoe")
        throw value_error("--ranks: --model " + name + " does not run distributed (dense, switch, gshard, "
                          "expert_choice and deepseek do)");
    mpi.emplace(argc, argv);
    ranks.emplace(process_group{dist::communicator::world()});
    if (ranks->comm.size() != o.ranks)
      throw value_error("--ranks " + std::to_string(o.ranks) + ": this run has " + std::to_string(ranks->comm.size()) +
                        " process(es); launch it as `mpirun -np " + std::to_string(o.ranks) + " char_lm --ranks " +
                        std::to_string(o.ranks) + " ...`");
    if (o.batch % o.ranks != 0)
      throw value_error("--ranks " + std::to_string(o.ranks) + ": --batch " + std::to_string(o.batch) +
                        " windows do not split evenly over the processes");
    group = &*ranks;
    if (!ranks->prints() && !std::freopen("/dev/null", "w", stdout))  // rank 0 prints the table
      throw io_error("cannot silence stdout on rank " + std::to_string(ranks->comm.rank()));
  }
#else
  if (o.ranks > 0)
    throw value_error("--ranks: this char_lm was built without MPI (apt-get install libopenmpi-dev openmpi-bin, "
                      "then rebuild)");
#endif
  examples::print_blas_line();

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
  const std::string blas = examples::blas_core_name();
  std::printf("char_lm: %s: %zu characters (%zu train / %zu validation), vocabulary %zu; d_model %d, %d layers, "
              "%d heads, FFN %zu, seq %d, batch %d, %d steps, %d experts, %d seed(s), %d threads, BLAS core %s\n",
              o.data.c_str(), text.size(), n_train, data.val.size(), text.vocabulary_size(), o.d_model, o.layers,
              o.heads, ffn_width(o), o.seq, o.batch, o.steps, o.experts, o.seeds, o.threads, blas.c_str());
  std::printf("validation unigram entropy %.4f nats/char (%.3f bits): a model that ignores context gets this\n", unigram,
              unigram / std::log(2.0));
  std::fflush(stdout);

  std::vector<model_result> rows;
  for (const auto& name : names) rows.push_back(run_model(o, name, data, text.vocabulary_size(), group));

  const double ln2 = std::log(2.0);
  std::printf("\n%-15s %17s %15s %10s %12s %12s %12s %9s %14s %8s\n", "model", "val loss (nats)", "bits/char",
              "tokens/s", "FLOPs/token", "total params", "active params", "peak MiB", "load max/mean", "dropped");
  for (const auto& m : rows) {
    const auto loss = mean_std::of(m.runs, [](const run_result& r) { return r.val_loss; });
    const auto tps = mean_std::of(m.runs, [](const run_result& r) { return r.tokens_per_s; });
    const auto rss = mean_std::of(m.runs, [](const run_result& r) { return r.peak_rss_mib; });
    const std::string name = m.causal ? m.name : m.name + "*";
    char loss_s[40], bpc_s[40];
    std::snprintf(loss_s, sizeof loss_s, "%.4f ± %.4f", loss.mean, loss.std);
    std::snprintf(bpc_s, sizeof bpc_s, "%.3f ± %.3f", loss.mean / ln2, loss.std / ln2);
    std::printf("%-15s %17s %15s %10.0f %12zu %12zu %12zu %9.0f", name.c_str(), loss_s, bpc_s, tps.mean,
                m.flops_per_token, m.total_params, m.active_params, rss.mean);
    if (m.name == "dense") std::printf(" %14s %8s\n", "-", "-");
    else
      std::printf(" %14.2f %7.2f%%\n", mean_std::of(m.runs, [](const run_result& r) { return r.load_max_over_mean; }).mean,
                  100 * mean_std::of(m.runs, [](const run_result& r) { return r.dropped; }).mean);
  }
  for (const auto& m : rows)
    if (!m.causal) {
      if (m.name == "expert_choice")
        std::printf("* %s is not causal: each expert picks its tokens among the whole batch, later tokens included\n",
                    m.name.c_str());
      else if (m.name == "uoe" && o.paradigm == "expert" && !(smha(o) && o.uoe_mode != "causal"))
        std::printf("* %s is not causal: in the expert paradigm each patch of --patch %d tokens chooses its experts "
                    "from its mean, later tokens of the patch included (--patch 1 is causal)\n",
                    m.name.c_str(), o.patch);
      else
        std::printf("* %s is not causal: UoE's data selection (--uoe-mode %s%s) keeps a token by a score over the "
                    "whole sequence and batch, later tokens included (--uoe-mode causal is causal)\n",
                    m.name.c_str(), o.uoe_mode.c_str(), smha(o) ? ", --attention smha" : "");
    }

  std::printf("{\"example\": \"char_lm\", \"data\": \"%s\", \"characters\": %zu, \"train_characters\": %zu, "
              "\"val_characters\": %zu, \"vocabulary\": %zu, \"val_unigram_entropy\": %.5f, \"d_model\": %d, "
              "\"layers\": %d, \"heads\": %d, \"ff\": %zu, \"seq\": %d, \"batch\": %d, \"steps\": %d, \"lr\": %g, "
              "\"experts\": %d, \"granularity\": %d, \"shared\": %d, \"iterations\": %d, \"top_k\": %d, \"seeds\": %d, \"threads\": %d, \"ranks\": %d, "
              "\"attention\": \"%s\", \"attn_top_k\": %zu, \"attn_capacity\": %g, \"uoe_mode\": \"%s\", \"paradigm\": \"%s\", "
              "\"capacity\": %g, \"patch\": %d, "
              "\"blas_core\": \"%s\", \"rows\": [",
              examples::json_escape(o.data).c_str(), text.size(), n_train, data.val.size(), text.vocabulary_size(), unigram, o.d_model,
              o.layers, o.heads, ffn_width(o), o.seq, o.batch, o.steps, o.lr, o.experts, o.granularity, o.shared,
              o.iterations, o.top_k, o.seeds, o.threads, std::max(o.ranks, 1), o.attention.c_str(), attention_select(o).top_k, o.attn_capacity,
              o.uoe_mode.c_str(), o.paradigm.c_str(), o.capacity, o.patch, blas.c_str());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& m = rows[i];
    const auto loss = mean_std::of(m.runs, [](const run_result& r) { return r.val_loss; });
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

// mcsmoe — Merge, Then Compress (MC-SMoE) on a Switch-style MoE: how much
// memory and how many FLOPs can a trained sparse MoE give back, and at what
// cost in quality? Two tasks:
//
//   fashion  Fashion-MNIST: mlp::moe_bottleneck_mlp (a stem, --model's blocks of
//            pre-norm residual MoE FFNs, a head), scored by test accuracy
//   text     tinyshakespeare (or --data FILE): char_lm's decoder-only character
//            transformer with an MoE FFN per layer, scored by validation loss
//
// The MoE: --experts experts (16), a softmax top---k router (1: Switch; 2:
// Mixtral-style), Switch balance loss 0.01 while the full model trains,
// dropless. Expert kinds (--kinds): ffn (ReLU, no biases, as switch-base)
// and swiglu (Mixtral-style). Each seed and kind runs the whole pipeline
// (include/moekit/merge/, docs/mcsmoe.md):
//
//   full        train the MoE                                          -> the teacher
//   aligned     every expert's hidden units permuted to expert 0 (weight
//               matching, our own LSA): the same function, checked by its score
//   for each G in --groups (average weight sets per MoE layer, one global budget):
//     merged     usage + router-logit similarity over --calibration training
//                samples, dominant experts, each other expert joins the most
//                similar dominant one, frequency-weighted merge (no fine-tune)
//     unaligned  the same groups and merge without the alignment   (ablation)
//     uniform    the same groups, plain averaging                   (baseline)
//     random     random groups of the same sizes, frequency-weighted (baseline)
//     recovered  `merged` distilled from the teacher: CE + --kd-weight · KL at
//                --temperature, routers frozen                      -> M-SMoE
//     scratch    an MoE with G experts (the memory of `merged`) trained from
//                scratch for as many steps as full + recovered     (control)
//     compressed `recovered` with every merged weight W = L·R + S (rank --rank
//                SVD), S's output units pruned to --keep with the cubic
//                schedule and one global threshold while distilling, packed
//                                                                   -> MC-SMoE
//
// Every stage is saved (io::save_safetensors) and reloaded into a fresh model
// sized from the file (moe::load_slot_maps, merge::load_compressed_layout);
// the reloaded model is the one scored. Each row: parameters, checkpoint
// bytes, forward FLOPs per image or token of the matrix products (compressed:
// the kept units, averaged over weight sets), the score, and seconds.
//
//   build/bin/mcsmoe                                     # fashion, FFN and SwiGLU, G = 8 and 4, 3 seeds (~6 min)
//   build/bin/mcsmoe --task text                         # the same on tinyshakespeare (~1 hour at 1 thread)
//   build/bin/mcsmoe --kinds ffn --seeds 1 --steps 500   # one quick run
//   build/bin/mcsmoe --csv runs.csv && python3 scripts/plot_mcsmoe.py runs.csv -o docs/mcsmoe_results.png
//
// Output: a progress line on stderr; a table on stdout (mean ± std over seeds
// per kind, stage and G), optional per-run rows in --csv, and a JSON last line.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <moekit.hpp>
#include <moekit/data/batching.hpp>
#include <moekit/data/normalize.hpp>
#include <moekit/io/idx.hpp>
#include <moekit/merge.hpp>
#include <moekit/mlp/moe_bottleneck_mlp.hpp>
#include <moekit/moe.hpp>
#include <moekit/nn/transfer.hpp>
#include <moekit/optim.hpp>

#include "common/char_training.hpp"
#include "common/flags.hpp"
#include "common/output_path.hpp"
#include "common/runtime_settings.hpp"

using namespace moekit;

namespace {

struct options {
  std::string task = "fashion", data, model = "B_2-Wi_64", kinds = "ffn,swiglu", groups = "8,4", csv;
  std::string similarity = "router-logits";
  int seeds = 3, seed = 0, experts = 16, k = 1;
  int steps = 0, recover_steps = 0, compress_steps = 0, batch = 0;  // 0: the task's default
  int threads = 2, train_subset = 0, calibration = 0, rank = 8, eval_batch = 1000, prune_warmup = 50;
  int d_model = 64, layers = 2, heads = 4, seq = 64, eval_tokens = 32768;  // text
  double lr = 0, recover_lr = 0, weight_decay = 0.01, kd_weight = 0.2, temperature = 2, keep = 0.1;
  double min_accuracy = 0, max_loss = 0;
  bool kd_t2 = false, train_routers = false;
};

using examples::seconds_since;

using router_t = moe::top_k_router<dyn, dyn, dyn, float, cpu>;
using ffn_spec = moe::ffn_expert<dyn, dyn, moe::activation::relu, false>;
using swiglu_spec = moe::swiglu_expert<dyn, dyn>;
template <class Spec>
using moe_t = moe::layer<router_t, Spec, float, cpu>;
template <class Spec>
using compressed_t = moe::layer<router_t, merge::low_rank_sparse<Spec>, float, cpu>;

/// What evaluation saw: the task's score and each MoE layer's routing.
struct evaluation {
  double score = 0;  // fashion: test accuracy; text: validation loss (nats per character)
  std::vector<moe::routing_stats> routing;
};

/// Adds each MoE layer's last plan to its statistics.
template <class M>
void add_routing(M& model, std::vector<moe::routing_stats>& routing) {
  if (routing.empty()) routing.resize(merge::count_moe_layers(model));
  merge::for_each_moe_layer(model, [&](std::size_t l, auto& layer) { routing[l].add(layer.last_routing()); });
}

// ---- the tasks: data, model, batches, evaluation, FLOPs -----------------------

/// Fashion-MNIST: mlp::moe_bottleneck_mlp, scored by test accuracy.
class fashion_task {
 public:
  static constexpr const char* score_name = "test accuracy";
  static constexpr bool higher_is_better = true;
  template <class Layer>
  using model = mlp::moe_bottleneck_mlp<Layer, float, cpu>;
  struct batch_type {
    tensor<float, shape<dyn, dyn>> input;  // (n, 784)
    tensor<index_t, shape<dyn>> targets;   // (n)
  };

  explicit fashion_task(const options& o) : o_(o) {
    const std::filesystem::path dir = o.data.empty() ? io::fashion_mnist_dir : std::filesystem::path(o.data);
    if (!std::filesystem::exists(dir / "train-images-idx3-ubyte.gz"))
      throw io_error("Fashion-MNIST not found in " + dir.string() +
                     ". Install it with `apt-get install dataset-fashion-mnist` or pass --data DIR");
    auto train = io::load_fashion_mnist<float>(dir, "train");
    auto test = io::load_fashion_mnist<float>(dir, "t10k");
    if (o.train_subset > 0 && static_cast<std::size_t>(o.train_subset) < train.images.extent(0)) {
      const auto n = static_cast<std::size_t>(o.train_subset);
      train.images = train.images.rows(0, n), train.labels = train.labels.rows(0, n);
    }
    const auto stats = data::compute_global_stats(train.images);
    train_ = {data::normalize(train.images, stats), train.labels};
    test_ = {data::normalize(test.images, stats), test.labels};
    const auto n_cal = std::min<std::size_t>(o.calibration ? std::size_t(o.calibration) : 2048, train_.input.extent(0));
    calibration_ = {train_.input.rows(0, n_cal), train_.targets.rows(0, n_cal)};
    sizes_ = mlp::parse_model_name(o.model, "--model").with_io(28 * 28, 10);
  }

  std::size_t batch_size() const { return o_.batch ? std::size_t(o_.batch) : 128; }
  std::size_t steps_per_epoch() const { return (train_.input.extent(0) + batch_size() - 1) / batch_size(); }
  /// Defaults: 8 epochs for the teacher, 2 to recover, 4 while pruning.
  std::size_t default_steps(int epochs) const { return steps_per_epoch() * std::size_t(epochs); }
  std::size_t teacher_steps() const { return o_.steps ? std::size_t(o_.steps) : default_steps(8); }
  std::size_t recover_steps() const { return o_.recover_steps ? std::size_t(o_.recover_steps) : default_steps(2); }
  std::size_t compress_steps() const { return o_.compress_steps ? std::size_t(o_.compress_steps) : default_steps(4); }
  double lr() const { return o_.lr ? o_.lr : 1e-3; }
  double recover_lr() const { return o_.recover_lr ? o_.recover_lr : 3e-4; }
  std::size_t d_model() const { return sizes_.width; }
  std::size_t d_ff() const { return sizes_.expansion * sizes_.width; }
  std::string describe() const {
    return mlp::model_name(sizes_) + " on Fashion-MNIST (" + std::to_string(train_.input.extent(0)) + " training, " +
           std::to_string(test_.input.extent(0)) + " test images)";
  }

  template <class Layer, class MakeLayer>
  model<Layer> make(std::uint64_t seed, MakeLayer&& make_layer) const {
    rng g(seed);
    return model<Layer>(g, sizes_, [&](rng& gg, std::size_t d, std::size_t ff) { return make_layer(gg, d, ff); });
  }

  /// Step `step`'s batch: epoch e's shuffle of the training set (seed, e).
  batch_type batch(std::size_t step, std::uint64_t seed) {
    const std::size_t epoch = step / steps_per_epoch(), b = step % steps_per_epoch();
    if (epoch != epoch_ || !order_.defined() || seed != seed_) {
      rng g(seed, static_cast<std::uint64_t>(epoch + 1) << 40);
      order_ = data::shuffled_indices(train_.input.extent(0), g);
      epoch_ = epoch, seed_ = seed;
    }
    const data::batcher batches(order_, batch_size());
    const auto idx = batches[b];
    return {data::gather_batch(train_.input, idx), data::gather_batch(train_.targets, idx)};
  }

  template <class M>
  static var<float, shape<dyn, dyn>, cpu> logits(M& model, tape& t, const batch_type& b) {
    return model(t.input(b.input));  // (n, 10)
  }

  /// Test accuracy (or, calibration = true, routing over the calibration images).
  template <class M>
  evaluation evaluate(M& model, bool calibration = false) const {
    no_grad guard;
    model.train(false);
    const auto& s = calibration ? calibration_ : test_;
    evaluation e;
    std::size_t correct = 0;
    const auto n = s.input.extent(0), step = static_cast<std::size_t>(o_.eval_batch);
    for (std::size_t begin = 0; begin < n; begin += step) {
      const std::size_t end = std::min(n, begin + step);
      tape t;
      const auto pred = argmax(model(t.input(s.input.rows(begin, end))).value());  // (n)
      for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == s.targets[begin + i];
      add_routing(model, e.routing);
    }
    e.score = static_cast<double>(correct) / static_cast<double>(n);
    return e;
  }

  /// Forward FLOPs per image (2 per multiply-add) of the matrix products:
  /// stem, head, routers over `experts` slots, and k experts of `expert_flops` per block.
  double flops(double expert_flops, std::size_t experts) const {
    const double stem_head = 2.0 * double(sizes_.in * sizes_.width + sizes_.width * sizes_.classes);
    return stem_head + double(sizes_.blocks) * (2.0 * double(sizes_.width * experts) + o_.k * expert_flops);
  }

 private:
  const options& o_;
  mlp::config sizes_;
  batch_type train_, test_, calibration_;
  tensor<index_t, shape<dyn>> order_;  // (n) this epoch's shuffle
  std::size_t epoch_ = 0;
  std::uint64_t seed_ = 0;
};

/// tinyshakespeare (or --data FILE): char_lm's decoder-only character model
/// (examples/common/char_model.hpp), scored by validation loss.
class text_task {
 public:
  static constexpr const char* score_name = "val loss (nats/char)";
  static constexpr bool higher_is_better = false;
  template <class Layer>
  using model = examples::char_transformer<Layer, float, cpu>;
  using batch_type = examples::char_batch;

  explicit text_task(const options& o) : o_(o) {
    const std::string path = o.data.empty() ? examples::default_text_path() : o.data;
    if (path.empty()) throw value_error("--task text: no default text in this build; --data FILE is required");
    corpus_ = io::load_text(path);
    split_ = io::split_text(corpus_, 0.1);
    config_ = {.vocabulary = corpus_.vocabulary_size(), .d_model = std::size_t(o.d_model),
               .layers = std::size_t(o.layers), .heads = std::size_t(o.heads)};
    train_o_.seq = o.seq, train_o_.batch = int(batch_size()), train_o_.eval_tokens = o.eval_tokens;
    calibration_ = split_.train.rows(0, std::min(split_.train.size(), (o.calibration ? std::size_t(o.calibration) : 256) *
                                                                          std::size_t(o.seq) + 1));
  }

  std::size_t batch_size() const { return o_.batch ? std::size_t(o_.batch) : 32; }
  std::size_t teacher_steps() const { return o_.steps ? std::size_t(o_.steps) : 1500; }
  std::size_t recover_steps() const { return o_.recover_steps ? std::size_t(o_.recover_steps) : 300; }
  std::size_t compress_steps() const { return o_.compress_steps ? std::size_t(o_.compress_steps) : 600; }
  double lr() const { return o_.lr ? o_.lr : 3e-3; }
  double recover_lr() const { return o_.recover_lr ? o_.recover_lr : 1e-3; }
  std::size_t d_model() const { return config_.d_model; }
  std::size_t d_ff() const { return 4 * config_.d_model; }
  std::string describe() const {
    return "character transformer d " + std::to_string(config_.d_model) + ", " + std::to_string(config_.layers) +
           " layers, seq " + std::to_string(o_.seq) + " on " + corpus_.path.filename().string() + " (" +
           std::to_string(split_.train.size()) + " training characters)";
  }

  template <class Layer, class MakeLayer>
  model<Layer> make(std::uint64_t seed, MakeLayer&& make_layer) const {
    rng g(seed);
    return model<Layer>(g, config_, [&](rng& gg, std::size_t) { return make_layer(gg, d_model(), d_ff()); });
  }

  /// Step `step`'s windows, drawn from the stream (seed, step).
  batch_type batch(std::size_t step, std::uint64_t seed) const {
    rng g(seed, (static_cast<std::uint64_t>(step) + 1) << 32);  // the step's own stretch of the stream
    const auto seq = static_cast<std::size_t>(o_.seq);
    return examples::make_char_batch(split_.train, examples::random_starts(g, split_.train.size(), seq, batch_size()), seq);
  }

  template <class M>
  static var<float, shape<dyn, dyn>, cpu> logits(M& model, tape&, const batch_type& b) {
    return model(b.inputs);  // (batch·seq, vocabulary)
  }

  template <class M>
  evaluation evaluate(M& model, bool calibration = false) const {
    evaluation e;
    examples::run_result r;
    if (!calibration) {
      e.score = examples::evaluate(model, split_.val, train_o_, nullptr).first;
      return e;
    }
    no_grad guard;  // routing over the calibration windows
    model.train(false);
    const auto seq = static_cast<std::size_t>(o_.seq);
    for (std::size_t w = 0; (w + 1) * seq < calibration_.size(); w += batch_size()) {
      std::vector<std::size_t> starts;
      for (std::size_t i = w; i < w + batch_size() && (i + 1) * seq < calibration_.size(); ++i) starts.push_back(i * seq);
      tape t;
      (void)model(examples::make_char_batch(calibration_, starts, seq).inputs);
      add_routing(model, e.routing);
    }
    return e;
  }

  /// Forward FLOPs per token: attention and head (char_transformer::non_ffn_flops),
  /// routers over `experts` slots, and k experts of `expert_flops` per layer.
  double flops(double expert_flops, std::size_t experts) const {
    const double rest = double(model<moe_t<ffn_spec>>::non_ffn_flops(config_, std::size_t(o_.seq)));
    return rest + double(config_.layers) * (2.0 * double(config_.d_model * experts) + o_.k * expert_flops);
  }

 private:
  const options& o_;
  io::text_corpus corpus_;
  io::text_split split_;
  examples::char_model_config config_;
  examples::training_options train_o_;
  tensor<index_t, shape<dyn>> calibration_;
};

// ---- training ----------------------------------------------------------------

/// Trains `student` for `steps` with AdamW (decay on matrices), warm-up +
/// cosine, gradient clipping at 1. With a teacher: CE + kd_weight · KL(teacher
/// ‖ student) at the temperature (× T² only with --kd-t2: the reference omits
/// it), routers frozen unless --train-routers. after_step(step, steps) runs
/// after each optimizer step, with the gradients still in place (pruning).
template <class Task, class M, class Teacher, class After>
void train(const options& o, Task& task, M& student, Teacher* teacher, std::size_t steps, double lr, std::uint64_t seed,
           const std::string& label, After&& after_step) {
  auto [frozen, trained] = optim::split_groups(parameter_views<float, cpu>(student), [&](const auto& p) {
    return teacher && !o.train_routers && p.name.find(".router.") != std::string::npos;
  });
  auto [vectors, matrices] = optim::split_groups(std::move(trained), [](const auto& p) { return p.extents.size() < 2; });
  using opt_t = optim::adamw<float, cpu>;
  std::vector<opt_t::group_spec> groups;
  groups.push_back({std::move(matrices), {.lr = lr, .weight_decay = o.weight_decay}});
  if (!vectors.empty()) groups.push_back({std::move(vectors), {.lr = lr, .weight_decay = 0}});
  opt_t opt(std::move(groups));
  const optim::cosine_schedule schedule({.total_steps = steps, .warmup_steps = std::min<std::size_t>(steps / 10, 100)});
  const float kd_scale = static_cast<float>(o.kd_weight / (o.kd_t2 ? 1.0 : o.temperature * o.temperature));
  const auto t0 = std::chrono::steady_clock::now();
  double last = -1, recent = 0;
  student.train(true);
  for (std::size_t step = 0; step < steps; ++step) {
    const auto b = task.batch(step, seed);
    optim::set_lr_factor(opt, schedule(opt.steps()));
    opt.zero_grad();
    tape t;
    auto logits = Task::logits(student, t, b);  // (n, classes)
    auto loss = cross_entropy(logits, b.targets);
    if (teacher) {
      tensor<float, shape<dyn, dyn>> target;  // (n, classes)
      {
        no_grad guard;
        tape tt;
        target = Task::logits(*teacher, tt, b).value();
      }
      loss = loss + kl_div(logits, target, static_cast<float>(o.temperature)) * kd_scale;
    }
    t.backward(loss);
    optim::clip_grad_norm(opt, 1.0);
    opt.step();
    after_step(step, steps);
    recent = step ? 0.98 * recent + 0.02 * double(loss.value()[0]) : double(loss.value()[0]);
    if (seconds_since(t0) - last >= 1.0 || step + 1 == steps) {
      last = seconds_since(t0);
      std::fprintf(stderr, "\r%-30s step %zu/%zu  loss %.4f  %.0f s   ", label.c_str(), step + 1, steps, recent, last);
    }
  }
  std::fprintf(stderr, "\n");
  student.train(false);
}

/// Copies every parameter of `from` into the same-named, same-sized one of
/// `to` (stem, norms, head: what compression leaves as it is).
template <class From, class To>
void copy_matching(From& from, To& to) {
  std::map<std::string, std::vector<float>> values;
  visit_parameters(from, [&](const std::string& name, auto& p) {
    values[name].assign(p.value().data(), p.value().data() + p.size());
  });
  visit_parameters(to, [&](const std::string& name, auto& p) {
    const auto it = values.find(name);
    if (it != values.end() && it->second.size() == p.size()) std::copy(it->second.begin(), it->second.end(), p.value().data());
  });
}

// ---- the pipeline ---------------------------------------------------------------

/// One stage of one run.
struct row {
  int seed = 0;
  std::string kind, stage;
  std::size_t groups = 0;  // average weight sets per MoE layer (E before merging)
  std::size_t params = 0, expert_params = 0, bytes = 0;
  double flops = 0, score = 0, seconds = 0;
  double stable_rank = 0;  // mean Σs²/max(s)² of the expert matrices (per weight set); 0: not measured
};

template <class M>
std::size_t expert_parameters(M& model) {
  std::size_t n = 0;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name.find(".experts.") != std::string::npos) n += p.size();
  });
  return n;
}

/// The mean stable rank Σs²/max(s)² over every weight set of every expert
/// matrix of the model's MoE layers (a compressed model: of the weights it was
/// compressed from). MC-SMoE logs it to show that merged experts are lower-dimensional.
template <class M>
double mean_stable_rank(M& model) {
  double sum = 0;
  std::size_t n = 0;
  merge::for_each_moe_layer(model, [&](std::size_t, auto& layer) {
    auto& bank = layer.experts();
    if constexpr (requires { bank.stable_ranks(); }) {
      for (const auto& [name, ranks] : bank.stable_ranks())
        for (double r : ranks) sum += r, ++n;
    } else {
      visit_parameters(bank, [&](const std::string&, auto& p) {
        const auto e = p.shape().extents();
        if (e.size() != 3) return;  // biases
        for (std::size_t g = 0; g < e[0]; ++g) {
          tensor<float, shape<dyn, dyn>> w(shape<dyn, dyn>{e[1], e[2]});  // (in, out) of weight set g
          std::copy_n(p.value().data() + g * e[1] * e[2], e[1] * e[2], w.data());
          sum += merge::stable_rank(merge::thin_svd(w).s), ++n;
        }
      });
    }
  });
  return n ? sum / double(n) : 0;
}

template <class Task>
class pipeline {
 public:
  /// Rows go to `rows` and, as each stage ends, to `csv` (when open).
  pipeline(const options& o, Task& task, std::vector<row>& rows, std::FILE* csv)
      : o_(o), task_(task), rows_(rows), csv_(csv) {}

  template <class Spec>
  void run(int seed, const std::string& kind, const std::vector<int>& group_counts) {
    const auto s = static_cast<std::uint64_t>(seed);
    const auto e = static_cast<std::size_t>(o_.experts);
    const double dense_expert = 2.0 * (std::is_same_v<Spec, swiglu_spec> ? 3.0 : 2.0) * double(task_.d_model() * task_.d_ff());
    auto plain = [](const std::filesystem::path& path, auto& m) { moe::load_slot_maps(path, m); };
    auto fresh = [&] { return make<Spec>(s + 1000, 0); };

    // full: the teacher.
    auto teacher = make<Spec>(s, 0.01);
    auto t0 = std::chrono::steady_clock::now();
    train(o_, task_, teacher, static_cast<decltype(&teacher)>(nullptr), task_.teacher_steps(), task_.lr(), s, kind + " full",
          no_hook);
    auto f0 = fresh();
    record(seed, kind, "full", e, teacher, f0, plain, dense_expert, seconds_since(t0));

    // unaligned: merged without alignment (the ablation), at the smallest G.
    // aligned: every expert's hidden units permuted to expert 0: the same function.
    auto unaligned_source = copy_of<Spec>(teacher);
    t0 = std::chrono::steady_clock::now();
    merge::for_each_moe_layer(teacher, [](std::size_t, auto& layer) { merge::align_bank(layer.experts()); });
    auto f1 = fresh();
    record(seed, kind, "aligned", e, teacher, f1, plain, dense_expert, seconds_since(t0));

    // Routing statistics of the teacher on the calibration data.
    const auto calib = task_.evaluate(teacher, true);
    std::vector<std::vector<double>> usage, similarity;
    for (const auto& st : calib.routing) {
      usage.push_back(o_.k == 1 ? st.usage() : st.selection_frequency());  // top-k > 1 counts every choice
      similarity.push_back(st.logit_similarity());
    }
    if (o_.similarity == "weights") {  // the alternative: (cos + 1)/2 of the experts' flattened weights
      similarity.clear();
      merge::for_each_moe_layer(teacher, [&](std::size_t, auto& layer) {
        similarity.push_back(merge::weight_similarity(layer.experts()));
      });
    }

    for (int gc : group_counts) {
      const auto g = static_cast<std::size_t>(gc);
      const std::string tag = " G" + std::to_string(g);
      t0 = std::chrono::steady_clock::now();
      const auto groups = merge::group_experts(usage, similarity, {.average_groups = g});
      auto merged = copy_of<Spec>(teacher);
      merge::merge_model(merged, groups, usage, merge::weighting::frequency);
      const double merge_seconds = seconds_since(t0);
      auto f2 = fresh();
      record(seed, kind, "merged", g, merged, f2, plain, dense_expert, merge_seconds);

      auto baseline = [&](const std::string& name, model_t<Spec>& source, const std::vector<merge::layer_grouping>& gr,
                          merge::weighting w) {
        auto m = copy_of<Spec>(source);
        merge::merge_model(m, gr, usage, w);
        auto f = fresh();
        record(seed, kind, name, g, m, f, plain, dense_expert, 0);
      };
      baseline("unaligned", unaligned_source, groups, merge::weighting::frequency);
      baseline("uniform", teacher, groups, merge::weighting::uniform);
      baseline("random", teacher, merge::random_grouping(groups, s * 7919 + g), merge::weighting::frequency);

      // recovered (M-SMoE): distillation from the aligned teacher.
      t0 = std::chrono::steady_clock::now();
      train(o_, task_, merged, &teacher, task_.recover_steps(), task_.recover_lr(), s + 7, kind + " recover" + tag, no_hook);
      auto f3 = fresh();
      record(seed, kind, "recovered", g, merged, f3, plain, dense_expert, seconds_since(t0));

      // scratch: an MoE with G experts trained from scratch, as long as the
      // teacher plus the recovery: the same memory as `merged`, no teacher.
      t0 = std::chrono::steady_clock::now();
      auto small = make<Spec>(s + 500 + g, 0.01, g);
      train(o_, task_, small, static_cast<decltype(&small)>(nullptr), task_.teacher_steps() + task_.recover_steps(),
            task_.lr(), s + 13, kind + " scratch" + tag, no_hook);
      auto fs = make<Spec>(s + 1000, 0, g);
      record(seed, kind, "scratch", g, small, fs, plain, dense_expert, seconds_since(t0));

      // compressed (MC-SMoE): L·R + S per merged weight, S pruned while distilling, then packed.
      t0 = std::chrono::steady_clock::now();
      auto compressed = compress<Spec>(merged);
      const std::size_t steps = task_.compress_steps();
      merge::pruner prune({.total_steps = steps, .warmup_steps = std::min<std::size_t>(std::size_t(o_.prune_warmup), steps / 6),
                           .final_ratio = o_.keep});
      train(o_, task_, compressed, &teacher, steps, task_.recover_lr(), s + 11, kind + " compress" + tag,
            [&](std::size_t, std::size_t) { prune.step(compressed); });
      merge::for_each_moe_layer(compressed, [](std::size_t, auto& layer) { layer.experts().pack(); });
      const double seconds = seconds_since(t0);
      auto fc = make_compressed<Spec>(s + 1000);
      auto layout = [](const std::filesystem::path& path, auto& m) { merge::load_compressed_layout(path, m); };
      record(seed, kind, "compressed", g, compressed, fc, layout, compressed_expert_flops(compressed), seconds);
    }
  }

 private:
  template <class Spec>
  using model_t = typename Task::template model<moe_t<Spec>>;

  static void no_hook(std::size_t, std::size_t) {}

  /// A fresh model of the pipeline's sizes (E = --experts unless `experts`;
  /// its weights are overwritten by a load or copy).
  template <class Spec>
  model_t<Spec> make(std::uint64_t seed, double balance, std::size_t experts = 0) const {
    const auto e = experts ? experts : static_cast<std::size_t>(o_.experts);
    const auto k = std::min(e, static_cast<std::size_t>(o_.k));
    return task_.template make<moe_t<Spec>>(seed, [&](rng& g, std::size_t d, std::size_t ff) {
      return moe_t<Spec>(router_t(g, {.load_balance_weight = balance}, d, e, k), typename moe_t<Spec>::bank_type(g, e, d, ff));
    });
  }
  template <class Spec>
  model_t<Spec> copy_of(model_t<Spec>& source) const {
    auto m = make<Spec>(0, 0);
    nn::copy_state(source, m);
    return m;
  }

  /// A compressed model of the pipeline's sizes at rank --rank, unmerged (a load resizes it).
  template <class Spec>
  auto make_compressed(std::uint64_t seed) const {
    const auto e = static_cast<std::size_t>(o_.experts), k = static_cast<std::size_t>(o_.k), r = std::size_t(o_.rank);
    return task_.template make<compressed_t<Spec>>(seed, [&](rng& g, std::size_t d, std::size_t ff) {
      return compressed_t<Spec>(router_t(g, {}, d, e, k), typename compressed_t<Spec>::bank_type(g, e, d, ff, r));
    });
  }
  /// `merged` with each MoE layer compressed at rank --rank (merge::compress).
  template <class Spec>
  auto compress(model_t<Spec>& merged) const {
    std::vector<moe_t<Spec>*> layers;
    merge::for_each_moe_layer(merged, [&](std::size_t, auto& layer) { layers.push_back(&layer); });
    std::size_t next = 0;
    auto m = task_.template make<compressed_t<Spec>>(0, [&](rng&, std::size_t, std::size_t) {
      return merge::compress(*layers.at(next++), std::size_t(o_.rank));
    });
    copy_matching(merged, m);
    return m;
  }

  /// Expert FLOPs per routed token of a compressed model, averaged over its
  /// MoE layers (each layer's average over its weight sets).
  template <class M>
  static double compressed_expert_flops(M& model) {
    double sum = 0;
    std::size_t n = 0;
    merge::for_each_moe_layer(model, [&](std::size_t, auto& layer) { sum += 2.0 * layer.experts().multiply_adds_per_row(), ++n; });
    return n ? sum / double(n) : 0;
  }

  /// Saves `model`, reloads it into `fresh` (sized from the file first by
  /// `prepare`), evaluates the reloaded model and appends its row.
  template <class M, class Fresh, class Prepare>
  void record(int seed, const std::string& kind, const std::string& stage, std::size_t groups, M& model, Fresh& fresh,
              Prepare&& prepare, double expert_flops, double seconds) {
    const auto path = std::filesystem::temp_directory_path() /
                      ("mcsmoe-" + std::to_string(::getpid()) + "-" + kind + "-" + stage + ".safetensors");
    io::save_safetensors(path, model);
    prepare(path, fresh);
    io::load_safetensors(path, fresh);
    row r{.seed = seed, .kind = kind, .stage = stage, .groups = groups};
    r.bytes = static_cast<std::size_t>(std::filesystem::file_size(path));
    std::filesystem::remove(path);
    r.stable_rank = stage == "aligned" || stage == "unaligned" || stage == "uniform" || stage == "random"
                        ? 0
                        : mean_stable_rank(model);  // compressed: the ranks recorded at compression
    r.params = count_parameters(fresh);
    r.expert_params = expert_parameters(fresh);
    r.score = task_.evaluate(fresh).score;
    std::size_t router_slots = 0;  // of the first MoE layer: E, or G for `scratch`
    merge::for_each_moe_layer(fresh, [&](std::size_t l, auto& layer) {
      if (l == 0) router_slots = layer.experts().experts();
    });
    r.flops = task_.flops(expert_flops, router_slots);
    r.seconds = seconds;
    std::fprintf(stderr, "  %-7s seed %d  %-10s G %2zu  %s %.4f  params %zu  bytes %zu\n", kind.c_str(), seed,
                 stage.c_str(), groups, Task::score_name, r.score, r.params, r.bytes);
    rows_.push_back(r);
    if (csv_) {
      std::fprintf(csv_, "%s,%d,%s,%s,%zu,%zu,%zu,%zu,%.0f,%.5f,%.2f,%.3f\n", o_.task.c_str(), r.seed, r.kind.c_str(),
                   r.stage.c_str(), r.groups, r.params, r.expert_params, r.bytes, r.flops, r.score, r.seconds,
                   r.stable_rank);
      std::fflush(csv_);
    }
  }

  const options& o_;
  Task& task_;
  std::vector<row>& rows_;
  std::FILE* csv_;
};

std::vector<int> int_list(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (const auto& item : examples::split_list(text)) {
    std::size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size()) throw value_error("--" + flag + ": '" + item + "' is not an integer");
    out.push_back(v);
  }
  if (out.empty()) throw value_error("--" + flag + ": empty list");
  return out;
}

/// Mean and sample standard deviation of a list (examples::mean_std).
double mean_of(const std::vector<double>& v) { return examples::mean_std::of(v, [](double x) { return x; }).mean; }
double std_of(const std::vector<double>& v) { return examples::mean_std::of(v, [](double x) { return x; }).std; }

/// Runs every seed and kind on `task`, prints the table and the JSON line;
/// returns the exit status (1 when a trained stage misses --min-accuracy / --max-loss).
template <class Task>
int run_all(const options& o, Task& task, const std::vector<int>& group_counts, const std::vector<std::string>& kinds) {
  std::printf("mcsmoe: %s; %d experts of width %zu, top-%d, %d threads, BLAS kernel %s\n", task.describe().c_str(),
              o.experts, task.d_ff(), o.k, o.threads, examples::blas_core_name().c_str());
  std::fflush(stdout);
  std::FILE* csv = nullptr;  // one line per stage, written as it ends (a stopped run keeps what it did)
  if (!o.csv.empty()) {
    csv = std::fopen(o.csv.c_str(), "w");
    if (!csv) throw io_error("--csv: cannot write " + o.csv);
    std::fprintf(csv, "task,seed,kind,stage,groups,params,expert_params,bytes,flops,score,seconds,stable_rank\n");
  }
  std::vector<row> rows;
  pipeline<Task> p(o, task, rows, csv);
  const auto t0 = std::chrono::steady_clock::now();
  for (int seed = o.seed; seed < o.seed + o.seeds; ++seed)
    for (const auto& kind : kinds) {
      if (kind == "ffn") p.template run<ffn_spec>(seed, kind, group_counts);
      else p.template run<swiglu_spec>(seed, kind, group_counts);
    }

  if (csv) std::fclose(csv);

  // Mean ± std over seeds of each (kind, stage, G), in the order first seen.
  struct summary {
    std::string kind, stage;
    std::size_t groups = 0;
    std::vector<double> score, params, bytes, flops, seconds, stable_rank;
  };
  std::vector<summary> table;
  for (const auto& r : rows) {
    auto it = std::find_if(table.begin(), table.end(), [&](const summary& s) {
      return s.kind == r.kind && s.stage == r.stage && s.groups == r.groups;
    });
    if (it == table.end()) it = table.insert(table.end(), summary{r.kind, r.stage, r.groups, {}, {}, {}, {}, {}, {}});
    it->score.push_back(r.score), it->params.push_back(double(r.params)), it->bytes.push_back(double(r.bytes));
    it->flops.push_back(r.flops), it->seconds.push_back(r.seconds), it->stable_rank.push_back(r.stable_rank);
  }
  std::map<std::string, std::pair<double, double>> full;  // kind -> (bytes, flops) of the full model
  for (const auto& s : table)
    if (s.stage == "full") full[s.kind] = {mean_of(s.bytes), mean_of(s.flops)};
  const char* unit = Task::higher_is_better ? "%" : "";
  const double scale = Task::higher_is_better ? 100 : 1;
  std::printf("\n%-7s %-10s %3s %10s %10s %7s %11s %7s %8s %7s   %s (mean ± std over %d seeds)\n", "kind", "stage",
              "G", "params", "bytes", "memory", "FLOPs", "FLOPs", "seconds", "s-rank", Task::score_name, o.seeds);
  for (const auto& s : table) {
    const auto [fb, ff] = full[s.kind];
    std::printf("%-7s %-10s %3zu %10.0f %10.0f %6.1f%% %11.0f %6.1f%% %8.1f %7.2f   %.4f%s ± %.4f\n", s.kind.c_str(),
                s.stage.c_str(), s.groups, mean_of(s.params), mean_of(s.bytes), 100 * mean_of(s.bytes) / fb,
                mean_of(s.flops), 100 * mean_of(s.flops) / ff, mean_of(s.seconds), mean_of(s.stable_rank),
                scale * mean_of(s.score), unit, scale * std_of(s.score));
  }
  std::printf("{\"example\": \"mcsmoe\", \"task\": \"%s\", \"experts\": %d, \"k\": %d, \"seeds\": %d, \"threads\": %d, "
              "\"blas_core\": \"%s\", \"seconds\": %.1f, \"rows\": [",
              o.task.c_str(), o.experts, o.k, o.seeds, o.threads, examples::blas_core_name().c_str(), seconds_since(t0));
  for (std::size_t i = 0; i < table.size(); ++i) {
    const auto& s = table[i];
    std::printf("%s{\"kind\": \"%s\", \"stage\": \"%s\", \"groups\": %zu, \"params\": %.0f, \"bytes\": %.0f, "
                "\"flops\": %.0f, \"stable_rank\": %.3f, \"score_mean\": %.5f, \"score_std\": %.5f}",
                i ? ", " : "", s.kind.c_str(), s.stage.c_str(), s.groups, mean_of(s.params), mean_of(s.bytes),
                mean_of(s.flops), mean_of(s.stable_rank), mean_of(s.score), std_of(s.score));
  }
  std::printf("]}\n");

  int status = 0;
  for (const auto& r : rows) {
    if (r.stage != "full" && r.stage != "recovered" && r.stage != "compressed") continue;
    const bool bad = Task::higher_is_better ? r.score < o.min_accuracy : (o.max_loss > 0 && r.score > o.max_loss);
    if (bad) {
      std::fprintf(stderr, "mcsmoe: %s %s G %zu seed %d: %s %.4f misses the bound\n", r.kind.c_str(), r.stage.c_str(),
                   r.groups, r.seed, Task::score_name, r.score);
      status = 1;
    }
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("mcsmoe",
            "Merge, Then Compress (MC-SMoE) on a Switch-style MoE: train, align, merge by routing statistics, recover\n"
            "by distillation, compress (low rank + pruned sparse); at every stage the model's parameters, checkpoint\n"
            "bytes, FLOPs and score, over several seeds. The last stdout line is a JSON object.");
  cli.add("task", o.task, "fashion (Fashion-MNIST classifier) | text (character language model)");
  cli.add("data", o.data, "fashion: the Fashion-MNIST folder; text: a text file (default: tinyshakespeare)");
  cli.add("model", o.model, "fashion: B_<blocks>-Wi_<width>[-Exp_<expansion>], each expert width -> expansion·width");
  cli.add("d-model", o.d_model, "text: model width (experts d -> 4d)");
  cli.add("layers", o.layers, "text: transformer layers");
  cli.add("heads", o.heads, "text: attention heads");
  cli.add("seq", o.seq, "text: characters per window");
  cli.add("eval-tokens", o.eval_tokens, "text: validation characters scored (0: all)");
  cli.add("experts", o.experts, "experts per MoE layer (E)");
  cli.add("k", o.k, "experts per token (1: Switch, 2: Mixtral-style)");
  cli.add("kinds", o.kinds, "comma list of expert kinds: ffn (ReLU, no biases, as switch-base), swiglu");
  cli.add("groups", o.groups, "comma list of average weight sets per MoE layer after merging (each in [1, E])");
  cli.add("seeds", o.seeds, "seeds per kind (--seed, --seed + 1, ...): init, batches, random grouping");
  cli.add("seed", o.seed, "the first seed");
  cli.add("steps", o.steps, "steps to train the full MoE (0: fashion 8 epochs, text 1500)");
  cli.add("recover-steps", o.recover_steps, "distillation steps after merging (0: fashion 2 epochs, text 300)");
  cli.add("compress-steps", o.compress_steps, "distillation steps while pruning (0: fashion 4 epochs, text 600)");
  cli.add("batch", o.batch, "images or windows per step (0: fashion 128, text 32)");
  cli.add("lr", o.lr, "AdamW peak learning rate of the full MoE (0: fashion 1e-3, text 3e-3)");
  cli.add("recover-lr", o.recover_lr, "AdamW peak learning rate of the fine-tunes (0: fashion 3e-4, text 1e-3)");
  cli.add("weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices only)");
  cli.add("kd-weight", o.kd_weight, "weight of the distillation term (the reference: 0.2)");
  cli.add("temperature", o.temperature, "distillation temperature T (the reference: 2)");
  cli.add("kd-t2", o.kd_t2, "scale the distillation term by T^2 (the reference does not)");
  cli.add("train-routers", o.train_routers, "let the fine-tunes train the routers (the reference freezes them)");
  cli.add("similarity", o.similarity, "how members pick their dominant expert: router-logits (MC-SMoE's default) | weights");
  cli.add("calibration", o.calibration, "samples whose routing gives usage and similarity (0: 2048 images, 256 windows)");
  cli.add("rank", o.rank, "rank r of L·R in the compression (the reference: 32 of 768)");
  cli.add("keep", o.keep, "final share of the sparse parts' output units kept, one threshold (the reference: 0.1)");
  cli.add("prune-warmup", o.prune_warmup, "steps before pruning starts (at most a sixth of --compress-steps)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("train-subset", o.train_subset, "fashion: train on the first N training images only (0: all 60000)");
  cli.add("eval-batch", o.eval_batch, "fashion: images per evaluation batch");
  cli.add("csv", o.csv, "write one line per (seed, kind, stage, G) to this file");
  cli.add("min-accuracy", o.min_accuracy, "fashion: exit 1 when a trained stage's accuracy is below this fraction");
  cli.add("max-loss", o.max_loss, "text: exit 1 when a trained stage's validation loss is above this (0: no bound)");
  if (!cli.parse(argc, argv)) return 0;
  examples::print_blas_line();
  examples::require_writable_parent("--csv", o.csv);  // before any training
  if (o.experts < 2 || o.k < 1 || o.k > o.experts || o.seeds < 1 || o.steps < 0 || o.recover_steps < 0 ||
      o.compress_steps < 0 || o.batch < 0 || o.threads < 1 || o.train_subset < 0 || o.calibration < 0 || o.rank < 1 ||
      o.eval_batch < 1 || o.prune_warmup < 0 || o.d_model < 1 || o.layers < 1 || o.heads < 1 || o.seq < 2 ||
      o.eval_tokens < 0)
    throw value_error("--experts >= 2, 1 <= --k <= --experts; --seeds, --threads, --rank, --eval-batch, "
                      "--d-model, --layers, --heads >= 1, --seq >= 2; the step counts, --batch, --calibration, "
                      "--train-subset, --prune-warmup, --eval-tokens >= 0");
  if (!(o.keep > 0 && o.keep <= 1)) throw value_error("--keep must be in (0, 1], got " + std::to_string(o.keep));
  for (const auto& [name, v] : {std::pair{"--temperature", o.temperature}, {"--lr", o.lr}, {"--recover-lr", o.recover_lr},
                                {"--kd-weight", o.kd_weight}, {"--weight-decay", o.weight_decay}})
    if (!(v >= 0 && std::isfinite(v))) throw value_error(std::string(name) + " must be finite and >= 0");
  if (!(o.temperature > 0)) throw value_error("--temperature must be positive");
  if (o.similarity != "router-logits" && o.similarity != "weights")
    throw value_error("--similarity: '" + o.similarity + "' is neither router-logits nor weights");
  const auto group_counts = int_list("groups", o.groups);
  for (int g : group_counts)
    if (g < 1 || g > o.experts) throw value_error("--groups: " + std::to_string(g) + " is not in [1, --experts]");
  const auto kinds = examples::split_list(o.kinds);
  if (kinds.empty()) throw value_error("--kinds: empty list");
  for (const auto& kind : kinds)
    if (kind != "ffn" && kind != "swiglu") throw value_error("--kinds: '" + kind + "' is neither ffn nor swiglu");
  set_num_threads(o.threads);
  if (o.task == "fashion") {
    fashion_task task(o);
    return run_all(o, task, group_counts, kinds);
  }
  if (o.task == "text") {
    text_task task(o);
    return run_all(o, task, group_counts, kinds);
  }
  throw value_error("--task: '" + o.task + "' is neither fashion nor text");
} catch (const moekit::error& e) {
  std::fprintf(stderr, "mcsmoe: %s\n", e.what());
  return 2;
}

// moekit/mowst/training.hpp — training an expert alone, Mowst (alternating
// turns) and Mowst* (joint), following the reference (digest §2.3–2.4):
//
//   train_expert      one model, cross entropy on the training nodes, early
//                     stopping on validation accuracy (ties: lower validation
//                     loss), the best epoch restored. The baselines, and the
//                     optional pre-training of either expert.
//   train_mowst       optional pre-training; then big epochs of two turns:
//                       weak turn    {MLP, gate} learn mowst_loss, the GNN is a
//                                    constant (its outputs computed once per turn)
//                       strong turn  the GNN learns, MLP and gate are constants
//                     each turn stops early on validation accuracy (patience)
//                     and keeps its best state only if it beats the best score
//                     so far (else reverts); stop after big_patience big
//                     epochs without a gain.
//   train_mowst_star  optional pre-training; one optimizer over everything,
//                     mowst_star_loss, best epoch by validation loss, early
//                     stopping after `patience` epochs without improvement.
//
// Model selection uses the *expected* validation accuracy of the sampled rule
// (inference.hpp): it is what the reference's m-draw estimate measures, without
// its sampling noise. The constant expert of a turn runs in training mode
// (dropout) under no_grad each epoch by default, so that both loss terms see
// dropout alike (train_options::frozen_train_mode; with batch norm its running
// statistics then move, as they would in PyTorch); with false it runs once per
// turn in eval mode.
//
// Where we differ from the reference on purpose (its quirks, digest §2.8):
// pre-training selects on the validation nodes (the reference's "val loss"
// reads the training nodes); the gate learns with lr_gate in Mowst too (the
// reference ignores lr_gate there); Mowst* stops early (the reference runs
// all epochs); the confidence is computed from logits with one softmax, also
// at test time. Pre-training runs with `pretrain_dropout`, the mixture phase
// with the dropout the mixture was built with (the reference's dropout_gate).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../nn/layer.hpp"
#include "../optim/adamw.hpp"
#include "inference.hpp"
#include "mowst.hpp"

namespace moekit::mowst {

enum class pretrain { none, weak, strong, both };

/// Where a training run is, for progress displays.
struct progress {
  const char* phase = "";    // "expert", "pretrain-weak", "pretrain-strong", "weak-turn", "strong-turn", "joint"
  std::size_t epoch = 0;     // epochs of this phase so far
  std::size_t big_epoch = 0; // Mowst's big epoch (0 elsewhere)
  double val = 0;            // this epoch's validation accuracy
  double best = 0;           // best validation accuracy so far in this phase
};

struct train_options {
  double lr = 0.01;            // experts
  double lr_gate = 0.01;       // gate
  double weight_decay = 5e-4;
  bool decoupled_decay = true; // AdamW, as the reference; false: Adam with L2 decay (Kipf & Welling's GCN)
  std::size_t max_epochs = 20000;     // per expert run, per turn, and for Mowst*
  std::size_t patience = 100;         // epochs without a better validation score
  double min_delta = 1e-4;            // a better score must gain more than this (expected accuracies are continuous)
  std::size_t big_patience = 10;      // Mowst: big epochs without a gain
  std::size_t max_big_epochs = 20000;
  pretrain pretraining = pretrain::strong;
  double pretrain_dropout = 0.5;      // dropout of the experts while pre-trained alone
  bool frozen_train_mode = true;      // Mowst: the constant expert of a turn runs in training mode (dropout), each
                                      // epoch, so both loss terms see dropout alike; false: once, in eval mode
  std::function<void(const progress&)> on_progress{};
};

/// What a training run reached (the state it leaves the model in).
struct train_result {
  double val_accuracy = 0;     // of the restored best state (expected accuracy for mixtures)
  std::size_t epochs = 0;      // optimizer steps over all phases
  std::size_t big_epochs = 0;  // Mowst only
};

namespace detail {

/// Adam or AdamW (chosen at run time) over groups of parameters.
template <class T>
class adam_optimizer {
 public:
  struct group {
    std::vector<parameter_view<T>> params;
    double lr;
  };
  adam_optimizer(std::vector<group> groups, const train_options& o) {
    if (o.decoupled_decay) adamw_ = make<optim::adamw<T>>(std::move(groups), o.weight_decay);
    else adam_ = make<optim::adam<T>>(std::move(groups), o.weight_decay);
  }
  void zero_grad() { adamw_ ? adamw_->zero_grad() : adam_->zero_grad(); }
  void step() { adamw_ ? adamw_->step() : adam_->step(); }

 private:
  template <class Opt>
  static std::unique_ptr<Opt> make(std::vector<group> groups, double wd) {
    std::vector<typename Opt::group_spec> specs;
    for (auto& g : groups)
      if (!g.params.empty()) specs.push_back({std::move(g.params), {.lr = g.lr, .weight_decay = wd}});
    return std::make_unique<Opt>(std::move(specs));
  }
  std::unique_ptr<optim::adamw<T>> adamw_;
  std::unique_ptr<optim::adam<T>> adam_;
};

/// Copies of every parameter and buffer of a model (for early stopping with revert).
template <class T>
struct snapshot {
  std::vector<tensor<T, shape<dyn>>> values;
};

template <class T, parameterized M>
snapshot<T> take(M& model) {
  snapshot<T> s;
  visit_parameters(model, [&](const std::string&, auto& p) { s.values.push_back(p.value().reshape(shape<dyn>{p.size()}).clone()); });
  visit_buffers(model, [&](const std::string&, auto& b) { s.values.push_back(b.reshape(shape<dyn>{b.size()}).clone()); });
  return s;
}

/// Writes a snapshot back in place (optimizers hold views of the parameters).
/// The model must have the structure of the one the snapshot was taken of.
template <class T, parameterized M>
void restore(M& model, const snapshot<T>& s) {
  std::size_t k = 0;
  auto put = [&](const char* what, std::size_t size, T* dst) {
    if (k >= s.values.size() || s.values[k].size() != size)
      throw value_error(std::string("mowst: snapshot does not fit the model (") + what + " " + std::to_string(k) + ")");
    kernels<cpu>::copy(size, s.values[k++].data(), dst);
  };
  visit_parameters(model, [&](const std::string&, auto& p) { put("parameter", p.size(), p.value().data()); });
  visit_buffers(model, [&](const std::string&, auto& b) { put("buffer", b.size(), b.data()); });
  if (k != s.values.size()) throw value_error("mowst: snapshot has more tensors than the model");
}

template <class T, class B>
tensor<index_t, shape<dyn>, B> labels_of(const graph_inputs<T, B>& in, const tensor<index_t, shape<dyn>, B>& nodes) {
  return gather_rows(in.labels, nodes);
}

/// Fraction of `nodes` whose prediction matches the label.
template <class T, class B>
double accuracy_of(const tensor<index_t, shape<dyn>, B>& pred, const graph_inputs<T, B>& in,
                   const tensor<index_t, shape<dyn>, B>& nodes) {
  std::size_t right = 0;
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    const auto i = static_cast<std::size_t>(nodes[k]);
    right += pred[i] == in.labels[i];
  }
  return nodes.size() ? static_cast<double>(right) / static_cast<double>(nodes.size()) : 0.0;
}

template <class T, class S, class B>
tensor<index_t, shape<dyn>, B> predictions(const tensor<T, S, B>& logits) {
  auto p = argmax(logits);
  return p.reshape(shape<dyn>{p.size()});
}

/// Early stopping: counts epochs without a better score.
struct stopper {
  std::size_t patience;
  double min_delta = 0;
  double best = -std::numeric_limits<double>::infinity();
  double best_tiebreak = std::numeric_limits<double>::infinity();
  std::size_t bad = 0;
  /// True when (score, tiebreak) is the best so far (higher score; at equal score, lower tiebreak).
  bool improved(double score, double tiebreak = 0) {
    if (score > best + min_delta || (score >= best - min_delta && tiebreak < best_tiebreak)) {
      best = score;
      best_tiebreak = tiebreak;
      bad = 0;
      return true;
    }
    ++bad;
    return false;
  }
  bool done() const noexcept { return bad >= patience; }
};

inline void report(const train_options& o, const char* phase, std::size_t epoch, std::size_t big, double val,
                   double best) {
  if (o.on_progress) o.on_progress({phase, epoch, big, val, best});
}

template <class T>
std::vector<parameter_view<T>> views_of(auto&... layers) {
  std::vector<parameter_view<T>> out;
  (
      [&] {
        auto v = parameter_views<T>(layers);
        out.insert(out.end(), v.begin(), v.end());
      }(),
      ...);
  return out;
}

}  // namespace detail

/// Trains one model alone: `forward(tape&)` returns its logits (n, K) for
/// every node of `in`; `net` has train()/eval(). Cross entropy on the training
/// nodes, early stopping on validation accuracy; the best epoch is restored.
template <class Net, class Forward, class T = float>
train_result train_expert(Net& net, Forward forward, const graph_inputs<T>& in, const train_options& o,
                          const char* phase = "expert") {
  detail::adam_optimizer<T> opt({{parameter_views<T>(net), o.lr}}, o);
  const auto train_labels = detail::labels_of(in, in.train), val_labels = detail::labels_of(in, in.val);
  detail::stopper stop{o.patience, o.min_delta};
  auto best = detail::take<T>(net);
  train_result r;
  for (std::size_t epoch = 0; epoch < o.max_epochs; ++epoch) {
    {
      net.train();
      tape t;
      opt.zero_grad();
      t.backward(cross_entropy(gather_rows(forward(t), in.train), train_labels));
      opt.step();
      ++r.epochs;
    }
    no_grad off;
    tape t;
    net.eval();
    auto logits = forward(t);
    const double acc = detail::accuracy_of(detail::predictions(logits.value()), in, in.val);
    const double loss = static_cast<double>(cross_entropy(gather_rows(logits, in.val), val_labels).value()[0]);
    if (stop.improved(acc, loss)) best = detail::take<T>(net);
    detail::report(o, phase, epoch + 1, 0, acc, stop.best);
    if (stop.done()) break;
  }
  detail::restore(net, best);
  net.eval();
  r.val_accuracy = stop.best;
  return r;
}

namespace detail {

/// Pre-trains the experts `o.pretraining` names, each alone with
/// o.pretrain_dropout: a copy built with that dropout starts from the
/// mixture's expert, trains, and is copied back.
template <class Conv, class T = typename Conv::value_type>
std::size_t pretrain_experts(mixture<Conv>& m, const graph_inputs<T>& in, const train_options& o) {
  std::size_t epochs = 0;
  rng unused(0);  // the copies' initial values are overwritten at once
  if (o.pretraining == pretrain::weak || o.pretraining == pretrain::both) {
    mlp_config c = m.weak().config();
    c.dropout = o.pretrain_dropout;
    mlp<T> net(unused, c);
    restore(net, take<T>(m.weak()));
    epochs += train_expert(net, [&](tape& t) { return weak_logits(net, in, t); }, in, o, "pretrain-weak").epochs;
    restore(m.weak(), take<T>(net));
  }
  if (o.pretraining == pretrain::strong || o.pretraining == pretrain::both) {
    graph::gnn_config c = m.strong().config();
    c.dropout = o.pretrain_dropout;
    graph::gnn<Conv> net(unused, c, m.options());
    restore(net, take<T>(m.strong()));
    epochs += train_expert(net, [&](tape& t) { return strong_logits(net, in, t); }, in, o, "pretrain-strong").epochs;
    restore(m.strong(), take<T>(net));
  }
  return epochs;
}

/// One Mowst turn: `step()` trains one epoch, `score()` gives the expected
/// validation accuracy; `part` is what the turn trains. Keeps the turn's best
/// state if it beats `best_score` (and raises it), else reverts `part` to its
/// state at the start. Returns whether it improved.
template <class T, class Part, class Step, class Score>
bool run_turn(Part& part, Step step, Score score, double& best_score, const train_options& o, const char* phase,
              std::size_t big, std::size_t& epochs) {
  const auto start = take<T>(part);
  auto best = start;
  stopper stop{o.patience, o.min_delta};
  for (std::size_t epoch = 0; epoch < o.max_epochs; ++epoch) {
    step();
    ++epochs;
    const double s = score();
    if (stop.improved(s)) best = take<T>(part);
    report(o, phase, epoch + 1, big, s, std::max(stop.best, best_score));
    if (stop.done()) break;
  }
  if (stop.best > best_score + o.min_delta) {
    restore(part, best);
    best_score = stop.best;
    return true;
  }
  restore(part, start);
  return false;
}

/// The weak expert and the gate of a mixture M (node or link) as one
/// parameter tree: a weak turn's part.
template <class M>
struct weak_and_gate {
  M* m;
  template <class V>
  void parameters(V&& visit) {
    visit("weak", m->weak());
    visit("gate", m->gate());
  }
};

}  // namespace detail

/// Mowst: alternating turns of the weak expert (with the gate) and the strong
/// expert on mowst_loss; see the top of this file. Leaves `m` in its best
/// state, in eval mode.
template <class Conv, class T = typename Conv::value_type>
train_result train_mowst(mixture<Conv>& m, const graph_inputs<T>& in, const train_options& o) {
  train_result r;
  r.epochs = detail::pretrain_experts(m, in, o);
  detail::adam_optimizer<T> weak_opt({{parameter_views<T>(m.weak()), o.lr}, {parameter_views<T>(m.gate()), o.lr_gate}}, o);
  detail::adam_optimizer<T> strong_opt({{parameter_views<T>(m.strong()), o.lr}}, o);
  const auto train_labels = detail::labels_of(in, in.train);

  // Eval-mode outputs of the frozen part of a turn.
  auto strong_eval = [&] {
    no_grad off;
    tape t;
    m.strong().eval();
    return strong_logits(m.strong(), in, t).value();  // (n, K)
  };
  auto weak_eval = [&] {
    no_grad off;
    tape t;
    m.weak().eval();
    m.gate().eval();
    auto z = weak_logits(m.weak(), in, t);
    return std::pair{z.value(), m.gate_on(z, in, t).value()};  // (n, K), (n)
  };

  // Training-mode outputs of the frozen part on the training nodes (no tape).
  auto strong_train_rows = [&] {
    no_grad off;
    tape t;
    m.strong().train();
    return gather_rows(strong_logits(m.strong(), in, t).value(), in.train);  // (m, K)
  };
  auto weak_train_rows = [&] {
    no_grad off;
    tape t;
    m.weak().train();
    m.gate().train();
    auto z = weak_logits(m.weak(), in, t);
    return std::pair{gather_rows(z.value(), in.train), gather_rows(m.gate_on(z, in, t).value(), in.train)};
  };

  double best_score = -std::numeric_limits<double>::infinity();
  std::size_t stale = 0;
  detail::weak_and_gate<mixture<Conv>> weak_part{&m};
  for (std::size_t big = 1; big <= o.max_big_epochs; ++big) {
    ++r.big_epochs;
    // Weak turn: the GNN's logits are constants.
    const auto z_s = strong_eval();
    const auto strong_pred = detail::predictions(z_s);
    const auto z_s_train = gather_rows(z_s, in.train);
    const bool weak_gain = detail::run_turn<T>(weak_part, [&] {
      m.weak().train();
      m.gate().train();
      tape t;
      weak_opt.zero_grad();
      auto z = weak_logits(m.weak(), in, t);
      auto c = m.gate_on(z, in, t);
      auto z_s_rows = o.frozen_train_mode ? strong_train_rows() : z_s_train;
      t.backward(mowst_loss(gather_rows(z, in.train), t.input(z_s_rows), gather_rows(c, in.train), train_labels));
      weak_opt.step();
    }, [&] {
      const auto [z, c] = weak_eval();
      return expected_accuracy(detail::predictions(z), strong_pred, c, in.labels, in.val).accuracy;
    }, best_score, o, "weak-turn", big, r.epochs);

    // Strong turn: the MLP's logits and the confidence are constants.
    // (c is captured by the score lambda below: a structured binding would not
    // be capturable before C++20 compilers that implement P1381, e.g. clang 14.)
    const auto weak_out = weak_eval();
    const auto& z_w = weak_out.first;  // (n, K)
    const auto& c = weak_out.second;   // (n)
    const auto weak_pred = detail::predictions(z_w);
    const auto z_w_train = gather_rows(z_w, in.train);
    const auto c_train = gather_rows(c, in.train);
    const bool strong_gain = detail::run_turn<T>(m.strong(), [&] {
      m.strong().train();
      tape t;
      strong_opt.zero_grad();
      auto z = strong_logits(m.strong(), in, t);
      const auto [zw_rows, c_rows] = o.frozen_train_mode ? weak_train_rows() : std::pair{z_w_train, c_train};
      t.backward(mowst_loss(t.input(zw_rows), gather_rows(z, in.train), t.input(c_rows), train_labels));
      strong_opt.step();
    }, [&] {
      return expected_accuracy(weak_pred, detail::predictions(strong_eval()), c, in.labels, in.val).accuracy;
    }, best_score, o, "strong-turn", big, r.epochs);

    if (weak_gain || strong_gain) stale = 0;
    else if (++stale >= o.big_patience) break;
  }
  m.eval();
  r.val_accuracy = best_score;
  return r;
}

/// Mowst*: experts and gate trained together on mowst_star_loss; the best
/// epoch by validation loss is restored. Leaves `m` in eval mode.
template <class Conv, class T = typename Conv::value_type>
train_result train_mowst_star(mixture<Conv>& m, const graph_inputs<T>& in, const train_options& o) {
  train_result r;
  r.epochs = detail::pretrain_experts(m, in, o);
  detail::adam_optimizer<T> opt({{detail::views_of<T>(m.weak(), m.strong()), o.lr}, {parameter_views<T>(m.gate()), o.lr_gate}}, o);
  const auto train_labels = detail::labels_of(in, in.train), val_labels = detail::labels_of(in, in.val);
  detail::stopper stop{o.patience, o.min_delta};
  auto best = detail::take<T>(m);
  double best_acc = 0;
  for (std::size_t epoch = 0; epoch < o.max_epochs; ++epoch) {
    {
      m.train();
      tape t;
      opt.zero_grad();
      auto out = m(in, t);
      t.backward(mowst_star_loss(gather_rows(out.weak, in.train), gather_rows(out.strong, in.train),
                                 gather_rows(out.confidence, in.train), train_labels));
      opt.step();
      ++r.epochs;
    }
    no_grad off;
    tape t;
    m.eval();
    auto out = m(in, t);
    const double loss = static_cast<double>(mowst_star_loss(gather_rows(out.weak, in.val), gather_rows(out.strong, in.val),
                                                            gather_rows(out.confidence, in.val), val_labels)
                                                .value()[0]);
    const double acc = detail::accuracy_of(mixed_prediction(out.weak.value(), out.strong.value(), out.confidence.value()), in, in.val);
    if (stop.improved(-loss)) {
      best = detail::take<T>(m);
      best_acc = acc;
    }
    detail::report(o, "joint", epoch + 1, 0, acc, best_acc);
    if (stop.done()) break;
  }
  detail::restore(m, best);
  m.eval();
  r.val_accuracy = best_acc;
  return r;
}

}  // namespace moekit::mowst

// scaling_mlp — "Scaling MLPs" (Bachmann et al. 2023) on Fashion-MNIST: a
// bottleneck MLP (B_<blocks>-Wi_<width>), the standard S-MLP, or an
// MLP-Mixer, trained from scratch on the flattened, normalised 28×28 images
// with AdamW / LION / SGD, linear warm-up + cosine decay, label smoothing,
// optional MixUp and crop+flip augmentation. Checkpoints (model, optimizer
// state, epoch) let a run stop and resume with the same results.
//
//   build/bin/scaling_mlp                                   # the default recipe
//   build/bin/scaling_mlp --model B_6-Wi_512 --epochs 20 --optimizer lion --lr 2e-4
//   build/bin/scaling_mlp --arch mixer --patch 4 --hidden 128 --blocks 4
//   build/bin/scaling_mlp --epochs 4 --save run.safetensors   # ... later:
//   build/bin/scaling_mlp --epochs 8 --resume run.safetensors  # epochs 5-8, as one 8-epoch run
//   build/bin/scaling_mlp --backend cuda                     # the same run on the GPU
//
// Backends: --backend cpu (default), cuda (when this file was compiled by nvcc,
// which CMake does when it finds the CUDA toolkit) or emulated (the CPU kernels
// behind a device-style backend: runs the GPU code path of this program on a
// machine without a GPU). The model is the same type with another backend
// argument; batches are built on the host and copied over; checkpoints are
// written from and read into either backend.
//
// Mixer sizes: --patch p (p×p patches, p divides 28), --hidden (channels per
// patch), --blocks (mixer blocks), --token-mlp / --channel-mlp (hidden units
// of the two MLPs; 0: hidden/2 and 4·hidden). --model is ignored for the mixer.
//
// Output: a progress line on stderr about once a second; a row per epoch and a
// result table on stdout, whose last line is one JSON object.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <moekit.hpp>
#include <moekit/data/augment.hpp>
#include <moekit/data/batching.hpp>
#include <moekit/data/normalize.hpp>
#include <moekit/io/checkpoint.hpp>
#include <moekit/io/idx.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/mlp/mlp_mixer.hpp>
#include <moekit/mlp/standard_mlp.hpp>
#include <moekit/optim.hpp>

#include "common/backend_choice.hpp"
#include "common/flags.hpp"
#include "common/output_path.hpp"
#include "common/runtime_settings.hpp"

using namespace moekit;

namespace {

constexpr std::size_t image_side = 28, image_size = image_side * image_side, classes = 10;

struct options {
  std::string data = io::fashion_mnist_dir.string();
  std::string backend = "cpu", arch = "bottleneck", model = "B_4-Wi_256", optimizer = "adamw";
  int patch = 4, hidden = 64, blocks = 4, token_mlp = 0, channel_mlp = 0;
  int epochs = 10, batch = 256, threads = 2, seed = 0, train_subset = 0, holdout = 0, eval_batch = 1000;
  int stop_after = 0;
  double lr = 0, weight_decay = -1, warmup = 1, label_smoothing = 0.1, mixup = 0, min_accuracy = 0;
  bool augment = false;
  int crop_padding = 2;
  std::string save, resume;
};

/// The learning rate and weight decay each optimizer gets unless given (--lr 0, --weight-decay -1).
std::pair<double, double> default_lr_decay(const std::string& optimizer) {
  if (optimizer == "lion") return {2e-4, 0.5};
  if (optimizer == "sgd") return {0.05, 5e-4};
  return {1e-3, 0.05};
}

// ---- the optimizer, chosen at run time ------------------------------------------

/// What the training loop needs from an optimizer; one implementation per kind.
class any_optimizer {
 public:
  virtual ~any_optimizer() = default;
  virtual void zero_grad() = 0;
  virtual void step() = 0;
  virtual void set_lr_factor(double f) = 0;
  virtual std::size_t steps() const = 0;
  virtual std::vector<io::tensor_record> state_records(const std::string& prefix) const = 0;
  virtual void load_state(const io::safetensors_data& file, const std::string& prefix) = 0;

  // What io::save_checkpoint / io::load_checkpoint call (found by argument-dependent lookup).
  friend std::vector<io::tensor_record> optimizer_state_records(const any_optimizer& o, const std::string& prefix) {
    return o.state_records(prefix);
  }
  friend void load_optimizer_state(any_optimizer& o, const io::safetensors_data& file, const std::string& prefix) {
    o.load_state(file, prefix);
  }
};

template <class Opt>
class optimizer_of final : public any_optimizer {
 public:
  template <class... Args>
  explicit optimizer_of(Args&&... args) : opt_(std::forward<Args>(args)...) {}
  void zero_grad() override { opt_.zero_grad(); }
  void step() override { opt_.step(); }
  void set_lr_factor(double f) override { optim::set_lr_factor(opt_, f); }
  std::size_t steps() const override { return opt_.steps(); }
  std::vector<io::tensor_record> state_records(const std::string& prefix) const override {
    return io::optimizer_state_records(opt_, prefix);
  }
  void load_state(const io::safetensors_data& file, const std::string& prefix) override {
    io::load_optimizer_state(opt_, file, prefix);
  }

 private:
  Opt opt_;
};

/// Two groups: weight matrices with decay, biases and norm gains without (the usual practice).
template <class Opt, class Options, class M>
std::unique_ptr<any_optimizer> make_grouped(M& model, Options o) {
  using B = typename Opt::backend_type;
  auto [vectors, matrices] = optim::split_groups(parameter_views<float, B>(model), [](const auto& p) {
    return p.extents.size() < 2;
  });
  Options no_decay = o;
  no_decay.weight_decay = 0;
  using spec = typename Opt::group_spec;
  std::vector<spec> groups;
  groups.push_back(spec{std::move(matrices), o});
  groups.push_back(spec{std::move(vectors), no_decay});
  return std::make_unique<optimizer_of<Opt>>(std::move(groups));
}

template <backend B, class M>
std::unique_ptr<any_optimizer> make_optimizer(const options& o, M& model) {
  if (o.optimizer == "adamw") return make_grouped<optim::adamw<float, B>>(model, optim::adamw_options{.lr = o.lr, .weight_decay = o.weight_decay});
  if (o.optimizer == "lion") return make_grouped<optim::lion<float, B>>(model, optim::lion_options{.lr = o.lr, .weight_decay = o.weight_decay});
  if (o.optimizer == "sgd")
    return make_grouped<optim::sgd<float, B>>(model, optim::sgd_options{.lr = o.lr, .momentum = 0.9, .weight_decay = o.weight_decay, .nesterov = true});
  throw value_error("--optimizer: '" + o.optimizer + "' is not one of lion, adamw, sgd");
}

// ---- data -------------------------------------------------------------------------

struct dataset {
  tensor<float, shape<dyn, dyn>> images;  // (n, 784) in [0, 1]
  tensor<index_t, shape<dyn>> labels;     // (n)
};

dataset load_split(const options& o, const std::string& name) {
  const std::filesystem::path dir = o.data;
  for (const char* kind : {"-images-idx3-ubyte.gz", "-labels-idx1-ubyte.gz"})
    if (!std::filesystem::exists(dir / (name + kind)))
      throw io_error("Fashion-MNIST not found: " + (dir / (name + kind)).string() +
                     " is missing. Install it with `apt-get install dataset-fashion-mnist` "
                     "(it goes to /usr/share/datasets/fashion-mnist) or pass --data DIR");
  auto d = io::load_fashion_mnist<float>(dir, name);
  return {d.images, d.labels};
}

/// Progress and per-epoch figures.
struct epoch_result {
  double loss = 0, train_accuracy = 0, test_accuracy = 0, seconds = 0, images_per_s = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Top-1 predictions (n), read back to the host, that equal their labels (n).
std::size_t count_correct(const tensor<index_t, shape<dyn>>& pred, const tensor<index_t, shape<dyn>>& labels) {
  std::size_t correct = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == labels[i];
  return correct;
}

/// Training loss and accuracy since the start of an epoch. Each step's loss and
/// predictions stay on the backend until the next progress line reads them
/// back, so a device run waits for the device about once a second rather than
/// after every step, and the host builds the next batches while it computes.
template <backend B>
class running_metrics {
 public:
  template <class Loss, class Logits>
  void add(const Loss& loss, const Logits& logits, tensor<index_t, shape<dyn>> labels) {
    pending_.push_back({loss.reshape(shape<dyn>{1}), argmax(logits), std::move(labels)});
  }
  /// Reads the pending steps back (on a device: waits for them) and counts them in.
  void collect() {
    for (const auto& s : pending_) {
      const std::size_t n = s.labels.size();
      loss_sum_ += static_cast<double>(s.loss.template to<cpu>()[0]) * static_cast<double>(n);
      correct_ += count_correct(s.pred.template to<cpu>(), s.labels);
      seen_ += n;
    }
    pending_.clear();
  }
  std::size_t seen() const noexcept { return seen_; }
  double mean_loss() const noexcept { return loss_sum_ / static_cast<double>(seen_); }
  double accuracy() const noexcept { return static_cast<double>(correct_) / static_cast<double>(seen_); }

 private:
  struct step {
    tensor<float, shape<dyn>, B> loss;     // (1) the batch's mean loss
    tensor<index_t, shape<dyn>, B> pred;   // (batch) top-1 classes
    tensor<index_t, shape<dyn>> labels;    // (batch) what they are compared with, on the host
  };
  std::vector<step> pending_;
  double loss_sum_ = 0;
  std::size_t seen_ = 0, correct_ = 0;
};

/// Test accuracy: each batch is normalised on the host, copied to B, and only
/// its predicted labels come back.
template <backend B, class M>
double evaluate(M& model, const dataset& s, const data::global_stats<float>& stats, std::size_t batch) {
  no_grad guard;
  std::size_t correct = 0;
  for (std::size_t begin = 0; begin < s.images.extent(0); begin += batch) {
    const std::size_t end = std::min(s.images.extent(0), begin + batch);
    tape t;
    auto x = data::normalize(s.images.rows(begin, end), stats).template to<B>();  // (n, 784)
    auto logits = model(t.input(x));                                                // (n, 10)
    correct += count_correct(argmax(logits.value()).template to<cpu>(), s.labels.rows(begin, end));
  }
  return static_cast<double>(correct) / static_cast<double>(s.images.extent(0));
}

/// The metadata a checkpoint carries: the settings a resumed run must share.
io::metadata_map run_metadata(const options& o, const std::string& model_name) {
  auto num = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return std::string(buf);
  };
  // The backend is left out: a checkpoint written on one resumes on any other.
  return {{"arch", o.arch}, {"model", model_name}, {"optimizer", o.optimizer}, {"epochs", std::to_string(o.epochs)},
          {"batch", std::to_string(o.batch)}, {"seed", std::to_string(o.seed)},
          {"train_subset", std::to_string(o.train_subset)}, {"holdout", std::to_string(o.holdout)}, {"lr", num(o.lr)}, {"weight_decay", num(o.weight_decay)},
          {"warmup", num(o.warmup)}, {"label_smoothing", num(o.label_smoothing)}, {"mixup", num(o.mixup)},
          {"augment", o.augment ? "true" : "false"}, {"crop_padding", std::to_string(o.crop_padding)}};
}

template <backend B, class M>
int train(const options& o, M& model, const std::string& model_name, const dataset& train_set, const dataset& test_set) {
  const std::size_t n = train_set.images.extent(0), batch = static_cast<std::size_t>(o.batch);
  const std::size_t steps_per_epoch = (n + batch - 1) / batch, total_steps = steps_per_epoch * static_cast<std::size_t>(o.epochs);
  const auto stats = data::compute_global_stats(train_set.images);
  auto opt = make_optimizer<B>(o, model);
  const optim::cosine_schedule schedule({.total_steps = total_steps,
                                         .warmup_steps = std::min<std::size_t>(
                                             total_steps, static_cast<std::size_t>(o.warmup * steps_per_epoch))});
  const std::size_t params = count_parameters(model);
  const io::metadata_map meta = run_metadata(o, model_name);

  int first_epoch = 0;
  if (!o.resume.empty()) {
    const auto saved = io::load_checkpoint(o.resume, model, *opt);
    for (const auto& [key, value] : meta)
      if (!saved.contains(key) || saved.at(key) != value)
        throw value_error("--resume: " + o.resume + " was written with " + key + " = " +
                          (saved.contains(key) ? saved.at(key) : "(none)") + ", this run has " + value);
    first_epoch = std::stoi(saved.at("epoch"));
    std::fprintf(stderr, "resumed from %s after epoch %d (step %zu)\n", o.resume.c_str(), first_epoch, opt->steps());
  }

  std::printf("scaling_mlp: %s %s, %zu parameters, %zu training / %zu test images, batch %zu, %s, %d threads, on %s\n",
              o.arch.c_str(), model_name.c_str(), params, n, test_set.images.extent(0), batch, o.optimizer.c_str(),
              o.threads, examples::backend_description(o.backend).c_str());
  std::printf("%5s %11s %10s %10s %9s\n", "epoch", "train loss", "train acc", "test acc", "seconds");
  std::fflush(stdout);

  const data::image_layout layout{image_side, image_side, 1};
  const cross_entropy_options ce{.label_smoothing = o.label_smoothing};
  std::vector<epoch_result> history;
  double train_seconds = 0;
  for (int epoch = first_epoch; epoch < o.epochs; ++epoch) {
    // Every draw of this epoch comes from its own stream: a resumed run makes the same ones.
    rng g(static_cast<std::uint64_t>(o.seed), static_cast<std::uint64_t>(epoch + 1) << 40);
    const data::batcher batches(data::shuffled_indices(n, g), batch);
    const auto t0 = std::chrono::steady_clock::now();
    double last_report = 0;
    running_metrics<B> metrics;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      const auto idx = batches[b];
      auto x = data::gather_batch(train_set.images, idx);  // (batch, 784) on the host
      auto y = data::gather_batch(train_set.labels, idx);  // (batch)
      if (o.augment) x = data::random_crop_flip(x, layout, {.padding = static_cast<std::size_t>(o.crop_padding)}, g);
      x = data::normalize(x, stats);

      opt->set_lr_factor(schedule(opt->steps()));
      opt->zero_grad();
      tape t;
      if (o.mixup > 0) {
        auto mixed = data::mixup(x, y, o.mixup, g);
        auto logits = model(t.input(mixed.x.template to<B>()));  // host labels: the loss copies them over
        auto loss = cross_entropy_mix(logits, mixed.labels_a, mixed.labels_b, mixed.lambda, ce);
        t.backward(loss);
        metrics.add(loss.value(), logits.value(), mixed.lambda >= 0.5f ? mixed.labels_a : mixed.labels_b);
      } else {
        auto logits = model(t.input(x.template to<B>()));
        auto loss = cross_entropy(logits, y, ce);
        t.backward(loss);
        metrics.add(loss.value(), logits.value(), y);
      }
      opt->step();

      const double elapsed = seconds_since(t0);
      if (elapsed - last_report >= 1.0 || b + 1 == batches.size()) {
        metrics.collect();
        last_report = seconds_since(t0);
        std::fprintf(stderr, "\repoch %d/%d  batch %zu/%zu  loss %.4f  train acc %.2f%%  %.0f images/s   ", epoch + 1,
                     o.epochs, b + 1, batches.size(), metrics.mean_loss(), 100.0 * metrics.accuracy(),
                     static_cast<double>(metrics.seen()) / last_report);
      }
    }
    epoch_result r;
    r.seconds = seconds_since(t0);
    r.images_per_s = static_cast<double>(metrics.seen()) / r.seconds;
    r.loss = metrics.mean_loss();
    r.train_accuracy = metrics.accuracy();
    r.test_accuracy = evaluate<B>(model, test_set, stats, static_cast<std::size_t>(o.eval_batch));
    train_seconds += seconds_since(t0);  // training and evaluation
    history.push_back(r);
    std::fprintf(stderr, "\n");
    std::printf("%5d %11.4f %9.2f%% %9.2f%% %9.1f\n", epoch + 1, r.loss, 100 * r.train_accuracy,
                100 * r.test_accuracy, r.seconds);
    std::fflush(stdout);
    if (!o.save.empty()) {
      auto m = meta;
      m["epoch"] = std::to_string(epoch + 1);
      io::save_checkpoint(o.save, model, *opt, m);
    }
    if (o.stop_after > 0 && epoch + 1 >= o.stop_after) break;
  }

  const double test_accuracy =
      history.empty() ? evaluate<B>(model, test_set, stats, static_cast<std::size_t>(o.eval_batch)) : history.back().test_accuracy;
  double images_per_s = 0;
  for (const auto& r : history) images_per_s += r.images_per_s / static_cast<double>(history.size());
  const std::string kernel = blas_kernel_name();  // the OpenBLAS kernel that ran (printed first, too)
  std::printf("\n%-22s %s\n%-22s %s\n%-22s %s\n%-22s %s\n%-22s %zu\n%-22s %d (%d this run)\n%-22s %.2f%%\n%-22s %.1f\n"
              "%-22s %.0f\n",
              "model", model_name.c_str(), "arch", o.arch.c_str(), "backend", examples::backend_description(o.backend).c_str(),
              "blas kernel", kernel.c_str(), "parameters", params, "epochs", o.epochs,
              static_cast<int>(history.size()), "test accuracy", 100 * test_accuracy, "train seconds", train_seconds,
              "train images/s", images_per_s);
  std::printf("{\"example\": \"scaling_mlp\", \"backend\": \"%s\", \"device\": \"%s\", \"arch\": \"%s\", "
              "\"model\": \"%s\", \"optimizer\": \"%s\", \"epochs\": %d, \"epochs_run\": %zu, \"batch\": %d, \"threads\": %d, \"lr\": %g, \"weight_decay\": %g, "
              "\"train_images\": %zu, \"params\": %zu, \"final_train_loss\": %.5f, \"test_accuracy\": %.4f, "
              "\"train_seconds\": %.2f, \"images_per_s\": %.1f, \"blas_kernel\": \"%s\"}\n",
              o.backend.c_str(), examples::backend_description(o.backend).c_str(), o.arch.c_str(), model_name.c_str(),
              o.optimizer.c_str(), o.epochs, history.size(), o.batch, o.threads,
              o.lr, o.weight_decay, n, params, history.empty() ? 0.0 : history.back().loss, test_accuracy,
              train_seconds, images_per_s, kernel.c_str());
  if (test_accuracy < o.min_accuracy) {
    std::fprintf(stderr, "scaling_mlp: test accuracy %.4f is below --min-accuracy %.4f\n", test_accuracy, o.min_accuracy);
    return 1;
  }
  return 0;
}

/// Builds the model chosen by --arch on backend B and trains it. The same seed
/// gives the same initial weights on every backend (counter-based draws).
template <backend B>
int run(const options& o, const dataset& train_set, const dataset& test_set) {
  rng g(static_cast<std::uint64_t>(o.seed));
  if (o.arch == "mixer") {
    const mlp::mixer_config c{.height = image_side, .width = image_side, .channels = 1,
                              .patch = static_cast<std::size_t>(o.patch), .hidden = static_cast<std::size_t>(o.hidden),
                              .blocks = static_cast<std::size_t>(o.blocks),
                              .token_mlp = static_cast<std::size_t>(o.token_mlp),
                              .channel_mlp = static_cast<std::size_t>(o.channel_mlp), .classes = classes};
    if (o.patch < 1 || o.hidden < 1 || o.blocks < 1 || o.token_mlp < 0 || o.channel_mlp < 0)
      throw value_error("--patch, --hidden, --blocks must be >= 1");
    mlp::mlp_mixer<float, B> model(g, c);
    const std::string name = "Mixer-P_" + std::to_string(o.patch) + "-H_" + std::to_string(o.hidden) + "-B_" +
                             std::to_string(o.blocks);
    return train<B>(o, model, name, train_set, test_set);
  }
  const auto sizes = mlp::parse_model_name(o.model, "--model").with_io(image_size, classes);
  if (o.arch == "bottleneck") {
    mlp::bottleneck_mlp<mlp::config{.in = image_size, .classes = classes}, float, B> model(g, sizes);
    return train<B>(o, model, mlp::model_name(sizes), train_set, test_set);
  }
  if (o.arch == "standard") {
    mlp::standard_mlp<mlp::config{.in = image_size, .classes = classes}, float, B> model(g, sizes);
    return train<B>(o, model, "S-" + mlp::model_name(sizes), train_set, test_set);
  }
  throw value_error("--arch: '" + o.arch + "' is not one of bottleneck, standard, mixer");
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("scaling_mlp",
            "Trains a Scaling-MLPs model (B-MLP, S-MLP or MLP-Mixer) on Fashion-MNIST and reports test accuracy.\n"
            "The last stdout line is a JSON object (test_accuracy, train_seconds, params, ...).");
  cli.add("data", o.data, "folder with Fashion-MNIST's {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz");
  cli.add("backend", o.backend, "cpu | cuda (builds compiled by nvcc) | emulated (the device code path on the CPU, for testing)");
  cli.add("arch", o.arch, "bottleneck | standard | mixer");
  cli.add("model", o.model, "B_<blocks>-Wi_<width>[-Exp_<expansion>] for bottleneck and standard");
  cli.add("patch", o.patch, "mixer: patch side (divides 28)");
  cli.add("hidden", o.hidden, "mixer: channels per patch token");
  cli.add("blocks", o.blocks, "mixer: mixer blocks");
  cli.add("token-mlp", o.token_mlp, "mixer: token-mixing hidden units (0: hidden/2)");
  cli.add("channel-mlp", o.channel_mlp, "mixer: channel-mixing hidden units (0: 4*hidden)");
  cli.add("optimizer", o.optimizer, "lion | adamw | sgd (Nesterov momentum 0.9)");
  cli.add("epochs", o.epochs, "training epochs");
  cli.add("batch", o.batch, "images per step");
  cli.add("lr", o.lr, "peak learning rate (0: adamw 1e-3, lion 2e-4, sgd 0.05)");
  cli.add("weight-decay", o.weight_decay, "decay of weight matrices (-1: adamw 0.05, lion 0.5, sgd 5e-4)");
  cli.add("warmup", o.warmup, "epochs of linear warm-up before the cosine decay");
  cli.add("label-smoothing", o.label_smoothing, "label smoothing of the cross entropy");
  cli.add("mixup", o.mixup, "MixUp alpha (0: off)");
  cli.add("augment", o.augment, "random crop (zero padding) + horizontal flip");
  cli.add("crop-padding", o.crop_padding, "padding of the random crop");
  cli.add("seed", o.seed, "random seed (init, shuffling, augmentation)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("train-subset", o.train_subset, "train on the first N training images only (0: all 60000)");
  cli.add("holdout", o.holdout, "evaluate on the last N training images instead of the test set (for choosing settings)");
  cli.add("eval-batch", o.eval_batch, "images per evaluation batch");
  cli.add("save", o.save, "write a checkpoint (model, optimizer state, epoch) here after every epoch");
  cli.add("resume", o.resume, "continue from this checkpoint (same flags as the run that wrote it)");
  cli.add("stop-after", o.stop_after, "stop after this epoch as if interrupted (0: run all --epochs); with --save, for --resume");
  cli.add("min-accuracy", o.min_accuracy, "exit 1 when the final test accuracy is below this fraction");
  if (!cli.parse(argc, argv)) return 0;
  examples::print_blas_line();
  examples::require_writable_parent("--save", o.save);  // before any training
  if (o.epochs < 1 || o.batch < 1 || o.threads < 1 || o.eval_batch < 1 || o.train_subset < 0 || o.holdout < 0 ||
      o.crop_padding < 0)
    throw value_error("--epochs, --batch, --threads, --eval-batch must be >= 1; --train-subset, "
                      "--holdout, --crop-padding >= 0");
  if (o.warmup < 0 || o.mixup < 0) throw value_error("--warmup and --mixup must be >= 0");
  examples::check_backend("scaling_mlp", o.backend);
  const auto [lr, wd] = default_lr_decay(o.optimizer);
  if (o.lr == 0) o.lr = lr;
  if (o.weight_decay < 0) o.weight_decay = wd;
  set_num_threads(o.threads);

  dataset train_set = load_split(o, "train"), test_set = load_split(o, "t10k");
  if (o.holdout > 0) {  // choose settings on held-out training images, never on the test set
    const std::size_t n = train_set.images.extent(0), k = static_cast<std::size_t>(o.holdout);
    if (k >= n) throw value_error("--holdout: " + std::to_string(k) + " leaves no training images");
    test_set = {train_set.images.rows(n - k, n), train_set.labels.rows(n - k, n)};
    train_set = {train_set.images.rows(0, n - k), train_set.labels.rows(0, n - k)};
    std::fprintf(stderr, "scaling_mlp: --holdout %zu: the \"test\" figures below are on held-out training images\n", k);
  }
  if (o.train_subset > 0 && static_cast<std::size_t>(o.train_subset) < train_set.images.extent(0)) {
    const auto k = static_cast<std::size_t>(o.train_subset);
    train_set = {train_set.images.rows(0, k), train_set.labels.rows(0, k)};
  }

  if (o.backend == "emulated") return run<emulated_device>(o, train_set, test_set);
#ifdef __CUDACC__
  if (o.backend == "cuda") return run<moekit::cuda>(o, train_set, test_set);
#endif
  return run<cpu>(o, train_set, test_set);
} catch (const moekit::error& e) {
  std::fprintf(stderr, "scaling_mlp: %s\n", e.what());
  return 2;
}

// moe_compare — a dense bottleneck MLP against the baseline MoEs of
// moe/baselines.hpp (Switch, GShard, expert choice, DeepSeek-style fine +
// shared experts), each block's FFN replaced by an MoE with the dense FFN's
// active expert weights, all trained the same way on Fashion-MNIST:
// AdamW, linear warm-up + cosine decay, label smoothing 0.1. The routers'
// load-balancing losses ride on the MoE outputs' backward.
//
//   build/bin/moe_compare                                    # B_2-Wi_128, 8 experts, 2 epochs
//   build/bin/moe_compare --models dense,switch --epochs 4 --experts 16
//   build/bin/moe_compare --backend cuda                     # the same runs on the GPU
//   mpirun -np 2 build/bin/moe_compare --ranks 2 --threads 1  # data + expert parallel (dist/)
//
// Backends: --backend cpu (default), cuda (when this file was compiled by nvcc,
// which CMake does when it finds the CUDA toolkit) or emulated (the CPU kernels
// behind a device-style backend: runs the GPU code path of this program on a
// machine without a GPU). Batches are built on the host and copied over; each
// step's loss stays on the backend until the progress line reads it, and
// evaluation reads back only the predicted labels and the routing statistics.
//
// --ranks P (built with MPI; launched by mpirun -np P): each batch is split
// over the P processes, each MoE layer's experts are sharded over them
// (dist::expert_parallel), the rest is replicated and its gradients averaged;
// every rank evaluates the whole test set and rank 0 prints. Routing groups
// are per process (capacity and load-balance losses act on each process's
// share of the batch).
//
// Output: a progress line on stderr; a table on stdout (test accuracy, total
// and active parameters, forward FLOPs per image of the matrix products,
// training seconds, expert load = max/mean kept assignments per expert on the
// test set, averaged over blocks, and the share of assignments dropped), whose
// last line is one JSON object with the rows.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <moekit.hpp>
#include <moekit/data/batching.hpp>
#include <moekit/data/normalize.hpp>
#include <moekit/io/idx.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/mlp/moe_bottleneck_mlp.hpp>
#include <moekit/moe.hpp>
#include <moekit/moe/baselines.hpp>
#include <moekit/optim.hpp>

#include "common/backend_choice.hpp"
#include "common/flags.hpp"
#include "common/runtime_settings.hpp"

#ifdef MOEKIT_WITH_MPI
#include <moekit/dist/data_parallel.hpp>
#include <moekit/dist/expert_parallel.hpp>
#endif

using namespace moekit;

namespace {

constexpr std::size_t image_size = 28 * 28, classes = 10;

struct options {
  std::string data = io::fashion_mnist_dir.string();
  std::string backend = "cpu", model = "B_2-Wi_128", models = "dense,switch,gshard,expert_choice,deepseek";
  int experts = 8, granularity = 4, shared = 1;
  int epochs = 2, batch = 256, threads = 2, seed = 0, train_subset = 0, eval_batch = 1000;
  double lr = 1e-3, weight_decay = 0.05, warmup = 0.5, label_smoothing = 0.1, min_accuracy = 0;
  int ranks = 0;
  int log_every = 0;  // --log-every: print the mean training loss of every this many steps
#ifdef MOEKIT_WITH_MPI
  const dist::communicator* comm = nullptr;  // --ranks: the processes of this run
#endif
  /// This process's rank and the process count (0 and 1 without --ranks).
  std::size_t rank() const {
#ifdef MOEKIT_WITH_MPI
    if (comm) return static_cast<std::size_t>(comm->rank());
#endif
    return 0;
  }
  std::size_t processes() const {
#ifdef MOEKIT_WITH_MPI
    if (comm) return comm->ranks();
#endif
    return 1;
  }
};

struct dataset {
  tensor<float, shape<dyn, dyn>> images;  // (n, 784) in [0, 1]
  tensor<index_t, shape<dyn>> labels;     // (n)
};

dataset load_split(const options& o, const std::string& name) {
  const std::filesystem::path dir = o.data;
  if (!std::filesystem::exists(dir / (name + "-images-idx3-ubyte.gz")))
    throw io_error("Fashion-MNIST not found in " + dir.string() +
                   ". Install it with `apt-get install dataset-fashion-mnist` or pass --data DIR");
  auto d = io::load_fashion_mnist<float>(dir, name);
  return {d.images, d.labels};
}

/// One row of the result table.
struct result {
  std::string name;
  double test_accuracy = 0, train_seconds = 0, final_loss = 0;
  std::size_t total_params = 0, active_params = 0, flops = 0;
  double load_max_over_mean = 0, dropped = 0;  // MoE only
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <class M>
constexpr bool has_moe = requires(M& m) { m.moe(0).last_routing(); };

/// Test accuracy; for an MoE model also each block's routing statistics over
/// the test set. Each batch is normalised on the host and copied to B; its
/// predicted labels come back, and routing_stats copies each plan's logits
/// and offsets to the host.
template <backend B, class M>
double evaluate(M& model, const dataset& s, const data::global_stats<float>& stats, std::size_t batch, result& r) {
  no_grad guard;
  std::vector<moe::routing_stats> routing;
  if constexpr (has_moe<M>) routing.resize(model.blocks());
  std::size_t correct = 0;
  for (std::size_t begin = 0; begin < s.images.extent(0); begin += batch) {
    const std::size_t end = std::min(s.images.extent(0), begin + batch);
    tape t;
    auto x = data::normalize(s.images.rows(begin, end), stats).template to<B>();  // (n, 784)
    auto logits = model(t.input(x));                                                // (n, 10)
    const auto pred = argmax(logits.value()).template to<cpu>();                    // (n)
    for (std::size_t i = 0; i < pred.size(); ++i) correct += pred[i] == s.labels[begin + i];
    if constexpr (has_moe<M>)
      for (std::size_t b = 0; b < routing.size(); ++b) routing[b].add(model.moe(b).last_routing());
  }
  for (auto& st : routing) {
    r.load_max_over_mean += st.load_balance().max_over_mean / static_cast<double>(routing.size());
    r.dropped += static_cast<double>(st.dropped()) /
                 static_cast<double>(st.dropped() + st.assignments()) / static_cast<double>(routing.size());
  }
  return static_cast<double>(correct) / static_cast<double>(s.images.extent(0));
}

/// The mean training loss since the start of an epoch. Each step's loss stays
/// on the backend until the next progress line reads it back, so a device run
/// waits for the device about once a second rather than after every step.
template <backend B>
class running_loss {
 public:
  template <class Loss>
  void add(const Loss& loss, std::size_t n) {
    pending_.push_back({loss.reshape(shape<dyn>{1}), n});
  }
  /// Reads the pending steps back (on a device: waits for them) and counts them in.
  void collect() {
    for (const auto& [loss, n] : pending_) {
      sum_ += static_cast<double>(loss.template to<cpu>()[0]) * static_cast<double>(n);
      seen_ += n;
    }
    pending_.clear();
  }
  double mean() const noexcept { return sum_ / static_cast<double>(seen_); }

 private:
  std::vector<std::pair<tensor<float, shape<dyn>, B>, std::size_t>> pending_;  // (1) mean loss, batch size
  double sum_ = 0;
  std::size_t seen_ = 0;
};

template <backend B, class M>
void train(const options& o, M& model, result& r, const dataset& train_set, const dataset& test_set) {
  const std::size_t n = train_set.images.extent(0), batch = static_cast<std::size_t>(o.batch);
  const std::size_t steps_per_epoch = (n + batch - 1) / batch, total = steps_per_epoch * static_cast<std::size_t>(o.epochs);
  const auto stats = data::compute_global_stats(train_set.images);
  optim::adamw<float, B> opt(model, {.lr = o.lr, .weight_decay = o.weight_decay});
  const optim::cosine_schedule schedule(
      {.total_steps = total, .warmup_steps = std::min(total, static_cast<std::size_t>(o.warmup * double(steps_per_epoch)))});
  const cross_entropy_options ce{.label_smoothing = o.label_smoothing};
  const auto t0 = std::chrono::steady_clock::now();
  double last_report = 0;
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    rng g(static_cast<std::uint64_t>(o.seed), static_cast<std::uint64_t>(epoch + 1) << 40);
    const data::batcher batches(data::shuffled_indices(n, g), batch);
    running_loss<B> loss_sum, window;  // the epoch's loss; the steps since the last --log-every line
    for (std::size_t b = 0; b < batches.size(); ++b) {
      auto idx = batches[b];
      if (o.processes() > 1) {  // this rank's share of the batch
        const std::size_t m = idx.size(), p = o.processes(), r = o.rank();
        idx = idx.rows(r * m / p, (r + 1) * m / p).clone();
      }
      auto x = data::normalize(data::gather_batch(train_set.images, idx), stats);  // (batch, 784)
      auto y = data::gather_batch(train_set.labels, idx);                          // (batch)
      optim::set_lr_factor(opt, schedule(opt.steps()));
      opt.zero_grad();
      tape t;
      auto loss = cross_entropy(model(t.input(x.template to<B>())), y, ce);  // host labels: the loss copies them over
      t.backward(loss);
#ifdef MOEKIT_WITH_MPI
      if (o.comm) dist::synchronize_gradients<float, B>(*o.comm, model);  // the mean over all ranks
#endif
      opt.step();
      loss_sum.add(loss.value(), idx.size());
      if (o.log_every > 0) {
        window.add(loss.value(), idx.size());
        if (opt.steps() % static_cast<std::size_t>(o.log_every) == 0) {
          window.collect();
          if (o.rank() == 0)
            std::printf("{\"curve\": \"%s\", \"seed\": %d, \"epoch\": %d, \"step\": %zu, \"train_loss\": %.5f}\n",
                        r.name.c_str(), o.seed, epoch + 1, opt.steps(), window.mean());
          window = running_loss<B>{};
        }
      }
      const double elapsed = seconds_since(t0);
      if (o.rank() == 0 && (elapsed - last_report >= 1.0 || b + 1 == batches.size())) {
        loss_sum.collect();
        last_report = seconds_since(t0);
        std::fprintf(stderr, "\r%-14s epoch %d/%d  batch %zu/%zu  loss %.4f  %.0f s   ", r.name.c_str(), epoch + 1,
                     o.epochs, b + 1, batches.size(), loss_sum.mean(), last_report);
      }
    }
    r.final_loss = loss_sum.mean();
  }
  r.train_seconds = seconds_since(t0);
  r.test_accuracy = evaluate<B>(model, test_set, stats, static_cast<std::size_t>(o.eval_batch), r);
  if (o.rank() == 0) std::fprintf(stderr, "\n");
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

moe::baseline parse_baseline(const std::string& name) {
  for (auto b : {moe::baseline::switch_top1, moe::baseline::gshard_top2, moe::baseline::expert_choice, moe::baseline::deepseek})
    if (name == moe::baseline_name(b)) return b;
  throw value_error("--models: '" + name + "' is not one of dense, switch, gshard, expert_choice, deepseek");
}

/// Trains one model (dense or a baseline) of sizes c on backend B and fills
/// its row. The same seed gives the same initial weights on every backend.
template <backend B>
result run_one(const options& o, const std::string& name, const mlp::config& c, const dataset& train_set,
               const dataset& test_set) {
  rng g(static_cast<std::uint64_t>(o.seed));
  result r{.name = name};
  const std::size_t ff = c.expansion * c.width;
  const std::size_t outer_flops = 2 * (c.in * c.width + c.width * c.classes);  // stem and head
  if (name == "dense") {
    mlp::bottleneck_mlp<mlp::runtime_config, float, B> model(g, c);
    r.total_params = r.active_params = count_parameters(model);
    r.flops = outer_flops + c.blocks * moe::dense_ffn_cost(c.width, ff).expert_flops;
    train<B>(o, model, r, train_set, test_set);
    return r;
  }
  const moe::baseline_spec spec{.d_model = c.width, .d_ff = ff, .experts = static_cast<std::size_t>(o.experts),
                                .granularity = static_cast<std::size_t>(o.granularity),
                                .shared_experts = static_cast<std::size_t>(o.shared)};
  const auto layout = moe::baseline_layout_of(parse_baseline(name), spec);
  const auto cost = moe::cost_of(layout);
  auto fill_and_train = [&](auto& model) {
    r.total_params = count_parameters(model);
#ifdef MOEKIT_WITH_MPI
    if (o.comm) r.total_params = dist::count_parameters(*o.comm, model);
#endif
    r.active_params = r.total_params - c.blocks * (cost.total_params - cost.active_params);
    r.flops = outer_flops + c.blocks * (cost.expert_flops + cost.router_flops);
    train<B>(o, model, r, train_set, test_set);
  };
#ifdef MOEKIT_WITH_MPI
  if (o.comm) {  // the same layers, each rank holding its share of the experts
    if (layout.kind == moe::baseline::expert_choice) {
      using ep = dist::sharded_t<moe::expert_choice_moe<float, B>>;
      mlp::moe_bottleneck_mlp<ep, float, B> model(g, c, [&](rng& gg, std::size_t, std::size_t) {
        return ep::shard(*o.comm, moe::make_expert_choice<float, B>(gg, spec));
      });
      fill_and_train(model);
    } else {
      using ep = dist::sharded_t<moe::token_choice_moe<float, B>>;
      mlp::moe_bottleneck_mlp<ep, float, B> model(g, c, [&](rng& gg, std::size_t, std::size_t) {
        return ep::shard(*o.comm, moe::make_token_choice<float, B>(gg, layout));
      });
      fill_and_train(model);
    }
    return r;
  }
#endif
  if (layout.kind == moe::baseline::expert_choice) {
    mlp::moe_bottleneck_mlp<moe::expert_choice_moe<float, B>, float, B> model(
        g, c, [&](rng& gg, std::size_t, std::size_t) { return moe::make_expert_choice<float, B>(gg, spec); });
    fill_and_train(model);
  } else {
    mlp::moe_bottleneck_mlp<moe::token_choice_moe<float, B>, float, B> model(
        g, c, [&](rng& gg, std::size_t, std::size_t) { return moe::make_token_choice<float, B>(gg, layout); });
    fill_and_train(model);
  }
  return r;
}

result run_on_backend(const options& o, const std::string& name, const mlp::config& c, const dataset& train_set,
                      const dataset& test_set) {
  if (o.backend == "emulated") return run_one<emulated_device>(o, name, c, train_set, test_set);
#ifdef __CUDACC__
  if (o.backend == "cuda") return run_one<moekit::cuda>(o, name, c, train_set, test_set);
#endif
  return run_one<cpu>(o, name, c, train_set, test_set);
}

}  // namespace

int main(int argc, char** argv) try {
  examples::relaunch_with_runtime_settings(argv);
  options o;
  flags cli("moe_compare",
            "Trains a dense bottleneck MLP and MoE versions of it (Switch, GShard, expert choice, DeepSeek-style)\n"
            "with matched active expert weights on Fashion-MNIST and compares them.\n"
            "The last stdout line is a JSON object with one row per model.");
  cli.add("data", o.data, "folder with Fashion-MNIST's {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz");
  cli.add("backend", o.backend, "cpu | cuda (builds compiled by nvcc) | emulated (the device code path on the CPU, for testing)");
  cli.add("model", o.model, "the dense model B_<blocks>-Wi_<width>[-Exp_<expansion>]; its FFN width is matched");
  cli.add("models", o.models, "comma list of dense, switch, gshard, expert_choice, deepseek");
  cli.add("experts", o.experts, "experts per MoE (DeepSeek: before the fine split)");
  cli.add("granularity", o.granularity, "DeepSeek: fine experts per coarse expert (each 1/granularity wide)");
  cli.add("shared", o.shared, "DeepSeek: shared (always-on) fine experts");
  cli.add("epochs", o.epochs, "training epochs");
  cli.add("batch", o.batch, "images per step");
  cli.add("lr", o.lr, "AdamW peak learning rate");
  cli.add("weight-decay", o.weight_decay, "AdamW decoupled weight decay");
  cli.add("warmup", o.warmup, "epochs of linear warm-up before the cosine decay");
  cli.add("label-smoothing", o.label_smoothing, "label smoothing of the cross entropy");
  cli.add("seed", o.seed, "random seed (init, shuffling)");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("train-subset", o.train_subset, "train on the first N training images only (0: all 60000)");
  cli.add("eval-batch", o.eval_batch, "images per evaluation batch");
  cli.add("min-accuracy", o.min_accuracy, "exit 1 when any model's test accuracy is below this fraction");
  cli.add("log-every", o.log_every,
          "print a JSON line {curve, seed, epoch, step, train_loss} every N optimizer steps: the mean training loss "
          "of those N steps (0: off)");
  cli.add("ranks", o.ranks,
          "data + expert parallel over this many processes, launched as `mpirun -np N moe_compare --ranks N`: each "
          "takes 1/N of every batch and experts/N experts per MoE layer (0: one process; needs MPI; cpu and "
          "emulated backends)");
  if (!cli.parse(argc, argv)) return 0;
  if (o.epochs < 1 || o.batch < 1 || o.threads < 1 || o.eval_batch < 1 || o.train_subset < 0 || o.experts < 1 ||
      o.granularity < 1 || o.shared < 0 || o.warmup < 0 || o.log_every < 0)
    throw value_error("--epochs, --batch, --threads, --eval-batch, --experts, --granularity must be >= 1; "
                      "--train-subset, --shared, --warmup, --log-every >= 0");
  examples::check_backend("moe_compare", o.backend);
  set_num_threads(o.threads);
#ifdef MOEKIT_WITH_MPI
  std::optional<dist::environment> mpi;
  std::optional<dist::communicator> world;
  if (o.ranks > 0) {
    if (o.backend == "cuda")
      throw value_error("--ranks with --backend cuda: not run on a GPU yet (docs/distributed.md); use cpu or emulated");
    mpi.emplace(argc, argv);
    world.emplace(dist::communicator::world());
    if (world->size() != o.ranks)
      throw value_error("--ranks " + std::to_string(o.ranks) + ": this run has " + std::to_string(world->size()) +
                        " process(es); launch it as `mpirun -np " + std::to_string(o.ranks) + " moe_compare --ranks " +
                        std::to_string(o.ranks) + " ...`");
    o.comm = &*world;
    if (world->rank() != 0 && !std::freopen("/dev/null", "w", stdout))  // rank 0 prints the table
      throw io_error("cannot silence stdout on rank " + std::to_string(world->rank()));
  }
#else
  if (o.ranks > 0)
    throw value_error("--ranks: this moe_compare was built without MPI (apt-get install libopenmpi-dev openmpi-bin, "
                      "then rebuild)");
#endif
  examples::print_blas_line();
  const auto c = mlp::parse_model_name(o.model, "--model").with_io(image_size, classes);
  const auto names = split_list(o.models);
  if (names.empty()) throw value_error("--models: empty list");
  for (const auto& name : names)
    if (name != "dense") moe::baseline_layout_of(parse_baseline(name), {.d_model = c.width, .d_ff = c.expansion * c.width,
        .experts = static_cast<std::size_t>(o.experts), .granularity = static_cast<std::size_t>(o.granularity),
        .shared_experts = static_cast<std::size_t>(o.shared)});  // bad names and sizes fail before any training

  dataset train_set = load_split(o, "train"), test_set = load_split(o, "t10k");
  if (o.train_subset > 0 && static_cast<std::size_t>(o.train_subset) < train_set.images.extent(0)) {
    const auto k = static_cast<std::size_t>(o.train_subset);
    train_set = {train_set.images.rows(0, k), train_set.labels.rows(0, k)};
  }
  std::printf("moe_compare: %s (FFN width %zu), %d experts, %zu training / %zu test images, %d epochs, batch %d, "
              "%d threads, on %s\n",
              mlp::model_name(c).c_str(), c.expansion * c.width, o.experts, train_set.images.extent(0),
              test_set.images.extent(0), o.epochs, o.batch, o.threads, examples::backend_description(o.backend).c_str());
  std::fflush(stdout);

  std::vector<result> rows;
  for (const auto& name : names) rows.push_back(run_on_backend(o, name, c, train_set, test_set));

  std::printf("\n%-14s %9s %12s %12s %12s %9s %10s %8s\n", "model", "test acc", "total params", "active params",
              "FLOPs/image", "train s", "load max/mean", "dropped");
  for (const auto& r : rows) {
    if (r.name == "dense")
      std::printf("%-14s %8.2f%% %12zu %12zu %12zu %9.1f %13s %8s\n", r.name.c_str(), 100 * r.test_accuracy,
                  r.total_params, r.active_params, r.flops, r.train_seconds, "-", "-");
    else
      std::printf("%-14s %8.2f%% %12zu %12zu %12zu %9.1f %13.2f %7.2f%%\n", r.name.c_str(), 100 * r.test_accuracy,
                  r.total_params, r.active_params, r.flops, r.train_seconds, r.load_max_over_mean, 100 * r.dropped);
  }
  std::printf("{\"example\": \"moe_compare\", \"backend\": \"%s\", \"device\": \"%s\", \"model\": \"%s\", "
              "\"experts\": %d, \"epochs\": %d, \"batch\": %d, \"threads\": %d, \"ranks\": %zu, \"train_images\": %zu, \"rows\": [",
              o.backend.c_str(), examples::backend_description(o.backend).c_str(), mlp::model_name(c).c_str(), o.experts, o.epochs,
              o.batch, o.threads, o.processes(), train_set.images.extent(0));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    std::printf("%s{\"model\": \"%s\", \"test_accuracy\": %.4f, \"total_params\": %zu, \"active_params\": %zu, "
                "\"flops_per_image\": %zu, \"train_seconds\": %.2f, \"final_train_loss\": %.5f, "
                "\"load_max_over_mean\": %.4f, \"dropped\": %.5f}",
                i ? ", " : "", r.name.c_str(), r.test_accuracy, r.total_params, r.active_params, r.flops,
                r.train_seconds, r.final_loss, r.load_max_over_mean, r.dropped);
  }
  std::printf("]}\n");
  int status = 0;
  for (const auto& r : rows)
    if (r.test_accuracy < o.min_accuracy) {
      std::fprintf(stderr, "moe_compare: %s test accuracy %.4f is below --min-accuracy %.4f\n", r.name.c_str(),
                   r.test_accuracy, o.min_accuracy);
      status = 1;
    }
  return status;
} catch (const moekit::error& e) {
  std::fprintf(stderr, "moe_compare: %s\n", e.what());
  return 2;
}

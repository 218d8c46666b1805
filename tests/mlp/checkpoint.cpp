// Checkpoints of a model and its optimizer: save -> load into fresh objects
// gives bit-identical predictions and an optimizer that continues exactly as
// the original; bad files are io_errors that leave model and optimizer as they were.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <unistd.h>

#include <moekit.hpp>
#include <moekit/io/checkpoint.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/optim/adamw.hpp>
#include <moekit/optim/lion.hpp>
#include <moekit/optim/sgd.hpp>

using namespace moekit;

namespace {

constexpr mlp::config ckpt_tiny{.in = 6, .width = 4, .blocks = 2, .classes = 3, .expansion = 2};
using tiny_mlp = mlp::bottleneck_mlp<ckpt_tiny>;

/// A scratch file removed at the end of the test.
struct temp_file {
  std::filesystem::path path;
  explicit temp_file(const std::string& stem)
      : path(std::filesystem::temp_directory_path() / (stem + "." + std::to_string(::getpid()) + ".safetensors")) {}
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

struct ckpt_batch {
  tensor<float, shape<dyn, 6>> x;
  tensor<index_t, shape<dyn>> y;
};
ckpt_batch make_ckpt_batch(std::uint64_t seed) {
  rng g(seed);
  ckpt_batch b{normal<float>(g, shape<dyn, 6>{16}), tensor<index_t, shape<dyn>>(shape<dyn>{16})};
  for (std::size_t i = 0; i < 16; ++i) b.y[i] = static_cast<index_t>(i % 3);
  return b;
}

template <class M, class Opt>
void train_step(M& model, Opt& opt, const ckpt_batch& b) {
  tape t;
  opt.zero_grad();
  t.backward(cross_entropy(model(t.input(b.x)), b.y));
  opt.step();
}

std::vector<float> ckpt_values_of(tiny_mlp& m) {
  std::vector<float> out;
  visit_parameters(m, [&](const std::string&, auto& p) {
    for (std::size_t i = 0; i < p.size(); ++i) out.push_back(p.value()[i]);
  });
  return out;
}

std::vector<float> predict(tiny_mlp& m, const ckpt_batch& b) {
  no_grad guard;
  tape t;
  auto y = m(t.input(b.x));
  return {y.value().data(), y.value().data() + y.size()};
}

/// Trains `steps` steps, checkpoints, loads into fresh objects, and checks
/// that both pairs then take identical steps.
template <class Opt, class Options>
void check_round_trip(const Options& o, const char* name) {
  INFO(name);
  temp_file file(std::string("moekit_ckpt_") + name);
  rng g1(1), g2(2);
  tiny_mlp a(g1), b(g2);
  Opt opt_a(a, o), opt_b(b, o);
  for (int s = 0; s < 3; ++s) train_step(a, opt_a, make_ckpt_batch(10 + s));
  io::save_checkpoint(file.path, a, opt_a, {{"epoch", "3"}});

  REQUIRE(ckpt_values_of(a) != ckpt_values_of(b));
  const auto meta = io::load_checkpoint(file.path, b, opt_b);
  CHECK(meta.at("epoch") == "3");
  REQUIRE(ckpt_values_of(a) == ckpt_values_of(b));
  const ckpt_batch test = make_ckpt_batch(99);
  REQUIRE(predict(a, test) == predict(b, test));  // identical predictions, bit for bit
  REQUIRE(opt_b.steps() == 3);
  REQUIRE(opt_b.state(0, 0).step == 3);

  // The restored state matters: a fresh optimizer takes a different step.
  rng g3(3);
  tiny_mlp c(g3);
  Opt opt_c(c, o);
  io::load_safetensors(file.path, c, /*allow_extra=*/true);
  for (int s = 0; s < 2; ++s) {
    train_step(a, opt_a, make_ckpt_batch(20 + s));
    train_step(b, opt_b, make_ckpt_batch(20 + s));
    train_step(c, opt_c, make_ckpt_batch(20 + s));
  }
  REQUIRE(ckpt_values_of(a) == ckpt_values_of(b));
  REQUIRE(ckpt_values_of(a) != ckpt_values_of(c));
}

}  // namespace

TEST_CASE("checkpoint: model + optimizer round trip continues exactly", "[mlp][checkpoint]") {
  check_round_trip<optim::adamw<float>>(optim::adamw_options{.lr = 1e-2}, "adamw");
  check_round_trip<optim::lion<float>>(optim::lion_options{.lr = 1e-3, .weight_decay = 0.1}, "lion");
  check_round_trip<optim::sgd<float>>(optim::sgd_options{.lr = 1e-1, .momentum = 0.9}, "sgd");
}

TEST_CASE("optimizer_state_records: names, dtypes, shapes", "[mlp][checkpoint][optim]") {
  rng g(4);
  tiny_mlp m(g);
  optim::adamw<float> opt(m);
  auto before = io::optimizer_state_records(opt);  // nothing allocated yet: step counts only
  REQUIRE(before.size() == 1 + 16);
  CHECK(before[0].name == "optim.steps");
  CHECK(before[0].dtype == "U64");
  CHECK(before[0].shape.empty());
  train_step(m, opt, make_ckpt_batch(5));
  auto after = io::optimizer_state_records(opt, "o/");
  REQUIRE(after.size() == 1 + 16 * 3);  // step, exp_avg, exp_avg_sq per parameter
  CHECK(after[1].name == "o/stem.weight.step");
  CHECK(after[2].name == "o/stem.weight.buffer0");
  CHECK(after[2].dtype == "F32");
  CHECK(after[2].shape == std::vector<std::size_t>{6 * 4});
  CHECK(after[3].name == "o/stem.weight.buffer1");

  // A state without buffers round-trips too, and loading it drops buffers.
  temp_file file("moekit_ckpt_empty");
  rng g2(5);
  tiny_mlp fresh(g2);
  optim::adamw<float> fresh_opt(fresh);
  io::save_safetensors(file.path, io::optimizer_state_records(fresh_opt));
  io::load_optimizer_state(opt, io::read_safetensors(file.path));
  CHECK(opt.steps() == 0);
  CHECK(opt.state(0, 0).step == 0);
  CHECK(opt.state(0, 0).buffers.empty());
}

TEST_CASE("checkpoint: bad files are io_errors and change nothing", "[mlp][checkpoint][errors]") {
  temp_file file("moekit_ckpt_bad");
  rng g(6);
  tiny_mlp a(g);
  optim::adamw<float> opt_a(a);
  train_step(a, opt_a, make_ckpt_batch(7));
  io::save_checkpoint(file.path, a, opt_a);

  // Another width: the parameter shapes differ.
  rng g2(7);
  mlp::bottleneck_mlp<> wide(g2, {.in = 6, .width = 5, .blocks = 2, .classes = 3, .expansion = 2});
  optim::adamw<float> opt_wide(wide);
  REQUIRE_THROWS_AS(io::load_checkpoint(file.path, wide, opt_wide), io_error);
  REQUIRE_THROWS_WITH(io::load_checkpoint(file.path, wide, opt_wide), Catch::Contains("stem.weight"));

  // Model only, no optimizer state: load_checkpoint names the missing entry, and leaves the model alone.
  temp_file model_only("moekit_ckpt_model_only");
  io::save_safetensors(model_only.path, a);
  rng g3(8);
  tiny_mlp b(g3);
  optim::adamw<float> opt_b(b);
  const auto b_before = ckpt_values_of(b);
  REQUIRE_THROWS_WITH(io::load_checkpoint(model_only.path, b, opt_b), Catch::Contains("optim.steps"));
  CHECK(ckpt_values_of(b) == b_before);
  CHECK(opt_b.steps() == 0);

  // Optimizer state of a parameter the optimizer does not have.
  temp_file stray("moekit_ckpt_stray");
  auto records = io::optimizer_state_records(opt_a);
  const tensor<float, shape<2>> extra = zeros<float>(shape<2>{});
  records.push_back(io::record_of("optim.ghost.buffer0", extra));
  io::save_safetensors(stray.path, records);
  REQUIRE_THROWS_WITH(io::load_optimizer_state(opt_b, io::read_safetensors(stray.path)), Catch::Contains("optim.ghost.buffer0"));
  CHECK(opt_b.steps() == 0);
}

TEST_CASE("checkpoint: buffers (batch-norm running statistics) round trip", "[mlp][checkpoint]") {
  using bn = nn::batch_norm1d<5>;
  bn trained(5), fresh(5);
  rng g(3);
  {
    tape t;
    (void)trained(t.input(normal<float>(g, shape<dyn, 5>{32}) * 3.0f + 1.0f));  // training mode: statistics move
  }
  optim::sgd<float> opt(trained, {.lr = 0.1});
  optim::sgd<float> opt2(fresh, {.lr = 0.1});
  temp_file file("bn_checkpoint");
  io::save_checkpoint(file.path, trained, opt);
  REQUIRE(io::read_safetensors(file.path).find("running_mean"));
  io::load_checkpoint(file.path, fresh, opt2);
  for (std::size_t i = 0; i < 5; ++i) {
    REQUIRE(trained.running_mean()[i] != 0.0f);
    REQUIRE(fresh.running_mean()[i] == trained.running_mean()[i]);
    REQUIRE(fresh.running_var()[i] == trained.running_var()[i]);
  }
}

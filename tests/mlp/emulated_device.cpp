// The MLP models on emulated_device (a backend the host may not index, run by
// the CPU kernels): three SGD-with-momentum steps from the same seed give the
// same parameters and losses as on cpu, with gradient clipping on the way; and a
// checkpoint written from one backend loads into a model on the other.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/nn/transfer.hpp>

#include "../support/temp_dir.hpp"

using namespace moekit;

namespace {

constexpr mlp::config emu_tiny{.in = 16, .width = 8, .blocks = 2, .classes = 3, .expansion = 2};
const mlp::mixer_config mixer_sizes{.height = 4, .width = 4, .channels = 1, .patch = 2, .hidden = 6, .blocks = 2,
                                    .classes = 3};

/// Host inputs (16, 16) and labels in [0, 3) from seed.
struct emu_batch {
  tensor<float, shape<dyn, dyn>> x;
  tensor<index_t, shape<dyn>> y;
};
emu_batch make_emu_batch(std::uint64_t seed) {
  rng g(seed);
  emu_batch b{normal<float>(g, shape<dyn, dyn>{16, 16}), tensor<index_t, shape<dyn>>(shape<dyn>{16})};
  for (std::size_t i = 0; i < 16; ++i) b.y[i] = static_cast<index_t>((i * 7 + seed) % 3);
  return b;
}

/// Every parameter value of a model, on the host, in visiting order.
template <class M>
std::vector<float> emu_values_of(M& model) {
  std::vector<float> out;
  visit_parameters(model, [&](const std::string&, auto& p) {
    const auto h = p.value().template to<cpu>();
    for (std::size_t i = 0; i < h.size(); ++i) out.push_back(h[i]);
  });
  return out;
}

/// Three SGD steps (momentum, weight decay) with clipping; inputs built on the
/// host and moved to the model's backend; labels passed as host tensors
/// (checked there, then moved). Not Adam: some device paths sum in another
/// order, and a bias in front of a layer norm has a gradient that is pure
/// rounding noise, which Adam's normalised step turns into a full lr-sized
/// move of either sign (optimizer checkpoints below use AdamW).
template <class M>
std::vector<double> train(M& model) {
  using B = typename M::input_type::backend_type;
  optim::sgd<float, B> opt(model, {.lr = 5e-2, .momentum = 0.9, .weight_decay = 1e-3});
  std::vector<double> losses;
  for (std::uint64_t step = 0; step < 3; ++step) {
    const emu_batch b = make_emu_batch(100 + step);
    tape t;
    opt.zero_grad();
    auto x = t.input(b.x.template to<B>());
    auto loss = cross_entropy(model(x), b.y);
    t.backward(loss);
    losses.push_back(optim::clip_grad_norm(opt, 0.5));
    losses.push_back(loss.value().template to<cpu>()[0]);
    opt.step();
  }
  return losses;
}

template <class Host, class Device>
void require_same_training(Host& host, Device& device) {
  REQUIRE(emu_values_of(host) == emu_values_of(device));  // same seed, same initial values
  const auto host_losses = train(host);
  const auto device_losses = train(device);
  REQUIRE(host_losses.size() == device_losses.size());
  for (std::size_t i = 0; i < host_losses.size(); ++i) {
    INFO("loss / norm " << i);
    REQUIRE(device_losses[i] == Approx(host_losses[i]).epsilon(1e-5));
  }
  const auto a = emu_values_of(host), b = emu_values_of(device);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("parameter element " << i);
    REQUIRE(b[i] == Approx(a[i]).epsilon(1e-5).margin(1e-6));
  }
}

}  // namespace

TEST_CASE("emulated_device: a bottleneck MLP trains as on cpu", "[mlp][emulated]") {
  rng g1(7), g2(7);
  mlp::bottleneck_mlp<emu_tiny, float, cpu> host(g1);
  mlp::bottleneck_mlp<emu_tiny, float, emulated_device> device(g2);
  require_same_training(host, device);
}

TEST_CASE("emulated_device: a standard MLP trains as on cpu", "[mlp][emulated]") {
  rng g1(8), g2(8);
  mlp::standard_mlp<emu_tiny, float, cpu> host(g1);
  mlp::standard_mlp<emu_tiny, float, emulated_device> device(g2);
  require_same_training(host, device);
}

TEST_CASE("emulated_device: an MLP-Mixer trains as on cpu", "[mlp][emulated][mixer]") {
  rng g1(9), g2(9);
  mlp::mlp_mixer<float, cpu> host(g1, mixer_sizes);
  mlp::mlp_mixer<float, emulated_device> device(g2, mixer_sizes);
  require_same_training(host, device);
}

TEST_CASE("emulated_device: checkpoints load across backends", "[mlp][emulated][checkpoint]") {
  testing::temp_dir dir("emulated_checkpoint");
  rng g1(10), g2(11), g3(12);
  mlp::bottleneck_mlp<emu_tiny, float, cpu> host(g1);
  mlp::bottleneck_mlp<emu_tiny, float, emulated_device> device(g2);
  mlp::bottleneck_mlp<emu_tiny, float, cpu> host_again(g3);
  (void)train(device);
  REQUIRE(emu_values_of(host) != emu_values_of(device));

  optim::adamw<float, emulated_device> device_opt(device);
  optim::adamw<float, cpu> host_opt(host);
  io::save_checkpoint(dir / "device.safetensors", device, device_opt, {{"epoch", "2"}});
  const auto meta = io::load_checkpoint(dir / "device.safetensors", host, host_opt);
  REQUIRE(meta.at("epoch") == "2");
  REQUIRE(emu_values_of(host) == emu_values_of(device));

  // And back: a host checkpoint into a device model, through load_safetensors.
  io::save_safetensors(dir / "host.safetensors", host_again);
  io::load_safetensors(dir / "host.safetensors", device);
  REQUIRE(emu_values_of(device) == emu_values_of(host_again));

  // A device model keeps its values when the file does not fit.
  mlp::bottleneck_mlp<mlp::config{.in = 16, .width = 8, .blocks = 1, .classes = 3, .expansion = 2}, float, cpu>
      other(g1);
  io::save_safetensors(dir / "other.safetensors", other);
  REQUIRE_THROWS_AS(io::load_safetensors(dir / "other.safetensors", device), io_error);
  REQUIRE(emu_values_of(device) == emu_values_of(host_again));
}

TEST_CASE("emulated_device: optimizer state checkpoints resume on the other backend", "[mlp][emulated][checkpoint]") {
  testing::temp_dir dir("emulated_optim");
  rng g1(13), g2(13), g3(14);
  mlp::bottleneck_mlp<emu_tiny, float, cpu> host(g1);
  mlp::bottleneck_mlp<emu_tiny, float, emulated_device> device(g3);
  optim::adamw<float, cpu> host_opt(host, {.lr = 1e-2});
  optim::adamw<float, emulated_device> device_opt(device, {.lr = 1e-2});

  auto step = [](auto& model, auto& opt, std::uint64_t seed) {
    using B = typename std::remove_cvref_t<decltype(model)>::input_type::backend_type;
    const emu_batch b = make_emu_batch(seed);
    tape t;
    opt.zero_grad();
    t.backward(cross_entropy(model(t.input(b.x.template to<B>())), b.y.template to<B>()));
    opt.step();
  };
  step(host, host_opt, 1);
  step(host, host_opt, 2);
  io::save_checkpoint(dir / "run.safetensors", host, host_opt);
  io::load_checkpoint(dir / "run.safetensors", device, device_opt);
  REQUIRE(device_opt.steps() == 2);
  REQUIRE(emu_values_of(device) == emu_values_of(host));
  step(host, host_opt, 3);
  step(device, device_opt, 3);
  REQUIRE(emu_values_of(device) == emu_values_of(host));
}

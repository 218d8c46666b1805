// Layers and models on the GPU against the CPU backend: the same model built
// on cpu and on cuda from the same seed (Philox draws by counter, so the same
// initial weights), one forward + backward on the same input, then outputs,
// input gradients and every parameter gradient compared on the host (fp32,
// TF32 off: rtol 1e-4 plus a margin of 1e-5 of the tensor's largest value).
// Covers a bottleneck MLP (also two SGD steps; not Adam, whose normalised
// step would turn rounding-level gradient differences into lr-sized ones), a pre-norm attention block
// with a causal + padding mask, MoE layers (top-2 dropless FFN experts, top-1
// with a capacity factor and aux losses, expert choice with SwiGLU experts, a
// shared expert; the routing plans must be identical), a UoE block (SMHA +
// UoME) in each selection mode (the selections must be identical), nn::copy_state
// cpu -> cuda -> cpu, and a failing CUDA call surfacing as cuda_error.
// Without a device every case prints "SKIPPED: no CUDA device" and returns.
#include <catch2/catch.hpp>

#include "skip.cuh"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <moekit.hpp>
#include <moekit/cuda.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/moe.hpp>
#include <moekit/nn/attention.hpp>
#include <moekit/nn/norm.hpp>
#include <moekit/nn/transfer.hpp>
#include <moekit/optim/sgd.hpp>
#include <moekit/uoe.hpp>

#include "compare.cuh"

// Not `using namespace moekit`: CUDA's headers declare a global `half` and a namespace `cuda`.
namespace mk = moekit;
using gpu = mk::cuda;
using mk::dyn;
using mk::index_t;
using mk::shape;

namespace {

using moekit::testing::host_values;
using moekit::testing::require_close;

/// What one step of a model produced, on the host.
struct step_result {
  std::vector<double> y, dx;
  std::map<std::string, std::vector<double>> params, grads;
  // MoE layers: the routing plan.
  std::vector<double> token, expert, offsets, gate, aux_values;
  std::size_t dropped = 0;
};

template <class M>
void record_parameters(step_result& r, M& model) {
  mk::visit_parameters(model, [&](const std::string& path, auto& p) {
    r.params[path] = host_values(p.value());
    r.grads[path] = host_values(p.grad());
  });
}

/// Same output, input gradient, parameters and parameter gradients.
void require_same(const step_result& on_gpu, const step_result& on_cpu) {
  require_close(on_gpu.y, on_cpu.y, "output");
  require_close(on_gpu.dx, on_cpu.dx, "input gradient");
  REQUIRE(on_gpu.params.size() == on_cpu.params.size());
  REQUIRE(!on_cpu.params.empty());
  for (const auto& [path, v] : on_cpu.params) {
    REQUIRE(on_gpu.params.count(path) == 1);
    require_close(on_gpu.params.at(path), v, "value of " + path);
    require_close(on_gpu.grads.at(path), on_cpu.grads.at(path), "gradient of " + path);
  }
}

/// Same routing plan (assignments exactly), then as require_same.
void require_same_moe(const step_result& on_gpu, const step_result& on_cpu) {
  REQUIRE(on_gpu.offsets == on_cpu.offsets);
  REQUIRE(on_gpu.token == on_cpu.token);
  REQUIRE(on_gpu.expert == on_cpu.expert);
  REQUIRE(on_gpu.dropped == on_cpu.dropped);
  require_close(on_gpu.gate, on_cpu.gate, "gates");
  require_close(on_gpu.aux_values, on_cpu.aux_values, "aux loss terms");
  require_same(on_gpu, on_cpu);
}

template <class T, class S>
mk::tensor<T, S> random_normal(std::uint64_t seed, S s) {
  mk::rng g(seed);
  return mk::normal<T>(g, s);
}

// ---- bottleneck MLP: forward, backward, two SGD steps ------------------------------

constexpr mk::mlp::config mlp_sizes{.in = 12, .width = 16, .blocks = 3, .classes = 5};

template <class B>
step_result mlp_steps(const mk::tensor<float, shape<dyn, dyn>>& x, const mk::tensor<index_t, shape<dyn>>& labels) {
  mk::rng g(3);
  mk::mlp::bottleneck_mlp<mk::mlp::runtime_config, float, B> model(g, mlp_sizes);
  mk::optim::sgd<float, B> opt(model, {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3});
  step_result r;
  for (int step = 0; step < 2; ++step) {
    opt.zero_grad();
    mk::tape t;
    auto xv = t.variable(x.template to<B>());
    auto logits = model(xv);                         // (8, 5)
    auto loss = mk::cross_entropy(logits, labels);  // host labels: checked, then copied
    t.backward(loss);
    if (step == 0) {
      r.y = host_values(logits.value());
      r.dx = host_values(xv.grad());
      record_parameters(r, model);  // the initial values and the first gradients
    }
    opt.step();
  }
  step_result after;
  record_parameters(after, model);
  for (auto& [path, v] : after.params) r.params["after 2 SGD steps: " + path] = v;
  for (auto& [path, v] : after.grads) r.grads["after 2 SGD steps: " + path] = v;
  return r;
}

// ---- pre-norm self-attention block ---------------------------------------------------

/// x + attention(LayerNorm(x)), parameters "norm.*", "attention.*".
template <class B>
struct attention_block {
  mk::nn::layer_norm<dyn, float, B> norm;
  mk::nn::multi_head_attention<dyn, dyn, float, B> attention;

  attention_block(mk::rng& g, std::size_t d, std::size_t heads) : norm(d), attention(g, d, heads) {}

  /// x (batch, seq, d); the mask built on the host (a device layer checks it there, then copies it).
  template <class S>
  mk::var<float, S, B> operator()(const mk::var<float, S, B>& x, const mk::nn::attention_mask<mk::cpu>& mask) {
    return x + attention(norm(x), mask);
  }

  template <class V>
  void parameters(V&& visit) {
    visit("norm", norm);
    visit("attention", attention);
  }
};

template <class B>
step_result attention_step(const mk::tensor<float, shape<dyn, dyn, dyn>>& x,
                           const mk::tensor<float, shape<dyn, dyn, dyn>>& dy,
                           const mk::nn::attention_mask<mk::cpu>& mask) {
  mk::rng g(17);
  attention_block<B> block(g, x.extent(2), 2);
  step_result r;
  mk::tape t;
  auto xv = t.variable(x.template to<B>());
  auto y = block(xv, mask);  // (batch, seq, d)
  t.backward(y, dy.template to<B>());
  r.y = host_values(y.value());
  r.dx = host_values(xv.grad());
  record_parameters(r, block);
  return r;
}

// ---- MoE layers -----------------------------------------------------------------------

constexpr std::size_t d_model = 8, d_ff = 12;
using gelu_ffn = mk::moe::ffn_expert<d_model, d_ff>;
using swiglu = mk::moe::swiglu_expert<d_model, d_ff>;

/// One forward + backward of a backend-B MoE layer on host x (T, D), upstream gradient dy.
template <class B, class Layer>
step_result moe_step(Layer& layer, const mk::tensor<float, shape<dyn, dyn>>& x,
                     const mk::tensor<float, shape<dyn, dyn>>& dy) {
  step_result r;
  mk::tape t;
  auto xv = t.variable(x.template to<B>());
  auto y = layer(xv);
  t.backward(y, dy.template to<B>());
  const auto& plan = layer.last_routing();
  r.token = host_values(plan.token);
  r.expert = host_values(plan.expert);
  r.offsets = host_values(plan.offsets);
  r.gate = host_values(plan.gate.value());
  r.dropped = plan.dropped;
  for (const auto& term : plan.aux_terms) r.aux_values.push_back(term.value());
  r.y = host_values(y.value());
  r.dx = host_values(xv.grad());
  record_parameters(r, layer);
  return r;
}

/// A top-k layer on B with E experts, K per token, expert spec X, optional shared expert.
template <class B, std::size_t E, std::size_t K, class X>
step_result top_k_step(mk::moe::top_k_options o, bool shared, std::size_t tokens) {
  using layer_t = mk::moe::layer<mk::moe::top_k_router<d_model, E, K, float, B>, X, float, B>;
  mk::rng g(5);
  mk::moe::top_k_router<d_model, E, K, float, B> router(g, o);
  typename layer_t::bank_type bank(g);
  std::optional<typename layer_t::shared_type> sh;
  if (shared) sh.emplace(g);
  layer_t layer(std::move(router), std::move(bank), std::move(sh));
  return moe_step<B>(layer, random_normal<float>(11, shape<dyn, dyn>{tokens, d_model}),
                     random_normal<float>(12, shape<dyn, dyn>{tokens, d_model}));
}

}  // namespace

TEST_CASE("cuda layers: bottleneck MLP forward, backward and two SGD steps match the CPU", "[cuda][layers]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto x = random_normal<float>(1, shape<dyn, dyn>{8, mlp_sizes.in});
  mk::tensor<index_t, shape<dyn>> labels(shape<dyn>{8});
  for (std::size_t i = 0; i < 8; ++i) labels[i] = static_cast<index_t>((3 * i + 1) % mlp_sizes.classes);
  const auto on_cpu = mlp_steps<mk::cpu>(x, labels);
  const auto on_gpu = mlp_steps<gpu>(x, labels);
  require_same(on_gpu, on_cpu);
  // The steps moved the weights: the comparison after them is not of the initial values again.
  REQUIRE(on_cpu.params.at("after 2 SGD steps: head.weight") != on_cpu.params.at("head.weight"));
}

TEST_CASE("cuda layers: layer_norm + causal, padded self-attention block matches the CPU", "[cuda][layers]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto x = random_normal<float>(2, shape<dyn, dyn, dyn>{3, 5, 8});
  const auto dy = random_normal<float>(3, shape<dyn, dyn, dyn>{3, 5, 8});
  mk::nn::attention_mask<mk::cpu> mask;
  mask.causal = true;
  mask.key_lengths = mk::from_values<index_t>(shape<dyn>{3}, {5, 3, 1});  // batch 1 and 2 padded
  const auto on_cpu = attention_step<mk::cpu>(x, dy, mask);
  require_same(attention_step<gpu>(x, dy, mask), on_cpu);
  REQUIRE(on_cpu.params.count("attention.q_proj.weight") == 1);
  REQUIRE(on_cpu.params.count("norm.weight") == 1);
}

TEST_CASE("cuda layers: MoE top-2 softmax, dropless, FFN experts match the CPU", "[cuda][layers][moe]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto on_cpu = top_k_step<mk::cpu, 6, 2, gelu_ffn>({}, false, 20);
  require_same_moe(top_k_step<gpu, 6, 2, gelu_ffn>({}, false, 20), on_cpu);
  REQUIRE(on_cpu.token.size() == 40);
  REQUIRE(on_cpu.dropped == 0);
}

TEST_CASE("cuda layers: MoE top-1 with a capacity factor and aux losses matches the CPU", "[cuda][layers][moe]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const mk::moe::top_k_options o{.capacity_factor = 0.75, .load_balance_weight = 0.01, .z_loss_weight = 0.001};
  const auto on_cpu = top_k_step<mk::cpu, 4, 1, gelu_ffn>(o, false, 24);
  require_same_moe(top_k_step<gpu, 4, 1, gelu_ffn>(o, false, 24), on_cpu);
  REQUIRE(on_cpu.aux_values.size() == 2);
  // Capacity ceil(0.75 · 24 / 4) = 5 per expert: 24 tokens cannot all fit.
  REQUIRE(on_cpu.dropped > 0);
  REQUIRE(on_cpu.token.size() + on_cpu.dropped == 24);
}

TEST_CASE("cuda layers: MoE expert choice with SwiGLU experts matches the CPU", "[cuda][layers][moe]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  auto run = [](auto tag) {
    using B = decltype(tag);
    using router_t = mk::moe::expert_choice_router<d_model, 4, float, B>;
    using layer_t = mk::moe::layer<router_t, swiglu, float, B>;
    mk::rng g(21);
    router_t router(g, {.capacity_factor = 1.5});
    layer_t layer(std::move(router), typename layer_t::bank_type(g));
    return moe_step<B>(layer, random_normal<float>(4, shape<dyn, dyn>{10, d_model}),
                       random_normal<float>(5, shape<dyn, dyn>{10, d_model}));
  };
  const auto on_cpu = run(mk::cpu{});
  require_same_moe(run(gpu{}), on_cpu);
  // c = ceil(1.5 · 10 / 4) = 4 tokens for each of the 4 experts.
  REQUIRE(on_cpu.offsets == std::vector<double>{0, 4, 8, 12, 16});
}

TEST_CASE("cuda layers: MoE top-2 with a shared expert matches the CPU", "[cuda][layers][moe]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto on_cpu = top_k_step<mk::cpu, 4, 2, swiglu>({.load_balance_weight = 0.01}, true, 16);
  require_same_moe(top_k_step<gpu, 4, 2, swiglu>({.load_balance_weight = 0.01}, true, 16), on_cpu);
  REQUIRE(on_cpu.params.count("shared.w_gate") == 1);
}

TEST_CASE("cuda layers: nn::copy_state cpu -> cuda -> cpu is bitwise", "[cuda][layers][transfer]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using moe_t = mk::moe::token_choice_moe<float, mk::cpu>;
  using moe_gpu = mk::moe::token_choice_moe<float, gpu>;
  const mk::moe::baseline_spec spec{.d_model = 8, .d_ff = 16, .experts = 4};
  mk::rng g1(1), g2(2), g3(3);
  auto source = mk::moe::make_gshard<float, mk::cpu>(g1, spec);
  moe_gpu middle = mk::moe::make_gshard<float, gpu>(g2, spec);
  moe_t back = mk::moe::make_gshard<float, mk::cpu>(g3, spec);
  mk::nn::copy_state(source, middle);
  mk::nn::copy_state(middle, back);
  step_result a, b;
  record_parameters(a, source);
  record_parameters(b, back);
  REQUIRE(a.params.size() == b.params.size());
  REQUIRE(a.params.count("router.weight") == 1);
  for (const auto& [path, v] : a.params) {
    INFO(path);
    REQUIRE(b.params.at(path) == v);  // exact: copies, no arithmetic
  }
  // Different seeds: the copy, not the initialisation, made them equal.
  step_result fresh;
  mk::rng g4(3);
  auto other = mk::moe::make_gshard<float, mk::cpu>(g4, spec);
  record_parameters(fresh, other);
  REQUIRE(fresh.params.at("router.weight") != a.params.at("router.weight"));
}

TEST_CASE("cuda layers: a failing allocation throws cuda_error naming cuda::allocate", "[cuda][layers][errors]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const shape<dyn> absurd{std::size_t(1) << 52};  // 16 PiB of floats
  REQUIRE_THROWS_AS((mk::tensor<float, shape<dyn>, gpu>(absurd)), mk::cuda_error);
  REQUIRE_THROWS_WITH((mk::tensor<float, shape<dyn>, gpu>(absurd)), Catch::Contains("cuda::allocate"));
  // The error is not sticky: the device still works.
  const auto x = mk::from_values<float>(shape<dyn>{3}, {1.f, 2.f, 3.f});
  REQUIRE(host_values(x.to<gpu>()) == std::vector<double>{1, 2, 3});
}

TEST_CASE("cuda layers: MoE with shared expert weights (4 slots, 3 sets) matches the CPU", "[cuda][layers][moe][sharing]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  auto step = [](auto backend) {
    using B = decltype(backend);
    using layer_t = mk::moe::layer<mk::moe::top_k_router<d_model, 4, 2, float, B>, gelu_ffn, float, B>;
    mk::rng g(7);
    mk::moe::top_k_router<d_model, 4, 2, float, B> router(g, {.load_balance_weight = 0.01});
    layer_t layer(std::move(router), typename layer_t::bank_type(g));
    layer.experts().share(mk::moe::slot_map<B>(std::vector<index_t>{1, 0, 1, 2}));
    return moe_step<B>(layer, random_normal<float>(13, shape<dyn, dyn>{16, d_model}),
                       random_normal<float>(14, shape<dyn, dyn>{16, d_model}));
  };
  const auto on_cpu = step(mk::cpu{});
  require_same_moe(step(gpu{}), on_cpu);
  REQUIRE(on_cpu.params.at("experts.w1").size() == 3 * d_model * d_ff);
}

TEST_CASE("cuda layers: a bf16 MoE layer with an fp32 router (cast_router) follows the fp32 layer", "[cuda][layers][moe][mixed]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  using router_t = mk::moe::cast_router<mk::moe::top_k_router<d_model, 4, 2, float, gpu>>;
  using layer_bf16 = mk::moe::layer<router_t, gelu_ffn, mk::bf16, gpu>;
  using layer_f32 = mk::moe::layer<mk::moe::top_k_router<d_model, 4, 2, float, gpu>, gelu_ffn, float, gpu>;
  mk::rng g(8), g2(8);
  mk::moe::top_k_router<d_model, 4, 2, float, gpu> r32(g, {});
  typename layer_f32::bank_type bank32(g);
  router_t r16(g2, mk::moe::top_k_options{});
  typename layer_bf16::bank_type bank16(g2);
  bank16.parameters([&](std::string_view name, auto& p) {
    bank32.parameters([&](std::string_view name2, auto& q) {
      using P = std::remove_cvref_t<decltype(p)>;
      using Q = std::remove_cvref_t<decltype(q)>;
      if constexpr (std::is_same_v<typename P::shape_type, typename Q::shape_type>)
        if (name == name2) p.value() = mk::cast<mk::bf16>(q.value());
    });
  });
  layer_f32 full(std::move(r32), std::move(bank32));
  layer_bf16 half_precision(std::move(r16), std::move(bank16));
  const auto x = random_normal<float>(15, shape<dyn, dyn>{16, d_model});
  mk::tape t;
  auto y32 = full(t.input(x.to<gpu>()));
  auto y16 = half_precision(t.input(mk::cast<mk::bf16>(x).to<gpu>()));
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(half_precision.last_routing().gate)>,
                               mk::var<float, shape<dyn>, gpu>>);
  const auto a = host_values(y32.value()), b = host_values(mk::cast<float>(y16.value()));
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(b[i] == Approx(a[i]).epsilon(0.05).margin(0.05));
}

TEST_CASE("cuda layers: a UoE block (SMHA + UoME) matches the CPU in every mode", "[cuda][layers][uoe]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  for (auto mode : {mk::uoe::mode::faithful, mk::uoe::mode::gated, mk::uoe::mode::causal}) {
    auto step = [mode](auto backend) {
      using B = decltype(backend);
      using ffn_t = mk::uoe::uome<float, B>;
      const mk::uoe::selection_options sel{.mode = mode, .top_k = 2, .capacity = 0.5, .balance_weight = 0.01};
      mk::rng g(31);
      mk::uoe::block<ffn_t, float, B> blk(g, {.d_model = d_model, .heads = 4, .select = sel, .causal = true, .rope = true},
                                          ffn_t(g, {.d_model = d_model, .d_ff = 16, .experts = 4, .select = sel}));
      const auto x = random_normal<float>(33, shape<dyn, dyn, dyn>{3, 8, d_model});
      const auto dy = random_normal<float>(34, shape<dyn, dyn, dyn>{3, 8, d_model});
      step_result r;
      mk::tape t;
      auto xv = t.variable(x.template to<B>());
      auto y = blk(xv);
      t.backward(y, dy.template to<B>());
      r.token = host_values(blk.attention().last_selection().token);
      const auto& plan = blk.moe().last_routing();
      r.expert = host_values(plan.token);
      r.offsets = host_values(plan.offsets);
      r.gate = host_values(plan.gate.value());
      r.y = host_values(y.value());
      r.dx = host_values(xv.grad());
      record_parameters(r, blk);
      return r;
    };
    INFO("mode " << mk::uoe::mode_name(mode));
    const auto on_cpu = step(mk::cpu{});
    const auto on_gpu = step(gpu{});
    REQUIRE(on_gpu.token == on_cpu.token);  // the attention heads' selection
    require_same_moe(on_gpu, on_cpu);       // the UoME plan, outputs, every gradient
  }
}

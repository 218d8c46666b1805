// io::save_torch_state / load_torch_state: round trips in every style (same
// parameters, same outputs, same next optimizer step), the stored layouts
// against moekit's (nn.Linear's (out, in), one tensor per expert), styles the
// experts do not fit, and files that must be refused. The hidden case
// [.torch_interop] is the C++ half of tests/python/torch_interop.py.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "../support/temp_dir.hpp"
#include <moekit/core/random.hpp>
#include <moekit/io/safetensors.hpp>
#include <moekit/io/torch_state.hpp>
#include <moekit/moe/expert_bank.hpp>
#include <moekit/moe/moe_layer.hpp>
#include <moekit/moe/top_k.hpp>
#include <moekit/nn/linear.hpp>
#include <moekit/optim/adamw.hpp>
#include <moekit/tensor/ops/creation.hpp>

namespace torch_state_test {

using namespace moekit;
using moekit::testing::temp_dir;
namespace fs = std::filesystem;

using router_t = moe::top_k_router<dyn, dyn, dyn>;
using gated_moe = moe::layer<router_t, moe::swiglu_expert<dyn, dyn>>;
using ffn_moe = moe::layer<router_t, moe::ffn_expert<dyn, dyn, moe::activation::gelu, true>>;
using relu_moe = moe::layer<router_t, moe::ffn_expert<dyn, dyn, moe::activation::relu, false>>;
using matrix = tensor<float, shape<dyn, dyn>>;  // (rows, cols)

struct sizes {
  std::size_t d = 6, f = 5, e = 4, k = 2;
  bool renormalize = true;
};

template <class L>
L make_layer(std::uint64_t seed, sizes s = {}) {
  rng g(seed);
  router_t router(g, {.renormalize = s.renormalize}, s.d, s.e, s.k);
  typename L::bank_type bank(g, s.e, s.d, s.f);
  return L(std::move(router), std::move(bank));
}

std::vector<float> host(const matrix& t) { return {t.data(), t.data() + t.size()}; }

/// The layer's output on x (T, D), on the host.
template <class L>
std::vector<float> forward(L& layer, const matrix& x) {
  tape t;
  auto y = layer(t.variable(x));  // (T, D)
  return host(y.value());
}

/// One AdamW step on the loss Σ y ⊙ r.
template <class L, class Opt>
void train_step(L& layer, Opt& opt, const matrix& x, const matrix& r) {
  opt.zero_grad();
  tape t;
  auto y = layer(t.variable(x));  // (T, D)
  t.backward(y, r);
  opt.step();
}

/// Every parameter value by moekit name.
template <class L>
std::map<std::string, std::vector<float>> snapshot(L& layer) {
  std::map<std::string, std::vector<float>> out;
  visit_parameters(layer, [&](const std::string& name, auto& p) {
    out[name].assign(p.value().data(), p.value().data() + p.size());
  });
  return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  float m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

float max_param_diff(const std::map<std::string, std::vector<float>>& a,
                     const std::map<std::string, std::vector<float>>& b) {
  REQUIRE(a.size() == b.size());
  float m = 0;
  for (const auto& [name, values] : a) m = std::max(m, max_abs_diff(values, b.at(name)));
  return m;
}

/// A record's F32 values.
std::vector<float> floats(const io::tensor_record& r) {
  REQUIRE(r.dtype == "F32");
  std::vector<float> v(r.bytes.size() / sizeof(float));
  std::memcpy(v.data(), r.bytes.data(), r.bytes.size());
  return v;
}

matrix random_matrix(std::uint64_t seed, std::size_t rows, std::size_t cols) {
  rng g(seed);
  return normal<float>(g, shape<dyn, dyn>{rows, cols});
}

/// Saves `a` in `style`, loads it into a differently seeded layer, and
/// requires the same parameters and outputs.
template <class L>
void require_round_trip(io::torch_style style, sizes s = {}) {
  temp_dir dir("torch_state");
  auto a = make_layer<L>(1, s);
  auto b = make_layer<L>(2, s);
  const auto x = random_matrix(3, 10, s.d);  // (10, D)
  REQUIRE(max_param_diff(snapshot(a), snapshot(b)) > 0);
  io::save_torch_state(dir / "a.safetensors", a, style);
  const auto meta = io::load_torch_state(dir / "a.safetensors", b, style);
  CHECK(meta.at("moekit.style") == io::torch_style_name(style));
  CHECK(max_param_diff(snapshot(a), snapshot(b)) == 0);
  CHECK(max_abs_diff(forward(a, x), forward(b, x)) == 0);
}

/// The record `name` of `file`, with its shape checked.
const io::tensor_record& stored(const io::safetensors_data& file, const std::string& name,
                                std::vector<std::size_t> shape) {
  const auto* r = file.find(name);
  INFO(name);
  REQUIRE(r != nullptr);
  REQUIRE(r->shape == shape);
  return *r;
}

/// Requires that `t` (rows·cols, torch layout (cols, rows)) is the transpose of
/// the moekit (rows, cols) matrix starting at `m`.
void require_transpose(const std::vector<float>& t, const float* m, std::size_t rows, std::size_t cols) {
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) REQUIRE(t[j * rows + i] == m[i * cols + j]);
}

/// The file's records, with `name` left out or replaced by `with`.
std::vector<io::tensor_record> edited(const io::safetensors_data& file, const std::string& name,
                                      const io::tensor_record* with = nullptr) {
  std::vector<io::tensor_record> out;
  for (const auto& r : file.tensors)
    if (r.name != name) out.push_back(r);
    else if (with) out.push_back(*with);
  return out;
}

/// Message of the io_error that load throws, with the layer unchanged.
template <class L>
std::string load_error(const fs::path& path, L& layer, io::torch_style style) {
  const auto before = snapshot(layer);
  std::string what;
  try {
    io::load_torch_state(path, layer, style);
  } catch (const io_error& e) {
    what = e.what();
  }
  CHECK(snapshot(layer) == before);
  return what;
}

/// A model around an MoE layer: its projection is an nn::linear.
struct projected_moe {
  rng g;
  nn::linear<dyn, dyn> proj;  // (3, 6)
  gated_moe ffn;

  explicit projected_moe(std::uint64_t seed) : g(seed), proj(g, 3, 6), ffn(make_layer<gated_moe>(seed + 1)) {}
  void parameters(auto&& visit) {
    visit("proj", proj);
    visit("ffn", ffn);
  }
};

/// The values of the layer's parameter `name` (moekit layout).
template <class L>
const float* param_data(L& layer, const std::string& name) {
  const float* out = nullptr;
  visit_parameters(layer, [&](const std::string& n, auto& p) {
    if (n == name) out = p.value().data();
  });
  INFO(name);
  REQUIRE(out != nullptr);
  return out;
}

// ---- the interop half of tests/python/torch_interop.py ------------------------

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

io::torch_style style_named(const std::string& s) {
  for (auto style : {io::torch_style::plain, io::torch_style::mixtral, io::torch_style::olmoe,
                     io::torch_style::switch_transformers})
    if (s == io::torch_style_name(style)) return style;
  FAIL("MOEKIT_INTEROP_STYLE: unknown style '" << s << "'");
  return io::torch_style::plain;
}

/// A named F32 matrix of a plain safetensors file.
matrix read_matrix(const io::safetensors_data& file, const std::string& name) {
  const auto* r = file.find(name);
  INFO(file.path.string() << ": " << name);
  REQUIRE(r != nullptr);
  REQUIRE(r->shape.size() == 2);
  matrix m(shape<dyn, dyn>{r->shape[0], r->shape[1]});
  io::copy_into(file, name, m);
  return m;
}

/// The interop sizes (the Python side uses the same): D 8, F 16, E 4, top-2
/// (switch: top-1 without renormalisation, as HF's Switch gates).
sizes interop_sizes(io::torch_style style) {
  if (style == io::torch_style::switch_transformers) return {8, 16, 4, 1, false};
  return {8, 16, 4, 2, true};
}
const optim::adamw_options interop_adamw{.lr = 1e-2, .weight_decay = 0.1};

/// Export: a seeded layer after one AdamW step, its input, loss weights and
/// output, and its parameters after a second step.
template <class L>
void interop_export(const fs::path& dir, io::torch_style style) {
  auto layer = make_layer<L>(2024, interop_sizes(style));
  optim::adamw<float> opt(layer, interop_adamw);
  const auto x = random_matrix(7, 32, 8);  // (32, D)
  const auto r = random_matrix(8, 32, 8);  // (32, D)
  train_step(layer, opt, x, r);
  io::save_torch_state(dir / "moekit_state.safetensors", layer, opt, style);
  tape t;
  auto y = layer(t.variable(x));  // (32, D)
  const auto y_value = y.value();
  io::save_safetensors(dir / "moekit_io.safetensors",
                       std::vector{io::record_of("x", x), io::record_of("r", r), io::record_of("y", y_value)});
  train_step(layer, opt, x, r);
  io::save_torch_state(dir / "moekit_step2.safetensors", layer, style);
}

/// Import: PyTorch's state after one step must give PyTorch's output, and one
/// more moekit step must give PyTorch's parameters after its second step.
template <class L>
void interop_import(const fs::path& dir, io::torch_style style) {
  auto layer = make_layer<L>(99, interop_sizes(style));
  optim::adamw<float> opt(layer, interop_adamw);
  io::load_torch_state(dir / "torch_state.safetensors", layer, opt, style);
  const auto io_file = io::read_safetensors(dir / "torch_io.safetensors");
  const auto x = read_matrix(io_file, "x"), r = read_matrix(io_file, "r"), y = read_matrix(io_file, "y");
  const float output_diff = max_abs_diff(forward(layer, x), host(y));
  train_step(layer, opt, x, r);
  auto expected = make_layer<L>(5, interop_sizes(style));
  io::load_torch_state(dir / "torch_step2.safetensors", expected, style);
  const float step_diff = max_param_diff(snapshot(layer), snapshot(expected));
  std::printf("torch_interop import %s: max |output diff| %.3g, max |parameter diff after an AdamW step| %.3g\n",
              io::torch_style_name(style), double(output_diff), double(step_diff));
  CHECK(output_diff < 1e-5f);
  CHECK(step_diff < 1e-5f);
}

template <class L>
void interop(const std::string& mode, const fs::path& dir, io::torch_style style) {
  if (mode == "export") interop_export<L>(dir, style);
  else if (mode == "import") interop_import<L>(dir, style);
  else FAIL("MOEKIT_INTEROP_MODE must be export or import, not '" << mode << "'");
}

}  // namespace torch_state_test

using namespace torch_state_test;

TEST_CASE("torch_state round trips keep parameters and outputs in every style", "[torch_state]") {
  SECTION("plain, FFN experts with biases") { require_round_trip<ffn_moe>(io::torch_style::plain); }
  SECTION("plain, gated experts") { require_round_trip<gated_moe>(io::torch_style::plain); }
  SECTION("mixtral") { require_round_trip<gated_moe>(io::torch_style::mixtral); }
  SECTION("olmoe") { require_round_trip<gated_moe>(io::torch_style::olmoe); }
  SECTION("switch") { require_round_trip<relu_moe>(io::torch_style::switch_transformers, {6, 5, 4, 1, false}); }
}

TEST_CASE("torch_state stores nn.Linear layouts, one tensor per expert", "[torch_state]") {
  temp_dir dir("torch_state");
  const sizes s;
  const std::size_t D = s.d, F = s.f, E = s.e;
  SECTION("mixtral: gate (E, D); experts' w1, w3 (F, D) from w_gate, w_up; w2 (D, F) from w_down") {
    auto layer = make_layer<gated_moe>(11, s);
    io::save_torch_state(dir / "m.safetensors", layer, io::torch_style::mixtral);
    const auto file = io::read_safetensors(dir / "m.safetensors");
    CHECK(file.tensors.size() == 1 + 3 * E);
    require_transpose(floats(stored(file, "block_sparse_moe.gate.weight", {E, D})), param_data(layer, "router.weight"), D, E);
    for (std::size_t i = 0; i < E; ++i) {
      const std::string expert = "block_sparse_moe.experts." + std::to_string(i);
      require_transpose(floats(stored(file, expert + ".w1.weight", {F, D})), param_data(layer, "experts.w_gate") + i * D * F, D, F);
      require_transpose(floats(stored(file, expert + ".w3.weight", {F, D})), param_data(layer, "experts.w_up") + i * D * F, D, F);
      require_transpose(floats(stored(file, expert + ".w2.weight", {D, F})), param_data(layer, "experts.w_down") + i * F * D, F, D);
    }
  }
  SECTION("olmoe: mlp.gate, mlp.experts.{i}.gate_proj / up_proj / down_proj") {
    auto layer = make_layer<gated_moe>(12, s);
    io::save_torch_state(dir / "o.safetensors", layer, io::torch_style::olmoe);
    const auto file = io::read_safetensors(dir / "o.safetensors");
    require_transpose(floats(stored(file, "mlp.gate.weight", {E, D})), param_data(layer, "router.weight"), D, E);
    require_transpose(floats(stored(file, "mlp.experts.3.up_proj.weight", {F, D})), param_data(layer, "experts.w_up") + 3 * D * F, D, F);
    require_transpose(floats(stored(file, "mlp.experts.1.down_proj.weight", {D, F})), param_data(layer, "experts.w_down") + F * D, F, D);
  }
  SECTION("switch: mlp.router.classifier, mlp.experts.expert_{i}.wi / wo") {
    auto layer = make_layer<relu_moe>(13, s);
    io::save_torch_state(dir / "s.safetensors", layer, io::torch_style::switch_transformers);
    const auto file = io::read_safetensors(dir / "s.safetensors");
    CHECK(file.tensors.size() == 1 + 2 * E);
    require_transpose(floats(stored(file, "mlp.router.classifier.weight", {E, D})), param_data(layer, "router.weight"), D, E);
    require_transpose(floats(stored(file, "mlp.experts.expert_2.wi.weight", {F, D})), param_data(layer, "experts.w1") + 2 * D * F, D, F);
    require_transpose(floats(stored(file, "mlp.experts.expert_0.wo.weight", {D, F})), param_data(layer, "experts.w2"), F, D);
  }
  SECTION("plain: biases as they are, under the expert's matrix") {
    auto layer = make_layer<ffn_moe>(14, s);
    io::save_torch_state(dir / "p.safetensors", layer);
    const auto file = io::read_safetensors(dir / "p.safetensors");
    CHECK(file.tensors.size() == 1 + 4 * E);
    const auto b1 = floats(stored(file, "experts.2.w1.bias", {F}));
    CHECK(std::equal(b1.begin(), b1.end(), param_data(layer, "experts.b1") + 2 * F));
    const auto b2 = floats(stored(file, "experts.0.w2.bias", {D}));
    CHECK(std::equal(b2.begin(), b2.end(), param_data(layer, "experts.b2")));
    require_transpose(floats(stored(file, "router.weight", {E, D})), param_data(layer, "router.weight"), D, E);
  }
}

TEST_CASE("torch_state transposes nn::linear weights and renames the MoE block in a larger model", "[torch_state]") {
  temp_dir dir("torch_state");
  projected_moe a(31), b(41);
  io::save_torch_state(dir / "model.safetensors", a, io::torch_style::mixtral);
  const auto file = io::read_safetensors(dir / "model.safetensors");
  require_transpose(floats(stored(file, "proj.weight", {6, 3})), param_data(a, "proj.weight"), 3, 6);
  const auto bias = floats(stored(file, "proj.bias", {6}));
  CHECK(std::equal(bias.begin(), bias.end(), param_data(a, "proj.bias")));
  (void)stored(file, "block_sparse_moe.gate.weight", {4, 6});       // "ffn" takes the style's block name
  (void)stored(file, "block_sparse_moe.experts.0.w1.weight", {5, 6});
  io::load_torch_state(dir / "model.safetensors", b, io::torch_style::mixtral);
  CHECK(max_param_diff(snapshot(a), snapshot(b)) == 0);
}

TEST_CASE("torch_state names a shared expert in the plain style only", "[torch_state]") {
  temp_dir dir("torch_state");
  const auto with_shared = [](std::uint64_t seed) {
    rng g(seed);
    router_t router(g, {}, 6, 4, 2);
    gated_moe::bank_type bank(g, 4, 6, 5);
    return gated_moe(std::move(router), std::move(bank), gated_moe::shared_type(g, 1, 6, 10));
  };
  auto a = with_shared(1), b = with_shared(2);
  io::save_torch_state(dir / "shared.safetensors", a);
  const auto file = io::read_safetensors(dir / "shared.safetensors");
  require_transpose(floats(stored(file, "shared.w_gate.weight", {10, 6})), param_data(a, "shared.w_gate"), 6, 10);
  io::load_torch_state(dir / "shared.safetensors", b);
  CHECK(max_param_diff(snapshot(a), snapshot(b)) == 0);
  CHECK_THROWS_WITH(io::save_torch_state(dir / "never.safetensors", a, io::torch_style::olmoe),
                    Catch::Contains("style olmoe") && Catch::Contains("has a shared expert"));
}

TEST_CASE("torch_state refuses styles the experts do not fit", "[torch_state]") {
  temp_dir dir("torch_state");
  auto ffn = make_layer<ffn_moe>(1);
  auto relu = make_layer<relu_moe>(1);
  auto gated = make_layer<gated_moe>(1);
  const auto path = dir / "never.safetensors";
  CHECK_THROWS_WITH(io::save_torch_state(path, ffn, io::torch_style::mixtral),
                    Catch::Contains("style mixtral") && Catch::Contains("holds FFN experts with biases") &&
                        Catch::Contains("needs gated (SwiGLU) experts"));
  CHECK_THROWS_WITH(io::save_torch_state(path, relu, io::torch_style::olmoe),
                    Catch::Contains("style olmoe") && Catch::Contains("needs gated"));
  CHECK_THROWS_WITH(io::save_torch_state(path, gated, io::torch_style::switch_transformers),
                    Catch::Contains("style switch") && Catch::Contains("holds gated (SwiGLU) experts"));
  CHECK_THROWS_WITH(io::save_torch_state(path, ffn, io::torch_style::switch_transformers),
                    Catch::Contains("style switch") && Catch::Contains("without biases"));
  CHECK_THROWS_AS(io::load_torch_state(path, ffn, io::torch_style::mixtral), value_error);
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("torch_state refuses files that do not fit the model", "[torch_state]") {
  temp_dir dir("torch_state");
  auto saved = make_layer<gated_moe>(1);
  auto target = make_layer<gated_moe>(2);
  const auto good = dir / "good.safetensors", bad = dir / "bad.safetensors";
  io::save_torch_state(good, saved, io::torch_style::mixtral);
  const auto file = io::read_safetensors(good);

  SECTION("another style") {
    CHECK_THAT(load_error(good, target, io::torch_style::olmoe),
               Catch::Contains("good.safetensors") && Catch::Contains("written in the mixtral style, loaded as olmoe"));
  }
  SECTION("a missing expert tensor") {
    io::save_safetensors(bad, edited(file, "block_sparse_moe.experts.3.w2.weight"), file.metadata);
    CHECK_THAT(load_error(bad, target, io::torch_style::mixtral),
               Catch::Contains("bad.safetensors") && Catch::Contains("'block_sparse_moe.experts.3.w2.weight': missing"));
  }
  SECTION("a tensor the model does not have") {
    auto records = file.tensors;
    records.push_back(records.front());
    records.back().name = "block_sparse_moe.experts.4.w1.weight";
    io::save_safetensors(bad, records, file.metadata);
    CHECK_THAT(load_error(bad, target, io::torch_style::mixtral),
               Catch::Contains("'block_sparse_moe.experts.4.w1.weight': not a parameter of the model"));
  }
  SECTION("a moekit checkpoint: router stored (in, out)") {
    io::save_safetensors(bad, saved);  // moekit's own layout: router.weight (D, E), experts stacked
    CHECK_THAT(load_error(bad, target, io::torch_style::plain),
               Catch::Contains("'router.weight': shape (6, 4) in the file, (4, 6) expected"));
  }
  SECTION("another dtype") {
    std::vector<double> wide(4 * 6, 0.5);
    const io::tensor_record f64{"block_sparse_moe.gate.weight", "F64", {4, 6}, std::as_bytes(std::span<const double>(wide))};
    io::save_safetensors(bad, edited(file, f64.name, &f64), file.metadata);
    CHECK_THAT(load_error(bad, target, io::torch_style::mixtral),
               Catch::Contains("'block_sparse_moe.gate.weight': dtype F64 in the file, F32 expected"));
  }
  SECTION("not a safetensors file") {
    { std::ofstream(bad) << "not a checkpoint"; }
    CHECK_THAT(load_error(bad, target, io::torch_style::mixtral), Catch::Contains("bad.safetensors"));
  }
}

TEST_CASE("torch_state keeps AdamW's state as torch.optim.AdamW does", "[torch_state]") {
  temp_dir dir("torch_state");
  const sizes s;
  const std::size_t D = s.d, F = s.f;
  auto a = make_layer<gated_moe>(21, s);
  optim::adamw<float> opt_a(a, {.lr = 1e-2});
  const auto x = random_matrix(22, 12, D), r = random_matrix(23, 12, D);  // (12, D)
  train_step(a, opt_a, x, r);
  const auto path = dir / "opt.safetensors";
  io::save_torch_state(path, a, opt_a, io::torch_style::mixtral);
  const auto file = io::read_safetensors(path);

  // Moments shaped and laid out like their torch tensor; I64 step counts.
  const auto& m = opt_a.state(0, 1);  // experts.w_gate: buffer 0 = exp_avg (m), 1 = exp_avg_sq (v)
  require_transpose(floats(stored(file, "optim.block_sparse_moe.experts.1.w1.weight.exp_avg", {F, D})),
                    m.buffers[0].data() + D * F, D, F);
  require_transpose(floats(stored(file, "optim.block_sparse_moe.experts.1.w1.weight.exp_avg_sq", {F, D})),
                    m.buffers[1].data() + D * F, D, F);
  const auto& step = stored(file, "optim.block_sparse_moe.gate.weight.step", {});
  REQUIRE(step.dtype == "I64");
  std::int64_t steps = 0;
  std::memcpy(&steps, step.bytes.data(), sizeof steps);
  CHECK(steps == 1);
  CHECK(file.metadata.at("moekit.optim.steps") == "1");

  SECTION("a fresh layer and optimizer continue the run exactly") {
    auto b = make_layer<gated_moe>(24, s);
    optim::adamw<float> opt_b(b, {.lr = 1e-2});
    io::load_torch_state(path, b, opt_b, io::torch_style::mixtral);
    CHECK(opt_b.steps() == 1);
    train_step(a, opt_a, x, r);
    train_step(b, opt_b, x, r);
    CHECK(max_param_diff(snapshot(a), snapshot(b)) == 0);
  }
  SECTION("torch's own F32 step counts load too") {
    const float seven = 7;  // torch.optim.AdamW's state["step"]: a float32 scalar tensor
    const io::tensor_record f32{"optim.block_sparse_moe.gate.weight.step", "F32", {}, std::as_bytes(std::span<const float>(&seven, 1))};
    io::save_safetensors(dir / "f32.safetensors", edited(file, f32.name, &f32), file.metadata);
    auto b = make_layer<gated_moe>(24, s);
    optim::adamw<float> opt_b(b, {.lr = 1e-2});
    io::load_torch_state(dir / "f32.safetensors", b, opt_b, io::torch_style::mixtral);
    CHECK(opt_b.state(0, 0).step == 7);
    CHECK(opt_b.state(0, 1).step == 1);
  }
  SECTION("experts of one stacked tensor must agree on their step count") {
    const std::int64_t three = 3;
    const io::tensor_record odd{"optim.block_sparse_moe.experts.2.w3.weight.step", "I64", {},
                                std::as_bytes(std::span<const std::int64_t>(&three, 1))};
    io::save_safetensors(dir / "odd.safetensors", edited(file, odd.name, &odd), file.metadata);
    auto b = make_layer<gated_moe>(24, s);
    optim::adamw<float> opt_b(b, {.lr = 1e-2});
    const auto before = snapshot(b);
    CHECK_THROWS_WITH(io::load_torch_state(dir / "odd.safetensors", b, opt_b, io::torch_style::mixtral),
                      Catch::Contains("experts.2.w3.weight.step': step count 3 differs"));
    CHECK(snapshot(b) == before);
    CHECK(opt_b.steps() == 0);
  }
  SECTION("a moment missing for one expert") {
    const std::string gone = "optim.block_sparse_moe.experts.0.w2.weight.exp_avg_sq";
    io::save_safetensors(dir / "gone.safetensors", edited(file, gone), file.metadata);
    auto b = make_layer<gated_moe>(24, s);
    optim::adamw<float> opt_b(b, {.lr = 1e-2});
    CHECK_THROWS_WITH(io::load_torch_state(dir / "gone.safetensors", b, opt_b, io::torch_style::mixtral),
                      Catch::Contains("'" + gone + "': missing, while other experts"));
  }
}

TEST_CASE("torch_state interop with PyTorch (tests/python/torch_interop.py)", "[.torch_interop]") {
  const std::string mode = env("MOEKIT_INTEROP_MODE"), dir = env("MOEKIT_INTEROP_DIR");
  REQUIRE_FALSE(dir.empty());
  const auto style = style_named(env("MOEKIT_INTEROP_STYLE"));
  switch (style) {
    case io::torch_style::plain: interop<ffn_moe>(mode, dir, style); break;
    case io::torch_style::mixtral:
    case io::torch_style::olmoe: interop<gated_moe>(mode, dir, style); break;
    case io::torch_style::switch_transformers: interop<relu_moe>(mode, dir, style); break;
  }
}

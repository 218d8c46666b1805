// The Scaling-MLP models: output shapes, parameter counts against the formula
// worked out by hand, parameter names, size errors, model-name parsing,
// patchify against a reference loop, gradient checks (double) with respect to
// the input and to a weight, and a few AdamW steps on a separable problem.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include <moekit.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/mlp/mlp_mixer.hpp>
#include <moekit/mlp/standard_mlp.hpp>
#include <moekit/nn/layer.hpp>
#include <moekit/optim/adamw.hpp>

using namespace moekit;

namespace {

constexpr mlp::config fashion_b4{.in = 784, .width = 256, .blocks = 4, .classes = 10, .expansion = 4};
constexpr mlp::config tiny{.in = 6, .width = 4, .blocks = 2, .classes = 3, .expansion = 2};

std::vector<std::string> names_of(auto& model) {
  std::vector<std::string> out;
  visit_parameters(model, [&](const std::string& name, auto&) { out.push_back(name); });
  return out;
}

/// sum(model(x) * r) for a fixed r: a scalar that every output element enters.
template <class M, class X, class R>
double projected_output(M& model, const X& x, const R& r) {
  no_grad guard;
  tape t;
  auto y = model(t.input(x));
  double acc = 0;
  for (std::size_t i = 0; i < y.size(); ++i) acc += y.value()[i] * r[i];
  return acc;
}

/// Central differences of sum(model(x) * r) with respect to every element of
/// parameter p (perturbed in place, then restored), against the tape's gradient.
template <class M, class P, class X>
gradcheck_result check_parameter_gradient(M& model, P& p, const X& x, double eps = 1e-6, double tol = 1e-6) {
  rng g(99);
  tensor<double, shape<dyn, dyn>> r;
  {
    no_grad guard;
    tape t;
    auto y = model(t.input(x));
    r = normal<double>(g, shape<dyn, dyn>{y.extent(0), y.extent(1)});
  }
  p.zero_grad();
  tape t;
  auto y = model(t.input(x));
  t.backward(y, r);
  auto analytic = p.grad().clone();

  gradcheck_result res;
  for (std::size_t i = 0; i < p.size() && res.ok; ++i) {
    const double saved = p.value()[i];
    p.value()[i] = saved + eps;
    const double up = projected_output(model, x, r);
    p.value()[i] = saved - eps;
    const double down = projected_output(model, x, r);
    p.value()[i] = saved;
    const double numeric = (up - down) / (2 * eps), err = std::abs(numeric - analytic[i]);
    res.max_abs_error = std::max(res.max_abs_error, err);
    ++res.checked;
    if (!(err <= tol + 1e-4 * std::abs(numeric))) {
      res.ok = false;
      res.message = "element " + std::to_string(i) + ": analytic " + std::to_string(analytic[i]) + " vs numeric " +
                    std::to_string(numeric);
    }
  }
  return res;
}

}  // namespace

TEST_CASE("mlp config: parse_model_name and model_name", "[mlp][config]") {
  const auto c = mlp::parse_model_name("B_4-Wi_256", "--model");
  CHECK(c.blocks == 4);
  CHECK(c.width == 256);
  CHECK(c.expansion == 4);
  CHECK(c.in == dyn);
  const auto e = mlp::parse_model_name("B_12-Wi_1024-Exp_2");
  CHECK(e.blocks == 12);
  CHECK(e.width == 1024);
  CHECK(e.expansion == 2);
  CHECK(mlp::model_name(e) == "B_12-Wi_1024-Exp_2");
  CHECK(mlp::model_name(c) == "B_4-Wi_256");
  const auto io = c.with_io(784, 10);
  CHECK(io.in == 784);
  CHECK(io.classes == 10);
  CHECK(io.width == 256);
  for (const char* bad : {"", "B_4", "B_4-Wi_", "B_0-Wi_256", "B_4-Wi_256-", "B_4-Wi_256x", "Wi_256-B_4",
                          "B_4-Wi_256-Exp_", "b_4-wi_256", "B_-1-Wi_3"}) {
    INFO(bad);
    REQUIRE_THROWS_AS(mlp::parse_model_name(bad, "--model"), value_error);
    REQUIRE_THROWS_WITH(mlp::parse_model_name(bad, "--model"), Catch::Contains("--model") && Catch::Contains("B_4-Wi_256"));
  }
}

TEST_CASE("bottleneck_mlp: B_4-Wi_256 on 784 -> 10, static sizes", "[mlp][bottleneck]") {
  rng g(1);
  mlp::bottleneck_mlp<fashion_b4> model(g);
  // Hand count: stem 785·256, per block LN 2·256 + fc1 257·1024 + fc2 1025·256, head 257·10.
  const std::size_t expected = 785 * 256 + 4 * (2 * 256 + 257 * 1024 + 1025 * 256) + 257 * 10;
  CHECK(expected == 2307850);
  CHECK(count_parameters(model) == expected);
  CHECK(decltype(model)::parameter_count(fashion_b4) == expected);

  tape t;
  auto y = model(t.input(normal<float>(g, shape<dyn, 784>{5})));
  static_assert(std::is_same_v<decltype(y), var<float, shape<dyn, 10>>>, "static sizes give a static output width");
  CHECK(y.extent(0) == 5);
  for (std::size_t i = 0; i < y.size(); ++i) REQUIRE(std::isfinite(y.value()[i]));

  // A wrong input width is a shape error naming the op.
  REQUIRE_THROWS_AS(model(t.input(normal<float>(g, shape<dyn, dyn>{2, 783}))), shape_error);
}

TEST_CASE("bottleneck_mlp: parameter names follow the reference's state_dict", "[mlp][bottleneck]") {
  rng g(2);
  mlp::bottleneck_mlp<tiny> model(g);
  const auto names = names_of(model);
  REQUIRE(names.size() == 4 + 6 * 2);
  CHECK(names[0] == "stem.weight");
  CHECK(names[1] == "stem.bias");
  CHECK(names[2] == "blocks.0.norm.weight");
  CHECK(names[3] == "blocks.0.norm.bias");
  CHECK(names[4] == "blocks.0.fc1.weight");
  CHECK(names[5] == "blocks.0.fc1.bias");
  CHECK(names[6] == "blocks.0.fc2.weight");
  CHECK(names[7] == "blocks.0.fc2.bias");
  CHECK(names[13] == "blocks.1.fc2.bias");
  CHECK(names[14] == "head.weight");
  CHECK(names[15] == "head.bias");
  // Shapes: weights are (in, out); the hidden width is expansion·width.
  auto views = parameter_views<float>(model);
  CHECK(views[4].extents == std::vector<std::size_t>{4, 8});
  CHECK(views[6].extents == std::vector<std::size_t>{8, 4});
  CHECK(views[14].extents == std::vector<std::size_t>{4, 3});
}

TEST_CASE("bottleneck_mlp: run-time sizes equal the static model", "[mlp][bottleneck]") {
  rng g1(3), g2(3);
  mlp::bottleneck_mlp<tiny> fixed(g1);
  mlp::bottleneck_mlp<> sized(g2, tiny);
  CHECK(count_parameters(sized) == count_parameters(fixed));
  CHECK(names_of(sized) == names_of(fixed));
  CHECK(sized.sizes() == tiny);

  rng gx(4);
  auto x = normal<float>(gx, shape<dyn, dyn>{3, 6});
  tape t;
  auto a = fixed(t.input(x));
  auto b = sized(t.input(x));
  static_assert(std::is_same_v<decltype(b), var<float, shape<dyn, dyn>>>);
  REQUIRE(a.extent(1) == 3);
  REQUIRE(b.extent(1) == 3);
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a.value()[i] == b.value()[i]);  // same draws, same values

  // Partly static: width fixed, the rest given.
  rng g3(5);
  mlp::bottleneck_mlp<mlp::config{.width = 4, .expansion = 2}> half(g3, {.in = 6, .blocks = 2, .classes = 3});
  CHECK(count_parameters(half) == count_parameters(fixed));
  // An expansion set nowhere is the reference's 4.
  mlp::bottleneck_mlp<mlp::config{.in = 6}> four(g3, {.width = 4, .blocks = 1, .classes = 3});
  CHECK(four.sizes().expansion == 4);
  CHECK(count_parameters(four) == 7 * 4 + (2 * 4 + 5 * 16 + 17 * 4) + 5 * 3);
  CHECK(decltype(four)::parameter_count({.in = 6, .width = 4, .blocks = 1, .classes = 3}) == count_parameters(four));
}

TEST_CASE("bottleneck_mlp: missing or conflicting sizes are value errors", "[mlp][bottleneck][errors]") {
  rng g(6);
  using dynamic = mlp::bottleneck_mlp<>;
  REQUIRE_THROWS_AS(dynamic(g, {.in = 6, .width = 4, .classes = 3}), value_error);  // blocks missing
  REQUIRE_THROWS_WITH(dynamic(g, {.in = 6, .width = 4, .classes = 3}),
                      Catch::Contains("bottleneck_mlp") && Catch::Contains("blocks"));
  REQUIRE_THROWS_WITH((mlp::bottleneck_mlp<tiny>(g, {.in = 7})),
                      Catch::Contains("bottleneck_mlp") && Catch::Contains("in = 7") && Catch::Contains("6"));
  REQUIRE_THROWS_WITH((mlp::standard_mlp<>(g, {.in = 6, .blocks = 1, .classes = 3})),
                      Catch::Contains("standard_mlp") && Catch::Contains("width"));
}

TEST_CASE("standard_mlp: shapes, parameter count, names", "[mlp][standard]") {
  rng g(7);
  mlp::standard_mlp<mlp::config{.in = 784, .width = 128, .blocks = 3, .classes = 10}> model(g);
  // stem 785·128, per block LN 2·128 + fc 129·128, head 129·10.
  CHECK(count_parameters(model) == 785 * 128 + 3 * (2 * 128 + 129 * 128) + 129 * 10);
  const auto names = names_of(model);
  REQUIRE(names.size() == 4 + 4 * 3);
  CHECK(names[2] == "blocks.0.norm.weight");
  CHECK(names[4] == "blocks.0.fc.weight");
  CHECK(names.back() == "head.bias");
  tape t;
  auto y = model(t.input(normal<float>(g, shape<dyn, 784>{4})));
  static_assert(std::is_same_v<decltype(y), var<float, shape<dyn, 10>>>);
  CHECK(y.extent(0) == 4);
}

TEST_CASE("patchify: the patch order of a reference loop", "[mlp][mixer][patchify]") {
  // Two 4x6 images with 2 channels, 2x2 patches: 2·3 = 6 patches of 8 values each.
  const std::size_t n = 2, h = 4, w = 6, ch = 2, p = 2;
  auto x = arange<double>(n * h * w * ch).reshape(shape<dyn, dyn>{n, h * w * ch});
  tape t;
  auto y = mlp::patchify(t.input(x), h, w, ch, p);
  REQUIRE(y.extent(0) == n * 6);
  REQUIRE(y.extent(1) == p * p * ch);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t pr = 0; pr < h / p; ++pr)
      for (std::size_t pc = 0; pc < w / p; ++pc)
        for (std::size_t r = 0; r < p; ++r)
          for (std::size_t c = 0; c < p; ++c)
            for (std::size_t k = 0; k < ch; ++k) {
              const std::size_t row = i * 6 + pr * (w / p) + pc, col = (r * p + c) * ch + k;
              const double expected = static_cast<double>(((i * h + pr * p + r) * w + pc * p + c) * ch + k);
              REQUIRE(y.value()(row, col) == expected);
            }
  REQUIRE_THROWS_WITH(mlp::patchify(t.input(x), h, w, ch, 3), Catch::Contains("patchify"));
  REQUIRE_THROWS_AS(mlp::patchify(t.input(x), h, w, 3, p), shape_error);
}

TEST_CASE("mlp_mixer: shapes, parameter count, names", "[mlp][mixer]") {
  rng g(8);
  const mlp::mixer_config c{.height = 28, .width = 28, .channels = 1, .patch = 7, .hidden = 32, .blocks = 2,
                            .classes = 10};
  mlp::mlp_mixer<float> model(g, c);
  // 16 patches of 49 values; token MLP 16 -> 16 -> 16 (hidden / 2), channel MLP 32 -> 128 -> 32.
  const std::size_t token = 2 * 32 + 17 * 16 + 17 * 16, channel = 2 * 32 + 33 * 128 + 129 * 32;
  const std::size_t expected = 50 * 32 + 2 * (token + channel) + 2 * 32 + 33 * 10;
  CHECK(count_parameters(model) == expected);
  CHECK(mlp::mlp_mixer<float>::parameter_count(c) == expected);
  const auto names = names_of(model);
  CHECK(names[0] == "embed.weight");
  CHECK(names[2] == "blocks.0.token.norm.weight");
  CHECK(names[4] == "blocks.0.token.fc1.weight");
  CHECK(names[8] == "blocks.0.channel.norm.weight");
  CHECK(names[10] == "blocks.0.channel.fc1.weight");
  CHECK(names[names.size() - 4] == "norm.weight");
  CHECK(names.back() == "head.bias");
  tape t;
  auto y = model(t.input(normal<float>(g, shape<dyn, dyn>{3, 784})));
  CHECK(y.extent(0) == 3);
  CHECK(y.extent(1) == 10);
  REQUIRE_THROWS_WITH((mlp::mlp_mixer<float>(g, {.height = 28, .width = 28, .patch = 5})), Catch::Contains("mlp_mixer"));
}

TEST_CASE("gradcheck: patchify, dyn and static input shapes", "[mlp][mixer][gradcheck]") {
  rng g(9);
  auto r = check_gradients([](auto x) { return mlp::patchify(x, 4, 4, 2, 2); }, normal<double>(g, shape<dyn, dyn>{2, 32}));
  INFO(r.message);
  REQUIRE(r.ok);
  auto s = check_gradients([](auto x) { return mlp::patchify(x, 2, 4, 1, 2); }, normal<double>(g, shape<3, 8>{}));
  INFO(s.message);
  REQUIRE(s.ok);
}

TEST_CASE("gradcheck: bottleneck_mlp w.r.t. input and a weight (static sizes)", "[mlp][bottleneck][gradcheck]") {
  rng g(10);
  mlp::bottleneck_mlp<tiny, double> model(g);
  auto x = normal<double>(g, shape<dyn, 6>{3});
  auto r = check_gradients([&](auto v) { return model(v); }, x);
  INFO(r.message);
  REQUIRE(r.ok);
  REQUIRE(r.checked == x.size());

  // fc1 of the last block and the first LayerNorm's gain (γ = 1 at init: perturb it first).
  std::vector<std::string> checked;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name != "blocks.1.fc1.weight" && name != "blocks.0.norm.weight" && name != "stem.bias") return;
    for (std::size_t i = 0; i < p.size(); ++i) p.value()[i] += 0.1 * static_cast<double>(i % 3);
    auto w = check_parameter_gradient(model, p, x);
    INFO(name << ": " << w.message);
    REQUIRE(w.ok);
    REQUIRE(w.checked == p.size());
    checked.push_back(name);
  });
  REQUIRE(checked.size() == 3);
}

TEST_CASE("gradcheck: standard_mlp w.r.t. input and a weight (run-time sizes)", "[mlp][standard][gradcheck]") {
  rng g(11);
  mlp::standard_mlp<mlp::runtime_config, double> model(g, {.in = 5, .width = 4, .blocks = 2, .classes = 3});
  auto x = normal<double>(g, shape<dyn, dyn>{4, 5});
  auto r = check_gradients([&](auto v) { return model(v); }, x);
  INFO(r.message);
  REQUIRE(r.ok);
  bool done = false;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name != "blocks.0.fc.weight") return;
    auto w = check_parameter_gradient(model, p, x);
    INFO(w.message);
    REQUIRE(w.ok);
    done = true;
  });
  REQUIRE(done);
}

TEST_CASE("gradcheck: mlp_mixer w.r.t. input and token/channel weights", "[mlp][mixer][gradcheck]") {
  rng g(12);
  const mlp::mixer_config c{.height = 4, .width = 4, .channels = 2, .patch = 2, .hidden = 3, .blocks = 2,
                            .token_mlp = 5, .channel_mlp = 4, .classes = 3};
  mlp::mlp_mixer<double> model(g, c);
  auto x = normal<double>(g, shape<dyn, dyn>{2, 32});
  auto r = check_gradients([&](auto v) { return model(v); }, x);
  INFO(r.message);
  REQUIRE(r.ok);
  int done = 0;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name != "blocks.0.token.fc1.weight" && name != "blocks.1.channel.fc2.weight" && name != "embed.weight") return;
    auto w = check_parameter_gradient(model, p, x);
    INFO(name << ": " << w.message);
    REQUIRE(w.ok);
    ++done;
  });
  REQUIRE(done == 3);
}

TEST_CASE("bottleneck_mlp: AdamW steps reduce the loss on a separable problem", "[mlp][train]") {
  // Three classes, labelled by which of three fixed directions a point is closest to.
  rng g(13);
  const std::size_t n = 192, d = 8;
  auto x = normal<float>(g, shape<dyn, dyn>{n, d});
  auto centers = normal<float>(g, shape<3, dyn>{d});
  tensor<index_t, shape<dyn>> y(shape<dyn>{n});
  for (std::size_t i = 0; i < n; ++i) {
    float best = -1e30f;
    for (std::size_t k = 0; k < 3; ++k) {
      float dot = 0;
      for (std::size_t j = 0; j < d; ++j) dot += x(i, j) * centers(k, j);
      if (dot > best) best = dot, y[i] = static_cast<index_t>(k);
    }
  }
  mlp::bottleneck_mlp<> model(g, {.in = d, .width = 16, .blocks = 2, .classes = 3});
  optim::adamw<float> opt(model, {.lr = 3e-3, .weight_decay = 0.0});
  auto loss_of = [&] {
    tape t;
    return cross_entropy(model(t.input(x)), y).value()[0];
  };
  const float before = loss_of();
  for (int step = 0; step < 60; ++step) {
    tape t;
    opt.zero_grad();
    t.backward(cross_entropy(model(t.input(x)), y));
    opt.step();
  }
  const float after = loss_of();
  INFO("loss " << before << " -> " << after);
  REQUIRE(after < 0.5f * before);
  tape t;
  auto pred = argmax(model(t.input(x)).value());
  std::size_t correct = 0;
  for (std::size_t i = 0; i < n; ++i) correct += pred[i] == y[i];
  REQUIRE(correct >= n * 9 / 10);
}

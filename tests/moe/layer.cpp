// moe::layer against a dense reference: every expert run on every token with
// plain ops (matmul, add_rows, activations on slices of the stacked weights),
// weighted by a masked gate matrix G (T, E) — G[t, e] is the gate when token t
// was assigned to expert e and kept, else 0 — plus the shared expert. The
// reference recomputes the router scores from the same router weight with
// autograd ops and makes its own top-k / expert-choice selection and capacity
// dropping (the rules documented in top_k.hpp and expert_choice.hpp), so the
// output, d x, every expert weight and bias and the router weight's gradient
// are all compared. Also: the routing plan itself, determinism (seeds, thread
// counts) and the layer's errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include <moekit.hpp>
#include <moekit/moe.hpp>

#include "../support/blas_threads.hpp"

using namespace moekit;

namespace {

using mat = var<float, shape<dyn, dyn>>;   // (rows, cols)
using vec = var<float, shape<dyn>>;        // (n)
using cube = var<float, shape<dyn, dyn, dyn>>;
using mask = tensor<float, shape<dyn, dyn>>;  // (T, E) 0/1

constexpr std::size_t D = 8, F = 12, E = 4, T = 12;

tensor<index_t, shape<dyn>> one_index(std::size_t i) { return from_values<index_t>(shape<dyn>{1}, {index_t(i)}); }

// The e-th matrix (m, n) of a stacked (E, m, n) weight and the e-th row of a
// stacked (E, n) bias, as differentiable slices.
mat slice(const cube& w, std::size_t e) {
  return reshape(gather_rows(w, one_index(e)), shape<dyn, dyn>{w.extent(1), w.extent(2)});
}
vec slice(const mat& b, std::size_t e) { return reshape(gather_rows(b, one_index(e)), shape<dyn>{b.extent(1)}); }
// Column e of G (T, E).
vec column(const mat& g, std::size_t e) { return slice(transpose(g), e); }

// A router's or bank's parameters as dyn-shaped vars whose gradient reaches the parameter.
struct weights {
  std::map<std::string, mat, std::less<>> m;   // rank 2
  std::map<std::string, cube, std::less<>> c;  // rank 3
};
template <class M>
weights weights_of(M& model) {
  weights w;
  model.parameters([&](std::string_view name, auto& p) {
    if constexpr (std::remove_cvref_t<decltype(p)>::rank() == 3)
      w.c.emplace(name, reshape(p, shape<dyn, dyn, dyn>{p.extent(0), p.extent(1), p.extent(2)}));
    else
      w.m.emplace(name, reshape(p, shape<dyn, dyn>{p.extent(0), p.extent(1)}));
  });
  return w;
}

mat activate(moe::activation a, const mat& h) {
  switch (a) {
    case moe::activation::relu: return relu(h);
    case moe::activation::silu: return silu(h);
    case moe::activation::gelu: return gelu(h);
  }
  return h;
}

// Expert e of a bank on every row of x, with plain ops.
template <std::size_t Dm, std::size_t Ff, moe::activation A, bool Bias>
mat run_expert(moe::ffn_expert<Dm, Ff, A, Bias>, const weights& w, std::size_t e, const mat& x) {
  auto h = matmul(x, slice(w.c.at("w1"), e));  // (T, F)
  if (Bias) h = add_rows(h, slice(w.m.at("b1"), e));
  auto y = matmul(activate(A, h), slice(w.c.at("w2"), e));  // (T, D)
  if (Bias) y = add_rows(y, slice(w.m.at("b2"), e));
  return y;
}
template <std::size_t Dm, std::size_t Ff>
mat run_expert(moe::swiglu_expert<Dm, Ff>, const weights& w, std::size_t e, const mat& x) {
  auto gate = silu(matmul(x, slice(w.c.at("w_gate"), e)));  // (T, F)
  auto up = matmul(x, slice(w.c.at("w_up"), e));            // (T, F)
  return matmul(gate * up, slice(w.c.at("w_down"), e));     // (T, D)
}

/// The reference's gates G (T, E), which assignments it keeps, and how many it drops.
struct dense_gates {
  mat gates;
  mask kept;
  std::size_t dropped = 0;
};

// Expert indices of one row of scores, best first; the lower index wins ties.
std::vector<std::size_t> ranking(const float* row, std::size_t n, std::size_t stride = 1) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return row[a * stride] > row[b * stride]; });
  return order;
}

// Token choice: each token's k best experts; gates renormalised over those k;
// expert e keeps its first `capacity` assignments in (slot, token) order.
template <std::size_t Dm, std::size_t Em, std::size_t K>
dense_gates gates_for(moe::top_k_router<Dm, Em, K>& router, const mat& x, tape& t) {
  const auto& o = router.options();
  const std::size_t tokens = x.extent(0), e = router.experts(), k = router.k();
  auto logits = matmul(x, weights_of(router).m.at("weight"));                     // (T, E)
  auto scores = o.score == moe::score_fn::softmax ? softmax(logits) : sigmoid(logits);  // (T, E)
  mask chosen = zeros<float>(shape<dyn, dyn>{tokens, e});
  std::vector<std::size_t> slot(tokens * e, k);  // slot of (t, e), k when not chosen
  for (std::size_t i = 0; i < tokens; ++i) {
    auto order = ranking(scores.value().data() + i * e, e);
    for (std::size_t j = 0; j < k; ++j) chosen(i, order[j]) = 1, slot[i * e + order[j]] = j;
  }
  auto masked = scores * t.input(chosen);                                   // (T, E)
  auto gates = o.renormalize ? div_cols(masked, sum<1>(masked)) : masked;  // (T, E)
  const std::size_t capacity =
      o.capacity_factor > 0 ? std::size_t(std::ceil(o.capacity_factor * double(tokens * k) / double(e))) : 0;
  dense_gates r{gates, zeros<float>(shape<dyn, dyn>{tokens, e}), 0};
  for (std::size_t ex = 0; ex < e; ++ex) {
    std::size_t taken = 0;
    for (std::size_t j = 0; j < k; ++j)
      for (std::size_t i = 0; i < tokens; ++i) {
        if (slot[i * e + ex] != j) continue;
        if (capacity == 0 || taken < capacity) r.kept(i, ex) = 1, ++taken;
        else ++r.dropped;
      }
  }
  r.gates = gates * t.input(r.kept);
  return r;
}

// Expert choice: expert e takes the c tokens with the highest softmax score
// for e (the lower token index wins ties), c = clamp(ceil(cf · T / E), 1, T).
template <std::size_t Dm, std::size_t Em>
dense_gates gates_for(moe::expert_choice_router<Dm, Em>& router, const mat& x, tape& t, double cf) {
  const std::size_t tokens = x.extent(0), e = router.experts();
  const std::size_t c = std::min(std::max<std::size_t>(std::size_t(std::ceil(cf * double(tokens) / double(e))), 1), tokens);
  auto scores = softmax(matmul(x, weights_of(router).m.at("weight")));  // (T, E)
  dense_gates r{scores, zeros<float>(shape<dyn, dyn>{tokens, e}), 0};
  for (std::size_t ex = 0; ex < e; ++ex) {
    auto order = ranking(scores.value().data() + ex, tokens, e);
    for (std::size_t i = 0; i < c; ++i) r.kept(order[i], ex) = 1;
  }
  r.gates = scores * t.input(r.kept);
  return r;
}

template <class R, class X>
X expert_spec(const moe::layer<R, X>&) {
  return {};
}

// Σ_e G[:, e] ⊙ expert_e(x) + shared(x), with plain ops.
template <class Layer>
mat dense_layer(Layer& layer, const mat& x, const mat& g) {
  const auto spec = expert_spec(layer);
  const auto w = weights_of(layer.experts());
  mat y;
  for (std::size_t e = 0; e < layer.experts().experts(); ++e) {
    auto ye = mul_cols(run_expert(spec, w, e, x), column(g, e));  // (T, D)
    y = e == 0 ? ye : y + ye;
  }
  layer.parameters([&](std::string_view name, auto& item) {
    if constexpr (!parameter_type<decltype(item)>)
      if (name == "shared") y = y + run_expert(spec, weights_of(item), 0, x);
  });
  return y;
}

/// Every parameter's gradient by path, then zeroed.
template <class M>
std::map<std::string, std::vector<float>> take_grads(M& model) {
  std::map<std::string, std::vector<float>> out;
  visit_parameters(model, [&](const std::string& path, auto& p) {
    out[path].assign(p.grad().data(), p.grad().data() + p.size());
    p.zero_grad();
  });
  return out;
}

template <class S>
std::vector<float> float_values(const tensor<float, S>& t) {
  return {t.data(), t.data() + t.size()};
}

void require_close(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  INFO(what);
  REQUIRE(a.size() == b.size());
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / (1e-5 + 1e-4 * std::abs(double(b[i]))));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  INFO("worst |a - b| / (1e-5 + 1e-4 |b|) = " << worst << ", max |b| = " << scale);
  REQUIRE(worst <= 1.0);
}

/// The plan holds exactly the reference's kept assignments, grouped by
/// expert, with the reference's gates, and drops what the reference drops.
template <class Layer>
void require_plan_matches(const Layer& layer, const dense_gates& ref) {
  const auto& plan = layer.last_routing();
  const std::size_t tokens = ref.kept.extent(0), e = ref.kept.extent(1);
  REQUIRE(plan.tokens == tokens);
  REQUIRE(plan.experts == e);
  REQUIRE(plan.dropped == ref.dropped);
  mask seen = zeros<float>(shape<dyn, dyn>{tokens, e});
  for (std::size_t x = 0; x < e; ++x)
    for (auto a = std::size_t(plan.offsets[x]); a < std::size_t(plan.offsets[x + 1]); ++a) {
      const auto t = std::size_t(plan.token[a]);
      REQUIRE(std::size_t(plan.expert[a]) == x);
      REQUIRE(ref.kept(t, x) == 1.0f);
      REQUIRE(seen(t, x) == 0.0f);  // each (token, expert) at most once
      seen(t, x) = 1;
      REQUIRE(plan.gate.value()[a] == Approx(ref.gates.value()(t, x)).margin(1e-6));
    }
  REQUIRE(std::size_t(plan.offsets[e]) == plan.assignments());
  REQUIRE(plan.assignments() == std::size_t(std::accumulate(ref.kept.data(), ref.kept.data() + ref.kept.size(), 0.0f)));
}

/// Runs the layer and the dense reference on the same x and upstream
/// gradient; requires equal outputs, d x and parameter gradients.
template <class Layer, class Gates>
void require_matches_dense(Layer& layer, std::uint64_t seed, Gates gates_of) {
  rng g(seed);
  const auto x = normal<float>(g, shape<dyn, D>{T});  // (T, D)
  const auto dy = normal<float>(g, shape<dyn, D>{T});

  tape t;
  auto xv = t.variable(x);
  auto y = layer(xv);  // (T, D)
  t.backward(y, dy);
  const auto y_moe = float_values(y.value()), dx_moe = float_values(xv.grad());
  const auto grads_moe = take_grads(layer);

  tape t2;
  auto xr = t2.variable(x.reshape(shape<dyn, dyn>{T, D}));
  const dense_gates ref = gates_of(xr, t2);
  auto yr = dense_layer(layer, xr, ref.gates);  // (T, D)
  t2.backward(yr, dy.reshape(shape<dyn, dyn>{T, D}));
  const auto grads_ref = take_grads(layer);

  require_plan_matches(layer, ref);
  require_close(y_moe, float_values(yr.value()), "output");
  require_close(dx_moe, float_values(xr.grad()), "d x");
  REQUIRE(grads_moe.size() == grads_ref.size());
  for (const auto& [path, grad] : grads_ref) {
    REQUIRE(grads_moe.count(path) == 1);
    require_close(grads_moe.at(path), grad, "d " + path);
  }
  // The gradients compared are not trivially zero.
  for (const auto& [path, grad] : grads_ref) {
    INFO(path);
    REQUIRE(std::any_of(grad.begin(), grad.end(), [](float v) { return v != 0.0f; }));
  }
}

template <class Expert, std::size_t K>
void top_k_case(moe::top_k_options o, bool shared, std::uint64_t seed) {
  using router_t = moe::top_k_router<D, E, K>;
  using layer_t = moe::layer<router_t, Expert>;
  rng g(seed);
  router_t router(g, o);
  typename layer_t::bank_type bank(g);
  std::optional<typename layer_t::shared_type> sh;
  if (shared) sh.emplace(g);
  layer_t layer(std::move(router), std::move(bank), std::move(sh));
  require_matches_dense(layer, seed + 1, [&](const mat& x, tape& t) { return gates_for(layer.router(), x, t); });
  if (o.capacity_factor > 0 && o.capacity_factor < 1) REQUIRE(layer.last_routing().dropped > 0);
  if (o.capacity_factor == 0) REQUIRE(layer.last_routing().assignments() == T * K);
}

template <class Expert>
void expert_choice_case(double cf, bool shared, std::uint64_t seed) {
  using router_t = moe::expert_choice_router<D, E>;
  using layer_t = moe::layer<router_t, Expert>;
  rng g(seed);
  router_t router(g, {.capacity_factor = cf});
  typename layer_t::bank_type bank(g);
  std::optional<typename layer_t::shared_type> sh;
  if (shared) sh.emplace(g);
  layer_t layer(std::move(router), std::move(bank), std::move(sh));
  require_matches_dense(layer, seed + 1, [&](const mat& x, tape& t) { return gates_for(layer.router(), x, t, cf); });
  REQUIRE(layer.last_routing().assignments() == E * layer.router().capacity(T));
}

using gelu_ffn = moe::ffn_expert<D, F, moe::activation::gelu>;
using relu_ffn = moe::ffn_expert<D, F, moe::activation::relu>;
using gelu_ffn_nobias = moe::ffn_expert<D, F, moe::activation::gelu, false>;
using relu_ffn_nobias = moe::ffn_expert<D, F, moe::activation::relu, false>;
using swiglu = moe::swiglu_expert<D, F>;

}  // namespace

TEST_CASE("moe::layer top-1 (Switch) equals the dense reference", "[moe][layer]") {
  for (bool shared : {false, true}) {
    SECTION(shared ? "softmax, shared expert" : "softmax") {
      top_k_case<gelu_ffn, 1>({.renormalize = false}, shared, 11);
      top_k_case<relu_ffn_nobias, 1>({.renormalize = false}, shared, 12);
      top_k_case<swiglu, 1>({.renormalize = false}, shared, 13);
    }
    SECTION(shared ? "sigmoid, shared expert" : "sigmoid") {
      top_k_case<relu_ffn, 1>({.score = moe::score_fn::sigmoid, .renormalize = false}, shared, 14);
      top_k_case<gelu_ffn_nobias, 1>({.score = moe::score_fn::sigmoid, .renormalize = false}, shared, 15);
      top_k_case<swiglu, 1>({.score = moe::score_fn::sigmoid, .renormalize = false}, shared, 16);
    }
  }
}

TEST_CASE("moe::layer top-2 equals the dense reference", "[moe][layer]") {
  for (bool renormalize : {true, false})
    for (bool shared : {false, true}) {
      DYNAMIC_SECTION("renormalize " << renormalize << ", shared " << shared) {
        const std::uint64_t s = 20 + 4 * renormalize + 2 * shared;
        top_k_case<gelu_ffn, 2>({.renormalize = renormalize}, shared, s);
        top_k_case<relu_ffn, 2>({.score = moe::score_fn::sigmoid, .renormalize = renormalize}, shared, s + 100);
        top_k_case<gelu_ffn_nobias, 2>({.score = moe::score_fn::sigmoid, .renormalize = renormalize}, shared, s + 200);
        top_k_case<relu_ffn_nobias, 2>({.renormalize = renormalize}, shared, s + 300);
        top_k_case<swiglu, 2>({.renormalize = renormalize}, shared, s + 400);
      }
    }
}

TEST_CASE("moe::layer with capacity dropping equals the dense reference", "[moe][layer][capacity]") {
  // cf 0.5: each expert keeps ceil(0.5 · T · k / E) assignments, so at least
  // half of them drop; the reference keeps the first in (slot, token) order.
  for (bool shared : {false, true}) {
    DYNAMIC_SECTION("shared " << shared) {
      top_k_case<gelu_ffn, 1>({.renormalize = false, .capacity_factor = 0.5}, shared, 40 + shared);
      top_k_case<swiglu, 1>({.score = moe::score_fn::sigmoid, .renormalize = false, .capacity_factor = 0.5}, shared,
                            42 + shared);
      top_k_case<relu_ffn, 2>({.capacity_factor = 0.5}, shared, 44 + shared);
      top_k_case<gelu_ffn_nobias, 2>({.score = moe::score_fn::sigmoid, .renormalize = false, .capacity_factor = 0.5},
                                     shared, 46 + shared);
      top_k_case<swiglu, 2>({.renormalize = true, .capacity_factor = 0.75}, shared, 48 + shared);
    }
  }
}

TEST_CASE("moe::layer expert choice equals the dense reference", "[moe][layer][expert_choice]") {
  for (bool shared : {false, true}) {
    DYNAMIC_SECTION("shared " << shared) {
      expert_choice_case<gelu_ffn>(1.0, shared, 60 + shared);
      expert_choice_case<relu_ffn>(2.0, shared, 62 + shared);
      expert_choice_case<gelu_ffn_nobias>(0.5, shared, 64 + shared);
      expert_choice_case<relu_ffn_nobias>(1.5, shared, 66 + shared);
      expert_choice_case<swiglu>(2.0, shared, 68 + shared);
    }
  }
}

TEST_CASE("top_k_router capacity drops later slots, then later tokens", "[moe][capacity]") {
  // Logits set by hand: x = one-hot rows, router weight = the logit table.
  // 4 tokens, 2 experts, k = 2, cf 0.5: capacity ceil(0.5 · 4 · 2 / 2) = 2.
  // First choices: tokens 0, 1, 2 -> expert 0; token 3 -> expert 1.
  constexpr float table[4][2] = {{3, 1}, {2, 0}, {4, 1}, {0, 5}};
  rng g(1);
  moe::top_k_router<4, 2, 2> router(g, {.capacity_factor = 0.5});
  router.parameters([&](std::string_view, auto& p) {
    for (std::size_t i = 0; i < 4; ++i)
      for (std::size_t e = 0; e < 2; ++e) p.value()(i, e) = table[i][e];
  });
  tensor<float, shape<dyn, 4>> x = zeros<float>(shape<dyn, 4>{4});
  for (std::size_t i = 0; i < 4; ++i) x(i, i) = 1;
  tape t;
  auto plan = router.route(t.input(x));
  // Expert 0: first choices of tokens 0, 1, 2 (keeps 0, 1), then the second
  // choice of token 3 (dropped). Expert 1: first choice of token 3, then the
  // second choices of tokens 0, 1, 2 (keeps token 0's only).
  REQUIRE(plan.dropped == 4);
  REQUIRE(plan.count(0) == 2);
  REQUIRE(plan.count(1) == 2);
  const std::vector<index_t> token(plan.token.data(), plan.token.data() + plan.assignments());
  const std::vector<index_t> expert(plan.expert.data(), plan.expert.data() + plan.assignments());
  REQUIRE(token == std::vector<index_t>{0, 1, 3, 0});
  REQUIRE(expert == std::vector<index_t>{0, 0, 1, 1});
  // Renormalised softmax gates of the kept assignments: p(first), p(second), ...
  auto sm = [](float a, float b) { return 1.0f / (1.0f + std::exp(b - a)); };
  REQUIRE(plan.gate.value()[0] == Approx(sm(3, 1)));
  REQUIRE(plan.gate.value()[1] == Approx(sm(2, 0)));
  REQUIRE(plan.gate.value()[2] == Approx(sm(5, 0)));
  REQUIRE(plan.gate.value()[3] == Approx(sm(1, 3)));
}

TEST_CASE("moe::layer: a token whose assignments all drop gets only the shared expert", "[moe][capacity]") {
  // Every token prefers expert 0 (k = 1, capacity 1): tokens 1.. get zeros.
  rng g(5);
  using router_t = moe::top_k_router<D, 2, 1>;
  using layer_t = moe::layer<router_t, gelu_ffn>;
  router_t router(g, {.capacity_factor = 0.5});
  router.parameters([&](std::string_view, auto& p) {
    fill(p.value(), 0.0f);
    for (std::size_t i = 0; i < D; ++i) p.value()(i, 0) = 1.0f;
  });
  layer_t layer(std::move(router), layer_t::bank_type(g, 2));
  auto x = uniform<float>(g, shape<dyn, D>{4}, 0.5f, 1.0f);  // positive: expert 0 always wins
  tape t;
  auto y = layer(t.input(x));
  REQUIRE(layer.last_routing().dropped == 3);
  REQUIRE(layer.last_routing().assignments() == 1);
  REQUIRE(layer.last_routing().token[0] == 0);
  for (std::size_t i = 1; i < 4; ++i)
    for (std::size_t d = 0; d < D; ++d) REQUIRE(y.value()(i, d) == 0.0f);
  REQUIRE(std::any_of(y.value().data(), y.value().data() + D, [](float v) { return v != 0.0f; }));
}

namespace {

// One forward/backward of a freshly seeded top-2 layer with capacity, noise,
// jitter and aux losses on: its output, d x and every parameter gradient.
std::vector<std::vector<float>> seeded_run(std::uint64_t seed, std::size_t tokens = T, std::size_t d_ff = F) {
  using router_t = moe::top_k_router<dyn, dyn, 2>;
  using expert_t = moe::ffn_expert<dyn, dyn>;
  using layer_t = moe::layer<router_t, expert_t>;
  const std::size_t d = 32, e = 8;
  rng g(seed);
  router_t router(g,
                  {.capacity_factor = 1.25, .jitter = 0.01, .noise = 0.1, .load_balance_weight = 0.01,
                   .z_loss_weight = 0.001, .seed = seed},
                  d, e);
  layer_t layer(std::move(router), layer_t::bank_type(g, e, d, d_ff), layer_t::shared_type(g, 1, d, d_ff));
  const auto x = normal<float>(g, shape<dyn, dyn>{tokens, d});
  const auto dy = normal<float>(g, shape<dyn, dyn>{tokens, d});
  std::vector<std::vector<float>> out;
  for (int step = 0; step < 2; ++step) {  // two steps: the noise stream advances
    tape t;
    auto xv = t.variable(x);
    auto y = layer(xv);
    t.backward(y, dy);
    out.push_back(float_values(y.value()));
    out.push_back(float_values(xv.grad()));
    for (auto& [path, grad] : take_grads(layer)) out.push_back(grad);
  }
  return out;
}

bool bitwise_equal(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0)
      return false;
  return true;
}

}  // namespace

TEST_CASE("moe::layer is deterministic: same seed, same bits", "[moe][layer][determinism]") {
  const auto a = seeded_run(7), b = seeded_run(7);
  REQUIRE(a.size() > 4);
  REQUIRE(bitwise_equal(a, b));
  REQUIRE_FALSE(bitwise_equal(a, seeded_run(8)));  // and the seed matters
}

TEST_CASE("moe::layer gives the same bits on 1 and 2 threads", "[moe][layer][determinism]") {
  // Large enough that the grouped GEMMs spread groups over threads and the
  // element-wise loops fork.
  const int saved = num_threads();
  moekit::testing::thread_setting(1);
  const auto one = seeded_run(9, 512, 128);
  moekit::testing::thread_setting(2);
  const auto two = seeded_run(9, 512, 128);
  set_num_threads(saved);
  REQUIRE(bitwise_equal(one, two));
}

TEST_CASE("moe::layer rejects a router and a bank of different sizes", "[moe][layer][errors]") {
  rng g(3);
  using layer_t = moe::layer<moe::top_k_router<D, dyn, 1>, moe::ffn_expert<D, F>>;
  moe::top_k_router<D, dyn, 1> router(g, {}, D, 4);
  REQUIRE_THROWS_AS(layer_t(router, layer_t::bank_type(g, 3)), value_error);
  REQUIRE_THROWS_WITH(layer_t(router, layer_t::bank_type(g, 3)), Catch::Contains("moe::layer") && Catch::Contains("4") &&
                                                                      Catch::Contains("3"));
}

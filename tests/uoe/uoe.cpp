// Union-of-Experts (include/moekit/uoe): the union of every MLP slice and of
// every attention head on every token is the dense layer (outputs and every
// gradient, mapped slice by slice); gradient checks (double) of UoME and SMHA
// in every mode, token- and patch-wise, data and expert paradigm, with the
// router's gradient exactly zero in faithful mode and nonzero in gated mode;
// causal mode never lets a later token move an earlier output (UoME, SMHA,
// the block), while faithful and gated leak (shown); patch-wise equals
// token-wise where it must; the selection rule against a host reference and
// hand-built ties; option and shape errors; the balance loss; UoME inside
// moe::transformer_block and uoe::block at a char_lm size; a UoE block on a
// device backend (emulated) equals the CPU with no host read.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <moekit.hpp>
#include <moekit/autograd/gradcheck.hpp>
#include <moekit/mlp/block.hpp>
#include <moekit/moe/transformer_block.hpp>
#include <moekit/nn/attention.hpp>
#include <moekit/nn/embedding.hpp>
#include <moekit/nn/linear.hpp>
#include <moekit/uoe.hpp>
#include "../support/compare.hpp"

using namespace moekit;

namespace {

using testing::max_diff;

using x3 = tensor<double, shape<dyn, dyn, dyn>>;

x3 input(std::uint64_t seed, std::size_t batch, std::size_t seq, std::size_t d) {
  rng g(seed);
  return normal<double>(g, shape<dyn, dyn, dyn>{batch, seq, d});
}

template <class P>
std::vector<double> grad_of(const P& p) {
  REQUIRE(p.grad().defined());
  return std::vector<double>(p.grad().data(), p.grad().data() + p.grad().size());
}

/// w (in, out) row-major -> (parts, in, out / parts): column slice p of w, as
/// the experts hold W1 and the heads Wq, Wk, Wv (written out here, not taken
/// from uoe::detail, so the mapping is checked independently).
std::vector<double> by_column_slices(const std::vector<double>& w, std::size_t in, std::size_t out, std::size_t parts) {
  const std::size_t width = out / parts;
  std::vector<double> s(w.size());
  for (std::size_t p = 0; p < parts; ++p)
    for (std::size_t i = 0; i < in; ++i)
      for (std::size_t j = 0; j < width; ++j) s[(p * in + i) * width + j] = w[i * out + p * width + j];
  return s;
}

bool all_zero(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return x == 0.0; });
}

/// The router's weights drawn large: well-separated probabilities, so the
/// selections do not flip under the ±1e-6 perturbations of a gradient check.
template <class M>
void spread_router(M& m, std::uint64_t seed, double scale = 2.0) {
  rng g(seed);
  m.router_layer().parameters(
      [&](std::string_view, auto& w) { w.value() = normal<double>(g, w.shape(), 0.0, scale); });
}

/// The router's gradients (weight then bias), flattened.
template <class M>
std::vector<double> router_grad(M& m) {
  std::vector<double> out;
  m.router_layer().parameters([&](std::string_view, auto& w) {
    const auto v = grad_of(w);
    out.insert(out.end(), v.begin(), v.end());
  });
  return out;
}

/// The output of `f(x)` on a fresh tape, as a tensor.
template <class F>
x3 forward(F&& f, const x3& x) {
  tape t;
  return f(t.input(x)).value().clone();
}

/// x with every token after position t (in every sample) redrawn.
x3 change_after(const x3& x, std::size_t t, std::uint64_t seed) {
  auto y = x.clone();
  rng g(seed);
  const std::size_t batch = x.extent(0), seq = x.extent(1), d = x.extent(2);
  const auto fresh = normal<double>(g, shape<dyn, dyn, dyn>{batch, seq, d});
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t s = t + 1; s < seq; ++s)
      for (std::size_t j = 0; j < d; ++j) y.data()[(b * seq + s) * d + j] = fresh.data()[(b * seq + s) * d + j];
  return y;
}

/// Whether outputs a and b (batch, seq, d) differ by more than tol anywhere at positions in [from, to).
bool differ_at(const x3& a, const x3& b, std::size_t from, std::size_t to, double tol = 0) {
  const std::size_t batch = a.extent(0), seq = a.extent(1), d = a.extent(2);
  for (std::size_t bb = 0; bb < batch; ++bb)
    for (std::size_t s = from; s < to; ++s)
      for (std::size_t j = 0; j < d; ++j)
        if (std::abs(a.data()[(bb * seq + s) * d + j] - b.data()[(bb * seq + s) * d + j]) > tol) return true;
  return false;
}

/// Causal: for every t and a few redraws, no output at <= t moves (by more
/// than tol; 0: exactly), while some output after t does (the check is not vacuous).
template <class F>
void require_causal(F&& f, const x3& x, double tol = 0) {
  const std::size_t seq = x.extent(1);
  const auto y = forward(f, x);
  bool later_moved = false;
  for (std::size_t t = 0; t + 1 < seq; ++t)
    for (std::uint64_t trial = 0; trial < 3; ++trial) {
      const auto y2 = forward(f, change_after(x, t, 1000 + 10 * t + trial));
      INFO("t = " << t << ", trial " << trial);
      REQUIRE_FALSE(differ_at(y, y2, 0, t + 1, tol));
      later_moved = later_moved || differ_at(y, y2, t + 1, seq);
    }
  REQUIRE(later_moved);
}

/// A leak: some redraw after some t moves an output at <= t by more than
/// rounding could (deterministic seeds).
template <class F>
bool leaks(F&& f, const x3& x) {
  const std::size_t seq = x.extent(1);
  const auto y = forward(f, x);
  for (std::size_t t = 0; t + 1 < seq; ++t)
    for (std::uint64_t trial = 0; trial < 4; ++trial)
      if (differ_at(y, forward(f, change_after(x, t, 2000 + 10 * t + trial)), 0, t + 1, 1e-6)) return true;
  return false;
}

/// Gradient checks of a layer run by `f` on x: with respect to x, and every parameter.
template <class M, class F>
void require_gradients(M& model, F&& f, const x3& x) {
  {
    auto r = check_gradients([&](auto xv) { return f(xv); }, x);
    INFO("x: " << r.message);
    REQUIRE(r.ok);
    REQUIRE(r.checked == x.size());
  }
  auto r = check_parameter_gradients(model, [&](tape& t) { return f(t.input(x)); });
  INFO("parameters: " << r.message);
  REQUIRE(r.ok);
  REQUIRE(r.checked > 0);
}

const char* paradigm_name(uoe::paradigm p) { return p == uoe::paradigm::data ? "data" : "expert"; }

}  // namespace

// --- 1, 2: the union of all experts on all tokens is the dense layer --------------

TEST_CASE("uoe: decompose(feed_forward) with every slice on every token is the dense MLP, output and every gradient",
          "[uoe][decompose]") {
  constexpr std::size_t d = 6, f = 12, e = 4, batch = 2, seq = 5;
  for (const auto par : {uoe::paradigm::data, uoe::paradigm::expert}) {
    INFO(paradigm_name(par));
    rng g(1);
    mlp::feed_forward<dyn, dyn, double> dense(g, d, f);
    auto u = uoe::decompose(g, dense, {.experts = e, .paradigm = par, .select = {.top_k = e, .capacity = 1.0}});
    REQUIRE(u.options().d_model == d);
    REQUIRE(u.options().d_ff == f);
    REQUIRE(u.experts().slice_width() == f / e);
    const auto x = input(2, batch, seq, d);
    rng gr(3);
    const auto r = normal<double>(gr, shape<dyn, dyn, dyn>{batch, seq, d});
    tape t1, t2;
    auto xd = t1.variable(x), xu = t2.variable(x);
    auto yd = reshape(dense(reshape(xd, shape<dyn, dyn>{batch * seq, d})), x.shape());
    auto yu = u(xu);
    t1.backward(yd, r);
    t2.backward(yu, r);
    CHECK(max_diff(yd.value(), yu.value()) < 1e-12);
    CHECK(max_diff(xd.grad(), xu.grad()) < 1e-12);
    CHECK(max_diff(by_column_slices(grad_of(dense.fc1().weight()), d, f, e), grad_of(u.experts().w1())) < 1e-12);
    CHECK(max_diff(grad_of(dense.fc1().bias()), grad_of(u.experts().b1())) < 1e-12);  // (F) = (E, Fe)
    CHECK(max_diff(grad_of(dense.fc2().weight()), grad_of(u.experts().w2())) < 1e-12);  // (F, d) = (E, Fe, d)
    CHECK(max_diff(grad_of(dense.fc2().bias()), grad_of(u.bias())) < 1e-12);
    // The weights were sliced, not redrawn; the router gets nothing (faithful).
    CHECK(max_diff(by_column_slices(std::vector<double>(dense.fc1().weight().value().data(),
                                                        dense.fc1().weight().value().data() + d * f),
                                    d, f, e),
                   std::vector<double>(u.experts().w1().value().data(), u.experts().w1().value().data() + d * f)) == 0);
    CHECK(all_zero(router_grad(u)));
    CHECK(max_diff(grad_of(dense.fc2().weight()), std::vector<double>(f * d, 0.0)) > 0);  // not vacuous
  }
}

TEST_CASE("uoe: decompose(multi_head_attention) with every head on every token is the attention, output and every "
          "gradient",
          "[uoe][decompose][smha]") {
  constexpr std::size_t d = 8, h = 2, batch = 2, seq = 5;
  struct variant {
    const char* name;
    nn::attention_options o;
    bool padding;
  };
  const variant variants[] = {
      {"causal, RoPE", {.causal = true, .rope = true}, false},
      {"not causal, no RoPE", {}, false},
      {"causal, RoPE, key padding", {.causal = true, .rope = true}, true},
      {"not causal, key padding", {}, true},
  };
  for (const auto& v : variants) {
    INFO(v.name);
    rng g(11);
    nn::multi_head_attention<dyn, dyn, double> mha(g, d, h, v.o);
    auto s = uoe::decompose(g, mha, {.select = {.top_k = h, .capacity = 1.0}});
    REQUIRE(s.heads() == h);
    REQUIRE(s.options().causal == v.o.causal);
    REQUIRE(s.options().rope == v.o.rope);
    attention_mask<cpu> mask;
    // Sample 1's first key is padding: under the causal mask its first query sees nothing.
    if (v.padding) mask.key_padding = from_values<std::uint8_t>(shape<dyn, dyn>{batch, seq}, {0, 0, 1, 0, 1, 1, 0, 0, 0, 0});
    const auto x = input(12, batch, seq, d);
    rng gr(13);
    const auto r = normal<double>(gr, shape<dyn, dyn, dyn>{batch, seq, d});
    tape t1, t2;
    auto xd = t1.variable(x), xs = t2.variable(x);
    auto yd = mha(xd, mask);
    auto ys = s(xs, mask);
    t1.backward(yd, r);
    t2.backward(ys, r);
    CHECK(max_diff(yd.value(), ys.value()) < 1e-12);
    CHECK(max_diff(xd.grad(), xs.grad()) < 1e-12);
    CHECK(max_diff(by_column_slices(grad_of(mha.q_proj().weight()), d, d, h), grad_of(s.wq())) < 1e-12);
    CHECK(max_diff(by_column_slices(grad_of(mha.k_proj().weight()), d, d, h), grad_of(s.wk())) < 1e-12);
    CHECK(max_diff(by_column_slices(grad_of(mha.v_proj().weight()), d, d, h), grad_of(s.wv())) < 1e-12);
    CHECK(max_diff(grad_of(mha.q_proj().bias()), grad_of(s.bq())) < 1e-12);  // (d) = (H, dh)
    CHECK(max_diff(grad_of(mha.k_proj().bias()), grad_of(s.bk())) < 1e-12);
    CHECK(max_diff(grad_of(mha.v_proj().bias()), grad_of(s.bv())) < 1e-12);
    CHECK(max_diff(grad_of(mha.out_proj().weight()), grad_of(s.wo())) < 1e-12);  // (d, d) = (H, dh, d)
    CHECK(max_diff(grad_of(mha.out_proj().bias()), grad_of(s.bo())) < 1e-12);
    CHECK(all_zero(router_grad(s)));
    CHECK_FALSE(all_zero(grad_of(mha.k_proj().weight())));  // not vacuous
    // Each head kept every token, in order.
    const auto& sel = s.last_selection();
    REQUIRE(sel.slots == seq);
    for (std::size_t row = 0; row < h * batch; ++row)
      for (std::size_t j = 0; j < seq; ++j) CHECK(sel.position.data()[row * seq + j] == index_t(j));
  }
}

// --- 3: gradient checks in every mode --------------------------------------------------

TEST_CASE("uoe: gradcheck UoME in every mode, token- and patch-wise, data and expert paradigm; the router's gradient "
          "is exactly zero in faithful mode and nonzero otherwise",
          "[uoe][uome][gradcheck]") {
  constexpr std::size_t d = 4, f = 8, e = 4, batch = 2;
  struct variant {
    uoe::paradigm par;
    uoe::mode mode;
    std::size_t patch, seq;
  };
  const variant variants[] = {
      {uoe::paradigm::data, uoe::mode::faithful, 1, 6},  {uoe::paradigm::data, uoe::mode::faithful, 2, 8},
      {uoe::paradigm::data, uoe::mode::gated, 1, 6},     {uoe::paradigm::data, uoe::mode::gated, 2, 8},
      {uoe::paradigm::data, uoe::mode::causal, 1, 6},    {uoe::paradigm::expert, uoe::mode::faithful, 1, 4},
      {uoe::paradigm::expert, uoe::mode::faithful, 4, 4}, {uoe::paradigm::expert, uoe::mode::gated, 1, 4},
      {uoe::paradigm::expert, uoe::mode::gated, 4, 4},    {uoe::paradigm::expert, uoe::mode::causal, 1, 4},
  };
  std::uint64_t seed = 100;
  for (const auto& v : variants) {
    INFO(paradigm_name(v.par) << " selection, " << uoe::mode_name(v.mode) << ", patch " << v.patch << ", seq " << v.seq);
    rng g(++seed);
    uoe::uome<double> m(g, {.d_model = d, .d_ff = f, .experts = e, .paradigm = v.par,
                            .select = {.mode = v.mode, .top_k = 2, .capacity = 0.5, .patch = v.patch}});
    spread_router(m, seed);
    const auto x = input(seed + 50, batch, v.seq, d);
    require_gradients(m, [&](auto xv) { return m(xv); }, x);
    // After check_parameter_gradients the parameters hold one backward's gradient.
    if (v.mode == uoe::mode::faithful) CHECK(all_zero(router_grad(m)));
    else CHECK_FALSE(all_zero(router_grad(m)));
    CHECK_FALSE(all_zero(grad_of(m.experts().w1())));
    if (v.par == uoe::paradigm::data) {  // not every token went to every expert
      CHECK(m.last_routing().source.size() == e * batch * uoe::slots_of(m.options().select, v.seq));
      CHECK(uoe::slots_of(m.options().select, v.seq) < v.seq);
    } else {
      CHECK(m.last_routing().source.size() == 2 * batch * v.seq);
    }
  }
}

TEST_CASE("uoe: gradcheck SMHA in every mode, token- and patch-wise, with causal, RoPE and key padding; the router's "
          "gradient is exactly zero in faithful mode and nonzero otherwise",
          "[uoe][smha][gradcheck]") {
  constexpr std::size_t d = 8, h = 4, batch = 2, seq = 8;
  struct variant {
    uoe::mode mode;
    std::size_t patch;
    bool causal, rope, padding;
  };
  const variant variants[] = {
      {uoe::mode::faithful, 1, false, false, false}, {uoe::mode::faithful, 2, true, true, false},
      {uoe::mode::gated, 1, true, true, true},       {uoe::mode::gated, 2, false, false, true},
      {uoe::mode::causal, 1, true, true, false},     {uoe::mode::causal, 1, true, false, true},
  };
  std::uint64_t seed = 200;
  for (const auto& v : variants) {
    INFO(uoe::mode_name(v.mode) << ", patch " << v.patch << (v.causal ? ", causal" : "") << (v.rope ? ", RoPE" : "")
                                << (v.padding ? ", key padding" : ""));
    rng g(++seed);
    uoe::smha<double> s(g, {.d_model = d, .heads = h, .select = {.mode = v.mode, .top_k = 2, .capacity = 0.5, .patch = v.patch},
                            .causal = v.causal, .rope = v.rope});
    spread_router(s, seed);
    attention_mask<cpu> mask;
    if (v.padding)
      mask.key_padding = from_values<std::uint8_t>(shape<dyn, dyn>{batch, seq},
                                                   {0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1});
    const auto x = input(seed + 50, batch, seq, d);
    require_gradients(s, [&](auto xv) { return s(xv, mask); }, x);
    if (v.mode == uoe::mode::faithful) CHECK(all_zero(router_grad(s)));
    else CHECK_FALSE(all_zero(router_grad(s)));
    CHECK_FALSE(all_zero(grad_of(s.wk())));
    CHECK(s.last_selection().slots == 4);
    if (v.mode == uoe::mode::causal) CHECK(s.last_selection().length.defined());
  }
}

// --- 4: causal mode is causal; the other modes leak -------------------------------------

TEST_CASE("uoe: causal mode: no output at <= t moves when tokens after t change (UoME, SMHA, the block); faithful "
          "and gated modes leak",
          "[uoe][causal]") {
  constexpr std::size_t d = 8, batch = 2, seq = 8;
  const auto x = input(301, batch, seq, d);
  const uoe::selection_options arrival{.mode = uoe::mode::causal, .top_k = 2, .capacity = 0.5};

  SECTION("UoME, data selection: exactly") {
    rng g(302);
    uoe::uome<double> m(g, {.d_model = d, .d_ff = 16, .experts = 4, .select = arrival});
    require_causal([&](auto xv) { return m(xv); }, x);
  }
  SECTION("UoME, expert selection (each token picks its experts): up to rounding") {
    // Data selection has c slots per (expert, sample) whatever the tokens, so
    // an earlier token keeps its row in every grouped GEMM and its output is
    // bit-identical. Here the experts' group sizes follow the later tokens'
    // choices, so an earlier token's row moves within its group and the BLAS
    // may round it differently (seen: 7e-18): no information flows.
    rng g(302);
    uoe::uome<double> m(g, {.d_model = d, .d_ff = 16, .experts = 4, .paradigm = uoe::paradigm::expert, .select = arrival});
    require_causal([&](auto xv) { return m(xv); }, x, 1e-14);
  }
  SECTION("SMHA with causal attention, RoPE and key padding") {
    rng g(303);
    uoe::smha<double> s(g, {.d_model = d, .heads = 2, .select = arrival, .causal = true, .rope = true});
    require_causal([&](auto xv) { return s(xv); }, x);
    // Padding flags after t are changed with the tokens in a real model; here they stay fixed.
    attention_mask<cpu> mask;
    mask.key_padding = from_values<std::uint8_t>(shape<dyn, dyn>{batch, seq}, {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0});
    require_causal([&](auto xv) { return s(xv, mask); }, x);
    // Causal attention asked by the mask instead of the options.
    uoe::smha<double> s2(g, {.d_model = d, .heads = 2, .select = arrival});
    attention_mask<cpu> causal_mask;
    causal_mask.causal = true;
    require_causal([&](auto xv) { return s2(xv, causal_mask); }, x);
  }
  SECTION("uoe::block of a causal SMHA and a causal UoME") {
    rng g(304);
    uoe::block<uoe::uome<double>, double> blk(
        g, {.d_model = d, .heads = 2, .select = arrival, .causal = true, .rope = true},
        uoe::uome<double>(g, {.d_model = d, .d_ff = 16, .experts = 4, .select = arrival}));
    require_causal([&](auto xv) { return blk(xv); }, x);
  }
  SECTION("faithful and gated leak: a change after t moves an output at <= t") {
    for (const auto mode : {uoe::mode::faithful, uoe::mode::gated}) {
      INFO(uoe::mode_name(mode));
      const uoe::selection_options o{.mode = mode, .top_k = 2, .capacity = 0.5};
      rng g(305);
      uoe::uome<double> m(g, {.d_model = d, .d_ff = 16, .experts = 4, .select = o});
      CHECK(leaks([&](auto xv) { return m(xv); }, x));
      uoe::smha<double> s(g, {.d_model = d, .heads = 2, .select = o, .causal = true, .rope = true});
      CHECK(leaks([&](auto xv) { return s(xv); }, x));
      uoe::block<uoe::uome<double>, double> blk(g, {.d_model = d, .heads = 2, .select = o, .causal = true},
                                                uoe::uome<double>(g, {.d_model = d, .d_ff = 16, .experts = 4, .select = o}));
      CHECK(leaks([&](auto xv) { return blk(xv); }, x));
    }
  }
}

// --- 5: patch-wise and expert selection reduce to what they must ------------------------

TEST_CASE("uoe: patch 1 is token-wise; patch-wise on patch-constant inputs equals token-wise; expert selection with "
          "top_k = E is the dense MLP",
          "[uoe][patch]") {
  constexpr std::size_t d = 6, batch = 2, seq = 8;
  SECTION("an explicit patch of 1 token equals the default options, exactly") {
    for (const auto mode : {uoe::mode::faithful, uoe::mode::gated, uoe::mode::causal}) {
      INFO(uoe::mode_name(mode));
      const auto x = input(401, batch, seq, d);
      rng g1(402), g2(402);
      uoe::uome<double> a(g1, {.d_model = d, .d_ff = 12, .experts = 3, .select = {.mode = mode}});
      uoe::uome<double> b(g2, {.d_model = d, .d_ff = 12, .experts = 3, .select = {.mode = mode, .patch = 1}});
      CHECK(max_diff(forward([&](auto xv) { return a(xv); }, x), forward([&](auto xv) { return b(xv); }, x)) == 0);
      rng g3(403), g4(403);
      uoe::smha<double> s(g3, {.d_model = d, .heads = 3, .select = {.mode = mode}});
      uoe::smha<double> t(g4, {.d_model = d, .heads = 3, .select = {.mode = mode, .patch = 1}});
      CHECK(max_diff(forward([&](auto xv) { return s(xv); }, x), forward([&](auto xv) { return t(xv); }, x)) == 0);
    }
  }
  SECTION("inputs constant over each patch of 2: patch-wise selects what token-wise does, outputs equal exactly") {
    auto x = input(404, batch, seq, d);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t s = 1; s < seq; s += 2)
        for (std::size_t j = 0; j < d; ++j) x.data()[(b * seq + s) * d + j] = x.data()[(b * seq + s - 1) * d + j];
    for (const auto mode : {uoe::mode::faithful, uoe::mode::gated}) {
      for (const auto par : {uoe::paradigm::data, uoe::paradigm::expert}) {
        INFO(uoe::mode_name(mode) << ", " << paradigm_name(par));
        rng g1(405), g2(405);
        uoe::uome<double> tokenwise(g1, {.d_model = d, .d_ff = 12, .experts = 3, .paradigm = par,
                                         .select = {.mode = mode, .top_k = 1, .capacity = 0.5}});
        uoe::uome<double> patchwise(g2, {.d_model = d, .d_ff = 12, .experts = 3, .paradigm = par,
                                         .select = {.mode = mode, .top_k = 1, .capacity = 0.5, .patch = 2}});
        const auto yt = forward([&](auto xv) { return tokenwise(xv); }, x);
        const auto yp = forward([&](auto xv) { return patchwise(xv); }, x);
        // Expert selection runs the gate on 8 pooled rows instead of 16 token
        // rows: the BLAS may round a row differently with another row count.
        CHECK(max_diff(yt, yp) <= (par == uoe::paradigm::data ? 0.0 : 1e-14));
        const auto& pt = tokenwise.last_routing();
        const auto& pp = patchwise.last_routing();
        REQUIRE(pt.token.size() == pp.token.size());
        CHECK(std::equal(pt.token.data(), pt.token.data() + pt.token.size(), pp.token.data()));  // the same plan
        CHECK(std::equal(pt.offsets.data(), pt.offsets.data() + pt.offsets.size(), pp.offsets.data()));
      }
      INFO(uoe::mode_name(mode) << ", SMHA");
      rng g3(406), g4(406);
      uoe::smha<double> tokenwise(g3, {.d_model = d, .heads = 3, .select = {.mode = mode, .top_k = 1, .capacity = 0.5},
                                       .causal = true});
      uoe::smha<double> patchwise(g4, {.d_model = d, .heads = 3,
                                       .select = {.mode = mode, .top_k = 1, .capacity = 0.5, .patch = 2}, .causal = true});
      const auto yt = forward([&](auto xv) { return tokenwise(xv); }, x);
      const auto yp = forward([&](auto xv) { return patchwise(xv); }, x);
      CHECK(max_diff(yt, yp) == 0);
      const auto& st = tokenwise.last_selection();
      const auto& sp = patchwise.last_selection();
      REQUIRE(st.position.size() == sp.position.size());
      CHECK(std::equal(st.position.data(), st.position.data() + st.position.size(), sp.position.data()));
    }
  }
  SECTION("on generic inputs patch-wise differs from token-wise (the patch option is not ignored)") {
    const auto x = input(407, batch, seq, d);
    rng g1(405), g2(405);
    uoe::uome<double> tokenwise(g1, {.d_model = d, .d_ff = 12, .experts = 3, .select = {.top_k = 1, .capacity = 0.5}});
    uoe::uome<double> patchwise(g2, {.d_model = d, .d_ff = 12, .experts = 3,
                                     .select = {.top_k = 1, .capacity = 0.5, .patch = 2}});
    CHECK(max_diff(forward([&](auto xv) { return tokenwise(xv); }, x), forward([&](auto xv) { return patchwise(xv); }, x)) > 0);
  }
  SECTION("expert selection with top_k = E, faithful, token-, patch- and sample-level: the union, so the dense MLP") {
    constexpr std::size_t f = 12, e = 3;
    const auto x = input(408, batch, seq, d);
    for (const std::size_t patch : {std::size_t(1), std::size_t(2), seq}) {
      INFO("patch " << patch);
      rng g(409);
      mlp::feed_forward<dyn, dyn, double> dense(g, d, f);
      auto experts = uoe::decompose(g, dense, {.experts = e, .paradigm = uoe::paradigm::expert,
                                               .select = {.top_k = e, .patch = patch}});
      auto union_all = uoe::decompose(g, dense, {.experts = e, .select = {.top_k = e, .capacity = 1.0}});
      const auto yd = forward([&](auto xv) { return reshape(dense(reshape(xv, shape<dyn, dyn>{batch * seq, d})), x.shape()); }, x);
      const auto ye = forward([&](auto xv) { return experts(xv); }, x);
      const auto yu = forward([&](auto xv) { return union_all(xv); }, x);
      CHECK(max_diff(yd, ye) < 1e-12);
      CHECK(max_diff(yu, ye) < 1e-12);
      CHECK(experts.last_routing().source.size() == e * batch * seq);
    }
  }
}

// --- 6: the selection rule --------------------------------------------------------------

namespace {

/// The selection rule written plainly on the host (docs/uoe.md, "The rules, exactly").
struct reference_selection {
  std::vector<index_t> position, token, length;
  std::vector<double> weight;
};

reference_selection reference_select(const std::vector<double>& p, std::size_t batch, std::size_t seq,
                                     std::size_t experts, const uoe::selection_options& o) {
  const std::size_t tokens = batch * seq, c = uoe::slots_of(o, seq), rows = experts * batch;
  std::vector<char> mark(tokens * experts, 0);
  for (std::size_t t = 0; t < tokens; ++t) {
    std::vector<std::size_t> order(experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p[t * experts + a] > p[t * experts + b]; });
    for (std::size_t j = 0; j < o.top_k; ++j) mark[t * experts + order[j]] = 1;
  }
  reference_selection r;
  for (std::size_t row = 0; row < rows; ++row) {
    const std::size_t e = row / batch, b = row % batch;
    std::vector<index_t> pos;
    if (o.mode == uoe::mode::causal) {
      for (std::size_t s = 0; s < seq && pos.size() < c; ++s)
        if (mark[(b * seq + s) * experts + e]) pos.push_back(static_cast<index_t>(s));
      r.length.push_back(static_cast<index_t>(pos.size()));
      while (pos.size() < c) pos.push_back(static_cast<index_t>(seq));
    } else {
      const std::size_t patches = seq / o.patch, kept = c / o.patch;
      auto ps = [&](std::size_t bb, std::size_t s) {
        return mark[(bb * seq + s) * experts + e] ? p[(bb * seq + s) * experts + e] : 0.0;
      };
      std::vector<double> score(patches, 0.0);
      for (std::size_t q = 0; q < patches; ++q)
        for (std::size_t s = q * o.patch; s < (q + 1) * o.patch; ++s) {
          double den = o.epsilon;
          for (std::size_t bb = 0; bb < batch; ++bb) den += ps(bb, s);
          score[q] += ps(b, s) / den;
        }
      std::vector<std::size_t> order(patches);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t bq) { return score[a] > score[bq]; });
      order.resize(kept);
      std::sort(order.begin(), order.end());
      for (const std::size_t q : order)
        for (std::size_t i = 0; i < o.patch; ++i) pos.push_back(static_cast<index_t>(q * o.patch + i));
    }
    for (std::size_t j = 0; j < c; ++j) {
      const index_t s = pos[j];
      const bool padding = s == static_cast<index_t>(seq);
      const std::size_t tok = b * seq + (padding ? 0 : static_cast<std::size_t>(s));
      r.position.push_back(s);
      r.token.push_back(static_cast<index_t>(tok));
      r.weight.push_back(o.mode == uoe::mode::faithful ? 1.0 : padding ? 0.0 : p[tok * experts + e]);
    }
  }
  return r;
}

template <class Sel>
void require_matches(const Sel& sel, const reference_selection& want, std::size_t seq, const uoe::selection_options& o) {
  const std::size_t c = uoe::slots_of(o, seq);
  REQUIRE(sel.slots == c);
  REQUIRE(sel.position.extent(0) == sel.rows());
  REQUIRE(sel.position.extent(1) == c);
  REQUIRE(sel.token.size() == sel.size());
  REQUIRE(sel.weight.size() == sel.size());
  CHECK(std::vector<index_t>(sel.position.data(), sel.position.data() + sel.size()) == want.position);
  CHECK(std::vector<index_t>(sel.token.data(), sel.token.data() + sel.size()) == want.token);
  CHECK(std::vector<double>(sel.weight.value().data(), sel.weight.value().data() + sel.size()) == want.weight);
  if (o.mode == uoe::mode::causal) {
    REQUIRE(sel.length.defined());
    CHECK(std::vector<index_t>(sel.length.data(), sel.length.data() + sel.rows()) == want.length);
  } else {
    CHECK_FALSE(sel.length.defined());
  }
  // Ascending positions within each row; non-causal rows are full (no padding).
  for (std::size_t row = 0; row < sel.rows(); ++row) {
    const std::size_t filled = o.mode == uoe::mode::causal ? static_cast<std::size_t>(sel.length.data()[row]) : c;
    for (std::size_t j = 0; j < c; ++j) {
      const index_t s = sel.position.data()[row * c + j];
      if (j < filled) {
        CHECK(s < static_cast<index_t>(seq));
        if (j > 0) CHECK(sel.position.data()[row * c + j - 1] < s);
      } else {
        CHECK(s == static_cast<index_t>(seq));
        CHECK(sel.weight.value().data()[row * c + j] == 0.0);
      }
    }
  }
}

template <class P>
auto select(const P& p, std::size_t batch, std::size_t seq, const uoe::selection_options& o) {
  tape t;
  return uoe::select_tokens(t.input(p), batch, seq, o);
}

std::vector<double> values_of(const tensor<double, shape<dyn, dyn>>& p) {
  return std::vector<double>(p.data(), p.data() + p.size());
}

}  // namespace

TEST_CASE("uoe: select_tokens follows the rule written plainly, for random probabilities in every mode",
          "[uoe][selection]") {
  rng g(501);
  std::size_t compared = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const std::size_t batch = 1 + g.next_u32() % 3, experts = 2 + g.next_u32() % 3;
    const std::size_t seqs[] = {4, 6, 8};
    const std::size_t seq = seqs[g.next_u32() % 3];
    const double capacities[] = {0.25, 0.5, 0.75, 1.0};
    const auto mode = static_cast<uoe::mode>(g.next_u32() % 3);
    std::size_t patch = mode == uoe::mode::causal ? 1 : 1 + g.next_u32() % 2;
    uoe::selection_options o{.mode = mode, .top_k = 1 + g.next_u32() % experts, .capacity = capacities[g.next_u32() % 4],
                             .patch = patch};
    // Sharp probabilities (top-1 dominating) make fillers and empty rows common.
    const double scale = trial % 2 ? 1.0 : 4.0;
    const auto logits = normal<double>(g, shape<dyn, dyn>{batch * seq, experts}, 0.0, scale);
    const auto p = softmax(logits);
    INFO("trial " << trial << ": batch " << batch << ", seq " << seq << ", E " << experts << ", " << uoe::mode_name(mode)
                  << ", top_k " << o.top_k << ", capacity " << o.capacity << ", patch " << patch);
    const auto sel = select(p, batch, seq, o);
    require_matches(sel, reference_select(values_of(p), batch, seq, experts, o), seq, o);
    ++compared;
  }
  CHECK(compared == 120);
}

TEST_CASE("uoe: selection ties by hand: score descending, position ascending; batch-axis normalisation; causal "
          "arrival order and padding",
          "[uoe][selection]") {
  const std::size_t e = 2;
  SECTION("token ties go to the earlier position, zero-score fillers too; tied marks go to the lower expert") {
    // One sample of 5 tokens, top-1, c = floor(0.5 · 5) = 2. Token 4 ties its
    // two experts and so marks expert 0. Expert 0 is marked by tokens 0, 1, 3
    // and 4 with equal scores 0.6 / (0.6 + ε) (token 4: 0.5 / (0.5 + ε), lower)
    // and keeps 0 and 1; expert 1 is marked by token 2 only, then takes the
    // earliest zero-score filler, token 0.
    const auto p = from_values<double>(shape<dyn, dyn>{5, e}, {0.6, 0.4, 0.6, 0.4, 0.3, 0.7, 0.6, 0.4, 0.5, 0.5});
    for (const auto mode : {uoe::mode::faithful, uoe::mode::gated}) {
      INFO(uoe::mode_name(mode));
      const uoe::selection_options o{.mode = mode, .top_k = 1, .capacity = 0.5};
      const auto sel = select(p, 1, 5, o);
      REQUIRE(sel.slots == 2);
      CHECK(std::vector<index_t>(sel.position.data(), sel.position.data() + 4) == std::vector<index_t>{0, 1, 0, 2});
      CHECK(std::vector<index_t>(sel.token.data(), sel.token.data() + 4) == std::vector<index_t>{0, 1, 0, 2});
      const std::vector<double> weight(sel.weight.value().data(), sel.weight.value().data() + 4);
      if (mode == uoe::mode::faithful) CHECK(weight == std::vector<double>{1, 1, 1, 1});
      else CHECK(weight == std::vector<double>{0.6, 0.6, 0.4, 0.7});  // the filler weighs its own (unmarked) p
      require_matches(sel, reference_select(values_of(p), 1, 5, e, o), 5, o);
    }
    // c = 3: expert 0 keeps the three tied 0.6 tokens 0, 1, 3 over token 4 (0.5, lower score).
    const uoe::selection_options o3{.top_k = 1, .capacity = 0.6};
    const auto sel3 = select(p, 1, 5, o3);
    REQUIRE(sel3.slots == 3);
    CHECK(std::vector<index_t>(sel3.position.data(), sel3.position.data() + 6) == std::vector<index_t>{0, 1, 3, 0, 1, 2});
  }
  SECTION("the score is normalised over the batch axis: samples choose differently than raw p would") {
    // Two samples of 2 tokens, one expert (every token marks it), c = 1.
    // Raw p: sample 0 would keep position 0 (0.5 > 0.4). Normalised at each
    // position over the batch: sample 0 scores 0.5/1.0 and 0.4/0.5, keeps 1;
    // sample 1 scores 0.5/1.0 and 0.1/0.5, keeps 0.
    const auto p = from_values<double>(shape<dyn, dyn>{4, 1}, {0.5, 0.4, 0.5, 0.1});
    const uoe::selection_options o{.mode = uoe::mode::gated, .top_k = 1, .capacity = 0.5};
    const auto sel = select(p, 2, 2, o);
    REQUIRE(sel.slots == 1);
    CHECK(std::vector<index_t>(sel.position.data(), sel.position.data() + 2) == std::vector<index_t>{1, 0});
    CHECK(std::vector<index_t>(sel.token.data(), sel.token.data() + 2) == std::vector<index_t>{1, 2});
    CHECK(std::vector<double>(sel.weight.value().data(), sel.weight.value().data() + 2) == std::vector<double>{0.4, 0.5});
  }
  SECTION("patches: the summed score picks the patch, ties to the earlier patch, tokens in order") {
    // One sample of 6 tokens in 3 patches of 2, one expert, c = floor(0.5 · 3) · 2 = 2.
    // With batch 1 every marked token scores p / (p + ε) ≈ 1: patches tie, the first wins.
    const auto p = from_values<double>(shape<dyn, dyn>{6, 1}, {0.5, 0.5, 0.5, 0.5, 0.5, 0.5});
    const uoe::selection_options o{.top_k = 1, .capacity = 0.5, .patch = 2};
    const auto sel = select(p, 1, 6, o);
    REQUIRE(sel.slots == 2);
    CHECK(std::vector<index_t>(sel.position.data(), sel.position.data() + 2) == std::vector<index_t>{0, 1});
    // Two experts: tokens 0-2 mark expert 0, tokens 3-5 expert 1. Expert 1's patch 2
    // (tokens 4, 5) scores ≈ 2 and wins over patch 1 (token 3 only); expert 0 keeps patch 0.
    const auto q = from_values<double>(shape<dyn, dyn>{6, 2}, {0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.2, 0.8, 0.2, 0.8, 0.2, 0.8});
    const auto sq = select(q, 1, 6, o);
    CHECK(std::vector<index_t>(sq.position.data(), sq.position.data() + 4) == std::vector<index_t>{0, 1, 4, 5});
  }
  SECTION("causal: the first c marking tokens in arrival order; padding at position seq with weight 0") {
    // One sample of 6 tokens, top-1, c = 3. Expert 0 is marked by 1, 2, 4, 5
    // (keeps 1, 2, 4 though 5 scores highest); expert 1 by 0 and 3 (one padding slot).
    const auto p = from_values<double>(shape<dyn, dyn>{6, e}, {0.2, 0.8, 0.6, 0.4, 0.7, 0.3, 0.1, 0.9, 0.55, 0.45, 0.99, 0.01});
    const uoe::selection_options o{.mode = uoe::mode::causal, .top_k = 1, .capacity = 0.5};
    const auto sel = select(p, 1, 6, o);
    REQUIRE(sel.slots == 3);
    CHECK(std::vector<index_t>(sel.position.data(), sel.position.data() + 6) == std::vector<index_t>{1, 2, 4, 0, 3, 6});
    CHECK(std::vector<index_t>(sel.length.data(), sel.length.data() + 2) == std::vector<index_t>{3, 2});
    CHECK(std::vector<index_t>(sel.token.data(), sel.token.data() + 6) == std::vector<index_t>{1, 2, 4, 0, 3, 0});
    CHECK(std::vector<double>(sel.weight.value().data(), sel.weight.value().data() + 6) ==
          std::vector<double>{0.6, 0.7, 0.55, 0.8, 0.9, 0.0});
    // A second sample, and an expert nobody marks: length 0, every slot padding.
    const auto p2 = from_values<double>(shape<dyn, dyn>{4, 3}, {0.7, 0.2, 0.1, 0.2, 0.7, 0.1, 0.6, 0.3, 0.1, 0.8, 0.1, 0.1});
    const auto s2 = select(p2, 2, 2, {.mode = uoe::mode::causal, .top_k = 1, .capacity = 1.0});
    REQUIRE(s2.slots == 2);
    CHECK(std::vector<index_t>(s2.position.data(), s2.position.data() + 12) ==
          std::vector<index_t>{0, 2, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2});
    CHECK(std::vector<index_t>(s2.length.data(), s2.length.data() + 6) == std::vector<index_t>{1, 2, 1, 0, 0, 0});
    CHECK(std::vector<index_t>(s2.token.data(), s2.token.data() + 12) ==
          std::vector<index_t>{0, 0, 2, 3, 1, 0, 2, 2, 0, 0, 2, 2});
  }
  SECTION("slots_of: floor(capacity · patches) patches of l_p tokens, at least one") {
    CHECK(uoe::slots_of({.capacity = 0.5}, 8) == 4);
    CHECK(uoe::slots_of({.capacity = 0.5, .patch = 2}, 8) == 4);
    CHECK(uoe::slots_of({.capacity = 0.5, .patch = 4}, 12) == 4);  // floor(1.5) = 1 patch
    CHECK(uoe::slots_of({.capacity = 0.1}, 8) == 1);               // at least one
    CHECK(uoe::slots_of({.capacity = 1.0, .patch = 4}, 8) == 8);
    CHECK(uoe::slots_of({.capacity = 0.3}, 10) == 3);              // rounding of 0.3 · 10 does not lose a slot
  }
}

// --- the layers against their formulas written plainly ------------------------------------

namespace {

/// Softmax probabilities (T, E) of the router on the rows of x (batch·seq, d).
template <class M>
std::vector<double> reference_probabilities(M& model, const std::vector<double>& rows, std::size_t tokens, std::size_t d) {
  auto& gate = model.router_layer().gate();
  const std::size_t e = gate.out_features();
  const double* w = gate.weight().value().data();  // (d, E)
  const double* bias = gate.bias().value().data();
  std::vector<double> p(tokens * e);
  for (std::size_t t = 0; t < tokens; ++t) {
    double top = -1e300;
    for (std::size_t k = 0; k < e; ++k) {
      double z = bias[k];
      for (std::size_t i = 0; i < d; ++i) z += rows[t * d + i] * w[i * e + k];
      p[t * e + k] = z;
      top = std::max(top, z);
    }
    double total = 0;
    for (std::size_t k = 0; k < e; ++k) total += p[t * e + k] = std::exp(p[t * e + k] - top);
    for (std::size_t k = 0; k < e; ++k) p[t * e + k] /= total;
  }
  return p;
}

/// y += w · (x_row · W[in, out] + b) for W (in, out) row-major at w_at.
std::vector<double> affine(const double* x, const double* w, const double* b, std::size_t in, std::size_t out) {
  std::vector<double> y(out);
  for (std::size_t j = 0; j < out; ++j) {
    double z = b ? b[j] : 0.0;
    for (std::size_t i = 0; i < in; ++i) z += x[i] * w[i * out + j];
    y[j] = z;
  }
  return y;
}

double gelu_exact(double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }

/// UoME by its formula: y(t) = b2 + Σ over the (expert, weight) pairs that took t of
/// weight · gelu(x(t)·W1_e + b1_e)·W2_e, with the selection of reference_select
/// (data) or each unit's top-k of its mean-pooled features (expert).
x3 reference_uome(uoe::uome<double>& m, const x3& x) {
  const std::size_t batch = x.extent(0), seq = x.extent(1), d = x.extent(2), tokens = batch * seq;
  const std::size_t e = m.experts().experts(), fe = m.experts().slice_width();
  const auto& o = m.options().select;
  const std::vector<double> rows(x.data(), x.data() + x.size());
  const double* w1 = m.experts().w1().value().data();
  const double* b1 = m.experts().b1().value().data();
  const double* w2 = m.experts().w2().value().data();
  x3 y(x.shape());
  for (std::size_t t = 0; t < tokens; ++t)
    for (std::size_t j = 0; j < d; ++j) y.data()[t * d + j] = m.bias().value().data()[j];
  auto add = [&](std::size_t t, std::size_t ex, double weight) {
    auto h = affine(&rows[t * d], w1 + ex * d * fe, b1 + ex * fe, d, fe);
    for (auto& v : h) v = gelu_exact(v);
    const auto out = affine(h.data(), w2 + ex * fe * d, nullptr, fe, d);
    for (std::size_t j = 0; j < d; ++j) y.data()[t * d + j] += weight * out[j];
  };
  if (m.options().paradigm == uoe::paradigm::data) {
    const auto p = reference_probabilities(m, rows, tokens, d);
    const auto sel = reference_select(p, batch, seq, e, o);
    const std::size_t c = uoe::slots_of(o, seq);
    for (std::size_t i = 0; i < sel.token.size(); ++i) add(static_cast<std::size_t>(sel.token[i]), i / (batch * c), sel.weight[i]);
  } else {
    const std::size_t units = tokens / o.patch;
    std::vector<double> pooled(units * d, 0.0);
    for (std::size_t u = 0; u < units; ++u)
      for (std::size_t i = 0; i < o.patch; ++i)
        for (std::size_t j = 0; j < d; ++j) pooled[u * d + j] += rows[(u * o.patch + i) * d + j] / double(o.patch);
    const auto p = reference_probabilities(m, pooled, units, d);
    for (std::size_t u = 0; u < units; ++u) {
      std::vector<std::size_t> order(e);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p[u * e + a] > p[u * e + b]; });
      for (std::size_t k = 0; k < o.top_k; ++k)
        for (std::size_t i = 0; i < o.patch; ++i)
          add(u * o.patch + i, order[k], o.mode == uoe::mode::faithful ? 1.0 : p[u * e + order[k]]);
    }
  }
  return y;
}

/// RoPE (rotate_half) of v (dim) at position pos.
void rotate(std::vector<double>& v, std::size_t pos, double base) {
  const std::size_t half = v.size() / 2;
  for (std::size_t j = 0; j < half; ++j) {
    const double a = double(pos) * std::pow(base, -2.0 * double(j) / double(v.size()));
    const double x0 = v[j], x1 = v[j + half];
    v[j] = x0 * std::cos(a) - x1 * std::sin(a);
    v[j + half] = x1 * std::cos(a) + x0 * std::sin(a);
  }
}

/// SMHA by its formula: each head h attends, in each sample, over the tokens
/// reference_select gives it, RoPE and the causal mask on their original
/// positions, key padding by original position, padding slots hidden; its
/// output projected by Wo_h, weighted, summed over heads, plus bo once.
x3 reference_smha(uoe::smha<double>& s, const x3& x, const std::uint8_t* padding, bool causal) {
  const std::size_t batch = x.extent(0), seq = x.extent(1), d = x.extent(2), tokens = batch * seq;
  const std::size_t h = s.heads(), dh = s.head_dim();
  const auto& o = s.options();
  const std::vector<double> rows(x.data(), x.data() + x.size());
  const auto p = reference_probabilities(s, rows, tokens, d);
  const auto sel = reference_select(p, batch, seq, h, o.select);
  const std::size_t c = uoe::slots_of(o.select, seq);
  x3 y(x.shape());
  for (std::size_t t = 0; t < tokens; ++t)
    for (std::size_t j = 0; j < d; ++j) y.data()[t * d + j] = s.bo().value().data()[j];
  for (std::size_t head = 0; head < h; ++head)
    for (std::size_t b = 0; b < batch; ++b) {
      const std::size_t row = head * batch + b;
      std::vector<std::vector<double>> q(c), k(c), v(c);
      for (std::size_t i = 0; i < c; ++i) {
        const double* xi = &rows[static_cast<std::size_t>(sel.token[row * c + i]) * d];
        q[i] = affine(xi, s.wq().value().data() + head * d * dh, s.bq().value().data() + head * dh, d, dh);
        k[i] = affine(xi, s.wk().value().data() + head * d * dh, s.bk().value().data() + head * dh, d, dh);
        v[i] = affine(xi, s.wv().value().data() + head * d * dh, s.bv().value().data() + head * dh, d, dh);
        if (o.rope) {
          rotate(q[i], static_cast<std::size_t>(sel.position[row * c + i]), o.rope_base);
          rotate(k[i], static_cast<std::size_t>(sel.position[row * c + i]), o.rope_base);
        }
      }
      for (std::size_t i = 0; i < c; ++i) {
        const auto qi = static_cast<std::size_t>(sel.position[row * c + i]);
        std::vector<double> score(c);
        std::vector<bool> seen(c);
        double top = -1e300;
        for (std::size_t j = 0; j < c; ++j) {
          const auto kj = static_cast<std::size_t>(sel.position[row * c + j]);
          seen[j] = kj < seq && !(causal && kj > qi) && !(padding && padding[b * seq + kj]);
          double z = 0;
          for (std::size_t a = 0; a < dh; ++a) z += q[i][a] * k[j][a];
          score[j] = z / std::sqrt(double(dh));
          if (seen[j]) top = std::max(top, score[j]);
        }
        std::vector<double> att(dh, 0.0);
        double total = 0;
        for (std::size_t j = 0; j < c; ++j)
          if (seen[j]) total += std::exp(score[j] - top);
        for (std::size_t j = 0; j < c; ++j)
          if (seen[j])
            for (std::size_t a = 0; a < dh; ++a) att[a] += std::exp(score[j] - top) / total * v[j][a];
        const auto out = affine(att.data(), s.wo().value().data() + head * dh * d, nullptr, dh, d);
        const auto t = static_cast<std::size_t>(sel.token[row * c + i]);
        for (std::size_t j = 0; j < d; ++j) y.data()[t * d + j] += sel.weight[row * c + i] * out[j];
      }
    }
  return y;
}

}  // namespace

TEST_CASE("uoe: UoME and SMHA forwards equal their formulas written plainly (selection, RoPE and causal mask at "
          "original positions, weights, biases once)",
          "[uoe][reference]") {
  constexpr std::size_t d = 8, batch = 2, seq = 8;
  const auto x = input(601, batch, seq, d);
  SECTION("UoME") {
    struct variant {
      uoe::paradigm par;
      uoe::selection_options o;
    };
    const variant variants[] = {
        {uoe::paradigm::data, {.mode = uoe::mode::faithful, .top_k = 1, .capacity = 0.5}},
        {uoe::paradigm::data, {.mode = uoe::mode::gated, .top_k = 2, .capacity = 0.25, .patch = 2}},
        {uoe::paradigm::data, {.mode = uoe::mode::causal, .top_k = 1, .capacity = 0.5}},
        {uoe::paradigm::expert, {.mode = uoe::mode::faithful, .top_k = 2, .patch = 2}},
        {uoe::paradigm::expert, {.mode = uoe::mode::gated, .top_k = 1, .patch = seq}},
        {uoe::paradigm::expert, {.mode = uoe::mode::causal, .top_k = 3}},
    };
    for (const auto& v : variants) {
      INFO(paradigm_name(v.par) << ", " << uoe::mode_name(v.o.mode) << ", top_k " << v.o.top_k << ", patch " << v.o.patch);
      rng g(602);
      uoe::uome<double> m(g, {.d_model = d, .d_ff = 16, .experts = 4, .paradigm = v.par, .select = v.o});
      const auto y = forward([&](auto xv) { return m(xv); }, x);
      CHECK(max_diff(y, reference_uome(m, x)) < 1e-12);
    }
  }
  SECTION("SMHA") {
    struct variant {
      uoe::selection_options o;
      bool causal, rope, padding;
    };
    const variant variants[] = {
        {{.mode = uoe::mode::faithful, .top_k = 1, .capacity = 0.5}, true, true, false},
        {{.mode = uoe::mode::gated, .top_k = 2, .capacity = 0.5, .patch = 2}, false, true, true},
        {{.mode = uoe::mode::causal, .top_k = 1, .capacity = 0.5}, true, true, true},
        {{.mode = uoe::mode::causal, .top_k = 1, .capacity = 0.25}, true, false, false},
    };
    const std::uint8_t flags[batch * seq] = {0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0};
    for (const auto& v : variants) {
      INFO(uoe::mode_name(v.o.mode) << ", top_k " << v.o.top_k << ", patch " << v.o.patch << (v.causal ? ", causal" : "")
                                    << (v.rope ? ", RoPE" : "") << (v.padding ? ", key padding" : ""));
      rng g(603);
      uoe::smha<double> s(g, {.d_model = d, .heads = 2, .select = v.o, .causal = v.causal, .rope = v.rope});
      attention_mask<cpu> mask;
      if (v.padding) mask.key_padding = from_values<std::uint8_t>(shape<dyn, dyn>{batch, seq}, std::span<const std::uint8_t>(flags));
      const auto y = forward([&](auto xv) { return s(xv, mask); }, x);
      CHECK(max_diff(y, reference_smha(s, x, v.padding ? flags : nullptr, v.causal)) < 1e-12);
      // The selection is partial: some position is not the slot index (compacted positions would differ).
      const auto& sel = s.last_selection();
      bool moved = false;
      for (std::size_t i = 0; i < sel.size(); ++i) moved = moved || sel.position.data()[i] != index_t(i % sel.slots);
      CHECK(moved);
    }
  }
}

// --- 7: errors ----------------------------------------------------------------------------

TEST_CASE("uoe: bad options throw value_error and bad shapes shape_error, naming the op", "[uoe][errors]") {
  rng g(701);
  using uome_t = uoe::uome<double>;
  using smha_t = uoe::smha<double>;
  auto uome_with = [&](uoe::selection_options o, uoe::paradigm par = uoe::paradigm::data) {
    return uome_t(g, {.d_model = 4, .d_ff = 8, .experts = 4, .paradigm = par, .select = o});
  };
  SECTION("selection options") {
    REQUIRE_THROWS_AS(uome_with({.top_k = 0}), value_error);
    REQUIRE_THROWS_WITH(uome_with({.top_k = 0}), Catch::Contains("uoe::router") && Catch::Contains("top_k 0"));
    REQUIRE_THROWS_WITH(uome_with({.top_k = 5}), Catch::Contains("uoe::router") && Catch::Contains("top_k 5"));
    REQUIRE_THROWS_AS(uome_with({.capacity = 0.0}), value_error);
    REQUIRE_THROWS_WITH(uome_with({.capacity = 0.0}), Catch::Contains("uoe::router") && Catch::Contains("capacity"));
    REQUIRE_THROWS_AS(uome_with({.capacity = -0.5}), value_error);
    REQUIRE_THROWS_AS(uome_with({.capacity = 1.5}), value_error);
    REQUIRE_THROWS_AS(uome_with({.capacity = std::nan("")}), value_error);
    REQUIRE_THROWS_AS(uome_with({.patch = 0}), value_error);
    REQUIRE_THROWS_AS(uome_with({.mode = uoe::mode::causal, .patch = 2}), value_error);
    REQUIRE_THROWS_WITH(uome_with({.mode = uoe::mode::causal, .patch = 2}),
                        Catch::Contains("uoe::router") && Catch::Contains("causal"));
    REQUIRE_THROWS_AS(smha_t(g, {.d_model = 4, .heads = 2, .select = {.top_k = 3}}), value_error);
    REQUIRE_THROWS_AS(smha_t(g, {.d_model = 4, .heads = 2, .select = {.mode = uoe::mode::causal, .patch = 2}}),
                      value_error);
    // The patch must divide the sequence: checked when the length is known.
    auto m = uome_with({.capacity = 0.5, .patch = 3});
    tape t;
    const auto x = input(702, 2, 4, 4);
    REQUIRE_THROWS_AS(m(t.input(x)), value_error);
    REQUIRE_THROWS_WITH(m(t.input(x)), Catch::Contains("uoe::router::select") && Catch::Contains("patch length 3"));
    auto me = uome_with({.capacity = 0.5, .patch = 3}, uoe::paradigm::expert);
    REQUIRE_THROWS_WITH(me(t.input(x)), Catch::Contains("uoe::router::choose") && Catch::Contains("patch length 3"));
    smha_t s(g, {.d_model = 4, .heads = 2, .select = {.top_k = 1, .patch = 3}});
    REQUIRE_THROWS_WITH(s(t.input(x)), Catch::Contains("uoe::router::select"));
    CHECK_NOTHROW(m(t.input(input(703, 2, 6, 4))));
    // select_tokens directly names itself.
    const auto p = softmax(normal<double>(g, shape<dyn, dyn>{8, 2}));
    REQUIRE_THROWS_WITH(select(p, 2, 4, {.top_k = 3}), Catch::Contains("uoe::select_tokens") && Catch::Contains("top_k"));
    REQUIRE_THROWS_WITH(select(p, 2, 4, {.capacity = 2.0}), Catch::Contains("uoe::select_tokens"));
    REQUIRE_THROWS_WITH(select(p, 1, 8, {.patch = 3}), Catch::Contains("uoe::select_tokens"));
    REQUIRE_THROWS_WITH(select(p, 2, 4, {.epsilon = -1.0}), Catch::Contains("uoe::select_tokens") && Catch::Contains("epsilon"));
  }
  SECTION("widths") {
    REQUIRE_THROWS_AS(uome_t(g, {.d_model = 4, .d_ff = 10, .experts = 4}), value_error);
    REQUIRE_THROWS_WITH(uome_t(g, {.d_model = 4, .d_ff = 10, .experts = 4}),
                        Catch::Contains("uoe::mlp_slices") && Catch::Contains("d_ff 10"));
    REQUIRE_THROWS_WITH((uoe::mlp_slices<double>(g, 4, 10, 4)), Catch::Contains("uoe::mlp_slices"));
    mlp::feed_forward<dyn, dyn, double> dense(g, 4, 10);
    REQUIRE_THROWS_AS(uoe::decompose(g, dense, {.experts = 4, .select = {.top_k = 1}}), value_error);
    REQUIRE_THROWS_WITH(uoe::decompose(g, dense, {.experts = 4, .select = {.top_k = 1}}),
                        Catch::Contains("uoe::decompose") && Catch::Contains("d_ff 10"));
    REQUIRE_THROWS_AS(smha_t(g, {.d_model = 6, .heads = 4}), value_error);
    REQUIRE_THROWS_WITH(smha_t(g, {.d_model = 6, .heads = 4}), Catch::Contains("uoe::smha") && Catch::Contains("d_model 6"));
    REQUIRE_THROWS_WITH(smha_t(g, {.d_model = 6, .heads = 2, .rope = true}),
                        Catch::Contains("uoe::smha") && Catch::Contains("RoPE"));
    REQUIRE_THROWS_AS(uoe::router<double>(g, 4, 0, {}), value_error);
    // A router and slices with different expert counts.
    REQUIRE_THROWS_WITH(uome_t(uoe::router<double>(g, 4, 2, {.top_k = 1}), uoe::mlp_slices<double>(g, 4, 8, 4),
                               zeros<double>(shape<dyn>{4}), {.d_model = 4, .d_ff = 8, .experts = 4}),
                        Catch::Contains("uoe::uome"));
    // Given slices of mismatched shapes.
    REQUIRE_THROWS_AS(uoe::mlp_slices<double>(zeros<double>(shape<dyn, dyn, dyn>{2, 4, 3}), zeros<double>(shape<dyn, dyn>{2, 3}),
                                              zeros<double>(shape<dyn, dyn, dyn>{2, 4, 4})),
                      shape_error);
    REQUIRE_THROWS_WITH(uoe::mlp_slices<double>(zeros<double>(shape<dyn, dyn, dyn>{2, 4, 3}), zeros<double>(shape<dyn, dyn>{3, 3}),
                                                zeros<double>(shape<dyn, dyn, dyn>{2, 3, 4})),
                        Catch::Contains("uoe::mlp_slices"));
  }
  SECTION("shapes and masks") {
    tape t;
    auto m = uome_with({});
    REQUIRE_THROWS_AS(m(t.input(input(704, 2, 4, 5))), shape_error);
    REQUIRE_THROWS_WITH(m(t.input(input(704, 2, 4, 5))), Catch::Contains("uoe::uome"));
    smha_t s(g, {.d_model = 4, .heads = 2});
    REQUIRE_THROWS_AS(s(t.input(input(705, 2, 4, 6))), shape_error);
    REQUIRE_THROWS_WITH(s(t.input(input(705, 2, 4, 6))), Catch::Contains("uoe::smha"));
    const auto x = t.input(input(706, 2, 4, 4));
    attention_mask<cpu> lengths;
    lengths.key_lengths = from_values<index_t>(shape<dyn>{2}, {4, 3});
    REQUIRE_THROWS_AS(s(x, lengths), value_error);
    REQUIRE_THROWS_WITH(s(x, lengths), Catch::Contains("uoe::smha") && Catch::Contains("key_padding"));
    attention_mask<cpu> positions;
    positions.query_positions = zeros<index_t>(shape<dyn, dyn>{2, 4});
    REQUIRE_THROWS_AS(s(x, positions), value_error);
    attention_mask<cpu> padding;
    padding.key_padding = zeros<std::uint8_t>(shape<dyn, dyn>{2, 5});
    REQUIRE_THROWS_AS(s(x, padding), shape_error);
    REQUIRE_THROWS_WITH(s(x, padding), Catch::Contains("uoe::smha") && Catch::Contains("key_padding"));
    padding.key_padding = zeros<std::uint8_t>(shape<dyn, dyn>{2, 4});
    CHECK_NOTHROW(s(x, padding));
    // The router: rows that are not batch · seq.
    uoe::router<double> r(g, 4, 2, {.top_k = 1});
    const auto rows = t.input(normal<double>(g, shape<dyn, dyn>{8, 4}));
    REQUIRE_THROWS_AS(r.select(rows, 3, 3), shape_error);
    REQUIRE_THROWS_WITH(r.select(rows, 3, 3), Catch::Contains("uoe::router::select"));
    REQUIRE_THROWS_AS(r.choose(rows, 3, 3), shape_error);
    REQUIRE_THROWS_WITH(r.choose(rows, 3, 3), Catch::Contains("uoe::router::choose"));
    REQUIRE_THROWS_WITH(select(softmax(normal<double>(g, shape<dyn, dyn>{8, 2})), 3, 3, {.top_k = 1}),
                        Catch::Contains("uoe::select_tokens"));
  }
}

// --- 8: the load-balance loss ---------------------------------------------------------------

TEST_CASE("uoe: gated and causal modes with balance_weight > 0 carry the weighted Switch loss, whose gradient reaches "
          "the router; faithful mode has none",
          "[uoe][aux]") {
  constexpr std::size_t d = 4, batch = 2, seq = 6;
  const auto x = input(801, batch, seq, d);
  for (const auto par : {uoe::paradigm::data, uoe::paradigm::expert}) {
    for (const auto mode : {uoe::mode::gated, uoe::mode::causal}) {
      INFO(paradigm_name(par) << ", " << uoe::mode_name(mode));
      // The same layer with the loss weighted 0, w and 2w.
      auto run = [&](double w, double& aux) {
        rng g(802);
        uoe::uome<double> m(g, {.d_model = d, .d_ff = 8, .experts = 4, .paradigm = par,
                                .select = {.mode = mode, .top_k = 2, .capacity = 0.5, .balance_weight = w}});
        tape t;
        auto y = m(t.input(x));
        const auto& plan = m.last_routing();
        REQUIRE(plan.aux_loss.value().defined() == (w > 0));
        aux = w > 0 ? plan.aux_loss.value()[0] : 0.0;
        t.backward(sum(y * y));
        return router_grad(m);
      };
      double a0 = 0, a1 = 0, a2 = 0;
      const auto g0 = run(0.0, a0), g1 = run(0.1, a1), g2 = run(0.2, a2);
      CHECK(std::isfinite(a1));
      CHECK(a1 > 0);
      CHECK(a2 == Approx(2 * a1).epsilon(1e-12));
      // The loss's own gradient: g(w) − g(0), nonzero, linear in w.
      std::vector<double> d1(g0.size()), d2(g0.size());
      for (std::size_t i = 0; i < g0.size(); ++i) d1[i] = g1[i] - g0[i], d2[i] = g2[i] - g0[i];
      CHECK_FALSE(all_zero(d1));
      for (std::size_t i = 0; i < g0.size(); ++i) CHECK(d2[i] == Approx(2 * d1[i]).margin(1e-12));
    }
  }
  SECTION("the loss's gradient with respect to the router (gradcheck of the loss alone)") {
    for (const auto par : {uoe::paradigm::data, uoe::paradigm::expert}) {
      INFO(paradigm_name(par));
      rng g(803);
      uoe::uome<double> m(g, {.d_model = d, .d_ff = 8, .experts = 4, .paradigm = par,
                              .select = {.mode = uoe::mode::gated, .top_k = 2, .capacity = 0.5, .balance_weight = 0.5}});
      spread_router(m, 804);
      auto r = check_parameter_gradients(m, [&](tape& t) {
        m(t.input(x));
        return m.last_routing().aux_loss;
      }, "router");
      INFO(r.message);
      CHECK(r.ok);
      CHECK(r.checked == 4 * 4 + 4);
      CHECK_FALSE(all_zero(router_grad(m)));
    }
  }
  SECTION("faithful mode: no loss even when weighted, and SMHA's selection carries it in gated mode") {
    rng g(805);
    uoe::uome<double> m(g, {.d_model = d, .d_ff = 8, .experts = 4,
                            .select = {.top_k = 2, .capacity = 0.5, .balance_weight = 0.1}});
    tape t;
    auto y = m(t.input(x));
    CHECK_FALSE(m.last_routing().aux_loss.value().defined());
    t.backward(sum(y * y));
    CHECK(all_zero(router_grad(m)));
    uoe::smha<double> s(g, {.d_model = d, .heads = 2,
                            .select = {.mode = uoe::mode::gated, .top_k = 1, .capacity = 0.5, .balance_weight = 0.1}});
    tape t2;
    auto ys = s(t2.input(x));
    REQUIRE(s.last_selection().aux_loss.value().defined());
    CHECK(s.last_selection().aux_loss.value()[0] > 0);
    t2.backward(sum(ys * ys));
    CHECK_FALSE(all_zero(router_grad(s)));
  }
}

// --- 9: in transformer blocks -----------------------------------------------------------------

namespace {

/// A char_lm-sized step: embed characters, run the block, project to the
/// vocabulary, cross-entropy on the next characters, backward.
template <class Block>
float char_step(Block& blk, rng& g, nn::embedding<dyn, dyn>& embed, nn::linear<dyn, dyn>& head, std::size_t batch,
                std::size_t seq) {
  const std::size_t vocabulary = embed.vocabulary();
  std::vector<index_t> ids(batch * seq), next(batch * seq);
  for (auto& i : ids) i = static_cast<index_t>(g.next_u32() % vocabulary);
  for (auto& i : next) i = static_cast<index_t>(g.next_u32() % vocabulary);
  tape t;
  auto h = embed(from_values<index_t>(shape<dyn, dyn>{batch, seq}, std::span<const index_t>(ids)));  // (batch, seq, d)
  auto y = blk(h);
  REQUIRE(y.extent(0) == batch);
  REQUIRE(y.extent(1) == seq);
  auto logits = head(reshape(y, shape<dyn, dyn>{batch * seq, y.extent(2)}));
  auto loss = cross_entropy(logits, from_values<index_t>(shape<dyn>{batch * seq}, std::span<const index_t>(next)));
  t.backward(loss);
  return loss.value()[0];
}

template <class M>
double grad_norm(M& model, const std::string& path) {
  double n = -1;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    if (name != path) return;
    n = 0;
    for (std::size_t i = 0; i < p.grad().size(); ++i) n += double(p.grad().data()[i]) * double(p.grad().data()[i]);
  });
  if (n < 0) FAIL("no parameter " << path);
  return std::sqrt(n);
}

}  // namespace

TEST_CASE("uoe: UoME in moe::transformer_block and in uoe::block, at a char_lm size, forward and backward",
          "[uoe][block]") {
  constexpr std::size_t d = 64, heads = 4, vocabulary = 65, batch = 4, seq = 32;
  rng g(901);
  nn::embedding<dyn, dyn> embed(g, vocabulary, d);
  nn::linear<dyn, dyn> head(g, d, vocabulary);
  const uoe::uome_options ffn{.d_model = d, .d_ff = 4 * d, .experts = 4,
                              .select = {.mode = uoe::mode::causal, .top_k = 2, .capacity = 0.5, .balance_weight = 0.01}};
  static_assert(uoe::uome<>::takes_sequences);

  SECTION("moe::transformer_block hands UoME (batch, seq, d)") {
    moe::transformer_block<uoe::uome<>> blk(g, d, heads, uoe::uome<>(g, ffn), {.causal = true, .rope = true});
    const float loss = char_step(blk, g, embed, head, batch, seq);
    CHECK(std::isfinite(loss));
    CHECK(loss == Approx(std::log(double(vocabulary))).margin(1.5));
    // The UoME saw the samples: c = seq / 2 slots per (expert, sample).
    CHECK(blk.moe().last_routing().tokens == batch * seq);
    CHECK(blk.moe().last_routing().source.size() == 4 * batch * seq / 2);
    for (const char* p : {"norm1.weight", "attention.q_proj.weight", "norm2.weight", "moe.router.weight",
                          "moe.router.bias", "moe.experts.w1", "moe.experts.b1", "moe.experts.w2", "moe.bias"}) {
      INFO(p);
      CHECK(grad_norm(blk, p) > 0);
    }
  }
  SECTION("uoe::block: SMHA and UoME") {
    uoe::block<uoe::uome<>> blk(g, {.d_model = d, .heads = heads,
                                    .select = {.mode = uoe::mode::causal, .top_k = 2, .capacity = 0.5},
                                    .causal = true, .rope = true},
                                uoe::uome<>(g, ffn));
    const float loss = char_step(blk, g, embed, head, batch, seq);
    CHECK(std::isfinite(loss));
    CHECK(loss == Approx(std::log(double(vocabulary))).margin(1.5));
    std::vector<std::string> names;
    visit_parameters(blk, [&](const std::string& name, auto&) { names.push_back(name); });
    for (const char* p : {"norm1.weight", "attention.router.weight", "attention.wq", "attention.wo", "attention.bo",
                          "norm2.weight", "moe.router.weight", "moe.experts.w1", "moe.experts.w2", "moe.bias"}) {
      INFO(p);
      CHECK(std::count(names.begin(), names.end(), std::string(p)) == 1);
      CHECK(grad_norm(blk, p) > 0);
    }
    CHECK(blk.attention().last_selection().slots == seq / 2);
  }
}

TEST_CASE("uoe: on a device backend (emulated) a UoE block equals the CPU, with no host read", "[uoe][device]") {
  for (auto m : {uoe::mode::faithful, uoe::mode::gated, uoe::mode::causal}) {
    auto run = [m](auto backend) {
      using B = decltype(backend);
      using ffn_t = uoe::uome<float, B>;
      const uoe::selection_options sel{.mode = m, .top_k = 2, .capacity = 0.5, .balance_weight = 0.01};
      rng g(41);
      uoe::block<ffn_t, float, B> blk(g, {.d_model = 8, .heads = 4, .select = sel, .causal = true, .rope = true},
                                      ffn_t(g, {.d_model = 8, .d_ff = 16, .experts = 4, .select = sel}));
      rng gx(42);
      const auto x = normal<float>(gx, shape<dyn, dyn, dyn>{3, 8, 8});
      tape t;
      auto xv = t.variable(x.template to<B>());
      const std::size_t reads = metered_device::host_reads();
      auto y = blk(xv);
      t.backward(sum(y * y));
      const std::size_t read = metered_device::host_reads() - reads;
      std::vector<double> out;
      for (const auto* v : {&y.value(), &xv.grad()}) {
        const auto h = v->template to<cpu>();
        out.insert(out.end(), h.data(), h.data() + h.size());
      }
      visit_parameters(blk, [&](const std::string&, auto& p) {
        const auto h = p.grad().template to<cpu>();
        out.insert(out.end(), h.data(), h.data() + h.size());
      });
      const auto tokens = blk.attention().last_selection().token.template to<cpu>();
      std::vector<index_t> selected(tokens.data(), tokens.data() + tokens.size());
      return std::tuple{out, selected, read};
    };
    INFO("mode " << uoe::mode_name(m));
    const auto [on_cpu, cpu_tokens, cpu_reads] = run(cpu{});
    const auto [on_device, device_tokens, device_reads] = run(metered_device{});
    REQUIRE(device_tokens == cpu_tokens);
    REQUIRE(on_cpu.size() == on_device.size());
    for (std::size_t i = 0; i < on_cpu.size(); ++i) REQUIRE(on_device[i] == Approx(on_cpu[i]).epsilon(1e-5).margin(1e-6));
    CHECK(device_reads == 0);
  }
}

TEST_CASE("uoe: UoME plans carry per-token router logits, so moe::routing_stats reads them", "[uoe][stats]") {
  for (auto paradigm : {uoe::paradigm::data, uoe::paradigm::expert}) {
    for (std::size_t patch : {std::size_t{1}, std::size_t{4}}) {
      rng g(51);
      uoe::uome<double> mlp(g, {.d_model = 8, .d_ff = 16, .experts = 4, .paradigm = paradigm,
                                .select = {.mode = uoe::mode::gated, .top_k = 2, .capacity = 0.5, .patch = patch}});
      tape t;
      (void)mlp(t.input(input(52, 2, 8, 8)));
      const auto& plan = mlp.last_routing();
      INFO("paradigm " << (paradigm == uoe::paradigm::data ? "data" : "expert") << ", patch " << patch);
      REQUIRE(plan.logits.defined());
      CHECK(plan.logits.extent(0) == 16);  // one row per token, also when units are patches
      CHECK(plan.logits.extent(1) == 4);
      moe::routing_stats st;
      st.add(plan);
      CHECK(st.assignments() == plan.assignments());
    }
  }
}

TEST_CASE("uoe: cost_of counts the dense layers' FLOPs at full capacity and the layers' parameters", "[uoe][spec]") {
  const std::size_t d = 16, f = 64, seq = 8, heads = 4;
  const uoe::uome_options all{.d_model = d, .d_ff = f, .experts = 4, .select = {.top_k = 4, .capacity = 1.0}};
  CHECK(uoe::cost_of(all, seq).expert_flops == 4 * d * f);  // the dense MLP d -> F -> d
  CHECK(uoe::cost_of(all, seq).router_flops == 2 * d * 4);
  const uoe::smha_options att{.d_model = d, .heads = heads, .select = {.top_k = heads, .capacity = 1.0}};
  CHECK(uoe::cost_of(att, seq).expert_flops == 8 * d * d + 4 * seq * d);  // projections, scores, values
  // Half the capacity halves the MLP's work and the projections, quarters the scores.
  auto half = all;
  half.select.capacity = 0.5;
  CHECK(uoe::cost_of(half, seq).expert_flops == 2 * d * f);
  auto att_half = att;
  att_half.select.capacity = 0.5;
  CHECK(uoe::cost_of(att_half, seq).expert_flops == 4 * d * d + seq * d);
  // Expert selection: top_k slices per token, whatever the capacity.
  auto es = all;
  es.paradigm = uoe::paradigm::expert, es.select.top_k = 2;
  CHECK(uoe::cost_of(es, seq).expert_flops == 2 * d * f);
  // Parameter counts match the layers.
  rng g(61);
  uoe::uome<double> mlp(g, all);
  uoe::smha<double> sm(g, att);
  CHECK(uoe::cost_of(all, seq).total_params == count_parameters(mlp));
  CHECK(uoe::cost_of(att, seq).total_params == count_parameters(sm));
}

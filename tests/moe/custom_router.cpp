// A router and an expert defined outside moekit, from its public API only
// (the example of docs/moe.md, "Your own router and expert"): a hash router
// (no parameters: token t goes to expert hash(t) mod E with gate 1/k), a
// learned cosine router that reuses moekit's aux losses, and an "affine"
// expert. Each plugs into moe::layer and trains.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>

#include <moekit.hpp>
#include <moekit/moe.hpp>

using namespace moekit;

namespace {

// --- a router: hash routing (Roller et al. 2021), k slots per token ----------
template <std::size_t D, std::size_t E, std::size_t K>
struct hash_router {
  static constexpr std::size_t experts_extent = E;  // optional: lets the layer size its bank statically

  std::size_t experts() const { return E; }

  template <class T, class S, class B>
  moe::routing<T, B> route(const var<T, S, B>& x) {
    const std::size_t tokens = x.extent(0);
    tensor<index_t, shape<dyn, dyn>> ids(shape<dyn, dyn>{tokens, K});  // (T, K) on the host
    for (std::size_t t = 0; t < tokens; ++t)
      for (std::size_t j = 0; j < K; ++j)
        ids(t, j) = static_cast<index_t>((std::uint32_t(t * K + j) * 2654435761u >> 7) % E);
    auto gates = constant(full<T, B>(shape<dyn, dyn>{tokens, K}, T(1) / T(K)));  // (T, K), no gradient
    return moe::plan_from_choice(ids.template to<B>(), gates, E);
  }

  template <class V>
  void parameters(V&&) {}  // nothing to learn
};

// --- a learned router: cosine similarity to E learned centroids, top-k ---------
template <std::size_t D, std::size_t E, std::size_t K, class T = float>
struct cosine_router {
  static constexpr std::size_t experts_extent = E;
  parameter<T, shape<D, E>> centroids;  // (D, E)
  moe::aux_loss_options aux{.load_balance_weight = 0.01};

  explicit cosine_router(rng& g) : centroids(normal<T>(g, shape<D, E>{})) {}
  std::size_t experts() const { return E; }

  template <class S>
  moe::routing<T, cpu> route(const var<T, S, cpu>& x) {
    auto norm = sqrt(sum<1>(x * x) + T(1e-6));                  // (T)
    auto logits = matmul(div_cols(x, norm), centroids) * T(4);  // (T, E)
    auto [scores, gates, ids] = softmax_top_k(logits, K);       // (T, E), (T, K), (T, K)
    auto plan = moe::plan_from_choice(ids, gates, E);
    moe::add_aux_losses(plan, logits, scores, ids, aux, "cosine_router");
    return plan;
  }
  template <class V>
  void parameters(V&& visit) {
    visit("centroids", centroids);
  }
};

// --- an expert: y = x · W_e + b_e, one affine map per expert --------------------
template <std::size_t D>
struct affine_expert {
  static constexpr std::size_t d_model = D;

  template <std::size_t E, class T, backend B>
  struct bank {
    parameter<T, shape<dyn, D, D>, B> w;  // (E, D, D)
    parameter<T, shape<dyn, D>, B> b;     // (E, D)

    explicit bank(rng& g, std::size_t e = E)
        : w(normal<T, B>(g, shape<dyn, D, D>{e}, T(0), T(1) / std::sqrt(T(D)))), b(zeros<T, B>(shape<dyn, D>{e})) {}

    /// rows (A, D) grouped by expert -> (A, D).
    template <class S>
    auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
      return add_grouped_rows(grouped_matmul(rows, w, offsets), b, offsets);
    }
    std::size_t experts() const { return w.extent(0); }
    template <class V>
    void parameters(V&& visit) {
      visit("w", w);
      visit("b", b);
    }
  };
};

// Trains `layer` to map x to A·x; returns {first loss, last loss}.
template <class L>
std::pair<double, double> fit_linear_map(L& layer, std::size_t steps) {
  constexpr std::size_t d = L::d_model;
  rng g(1);
  const auto a = normal<float>(g, shape<d, d>{}, 0.f, 0.5f);
  optim::adamw<float> opt(layer, {.lr = 0.01, .weight_decay = 0});
  double first = 0, last = 0;
  for (std::size_t step = 0; step < steps; ++step) {
    const auto x = normal<float>(g, shape<dyn, d>{64});
    tape t;
    auto y = layer(t.input(x));
    auto loss = mse(y, t.input(matmul(x, a)));
    t.backward(loss);
    opt.step();
    opt.zero_grad();
    (step == 0 ? first : last) = loss.value()[0];
  }
  return {first, last};
}

}  // namespace

TEST_CASE("a custom router and expert model moekit's concepts", "[moe][custom]") {
  static_assert(moe::router<hash_router<8, 4, 2>, var<float, shape<dyn, 8>>>);
  static_assert(moe::router<cosine_router<8, 4, 2>, var<float, shape<dyn, 8>>>);
  static_assert(moe::expert<affine_expert<8>>);
  static_assert(moe::experts_extent_v<hash_router<8, 4, 2>> == 4);
}

TEST_CASE("hash router + affine experts train in moe::layer", "[moe][custom]") {
  using layer_t = moe::layer<hash_router<8, 4, 2>, affine_expert<8>>;
  rng g(2);
  layer_t layer(hash_router<8, 4, 2>{}, layer_t::bank_type(g));
  const auto [first, last] = fit_linear_map(layer, 300);
  INFO("loss " << first << " -> " << last);
  REQUIRE(last < 0.05 * first);
  // Every token uses 2 of the 4 experts, each with gate 1/2.
  const auto& plan = layer.last_routing();
  REQUIRE(plan.assignments() == 2 * 64);
  REQUIRE(plan.gate.value()[0] == 0.5f);
}

TEST_CASE("cosine router (with aux loss) + FFN experts train in moe::layer", "[moe][custom]") {
  using layer_t = moe::layer<cosine_router<8, 4, 2>, moe::ffn_expert<8, 16>>;
  rng g(3);
  layer_t layer{cosine_router<8, 4, 2>(g), layer_t::bank_type(g)};
  const auto [first, last] = fit_linear_map(layer, 300);
  INFO("loss " << first << " -> " << last);
  REQUIRE(last < 0.2 * first);
  REQUIRE(layer.last_routing().aux_terms.size() == 1);
  REQUIRE(layer.last_routing().aux_terms[0].name == "load_balance");
}

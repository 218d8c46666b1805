// moekit/coe/coe_layer.hpp — Chain-of-Experts (Wang et al. 2025): C routing
// iterations over ONE expert pool inside one layer. Iteration t routes the
// current hidden state with its own router (or one shared router, re-evaluated)
// and runs the chosen experts through moe::apply_experts:
//
//   x(0) = norm(a)                 (norm::reference; a itself for none / pre_norm)
//   for t = 1..C:
//     in   = norm_t(x(t-1))        (norm::pre_norm; x(t-1) otherwise)
//     y(t) = Σ_j g(t, j) · E_idx(t, j)(in) [+ shared(in)]    one grouped-GEMM pass
//     x(t) = x(t-1) + y(t)         (inner residual; y(t) without it)
//   out  = a + x(C)                (outer residual; x(C) without it)
//
// The reference code (ZihanWang314/CoE, modeling_coe.py) is norm::reference,
// inner residual on, outer residual off, per-iteration routers, softmax gates
// without renormalisation (top_k_options{.renormalize = false}), a
// sequence-level aux loss per router per iteration and the shared expert run
// every iteration. Up-cycled layers (from_moe) use the reference's
// conversion instead: x(t) = x(t-1) + w_t · y(t) for t < C with a learnable
// scalar w_t starting at 0, and out = y(C), so a converted layer starts
// equal to the MoE it came from.
//
// The C plans are kept (last_routing(t)) for statistics; each iteration's aux
// loss rides on its y(t). Routers may compute in fp32 under a bf16 layer
// (moe::cast_router).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/auxiliary_loss.hpp"
#include "../autograd/ops/index.hpp"
#include "../moe/concepts.hpp"
#include "../moe/dispatch.hpp"
#include "../moe/moe_layer.hpp"
#include "../nn/layer.hpp"
#include "../nn/norm.hpp"

namespace moekit::coe {

/// Where the layer normalises.
enum class norm_placement {
  none,       // not at all: the caller normalises (moe::layer's convention)
  reference,  // once before the loop, as the reference code (RMSNorm_post)
  pre_norm,   // each iteration normalises its own input (its own RMSNorm)
};

struct options {
  std::size_t iterations = 2;  // C
  norm_placement norm = norm_placement::reference;
  bool inner_residual = true;   // x(t) = x(t-1) + y(t)
  bool outer_residual = false;  // out = a + x(C)
  bool upcycled = false;        // x(t) = x(t-1) + w_t · y(t) for t < C (w_t from 0), out = y(C)
};

/// C iterations of Router over one bank of Expert. C = dyn: options.iterations.
template <class Router, moe::expert Expert, std::size_t C = dyn, class T = float, backend B = cpu>
class layer {
  static_assert(moe::router<Router, var<T, shape<dyn, Expert::d_model>, B>>,
                "coe::layer: Router does not model moe::router");

 public:
  static constexpr std::size_t d_model = Expert::d_model;
  using bank_type = typename Expert::template bank<moe::experts_extent_v<Router>, T, B>;
  using shared_type = typename Expert::template bank<1, T, B>;
  using plan_type = typename moe::layer<Router, Expert, T, B>::plan_type;
  using norm_type = nn::rms_norm<d_model, T, B>;

  /// routers: C of them, or one shared by every iteration (re-evaluated on
  /// each iteration's input); shared: an always-on expert run every iteration;
  /// d: the model width, needed for the norms when Expert's d_model is dyn.
  layer(std::vector<Router> routers, bank_type experts, std::optional<shared_type> shared = std::nullopt,
        options o = {}, std::size_t d = d_model)
      : routers_(std::move(routers)), experts_(std::move(experts)), shared_(std::move(shared)), o_(o) {
    const std::size_t c = o.iterations;
    if (c == 0 || (C != dyn && c != C))
      throw value_error("coe::layer: iterations = " + std::to_string(c) + (C != dyn ? ", the type says " + std::to_string(C) : ""));
    if (routers_.size() != 1 && routers_.size() != c)
      throw value_error("coe::layer: " + std::to_string(routers_.size()) + " routers for " + std::to_string(c) +
                        " iterations (give one per iteration, or one shared)");
    for (auto& r : routers_)
      if (r.experts() != experts_.experts())
        throw value_error("coe::layer: a router has " + std::to_string(r.experts()) + " experts, the bank " +
                          std::to_string(experts_.experts()));
    const std::size_t norms = o.norm == norm_placement::reference ? 1 : o.norm == norm_placement::pre_norm ? c : 0;
    if (norms > 0 && d == dyn)
      throw value_error("coe::layer: the expert's d_model is dyn: give the model width d (the norms need it)");
    for (std::size_t i = 0; i < norms; ++i) norms_.emplace_back(d);
    if (o.upcycled)
      for (std::size_t t = 0; t + 1 < c; ++t) mix_.emplace_back(zeros<T, B>(shape<1>{}));
    plans_.resize(c);
  }

  /// a (T, D) -> (T, D).
  template <class S>
  var<T, S, B> operator()(const var<T, S, B>& a) {
    const std::size_t c = o_.iterations;
    auto x = o_.norm == norm_placement::reference ? norms_[0](a) : a;  // x(0)
    var<T, S, B> y;
    for (std::size_t t = 0; t < c; ++t) {
      auto in = o_.norm == norm_placement::pre_norm ? norms_[t](x) : x;    // (T, D)
      auto plan = router(t).route(in);
      y = moe::apply_experts(experts_, in, plan);                          // (T, D)
      if (shared_) y = y + moe::apply_to_all(*shared_, in);
      y = add_auxiliary_loss(y, plan.aux_loss);
      plans_[t] = std::move(plan);
      if (o_.upcycled) {
        if (t + 1 < c) x = x + mul_cols(y, gather_rows(mix_[t].w, zeros<index_t, B>(shape<dyn>{y.extent(0)})));  // w_t · y(t)
      } else {
        x = o_.inner_residual ? x + y : y;
      }
    }
    auto out = o_.upcycled ? y : x;
    return o_.outer_residual ? a + out : out;
  }

  std::size_t iterations() const noexcept { return o_.iterations; }
  const options& config() const noexcept { return o_; }
  /// The router of iteration t (the shared one when routers are shared).
  Router& router(std::size_t t) noexcept { return routers_[routers_.size() == 1 ? 0 : t]; }
  bank_type& experts() noexcept { return experts_; }
  /// The plan of iteration t of the last forward.
  const plan_type& last_routing(std::size_t t) const { return plans_.at(t); }
  void train(bool on = true) {
    for (auto& r : routers_) moe::set_training(r, on);
  }

  template <class V>
  void parameters(V&& visit) {
    nn::layer_list<Router> routers{&routers_};
    nn::layer_list<norm_type> norms{&norms_};
    nn::layer_list<mix_scalar> mix{&mix_};
    visit("routers", routers);
    visit("experts", experts_);
    if (shared_) visit("shared", *shared_);
    if (!norms_.empty()) visit("norms", norms);
    if (!mix_.empty()) visit("mix", mix);
  }

 private:
  /// w_t of an up-cycled layer: a learnable scalar.
  struct mix_scalar {
    parameter<T, shape<1>, B> w;
    explicit mix_scalar(tensor<T, shape<1>, B> v) : w(std::move(v)) {}
    template <class V>
    void parameters(V&& visit) {
      visit("w", w);
    }
  };
  std::vector<Router> routers_;
  bank_type experts_;
  std::optional<shared_type> shared_;
  options o_;
  std::vector<norm_type> norms_;
  std::vector<mix_scalar> mix_;
  std::vector<plan_type> plans_;
};

/// The reference's MoE -> CoE up-cycling: C iterations over the MoE's
/// experts (and shared expert), every router initialised from the MoE's,
/// x(t) = x(t-1) + w_t · y(t) with w_t = 0, out = y(C): the converted layer
/// starts equal to the MoE and learns to use the extra iterations.
template <std::size_t C = dyn, class Router, class Expert, class T, class B>
layer<Router, Expert, C, T, B> from_moe(const moe::layer<Router, Expert, T, B>& m, std::size_t iterations = C) {
  std::vector<Router> routers(iterations, m.router());
  options o{.iterations = iterations, .norm = norm_placement::none, .inner_residual = false, .outer_residual = false,
            .upcycled = true};
  return layer<Router, Expert, C, T, B>(std::move(routers), m.experts(), m.shared(), o);
}

}  // namespace moekit::coe

// moekit/moe/expert_choice.hpp — the expert-choice router (Zhou et al. 2022):
// each expert takes its c highest-scoring tokens, c = ceil(cf · T / E), so the
// load is balanced by construction and a token may get 0..E experts.
//
//   scores = softmax(x·W) over experts    // (T, E)
//   gates, tokens = top_c(scoresᵀ)        // (E, c): rows already grouped by expert
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include "../autograd/ops/layout.hpp"
#include "../autograd/ops/matmul.hpp"
#include "../autograd/ops/softmax.hpp"
#include "../autograd/ops/top_k.hpp"
#include "../nn/init.hpp"
#include "routing.hpp"

namespace moekit::moe {

struct expert_choice_options {
  double capacity_factor = 2.0;  // c = ceil(cf · T / E) tokens per expert
};

template <std::size_t D, std::size_t E, class T = float, backend B = cpu>
class expert_choice_router {
 public:
  static constexpr std::size_t experts_extent = E;

  explicit expert_choice_router(rng& g, expert_choice_options o = {}, std::size_t d = D, std::size_t e = E)
      : w_(nn::init_weight<T, B>(g, shape<D, E>::from_extents(std::array{d, e}, "expert_choice_router"), d, e,
                                 nn::init::pytorch_default)),
        o_(o) {
    if (!(o.capacity_factor > 0)) throw value_error("expert_choice_router: capacity_factor must be > 0");
  }

  std::size_t experts() const noexcept { return w_.extent(1); }
  void train(bool = true) noexcept {}

  /// Tokens each expert takes for a batch of `tokens`.
  std::size_t capacity(std::size_t tokens) const noexcept {
    const auto c = static_cast<std::size_t>(std::ceil(o_.capacity_factor * double(tokens) / double(experts())));
    return std::min(std::max<std::size_t>(c, 1), tokens);
  }

  template <class S>
  routing<T, B> route(const var<T, S, B>& x) {
    const std::size_t tokens = x.extent(0), e = experts(), c = capacity(tokens);
    routing<T, B> plan;
    plan.tokens = tokens, plan.experts = e;
    auto logits = matmul(x, w_);  // (T, E)
    plan.logits = shape_cast<shape<dyn, dyn>>(logits.value());
    auto scores = transpose(softmax(logits));  // (E, T)
    auto [vals, idx] = top_k(scores, c);       // (E, c)
    plan.token = idx.reshape(shape<dyn>{e * c});
    plan.gate = reshape(vals, shape<dyn>{e * c});
    // Every expert has c assignments: expert a / c, offsets 0, c, 2c, ...,
    // made on B from the sizes alone (no host loop over device memory).
    plan.expert = tensor<index_t, shape<dyn>, B>(shape<dyn>{e * c});
    kernels<B>::generate(e * c, plan.expert.data(), detail::group_of_position{c});
    plan.offsets = detail::equal_offsets<B>(e, c);
    return plan;
  }

  template <class V>
  void parameters(V&& visit) {
    visit("weight", w_);
  }

 private:
  parameter<T, shape<D, E>, B> w_;  // (D, E)
  expert_choice_options o_;
};

}  // namespace moekit::moe

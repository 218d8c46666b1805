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
#include "../core/host_device.hpp"
#include "../autograd/ops/matmul.hpp"
#include "../autograd/ops/softmax.hpp"
#include "../autograd/ops/top_k.hpp"
#include "../nn/init.hpp"
#include "dispatch.hpp"

namespace moekit::moe {

namespace fn {
/// i -> i / size: the group of position i when every group has `size` members.
struct group_of_position {
  std::size_t size;
  MOEKIT_HOST_DEVICE index_t operator()(std::size_t i) const { return static_cast<index_t>(i / size); }
};
}  // namespace fn

struct expert_choice_options {
  double capacity_factor = 2.0;  // c = ceil(cf · T / E) tokens per expert
};

template <std::size_t D, std::size_t E, class T = float, backend B = cpu>
class expert_choice_router {
 public:
  static constexpr std::size_t experts_extent = E;
  using value_type = T;

  explicit expert_choice_router(rng& g, expert_choice_options o = {}, std::size_t d = D, std::size_t e = E)
      : w_(nn::init_weight<T, B>(g, shape<D, E>::from_extents(std::array{d, e}, "expert_choice_router"), d, e,
                                 nn::init::pytorch_default)),
        o_(o) {
    if (!(o.capacity_factor > 0)) throw value_error("expert_choice_router: capacity_factor must be > 0");
  }

  std::size_t experts() const noexcept { return w_.extent(1); }

  /// Tokens each expert takes for a batch of `tokens`.
  std::size_t capacity(std::size_t tokens) const noexcept {
    const auto c = static_cast<std::size_t>(std::ceil(o_.capacity_factor * double(tokens) / double(experts())));
    return std::min(std::max<std::size_t>(c, 1), tokens);
  }

  template <class S>
  routing<T, B> route(const var<T, S, B>& x) {
    const std::size_t tokens = x.extent(0), e = experts(), c = capacity(tokens);
    auto logits = matmul(x, w_);               // (T, E)
    auto scores = transpose(softmax(logits));  // (E, T)
    auto [vals, idx] = top_k(scores, c);       // (E, c)
    // Triples (token, expert, gate), already grouped by expert: expert a / c.
    auto expert = generate<index_t, B>(shape<dyn>{e * c}, fn::group_of_position{c});  // (E·c)
    auto plan = plan_from_assignments(tokens, e, idx.reshape(shape<dyn>{e * c}), expert,
                                      reshape(vals, shape<dyn>{e * c}));
    plan.logits = shape_cast<shape<dyn, dyn>>(logits.value());
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

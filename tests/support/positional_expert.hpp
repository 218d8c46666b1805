// tests/support/positional_expert.hpp — a plan-aware expert as a user would
// write one: rows·W[e] + P[e, position of the row's token in its sequence].
// It needs each row's token, which only the plan knows (expert_segments).
#pragma once

#include <cstddef>

#include <moekit.hpp>
#include <moekit/moe.hpp>

namespace moekit::testing {

template <std::size_t Dm>
struct positional_expert {
  static constexpr std::size_t d_model = Dm;
  template <std::size_t Ex, class Tv, backend B>
  class bank {
   public:
    explicit bank(rng& g, std::size_t e = Ex, std::size_t seq = 1, std::size_t d = Dm)
        : w_(normal<Tv, B>(g, shape<dyn, dyn, dyn>{e, d, d})), p_(normal<Tv, B>(g, shape<dyn, dyn>{e * seq, d})),
          seq_(seq) {}
    /// rows (A, D) grouped by expert -> (A, D).
    template <class S>
    auto operator()(const var<Tv, S, B>& rows, const moe::expert_segments<B>& seg) {
      tensor<index_t, shape<dyn>, B> at(shape<dyn>{rows.extent(0)});  // (A) row of P for each row
      for (std::size_t a = 0; a < at.size(); ++a)
        at[a] = static_cast<index_t>(static_cast<std::size_t>(seg.expert[a]) * seq_ +
                                     static_cast<std::size_t>(seg.token[a]) % seq_);
      return grouped_matmul(rows, w_, seg.offsets) + gather_rows(p_, at);  // (A, D)
    }
    std::size_t experts() const { return w_.extent(0); }
    template <class V>
    void parameters(V&& visit) {
      visit("w", w_);
      visit("p", p_);
    }
    parameter<Tv, shape<dyn, dyn, dyn>, B> w_;  // (E, D, D)
    parameter<Tv, shape<dyn, dyn>, B> p_;       // (E · seq, D)
    std::size_t seq_;
  };
};

}  // namespace moekit::testing

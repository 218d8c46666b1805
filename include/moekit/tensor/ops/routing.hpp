// moekit/tensor/ops/routing.hpp — the integer steps of MoE routing as tensor
// ops on any backend: a stable sort of (key, value) pairs, a histogram of
// keys, an exclusive scan, and the layout of sorted assignments (token,
// expert, source position), with a capacity applied. On a device each runs
// there (CUB sort, histogram, scan); none reads anything back to the host.
#pragma once

#include <cstddef>
#include <utility>

#include "../tensor.hpp"
#include "creation.hpp"

namespace moekit {

/// The pairs of keys (n) and values (n) stably sorted by key: {keys, values}.
template <class SK, class SV, class B>
std::pair<tensor<index_t, shape<dyn>, B>, tensor<index_t, shape<dyn>, B>> sort_pairs(
    const tensor<index_t, SK, B>& keys, const tensor<index_t, SV, B>& values) {
  static_assert(SK::rank() == 1 && SV::rank() == 1, "sort_pairs: keys and values must have rank 1");
  if (keys.size() != values.size())
    detail::shape_mismatch("sort_pairs", keys.shape().str(), " with ", values.shape().str(), "one value per key");
  const std::size_t n = keys.size();
  tensor<index_t, shape<dyn>, B> k(shape<dyn>{n}), v(shape<dyn>{n});
  kernels<B>::sort_pairs(n, keys.data(), values.data(), k.data(), v.data());
  return {std::move(k), std::move(v)};
}

/// (bins) counts of each key in [0, bins); keys outside are not counted.
template <class S, class B>
tensor<index_t, shape<dyn>, B> histogram(const tensor<index_t, S, B>& keys, std::size_t bins) {
  tensor<index_t, shape<dyn>, B> counts(shape<dyn>{bins});
  kernels<B>::histogram(keys.size(), keys.data(), bins, counts.data());
  return counts;
}

/// (n) out[i] = x[0] + ... + x[i-1], out[0] = 0.
template <class T, class S, class B>
tensor<T, shape<dyn>, B> exclusive_scan(const tensor<T, S, B>& x) {
  tensor<T, shape<dyn>, B> out(shape<dyn>{x.size()});
  kernels<B>::exclusive_scan(x.size(), x.data(), out.data());
  return out;
}

/// The places of sorted assignments, as a routing plan stores them.
template <backend B>
struct assignment_places {
  tensor<index_t, shape<dyn>, B> token;   // (kept) the token of each kept assignment
  tensor<index_t, shape<dyn>, B> expert;  // (kept) its expert, non-decreasing
  tensor<index_t, shape<dyn>, B> source;  // (kept) its position t·k + j in the (tokens, k) choice
};

/// n = tokens · k assignments stably sorted by expert: sorted_experts (n) and
/// sorted_slots (n) = j·tokens + t (token t's j-th choice); offsets (E + 1)
/// bound each expert's run. With capacity > 0 an assignment of rank r in its
/// run is kept only if r < capacity, at kept_offsets[e] + r (kept_offsets: the
/// scan of min(count, capacity), `kept` in all); with capacity 0 every
/// assignment is kept and kept_offsets is offsets.
template <class B>
assignment_places<B> assignment_layout(std::size_t tokens, std::size_t k, const tensor<index_t, shape<dyn>, B>& sorted_experts,
                                       const tensor<index_t, shape<dyn>, B>& sorted_slots,
                                       const tensor<index_t, shape<dyn>, B>& offsets,
                                       const tensor<index_t, shape<dyn>, B>& kept_offsets, std::size_t capacity,
                                       std::size_t kept) {
  assignment_places<B> p{tensor<index_t, shape<dyn>, B>(shape<dyn>{kept}),
                         tensor<index_t, shape<dyn>, B>(shape<dyn>{kept}),
                         tensor<index_t, shape<dyn>, B>(shape<dyn>{kept})};
  kernels<B>::assignment_layout(sorted_experts.size(), tokens, k, sorted_experts.data(), sorted_slots.data(),
                                offsets.data(), kept_offsets.data(), capacity, p.token.data(), p.expert.data(),
                                p.source.data());
  return p;
}

}  // namespace moekit

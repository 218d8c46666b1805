// The public attention ops on the GPU against the CPU backend: split_heads /
// merge_heads (exact: copies), rope at per-head positions, masked_softmax with
// causal-at-positions + key lengths + key padding (rows that see nothing give
// 0), and scaled_dot_product_attention over per-head selected tokens, forward
// and backward through the tape (fp32: rtol 1e-4 plus 1e-5 of the largest value).
// Without a device every case prints "SKIPPED: no CUDA device" and returns.
#include <catch2/catch.hpp>

#include "skip.cuh"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/autograd/ops/attention.hpp>
#include <moekit/autograd/ops/attention_mask.hpp>
#include <moekit/autograd/ops/heads.hpp>
#include <moekit/autograd/ops/rope.hpp>
#include <moekit/cuda.hpp>

#include "compare.cuh"

// Not `using namespace moekit`: CUDA's headers declare a global `half` and a namespace `cuda`.
namespace mk = moekit;
using gpu = mk::cuda;
using mk::dyn;
using mk::index_t;
using mk::shape;

namespace {

using moekit::testing::host_values;
using moekit::testing::require_close;

template <class S>
mk::tensor<float, S> random_normal(std::uint64_t seed, const S& s) {
  mk::rng g(seed);
  return mk::normal<float>(g, s);
}

/// Per head keep 5 of 8 tokens, scrambled: (batch 2 · heads 2, 5) original positions.
mk::tensor<index_t, shape<dyn, dyn>> selection() {
  return mk::from_values<index_t>(shape<dyn, dyn>{4, 5},
                                  {7, 2, 5, 0, 3, 1, 6, 4, 3, 2, 3, 4, 5, 6, 7, 6, 0, 1, 7, 4});
}

struct attention_result {
  std::vector<double> split, merged, roped, weights, y, dx, dk;
};

/// The ops on backend B, from host inputs; results on the host.
template <class B>
attention_result run_ops() {
  attention_result r;
  mk::tape t;
  // x (batch 2, 8 tokens, 2 heads · 4), and a second input for the keys.
  auto x = t.variable(random_normal(1, shape<dyn, dyn, dyn>{2, 8, 8}).template to<B>());
  auto xk = t.variable(random_normal(2, shape<dyn, dyn, dyn>{2, 8, 8}).template to<B>());
  auto h = mk::split_heads(x, 2);  // (4, 8, 4)
  r.split = host_values(h.value());
  r.merged = host_values(mk::merge_heads(h, 2).value());
  // Tokens selected per head: the first 5 of each head's 8, at the positions `selection` names.
  const auto pos = selection().template to<B>();
  auto hk = mk::split_heads(xk, 2);
  auto sel = mk::split<1>(h, {5, 3})[0];   // (4, 5, 4)
  auto selk = mk::split<1>(hk, {5, 3})[0];  // (4, 5, 4)
  auto q = mk::rope(sel, pos, 100.0), k = mk::rope(selk, pos, 100.0);
  r.roped = host_values(q.value());
  // Original sequence of 8: lengths (8, 3) per batch row, position 6 of batch row 0 padding.
  mk::tensor<std::uint8_t, shape<dyn, dyn>> flags(shape<dyn, dyn>{2, 8});
  for (std::size_t i = 0; i < flags.size(); ++i) flags[i] = i == 6;
  mk::attention_mask<mk::cpu> host_mask{.causal = true,
                                        .key_lengths = mk::from_values<index_t>(shape<dyn>{2}, {8, 3}),
                                        .key_padding = flags,
                                        .query_positions = selection(),
                                        .key_positions = selection()};
  const auto mask = host_mask.template to<B>();
  r.weights = host_values(mk::masked_softmax(mk::bmm<mk::trans::b>(q, k).value(), mask));
  auto y = mk::scaled_dot_product_attention(q, k, selk, mask);  // (4, 5, 4)
  r.y = host_values(y.value());
  t.backward(mk::sum(y * y));
  r.dx = host_values(x.grad());
  r.dk = host_values(xk.grad());
  return r;
}

}  // namespace

TEST_CASE("cuda attention ops: split/merge heads, rope at positions, masked softmax and attention over "
          "selected tokens match the CPU",
          "[cuda][attention]") {
  MOEKIT_SKIP_WITHOUT_CUDA_DEVICE();
  const auto want = run_ops<mk::cpu>();
  const auto got = run_ops<gpu>();
  require_close(got.split, want.split, "split_heads", 0, 0);
  require_close(got.merged, want.merged, "merge_heads", 0, 0);
  require_close(got.roped, want.roped, "rope at positions", 1e-5, 1e-6);
  require_close(got.weights, want.weights, "masked_softmax");
  require_close(got.y, want.y, "scaled_dot_product_attention");
  require_close(got.dx, want.dx, "dx");
  require_close(got.dk, want.dk, "dk");
  // Head row 2 (batch row 1, length 3) selected positions 3..7 only: its weights are 0, not NaN.
  for (double w : got.weights) REQUIRE(std::isfinite(w));
  for (std::size_t i = 2 * 25; i < 3 * 25; ++i) REQUIRE(got.weights[i] == 0.0);
}

// moekit/tensor/ops/attention_mask.hpp — which (query, key) pairs of attention
// scores are hidden, and applying that to scores (rows, queries, keys), where
// rows are batch·heads as split_heads lays them out (row b·H + h).
//
// A mask hides key j from query i of score row r when
//   causal:      position(key j) > position(query i)
//   key_lengths: position(key j) >= key_lengths[group]        (padding at the end)
//   key_padding: key_padding[group, position(key j)] != 0     (a flag per key, as torch)
// Positions default to the indices 0..queries-1 and 0..keys-1; given, they
// are the tokens' ORIGINAL positions (say of tokens selected per head and
// compacted), so a selected subsequence keeps its causal order and its
// padding. Every per-row tensor of the mask — lengths (G), padding (G, n),
// positions (G, queries) and (G, keys) — has a first extent G dividing the
// rows, and score row r reads its row r / (rows/G): G = batch shares one row
// among a batch row's heads, G = batch·H gives every head its own, G = 1 one
// for all.
//
// A query that sees no key at all attends to nothing: masked_softmax gives its
// row zero weights (not NaN) and no gradient flows through it.
//
// Host masks are checked (shapes always; lengths and positions >= 0, key
// positions inside key_padding's width); a device mask's values are not
// (that would need a sync): there a negative length masks no key, and a key
// position outside key_padding's width counts as padding.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "../../core/host_device.hpp"
#include "../tensor.hpp"
#include "elementwise.hpp"
#include "softmax.hpp"

namespace moekit {

/// Which keys the queries of one attention call may not attend to; undefined
/// tensors mean "none". Build it on the host and move it with to<B>() (or
/// let a device op taking a host mask check and copy it).
template <backend B = cpu>
struct attention_mask {
  bool causal = false;                                        // key position > query position is hidden
  tensor<index_t, shape<dyn>, B> key_lengths{};               // (G): key positions >= length are padding
  tensor<std::uint8_t, shape<dyn, dyn>, B> key_padding{};     // (G, n): nonzero = padding, indexed by key position
  tensor<index_t, shape<dyn, dyn>, B> query_positions{};      // (G, queries); default 0..queries-1
  tensor<index_t, shape<dyn, dyn>, B> key_positions{};        // (G, keys); default 0..keys-1

  /// Whether anything is hidden at all (positions alone hide nothing).
  bool any() const noexcept { return causal || key_lengths.defined() || key_padding.defined(); }

  /// The same mask on backend B2 (undefined tensors stay undefined).
  template <backend B2>
  attention_mask<B2> to() const {
    attention_mask<B2> out;
    out.causal = causal;
    if (key_lengths.defined()) out.key_lengths = detail::to_backend<B2>(key_lengths);
    if (key_padding.defined()) out.key_padding = detail::to_backend<B2>(key_padding);
    if (query_positions.defined()) out.query_positions = detail::to_backend<B2>(query_positions);
    if (key_positions.defined()) out.key_positions = detail::to_backend<B2>(key_positions);
    return out;
  }
};

namespace fn {
/// A mask as raw pointers and row groups, for the functors below (host or device).
struct attention_mask_rule {
  std::size_t queries, keys;
  bool causal;
  const index_t* query_positions;  // (rows / query_group, queries) or null
  std::size_t query_group;
  const index_t* key_positions;  // (rows / key_group, keys) or null
  std::size_t key_group;
  const index_t* lengths;  // (rows / length_group) or null
  std::size_t length_group;
  const std::uint8_t* padding;  // (rows / padding_group, padding_width) or null
  std::size_t padding_group, padding_width;

  MOEKIT_HOST_DEVICE std::int64_t query_position(std::size_t r, std::size_t i) const {
    return query_positions ? query_positions[r / query_group * queries + i] : static_cast<std::int64_t>(i);
  }
  MOEKIT_HOST_DEVICE std::int64_t key_position(std::size_t r, std::size_t j) const {
    return key_positions ? key_positions[r / key_group * keys + j] : static_cast<std::int64_t>(j);
  }
  /// Whether query i of score row r may not see key j.
  MOEKIT_HOST_DEVICE bool masked(std::size_t r, std::size_t i, std::size_t j) const {
    const std::int64_t k = key_position(r, j);
    if (causal && k > query_position(r, i)) return true;
    // Unsigned, as a length is a count: a negative length (unchecked on a device) masks nothing.
    if (lengths && static_cast<std::uint64_t>(k) >=
                       static_cast<std::uint64_t>(static_cast<std::int64_t>(lengths[r / length_group])))
      return true;
    if (padding) {
      if (k < 0 || static_cast<std::uint64_t>(k) >= padding_width) return true;
      return padding[r / padding_group * padding_width + static_cast<std::size_t>(k)] != 0;
    }
    return false;
  }
  /// Whether query i of row r may attend to no key at all (stops at its first visible key).
  MOEKIT_HOST_DEVICE bool row_empty(std::size_t r, std::size_t i) const {
    for (std::size_t j = 0; j < keys; ++j)
      if (!masked(r, i, j)) return false;
    return true;
  }
  /// Whether some query may see no key (only causal on indices never empties a row).
  bool may_empty_rows() const noexcept {
    return lengths || padding || query_positions || key_positions || keys == 0;
  }
};

/// Per (rows, queries) query: 1, or 0 where every key is masked.
template <class T>
struct attention_row_keep {
  attention_mask_rule rule;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    return rule.row_empty(i / rule.queries, i % rule.queries) ? T(0) : T(1);
  }
};

/// out (rows, queries, keys)[i]: `fill` where masked, else x[i] (0 where x is
/// null); across a query row with nothing visible (keep 0), 0 when
/// `zero_empty_rows`, else x[i]. `keep` is null when no row can be empty.
template <class T>
struct attention_mask_fill {
  attention_mask_rule rule;
  const T* x;
  const T* keep;
  T fill;
  bool zero_empty_rows;
  MOEKIT_HOST_DEVICE T operator()(std::size_t i) const {
    const T v = x ? x[i] : T(0);
    const std::size_t j = i % rule.keys, qi = i / rule.keys % rule.queries, r = i / rule.keys / rule.queries;
    if (keep && keep[r * rule.queries + qi] == T(0)) return zero_empty_rows ? T(0) : v;
    return rule.masked(r, qi, j) ? fill : v;
  }
};
}  // namespace fn

namespace detail {
/// The group (rows per tensor row) of a per-row mask tensor with first extent
/// `groups`; throws unless groups divides rows.
inline std::size_t attention_mask_group(const char* op, const char* name, const std::string& tensor_shape,
                                        std::size_t groups, std::size_t rows, const std::string& scores) {
  if (groups == 0 || rows % groups != 0)
    throw shape_error(std::string(op) + ": " + name + " " + tensor_shape + " for scores " + scores +
                      ": its first extent must divide the " + std::to_string(rows) + " score rows");
  return rows / groups;
}

/// Checks m against scores (rows, queries, keys) (values too where m is on the
/// host) and returns its rule.
template <class BM>
fn::attention_mask_rule attention_mask_rule(const char* op, const attention_mask<BM>& m, std::size_t rows,
                                            std::size_t queries, std::size_t keys) {
  const std::string scores =
      "(" + std::to_string(rows) + ", " + std::to_string(queries) + ", " + std::to_string(keys) + ")";
  fn::attention_mask_rule rule{queries, keys, m.causal, nullptr, 1, nullptr, 1, nullptr, 1, nullptr, 1, 0};
  auto positions = [&](const char* name, const tensor<index_t, shape<dyn, dyn>, BM>& p, std::size_t n,
                       const index_t*& data, std::size_t& group) {
    if (!p.defined()) return;
    group = attention_mask_group(op, name, p.shape().str(), p.extent(0), rows, scores);
    if (p.extent(1) != n)
      throw shape_error(std::string(op) + ": " + name + " " + p.shape().str() + " for scores " + scores +
                        ": needs " + std::to_string(n) + " positions per row");
    if constexpr (BM::host_accessible)
      for (std::size_t i = 0; i < p.size(); ++i)
        if (p[i] < 0)
          throw value_error(std::string(op) + ": " + name + " holds the negative position " + std::to_string(p[i]));
    data = p.data();
  };
  positions("query_positions", m.query_positions, queries, rule.query_positions, rule.query_group);
  positions("key_positions", m.key_positions, keys, rule.key_positions, rule.key_group);
  if (m.key_lengths.defined()) {
    rule.length_group = attention_mask_group(op, "key_lengths", m.key_lengths.shape().str(),
                                             m.key_lengths.extent(0), rows, scores);
    if constexpr (BM::host_accessible)
      for (std::size_t b = 0; b < m.key_lengths.size(); ++b)
        if (m.key_lengths[b] < 0)
          throw value_error(std::string(op) + ": key length " + std::to_string(m.key_lengths[b]) + " of row " +
                            std::to_string(b) + " is negative");
    rule.lengths = m.key_lengths.data();
  }
  if (m.key_padding.defined()) {
    const auto& p = m.key_padding;
    rule.padding_group = attention_mask_group(op, "key_padding", p.shape().str(), p.extent(0), rows, scores);
    rule.padding_width = p.extent(1);
    if (!m.key_positions.defined() && p.extent(1) != keys)
      throw shape_error(std::string(op) + ": key_padding " + p.shape().str() + " for scores " + scores +
                        ": needs one flag per key (" + std::to_string(keys) + ")");
    if constexpr (BM::host_accessible)
      if (m.key_positions.defined())
        for (std::size_t i = 0; i < m.key_positions.size(); ++i)
          if (static_cast<std::size_t>(m.key_positions[i]) >= p.extent(1))
            throw value_error(std::string(op) + ": key position " + std::to_string(m.key_positions[i]) +
                              " is outside key_padding " + p.shape().str());
    rule.padding = p.data();
  }
  return rule;
}

template <class S>
std::array<std::size_t, 3> score_extents(const S& s) {
  static_assert(S::rank() == 3, "attention mask: scores must have rank 3 (batch·heads, queries, keys)");
  return {s.extent(0), s.extent(1), s.extent(2)};
}

/// (rows, queries) keep flags of `rule`, or an undefined tensor where no row can be empty.
template <class T, class B>
tensor<T, shape<dyn, dyn>, B> attention_keep(const fn::attention_mask_rule& rule, std::size_t rows) {
  if (!rule.may_empty_rows()) return {};
  tensor<T, shape<dyn, dyn>, B> keep(shape<dyn, dyn>{rows, rule.queries});
  if (keep.size() != 0) kernels<B>::generate(keep.size(), keep.data(), fn::attention_row_keep<T>{rule});
  return keep;
}

/// out[i] = attention_mask_fill{rule, x, keep, fill, zero_empty_rows}(i) over `s`.
template <class T, class S, class B>
tensor<T, S, B> attention_fill(const S& s, const fn::attention_mask_rule& rule, const T* x,
                               const tensor<T, shape<dyn, dyn>, B>& keep, T fill, bool zero_empty_rows) {
  tensor<T, S, B> out(s);
  if (out.size() != 0)
    kernels<B>::generate(out.size(), out.data(),
                         fn::attention_mask_fill<T>{rule, x, keep.defined() ? keep.data() : nullptr, fill,
                                                    zero_empty_rows});
  return out;
}
}  // namespace detail

/// (rows, queries): 1 where query i of row r sees some key, 0 where it sees none.
template <class T, class B>
tensor<T, shape<dyn, dyn>, B> attention_row_keep(const attention_mask<B>& m, std::size_t rows, std::size_t queries,
                                                 std::size_t keys) {
  const auto rule = detail::attention_mask_rule("attention_row_keep", m, rows, queries, keys);
  tensor<T, shape<dyn, dyn>, B> keep(shape<dyn, dyn>{rows, queries});
  if (keep.size() != 0) kernels<B>::generate(keep.size(), keep.data(), fn::attention_row_keep<T>{rule});
  return keep;
}

/// The additive mask (rows, queries, keys): 0 where visible, −inf where hidden,
/// and 0 across a query row that sees no key (zero those rows' weights with
/// attention_row_keep after the softmax, or use masked_softmax).
template <class T, class B>
tensor<T, shape<dyn, dyn, dyn>, B> attention_mask_bias(const attention_mask<B>& m, std::size_t rows,
                                                       std::size_t queries, std::size_t keys) {
  const auto rule = detail::attention_mask_rule("attention_mask_bias", m, rows, queries, keys);
  const auto keep = detail::attention_keep<T, B>(rule, rows);
  return detail::attention_fill<T>(shape<dyn, dyn, dyn>{rows, queries, keys}, rule, static_cast<const T*>(nullptr),
                                   keep, -std::numeric_limits<T>::infinity(), false);
}

/// scores (rows, queries, keys) + attention_mask_bias: −inf where hidden, the
/// scores elsewhere (rows that see no key keep their scores).
template <class T, class S, class B>
tensor<T, S, B> mask_scores(const tensor<T, S, B>& scores, const attention_mask<B>& m) {
  const auto [rows, queries, keys] = detail::score_extents(scores.shape());
  const auto rule = detail::attention_mask_rule("mask_scores", m, rows, queries, keys);
  const auto keep = detail::attention_keep<T, B>(rule, rows);
  return detail::attention_fill<T>(scores.shape(), rule, scores.data(), keep, -std::numeric_limits<T>::infinity(),
                                   false);
}
/// dscores for mask_scores: dy, 0 where hidden (in rows that see some key).
template <class T, class S, class B>
tensor<T, S, B> mask_scores_backward(const tensor<T, S, B>& dy, const attention_mask<B>& m) {
  const auto [rows, queries, keys] = detail::score_extents(dy.shape());
  const auto rule = detail::attention_mask_rule("mask_scores_backward", m, rows, queries, keys);
  const auto keep = detail::attention_keep<T, B>(rule, rows);
  return detail::attention_fill<T>(dy.shape(), rule, dy.data(), keep, T(0), false);
}

/// Softmax over the keys of scores (rows, queries, keys) with hidden keys
/// weighted 0; a query that sees no key gets all-zero weights (not NaN).
/// Without anything hidden (m.any() false) it is softmax(scores).
template <class T, class S, class B>
tensor<T, S, B> masked_softmax(const tensor<T, S, B>& scores, const attention_mask<B>& m) {
  const auto [rows, queries, keys] = detail::score_extents(scores.shape());
  const auto rule = detail::attention_mask_rule("masked_softmax", m, rows, queries, keys);
  if (!m.any()) return softmax(scores);
  const auto keep = detail::attention_keep<T, B>(rule, rows);
  // Rows that see nothing get scores 0 (never a row of −inf), then weights 0.
  auto y = softmax(detail::attention_fill<T>(scores.shape(), rule, scores.data(), keep,
                                             -std::numeric_limits<T>::infinity(), true));
  return keep.defined() ? mul_cols(y, keep) : y;
}
/// dscores for y = masked_softmax(scores, m): softmax's backward, which is 0
/// wherever y is (hidden keys, empty rows).
template <class T, class SY, class SD, class B>
tensor<T, SY, B> masked_softmax_backward(const tensor<T, SY, B>& y, const tensor<T, SD, B>& dy) {
  return softmax_backward(y, dy);
}

}  // namespace moekit

// moekit/merge/align.hpp — permutation alignment of an expert bank's weight
// sets (MC-SMoE step 1, paper notes §1.3). The hidden units of an expert can
// be reordered without changing its function, as long as every matrix that
// touches the hidden axis moves with the same permutation. Before averaging
// experts, each weight set is reordered so that its hidden unit j matches
// hidden unit j of a reference set as closely as possible.
//
//   auto perms = merge::align_bank(layer.experts());        // weight matching to set 0; perms[t] per set
//   auto by_act = merge::align_layer(layer, {.method = merge::align_method::activation}, x);  // x (N, D)
//   auto costs = merge::weight_matching_costs(bank, 0, 3);  // (F, F), what align_bank maximises
//   merge::apply_permutation(bank, 3, perm);                // set 3's unit j := its old unit perm[j]
//
// The matrices come from the bank's hidden_weights(visit): FFN banks w1
// (G, D, F) by column, b1 (G, F) by entry, w2 (G, F, D) by row; SwiGLU banks
// w_gate and w_up (G, D, F) by column (gate and up move together) and w_down
// (G, F, D) by row. Any other bank whose hidden_weights lists its matrices
// with their hidden axes works with weight matching and apply_permutation.
//
// Weight matching: costs[a][b] = Σ over the hidden matrices of the inner
// product of hidden unit a of the reference with hidden unit b of set t
// (e.g. FFN: W1_rᵀ·W1_t + b1_r ⊗ b1_t + W2_r·W2_tᵀ, (F, F)), one GEMM per
// matrix; the assignment maximises the total.
// Activation matching: on calibration rows x (N, D) (the caller picks them,
// e.g. the tokens routed to the reference or to t), the hidden activations
// of both sets — FFN act(x·W1 + b1), SwiGLU silu(x·Wg) ⊙ (x·Wu) — and their
// Pearson correlation costs[a][b] = cov(h_r[:, a], h_t[:, b]) /
// (std_r[a]·std_t[b] + 1e-7) (population moments), maximised.
// The assignment is merge::linear_sum_assignment (assignment.hpp).
//
// apply_permutation moves the value and the accumulated gradient of every
// hidden matrix of the set (an optimizer's moment buffers are not reached:
// align before training, or reset the optimizer). The bank's outputs and the
// gradients of its inputs are unchanged, up to the rounding of the GEMMs'
// reordered sums over the hidden axis.
//
// Backends: float and double weights. On host-accessible backends (cpu) the
// weights are read and permuted in place; on a device backend (cuda,
// emulated_device) each set's matrices are copied to the host and the
// permuted values copied back into the same device storage. Calibration rows
// may live on any backend (copied to the host).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../backend/cpu/gemm.hpp"
#include "../core/error.hpp"
#include "../moe/expert_bank.hpp"
#include "../moe/moe_layer.hpp"
#include "../tensor/tensor.hpp"
#include "assignment.hpp"

namespace moekit::merge {

/// perm[j] = the old hidden unit that moves to position j.
using permutation = std::vector<std::size_t>;

/// How the cost of matching two hidden units is measured.
enum class align_method { weight, activation };

struct align_options {
  align_method method = align_method::weight;
  std::size_t reference = 0;  // the weight set every other set is aligned to
  /// Activation matching on an FFN-like bank that does not carry its
  /// activation (moe::ffn_expert banks do: Bank::act, which wins).
  std::optional<moe::activation> activation = std::nullopt;
};

namespace detail {

/// A set's slice of a stacked matrix seen as (outer, F, inner): the hidden
/// axis in the middle, everything before it (after the set axis) as outer.
struct hidden_layout {
  std::size_t outer = 1, hidden = 0, inner = 1;
  std::size_t size() const noexcept { return outer * hidden * inner; }
};

template <class P>
hidden_layout layout_of(const P& p, std::size_t axis, std::string_view op, std::string_view name) {
  constexpr std::size_t rank = std::remove_cvref_t<P>::rank();
  if (axis < 1 || axis >= rank)
    throw value_error(std::string(op) + ": " + std::string(name) + " " + p.value().shape().str() + ": hidden axis " +
                      std::to_string(axis) + " is not one of axes 1.." + std::to_string(rank - 1));
  hidden_layout l;
  for (std::size_t i = 1; i < rank; ++i) {
    if (i < axis) l.outer *= p.extent(i);
    else if (i == axis) l.hidden = p.extent(i);
    else l.inner *= p.extent(i);
  }
  return l;
}

/// One weight set's elements of a parameter (value or gradient) readable and
/// writable on the host: the memory itself on a host-accessible backend, a
/// copy on a device (store() writes it back).
template <class T, class S, class B>
class host_slice {
 public:
  host_slice(const tensor<T, S, B>& t, std::size_t set, std::size_t count) : t_(t), offset_(set * count), count_(count) {
    if constexpr (B::host_accessible) {
      data_ = t.data() + offset_;
    } else {
      static_assert(transferable<B, cpu> && transferable<cpu, B>,
                    "merge::align: the weights' backend cannot copy to and from the host");
      copy_.resize(count);
      transfer<B, cpu>::copy(t.data() + offset_, copy_.data(), count * sizeof(T));
      data_ = copy_.data();
    }
  }
  host_slice(const host_slice&) = delete;  // data_ may point into copy_
  host_slice& operator=(const host_slice&) = delete;

  T* data() noexcept { return data_; }
  void store() {
    if constexpr (!B::host_accessible) transfer<cpu, B>::copy(copy_.data(), t_.data() + offset_, count_ * sizeof(T));
  }

 private:
  tensor<T, S, B> t_;
  std::size_t offset_, count_;
  T* data_ = nullptr;
  std::vector<T> copy_;
};

template <class T, class S, class B>
host_slice<T, S, B> slice_of(const tensor<T, S, B>& t, std::size_t set, std::size_t count) {
  return host_slice<T, S, B>(t, set, count);
}

template <class P>
using value_type_of = typename std::remove_cvref_t<P>::value_type;

inline void check_set(std::string_view op, std::size_t set, std::size_t sets, std::string_view what) {
  if (set >= sets)
    throw value_error(std::string(op) + ": " + std::string(what) + " " + std::to_string(set) + " out of range: the bank has " +
                      std::to_string(sets) + " weight sets");
}

/// The hidden width F shared by every hidden matrix of the bank.
template <class Bank>
std::size_t hidden_units(Bank& bank, std::string_view op) {
  std::size_t f = 0;
  bool first = true;
  bank.hidden_weights([&](std::string_view name, auto& p, std::size_t axis) {
    const hidden_layout l = layout_of(p, axis, op, name);
    if (first) f = l.hidden, first = false;
    else if (l.hidden != f)
      throw shape_error(std::string(op) + ": " + std::string(name) + " " + p.value().shape().str() + " has " +
                        std::to_string(l.hidden) + " hidden units along axis " + std::to_string(axis) +
                        ", the bank's first hidden matrix " + std::to_string(f));
  });
  if (first) throw value_error(std::string(op) + ": the bank lists no hidden matrices");
  return f;
}

/// C (F, F) += Σ_{o, y} R[o, a, y] · U[o, b, y] for one set pair's (outer, F, inner) slices.
template <class T>
void add_unit_products(const hidden_layout& l, const T* r, const T* u, T* c) {
  using moekit::detail::cpu_gemm;
  const std::size_t f = l.hidden;
  if (l.inner == 1) {  // units are columns of an (outer, F) matrix: Rᵀ·U
    cpu_gemm::gemm(true, false, f, f, l.outer, T(1), r, f, u, f, T(1), c, f);
    return;
  }
  for (std::size_t o = 0; o < l.outer; ++o)  // units are rows of (F, inner) matrices: R·Uᵀ
    cpu_gemm::gemm(false, true, f, f, l.inner, T(1), r + o * f * l.inner, l.inner, u + o * f * l.inner, l.inner, T(1),
                   c, f);
}

/// out[o, j, y] = in[o, perm[j], y] over one (outer, F, inner) slice, in place.
template <class T>
void permute_units(const hidden_layout& l, std::span<const std::size_t> perm, T* data, std::vector<T>& scratch) {
  scratch.assign(data, data + l.size());
  for (std::size_t o = 0; o < l.outer; ++o)
    for (std::size_t j = 0; j < l.hidden; ++j) {
      const T* from = scratch.data() + (o * l.hidden + perm[j]) * l.inner;
      std::copy(from, from + l.inner, data + (o * l.hidden + j) * l.inner);
    }
}

/// Rows x (N, D) on the host as T, row-major.
template <class T, class X>
std::vector<T> host_rows(const X& x, std::size_t d, std::string_view op) {
  using XT = std::remove_cvref_t<X>;
  static_assert(XT::rank() == 2, "merge::align: calibration rows must be a rank-2 tensor (N, D)");
  if (x.extent(1) != d)
    throw shape_error(std::string(op) + ": calibration rows " + x.shape().str() + " do not have the bank's " +
                      std::to_string(d) + " input features");
  if (x.extent(0) < 2)
    throw value_error(std::string(op) + ": calibration rows " + x.shape().str() +
                      ": need at least 2 rows for a correlation");
  auto host = moekit::detail::to_backend<cpu>(x);
  return std::vector<T>(host.data(), host.data() + host.size());
}

/// The hidden activations (N, F) of weight set `set` on rows x (N, D).
template <class Bank, class T>
std::vector<T> hidden_activations(Bank& bank, std::size_t set, const std::vector<T>& x, std::size_t n, std::size_t d,
                                  std::optional<moe::activation> act, std::string_view op) {
  using moekit::detail::cpu_gemm;
  if constexpr (requires { bank.w_gate(); bank.w_up(); }) {
    const std::size_t f = bank.w_gate().extent(2);
    auto wg = slice_of(bank.w_gate().value(), set, d * f);
    auto wu = slice_of(bank.w_up().value(), set, d * f);
    std::vector<T> gate(n * f), up(n * f);  // (N, F) each
    cpu_gemm::gemm(false, false, n, f, d, T(1), x.data(), d, wg.data(), f, T(0), gate.data(), f);
    cpu_gemm::gemm(false, false, n, f, d, T(1), x.data(), d, wu.data(), f, T(0), up.data(), f);
    const moekit::fn::silu_fast silu;
    for (std::size_t k = 0; k < n * f; ++k) gate[k] = silu(gate[k]) * up[k];
    return gate;
  } else if constexpr (requires { bank.w1(); bank.b1(); }) {
    moe::activation a;
    if constexpr (requires { std::remove_cvref_t<Bank>::act; }) a = std::remove_cvref_t<Bank>::act;
    else if (act) a = *act;
    else
      throw value_error(std::string(op) +
                        ": activation matching on an FFN bank needs its activation: set align_options::activation "
                        "(or call align_layer, which takes it from the layer's expert spec)");
    const std::size_t f = bank.w1().extent(2);
    auto w1 = slice_of(bank.w1().value(), set, d * f);
    std::vector<T> h(n * f);  // (N, F)
    cpu_gemm::gemm(false, false, n, f, d, T(1), x.data(), d, w1.data(), f, T(0), h.data(), f);
    if (bank.b1().value().defined()) {
      auto b1 = slice_of(bank.b1().value(), set, f);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < f; ++j) h[i * f + j] += b1.data()[j];
    }
    auto apply = [&](auto fn) {
      for (T& v : h) v = fn(v);
    };
    switch (a) {
      case moe::activation::relu: apply(typename moe::detail::activation_fn<moe::activation::relu>::forward{}); break;
      case moe::activation::silu: apply(typename moe::detail::activation_fn<moe::activation::silu>::forward{}); break;
      case moe::activation::gelu: apply(typename moe::detail::activation_fn<moe::activation::gelu>::forward{}); break;
    }
    return h;
  } else {
    static_assert(sizeof(Bank) == 0, "merge::align: activation matching knows ffn_expert and swiglu_expert banks");
    return {};
  }
}

/// The matrix that takes the expert's input rows: w_gate (SwiGLU) or w1 (FFN), (G, D, F).
template <class Bank>
auto& input_matrix(Bank& bank) {
  if constexpr (requires { bank.w_gate(); }) return bank.w_gate();
  else return bank.w1();
}

}  // namespace detail

/// The bank's hidden width F (every hidden matrix must agree; shape_error if not).
template <class Bank>
std::size_t hidden_units(Bank& bank) {
  return detail::hidden_units(bank, "merge::hidden_units");
}

/// Weight-matching costs (F, F), row a = hidden unit a of `reference`,
/// column b = hidden unit b of `set`: Σ over the hidden matrices of their
/// inner product (higher is more alike). One GEMM per matrix.
template <class Bank>
tensor<double, shape<dyn, dyn>> weight_matching_costs(Bank& bank, std::size_t reference, std::size_t set) {
  constexpr std::string_view op = "merge::weight_matching_costs";
  detail::check_set(op, reference, bank.weight_sets(), "reference set");
  detail::check_set(op, set, bank.weight_sets(), "set");
  const std::size_t f = detail::hidden_units(bank, op);
  tensor<double, shape<dyn, dyn>> costs(shape<dyn, dyn>{f, f});  // (F, F)
  std::fill(costs.data(), costs.data() + costs.size(), 0.0);
  std::vector<float> products;  // (F, F), one float matrix's products before they join the double sum
  bank.hidden_weights([&](std::string_view name, auto& p, std::size_t axis) {
    using T = detail::value_type_of<decltype(p)>;
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "merge::align: float or double weights");
    const detail::hidden_layout l = detail::layout_of(p, axis, op, name);
    auto r = detail::slice_of(p.value(), reference, l.size());
    auto u = detail::slice_of(p.value(), set, l.size());
    if constexpr (std::is_same_v<T, double>) {
      detail::add_unit_products(l, r.data(), u.data(), costs.data());
    } else {
      products.assign(f * f, 0.0f);
      detail::add_unit_products(l, r.data(), u.data(), products.data());
      for (std::size_t k = 0; k < f * f; ++k) costs.data()[k] += double(products[k]);
    }
  });
  return costs;
}

/// Activation-matching costs (F, F): the Pearson correlation of hidden unit a
/// of `reference` with hidden unit b of `set` over the calibration rows x
/// (N, D), cov / (std_a · std_b + 1e-7). `act`: an FFN bank's activation.
template <class Bank, class X>
tensor<double, shape<dyn, dyn>> activation_matching_costs(Bank& bank, std::size_t reference, std::size_t set,
                                                          const X& x, std::optional<moe::activation> act = {}) {
  constexpr std::string_view op = "merge::activation_matching_costs";
  detail::check_set(op, reference, bank.weight_sets(), "reference set");
  detail::check_set(op, set, bank.weight_sets(), "set");
  using T = detail::value_type_of<decltype(detail::input_matrix(bank))>;
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "merge::align: float or double weights");
  static_assert(std::is_same_v<typename std::remove_cvref_t<X>::value_type, T>,
                "merge::activation_matching_costs: the calibration rows must have the bank's element type");
  const std::size_t f = detail::hidden_units(bank, op), d = detail::input_matrix(bank).extent(1), n = x.extent(0);
  const std::vector<T> rows = detail::host_rows<T>(x, d, op);  // (N, D)
  std::vector<T> hr = detail::hidden_activations(bank, reference, rows, n, d, act, op);  // (N, F)
  std::vector<T> ht = detail::hidden_activations(bank, set, rows, n, d, act, op);        // (N, F)
  // Centre every column; population standard deviations.
  auto centre = [&](std::vector<T>& h) {
    std::vector<double> mean(f, 0.0), sq(f, 0.0);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < f; ++j) mean[j] += double(h[i * f + j]);
    for (double& m : mean) m /= double(n);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < f; ++j) {
        const double c = double(h[i * f + j]) - mean[j];
        h[i * f + j] = T(c);
        sq[j] += c * c;
      }
    for (double& s : sq) s = std::sqrt(s / double(n));
    return sq;
  };
  const std::vector<double> sr = centre(hr), st = centre(ht);
  std::vector<T> cov(f * f);  // (F, F) = Hrᵀ·Ht
  moekit::detail::cpu_gemm::gemm(true, false, f, f, n, T(1), hr.data(), f, ht.data(), f, T(0), cov.data(), f);
  tensor<double, shape<dyn, dyn>> costs(shape<dyn, dyn>{f, f});  // (F, F)
  for (std::size_t a = 0; a < f; ++a)
    for (std::size_t b = 0; b < f; ++b)
      costs.data()[a * f + b] = double(cov[a * f + b]) / double(n) / (sr[a] * st[b] + 1e-7);
  return costs;
}

/// Reorders the hidden units of weight set `set`: unit j of every hidden
/// matrix (value and gradient) becomes old unit perm[j]. Throws value_error
/// when `set` is out of range or perm is not a permutation of 0..F-1.
template <class Bank>
void apply_permutation(Bank& bank, std::size_t set, std::span<const std::size_t> perm) {
  constexpr std::string_view op = "merge::apply_permutation";
  detail::check_set(op, set, bank.weight_sets(), "set");
  const std::size_t f = detail::hidden_units(bank, op);
  if (perm.size() != f)
    throw value_error(std::string(op) + ": permutation of " + std::to_string(perm.size()) + " units, the bank has " +
                      std::to_string(f) + " hidden units");
  std::vector<unsigned char> seen(f, 0);
  for (std::size_t j = 0; j < f; ++j) {
    if (perm[j] >= f || seen[perm[j]])
      throw value_error(std::string(op) + ": not a permutation of 0.." + std::to_string(f - 1) + ": entry " +
                        std::to_string(j) + " is " + std::to_string(perm[j]) +
                        (perm[j] >= f ? " (out of range)" : " (repeated)"));
    seen[perm[j]] = 1;
  }
  bank.hidden_weights([&](std::string_view name, auto& p, std::size_t axis) {
    using T = detail::value_type_of<decltype(p)>;
    const detail::hidden_layout l = detail::layout_of(p, axis, op, name);
    std::vector<T> scratch;
    auto move = [&](const auto& t) {
      if (!t.defined() || t.size() != p.size()) return;
      auto s = detail::slice_of(t, set, l.size());
      detail::permute_units(l, perm, s.data(), scratch);
      s.store();
    };
    move(p.value());
    move(p.grad());
  });
}

/// Aligns every weight set to `options.reference` by weight matching (needs
/// no data) and applies the permutations in place; returns them per set
/// (identity for the reference). Activation matching needs calibration rows:
/// the overload below.
template <class Bank>
std::vector<permutation> align_bank(Bank& bank, const align_options& options = {});

/// The same with calibration rows for activation matching: `rows` is a
/// tensor (N, D) used for every set, or a callable rows(set) -> tensor (N, D)
/// giving the rows on which `set` is compared with the reference.
template <class Bank, class Rows>
std::vector<permutation> align_bank(Bank& bank, const align_options& options, const Rows& rows) {
  constexpr std::string_view op = "merge::align_bank";
  detail::check_set(op, options.reference, bank.weight_sets(), "reference set");
  const std::size_t sets = bank.weight_sets(), f = detail::hidden_units(bank, op);
  std::vector<permutation> perms(sets);
  for (std::size_t t = 0; t < sets; ++t) {
    if (t == options.reference) {
      perms[t].resize(f);
      for (std::size_t j = 0; j < f; ++j) perms[t][j] = j;
      continue;
    }
    tensor<double, shape<dyn, dyn>> costs;
    if (options.method == align_method::weight) {
      costs = weight_matching_costs(bank, options.reference, t);
    } else if constexpr (std::is_same_v<Rows, std::nullptr_t>) {
      throw value_error(std::string(op) +
                        ": activation matching needs calibration rows: align_bank(bank, options, rows) or align_layer");
    } else if constexpr (std::invocable<const Rows&, std::size_t>) {
      costs = activation_matching_costs(bank, options.reference, t, rows(t), options.activation);
    } else {
      costs = activation_matching_costs(bank, options.reference, t, rows, options.activation);
    }
    perms[t] = linear_sum_assignment(costs, sense::maximize).column;
    apply_permutation(bank, t, perms[t]);
  }
  return perms;
}

template <class Bank>
std::vector<permutation> align_bank(Bank& bank, const align_options& options) {
  return align_bank(bank, options, nullptr);
}

/// align_bank on a layer's experts, the activation taken from its expert spec.
template <class Router, class Expert, class T, class B, class Rows = std::nullptr_t>
std::vector<permutation> align_layer(moe::layer<Router, Expert, T, B>& layer, align_options options = {},
                                     const Rows& rows = nullptr) {
  if constexpr (requires { Expert::act; })
    if (!options.activation) options.activation = Expert::act;
  return align_bank(layer.experts(), options, rows);
}

}  // namespace moekit::merge

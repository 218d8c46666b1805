// moekit/merge/low_rank_sparse.hpp — MC-SMoE's compression step (LoSparse):
// an expert spec whose bank holds every weight matrix W of each weight set as
// W = L·R + S, L (in, r) and R (r, out) from the rank-r truncated SVD of W
// (L = U_r·diag(√s_r), R = diag(√s_r)·V_rᵀ) and S = W − L·R the dense
// residual, so a freshly compressed bank computes exactly what its source did
// (up to rounding). The forward is x·L·R + x·S, three grouped GEMMs.
//
// S is then pruned by output units (merge/prune.hpp: columns of S in moekit's
// (in, out) layout, rows of PyTorch's (out, in) weight), and pack() keeps only
// its non-zero output units: per weight set g a dense (in, K_g) block, stored
// side by side as one (in, K) matrix ("<m>.s_packed", K = Σ K_g), with the
// output unit of each kept column ("<m>.s_units", (K)) and the count per set
// ("<m>.s_counts", (G)). The packed forward runs one GEMM per weight set on
// exactly the kept columns and scatters them into the output, so FLOPs and
// memory drop; it is differentiable (x, L, R, biases and the packed block), but
// it reads the group offsets on the host and loops over the weight sets (one
// device-to-host read per matrix and forward on a device backend).
//
//   using ffn = moe::ffn_expert<64, 256>;
//   using merged_t = moe::layer<moe::top_k_router<64, 16, 1>, ffn>;
//   merged_t merged = ...;                                     // trained, merged: 16 slots, 4 weight sets
//   auto small = merge::compress(merged, 16);                 // moe::layer<..., merge::low_rank_sparse<ffn>>, rank 16
//   merge::pruner p({.total_steps = 1000, .warmup_steps = 50, .final_ratio = 0.1});
//   ... per step: backward, optimizer step, p.step(small) ... // prune.hpp
//   small.experts().pack();                                   // inference: S's kept units only
//   io::save_safetensors("small.safetensors", small);
//
//   using small_t = decltype(small);                          // a fresh model to load into:
//   small_t fresh(moe::top_k_router<64, 16, 1>(g), small_t::bank_type(g, 16, 64, 256, 16));
//   merge::load_compressed_layout("small.safetensors", fresh); // slot maps, ranks, packed sizes
//   io::load_safetensors("small.safetensors", fresh);          // the same outputs as `small`
//
// The layout lives in buffers (slot_map, <m>.s_units, <m>.s_counts), which
// io::save_safetensors and io::save_checkpoint write with the parameters; a
// model must take the layout (load_compressed_layout) before the values load.
// Optimizers hold views of the parameters: build them after pack() or a layout load.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../autograd/ops/arithmetic.hpp"
#include "../autograd/ops/grouped.hpp"
#include "../autograd/parameter.hpp"
#include "../autograd/parameter_tree.hpp"
#include "../io/safetensors.hpp"
#include "../moe/expert_bank.hpp"
#include "../moe/moe_layer.hpp"
#include "../moe/slot_map.hpp"
#include "../nn/init.hpp"
#include "../tensor/ops/creation.hpp"
#include "../tensor/ops/index.hpp"
#include "../tensor/ops/matmul.hpp"
#include "../tensor/ops/transpose.hpp"
#include "svd.hpp"

namespace moekit::merge {

namespace detail {

/// The host offsets of the row groups (a copy back from a device).
template <class B>
std::vector<std::size_t> host_offsets(const group_offsets<B>& offsets) {
  const auto h = offsets.template to<cpu>();
  std::vector<std::size_t> out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = static_cast<std::size_t>(h[i]);
  return out;
}

/// y (A, out) = for each weight set g, the kept columns of S_g: y[r, units_g[j]] =
/// x[r] · P[:, k_g + j] for the rows r of set g, 0 elsewhere. x (A, in), P (in, K)
/// the sets' blocks side by side, units (K), counts[g] = K_g. One GEMM per set on
/// the host-read offsets; differentiable in x and P.
template <std::size_t Out, class T, class SX, class SP, class B>
auto packed_columns_matmul(const var<T, SX, B>& x, const var<T, SP, B>& p, const tensor<index_t, shape<dyn>, B>& units,
                           const std::vector<std::size_t>& counts, const group_offsets<B>& offsets, std::size_t out) {
  using R = shape<SX::static_extent(0), Out>;
  const std::size_t rows = x.extent(0), in = x.extent(1), k_total = p.extent(1);
  if (p.extent(0) != in || units.size() != k_total || offsets.size() != counts.size() + 1)
    throw value_error("low_rank_sparse: packed forward: x " + x.shape().str() + ", packed block " + p.shape().str() +
                      ", " + std::to_string(units.size()) + " units, " + std::to_string(offsets.size()) +
                      " offsets for " + std::to_string(counts.size()) + " weight sets do not fit");
  const auto off = host_offsets(offsets);
  if (off.back() != rows)
    throw value_error("low_rank_sparse: packed forward: offsets end at " + std::to_string(off.back()) + ", x has " +
                      std::to_string(rows) + " rows");
  auto y = zeros<T, B>(R::from_extents(std::array{rows, out}));  // (A, out)
  std::size_t k0 = 0;
  for (std::size_t g = 0; g < counts.size(); ++g) {
    const std::size_t n = off[g + 1] - off[g], kg = counts[g];
    if (n && kg) {
      if constexpr (B::host_accessible) {  // z (n, K_g) = x_g · P_g, written to its columns of y
        std::vector<T> z(n * kg);
        kernels<B>::gemm(false, false, n, kg, in, T(1), x.value().data() + off[g] * in, in, p.value().data() + k0,
                         k_total, T(0), z.data(), kg);
        const index_t* u = units.data() + k0;
        for (std::size_t r = 0; r < n; ++r) {
          T* yr = y.data() + (off[g] + r) * out;
          for (std::size_t j = 0; j < kg; ++j) yr[u[j]] = z[r * kg + j];
        }
      } else {  // on a device, with tensor ops: (K_g, n) = P_gᵀ · x_gᵀ scattered to rows, transposed
        tensor<T, shape<dyn, dyn>, B> zt(shape<dyn, dyn>{kg, n});
        kernels<B>::gemm(true, true, kg, n, in, T(1), p.value().data() + k0, k_total, x.value().data() + off[g] * in,
                         in, T(0), zt.data(), n);
        auto full = transpose(scatter_add_rows(zt, units.rows(k0, k0 + kg), out));  // (n, out)
        kernels<B>::copy(n * out, full.data(), y.data() + off[g] * out);
      }
    }
    k0 += kg;
  }
  return record("low_rank_sparse packed forward", std::move(y), [x, p, units, counts, off, out](const auto& dy) {
    const std::size_t in = x.extent(1), k_total = p.extent(1);
    (void)out;  // the device path gathers without it
    tensor<T, SX, B> dx;
    tensor<T, SP, B> dp;
    if (x.requires_grad()) dx = zeros<T, B>(x.shape());
    if (p.requires_grad()) dp = zeros<T, B>(p.shape());
    std::size_t k0 = 0;
    for (std::size_t g = 0; g < counts.size(); ++g) {
      const std::size_t n = off[g + 1] - off[g], kg = counts[g];
      if (n && kg) {
        if constexpr (B::host_accessible) {
          std::vector<T> sel(n * kg);  // (n, K_g): dy's kept columns
          const index_t* u = units.data() + k0;
          for (std::size_t r = 0; r < n; ++r) {
            const T* dyr = dy.data() + (off[g] + r) * out;
            for (std::size_t j = 0; j < kg; ++j) sel[r * kg + j] = dyr[u[j]];
          }
          if (dx.defined())  // dx_g (n, in) = sel · P_gᵀ
            kernels<B>::gemm(false, true, n, in, kg, T(1), sel.data(), kg, p.value().data() + k0, k_total, T(0),
                             dx.data() + off[g] * in, in);
          if (dp.defined())  // dP_g (in, K_g) = x_gᵀ · sel
            kernels<B>::gemm(true, false, in, kg, n, T(1), x.value().data() + off[g] * in, in, sel.data(), kg, T(0),
                             dp.data() + k0, k_total);
        } else {
          auto sel = gather_rows(transpose(dy.rows(off[g], off[g + 1])), units.rows(k0, k0 + kg));  // (K_g, n)
          if (dx.defined())  // dx_g (n, in) = selᵀ · P_gᵀ
            kernels<B>::gemm(true, true, n, in, kg, T(1), sel.data(), n, p.value().data() + k0, k_total, T(0),
                             dx.data() + off[g] * in, in);
          if (dp.defined())  // dP_g (in, K_g) = x_gᵀ · selᵀ
            kernels<B>::gemm(true, true, in, kg, n, T(1), x.value().data() + off[g] * in, in, sel.data(), n, T(0),
                             dp.data() + k0, k_total);
        }
      }
      k0 += kg;
    }
    if (dx.defined()) x.accumulate(dx);
    if (dp.defined()) p.accumulate(dp);
  }, x, p);
}

}  // namespace detail

/// One compressed weight matrix of a bank: for every weight set g,
/// W_g = L_g·R_g + S_g with L (G, in, r), R (G, r, out), S (G, in, out); or,
/// once packed, S's kept output units only (see the header comment). Also
/// holds the pruning state of S's output units (an importance EMA and an alive
/// flag per (set, unit), prune.hpp) and the stable rank of each W_g.
template <class T, backend B, std::size_t In, std::size_t Out>
class compressed_matrix {
 public:
  using l_shape = shape<dyn, In, dyn>;   // (G, in, r)
  using r_shape = shape<dyn, dyn, Out>;  // (G, r, out)
  using s_shape = shape<dyn, In, Out>;   // (G, in, out)
  using packed_shape = shape<In, dyn>;   // (in, K)
  using value_type = T;
  using backend_type = B;

  compressed_matrix() = default;

  /// From stacked weights w (G, in, out) on any backend: the rank-r SVD split
  /// of each set, computed on the host in T. 1 <= rank <= min(in, out).
  template <class SW>
  compressed_matrix(const tensor<T, SW, B>& w, std::size_t rank) {
    static_assert(SW::rank() == 3, "compressed_matrix: w must be stacked (G, in, out)");
    const std::size_t sets = w.extent(0), in = w.extent(1), out = w.extent(2);
    check_rank(rank, in, out);
    const auto host = moekit::detail::to_backend<cpu>(w);
    auto l = tensor<T, shape<dyn, dyn, dyn>, cpu>(shape<dyn, dyn, dyn>{sets, in, rank});   // (G, in, r)
    auto r = tensor<T, shape<dyn, dyn, dyn>, cpu>(shape<dyn, dyn, dyn>{sets, rank, out});  // (G, r, out)
    auto s = tensor<T, shape<dyn, dyn, dyn>, cpu>(shape<dyn, dyn, dyn>{sets, in, out});    // (G, in, out)
    stable_rank_.assign(sets, 0.0);
    for (std::size_t g = 0; g < sets; ++g) {
      const auto wg = host.rows(g, g + 1).reshape(shape<dyn, dyn>{in, out});  // (in, out)
      const auto d = thin_svd(wg);                                            // u (in, k), s (k), vt (k, out)
      stable_rank_[g] = stable_rank(d.s);
      const auto lg = l.rows(g, g + 1).reshape(shape<dyn, dyn>{in, rank});
      const auto rg = r.rows(g, g + 1).reshape(shape<dyn, dyn>{rank, out});
      for (std::size_t j = 0; j < rank; ++j) {
        const T root = std::sqrt(d.s[j]);
        for (std::size_t i = 0; i < in; ++i) lg(i, j) = d.u(i, j) * root;
        for (std::size_t o = 0; o < out; ++o) rg(j, o) = root * d.vt(j, o);
      }
      const auto lr = matmul(lg, rg);  // (in, out)
      T* sg = s.data() + g * in * out;
      for (std::size_t i = 0; i < in * out; ++i) sg[i] = wg.data()[i] - lr.data()[i];
    }
    l_ = parameter<T, l_shape, B>(moekit::detail::to_backend<B>(shape_cast<l_shape>(l)));
    r_ = parameter<T, r_shape, B>(moekit::detail::to_backend<B>(shape_cast<r_shape>(r)));
    s_ = parameter<T, s_shape, B>(moekit::detail::to_backend<B>(shape_cast<s_shape>(s)));
    reset_state();
  }

  /// Sizes only (a model to load into): S drawn like nn::linear's weight,
  /// L = 0 and R drawn like a (r, out) weight, so x·L·R + x·S = x·S.
  compressed_matrix(rng& g, std::size_t sets, std::size_t in, std::size_t out, std::size_t rank) {
    check_rank(rank, in, out);
    l_ = parameter<T, l_shape, B>(zeros<T, B>(l_shape::from_extents(std::array{sets, in, rank}, "low_rank_sparse")));
    r_ = moe::detail::stacked_weight<r_shape, T, B>(g, sets, rank, out);
    s_ = moe::detail::stacked_weight<s_shape, T, B>(g, sets, in, out);
    reset_state();
  }

  /// rows (A, in) grouped by weight set -> (A, out): x·L·R + x·S (S packed or not).
  template <class S>
  auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
    auto low = grouped_matmul(grouped_matmul(rows, l_, offsets), r_, offsets);  // (A, r) -> (A, out)
    if (!packed_) return low + grouped_matmul(rows, s_, offsets);              // (A, out)
    return low + detail::packed_columns_matmul<Out>(rows, s_packed_, s_units_, counts_, offsets, out());
  }

  std::size_t weight_sets() const noexcept { return l_.extent(0); }  // G
  std::size_t in() const noexcept { return l_.extent(1); }
  std::size_t out() const noexcept { return r_.extent(2); }
  std::size_t rank() const noexcept { return l_.extent(2); }
  bool packed() const noexcept { return packed_; }

  auto& l() noexcept { return l_; }                // (G, in, r)
  auto& r() noexcept { return r_; }                // (G, r, out)
  auto& s() noexcept { return s_; }                // (G, in, out); unset once packed
  auto& s_packed() noexcept { return s_packed_; }  // (in, K); unset until packed
  const tensor<index_t, shape<dyn>, B>& s_units() const noexcept { return s_units_; }  // (K)
  /// Kept output units of S per weight set: K_g once packed, else the units not pruned.
  std::vector<std::size_t> kept_per_set() const {
    if (packed_) return counts_;
    std::vector<std::size_t> k(weight_sets(), 0);
    for (std::size_t i = 0; i < alive_.size(); ++i) k[i / out()] += alive_[i];
    return k;
  }
  /// The stable rank Σs²/max(s)² of each W_g at compression (empty for a bank built from sizes).
  const std::vector<double>& stable_ranks() const noexcept { return stable_rank_; }

  /// Pruning state, one entry per (set, output unit), set-major: the EMA of
  /// the unit's mean |θ ⊙ ∇θ| over S, and whether the unit is still kept.
  std::vector<double>& unit_scores() noexcept { return score_; }
  std::vector<std::uint8_t>& alive() noexcept { return alive_; }

  /// Zeroes S's pruned output units (alive == 0) in place, on S's backend.
  void apply_mask() {
    if (packed_) throw value_error("low_rank_sparse: apply_mask: the matrix is packed");
    const std::size_t sets = weight_sets(), in = this->in(), out = this->out();
    auto host = s_.value().template to<cpu>();  // shares S on cpu, else a copy written back below
    for (std::size_t g = 0; g < sets; ++g)
      for (std::size_t o = 0; o < out; ++o)
        if (!alive_[g * out + o])
          for (std::size_t i = 0; i < in; ++i) host[(g * in + i) * out + o] = T(0);
    if constexpr (!std::is_same_v<B, cpu>) transfer<cpu, B>::copy(host.data(), s_.value().data(), host.size() * sizeof(T));
  }

  /// Keeps only S's non-zero output units (after zeroing the pruned ones):
  /// S (G, in, out) becomes the packed (in, K) block, its units and counts.
  /// Optimizers built on the unpacked S hold stale views afterwards.
  void pack() {
    if (packed_) return;
    apply_mask();
    const std::size_t sets = weight_sets(), in = this->in(), out = this->out();
    const auto host = moekit::detail::to_backend<cpu>(s_.value());  // (G, in, out)
    std::vector<index_t> units;
    counts_.assign(sets, 0);
    for (std::size_t g = 0; g < sets; ++g)
      for (std::size_t o = 0; o < out; ++o) {
        bool nonzero = false;
        for (std::size_t i = 0; i < in && !nonzero; ++i) nonzero = host[(g * in + i) * out + o] != T(0);
        if (nonzero) units.push_back(static_cast<index_t>(o)), ++counts_[g];
      }
    const std::size_t k = units.size();
    auto block = tensor<T, shape<dyn, dyn>, cpu>(shape<dyn, dyn>{in, k});  // (in, K)
    std::size_t c = 0;
    for (std::size_t g = 0; g < sets; ++g)
      for (std::size_t j = 0; j < counts_[g]; ++j, ++c)
        for (std::size_t i = 0; i < in; ++i) block(i, c) = host[(g * in + i) * out + static_cast<std::size_t>(units[c])];
    install_packed(block, units);
    s_ = {};
  }

  /// Resizes for a checkpoint (load_compressed_layout): rank r and, when
  /// `counts` is given, the packed layout with K_g kept units per set; values zero.
  void set_layout(std::size_t rank, const std::optional<std::vector<std::size_t>>& counts) {
    const std::size_t sets = weight_sets(), in = this->in(), out = this->out();
    check_rank(rank, in, out);
    if (rank != this->rank()) {
      l_ = parameter<T, l_shape, B>(zeros<T, B>(l_shape::from_extents(std::array{sets, in, rank}, "low_rank_sparse")));
      r_ = parameter<T, r_shape, B>(zeros<T, B>(r_shape::from_extents(std::array{sets, rank, out}, "low_rank_sparse")));
    }
    if (counts) {
      counts_ = *counts;
      std::size_t k = 0;
      for (std::size_t c : counts_) k += c;
      install_packed(tensor<T, shape<dyn, dyn>, cpu>(zeros<T>(shape<dyn, dyn>{in, k})), std::vector<index_t>(k, 0));
      s_ = {};
    } else if (packed_ || !s_.value().defined()) {
      packed_ = false;
      s_ = parameter<T, s_shape, B>(zeros<T, B>(s_shape::from_extents(std::array{sets, in, out}, "low_rank_sparse")));
      s_packed_ = {};
      s_units_ = {}, s_counts_ = {}, counts_.clear();
    }
    reset_state();
  }

  /// Forgets the pruning state (all units kept, scores 0), e.g. after regrouping sets.
  void reset_state() {
    score_.assign(weight_sets() * out(), 0.0);
    alive_.assign(weight_sets() * out(), 1);
    if (stable_rank_.size() != weight_sets()) stable_rank_.clear();
  }

  /// visit("<m>.l", L), ("<m>.r", R), and ("<m>.s", S) or ("<m>.s_packed", block).
  template <class V>
  void parameters(const std::string& m, V&& visit) {
    visit(m + ".l", l_);
    visit(m + ".r", r_);
    if (packed_) visit(m + ".s_packed", s_packed_);
    else visit(m + ".s", s_);
  }
  /// Once packed: ("<m>.s_units", (K)) and ("<m>.s_counts", (G)).
  template <class V>
  void buffers(const std::string& m, V&& visit) {
    if (!packed_) return;
    visit(m + ".s_units", s_units_);
    visit(m + ".s_counts", s_counts_);
  }

  /// Multiply-adds per row (token) of the matrix, averaged over weight sets:
  /// in·r + r·out, plus in·out unpacked or in·K_g packed.
  double multiply_adds_per_row() const {
    const double low = static_cast<double>(in() * rank() + rank() * out());
    if (!packed_) return low + static_cast<double>(in() * out());
    std::size_t k = 0;
    for (std::size_t c : counts_) k += c;
    return low + static_cast<double>(in() * k) / static_cast<double>(std::max<std::size_t>(weight_sets(), 1));
  }

 private:
  static void check_rank(std::size_t rank, std::size_t in, std::size_t out) {
    if (rank == 0 || rank > std::min(in, out))
      throw value_error("low_rank_sparse: rank " + std::to_string(rank) + " for an (" + std::to_string(in) + ", " +
                        std::to_string(out) + ") matrix: need 1 <= rank <= " + std::to_string(std::min(in, out)));
  }

  void install_packed(const tensor<T, shape<dyn, dyn>, cpu>& block, const std::vector<index_t>& units) {
    const std::size_t k = units.size();
    s_packed_ = parameter<T, packed_shape, B>(moekit::detail::to_backend<B>(shape_cast<packed_shape>(block)));
    auto u = tensor<index_t, shape<dyn>, cpu>(shape<dyn>{k});
    if (k) std::memcpy(u.data(), units.data(), k * sizeof(index_t));
    s_units_ = moekit::detail::to_backend<B>(u);
    auto c = tensor<index_t, shape<dyn>, cpu>(shape<dyn>{counts_.size()});
    for (std::size_t g = 0; g < counts_.size(); ++g) c[g] = static_cast<index_t>(counts_[g]);
    s_counts_ = moekit::detail::to_backend<B>(c);
    packed_ = true;
  }

  parameter<T, l_shape, B> l_;               // (G, in, r)
  parameter<T, r_shape, B> r_;               // (G, r, out)
  parameter<T, s_shape, B> s_;               // (G, in, out), unset once packed
  parameter<T, packed_shape, B> s_packed_;   // (in, K), set once packed
  tensor<index_t, shape<dyn>, B> s_units_;   // (K) output unit of each packed column
  tensor<index_t, shape<dyn>, B> s_counts_;  // (G) K_g
  std::vector<std::size_t> counts_;          // K_g on the host
  bool packed_ = false;
  std::vector<double> score_;                // (G·out) importance EMA per unit
  std::vector<std::uint8_t> alive_;          // (G·out)
  std::vector<double> stable_rank_;          // (G)
};

namespace detail {

/// What both compressed banks share: the slot map, sharing, packing, the
/// pruning hook and the checkpoint layout. Derived lists its matrices through
/// matrices(visit(name, compressed_matrix&)) and its parameters itself.
template <class Derived, class T, backend B>
class compressed_bank {
 public:
  std::size_t experts() const noexcept { return slots_.slots(); }         // E, router slots
  std::size_t weight_sets() const noexcept { return slots_.weight_sets(); }  // G
  const moe::slot_map<B>& slots() const noexcept { return slots_; }

  /// Serves the slots through `m`, averaging L, R, S and biases of the slots
  /// mapped to one set. Meant for loading (moe::load_slot_maps): averaging
  /// L and R separately does not average the weights, so merge before compressing.
  void share(const moe::slot_map<B>& m) {
    if (packed()) throw value_error("low_rank_sparse: share: the bank is packed");
    moe::detail::share_weight_sets(derived(), slots_, m, std::vector<double>(m.slots(), 1.0));
    derived().matrices([](std::string_view, auto& mat) { mat.reset_state(); });
  }

  /// Pruning hook: visit(name, compressed_matrix&) for every compressed matrix.
  template <class V>
  void sparse_matrices(V&& visit) {
    derived().matrices(visit);
  }

  /// Switches every matrix to packed inference (S's non-zero output units only).
  void pack() {
    derived().matrices([](std::string_view, auto& mat) { mat.pack(); });
  }
  bool packed() const {
    bool any = false;
    const_cast<Derived&>(derived()).matrices([&](std::string_view, auto& mat) { any = any || mat.packed(); });
    return any;
  }

  /// Scalar parameters (reflects packing) and bytes of parameters and buffers.
  std::size_t parameter_count() { return count_parameters(derived()); }
  std::size_t bytes() {
    std::size_t n = parameter_count() * sizeof(T);
    visit_buffers(derived(), [&](const std::string&, const auto& t) {
      n += t.size() * sizeof(typename std::remove_cvref_t<decltype(t)>::value_type);
    });
    return n;
  }
  /// Multiply-adds per routed row (token, slot), averaged over weight sets.
  double multiply_adds_per_row() {
    double n = 0;
    derived().matrices([&](std::string_view, auto& mat) { n += mat.multiply_adds_per_row(); });
    return n;
  }
  /// (matrix name, stable rank per weight set at compression).
  std::vector<std::pair<std::string, std::vector<double>>> stable_ranks() {
    std::vector<std::pair<std::string, std::vector<double>>> out;
    derived().matrices([&](std::string_view name, auto& mat) { out.emplace_back(std::string(name), mat.stable_ranks()); });
    return out;
  }

  template <class V>
  void buffers(V&& visit) {
    if (!slots_.identity()) visit("slot_map", slots_.map());
    derived().matrices([&](std::string_view name, auto& mat) { mat.buffers(std::string(name), visit); });
  }

  /// The layout saved under `at` in `file` (load_compressed_layout): each
  /// matrix's rank (from "<at>.<m>.l") and packed counts ("<at>.<m>.s_counts").
  void load_layout(const io::safetensors_data& file, const std::string& at) {
    const std::string prefix = at.empty() ? "" : at + ".";
    derived().matrices([&](std::string_view name, auto& mat) {
      const std::string m = prefix + std::string(name);
      const auto fail = [&](const std::string& tensor, const std::string& what) {
        throw io_error(file.path.string() + ": " + tensor + ": " + what);
      };
      const io::tensor_record* l = file.find(m + ".l");
      if (!l) fail(m + ".l", "missing from the file");
      if (l->shape.size() != 3 || l->shape[0] != mat.weight_sets() || l->shape[1] != mat.in())
        fail(m + ".l", "shape " + io::detail::shape_str(l->shape) + " in the file, (" +
                           std::to_string(mat.weight_sets()) + ", " + std::to_string(mat.in()) + ", r) expected");
      std::optional<std::vector<std::size_t>> counts;
      if (file.find(m + ".s_counts")) {
        const std::size_t ext[1] = {mat.weight_sets()};
        const auto& r = file.expect(m + ".s_counts", dtype_name<index_t>(), ext);
        std::vector<index_t> c(mat.weight_sets());
        if (!c.empty()) std::memcpy(c.data(), r.bytes.data(), c.size() * sizeof(index_t));
        counts.emplace();
        for (index_t v : c) {
          if (v < 0 || static_cast<std::size_t>(v) > mat.out())
            fail(m + ".s_counts", "count " + std::to_string(v) + " outside [0, " + std::to_string(mat.out()) + "]");
          counts->push_back(static_cast<std::size_t>(v));
        }
      }
      try {
        mat.set_layout(l->shape[2], counts);
      } catch (const value_error& e) {
        fail(m + ".l", e.what());
      }
    });
  }

 protected:
  explicit compressed_bank(moe::slot_map<B> slots = moe::slot_map<B>()) : slots_(std::move(slots)) {}
  Derived& derived() noexcept { return static_cast<Derived&>(*this); }
  const Derived& derived() const noexcept { return static_cast<const Derived&>(*this); }

  moe::slot_map<B> slots_;  // (E) slot -> weight set
};

template <class>
inline constexpr bool always_false = false;

}  // namespace detail

/// The compressed form of an expert spec: low_rank_sparse<moe::ffn_expert<...>>
/// or low_rank_sparse<moe::swiglu_expert<...>>.
template <class Spec>
struct low_rank_sparse {
  static_assert(detail::always_false<Spec>,
                "merge::low_rank_sparse: Spec must be moe::ffn_expert<...> or moe::swiglu_expert<...>");
};

/// x -> act(x·W1 + b1)·W2 + b2 with W1, W2 compressed: parameters "w1.l" (G, D, r),
/// "w1.r" (G, r, F), "w1.s" (G, D, F), "b1" (G, F), "w2.l" (G, F, r), "w2.r" (G, r, D),
/// "w2.s" (G, F, D), "b2" (G, D); packed: "w1.s_packed" (D, K1), ... .
template <std::size_t D, std::size_t F, moe::activation Act, bool Bias>
struct low_rank_sparse<moe::ffn_expert<D, F, Act, Bias>> {
  using source = moe::ffn_expert<D, F, Act, Bias>;
  static constexpr std::size_t d_model = D, d_ff = F;
  static constexpr moe::activation act = Act;
  static constexpr std::size_t matrices = 2;

  template <std::size_t E, class T, backend B>
  class bank : public detail::compressed_bank<bank<E, T, B>, T, B> {
    using base = detail::compressed_bank<bank<E, T, B>, T, B>;
    friend base;

   public:
    /// From a (possibly shared) source bank: its slot map, biases, and each
    /// weight matrix split at rank r. The source is only read.
    template <class Src>
      requires requires(Src& s) { s.w1(); s.w2(); s.slots(); }
    bank(const Src& src, std::size_t rank) : base(src.slots()) {
      auto& s = const_cast<Src&>(src);  // the source's accessors are non-const; nothing is written
      w1_ = compressed_matrix<T, B, D, F>(s.w1().value(), rank);
      w2_ = compressed_matrix<T, B, F, D>(s.w2().value(), rank);
      if constexpr (Bias) {
        b1_ = parameter<T, shape<dyn, F>, B>(s.b1().value().clone());
        b2_ = parameter<T, shape<dyn, D>, B>(s.b2().value().clone());
      }
    }
    /// Sizes only (a model to load into): e slots, one weight set each.
    bank(rng& g, std::size_t e, std::size_t d, std::size_t f, std::size_t rank)
        : base(moe::slot_map<B>(e)), w1_(g, e, d, f, rank), w2_(g, e, f, d, rank) {
      if constexpr (Bias) {
        b1_ = moe::detail::stacked_bias<shape<dyn, F>, T, B>(g, e, d, f);
        b2_ = moe::detail::stacked_bias<shape<dyn, D>, T, B>(g, e, f, d);
      }
    }

    /// rows (A, D) grouped by weight set -> (A, D).
    template <class S>
    auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
      auto h = moe::detail::bias_activate<Act, Bias>(w1_(rows, offsets), b1_, offsets);  // (A, F)
      auto y = w2_(h, offsets);                                                         // (A, D)
      if constexpr (Bias) y = add_grouped_rows(y, b2_, offsets);
      return y;
    }

    auto& w1() noexcept { return w1_; }
    auto& w2() noexcept { return w2_; }
    auto& b1() noexcept { return b1_; }  // (G, F), unset without biases
    auto& b2() noexcept { return b2_; }  // (G, D), unset without biases

    /// visit(name, compressed_matrix&) for "w1", "w2".
    template <class V>
    void matrices(V&& visit) {
      visit(std::string_view("w1"), w1_);
      visit(std::string_view("w2"), w2_);
    }
    template <class V>
    void parameters(V&& visit) {
      w1_.parameters("w1", visit);
      if constexpr (Bias) visit("b1", b1_);
      w2_.parameters("w2", visit);
      if constexpr (Bias) visit("b2", b2_);
    }

   private:
    compressed_matrix<T, B, D, F> w1_;  // (G, D, F) as L·R + S
    compressed_matrix<T, B, F, D> w2_;  // (G, F, D)
    parameter<T, shape<dyn, F>, B> b1_;  // (G, F)
    parameter<T, shape<dyn, D>, B> b2_;  // (G, D)
  };
};

/// x -> (silu(x·Wg) ⊙ x·Wu)·Wd with Wg, Wu, Wd compressed: "w_gate.l", "w_gate.r",
/// "w_gate.s", "w_up.*", "w_down.*" (packed: "<m>.s_packed", ...).
template <std::size_t D, std::size_t F>
struct low_rank_sparse<moe::swiglu_expert<D, F>> {
  using source = moe::swiglu_expert<D, F>;
  static constexpr std::size_t d_model = D, d_ff = F;
  static constexpr std::size_t matrices = 3;

  template <std::size_t E, class T, backend B>
  class bank : public detail::compressed_bank<bank<E, T, B>, T, B> {
    using base = detail::compressed_bank<bank<E, T, B>, T, B>;
    friend base;

   public:
    /// From a (possibly shared) source bank, each matrix split at rank r.
    template <class Src>
      requires requires(Src& s) { s.w_gate(); s.w_up(); s.w_down(); s.slots(); }
    bank(const Src& src, std::size_t rank) : base(src.slots()) {
      auto& s = const_cast<Src&>(src);  // the source's accessors are non-const; nothing is written
      w_gate_ = compressed_matrix<T, B, D, F>(s.w_gate().value(), rank);
      w_up_ = compressed_matrix<T, B, D, F>(s.w_up().value(), rank);
      w_down_ = compressed_matrix<T, B, F, D>(s.w_down().value(), rank);
    }
    /// Sizes only (a model to load into): e slots, one weight set each.
    bank(rng& g, std::size_t e, std::size_t d, std::size_t f, std::size_t rank)
        : base(moe::slot_map<B>(e)), w_gate_(g, e, d, f, rank), w_up_(g, e, d, f, rank), w_down_(g, e, f, d, rank) {}

    /// rows (A, D) grouped by weight set -> (A, D).
    template <class S>
    auto operator()(const var<T, S, B>& rows, const group_offsets<B>& offsets) const {
      auto gate = moe::detail::activate<moe::activation::silu>(w_gate_(rows, offsets));  // (A, F)
      auto up = w_up_(rows, offsets);                                                   // (A, F)
      return w_down_(gate * up, offsets);                                               // (A, D)
    }

    auto& w_gate() noexcept { return w_gate_; }
    auto& w_up() noexcept { return w_up_; }
    auto& w_down() noexcept { return w_down_; }

    template <class V>
    void matrices(V&& visit) {
      visit(std::string_view("w_gate"), w_gate_);
      visit(std::string_view("w_up"), w_up_);
      visit(std::string_view("w_down"), w_down_);
    }
    template <class V>
    void parameters(V&& visit) {
      w_gate_.parameters("w_gate", visit);
      w_up_.parameters("w_up", visit);
      w_down_.parameters("w_down", visit);
    }

   private:
    compressed_matrix<T, B, D, F> w_gate_;  // (G, D, F)
    compressed_matrix<T, B, D, F> w_up_;    // (G, D, F)
    compressed_matrix<T, B, F, D> w_down_;  // (G, F, D)
  };
};

/// A compressed copy of a trained (merged) moe::layer: the same router (and
/// its slot map), every expert matrix split at rank r; an always-on shared
/// expert is compressed too.
template <class Router, class Spec, class T, backend B>
moe::layer<Router, low_rank_sparse<Spec>, T, B> compress(const moe::layer<Router, Spec, T, B>& src, std::size_t rank) {
  using out_t = moe::layer<Router, low_rank_sparse<Spec>, T, B>;
  std::optional<typename out_t::shared_type> shared;
  if (src.shared()) shared.emplace(*src.shared(), rank);
  return out_t(src.router(), typename out_t::bank_type(src.experts(), rank), std::move(shared));
}

/// Gives every compressed bank under `model` the layout saved in the
/// safetensors file at `path` before its values are loaded: first every
/// bank's slot map (moe::load_slot_maps, plain banks included), then each
/// compressed matrix's rank and, where the file holds a packed S, its packed
/// size. Then io::load_safetensors(path, model) fills the values.
template <parameterized M>
void load_compressed_layout(const std::filesystem::path& path, M& model) {
  // Unpacked, so that load_slot_maps can regroup the sets.
  auto unpack = [](const std::string&, auto& layer) {
    if constexpr (requires { layer.load_layout(std::declval<const io::safetensors_data&>(), std::string()); })
      layer.matrices([](std::string_view, auto& mat) {
        if (mat.packed()) mat.set_layout(mat.rank(), std::nullopt);
      });
  };
  moe::detail::visit_layers(model, unpack, "");
  moe::load_slot_maps(path, model);
  const auto file = io::read_safetensors(path);
  auto layout = [&](const std::string& at, auto& layer) {
    if constexpr (requires { layer.load_layout(file, at); }) layer.load_layout(file, at);
  };
  moe::detail::visit_layers(model, layout, "");
}

}  // namespace moekit::merge

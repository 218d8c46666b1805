// moekit/tensor/csr.hpp — a sparse matrix in CSR form, built from an edge
// list (COO entries). For a graph, row i holds the edges coming *into* node i
// (edge j -> i is entry (i, j)), so Y = A·X aggregates each node's incoming
// messages, and a per-row softmax is a softmax over each node's incoming edges.
//
//   graph::edge_list e{.nodes = 4};
//   e.add(0, 1); e.add(1, 2);
//   auto a = graph::make_csr(e, {.symmetrize = true, .loops = graph::self_loops::add});
//
// The transposed structure is always kept (t_row_ptr, t_col, t_perm): SpMM's
// backward dX = Aᵀ·dY runs as a row-parallel CSR product over it, so it is
// deterministic and needs no atomics, also for directed graphs and for values
// that are not symmetric (mean normalisation, attention).
//
// It sits in tensor/ because the sparse ops (tensor/ops/sparse.hpp) take it;
// the names are moekit::csr, moekit::make_csr, ..., and graph code knows them
// as graph::csr, graph::make_csr, ... (the using-declarations at the end).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "ops/creation.hpp"
#include "tensor.hpp"

namespace moekit {

/// Directed edges src[e] -> dst[e] (a message from src to dst) over `nodes`
/// nodes, with optional weights (empty: every edge weighs 1).
struct edge_list {
  std::size_t nodes = 0;
  std::vector<index_t> src{}, dst{};
  std::vector<double> weight{};  // empty, or one per edge

  std::size_t size() const noexcept { return src.size(); }
  void add(index_t from, index_t to) {
    src.push_back(from);
    dst.push_back(to);
  }
  void add(index_t from, index_t to, double w) {
    add(from, to);
    weight.push_back(w);
  }
};

/// What make_csr does with edges i -> i.
enum class self_loops {
  keep,    // as they come
  add,     // keep them, and give every node that has none a loop of weight 1 (PyG's add_remaining_self_loops)
  remove,  // drop them all
};

struct csr_options {
  bool symmetrize = false;   // add v -> u for every u -> v (an undirected graph from one direction)
  bool deduplicate = true;   // merge repeated edges into one entry, summing their weights
  self_loops loops = self_loops::keep;
};

/// The index arrays of a CSR matrix and of its transpose, shared by every csr
/// with the same sparsity pattern (tensors are handles: copies share memory).
template <backend B = cpu>
struct csr_structure {
  using index_tensor = tensor<index_t, shape<dyn>, B>;
  std::size_t rows = 0, cols = 0;
  index_tensor row_ptr;    // (rows + 1): entries of row i are [row_ptr[i], row_ptr[i + 1])
  index_tensor col;        // (nnz): column (source node) of each entry, ascending within a row
  index_tensor row;        // (nnz): row (target node) of each entry
  index_tensor t_row_ptr;  // (cols + 1): row pointers of Aᵀ
  index_tensor t_col;      // (nnz): columns of Aᵀ (= rows of A), ascending within a row of Aᵀ
  index_tensor t_perm;     // (nnz): entry k of Aᵀ is entry t_perm[k] of A (where its value lives)
};

namespace detail {

inline std::string edge_str(std::size_t e, index_t from, index_t to) {
  return "edge " + std::to_string(e) + " (" + std::to_string(from) + " -> " + std::to_string(to) + ")";
}

/// Counting sort of entries by key (stable): returns the permutation and fills
/// ptr (keys + 1) with the start of each key's run.
inline std::vector<index_t> counting_sort(const index_t* key, std::size_t n, std::size_t keys,
                                          std::vector<index_t>& ptr) {
  ptr.assign(keys + 1, 0);
  for (std::size_t k = 0; k < n; ++k) ++ptr[static_cast<std::size_t>(key[k]) + 1];
  for (std::size_t i = 0; i < keys; ++i) ptr[i + 1] += ptr[i];
  std::vector<index_t> next(ptr.begin(), ptr.end() - 1), perm(n);
  for (std::size_t k = 0; k < n; ++k) perm[static_cast<std::size_t>(next[static_cast<std::size_t>(key[k])]++)] =
      static_cast<index_t>(k);
  return perm;
}

inline tensor<index_t, shape<dyn>> index_tensor_of(const std::vector<index_t>& v) {
  tensor<index_t, shape<dyn>> t(shape<dyn>{v.size()});
  std::copy(v.begin(), v.end(), t.data());
  return t;
}

/// Checks row_ptr and col of a (rows, cols) CSR matrix and derives the
/// per-entry rows and the transposed structure.
inline csr_structure<cpu> make_structure(std::size_t rows, std::size_t cols, tensor<index_t, shape<dyn>> row_ptr,
                                         tensor<index_t, shape<dyn>> col) {
  if (row_ptr.size() != rows + 1)
    throw shape_error("csr: row_ptr " + row_ptr.shape().str() + " for " + std::to_string(rows) +
                      " rows: expected rows + 1 entries");
  const std::size_t nnz = col.size();
  if (row_ptr[0] != 0 || static_cast<std::size_t>(row_ptr[rows]) != nnz)
    throw value_error("csr: row_ptr must run from 0 to nnz = " + std::to_string(nnz) + ", got " +
                      std::to_string(row_ptr[0]) + " .. " + std::to_string(row_ptr[rows]));
  csr_structure<cpu> s{rows, cols, std::move(row_ptr), std::move(col), {}, {}, {}, {}};
  std::vector<index_t> row_of(nnz);
  for (std::size_t i = 0; i < rows; ++i) {
    if (s.row_ptr[i + 1] < s.row_ptr[i])
      throw value_error("csr: row_ptr decreases at row " + std::to_string(i));
    for (auto k = s.row_ptr[i]; k < s.row_ptr[i + 1]; ++k) {
      const index_t c = s.col[static_cast<std::size_t>(k)];
      if (c < 0 || static_cast<std::size_t>(c) >= cols)
        throw value_error("csr: column " + std::to_string(c) + " of entry " + std::to_string(k) + " (row " +
                          std::to_string(i) + ") is out of range [0, " + std::to_string(cols) + ")");
      row_of[static_cast<std::size_t>(k)] = static_cast<index_t>(i);
    }
  }
  // Transposed: entries sorted by column; the sort is stable, so the rows
  // within each column stay ascending.
  std::vector<index_t> t_ptr;
  std::vector<index_t> perm = counting_sort(s.col.data(), nnz, cols, t_ptr);
  std::vector<index_t> t_col(nnz);
  for (std::size_t k = 0; k < nnz; ++k) t_col[k] = row_of[static_cast<std::size_t>(perm[k])];
  s.row = index_tensor_of(row_of);
  s.t_row_ptr = index_tensor_of(t_ptr);
  s.t_col = index_tensor_of(t_col);
  s.t_perm = index_tensor_of(perm);
  return s;
}

}  // namespace detail

/// A sparse (rows, cols) matrix: a shared structure plus optional values
/// (nnz). Without values every stored entry counts as 1 (a plain adjacency).
template <class T = float, backend B = cpu>
class csr {
 public:
  using value_type = T;
  using backend_type = B;
  using index_tensor = tensor<index_t, shape<dyn>, B>;
  using value_tensor = tensor<T, shape<dyn>, B>;  // (nnz)

  csr() = default;
  /// From its arrays; checks them (shape_error / value_error naming "csr").
  csr(std::size_t rows, std::size_t cols, index_tensor row_ptr, index_tensor col, value_tensor values = {})
    requires(B::host_accessible)
      : csr(detail::make_structure(rows, cols, std::move(row_ptr), std::move(col)), std::move(values)) {}
  /// A structure with values (undefined values: all 1).
  csr(csr_structure<B> s, value_tensor values) : s_(std::move(s)), values_(std::move(values)) {
    if (values_.defined() && values_.size() != nnz())
      throw shape_error("csr: values " + values_.shape().str() + " for " + std::to_string(nnz()) + " entries");
  }

  std::size_t rows() const noexcept { return s_.rows; }
  std::size_t cols() const noexcept { return s_.cols; }
  std::size_t nnz() const noexcept { return s_.col.size(); }
  /// "(rows, cols) nnz" for messages.
  std::string str() const {
    return "(" + std::to_string(rows()) + ", " + std::to_string(cols()) + ") with " + std::to_string(nnz()) +
           " entries";
  }

  const csr_structure<B>& structure() const noexcept { return s_; }
  const index_tensor& row_ptr() const noexcept { return s_.row_ptr; }
  const index_tensor& col() const noexcept { return s_.col; }
  /// The row (target node) of each entry: with col(), the entries as (dst, src) pairs.
  const index_tensor& row() const noexcept { return s_.row; }
  const index_tensor& t_row_ptr() const noexcept { return s_.t_row_ptr; }
  const index_tensor& t_col() const noexcept { return s_.t_col; }
  const index_tensor& t_perm() const noexcept { return s_.t_perm; }

  bool has_values() const noexcept { return values_.defined(); }
  /// The values (nnz); undefined when every entry is 1.
  const value_tensor& values() const noexcept { return values_; }
  /// The same structure with other values (of any element type).
  template <class T2 = T>
  csr<T2, B> with_values(tensor<T2, shape<dyn>, B> v) const {
    return csr<T2, B>(s_, std::move(v));
  }
  /// The same structure, values converted to T2.
  template <class T2>
  csr<T2, B> cast() const
    requires(B::host_accessible)
  {
    if (!has_values()) return csr<T2, B>(s_, {});
    tensor<T2, shape<dyn>, B> v(shape<dyn>{nnz()});
    for (std::size_t k = 0; k < nnz(); ++k) v[k] = static_cast<T2>(values_[k]);
    return csr<T2, B>(s_, std::move(v));
  }

  /// Stored entries per row: the in-degree of each node (self-loops count once).
  index_tensor in_degree() const
    requires(B::host_accessible)
  {
    return lengths(s_.row_ptr, rows());
  }
  /// Stored entries per column: the out-degree of each node.
  index_tensor out_degree() const
    requires(B::host_accessible)
  {
    return lengths(s_.t_row_ptr, cols());
  }
  /// in_degree(): for a symmetric (undirected) graph the node degrees.
  index_tensor degrees() const
    requires(B::host_accessible)
  {
    return in_degree();
  }

  /// Value of entry k (1 without values).
  T value(std::size_t k) const
    requires(B::host_accessible)
  {
    return has_values() ? values_[k] : T(1);
  }

 private:
  static index_tensor lengths(const index_tensor& ptr, std::size_t n) {
    index_tensor d(shape<dyn>{n});
    for (std::size_t i = 0; i < n; ++i) d[i] = ptr[i + 1] - ptr[i];
    return d;
  }

  csr_structure<B> s_;
  value_tensor values_;
};

/// Builds the (nodes, nodes) adjacency with entry (dst, src) for every edge
/// src -> dst, columns sorted within each row. Values are kept only when the
/// edge list has weights (merged duplicates add theirs up). value_error naming
/// the edge when a node id lies outside [0, nodes) or the weights do not match.
template <class T = float>
csr<T> make_csr(const edge_list& e, const csr_options& o = {}) {
  const std::size_t n = e.nodes, m = e.size();
  if (e.dst.size() != m)
    throw value_error("make_csr: " + std::to_string(m) + " sources but " + std::to_string(e.dst.size()) +
                      " destinations");
  const bool weighted = !e.weight.empty();
  if (weighted && e.weight.size() != m)
    throw value_error("make_csr: " + std::to_string(e.weight.size()) + " weights for " + std::to_string(m) + " edges");
  for (std::size_t k = 0; k < m; ++k)
    for (index_t v : {e.src[k], e.dst[k]})
      if (v < 0 || static_cast<std::size_t>(v) >= n)
        throw value_error("make_csr: " + detail::edge_str(k, e.src[k], e.dst[k]) + ": node " + std::to_string(v) +
                          " is out of range [0, " + std::to_string(n) + ")");

  // Entries as (row = dst, col = src, weight), then the options.
  std::vector<index_t> row, col;
  std::vector<double> w;
  row.reserve(o.symmetrize ? 2 * m + n : m + n);
  col.reserve(row.capacity());
  std::vector<bool> has_loop(o.loops == self_loops::add ? n : 0);
  auto push = [&](index_t r, index_t c, double wt) {
    if (r == c) {
      if (o.loops == self_loops::remove) return;
      if (o.loops == self_loops::add) has_loop[static_cast<std::size_t>(r)] = true;
    }
    row.push_back(r);
    col.push_back(c);
    w.push_back(wt);
  };
  for (std::size_t k = 0; k < m; ++k) {
    const double wt = weighted ? e.weight[k] : 1.0;
    push(e.dst[k], e.src[k], wt);
    if (o.symmetrize && e.src[k] != e.dst[k]) push(e.src[k], e.dst[k], wt);
  }
  if (o.loops == self_loops::add)
    for (std::size_t i = 0; i < n; ++i) {
      if (has_loop[i]) continue;
      row.push_back(static_cast<index_t>(i));
      col.push_back(static_cast<index_t>(i));
      w.push_back(1.0);
    }

  // Sort by row (counting sort, stable), then by column within each row
  // (stable, so merged weights add up in edge order: deterministic).
  std::vector<index_t> ptr;
  std::vector<index_t> order = detail::counting_sort(row.data(), row.size(), n, ptr);
  for (std::size_t i = 0; i < n; ++i)
    std::stable_sort(order.begin() + ptr[i], order.begin() + ptr[i + 1],
                     [&](index_t a, index_t b) { return col[static_cast<std::size_t>(a)] < col[static_cast<std::size_t>(b)]; });

  std::vector<index_t> out_ptr(n + 1, 0), out_col;
  std::vector<double> out_w;
  out_col.reserve(order.size());
  out_w.reserve(order.size());
  for (std::size_t i = 0; i < n; ++i) {
    for (auto k = ptr[i]; k < ptr[i + 1]; ++k) {
      const auto at = static_cast<std::size_t>(order[static_cast<std::size_t>(k)]);
      const bool repeat = o.deduplicate && static_cast<std::size_t>(out_ptr[i]) < out_col.size() &&
                          out_col.back() == col[at];
      if (repeat) {
        out_w.back() += w[at];
      } else {
        out_col.push_back(col[at]);
        out_w.push_back(w[at]);
      }
    }
    out_ptr[i + 1] = static_cast<index_t>(out_col.size());
  }
  tensor<T, shape<dyn>> values;
  if (weighted) {
    values = tensor<T, shape<dyn>>(shape<dyn>{out_w.size()});
    for (std::size_t k = 0; k < out_w.size(); ++k) values[k] = static_cast<T>(out_w[k]);
  }
  return csr<T>(n, n, detail::index_tensor_of(out_ptr), detail::index_tensor_of(out_col), std::move(values));
}

/// The entries of a as an edge list (src = column, dst = row), with weights
/// when a has values; make_csr(to_edge_list(a)) gives a back.
template <class T>
edge_list to_edge_list(const csr<T>& a) {
  edge_list e{.nodes = a.rows()};
  e.src.reserve(a.nnz());
  e.dst.reserve(a.nnz());
  for (std::size_t k = 0; k < a.nnz(); ++k) {
    e.src.push_back(a.col()[k]);
    e.dst.push_back(a.row()[k]);
    if (a.has_values()) e.weight.push_back(static_cast<double>(a.values()[k]));
  }
  return e;
}

namespace graph {
// The names graph code has always used.
using moekit::csr;
using moekit::csr_options;
using moekit::csr_structure;
using moekit::edge_list;
using moekit::make_csr;
using moekit::self_loops;
using moekit::to_edge_list;
}  // namespace graph

}  // namespace moekit

// moekit/graph/normalize.hpp — the adjacency values each GNN aggregates with:
//
//   gcn   D^-1/2 (A + I) D^-1/2, D = row sums of A + I  (GCN; self-loops added where missing)
//   mean  each row divided by its sum                   (GraphSAGE mean aggregation)
//   sum   A as it is                                    (GIN)
//
// Rows are target nodes (see csr.hpp), so "row sums" are weighted in-degrees,
// as in PyG's gcn_norm. A row with nothing in it stays empty (its node
// aggregates zero). Values are computed in double and stored as T.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "../tensor/csr.hpp"

namespace moekit::graph {

enum class normalization { sum, mean, gcn };

/// a with a loop of weight 1 on every node that has none (existing entries,
/// duplicates and loops included, are kept as they are).
template <class T>
csr<T> add_self_loops(const csr<T>& a) {
  return make_csr<T>(to_edge_list(a), {.deduplicate = false, .loops = self_loops::add});
}
/// a without its diagonal entries.
template <class T>
csr<T> remove_self_loops(const csr<T>& a) {
  return make_csr<T>(to_edge_list(a), {.deduplicate = false, .loops = self_loops::remove});
}

namespace detail {
/// Σ_j a_ij for every row i.
template <class T>
std::vector<double> row_sums(const csr<T>& a) {
  std::vector<double> s(a.rows(), 0.0);
  for (std::size_t k = 0; k < a.nnz(); ++k) s[static_cast<std::size_t>(a.row()[k])] += static_cast<double>(a.value(k));
  return s;
}
/// a's structure with values f(k) for every entry k.
template <class T, class F>
csr<T> with_entry_values(const csr<T>& a, F f) {
  tensor<T, shape<dyn>> v(shape<dyn>{a.nnz()});
  for (std::size_t k = 0; k < a.nnz(); ++k) v[k] = static_cast<T>(f(k));
  return a.with_values(std::move(v));
}
}  // namespace detail

/// GCN's D^-1/2 (A + I) D^-1/2 (Kipf & Welling): self-loops added where
/// missing, then entry (i, j) = a_ij / sqrt(d_i d_j) with d the row sums.
template <class T>
csr<T> gcn_norm(const csr<T>& a) {
  const csr<T> looped = add_self_loops(a);
  std::vector<double> dinv = detail::row_sums(looped);
  for (double& d : dinv) d = d > 0 ? 1.0 / std::sqrt(d) : 0.0;
  return detail::with_entry_values(looped, [&](std::size_t k) {
    return dinv[static_cast<std::size_t>(looped.row()[k])] * static_cast<double>(looped.value(k)) *
           dinv[static_cast<std::size_t>(looped.col()[k])];
  });
}

/// Row-normalised: entry (i, j) = a_ij / Σ_j' a_ij' (the mean over node i's in-neighbours).
template <class T>
csr<T> mean_norm(const csr<T>& a) {
  const std::vector<double> s = detail::row_sums(a);
  return detail::with_entry_values(a, [&](std::size_t k) {
    const double d = s[static_cast<std::size_t>(a.row()[k])];
    return d != 0 ? static_cast<double>(a.value(k)) / d : 0.0;
  });
}

/// Sum aggregation: a itself.
template <class T>
csr<T> sum_norm(const csr<T>& a) {
  return a;
}

template <class T>
csr<T> normalize(const csr<T>& a, normalization kind) {
  switch (kind) {
    case normalization::gcn: return gcn_norm(a);
    case normalization::mean: return mean_norm(a);
    case normalization::sum: break;
  }
  return sum_norm(a);
}

}  // namespace moekit::graph

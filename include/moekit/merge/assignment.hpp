// moekit/merge/assignment.hpp — the linear sum assignment problem: given a
// dense cost matrix C (n, m), n <= m, pick one distinct column per row so that
// Σ_i C[i, col(i)] is minimal (or maximal). Solved by shortest augmenting
// paths (the Jonker-Volgenant family): rows enter one at a time, each through
// a Dijkstra search over reduced costs C[i, j] - u[i] - v[j] >= 0, after which
// the dual potentials u, v are updated and the path is flipped. O(n² m) in the
// worst case, dense double arithmetic, no allocation after the first.
//
// The answer carries its own proof of optimality: for a minimisation,
//   u[i] + v[j] <= C[i, j] for every (i, j),  equality on every assigned pair,
//   v[j] <= 0 for every column, v[j] = 0 on every unassigned column,
// so Σ u + Σ v = total is a lower bound that the assignment attains. For a
// maximisation the potentials are those of the problem as stated:
// u[i] + v[j] >= C[i, j], v[j] >= 0, equality and Σ u + Σ v = total as above.
//
//   std::vector<double> c = {4, 1, 3,
//                            2, 0, 5,
//                            3, 2, 2};                             // (3, 3), row-major
//   auto a = merge::linear_sum_assignment(c, 3, 3);                // a.column = {1, 0, 2}, a.total = 5
//   auto b = merge::linear_sum_assignment(c, 3, 3, merge::sense::maximize);
//   auto s = merge::linear_sum_assignment(similarity, merge::sense::maximize);  // a (n, m) host tensor
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../tensor/tensor.hpp"

namespace moekit::merge {

/// Whether the assignment minimises or maximises the total.
enum class sense { minimize, maximize };

/// An optimal assignment of n rows to distinct columns of m >= n.
struct assignment {
  std::vector<std::size_t> column;  // (n) row i -> its column
  std::vector<double> u;            // (n) row potentials
  std::vector<double> v;            // (m) column potentials
  double total = 0;                 // Σ_i C[i, column[i]] = Σ u + Σ v
};

namespace detail {

/// The reusable state of one solve (every buffer sized once).
struct lsa_solver {
  std::size_t n, m;
  const double* c;  // (n, m) row-major
  double sign;      // +1 minimise, -1 maximise (the costs are never copied)
  std::vector<double> u, v, dist;              // (n), (m), (m)
  std::vector<std::ptrdiff_t> row_of, col_of;  // (m) column -> row or -1, (n) row -> column or -1
  std::vector<std::ptrdiff_t> pred;            // (m) row from which the search reached column j
  std::vector<unsigned char> reached;          // (m) column settled by the current search
  std::vector<std::size_t> settled_rows, settled_cols;

  lsa_solver(const double* cost, std::size_t rows, std::size_t cols, double s)
      : n(rows), m(cols), c(cost), sign(s), u(rows, 0.0), v(cols, 0.0), dist(cols), row_of(cols, -1),
        col_of(rows, -1), pred(cols, -1), reached(cols, 0) {
    settled_rows.reserve(rows);
    settled_cols.reserve(cols);
  }

  /// Adds row `root` to the matching along a shortest augmenting path.
  void augment(std::size_t root) {
    constexpr double inf = std::numeric_limits<double>::infinity();
    std::fill(dist.begin(), dist.end(), inf);
    settled_rows.clear();
    settled_cols.clear();
    std::size_t i = root;
    double reach = 0;  // distance of the last column settled
    std::ptrdiff_t sink = -1;
    while (sink < 0) {
      settled_rows.push_back(i);
      const double* ci = c + i * m;
      const double base = reach - u[i];
      double lowest = inf;
      std::size_t best = m;
      // One contiguous pass: relax row i's edges, and find the closest
      // unsettled column (a free column wins a tie: the search ends sooner).
      for (std::size_t j = 0; j < m; ++j) {
        if (reached[j]) continue;
        const double r = base + sign * ci[j] - v[j];
        if (r < dist[j]) dist[j] = r, pred[j] = std::ptrdiff_t(i);
        if (dist[j] < lowest || (dist[j] == lowest && row_of[j] < 0)) lowest = dist[j], best = j;
      }
      if (best == m) throw value_error("linear_sum_assignment: no augmenting path (internal error)");
      reach = lowest;
      reached[best] = 1;
      settled_cols.push_back(best);
      if (row_of[best] < 0) sink = std::ptrdiff_t(best);
      else i = std::size_t(row_of[best]);
    }
    // Potentials: keep every reduced cost >= 0 and make the path's edges tight.
    u[root] += reach;
    for (std::size_t r : settled_rows)
      if (r != root) u[r] += reach - dist[std::size_t(col_of[r])];
    for (std::size_t j : settled_cols) {
      v[j] -= reach - dist[j];
      reached[j] = 0;
    }
    // Flip the path: every column on it takes the row it was reached from.
    for (auto j = std::size_t(sink);;) {
      const auto r = std::size_t(pred[j]);
      row_of[j] = std::ptrdiff_t(r);
      const std::ptrdiff_t previous = col_of[r];
      col_of[r] = std::ptrdiff_t(j);
      if (r == root) break;
      j = std::size_t(previous);
    }
  }
};

}  // namespace detail

/// The optimal assignment of the rows of `cost` (rows x cols, row-major,
/// rows <= cols, every entry finite) to distinct columns. Throws value_error
/// when the matrix is empty, has more rows than columns, a size does not
/// match, or an entry is NaN or infinite.
inline assignment linear_sum_assignment(std::span<const double> cost, std::size_t rows, std::size_t cols,
                                        sense goal = sense::minimize) {
  const std::string op = "linear_sum_assignment: (" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
  if (rows == 0 || cols == 0) throw value_error(op + ": the cost matrix is empty");
  if (rows > cols)
    throw value_error(op + ": more rows than columns (transpose the costs to assign the columns instead)");
  if (cost.size() != rows * cols)
    throw value_error(op + ": " + std::to_string(cost.size()) + " costs given, need rows x cols = " +
                      std::to_string(rows * cols));
  for (std::size_t k = 0; k < cost.size(); ++k)
    if (!std::isfinite(cost[k]))
      throw value_error(op + ": cost[" + std::to_string(k / cols) + ", " + std::to_string(k % cols) + "] = " +
                        std::to_string(cost[k]) + " is not finite");
  const double sign = goal == sense::minimize ? 1.0 : -1.0;
  detail::lsa_solver s(cost.data(), rows, cols, sign);
  for (std::size_t i = 0; i < rows; ++i) s.augment(i);

  assignment out;
  out.column.resize(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    out.column[i] = std::size_t(s.col_of[i]);
    out.total += cost[i * cols + out.column[i]];
  }
  out.u = std::move(s.u);
  out.v = std::move(s.v);
  if (goal == sense::maximize) {  // potentials of the problem as stated
    for (double& x : out.u) x = -x;
    for (double& x : out.v) x = -x;
  }
  return out;
}

/// The same on a host tensor (rows, cols) of float or double.
template <class T, class S>
  requires(S::rank() == 2 && std::is_floating_point_v<T>)
assignment linear_sum_assignment(const tensor<T, S, cpu>& cost, sense goal = sense::minimize) {
  const std::size_t rows = cost.extent(0), cols = cost.extent(1);
  if constexpr (std::is_same_v<T, double>) {
    return linear_sum_assignment(std::span<const double>(cost.data(), cost.size()), rows, cols, goal);
  } else {
    const std::vector<double> c(cost.data(), cost.data() + cost.size());
    return linear_sum_assignment(c, rows, cols, goal);
  }
}

}  // namespace moekit::merge

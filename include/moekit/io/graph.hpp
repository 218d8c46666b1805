// moekit/io/graph.hpp — the plain-text graph format of shared/data/README.md
// (section 4), in which Cora and CiteSeer are stored:
//
//   meta.txt      `key value...` lines; num_nodes, num_features, num_classes are used
//   features.txt  `N D NNZ`, then NNZ lines `node feature value` (sparse COO)
//   labels.txt    N lines: the class of node i, or -1 (unlabelled)
//   edges.txt     `u v` per undirected edge, each edge once
//   train.txt val.txt test.txt   node ids, one per line
//
//   auto cora = io::load_graph("../shared/data/cora");
//   cora.features;  // (2708, 1433) float
//   auto a = graph::make_csr(cora.edges, {.symmetrize = true});
//
// Every malformed input raises io_error naming the file and the line: a
// missing file, a wrong number of columns, a non-numeric or out-of-range
// value, a label outside [-1, classes), an edge endpoint or split id outside
// [0, N), a node listed twice in a split or in two splits, an unlabelled node
// in a split, counts that disagree with meta.txt or the features header.
//
// Hostile files (docs/design.md, "Hostile input"): counts must fit index_t
// (node, feature and label ids are int32), a file must hold the lines its
// counts declare before anything is allocated for them (labels.txt is read
// before features.txt so that N is backed by N lines), the dense features
// (N x D floats) must fit the allocation limit, and values must be finite.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "../core/allocation.hpp"
#include "../core/checked.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../data/graph_dataset.hpp"
#include "../tensor/ops/creation.hpp"

namespace moekit::io {

namespace detail {

/// One text file read line by line, for messages "file:line: what".
class text_file {
 public:
  explicit text_file(std::filesystem::path path) : path_(std::move(path)) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path_, ec))
      fail_file("no such file (the plain graph format is described in shared/data/README.md, section 4)");
    const std::uintmax_t bytes = std::filesystem::file_size(path_, ec);
    if (ec) fail_file("cannot read its size (" + ec.message() + ")");
    if (bytes > allocation_limit())
      fail_file("its " + std::to_string(bytes) + " bytes are more than the allocation limit of " +
                std::to_string(allocation_limit()) + " (moekit::set_allocation_limit)");
    std::ifstream in(path_, std::ios::binary);
    if (!in) fail_file("cannot open");
    text_.resize(static_cast<std::size_t>(bytes));
    in.read(text_.data(), static_cast<std::streamsize>(text_.size()));
    if (static_cast<std::uintmax_t>(in.gcount()) != bytes)
      fail_file("read " + std::to_string(in.gcount()) + " of its " + std::to_string(bytes) + " bytes");
  }

  /// Lines not read yet (a last line without '\n' counts); bounds what the
  /// file can hold before anything is allocated for it.
  std::size_t lines_left() const noexcept {
    if (pos_ >= text_.size()) return 0;
    const auto rest = std::string_view(text_).substr(pos_);
    return static_cast<std::size_t>(std::ranges::count(rest, '\n')) + (rest.back() == '\n' ? 0 : 1);
  }

  /// The next line's whitespace-separated fields; false at the end of the file.
  bool next(std::vector<std::string_view>& fields) {
    if (pos_ >= text_.size()) return false;
    std::size_t end = text_.find('\n', pos_);
    if (end == std::string::npos) end = text_.size();
    std::string_view line(text_.data() + pos_, end - pos_);
    pos_ = end + 1;
    ++line_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    fields.clear();
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      const std::size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
      if (i > start) fields.push_back(line.substr(start, i - start));
    }
    return true;
  }
  /// next() that expects exactly `n` fields.
  bool next(std::vector<std::string_view>& fields, std::size_t n, const char* what) {
    if (!next(fields)) return false;
    if (fields.size() != n)
      fail("expected " + std::to_string(n) + " column" + (n == 1 ? "" : "s") + " (" + what + "), got " +
           std::to_string(fields.size()));
    return true;
  }

  template <class I>
  I integer(std::string_view s, const char* what) const {
    long long v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc::result_out_of_range && r.ptr == s.data() + s.size())
      fail(std::string(what) + " " + std::string(s) + " is out of range");
    if (r.ec != std::errc{} || r.ptr != s.data() + s.size())
      fail(std::string(what) + " '" + std::string(s) + "' is not an integer");
    if (v < static_cast<long long>(std::numeric_limits<I>::min()) ||
        v > static_cast<long long>(std::numeric_limits<I>::max()))
      fail(std::string(what) + " " + std::string(s) + " is out of range");
    return static_cast<I>(v);
  }
  /// A finite float: inf, nan and values beyond float's range are errors.
  float number(std::string_view s, const char* what) const {
    float v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc::result_out_of_range && r.ptr == s.data() + s.size())
      fail(std::string(what) + " " + std::string(s) + " is out of float's range");
    if (r.ec != std::errc{} || r.ptr != s.data() + s.size())
      fail(std::string(what) + " '" + std::string(s) + "' is not a number");
    if (!std::isfinite(v)) fail(std::string(what) + " " + std::string(s) + " is not finite");
    return v;
  }
  /// An integer in [lo, hi).
  index_t in_range(std::string_view s, long long lo, std::size_t hi, const char* what) const {
    const auto v = integer<long long>(s, what);
    if (v < lo || (v >= 0 && static_cast<unsigned long long>(v) >= hi))
      fail(std::string(what) + " " + std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " +
           std::to_string(hi) + ")");
    if (v < std::numeric_limits<index_t>::min() || v > std::numeric_limits<index_t>::max())
      fail(std::string(what) + " " + std::to_string(v) + " does not fit index_t (int32)");
    return static_cast<index_t>(v);
  }

  std::size_t line() const noexcept { return line_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw io_error("load_graph: " + path_.string() + ":" + std::to_string(line_) + ": " + what);
  }
  [[noreturn]] void fail_file(const std::string& what) const {
    throw io_error("load_graph: " + path_.string() + ": " + what);
  }

 private:
  std::filesystem::path path_;
  std::string text_;
  std::size_t pos_ = 0, line_ = 0;
};

struct graph_meta {
  std::string name;
  std::size_t nodes = 0, features = 0, classes = 0;
};

inline graph_meta read_graph_meta(const std::filesystem::path& path) {
  text_file f(path);
  std::map<std::string, std::vector<std::string_view>, std::less<>> kv;
  std::vector<std::string_view> fields;
  while (f.next(fields)) {
    if (fields.empty()) continue;
    if (fields.size() < 2) f.fail("expected `key value`, got '" + std::string(fields[0]) + "' alone");
    kv[std::string(fields[0])] = {fields.begin() + 1, fields.end()};
  }
  auto count = [&](const char* key) {
    const auto it = kv.find(key);
    if (it == kv.end()) f.fail_file(std::string("no '") + key + "' line");
    if (it->second.size() != 1) f.fail_file(std::string("'") + key + "' must have one value");
    const auto v = f.integer<long long>(it->second[0], key);
    if (v <= 0) f.fail_file(std::string("'") + key + "' must be positive");
    // Ids of nodes, features and classes are index_t (int32).
    if (v > std::numeric_limits<index_t>::max())
      f.fail_file(std::string("'") + key + "' " + std::to_string(v) + " is more than index_t (int32) can number (" +
                  std::to_string(std::numeric_limits<index_t>::max()) + ")");
    return static_cast<std::size_t>(v);
  };
  graph_meta m;
  m.nodes = count("num_nodes");
  m.features = count("num_features");
  m.classes = count("num_classes");
  if (const auto it = kv.find("name"); it != kv.end()) m.name = std::string(it->second[0]);
  return m;
}

/// Before the dense (N, D) features are allocated: NNZ possible and backed by
/// that many lines, N x D floats within the allocation limit (N and D are
/// meta.txt's counts, which fit index_t).
inline void check_features_claim(const text_file& f, const graph_meta& m, long long nnz) {
  const std::string nd = std::to_string(m.nodes) + " x " + std::to_string(m.features);
  std::size_t cells = 0, bytes = 0;
  if (!mul_fits(m.nodes, m.features, cells) || !mul_fits(cells, sizeof(float), bytes))
    f.fail("N x D = " + nd + " floats overflow std::size_t");
  if (nnz < 0 || static_cast<unsigned long long>(nnz) > cells)
    f.fail("NNZ " + std::to_string(nnz) + " is impossible for " + nd);
  if (static_cast<unsigned long long>(nnz) > f.lines_left())
    f.fail_file("ends after " + std::to_string(f.lines_left()) + " of the " + std::to_string(nnz) +
                " entries the header announces");
  if (bytes > allocation_limit())
    f.fail("N x D = " + nd + " floats need " + moekit::detail::bytes_str(bytes) +
           ", more than the allocation limit of " + moekit::detail::bytes_str(allocation_limit()) +
           " (moekit::set_allocation_limit)");
}

inline tensor<float, shape<dyn, dyn>> read_graph_features(const std::filesystem::path& path, const graph_meta& m) {
  text_file f(path);
  std::vector<std::string_view> row;
  if (!f.next(row, 3, "N D NNZ")) f.fail_file("empty file: expected the header `N D NNZ`");
  const auto n = f.integer<long long>(row[0], "N"), d = f.integer<long long>(row[1], "D");
  const auto nnz = f.integer<long long>(row[2], "NNZ");
  if (n != static_cast<long long>(m.nodes) || d != static_cast<long long>(m.features))
    f.fail("header says " + std::to_string(n) + " x " + std::to_string(d) + " but meta.txt says " +
           std::to_string(m.nodes) + " nodes x " + std::to_string(m.features) + " features");
  check_features_claim(f, m, nnz);
  auto x = zeros<float>(shape<dyn, dyn>{m.nodes, m.features});  // (N, D)
  std::vector<bool> seen(m.nodes * m.features);                   // N x D bits: an entry given twice is an error
  for (long long k = 0; k < nnz; ++k) {
    if (!f.next(row, 3, "node feature value"))
      f.fail_file("ends after " + std::to_string(k) + " of the " + std::to_string(nnz) + " entries the header announces");
    const index_t i = f.in_range(row[0], 0, m.nodes, "node");
    const index_t j = f.in_range(row[1], 0, m.features, "feature");
    const std::size_t cell = static_cast<std::size_t>(i) * m.features + static_cast<std::size_t>(j);
    if (seen[cell]) f.fail("node " + std::to_string(i) + ", feature " + std::to_string(j) + " is given twice");
    seen[cell] = true;
    x(i, j) = f.number(row[2], "value");
  }
  if (f.next(row) && !row.empty()) f.fail("more than the " + std::to_string(nnz) + " entries the header announces");
  return x;
}

inline tensor<index_t, shape<dyn>> read_graph_labels(const std::filesystem::path& path, const graph_meta& m) {
  text_file f(path);
  if (f.lines_left() < m.nodes)
    f.fail_file("has " + std::to_string(f.lines_left()) + " lines, expected one per node (" + std::to_string(m.nodes) +
                ")");
  tensor<index_t, shape<dyn>> y(shape<dyn>{m.nodes});  // (N)
  std::vector<std::string_view> row;
  for (std::size_t i = 0; i < m.nodes; ++i) {
    if (!f.next(row, 1, "label"))
      f.fail_file("has " + std::to_string(i) + " lines, expected one per node (" + std::to_string(m.nodes) + ")");
    y[i] = f.in_range(row[0], -1, m.classes, "label");
  }
  if (f.next(row)) f.fail("more lines than nodes (" + std::to_string(m.nodes) + ")");
  return y;
}

inline edge_list read_graph_edges(const std::filesystem::path& path, const graph_meta& m) {
  text_file f(path);
  edge_list e{.nodes = m.nodes};
  std::vector<std::string_view> row;
  while (f.next(row, 2, "u v")) e.add(f.in_range(row[0], 0, m.nodes, "node"), f.in_range(row[1], 0, m.nodes, "node"));
  return e;
}

/// A split's ids; `owner` remembers which split (and line) claimed each node.
inline tensor<index_t, shape<dyn>> read_graph_split(const std::filesystem::path& path, const graph_meta& m,
                                                    const tensor<index_t, shape<dyn>>& labels,
                                                    std::vector<std::string>& owner) {
  text_file f(path);
  std::vector<index_t> ids;
  std::vector<std::string_view> row;
  const std::string here = path.filename().string();
  while (f.next(row, 1, "node id")) {
    const index_t i = f.in_range(row[0], 0, m.nodes, "node id");
    auto& claimed = owner[static_cast<std::size_t>(i)];
    if (!claimed.empty()) f.fail("node " + std::to_string(i) + " is listed already (" + claimed + ")");
    if (labels[static_cast<std::size_t>(i)] < 0) f.fail("node " + std::to_string(i) + " has no label (-1)");
    claimed = here + ":" + std::to_string(f.line());
    ids.push_back(i);
  }
  return moekit::detail::index_tensor_of(ids);
}

}  // namespace detail

/// Reads the graph in folder `dir` (meta, features, labels, edges, splits).
inline data::graph_dataset load_graph(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw io_error("load_graph: " + dir.string() +
                   ": no such folder (Cora and CiteSeer are in shared/data/cora and shared/data/citeseer)");
  const auto m = detail::read_graph_meta(dir / "meta.txt");
  data::graph_dataset d;
  d.name = m.name.empty() ? dir.filename().string() : m.name;
  d.classes = m.classes;
  // Labels first: their N lines back the node count before N x D features are allocated.
  d.labels = detail::read_graph_labels(dir / "labels.txt", m);
  d.features = detail::read_graph_features(dir / "features.txt", m);
  d.edges = detail::read_graph_edges(dir / "edges.txt", m);
  std::vector<std::string> owner(m.nodes);
  d.train = detail::read_graph_split(dir / "train.txt", m, d.labels, owner);
  d.val = detail::read_graph_split(dir / "val.txt", m, d.labels, owner);
  d.test = detail::read_graph_split(dir / "test.txt", m, d.labels, owner);
  return d;
}

}  // namespace moekit::io

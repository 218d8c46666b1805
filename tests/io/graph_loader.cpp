// The plain graph format (shared/data/README.md, section 4): a small valid
// graph written here and read back; each kind of malformed file raises
// io_error naming the file and the line; Cora itself when the shared data is
// there (MOEKIT_SHARED_DATA_DIR), skipped with a warning otherwise.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <unistd.h>

#include <moekit/io/graph.hpp>
#include <moekit/tensor/csr.hpp>

#ifndef MOEKIT_SHARED_DATA_DIR
#define MOEKIT_SHARED_DATA_DIR "../shared/data"
#endif

using namespace moekit;
namespace fs = std::filesystem;

namespace {

/// A 5-node, 3-feature, 2-class graph in the format, as file name -> contents;
/// tests overwrite single files to break it.
std::map<std::string, std::string> valid_files() {
  return {
      {"meta.txt", "name tiny\nnum_nodes 5\nnum_features 3\nnum_classes 2\nnum_edges 4\ntrain_per_class 1 1\n"},
      {"features.txt", "5 3 4\n0 0 1\n1 2 0.5\n3 1 1\n4 0 2\n"},
      {"labels.txt", "0\n1\n0\n-1\n1\n"},
      {"edges.txt", "0 1\n0 2\n1 3\n2 4\n"},
      {"train.txt", "0\n1\n"},
      {"val.txt", "2\n"},
      {"test.txt", "4\n"},
  };
}

struct graph_dir {
  fs::path path;
  explicit graph_dir(const std::map<std::string, std::string>& files) {
    static int counter = 0;
    path = fs::temp_directory_path() / ("moekit_graph_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
    for (const auto& [name, text] : files) std::ofstream(path / name, std::ios::binary) << text;
  }
  ~graph_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

/// Loading `files` with `name` replaced by `text` throws io_error containing `file:line` and `what`.
void require_error(const std::string& name, const std::string& text, const std::string& where, const std::string& what) {
  auto files = valid_files();
  files[name] = text;
  graph_dir d(files);
  INFO(name << ": " << text);
  REQUIRE_THROWS_AS(io::load_graph(d.path), io_error);
  REQUIRE_THROWS_WITH(io::load_graph(d.path),
                      Catch::Contains("load_graph") && Catch::Contains((d.path / where).string()) && Catch::Contains(what));
}

}  // namespace

TEST_CASE("load_graph reads a small graph in the plain format", "[io][graph]") {
  graph_dir d(valid_files());
  const auto g = io::load_graph(d.path);
  CHECK(g.name == "tiny");
  REQUIRE(g.nodes() == 5);
  REQUIRE(g.num_features() == 3);
  CHECK(g.classes == 2);
  CHECK(g.features(0, 0) == 1.0f);
  CHECK(g.features(1, 2) == 0.5f);
  CHECK(g.features(4, 0) == 2.0f);
  CHECK(g.features(2, 1) == 0.0f);
  CHECK(g.labels[3] == -1);
  CHECK(g.labels[4] == 1);
  REQUIRE(g.edges.size() == 4);
  CHECK(g.edges.src[3] == 2);
  CHECK(g.edges.dst[3] == 4);
  CHECK(g.train.size() == 2);
  CHECK(g.val[0] == 2);
  CHECK(g.test[0] == 4);
  const auto a = graph::make_csr(g.edges, {.symmetrize = true});
  CHECK(a.nnz() == 8);
}

TEST_CASE("load_graph names the file and line of malformed input", "[io][graph]") {
  // Wrong column counts.
  require_error("edges.txt", "0 1\n0 2 7\n", "edges.txt:2", "expected 2 columns");
  require_error("features.txt", "5 3 4\n0 0 1\n1 2\n3 1 1\n4 0 2\n", "features.txt:3", "expected 3 columns");
  require_error("labels.txt", "0\n1 1\n0\n-1\n1\n", "labels.txt:2", "expected 1 column");
  // Not numbers.
  require_error("edges.txt", "0 1\n0 x\n", "edges.txt:2", "'x' is not an integer");
  require_error("features.txt", "5 3 4\n0 0 1\n1 2 half\n3 1 1\n4 0 2\n", "features.txt:3", "'half' is not a number");
  require_error("train.txt", "0\n1.5\n", "train.txt:2", "not an integer");
  // Out of range.
  require_error("labels.txt", "0\n1\n2\n-1\n1\n", "labels.txt:3", "label 2 is out of range [-1, 2)");
  require_error("edges.txt", "0 1\n3 5\n", "edges.txt:2", "node 5 is out of range [0, 5)");
  require_error("edges.txt", "-1 1\n", "edges.txt:1", "node -1 is out of range");
  require_error("features.txt", "5 3 1\n0 3 1\n", "features.txt:2", "feature 3 is out of range [0, 3)");
  require_error("val.txt", "9\n", "val.txt:1", "node id 9 is out of range");
  // Splits: duplicates, overlaps, unlabelled nodes.
  require_error("train.txt", "0\n1\n0\n", "train.txt:3", "node 0 is listed already (train.txt:1)");
  require_error("test.txt", "4\n2\n", "test.txt:2", "node 2 is listed already (val.txt:1)");
  require_error("val.txt", "3\n", "val.txt:1", "node 3 has no label");
  // Counts that disagree.
  require_error("labels.txt", "0\n1\n0\n", "labels.txt", "has 3 lines, expected one per node (5)");
  require_error("labels.txt", "0\n1\n0\n-1\n1\n0\n", "labels.txt:6", "more lines than nodes");
  require_error("features.txt", "5 3 4\n0 0 1\n", "features.txt", "ends after 1 of the 4 entries");
  require_error("features.txt", "5 3 1\n0 0 1\n1 1 1\n", "features.txt:3", "more than the 1 entries");
  require_error("features.txt", "6 3 0\n", "features.txt:1", "meta.txt says 5 nodes");
  require_error("meta.txt", "num_nodes 5\nnum_classes 2\n", "meta.txt", "no 'num_features' line");
  require_error("meta.txt", "num_nodes five\nnum_features 3\nnum_classes 2\n", "meta.txt", "'five' is not an integer");

  // Missing files and folders.
  auto files = valid_files();
  files.erase("edges.txt");
  graph_dir d(files);
  REQUIRE_THROWS_WITH(io::load_graph(d.path), Catch::Contains((d.path / "edges.txt").string()) &&
                                                   Catch::Contains("no such file"));
  REQUIRE_THROWS_AS(io::load_graph(d.path / "nowhere"), io_error);
  REQUIRE_THROWS_WITH(io::load_graph(d.path / "nowhere"), Catch::Contains("no such folder"));
}

TEST_CASE("load_graph reads Cora with the standard split", "[io][graph][data]") {
  const fs::path dir = fs::path(MOEKIT_SHARED_DATA_DIR) / "cora";
  if (!fs::exists(dir / "meta.txt")) {
    WARN("skipped: no Cora at " << dir.string() << " (set MOEKIT_SHARED_DATA_DIR)");
    return;
  }
  const auto cora = io::load_graph(dir);
  CHECK(cora.name == "cora");
  REQUIRE(cora.nodes() == 2708);
  REQUIRE(cora.num_features() == 1433);
  CHECK(cora.classes == 7);
  CHECK(cora.train.size() == 140);
  CHECK(cora.val.size() == 500);
  CHECK(cora.test.size() == 1000);
  CHECK(cora.edges.size() == 5278);
  double ones = 0;
  for (std::size_t i = 0; i < cora.features.size(); ++i) ones += cora.features[i];
  CHECK(ones == 49216);  // binary bag of words, 49216 stored entries
  const auto a = graph::make_csr(cora.edges, {.symmetrize = true});
  CHECK(a.nnz() == 10556);
  std::size_t class0 = 0;
  for (std::size_t i = 0; i < cora.nodes(); ++i) class0 += cora.labels[i] == 0;
  CHECK(class0 == 351);
}

TEST_CASE("load_graph reads CiteSeer with its unlabelled nodes", "[io][graph][data]") {
  const fs::path dir = fs::path(MOEKIT_SHARED_DATA_DIR) / "citeseer";
  if (!fs::exists(dir / "meta.txt")) {
    WARN("skipped: no CiteSeer at " << dir.string() << " (set MOEKIT_SHARED_DATA_DIR)");
    return;
  }
  const auto cs = io::load_graph(dir);
  REQUIRE(cs.nodes() == 3327);
  REQUIRE(cs.num_features() == 3703);
  CHECK(cs.classes == 6);
  CHECK(cs.train.size() == 120);
  CHECK(cs.val.size() == 500);
  CHECK(cs.test.size() == 1000);
  CHECK(cs.edges.size() == 4552);
  std::size_t unlabelled = 0;
  for (std::size_t i = 0; i < cs.nodes(); ++i) unlabelled += cs.labels[i] == -1;
  CHECK(unlabelled == 15);
}

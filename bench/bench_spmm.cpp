// bench_spmm — sparse graph ops against PyTorch (bench/python/spmm_torch.py):
//   1. SpMM forward + backward, Y = Â·X with X (n, 64) requiring grad and Â
//      the GCN-normalised adjacency, on Cora and on a synthetic CSBM graph
//      with >= 1 M edges (>= 2 M stored entries);
//   2. one training epoch of a 2-layer GCN (hidden 64, dropout 0.5, AdamW) on
//      Cora with the standard split.
// With --dump DIR it writes the exact inputs (CSR arrays, X, the seed
// gradient, Cora's features and split) and moekit's outputs there, so the
// PyTorch script times torch.sparse.mm on identical data and checks that its
// results match. JSON lines on stdout, a table on stderr.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <moekit.hpp>
#include <moekit/autograd/ops/sparse.hpp>
#include <moekit/graph/csbm.hpp>
#include <moekit/graph/gcn_conv.hpp>
#include <moekit/graph/gnn.hpp>
#include <moekit/io/graph.hpp>

#include "bench_util.hpp"
#include "common/flags.hpp"

#ifndef MOEKIT_SHARED_DATA_DIR
#define MOEKIT_SHARED_DATA_DIR "../shared/data"
#endif

namespace {

using namespace moekit;
namespace fs = std::filesystem;

struct options {
  int threads = 1, warmup = 3, reps = 15, features = 64;
  int synthetic_nodes = 200000;
  double synthetic_degree = 10;  // undirected edges = nodes * degree / 2
  std::string data = std::string(MOEKIT_SHARED_DATA_DIR) + "/cora";
  std::string dump;
  bool skip_cora = false;
};

/// Raw little-endian array: what numpy.fromfile reads back.
template <class T>
void dump_array(const fs::path& file, const T* data, std::size_t n) {
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(T)));
  if (!out) throw io_error("cannot write " + file.string());
}

void dump_csr(const fs::path& dir, const std::string& name, const graph::csr<float>& a, std::size_t f) {
  dump_array(dir / (name + ".row_ptr.i32"), a.row_ptr().data(), a.rows() + 1);
  dump_array(dir / (name + ".col.i32"), a.col().data(), a.nnz());
  dump_array(dir / (name + ".val.f32"), a.values().data(), a.nnz());
  std::ofstream(dir / (name + ".meta.json")) << "{\"nodes\": " << a.rows() << ", \"nnz\": " << a.nnz()
                                              << ", \"features\": " << f << "}\n";
}

/// SpMM forward + backward and forward alone on Â (n, n), X (n, f).
void bench_spmm(const options& o, const std::string& name, const graph::csr<float>& a) {
  const std::size_t n = a.rows(), f = static_cast<std::size_t>(o.features);
  rng g(42);
  const auto x = normal<float>(g, shape<dyn, dyn>{n, f});
  const auto seed = normal<float>(g, shape<dyn, dyn>{n, f});  // dL/dY
  tensor<float, shape<dyn, dyn>> y, dx;
  auto fwd_bwd = [&] {
    tape t;
    auto xv = t.variable(x);
    auto out = spmm(a, xv);  // (n, f)
    t.backward(out, seed);
    y = out.value();
    dx = xv.grad();
  };
  auto fwd = [&] { auto out = spmm(a, x); };
  auto s = bench::interleaved({fwd_bwd, fwd}, o.warmup, o.reps);
  const double flop = 2.0 * 2.0 * static_cast<double>(a.nnz()) * static_cast<double>(f);  // fwd + bwd
  bench::json_line()
      .add("bench", "spmm_fwd_bwd").add("config", name + " n=" + std::to_string(n) + " nnz=" + std::to_string(a.nnz()) +
                                                   " f=" + std::to_string(f))
      .add("backend", "cpu").add("dtype", "f32").add("threads", o.threads)
      .add("", s[0]).add("gflops", flop / (s[0].median_ms * 1e6)).add("forward_median_ms", s[1].median_ms)
      .add("ceiling", "torch.sparse.mm (bench/python/spmm_torch.py)").print();
  std::fprintf(stderr, "spmm fwd+bwd %-9s n=%-7zu nnz=%-8zu f=%zu  %8.3f ms (p10 %.3f, p90 %.3f) %6.2f GFLOP/s | fwd %8.3f ms\n",
               name.c_str(), n, a.nnz(), f, s[0].median_ms, s[0].p10_ms, s[0].p90_ms, flop / (s[0].median_ms * 1e6),
               s[1].median_ms);
  if (!o.dump.empty()) {
    const fs::path dir = o.dump;
    dump_csr(dir, name, a, f);
    dump_array(dir / (name + ".x.f32"), x.data(), x.size());
    dump_array(dir / (name + ".dy.f32"), seed.data(), seed.size());
    dump_array(dir / (name + ".y.f32"), y.data(), y.size());
    dump_array(dir / (name + ".dx.f32"), dx.data(), dx.size());
  }
}

/// One full-batch training epoch of a 2-layer GCN on Cora (forward, loss on
/// the 140 training nodes, backward, AdamW step).
void bench_gcn_epoch(const options& o, const graph::dataset& cora, const graph::csr<float>& adj) {
  using model = graph::gnn<graph::gcn_conv<>>;
  rng g(0);
  model net(g, {.in = cora.num_features(), .hidden = 64, .classes = cora.classes, .layers = 2, .dropout = 0.5,
                .batch_norm = false, .seed = 1});
  optim::adamw<float> opt(net, {.lr = 0.01, .weight_decay = 5e-4});
  const auto labels = gather_rows(cora.labels, cora.train);
  float last_loss = 0;
  auto epoch = [&] {
    tape t;
    opt.zero_grad();
    auto logits = net(adj, t.input(cora.features));                      // (2708, 7)
    auto loss = cross_entropy(gather_rows(logits, cora.train), labels);  // scalar
    t.backward(loss);
    opt.step();
    last_loss = loss.value()[0];
  };
  auto s = bench::interleaved({epoch}, o.warmup, o.reps);
  bench::json_line()
      .add("bench", "gcn_epoch").add("config", "cora 2 layers hidden 64 dropout 0.5 adamw")
      .add("backend", "cpu").add("dtype", "f32").add("threads", o.threads).add("", s[0])
      .add("loss_after", static_cast<double>(last_loss))
      .add("ceiling", "PyTorch GCN with torch.sparse.mm (bench/python/spmm_torch.py)").print();
  std::fprintf(stderr, "gcn epoch cora (2 x 64)          %8.3f ms (p10 %.3f, p90 %.3f), loss %.4f\n", s[0].median_ms,
               s[0].p10_ms, s[0].p90_ms, static_cast<double>(last_loss));
  if (!o.dump.empty()) {
    const fs::path dir = o.dump;
    dump_array(dir / "cora.features.f32", cora.features.data(), cora.features.size());
    dump_array(dir / "cora.labels.i32", cora.labels.data(), cora.labels.size());
    dump_array(dir / "cora.train.i32", cora.train.data(), cora.train.size());
    std::ofstream(dir / "cora.dataset.json") << "{\"nodes\": " << cora.nodes() << ", \"features\": "
                                             << cora.num_features() << ", \"classes\": " << cora.classes
                                             << ", \"train\": " << cora.train.size() << "}\n";
  }
}

}  // namespace

int main(int argc, char** argv) try {
  bench::relaunch(argv);
  options o;
  moekit::flags cli("bench_spmm", "SpMM forward+backward (Cora, a >= 1 M-edge CSBM graph) and a GCN epoch on Cora.\n"
                                  "JSON lines on stdout; a table on stderr. Compare with bench/python/spmm_torch.py.");
  cli.add("threads", o.threads, "threads for moekit loops and BLAS");
  cli.add("warmup", o.warmup, "untimed repetitions first");
  cli.add("reps", o.reps, "timed repetitions (median reported)");
  cli.add("features", o.features, "columns of X");
  cli.add("synthetic-nodes", o.synthetic_nodes, "nodes of the synthetic graph");
  cli.add("synthetic-degree", o.synthetic_degree, "average degree of the synthetic graph");
  cli.add("data", o.data, "Cora in the plain graph format");
  cli.add("skip-cora", o.skip_cora, "only the synthetic graph");
  cli.add("dump", o.dump, "folder to write inputs and outputs to, for spmm_torch.py");
  if (!cli.parse(argc, argv)) return 0;
  bench::print_blas_line();
  moekit::set_num_threads(o.threads);
  if (!o.dump.empty()) fs::create_directories(o.dump);
  std::fprintf(stderr, "bench_spmm: %d thread(s), %d warm-up, %d timed repetitions\n", o.threads, o.warmup, o.reps);

  if (!o.skip_cora) {
    const auto cora = io::load_graph(o.data);
    const auto adj = graph::gcn_norm(graph::make_csr(cora.edges, {.symmetrize = true}));
    bench_spmm(o, "cora", adj);
    bench_gcn_epoch(o, cora, adj);
  }
  const auto syn = graph::make_csbm({.classes = 8, .nodes = static_cast<std::size_t>(o.synthetic_nodes),
                                     .avg_degree = o.synthetic_degree, .homophily = 0.8, .features = 1, .seed = 7});
  bench_spmm(o, "csbm", graph::gcn_norm(graph::make_csr(syn.edges, {.symmetrize = true})));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_spmm: %s\n", e.what());
  return 2;
}

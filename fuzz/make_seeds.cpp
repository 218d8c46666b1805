// fuzz/make_seeds.cpp — writes the seed corpora under fuzz/corpus/<target>/:
// small valid inputs (and a few near misses) made with moekit's own writers.
//
//   build-fuzz/fuzz/make_seeds fuzz/corpus      (scripts/fuzz --seeds runs it)
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <zlib.h>

#include <moekit/io/checkpoint.hpp>

#include "checkpoint_model.hpp"
#include "fuzz_common.hpp"

namespace fs = std::filesystem;
using namespace moekit;

namespace {

void write_gzip(const fs::path& path, std::string_view bytes) {
  gzFile f = gzopen(path.c_str(), "wb9");
  if (!f || gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) != static_cast<int>(bytes.size()) ||
      gzclose(f) != Z_OK)
    throw io_error("make_seeds: cannot write " + path.string());
}

/// An IDX file of unsigned bytes with extents `dims`, values 0, 1, 2, ...
std::string idx_bytes(const std::vector<std::uint32_t>& dims) {
  std::string s{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  std::size_t total = 1;
  for (const auto d : dims) {
    for (int k = 3; k >= 0; --k) s += static_cast<char>((d >> (8 * k)) & 0xFF);
    total *= d;
  }
  for (std::size_t i = 0; i < total; ++i) s += static_cast<char>(i % 10);
  return s;
}

void idx_seeds(const fs::path& dir) {
  const std::string images = idx_bytes({3, 4, 4}), labels = idx_bytes({5});
  moekit_fuzz::write_file(dir / "images.idx", images);
  moekit_fuzz::write_file(dir / "labels.idx", labels);
  write_gzip(dir / "images.idx.gz", images);
  write_gzip(dir / "labels.idx.gz", labels);
}

void safetensors_seeds(const fs::path& dir) {
  const std::vector<float> w{1, 2, 3, 4, 5, 6};
  const std::vector<std::int64_t> step{7};
  const std::vector<std::uint8_t> mask{1, 0, 1};
  const std::vector<io::tensor_record> records{
      {"layer.weight", "F32", {2, 3}, std::as_bytes(std::span(w))},
      {"step", "I64", {}, std::as_bytes(std::span(step))},
      {"mask", "BOOL", {3}, std::as_bytes(std::span(mask))},
      {"empty", "F64", {0, 4}, std::as_bytes(std::span(w).first(0))},
  };
  io::save_safetensors(dir / "three.safetensors", records, {{"format", "pt"}, {"note", "caf\xC3\xA9 \"q\"\n"}});
  io::save_safetensors(dir / "one.safetensors", std::span(records).first(1));
  io::save_safetensors(dir / "none.safetensors", std::span<const io::tensor_record>{});
}

void checkpoint_seeds(const fs::path& dir) {
  rng g(7);
  moekit_fuzz::checkpoint_model model(g);
  moekit_fuzz::checkpoint_optimizer opt(model);
  io::save_checkpoint(dir / "fresh.safetensors", model, opt, {{"epoch", "0"}});
  tape t;
  const auto x = normal<float>(g, shape<dyn, moekit_fuzz::checkpoint_config.in>{4});  // (4, in)
  tensor<index_t, shape<dyn>> y(shape<dyn>{4});                                        // (4)
  for (std::size_t i = 0; i < 4; ++i) y[i] = static_cast<index_t>(i % moekit_fuzz::checkpoint_config.classes);
  opt.zero_grad();
  t.backward(cross_entropy(model(t.input(x)), y));
  opt.step();
  io::save_checkpoint(dir / "stepped.safetensors", model, opt, {{"epoch", "1"}});
}

void graph_seeds(const fs::path& dir) {
  using namespace std::string_literals;
  // meta, features, labels, edges, train, val, test, joined by NUL bytes (fuzz_graph.cpp).
  const std::string small = "name tiny\nnum_nodes 4\nnum_features 3\nnum_classes 2\n"s + '\0' +
                            "4 3 3\n0 0 1.0\n1 2 0.5\n3 1 -2e-3\n"s + '\0' + "0\n1\n-1\n1\n"s + '\0' +
                            "0 1\n1 2\n2 3\n"s + '\0' + "0\n"s + '\0' + "1\n"s + '\0' + "3\n"s;
  moekit_fuzz::write_file(dir / "tiny.graph", small);
  const std::string crlf = "num_nodes 2\r\nnum_features 1\r\nnum_classes 1\r\n"s + '\0' + "2 1 0\r\n"s + '\0' +
                           "0\r\n0\r\n"s + '\0' + ""s + '\0' + "0\r\n"s + '\0' + ""s + '\0' + "1\r\n"s;
  moekit_fuzz::write_file(dir / "crlf.graph", crlf);
}

void flags_seeds(const fs::path& dir) {
  using namespace std::string_literals;
  moekit_fuzz::write_file(dir / "all", "--epochs\0"s "3\0"s "--batch=32\0"s "--lr\0"s "0.01\0"s "--warmup=0.5\0"s
                                       "--verbose\0"s "--save\0"s "out.safetensors"s);
  moekit_fuzz::write_file(dir / "negated", "--no-verbose\0"s "--lr=1e-4"s);
  moekit_fuzz::write_file(dir / "help", "--help"s);
  moekit_fuzz::write_file(dir / "bad", "--lr\0"s "inf\0"s "--epochs=-1"s);
  // Found by fuzz_flags: CLI11's std::stoll threw std::out_of_range past the parser.
  moekit_fuzz::write_file(dir / "overflow", "--no-verbose=99999999999999999999"s);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds <corpus folder>\n";
    return 2;
  }
  const fs::path root = argv[1];
  const std::pair<const char*, void (*)(const fs::path&)> targets[] = {
      {"fuzz_safetensors", safetensors_seeds}, {"fuzz_checkpoint", checkpoint_seeds}, {"fuzz_idx", idx_seeds},
      {"fuzz_graph", graph_seeds},             {"fuzz_flags", flags_seeds}};
  for (const auto& [name, make] : targets) {
    fs::create_directories(root / name);
    make(root / name);
    std::cout << "make_seeds: " << (root / name).string() << "\n";
  }
  return 0;
}

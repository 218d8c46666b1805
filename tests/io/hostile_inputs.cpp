// Hostile inputs (issue 15, docs/design.md "Hostile input"): sizes that
// overflow, an allocation limit, files that declare more than they hold,
// ids that do not fit int32, non-finite features, damaged gzip streams and
// trailing data. Every input is made here; each must raise the named
// moekit::error (never crash, abort, allocate what a header claims, or load
// wrong data), and valid neighbours of each still load.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <zlib.h>

#include "../support/temp_dir.hpp"
#include <moekit/core/allocation.hpp>
#include <moekit/core/checked.hpp>
#include <moekit/io/graph.hpp>
#include <moekit/io/idx.hpp>
#include <moekit/io/safetensors.hpp>
#include <moekit/io/text.hpp>
#include <moekit/tensor/tensor.hpp>

namespace hostile_inputs_test {

using namespace moekit;
namespace fs = std::filesystem;
using moekit::testing::temp_dir;

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream os(p, std::ios::binary | std::ios::trunc);
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(os.good());
}

/// `raw` as one gzip member (zlib's deflate with the gzip wrapper) at `level`
/// (0: stored blocks, so a flipped data bit changes data but not the structure).
std::string gzip_member(const std::string& raw, int level) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(raw.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

/// An IDX file of unsigned bytes: 0 0 0x08 ndim, big-endian u32 dims, data.
std::string idx_file(const std::vector<std::uint32_t>& dims, const std::string& data) {
  std::string out{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  for (auto d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((d >> shift) & 0xFF);
  return out + data;
}

/// n labels in [0, 10), varied so that a changed byte is a changed label.
std::string label_bytes(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + i / 11) % 10);
  return s;
}

/// The message of the E that f throws; fails the test when f throws nothing or another type.
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("wrong exception type: " << e.what());
  }
  FAIL("nothing was thrown");
  return "";
}

/// A valid 5-node graph; tests replace single files.
std::map<std::string, std::string> graph_files() {
  return {
      {"meta.txt", "num_nodes 5\nnum_features 3\nnum_classes 2\n"},
      {"features.txt", "5 3 2\n0 0 1\n4 2 0.5\n"},
      {"labels.txt", "0\n1\n0\n-1\n1\n"},
      {"edges.txt", "0 1\n2 4\n"},
      {"train.txt", "0\n1\n"},
      {"val.txt", "2\n"},
      {"test.txt", "4\n"},
  };
}

fs::path write_graph(const temp_dir& dir, const std::map<std::string, std::string>& files) {
  const fs::path g = dir / "graph";
  fs::create_directories(g);
  for (const auto& [name, text] : files) write_file(g / name, text);
  return g;
}

/// load_graph of the valid graph with `name` replaced by `text`: io_error naming `where` and `what`.
void require_graph_error(const std::string& name, const std::string& text, const std::string& where,
                         const std::string& what) {
  temp_dir dir("hostile");
  auto files = graph_files();
  files[name] = text;
  const fs::path g = write_graph(dir, files);
  INFO(name << ": " << text.substr(0, 80));
  const std::string msg = message_of<io_error>([&] { io::load_graph(g); });
  REQUIRE_THAT(msg, Catch::Contains((g / where).string()) && Catch::Contains(what));
}

TEST_CASE("hostile: tensor sizes whose product overflows are shape_errors naming the shape", "[hostile]") {
  const std::size_t big = std::size_t{1} << 32;
  // 2^32 x 2^32 elements wrap to 0; 2^62 floats are 2^64 bytes, which wrap to 0 too.
  const auto m1 = message_of<shape_error>([&] { tensor<float, shape<dyn, dyn>> t(shape<dyn, dyn>{big, big}); });
  REQUIRE_THAT(m1, Catch::Contains("tensor") && Catch::Contains("(4294967296, 4294967296)"));
  const auto m2 =
      message_of<shape_error>([&] { tensor<float, shape<dyn>> t(shape<dyn>{std::size_t{1} << 62}); });
  REQUIRE_THAT(m2, Catch::Contains("(4611686018427387904)") && Catch::Contains("4-byte"));
  // A view cannot claim an overflowing shape of the same wrapped size.
  tensor<float, shape<dyn>> empty(shape<dyn>{0});  // (0)
  const auto m3 = message_of<shape_error>([&] { (void)empty.reshape(shape<dyn, dyn, dyn>{big, big, 0}); });
  REQUIRE_THAT(m3, Catch::Contains("reshape"));
  const auto m4 = message_of<shape_error>([&] { (void)empty.reshape(shape<dyn, dyn>{big, big}); });
  REQUIRE_THAT(m4, Catch::Contains("reshape") && Catch::Contains("(4294967296, 4294967296)"));

  std::size_t out = 7;
  REQUIRE_FALSE(mul_fits(std::size_t{1} << 32, std::size_t{1} << 32, out));
  REQUIRE(out == 7);
  REQUIRE(mul_fits(std::size_t{3} << 30, std::size_t{4}, out));
  REQUIRE(out == std::size_t{12} << 30);
}

TEST_CASE("hostile: the allocation limit turns large requests into allocation_error", "[hostile]") {
  const std::size_t before = allocation_limit();
  {
    scoped_allocation_limit cap(std::size_t{1} << 20);  // 1 MiB
    REQUIRE(allocation_limit() == std::size_t{1} << 20);
    tensor<float, shape<dyn>> small(shape<dyn>{1000});  // (1000): 4000 bytes, allowed
    REQUIRE(small.defined());
    const auto msg = message_of<allocation_error>([] { tensor<float, shape<dyn>> t(shape<dyn>{1'000'000}); });
    REQUIRE_THAT(msg, Catch::Contains("4000000 bytes") && Catch::Contains("allocation limit of 1048576 bytes"));
  }
  REQUIRE(allocation_limit() == before);
  {
    // No limit: the allocator's refusal (std::bad_alloc) comes out as allocation_error.
    scoped_allocation_limit none(no_allocation_limit);
    const std::size_t huge = (SIZE_MAX >> 1) + 1;
    const auto msg = message_of<allocation_error>([&] { tensor<std::uint8_t, shape<dyn>> t(shape<dyn>{huge}); });
    REQUIRE_THAT(msg, Catch::Contains(std::to_string(huge) + " bytes") && Catch::Contains("out of memory"));
  }
  REQUIRE(allocation_limit() == before);
}

TEST_CASE("hostile: MOEKIT_MAX_ALLOC_BYTES sets the default limit; garbage in it is a value_error", "[hostile]") {
  const char* old = std::getenv("MOEKIT_MAX_ALLOC_BYTES");
  const std::string saved = old ? old : "";
  ::setenv("MOEKIT_MAX_ALLOC_BYTES", "123456", 1);
  REQUIRE(moekit::detail::default_allocation_limit() == 123456);
  ::setenv("MOEKIT_MAX_ALLOC_BYTES", "12 GB", 1);
  REQUIRE_THROWS_WITH(moekit::detail::default_allocation_limit(), Catch::Contains("MOEKIT_MAX_ALLOC_BYTES='12 GB'"));
  REQUIRE_THROWS_AS(moekit::detail::default_allocation_limit(), value_error);
  if (old) ::setenv("MOEKIT_MAX_ALLOC_BYTES", saved.c_str(), 1);
  else ::unsetenv("MOEKIT_MAX_ALLOC_BYTES");
  REQUIRE(moekit::detail::default_allocation_limit() > 0);
}

TEST_CASE("hostile: load_graph counts and ids beyond int32 are io_errors", "[hostile]") {
  // A node count near 2^62 once made the features 2^64 bytes, wrapped to 0.
  require_graph_error("meta.txt", "num_nodes 4611686018427387904\nnum_features 1\nnum_classes 2\n", "meta.txt",
                      "'num_nodes' 4611686018427387904 is more than index_t (int32) can number");
  require_graph_error("meta.txt", "num_nodes 5\nnum_features 3\nnum_classes 4294967296\n", "meta.txt",
                      "'num_classes' 4294967296");
  require_graph_error("meta.txt", "num_nodes 99999999999999999999\nnum_features 3\nnum_classes 2\n", "meta.txt",
                      "num_nodes 99999999999999999999 is out of range");
  // Labels 2^32 and 2^32 + 1 once loaded as 0 and 1.
  require_graph_error("labels.txt", "0\n4294967296\n0\n-1\n1\n", "labels.txt:2", "label 4294967296 is out of range");
  require_graph_error("labels.txt", "0\n1\n4294967297\n-1\n1\n", "labels.txt:3", "label 4294967297 is out of range");
  require_graph_error("edges.txt", "0 1\n4294967296 2\n", "edges.txt:2", "node 4294967296 is out of range [0, 5)");
  require_graph_error("train.txt", "0\n4294967297\n", "train.txt:2", "node id 4294967297 is out of range");
  require_graph_error("features.txt", "5 3 1\n0 4294967296 1\n", "features.txt:2", "feature 4294967296 is out of range");
}

TEST_CASE("hostile: load_graph checks declared counts against the lines present before allocating", "[hostile]") {
  // Under a 1 MiB limit an allocation of what a header claims would be an
  // allocation_error; these are io_errors, so nothing of that size was asked for.
  scoped_allocation_limit cap(std::size_t{1} << 20);
  const std::string meta = "num_nodes 50000\nnum_features 50000\nnum_classes 2\n";
  {
    temp_dir dir("hostile");
    auto files = graph_files();
    files["meta.txt"] = meta;
    files["features.txt"] = "50000 50000 0\n";
    const fs::path g = write_graph(dir, files);  // labels.txt has 5 lines
    REQUIRE_THAT(message_of<io_error>([&] { io::load_graph(g); }),
                 Catch::Contains((g / "labels.txt").string()) && Catch::Contains("has 5 lines") &&
                     Catch::Contains("(50000)"));
  }
  {
    // Labels present: the dense 50000 x 50000 floats (10 GB) meet the limit, named with the header line.
    temp_dir dir("hostile");
    auto files = graph_files();
    files["meta.txt"] = meta;
    files["features.txt"] = "50000 50000 0\n";
    std::string labels;
    for (int i = 0; i < 50000; ++i) labels += i % 2 ? "1\n" : "0\n";
    files["labels.txt"] = labels;
    const fs::path g = write_graph(dir, files);
    REQUIRE_THAT(message_of<io_error>([&] { io::load_graph(g); }),
                 Catch::Contains((g / "features.txt:1").string()) && Catch::Contains("50000 x 50000") &&
                     Catch::Contains("10000000000 bytes") && Catch::Contains("allocation limit"));
  }
  // An entry count far beyond the lines present.
  require_graph_error("features.txt", "5 3 15\n0 0 1\n", "features.txt", "ends after 1 of the 15 entries");
  // A file larger than the limit is not read at all.
  {
    scoped_allocation_limit tiny(64);
    temp_dir dir("hostile");
    auto files = graph_files();
    files["edges.txt"] = std::string(100, '\n');
    const fs::path g = write_graph(dir, files);
    REQUIRE_THAT(message_of<io_error>([&] { io::load_graph(g); }),
                 Catch::Contains((g / "edges.txt").string()) && Catch::Contains("100 bytes") &&
                     Catch::Contains("allocation limit"));
  }
  // The valid graph still loads under the limit.
  temp_dir dir("hostile");
  const auto g = io::load_graph(write_graph(dir, graph_files()));
  REQUIRE(g.nodes() == 5);
  REQUIRE(g.features(4, 2) == 0.5f);
  REQUIRE(g.labels[4] == 1);
}

TEST_CASE("hostile: non-finite graph features are io_errors naming file and line", "[hostile]") {
  for (const char* bad : {"inf", "-inf", "nan", "infinity"})
    require_graph_error("features.txt", std::string("5 3 2\n0 0 1\n4 2 ") + bad + "\n", "features.txt:3",
                        std::string("value ") + bad + " is not finite");
  require_graph_error("features.txt", "5 3 2\n0 0 1e39\n4 2 0.5\n", "features.txt:2",
                      "value 1e39 is out of float's range");
}

TEST_CASE("hostile: a graph feature entry given twice is an io_error naming the line", "[hostile]") {
  require_graph_error("features.txt", "5 3 3\n0 0 1\n4 2 0.5\n0 0 2\n", "features.txt:4",
                      "node 0, feature 0 is given twice");
  require_graph_error("features.txt", "5 3 2\n4 2 0.5\n4 2 0.5\n", "features.txt:3", "given twice");
}

TEST_CASE("hostile: IDX headers that declare more than the file holds fail before reading", "[hostile]") {
  temp_dir dir("hostile");
  // Plain: 60000 x 28 x 28 declared, 10 bytes present.
  write_file(dir / "short", idx_file({60000, 28, 28}, std::string(10, '\1')));
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "short"); }),
               Catch::Contains((dir / "short").string()) && Catch::Contains("truncated") &&
                   Catch::Contains("promises 47040000 data bytes") && Catch::Contains("holds 10"));
  // Gzip: a small file declaring far more than deflate can expand it to is
  // refused from its size alone: the message names the claim and the bound.
  const std::string small = gzip_member(idx_file({60000, 28, 28}, std::string(1000, '\0')), 9);
  REQUIRE(small.size() < 100);
  write_file(dir / "small.gz", small);
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "small.gz"); }),
               Catch::Contains((dir / "small.gz").string()) && Catch::Contains("promises 47040000 data bytes") &&
                   Catch::Contains("more than a gzip file of " + std::to_string(small.size()) + " bytes"));
  // 2 MiB of zeros (about 2 KiB of gzip) under a header of 2^32 - 1 cubed: overflow.
  write_file(dir / "overflow.gz",
             gzip_member(idx_file({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, std::string(2 << 20, '\0')), 9));
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "overflow.gz"); }), Catch::Contains("overflow 64 bits"));
  // A claim the deflate bound allows but the limit does not.
  {
    scoped_allocation_limit cap(1000);
    write_file(dir / "limit.gz", gzip_member(idx_file({2000}, label_bytes(2000)), 9));
    REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "limit.gz"); }),
                 Catch::Contains("promises 2000 data bytes") && Catch::Contains("allocation limit"));
  }
  // A gzip claim within the bound whose stream ends early: truncated, after at most the stream's bytes.
  write_file(dir / "early.gz", gzip_member(idx_file({1049600}, std::string(1 << 20, '\0')), 9));
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "early.gz"); }),
               Catch::Contains("truncated: the header promises 1049600 data bytes, the file holds 1048576"));
}

TEST_CASE("hostile: IDX gzip CRC and length are checked, a cut trailer included", "[hostile]") {
  temp_dir dir("hostile");
  const std::string labels = label_bytes(4000);
  const std::string plain = idx_file({4000}, labels);
  for (int level : {0, 9}) {
    INFO("deflate level " << level);
    const std::string gz = gzip_member(plain, level);
    write_file(dir / "ok.gz", gz);
    const auto y = io::load_idx_labels(dir / "ok.gz");
    REQUIRE(y.size() == 4000);
    REQUIRE(y[3999] == static_cast<index_t>(labels[3999]));

    std::string flipped = gz;
    flipped[gz.size() / 2] = static_cast<char>(flipped[gz.size() / 2] ^ 0x04);  // a data bit
    const std::string cut = gz.substr(0, gz.size() - 8);                       // no CRC-32, no length
    write_file(dir / "flip.gz", flipped);
    write_file(dir / "cut.gz", cut);
    write_file(dir / "flip_cut.gz", flipped.substr(0, flipped.size() - 8));
    write_file(dir / "half_trailer.gz", gz.substr(0, gz.size() - 4));  // CRC-32 present, length cut
    std::string wrong_length = gz;
    wrong_length[gz.size() - 4] = static_cast<char>(wrong_length[gz.size() - 4] ^ 0x01);
    write_file(dir / "length.gz", wrong_length);

    const auto flip = message_of<io_error>([&] { io::load_idx_labels(dir / "flip.gz"); });
    REQUIRE_THAT(flip, Catch::Contains((dir / "flip.gz").string()) && Catch::Contains("corrupt gzip data"));
    if (level == 0) REQUIRE_THAT(flip, Catch::Contains("incorrect data check"));  // stored: only the CRC sees it
    for (const char* name : {"cut.gz", "flip_cut.gz", "half_trailer.gz"}) {
      INFO(name);
      const auto msg = message_of<io_error>([&] { io::load_idx_labels(dir / name); });
      REQUIRE_THAT(msg, Catch::Contains((dir / name).string()));
      // Stored data keeps its structure, so the missing trailer is what is seen.
      if (level == 0) REQUIRE_THAT(msg, Catch::Contains("truncated gzip stream") && Catch::Contains("trailer"));
    }
    REQUIRE_THAT(message_of<io_error>([&] { io::load_idx_labels(dir / "length.gz"); }),
                 Catch::Contains("incorrect length check"));
  }
}

TEST_CASE("hostile: bytes after the IDX data are rejected, plain and gzipped", "[hostile]") {
  temp_dir dir("hostile");
  const std::string labels = label_bytes(300);
  const std::string plain = idx_file({300}, labels);
  const std::string gz = gzip_member(plain, 6);

  write_file(dir / "plain_tail", plain + "junk");
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "plain_tail"); }),
               Catch::Contains((dir / "plain_tail").string()) && Catch::Contains("more data than the header's 300 bytes"));
  write_file(dir / "gz_tail.gz", gz + "junk");
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "gz_tail.gz"); }),
               Catch::Contains((dir / "gz_tail.gz").string()) &&
                   Catch::Contains("4 bytes of trailing data after the gzip stream ends at byte " +
                                   std::to_string(gz.size())));
  write_file(dir / "gz_zeros.gz", gz + std::string(1, '\0'));
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "gz_zeros.gz"); }), Catch::Contains("1 bytes of trailing"));
  // A second member with more data: more than the header's count.
  write_file(dir / "gz_more.gz", gz + gzip_member("x", 6));
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "gz_more.gz"); }),
               Catch::Contains("more data than the header's 300 bytes"));
  // Members are one stream, as gunzip reads them: a payload split in two loads,
  // and so does a file with an empty member after it.
  write_file(dir / "split.gz", gzip_member(plain.substr(0, 100), 6) + gzip_member(plain.substr(100), 6));
  REQUIRE(io::read_idx(dir / "split.gz").bytes == std::vector<std::uint8_t>(labels.begin(), labels.end()));
  write_file(dir / "empty_member.gz", gz + gzip_member("", 6));
  REQUIRE(io::read_idx(dir / "empty_member.gz").dims == std::vector<std::size_t>{300});
  // A second member that is damaged is still checked.
  std::string second = gzip_member("", 6);
  second[second.size() - 5] = static_cast<char>(second[second.size() - 5] ^ 0x01);  // its CRC-32
  write_file(dir / "bad_member.gz", gz + second);
  REQUIRE_THAT(message_of<io_error>([&] { io::read_idx(dir / "bad_member.gz"); }),
               Catch::Contains("corrupt gzip data"));
}

TEST_CASE("hostile: text and safetensors files over the allocation limit are io_errors", "[hostile]") {
  temp_dir dir("hostile");
  write_file(dir / "text.txt", std::string(100, 'a'));
  write_file(dir / "model.safetensors", std::string(100, ' '));
  scoped_allocation_limit cap(64);
  REQUIRE_THAT(message_of<io_error>([&] { io::load_text(dir / "text.txt"); }),
               Catch::Contains((dir / "text.txt").string()) && Catch::Contains("allocation limit"));
  REQUIRE_THAT(message_of<io_error>([&] { io::read_safetensors(dir / "model.safetensors"); }),
               Catch::Contains((dir / "model.safetensors").string()) && Catch::Contains("allocation limit"));
}

}  // namespace hostile_inputs_test

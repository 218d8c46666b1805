// IDX files (Fashion-MNIST): small synthetic files written here, plain and
// gzipped, read back; every error names the file; the real test set when installed.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include "../support/temp_dir.hpp"
#include <moekit/io/idx.hpp>

using namespace moekit;
using moekit::testing::temp_dir;
namespace fs = std::filesystem;

namespace {


/// An IDX file's bytes, built from the format: 0 0 type ndim, big-endian u32 dims, data.
std::string idx_bytes(std::vector<std::uint32_t> dims, const std::vector<std::uint8_t>& data, std::uint8_t type = 0x08) {
  std::string out{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (auto d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((d >> shift) & 0xFF);
  out.append(data.begin(), data.end());
  return out;
}

void write_plain(const fs::path& p, const std::string& bytes) {
  std::ofstream os(p, std::ios::binary | std::ios::trunc);
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(os.good());
}
void write_gzip(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

/// 3 images of 2 x 3 pixels: pixel values 0, 17, ..., 255 and a few others.
std::vector<std::uint8_t> pixels() {
  std::vector<std::uint8_t> v;
  for (int i = 0; i < 18; ++i) v.push_back(static_cast<std::uint8_t>((i * 17) % 256));
  v[5] = 255;
  return v;
}

/// Calls f and returns the io_error's message ("" when nothing was thrown).
template <class F>
std::string io_error_of(F&& f) {
  try {
    f();
  } catch (const io_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("idx: plain and gzipped files read back", "[io][idx]") {
  temp_dir dir;
  const auto px = pixels();
  const std::vector<std::uint8_t> labels{3, 0, 9};
  write_plain(dir / "images", idx_bytes({3, 2, 3}, px));
  write_gzip(dir / "images.gz", idx_bytes({3, 2, 3}, px));
  write_plain(dir / "labels", idx_bytes({3}, labels));
  write_gzip(dir / "labels.gz", idx_bytes({3}, labels));

  for (const char* name : {"images", "images.gz"}) {
    INFO(name);
    const auto raw = io::read_idx(dir / name);
    REQUIRE(raw.dims == std::vector<std::size_t>{3, 2, 3});
    REQUIRE(raw.bytes == px);

    const auto x = io::load_idx_images(dir / name);
    REQUIRE(x.shape() == shape<3, 6>{});
    for (std::size_t i = 0; i < px.size(); ++i) REQUIRE(x[i] == static_cast<float>(px[i]) / 255.0f);
    REQUIRE(x(0, 5) == 1.0f);
    REQUIRE(x(0, 0) == 0.0f);
    const auto xd = io::load_idx_images<double>(dir / name);
    REQUIRE(xd(2, 4) == static_cast<double>(px[16]) / 255.0);
  }
  for (const char* name : {"labels", "labels.gz"}) {
    const auto y = io::load_idx_labels(dir / name);
    REQUIRE(y.shape() == shape<3>{});
    REQUIRE(y[0] == 3);
    REQUIRE(y[1] == 0);
    REQUIRE(y[2] == 9);
  }
  const auto both = io::load_idx_dataset(dir / "images.gz", dir / "labels");
  REQUIRE(both.images.extent(0) == 3);
  REQUIRE(both.labels[2] == 9);

  // A file larger than one read chunk, with an empty-dimension file beside it.
  std::vector<std::uint8_t> big(300 * 28 * 28);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 7 + i / 13);
  write_gzip(dir / "big.gz", idx_bytes({300, 28, 28}, big));
  const auto xb = io::load_idx_images(dir / "big.gz");
  REQUIRE(xb.shape() == shape<300, 784>{});
  REQUIRE(xb(299, 783) == static_cast<float>(big.back()) / 255.0f);
  write_plain(dir / "none", idx_bytes({0, 28, 28}, {}));
  REQUIRE(io::load_idx_images(dir / "none").shape() == shape<0, 784>{});
}

TEST_CASE("idx: errors name the file", "[io][idx]") {
  temp_dir dir;
  const auto px = pixels();

  SECTION("missing file: says where to get the data") {
    const auto msg = io_error_of([&] { io::read_idx(dir / "absent.gz"); });
    REQUIRE_THAT(msg, Catch::Contains((dir / "absent.gz").string()) &&
                          Catch::Contains("apt-get install dataset-fashion-mnist"));
    REQUIRE_THROWS_WITH(io::load_fashion_mnist(dir.path, "t10k"), Catch::Contains("dataset-fashion-mnist"));
    REQUIRE_THROWS_AS(io::load_fashion_mnist(dir.path, "test"), value_error);
  }
  SECTION("a directory") {
    REQUIRE_THROWS_WITH(io::read_idx(dir.path), Catch::Contains("directory"));
  }
  SECTION("wrong magic number") {
    std::string bytes = idx_bytes({3, 2, 3}, px);
    bytes[1] = '\x01';
    write_plain(dir / "magic", bytes);
    REQUIRE_THAT(io_error_of([&] { io::read_idx(dir / "magic"); }),
                 Catch::Contains((dir / "magic").string()) && Catch::Contains("not an IDX file"));
    write_gzip(dir / "magic.gz", "PK\x03\x04 a zip file, not IDX");
    REQUIRE_THAT(io_error_of([&] { io::read_idx(dir / "magic.gz"); }), Catch::Contains("not an IDX file"));
  }
  SECTION("element type other than unsigned bytes") {
    write_plain(dir / "floats", idx_bytes({1}, {0, 0, 0, 0}, 0x0D));
    REQUIRE_THAT(io_error_of([&] { io::read_idx(dir / "floats"); }), Catch::Contains("0x0D is not supported"));
  }
  SECTION("truncated data, plain and gzipped") {
    const std::string bytes = idx_bytes({3, 2, 3}, px);
    write_plain(dir / "short", bytes.substr(0, bytes.size() - 1));
    write_gzip(dir / "short.gz", bytes.substr(0, bytes.size() - 5));
    for (const char* name : {"short", "short.gz"}) {
      REQUIRE_THAT(io_error_of([&] { io::load_idx_images(dir / name); }),
                   Catch::Contains((dir / name).string()) && Catch::Contains("truncated") &&
                       Catch::Contains("promises 18 data bytes"));
    }
  }
  SECTION("truncated header") {
    write_plain(dir / "header", idx_bytes({3, 2, 3}, {}).substr(0, 9));
    REQUIRE_THAT(io_error_of([&] { io::read_idx(dir / "header"); }), Catch::Contains("lists 3 dimensions"));
    write_plain(dir / "tiny", std::string("\0\0", 2));
    REQUIRE_THAT(io_error_of([&] { io::read_idx(dir / "tiny"); }), Catch::Contains("no IDX magic"));
  }
  SECTION("a damaged gzip stream") {
    std::vector<std::uint8_t> big(20000);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 31 + i / 7);
    write_gzip(dir / "cut.gz", idx_bytes({20000}, big));
    fs::resize_file(dir / "cut.gz", fs::file_size(dir / "cut.gz") / 2);
    REQUIRE_THAT(io_error_of([&] { io::read_idx(dir / "cut.gz"); }), Catch::Contains((dir / "cut.gz").string()));
  }
  SECTION("more data than the header says") {
    std::vector<std::uint8_t> more = px;
    more.push_back(1);
    write_plain(dir / "long", idx_bytes({3, 2, 3}, more));
    REQUIRE_THAT(io_error_of([&] { io::read_idx(dir / "long"); }), Catch::Contains("more data than"));
  }
  SECTION("wrong number of dimensions") {
    write_plain(dir / "labels", idx_bytes({3}, {1, 2, 3}));
    write_plain(dir / "images", idx_bytes({3, 2, 3}, px));
    REQUIRE_THAT(io_error_of([&] { io::load_idx_images(dir / "labels"); }), Catch::Contains("expected 3 dimensions"));
    REQUIRE_THAT(io_error_of([&] { io::load_idx_labels(dir / "images"); }), Catch::Contains("expected 1 dimension"));
  }
  SECTION("image and label counts differ") {
    write_plain(dir / "images", idx_bytes({3, 2, 3}, px));
    write_gzip(dir / "labels.gz", idx_bytes({2}, {1, 2}));
    REQUIRE_THAT(io_error_of([&] { io::load_idx_dataset(dir / "images", dir / "labels.gz"); }),
                 Catch::Contains((dir / "images").string()) && Catch::Contains((dir / "labels.gz").string()) &&
                     Catch::Contains("3 images") && Catch::Contains("2 labels"));
  }
}

TEST_CASE("idx: the real Fashion-MNIST test set", "[io][idx][data]") {
  if (!fs::exists(io::fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")) {
    WARN("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): skipped");
    return;
  }
  const auto test = io::load_fashion_mnist(io::fashion_mnist_dir, "t10k");
  REQUIRE(test.images.shape() == shape<10000, 784>{});
  REQUIRE(test.labels.shape() == shape<10000>{});
  std::array<int, 10> counts{};
  for (std::size_t i = 0; i < test.labels.size(); ++i) {
    REQUIRE(test.labels[i] >= 0);
    REQUIRE(test.labels[i] < 10);
    ++counts[static_cast<std::size_t>(test.labels[i])];
  }
  for (int c : counts) REQUIRE(c == 1000);
  float lo = 1, hi = 0;
  double total = 0;
  for (std::size_t i = 0; i < test.images.size(); ++i) {
    lo = std::min(lo, test.images[i]);
    hi = std::max(hi, test.images[i]);
    total += test.images[i];
  }
  REQUIRE(lo == 0.0f);
  REQUIRE(hi == 1.0f);
  // The test set's mean pixel is about 0.286 (a widely quoted statistic).
  REQUIRE(total / static_cast<double>(test.images.size()) == Approx(0.286).margin(0.005));
}

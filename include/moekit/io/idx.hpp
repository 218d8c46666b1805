// moekit/io/idx.hpp — the IDX format of (Fashion-)MNIST, plain or gzipped:
//
//   0x00 0x00 <type> <ndim> | ndim big-endian u32 extents | data
//
// Only unsigned-byte data (type 0x08) is read: that is what the image sets hold.
//
//   auto train = io::load_fashion_mnist(io::fashion_mnist_dir, "train");
//   train.images;  // (60000, 784) floats in [0, 1]
//   train.labels;  // (60000) class ids
//
// Files are read through zlib, which passes files that are not gzipped
// through unchanged. Link with zlib (-lz, CMake ZLIB::ZLIB).
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <zlib.h>

#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../tensor/tensor.hpp"

namespace moekit::io {

/// Where Debian's dataset-fashion-mnist package installs the data.
inline const std::filesystem::path fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";

/// The dimensions and raw bytes of an IDX file of unsigned bytes.
struct idx_data {
  std::vector<std::size_t> dims;   // e.g. {10000, 28, 28}
  std::vector<std::uint8_t> bytes;  // product(dims) values, row-major
};

namespace detail {

[[noreturn]] inline void idx_fail(const std::filesystem::path& file, const std::string& what) {
  throw io_error("idx: " + file.string() + ": " + what);
}

struct gz_closer {
  void operator()(gzFile_s* f) const noexcept { gzclose(f); }
};
using gz_file = std::unique_ptr<gzFile_s, gz_closer>;

/// Reads up to n bytes; fewer only at the end of the data. io_error on a
/// damaged stream (zlib's message included).
inline std::size_t gz_read(gzFile f, void* into, std::size_t n, const std::filesystem::path& file) {
  std::size_t got = 0;
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - got, std::size_t{1} << 20));
    const int r = gzread(f, static_cast<char*>(into) + got, chunk);
    if (r < 0) {
      int code = 0;
      idx_fail(file, std::string("cannot decompress: ") + gzerror(f, &code));
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

inline std::string hex_byte(std::uint8_t b) {
  char s[5];
  std::snprintf(s, sizeof s, "0x%02X", b);
  return s;
}

}  // namespace detail

/// Reads an IDX file (gzipped or not). io_error naming the file when it is
/// missing (saying where to get Fashion-MNIST), is not IDX, holds another
/// element type than unsigned bytes, or is truncated or longer than its header says.
inline idx_data read_idx(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) detail::idx_fail(path, "is a directory, not an IDX file");
  if (!std::filesystem::exists(path, ec))
    detail::idx_fail(path, "no such file (Fashion-MNIST: `apt-get install dataset-fashion-mnist` installs it in " +
                               fashion_mnist_dir.string() + ")");
  detail::gz_file f(gzopen(path.c_str(), "rb"));
  if (!f) detail::idx_fail(path, std::string("cannot open: ") + std::strerror(errno));
  gzbuffer(f.get(), 1u << 17);

  std::array<std::uint8_t, 4> magic{};
  if (detail::gz_read(f.get(), magic.data(), 4, path) != 4) detail::idx_fail(path, "truncated: no IDX magic number");
  if (magic[0] != 0 || magic[1] != 0)
    detail::idx_fail(path, "not an IDX file: magic number starts " + detail::hex_byte(magic[0]) + " " +
                               detail::hex_byte(magic[1]) + ", expected 0x00 0x00");
  if (magic[2] != 0x08)
    detail::idx_fail(path, "element type " + detail::hex_byte(magic[2]) + " is not supported (only 0x08, unsigned bytes)");
  if (magic[3] == 0) detail::idx_fail(path, "no dimensions");

  idx_data out;
  std::size_t total = 1;
  for (int d = 0; d < magic[3]; ++d) {
    std::array<std::uint8_t, 4> be{};
    if (detail::gz_read(f.get(), be.data(), 4, path) != 4)
      detail::idx_fail(path, "truncated: the header lists " + std::to_string(magic[3]) + " dimensions");
    const std::size_t extent = std::size_t{be[0]} << 24 | std::size_t{be[1]} << 16 | std::size_t{be[2]} << 8 | be[3];
    if (extent != 0 && total > SIZE_MAX / extent) detail::idx_fail(path, "dimensions too large");
    total *= extent;
    out.dims.push_back(extent);
  }

  // Grow with the data actually present, so a corrupt header cannot make us
  // allocate gigabytes before noticing the file is short.
  constexpr std::size_t step = std::size_t{1} << 24;
  while (out.bytes.size() < total) {
    const std::size_t have = out.bytes.size();
    out.bytes.resize(have + std::min(step, total - have));
    const std::size_t got = detail::gz_read(f.get(), out.bytes.data() + have, out.bytes.size() - have, path);
    out.bytes.resize(have + got);
    if (got == 0) break;
  }
  if (out.bytes.size() != total)
    detail::idx_fail(path, "truncated: the header promises " + std::to_string(total) + " data bytes, the file holds " +
                               std::to_string(out.bytes.size()));
  std::uint8_t extra = 0;
  if (detail::gz_read(f.get(), &extra, 1, path) != 0)
    detail::idx_fail(path, "more data than the header's " + std::to_string(total) + " bytes");
  return out;
}

/// An IDX image file (n, rows, cols) as (n, rows * cols) values scaled to [0, 1].
template <class T = float>
tensor<T, shape<dyn, dyn>> load_idx_images(const std::filesystem::path& path) {
  const idx_data raw = read_idx(path);
  if (raw.dims.size() != 3)
    detail::idx_fail(path, "expected 3 dimensions (images, rows, cols), found " + std::to_string(raw.dims.size()));
  tensor<T, shape<dyn, dyn>> out(shape<dyn, dyn>{raw.dims[0], raw.dims[1] * raw.dims[2]});  // (n, rows * cols)
  for (std::size_t i = 0; i < raw.bytes.size(); ++i) out[i] = static_cast<T>(raw.bytes[i]) / T(255);
  return out;
}

/// An IDX label file (n) as class ids.
inline tensor<index_t, shape<dyn>> load_idx_labels(const std::filesystem::path& path) {
  const idx_data raw = read_idx(path);
  if (raw.dims.size() != 1)
    detail::idx_fail(path, "expected 1 dimension (labels), found " + std::to_string(raw.dims.size()));
  tensor<index_t, shape<dyn>> out(shape<dyn>{raw.dims[0]});  // (n)
  for (std::size_t i = 0; i < raw.bytes.size(); ++i) out[i] = static_cast<index_t>(raw.bytes[i]);
  return out;
}

/// Images and their labels.
template <class T = float>
struct idx_dataset {
  tensor<T, shape<dyn, dyn>> images;  // (n, rows * cols)
  tensor<index_t, shape<dyn>> labels;  // (n)
};

/// Loads an image file and its label file; io_error naming both when their counts differ.
template <class T = float>
idx_dataset<T> load_idx_dataset(const std::filesystem::path& images, const std::filesystem::path& labels) {
  idx_dataset<T> out{load_idx_images<T>(images), load_idx_labels(labels)};
  if (out.images.extent(0) != out.labels.extent(0))
    throw io_error("idx: " + images.string() + " holds " + std::to_string(out.images.extent(0)) + " images but " +
                   labels.string() + " holds " + std::to_string(out.labels.extent(0)) + " labels");
  return out;
}

/// The Fashion-MNIST split "train" (60000) or "t10k" (10000) from `dir`.
template <class T = float>
idx_dataset<T> load_fashion_mnist(const std::filesystem::path& dir, const std::string& split) {
  if (split != "train" && split != "t10k")
    throw value_error("load_fashion_mnist: split '" + split + "' is neither \"train\" nor \"t10k\"");
  return load_idx_dataset<T>(dir / (split + "-images-idx3-ubyte.gz"), dir / (split + "-labels-idx1-ubyte.gz"));
}

}  // namespace moekit::io

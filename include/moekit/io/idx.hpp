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
// Gzipped files are inflated with zlib member by member, each member's CRC-32
// and length checked; plain files are read as they are. Link with zlib (-lz,
// CMake ZLIB::ZLIB).
//
// Hostile files (docs/design.md, "Hostile input"): the declared payload is
// checked, before anything is read into memory, against the file size (plain)
// or what deflate can expand the file to at most (gzip, 1032:1) and against
// the allocation limit; no more than the header's bytes plus one are ever
// decompressed; a damaged, truncated (a cut trailer included) or over-long
// stream and bytes after the last gzip member are io_errors naming the file.
// A further gzip member is read as a continuation of the data, as gunzip does.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <zlib.h>

#include "../core/allocation.hpp"
#include "../core/checked.hpp"
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

/// Deflate turns a 258-byte match into no fewer than 2 bits: no gzip file
/// inflates to more than this many times its size.
inline constexpr std::uint64_t max_deflate_ratio = 1032;

/// The bytes an IDX file holds, in order: a plain file as it is, a gzip file
/// inflated. read() produces no more than it is asked for, so the header's
/// claim bounds the work; every damage is an io_error naming the file.
class idx_stream {
 public:
  explicit idx_stream(std::filesystem::path path) : path_(std::move(path)), in_(path_, std::ios::binary) {
    if (!in_) idx_fail(path_, std::string("cannot open: ") + std::strerror(errno));
    std::error_code ec;
    size_ = std::filesystem::file_size(path_, ec);
    if (ec) idx_fail(path_, "cannot read its size (" + ec.message() + ")");
    if (!fill(2)) idx_fail(path_, "truncated: no IDX magic number");
    gzip_ = buf_[0] == 0x1F && buf_[1] == 0x8B;
    if (gzip_ && inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) idx_fail(path_, "zlib: cannot start inflating");
  }
  ~idx_stream() {
    if (gzip_) inflateEnd(&z_);
  }
  idx_stream(const idx_stream&) = delete;
  idx_stream& operator=(const idx_stream&) = delete;

  bool gzipped() const noexcept { return gzip_; }
  std::uint64_t file_bytes() const noexcept { return size_; }

  /// Up to n bytes; fewer only at the end of the data.
  std::size_t read(void* into, std::size_t n) {
    return gzip_ ? inflate_into(static_cast<unsigned char*>(into), n) : copy_into(static_cast<unsigned char*>(into), n);
  }

 private:
  /// Makes at least `want` unread file bytes available at z_.next_in (fewer
  /// at the end of the file); false when there are fewer.
  bool fill(std::size_t want) {
    if (avail() >= want) return true;
    std::memmove(buf_.data(), next_, avail());
    const std::size_t have = avail();
    next_ = buf_.data();
    in_.read(reinterpret_cast<char*>(buf_.data() + have), static_cast<std::streamsize>(buf_.size() - have));
    const auto got = static_cast<std::size_t>(in_.gcount());
    if (in_.bad()) idx_fail(path_, std::string("read failed: ") + std::strerror(errno));
    consumed_ += got;
    end_ = next_ + have + got;
    return avail() >= want;
  }
  std::size_t avail() const noexcept { return static_cast<std::size_t>(end_ - next_); }
  /// Offset in the file of the next unread byte.
  std::uint64_t offset() const noexcept { return consumed_ - avail(); }

  std::size_t copy_into(unsigned char* out, std::size_t n) {
    std::size_t got = 0;
    while (got < n && fill(1)) {
      const std::size_t k = std::min(n - got, avail());
      std::memcpy(out + got, next_, k);
      next_ += k;
      got += k;
    }
    return got;
  }

  std::size_t inflate_into(unsigned char* out, std::size_t n) {
    std::size_t got = 0;
    while (got < n && !ended_) {
      if (!fill(1))
        idx_fail(path_, "truncated gzip stream: the file ends at byte " + std::to_string(size_) +
                            " inside a member, before its CRC-32 and length trailer");
      const auto in = static_cast<uInt>(std::min<std::size_t>(avail(), UINT32_MAX));
      const auto room = static_cast<uInt>(std::min<std::size_t>(n - got, UINT32_MAX));
      z_.next_in = next_;
      z_.avail_in = in;
      z_.next_out = out + got;
      z_.avail_out = room;
      const int r = inflate(&z_, Z_NO_FLUSH);
      next_ += in - z_.avail_in;
      got += room - z_.avail_out;
      if (r == Z_STREAM_END) end_member();
      else if (r == Z_DATA_ERROR)
        idx_fail(path_, "corrupt gzip data near byte " + std::to_string(offset()) + " (zlib: " +
                            (z_.msg ? z_.msg : "data error") + ")");
      else if (r != Z_OK && !(r == Z_BUF_ERROR && avail() == 0))
        idx_fail(path_, "zlib inflate failed with code " + std::to_string(r));
    }
    return got;
  }

  /// A member ended with its CRC-32 and length correct (inflate checked
  /// them): another member may follow, anything else is trailing data.
  void end_member() {
    if (!fill(1)) {
      ended_ = true;
      return;
    }
    if (fill(2) && next_[0] == 0x1F && next_[1] == 0x8B) {
      if (inflateReset(&z_) != Z_OK) idx_fail(path_, "zlib: cannot restart inflating");
      return;
    }
    idx_fail(path_, std::to_string(size_ - offset()) + " bytes of trailing data after the gzip stream ends at byte " +
                        std::to_string(offset()));
  }

  std::filesystem::path path_;
  std::ifstream in_;
  std::uint64_t size_ = 0, consumed_ = 0;
  bool gzip_ = false, ended_ = false;
  z_stream z_{};
  std::vector<unsigned char> buf_ = std::vector<unsigned char>(std::size_t{1} << 16);
  unsigned char* next_ = buf_.data();
  unsigned char* end_ = buf_.data();
};

inline std::string hex_byte(std::uint8_t b) {
  char s[5];
  std::snprintf(s, sizeof s, "0x%02X", b);
  return s;
}

inline std::string dims_str(const std::vector<std::size_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

/// io_error unless `total` data bytes after a header of `header` bytes can be
/// in the file and fit the allocation limit: checked before reading any.
inline void check_idx_claim(const idx_stream& in, const std::filesystem::path& path, std::uint64_t header,
                            std::uint64_t total, const std::vector<std::size_t>& dims) {
  const std::string claim = "the header " + dims_str(dims) + " promises " + std::to_string(total) + " data bytes";
  const std::uint64_t size = in.file_bytes();
  if (!in.gzipped() && total > size - std::min(size, header))
    idx_fail(path, "truncated: " + claim + ", the file holds " + std::to_string(size - std::min(size, header)));
  if (in.gzipped() && total / max_deflate_ratio > size)
    idx_fail(path, claim + ", more than a gzip file of " + std::to_string(size) + " bytes can inflate to (" +
                       std::to_string(max_deflate_ratio) + ":1 at most)");
  if (total > allocation_limit())
    idx_fail(path, claim + ", more than the allocation limit of " + moekit::detail::bytes_str(allocation_limit()) +
                       " (moekit::set_allocation_limit)");
}

}  // namespace detail

/// Reads an IDX file (gzipped or not). io_error naming the file when it is
/// missing (saying where to get Fashion-MNIST), is not IDX, holds another
/// element type than unsigned bytes, is truncated or longer than its header
/// says, or is a damaged gzip stream (see the file comment).
inline idx_data read_idx(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) detail::idx_fail(path, "is a directory, not an IDX file");
  if (!std::filesystem::exists(path, ec))
    detail::idx_fail(path, "no such file (Fashion-MNIST: `apt-get install dataset-fashion-mnist` installs it in " +
                               fashion_mnist_dir.string() + ")");
  detail::idx_stream in(path);

  std::array<std::uint8_t, 4> magic{};
  if (in.read(magic.data(), 4) != 4) detail::idx_fail(path, "truncated: no IDX magic number");
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
    if (in.read(be.data(), 4) != 4)
      detail::idx_fail(path, "truncated: the header lists " + std::to_string(magic[3]) + " dimensions");
    const std::size_t extent = std::size_t{be[0]} << 24 | std::size_t{be[1]} << 16 | std::size_t{be[2]} << 8 | be[3];
    out.dims.push_back(extent);
    if (!mul_fits(total, extent, total))
      detail::idx_fail(path, "dimensions " + detail::dims_str(out.dims) + "... overflow 64 bits");
  }
  detail::check_idx_claim(in, path, 4 + 4 * std::uint64_t{magic[3]}, total, out.dims);

  // Grow with the data actually present (a gzip file's claim is only bounded
  // by the deflate ratio), never asking for more than the header's bytes.
  constexpr std::size_t step = std::size_t{1} << 24;
  while (out.bytes.size() < total) {
    const std::size_t have = out.bytes.size();
    out.bytes.resize(have + std::min(step, total - have));
    const std::size_t got = in.read(out.bytes.data() + have, out.bytes.size() - have);
    out.bytes.resize(have + got);
    if (got == 0) break;
  }
  if (out.bytes.size() != total)
    detail::idx_fail(path, "truncated: the header promises " + std::to_string(total) + " data bytes, the file holds " +
                               std::to_string(out.bytes.size()));
  // One byte more: reaches the end of the stream (the last trailer checked).
  std::uint8_t extra = 0;
  if (in.read(&extra, 1) != 0)
    detail::idx_fail(path, "more data than the header's " + std::to_string(total) + " bytes");
  return out;
}

/// An IDX image file (n, rows, cols) as (n, rows * cols) values scaled to [0, 1].
template <class T = float>
tensor<T, shape<dyn, dyn>> load_idx_images(const std::filesystem::path& path) {
  const idx_data raw = read_idx(path);
  if (raw.dims.size() != 3)
    detail::idx_fail(path, "expected 3 dimensions (images, rows, cols), found " + std::to_string(raw.dims.size()));
  // read_idx checked the product of all three.
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

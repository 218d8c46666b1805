// moekit/io/safetensors.hpp — checkpoints in the safetensors format, readable
// by PyTorch and Hugging Face tools:
//
//   u64 N (little-endian) | N bytes of UTF-8 JSON header | raw data buffer
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets"}
// (offsets relative to the buffer) and may hold "__metadata__", a string map.
//
//   io::save_safetensors("model.safetensors", model);     // every parameter
//   io::load_safetensors("model.safetensors", model);     // in place, all or nothing
//
// Models on a device backend save through a host copy of each tensor and load
// by a host-to-device transfer of the file's bytes, so a file saved from one
// backend loads onto any other.
//   auto file = io::read_safetensors("adamw.safetensors"); // raw entries (optimizer state)
//
// Writes go to a unique temporary file, fsync'ed and renamed into place (see
// io/atomic_file.hpp), so `path` holds either the old file or the complete new
// one, even after a kill or a power loss. Reads validate the whole file before any
// byte reaches the model; every problem is an io_error naming the file and,
// where one is involved, the tensor.
#pragma once

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <unistd.h>

#include "../autograd/parameter_tree.hpp"
#include "../core/allocation.hpp"
#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../tensor/tensor.hpp"
#include "atomic_file.hpp"

namespace moekit::io {

static_assert(std::endian::native == std::endian::little,
              "moekit::io: safetensors data is little-endian; big-endian hosts are not supported");

/// The "__metadata__" string map of a safetensors header.
using metadata_map = std::map<std::string, std::string>;

/// One tensor of a safetensors file, as written or read: a view of its bytes.
struct tensor_record {
  std::string name;                  // e.g. "fc1.weight", "state.fc1.weight.exp_avg"
  std::string dtype;                 // safetensors name: "F32", "F64", "I32", ...
  std::vector<std::size_t> shape;    // row-major extents; {} for a scalar
  std::span<const std::byte> bytes;  // little-endian, product(shape) * dtype_size(dtype) bytes
  std::shared_ptr<const void> owner{};  // keeps `bytes` alive when they are a host copy (of a device tensor)
};

/// Bytes per element of a safetensors dtype; 0 for a name the format does not define.
inline std::size_t dtype_size(std::string_view dtype) noexcept {
  static constexpr std::pair<std::string_view, std::size_t> sizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
      {"F16", 2},  {"BF16", 2}, {"I32", 4}, {"U32", 4},     {"F32", 4},     {"F64", 8}, {"I64", 8},
      {"U64", 8}};
  for (const auto& [name, size] : sizes)
    if (name == dtype) return size;
  return 0;
}

/// A record of a tensor's bytes: for a host tensor a view of its memory (keep
/// the tensor alive while the record is used); for a device tensor a host copy
/// the record owns (one device-to-host transfer, which waits for the device).
template <class T, class S, class B>
tensor_record record_of(std::string name, const tensor<T, S, B>& t) {
  static_assert(dtype_name<T>() != "?", "record_of: no safetensors dtype for this element type");
  const auto e = t.shape().extents();
  tensor_record r{std::move(name), std::string(dtype_name<T>()), {e.begin(), e.end()}, {}};
  if constexpr (B::host_accessible) {
    r.bytes = std::as_bytes(std::span<const T>(t.data(), t.size()));
  } else {
    static_assert(transferable<B, cpu>, "record_of: no transfer from this backend to the host");
    auto host = std::make_shared<const tensor<T, S, cpu>>(t.template to<cpu>());
    r.bytes = std::as_bytes(std::span<const T>(host->data(), host->size()));
    r.owner = std::move(host);
  }
  return r;
}

namespace detail {
/// Copies `bytes` of host memory into tensor memory of backend B (a memcpy on
/// the host, a host-to-device transfer on a device).
template <class B>
void copy_from_host(std::span<const std::byte> bytes, void* dst) {
  static_assert(transferable<cpu, B>, "load: no transfer from the host to this backend");
  if (!bytes.empty()) transfer<cpu, B>::copy(bytes.data(), dst, bytes.size());
}
}  // namespace detail

namespace detail {

[[noreturn]] inline void safetensors_fail(const std::filesystem::path& file, const std::string& what) {
  throw io_error("safetensors: " + file.string() + ": " + what);
}
[[noreturn]] inline void safetensors_fail(const std::filesystem::path& file, std::string_view tensor,
                                          const std::string& what) {
  safetensors_fail(file, "tensor '" + std::string(tensor) + "': " + what);
}

/// "(2, 3)": shapes in messages look like moekit's shape::str().
inline std::string shape_str(std::span<const std::size_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

/// a * b, or false when it overflows.
inline bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) noexcept {
  if (a != 0 && b > SIZE_MAX / a) return false;
  out = a * b;
  return true;
}

/// Bytes a tensor of `dtype` and `shape` needs; false when unknown dtype or overflow.
inline bool tensor_bytes(std::string_view dtype, std::span<const std::size_t> shape, std::size_t& out) noexcept {
  std::size_t n = dtype_size(dtype);
  if (n == 0) return false;
  for (std::size_t e : shape)
    if (!checked_mul(n, e, n)) return false;
  out = n;
  return true;
}

/// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
inline bool valid_utf8(std::string_view s) noexcept {
  static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) len = 1, cp = c;
    else if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1Fu;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0Fu;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07u;
    else return false;
    if (len > s.size() - i) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if (cp < smallest[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// ---- the JSON subset of the header: writing -------------------------------------

/// A JSON string literal: quotes, backslashes and control characters escaped;
/// other UTF-8 passes through.
inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += ch;
    }
  }
  out += '"';
}

inline void append_json_array(std::string& out, std::span<const std::size_t> values) {
  out += '[';
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(values[i]);
  }
  out += ']';
}

/// The header for `records` laid out back to back in their order, padded with
/// spaces so that the data buffer starts 8-byte aligned (as the reference writer does).
inline std::string header_json(std::span<const tensor_record> records, const metadata_map& metadata) {
  std::string out = "{";
  if (!metadata.empty()) {
    out += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!std::exchange(first, false)) out += ',';
      append_json_string(out, key);
      out += ':';
      append_json_string(out, value);
    }
    out += '}';
  }
  std::size_t offset = 0;
  for (const auto& r : records) {
    if (out.size() > 1) out += ',';
    append_json_string(out, r.name);
    out += ":{\"dtype\":";
    append_json_string(out, r.dtype);
    out += ",\"shape\":";
    append_json_array(out, r.shape);
    const std::size_t offsets[] = {offset, offset + r.bytes.size()};
    out += ",\"data_offsets\":";
    append_json_array(out, offsets);
    out += '}';
    offset += r.bytes.size();
  }
  out += '}';
  out.append((8 - (8 + out.size()) % 8) % 8, ' ');
  return out;
}

// ---- the JSON subset of the header: reading -------------------------------------

/// One header entry before validation against the buffer.
struct header_entry {
  std::string name, dtype;
  std::vector<std::size_t> shape;
  std::size_t begin = 0, end = 0;
};
struct parsed_header {
  std::vector<header_entry> entries;
  metadata_map metadata;
};

/// Parses exactly the header's grammar: an object of tensor entries (each an
/// object with "dtype", "shape" and "data_offsets") and an optional
/// "__metadata__" object of strings. Anything else is an error at a byte position.
class header_parser {
 public:
  header_parser(std::string_view text, const std::filesystem::path& file) : s_(text), file_(file) {}

  parsed_header parse() {
    parsed_header h;
    bool have_metadata = false;
    std::unordered_set<std::string> names;
    object([&](std::string key) {
      if (key == "__metadata__") {
        if (std::exchange(have_metadata, true)) fail("\"__metadata__\" appears twice");
        h.metadata = string_map();
      } else {
        if (!names.insert(key).second) fail("tensor '" + key + "' appears twice");
        h.entries.push_back(entry(std::move(key)));
      }
    });
    skip_space();
    if (pos_ != s_.size()) fail("unexpected text after the header object");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    safetensors_fail(file_, "invalid header JSON at byte " + std::to_string(pos_) + ": " + what);
  }

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool peek(char c) {
    skip_space();
    return pos_ < s_.size() && s_[pos_] == c;
  }
  bool consume(char c) {
    if (!peek(c)) return false;
    ++pos_;
    return true;
  }
  void expect(char c) {
    if (!peek(c)) fail(std::string("expected '") + c + "'" + (pos_ < s_.size() ? "" : ", found the end"));
    ++pos_;
  }

  /// '{' "key" ':' value (',' "key" ':' value)* '}', calling member(key) to read each value.
  template <class F>
  void object(F&& member) {
    expect('{');
    if (consume('}')) return;
    do {
      std::string key = string();
      expect(':');
      member(std::move(key));
    } while (consume(','));
    expect('}');
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated string");
      switch (const char e = s_[pos_++]) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': append_utf8(out, code_point()); break;
        default: fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  /// The code point of a \uXXXX escape (after "\u"), joining surrogate pairs.
  std::uint32_t code_point() {
    const std::uint32_t hi = hex4();
    if (hi >= 0xDC00 && hi <= 0xDFFF) fail("unpaired low surrogate");
    if (hi < 0xD800 || hi > 0xDBFF) return hi;
    if (s_.substr(pos_, 2) != "\\u") fail("unpaired high surrogate");
    pos_ += 2;
    const std::uint32_t lo = hex4();
    if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired high surrogate");
    return 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
  }
  std::uint32_t hex4() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i, ++pos_) {
      const char c = pos_ < s_.size() ? s_[pos_] : '\0';
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) fail("invalid \\u escape");
      v = v * 16 + static_cast<std::uint32_t>(d);
    }
    return v;
  }

  /// A non-negative integer without sign, fraction or exponent.
  std::size_t integer() {
    skip_space();
    const std::size_t start = pos_;
    std::size_t v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const auto d = static_cast<std::size_t>(s_[pos_] - '0');
      if (v > (SIZE_MAX - d) / 10) fail("integer too large");
      v = v * 10 + d;
      ++pos_;
    }
    if (pos_ == start) fail("expected a non-negative integer");
    if (s_[start] == '0' && pos_ - start > 1) fail("integer with a leading zero");
    if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E'))
      fail("expected an integer, found a fraction or exponent");
    return v;
  }

  std::vector<std::size_t> integer_array() {
    expect('[');
    std::vector<std::size_t> out;
    if (consume(']')) return out;
    do out.push_back(integer());
    while (consume(','));
    expect(']');
    return out;
  }

  metadata_map string_map() {
    metadata_map m;
    object([&](std::string key) {
      if (m.contains(key)) fail("metadata key '" + key + "' appears twice");
      m.emplace(std::move(key), string());
    });
    return m;
  }

  header_entry entry(std::string name) {
    header_entry e{std::move(name), {}, {}, 0, 0};
    bool have_dtype = false, have_shape = false, have_offsets = false;
    object([&](const std::string& key) {
      const auto once = [&](bool& seen) {
        if (std::exchange(seen, true)) fail("tensor '" + e.name + "': \"" + key + "\" appears twice");
      };
      if (key == "dtype") {
        once(have_dtype);
        e.dtype = string();
      } else if (key == "shape") {
        once(have_shape);
        e.shape = integer_array();
      } else if (key == "data_offsets") {
        once(have_offsets);
        const auto o = integer_array();
        if (o.size() != 2) fail("tensor '" + e.name + "': \"data_offsets\" needs [begin, end]");
        e.begin = o[0];
        e.end = o[1];
      } else {
        fail("tensor '" + e.name + "': unexpected key \"" + key + "\"");
      }
    });
    if (!have_dtype || !have_shape || !have_offsets)
      fail("tensor '" + e.name + "': missing \"" +
           std::string(!have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets") + "\"");
    return e;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  const std::filesystem::path& file_;
};

/// Throws value_error unless `records` can be written: names unique, valid
/// UTF-8 and not "__metadata__", dtypes known, byte counts matching shapes.
inline void check_records(const std::filesystem::path& file, std::span<const tensor_record> records,
                          const metadata_map& metadata) {
  const auto bad = [&](const std::string& what) {
    throw value_error("save_safetensors: " + file.string() + ": " + what);
  };
  std::unordered_set<std::string_view> names;
  for (const auto& r : records) {
    if (r.name == "__metadata__" || !valid_utf8(r.name)) bad("invalid tensor name '" + r.name + "'");
    if (!names.insert(r.name).second) bad("tensor '" + r.name + "' appears twice");
    std::size_t need = 0;
    if (!tensor_bytes(r.dtype, r.shape, need))
      bad("tensor '" + r.name + "': unknown dtype '" + r.dtype + "' or shape too large");
    if (need != r.bytes.size())
      bad("tensor '" + r.name + "': " + std::to_string(r.bytes.size()) + " bytes, but " + r.dtype + " " +
          shape_str(r.shape) + " needs " + std::to_string(need));
  }
  for (const auto& [key, value] : metadata)
    if (!valid_utf8(key) || !valid_utf8(value)) bad("metadata entry '" + key + "' is not valid UTF-8");
}

/// Writes through `body(stream)` durably and atomically (io/atomic_file.hpp):
/// on any failure `path` is untouched, no temporary file is left, and
/// io_error is thrown.
template <class Body>
void write_atomically(const std::filesystem::path& path, Body&& body) {
  write_file_atomically(path, std::forward<Body>(body), "safetensors: ");
}

/// The whole file, or io_error.
inline std::vector<std::byte> read_whole_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) safetensors_fail(path, "cannot read: " + ec.message());
  if (size > allocation_limit())
    safetensors_fail(path, std::to_string(size) + " bytes, more than the allocation limit of " +
                               std::to_string(allocation_limit()) + " (moekit::set_allocation_limit)");
  std::ifstream is(path, std::ios::binary);
  if (!is) safetensors_fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<std::byte> bytes(static_cast<std::size_t>(size));
  is.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (static_cast<std::size_t>(is.gcount()) != bytes.size()) safetensors_fail(path, "read failed");
  return bytes;
}

/// The reference implementation's limit; a larger length means a corrupt file.
inline constexpr std::size_t max_header_bytes = 100'000'000;

}  // namespace detail

/// A parsed and validated safetensors file; the records view `buffer`.
struct safetensors_data {
  std::filesystem::path path;
  std::vector<tensor_record> tensors;  // in buffer order
  metadata_map metadata;
  std::shared_ptr<const std::vector<std::byte>> buffer;  // the file's bytes: keeps the records valid

  /// The record named `name`, or null.
  const tensor_record* find(std::string_view name) const noexcept {
    for (const auto& r : tensors)
      if (r.name == name) return &r;
    return nullptr;
  }

  /// The record named `name`, checked to have `dtype` and `shape`; io_error
  /// naming the file and the tensor otherwise.
  const tensor_record& expect(std::string_view name, std::string_view dtype,
                              std::span<const std::size_t> shape) const {
    const tensor_record* r = find(name);
    if (!r) detail::safetensors_fail(path, name, "missing from the file");
    if (r->dtype != dtype)
      detail::safetensors_fail(path, name, "dtype " + r->dtype + " in the file, " + std::string(dtype) + " expected");
    if (!std::ranges::equal(r->shape, shape))
      detail::safetensors_fail(path, name, "shape " + detail::shape_str(r->shape) + " in the file, " +
                                               detail::shape_str(shape) + " expected");
    return *r;
  }
};

/// Validates the bytes of a whole safetensors file (as read_safetensors does);
/// `path` only names the file in messages. The records view `file`.
inline safetensors_data parse_safetensors(std::shared_ptr<const std::vector<std::byte>> file,
                                          const std::filesystem::path& path) {
  if (!file) detail::safetensors_fail(path, "no bytes");
  if (file->size() < 8) detail::safetensors_fail(path, "only " + std::to_string(file->size()) + " bytes, no header");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>((*file)[static_cast<std::size_t>(i)]);
  if (n > file->size() - 8)
    detail::safetensors_fail(path, "header length " + std::to_string(n) + " exceeds the " +
                                       std::to_string(file->size() - 8) + " bytes after it (truncated or corrupt)");
  if (n > detail::max_header_bytes)
    detail::safetensors_fail(path, "header length " + std::to_string(n) + " is over the limit");
  const std::string_view text(reinterpret_cast<const char*>(file->data()) + 8, static_cast<std::size_t>(n));
  if (!detail::valid_utf8(text)) detail::safetensors_fail(path, "header is not valid UTF-8");
  auto header = detail::header_parser(text, path).parse();

  const std::span<const std::byte> buffer = std::span(*file).subspan(8 + static_cast<std::size_t>(n));
  std::ranges::sort(header.entries, {}, [](const auto& e) { return std::pair(e.begin, e.end); });
  safetensors_data out{path, {}, std::move(header.metadata), file};
  std::size_t covered = 0;  // the buffer [0, covered) belongs to earlier tensors
  for (auto& e : header.entries) {
    std::size_t need = 0;
    if (dtype_size(e.dtype) == 0) detail::safetensors_fail(path, e.name, "unknown dtype '" + e.dtype + "'");
    if (!detail::tensor_bytes(e.dtype, e.shape, need)) detail::safetensors_fail(path, e.name, "shape too large");
    const std::string range = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
    if (e.begin > e.end) detail::safetensors_fail(path, e.name, range + " end before they begin");
    if (e.end > buffer.size())
      detail::safetensors_fail(path, e.name, range + " lie outside the data buffer of " +
                                                 std::to_string(buffer.size()) + " bytes (truncated file?)");
    if (e.end - e.begin != need)
      detail::safetensors_fail(path, e.name, range + " hold " + std::to_string(e.end - e.begin) + " bytes, but " +
                                                 e.dtype + " " + detail::shape_str(e.shape) + " needs " +
                                                 std::to_string(need));
    if (e.begin < covered) detail::safetensors_fail(path, e.name, range + " overlap another tensor");
    if (e.begin > covered)
      detail::safetensors_fail(path, e.name, "buffer bytes [" + std::to_string(covered) + ", " +
                                                 std::to_string(e.begin) + ") before it belong to no tensor");
    covered = e.end;
    out.tensors.push_back({std::move(e.name), std::move(e.dtype), std::move(e.shape), buffer.subspan(e.begin, need)});
  }
  if (covered != buffer.size())
    detail::safetensors_fail(path, std::to_string(buffer.size() - covered) +
                                       " bytes at the end of the data buffer belong to no tensor");
  return out;
}

/// Reads and validates a whole safetensors file: header length within the
/// file, strict JSON, known dtypes, byte counts matching shapes, offsets inside
/// the buffer, and the buffer covered exactly once (no overlap, no holes).
inline safetensors_data read_safetensors(const std::filesystem::path& path) {
  return parse_safetensors(std::make_shared<const std::vector<std::byte>>(detail::read_whole_file(path)), path);
}

/// Writes `records` (in their order) and `metadata` to `path` atomically.
/// value_error for invalid records (nothing is written), io_error when writing fails.
inline void save_safetensors(const std::filesystem::path& path, std::span<const tensor_record> records,
                             const metadata_map& metadata = {}) {
  detail::check_records(path, records, metadata);
  const std::string header = detail::header_json(records, metadata);
  detail::write_atomically(path, [&](std::ostream& os) {
    char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((std::uint64_t{header.size()} >> (8 * i)) & 0xFF);
    os.write(length, 8);
    os.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& r : records)
      os.write(reinterpret_cast<const char*>(r.bytes.data()), static_cast<std::streamsize>(r.bytes.size()));
  });
}

/// Saves every parameter and buffer of `model` under its dotted path (F32 or F64 by
/// element type). Hugging Face loaders look for metadata "format": "pt", so it
/// is added unless `metadata` sets "format" itself.
template <parameterized M>
void save_safetensors(const std::filesystem::path& path, M& model, metadata_map metadata = {}) {
  std::vector<tensor_record> records;
  visit_parameters(model, [&](const std::string& name, auto& p) { records.push_back(record_of(name, p.value())); });
  visit_buffers(model, [&](const std::string& name, auto& t) { records.push_back(record_of(name, t)); });
  metadata.try_emplace("format", "pt");
  save_safetensors(path, records, metadata);
}

/// Loads every parameter and buffer (running statistics) of `model` from `path`, in place (views of the
/// parameters, such as optimizers hold, see the new values). The file is
/// validated first: each parameter must be present with its shape and dtype,
/// and (unless `allow_extra`) the file must hold nothing else. On any problem
/// io_error names the file and tensor, and the model is untouched.
template <parameterized M>
void load_safetensors(const std::filesystem::path& path, M& model, bool allow_extra = false) {
  const safetensors_data file = read_safetensors(path);
  struct copy {
    std::span<const std::byte> from;
    void* to;
    void (*write)(std::span<const std::byte>, void*);  // copy_from_host<the tensor's backend>
  };
  std::vector<copy> copies;
  std::unordered_set<std::string> wanted;
  auto plan_copy = [&](const std::string& name, const auto& t) {
    using X = std::remove_cvref_t<decltype(t)>;
    const tensor_record& r = file.expect(name, dtype_name<typename X::value_type>(), t.shape().extents());
    copies.push_back({r.bytes, t.data(), &detail::copy_from_host<typename X::backend_type>});
    wanted.insert(name);
  };
  visit_parameters(model, [&](const std::string& name, auto& p) { plan_copy(name, p.value()); });
  visit_buffers(model, plan_copy);
  if (!allow_extra)
    for (const auto& r : file.tensors)
      if (!wanted.contains(r.name))
        detail::safetensors_fail(path, r.name, "not a parameter of the model (pass allow_extra = true to ignore it)");
  for (const auto& c : copies) c.write(c.from, c.to);
}

/// Copies a record into `dst` (of any backend: device tensors get a
/// host-to-device transfer) after checking its dtype and shape against dst
/// (io_error naming the tensor otherwise): for optimizer state and the like.
template <class T, class S, class B>
void copy_into(const safetensors_data& file, std::string_view name, const tensor<T, S, B>& dst) {
  const auto e = dst.shape().extents();
  const tensor_record& r = file.expect(name, dtype_name<T>(), e);
  detail::copy_from_host<B>(r.bytes, dst.data());
}

}  // namespace moekit::io

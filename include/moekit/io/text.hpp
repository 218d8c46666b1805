// moekit/io/text.hpp — plain text for character-level language models: a file
// read as bytes, a byte-level vocabulary (the bytes the file uses, in byte
// order, or all 256), the file as token ids, and a train/validation split.
//
//   auto text = io::load_text("../shared/data/tinyshakespeare/input.txt");
//   text.vocabulary_size();                    // 65 for tinyshakespeare
//   auto [train, val] = io::split_text(text, 0.1);   // first 90 % / last 10 % of the ids
//   text.decode(val.data(), 20);               // ids back to a string
//   auto task = io::text_from_bytes(generated, "chain task");   // a text made in memory
//
// Errors name the file: io_error for a missing, unreadable, empty or
// over-large file (the size is checked before anything is read, so a wrong
// path to a huge file fails instead of filling memory), value_error for a
// split that leaves either part empty.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/allocation.hpp"
#include "../core/config.hpp"
#include "../core/error.hpp"
#include "../tensor/tensor.hpp"

namespace moekit::io {

struct text_options {
  /// Larger files are refused (io_error) before they are read.
  std::uintmax_t max_bytes = std::uintmax_t{1} << 30;
  /// true: ids are the bytes themselves (vocabulary of 256); false: only the
  /// bytes that occur in the file, in byte order (tinyshakespeare: 65).
  bool full_byte_vocabulary = false;
};

/// A text file as token ids over a byte-level vocabulary.
struct text_corpus {
  std::filesystem::path path;
  std::vector<std::uint8_t> vocabulary;  // id -> byte
  std::array<index_t, 256> id_of{};      // byte -> id, -1 for bytes outside the vocabulary
  tensor<index_t, shape<dyn>> tokens;    // (file size) the file as ids

  std::size_t vocabulary_size() const noexcept { return vocabulary.size(); }
  std::size_t size() const noexcept { return tokens.defined() ? tokens.size() : 0; }

  /// The ids as text; ids outside the vocabulary become '?'.
  std::string decode(const index_t* ids, std::size_t n) const {
    std::string out(n, '?');
    for (std::size_t i = 0; i < n; ++i)
      if (ids[i] >= 0 && static_cast<std::size_t>(ids[i]) < vocabulary.size())
        out[i] = static_cast<char>(vocabulary[static_cast<std::size_t>(ids[i])]);
    return out;
  }
  /// The text as ids; throws value_error naming the byte when one is outside the vocabulary.
  std::vector<index_t> encode(const std::string& s) const {
    std::vector<index_t> out;
    out.reserve(s.size());
    for (unsigned char c : s) {
      if (id_of[c] < 0)
        throw value_error("text_corpus::encode: byte " + std::to_string(static_cast<int>(c)) + " does not occur in " +
                          path.string());
      out.push_back(id_of[c]);
    }
    return out;
  }
  /// Entropy in nats of the ids' frequencies in [begin, end) (the unigram
  /// model's cross entropy on itself: what a model must beat to use context).
  double unigram_entropy(std::size_t begin, std::size_t end) const {
    if (end > size() || begin >= end) throw value_error("text_corpus::unigram_entropy: empty or out-of-range span");
    std::vector<double> counts(vocabulary.size(), 0.0);
    for (std::size_t i = begin; i < end; ++i) counts[static_cast<std::size_t>(tokens[i])] += 1;
    double h = 0;
    const double n = static_cast<double>(end - begin);
    for (double c : counts)
      if (c > 0) h -= c / n * std::log(c / n);
    return h;
  }
};

/// A corpus of text already in memory (a generated task, say): its
/// vocabulary and ids as load_text builds them; `name` stands for the path in
/// messages.
inline text_corpus text_from_bytes(std::string_view bytes, const std::string& name, const text_options& o = {}) {
  if (bytes.empty()) throw io_error("text_from_bytes: " + name + ": the text is empty");
  text_corpus c;
  c.path = name;
  c.id_of.fill(-1);
  std::array<bool, 256> used{};
  if (o.full_byte_vocabulary) used.fill(true);
  else
    for (char ch : bytes) used[static_cast<unsigned char>(ch)] = true;
  for (std::size_t b = 0; b < 256; ++b)
    if (used[b]) {
      c.id_of[b] = static_cast<index_t>(c.vocabulary.size());
      c.vocabulary.push_back(static_cast<std::uint8_t>(b));
    }
  c.tokens = tensor<index_t, shape<dyn>>(shape<dyn>{bytes.size()});
  index_t* ids = c.tokens.data();
  for (std::size_t i = 0; i < bytes.size(); ++i) ids[i] = c.id_of[static_cast<unsigned char>(bytes[i])];
  return c;
}

/// Reads `path` as bytes and builds its vocabulary and ids (see text_options).
inline text_corpus load_text(const std::filesystem::path& path, const text_options& o = {}) {
  const std::string where = "load_text: " + path.string() + ": ";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw io_error(where + "no such file");
  if (!std::filesystem::is_regular_file(path, ec)) throw io_error(where + "not a regular file");
  const std::uintmax_t bytes = std::filesystem::file_size(path, ec);
  if (ec) throw io_error(where + "cannot read its size (" + ec.message() + ")");
  if (bytes == 0) throw io_error(where + "the file is empty");
  if (bytes > o.max_bytes)
    throw io_error(where + std::to_string(bytes) + " bytes is more than the limit of " + std::to_string(o.max_bytes) +
                   " (text_options::max_bytes)");
  if (bytes > allocation_limit())
    throw io_error(where + std::to_string(bytes) + " bytes is more than the allocation limit of " +
                   std::to_string(allocation_limit()) + " (moekit::set_allocation_limit)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(where + "cannot open");
  std::string raw(static_cast<std::size_t>(bytes), '\0');
  in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  if (static_cast<std::uintmax_t>(in.gcount()) != bytes)
    throw io_error(where + "read " + std::to_string(in.gcount()) + " of " + std::to_string(bytes) + " bytes");
  return text_from_bytes(raw, path.string(), o);
}

/// The ids of a corpus cut in two: the first (1 − val_fraction) for training,
/// the rest for validation (a contiguous tail, as char-rnn and nanoGPT split).
struct text_split {
  tensor<index_t, shape<dyn>> train;  // (n_train)
  tensor<index_t, shape<dyn>> val;    // (n_val)
};

inline text_split split_text(const text_corpus& c, double val_fraction) {
  if (!(val_fraction > 0 && val_fraction < 1))
    throw value_error("split_text: val_fraction = " + std::to_string(val_fraction) + " must lie in (0, 1)");
  const std::size_t n = c.size();
  const auto n_val = static_cast<std::size_t>(std::floor(static_cast<double>(n) * val_fraction));
  if (n_val == 0 || n_val >= n)
    throw value_error("split_text: " + c.path.string() + ": " + std::to_string(n) + " characters leave an empty " +
                      (n_val == 0 ? "validation" : "training") + " part at val_fraction " +
                      std::to_string(val_fraction));
  return {c.tokens.rows(0, n - n_val), c.tokens.rows(n - n_val, n)};
}

}  // namespace moekit::io

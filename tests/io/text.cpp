// Plain text for character-level language models (io/text.hpp): vocabulary,
// ids, decode/encode, the train/validation split, the unigram entropy, and
// every bad input (missing, empty, too large, a folder, a bad split) raising
// an error that names the file; tinyshakespeare when the shared data is there.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "../support/temp_dir.hpp"
#include <moekit/io/text.hpp>

#ifndef MOEKIT_SHARED_DATA_DIR
#define MOEKIT_SHARED_DATA_DIR "../shared/data"
#endif

using namespace moekit;
using moekit::testing::temp_dir;
namespace fs = std::filesystem;

namespace {

fs::path write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream os(p, std::ios::binary | std::ios::trunc);
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(os.good());
  return p;
}

}  // namespace

TEST_CASE("load_text: the vocabulary is the file's bytes in byte order", "[io][text]") {
  temp_dir dir("text");
  const auto p = write_file(dir.path / "a.txt", "hello\nworld\n");
  const auto t = io::load_text(p);
  REQUIRE(t.size() == 12);
  // bytes: '\n' d e h l o r w
  REQUIRE(t.vocabulary_size() == 8);
  CHECK(t.vocabulary[0] == '\n');
  CHECK(t.vocabulary[7] == 'w');
  CHECK(t.id_of['h'] == 3);
  CHECK(t.id_of['z'] == -1);
  CHECK(t.tokens[0] == t.id_of['h']);
  CHECK(t.tokens[5] == 0);
  CHECK(t.decode(t.tokens.data(), t.size()) == "hello\nworld\n");
  const auto ids = t.encode("low");
  REQUIRE(ids.size() == 3);
  CHECK(t.decode(ids.data(), ids.size()) == "low");
  CHECK_THROWS_AS(t.encode("lowz"), value_error);
}

TEST_CASE("text_from_bytes: a text in memory gets the vocabulary and ids load_text gives its file", "[io][text]") {
  temp_dir dir("text_mem");
  const std::string body = "7+3*4=8;2-5*1=7;";
  const auto file = io::load_text(write_file(dir.path / "t.txt", body));
  const auto mem = io::text_from_bytes(body, "generated task");
  CHECK(mem.path.string() == "generated task");
  REQUIRE(mem.vocabulary == file.vocabulary);
  REQUIRE(mem.size() == body.size());
  for (std::size_t i = 0; i < body.size(); ++i) CHECK(mem.tokens[i] == file.tokens[i]);
  CHECK(mem.decode(mem.tokens.data(), mem.size()) == body);
  CHECK_THROWS_AS(io::text_from_bytes("", "empty task"), io_error);
}

TEST_CASE("load_text: full byte vocabulary and non-ASCII bytes", "[io][text]") {
  temp_dir dir("text");
  std::string bytes = "ab";
  bytes += static_cast<char>(0xC3);
  bytes += static_cast<char>(0xA9);  // é in UTF-8: two bytes
  bytes += '\0';
  const auto p = write_file(dir.path / "b.txt", bytes);
  const auto full = io::load_text(p, {.full_byte_vocabulary = true});
  REQUIRE(full.vocabulary_size() == 256);
  CHECK(full.tokens[2] == 0xC3);
  CHECK(full.tokens[4] == 0);
  const auto used = io::load_text(p);
  REQUIRE(used.vocabulary_size() == 5);
  CHECK(used.tokens[4] == 0);      // '\0' is the smallest byte
  CHECK(used.tokens[3] == 3);      // 0xA9, then 0xC3: after '\0', 'a', 'b'
  CHECK(used.tokens[2] == 4);
  CHECK(used.decode(used.tokens.data(), used.size()) == bytes);
}

TEST_CASE("split_text: a contiguous tail for validation", "[io][text]") {
  temp_dir dir("text");
  const auto p = write_file(dir.path / "c.txt", "abcdefghij");
  const auto t = io::load_text(p);
  const auto s = io::split_text(t, 0.1);
  REQUIRE(s.train.size() == 9);
  REQUIRE(s.val.size() == 1);
  CHECK(s.val[0] == t.id_of['j']);
  CHECK(s.train[8] == t.id_of['i']);
  const auto q = io::split_text(t, 0.35);
  CHECK(q.train.size() == 7);
  CHECK(q.val.size() == 3);
  CHECK_THROWS_AS(io::split_text(t, 0.0), value_error);
  CHECK_THROWS_AS(io::split_text(t, 1.0), value_error);
  CHECK_THROWS_AS(io::split_text(t, 0.05), value_error);  // 10 characters: an empty validation part
  try {
    (void)io::split_text(t, 0.05);
  } catch (const value_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("c.txt"));
  }
}

TEST_CASE("text_corpus::unigram_entropy", "[io][text]") {
  temp_dir dir("text");
  const auto p = write_file(dir.path / "d.txt", "aabb");
  const auto t = io::load_text(p);
  CHECK(t.unigram_entropy(0, 4) == Approx(std::log(2.0)));
  CHECK(t.unigram_entropy(0, 2) == Approx(0.0));
  CHECK_THROWS_AS(t.unigram_entropy(2, 2), value_error);
  CHECK_THROWS_AS(t.unigram_entropy(0, 5), value_error);
}

TEST_CASE("load_text: bad input raises io_error naming the file", "[io][text]") {
  temp_dir dir("text");
  auto expect_io_error = [](const fs::path& p, const char* what, io::text_options o = {}) {
    try {
      (void)io::load_text(p, o);
      FAIL("no error for " << p);
    } catch (const io_error& e) {
      CHECK_THAT(e.what(), Catch::Contains(p.string()));
      CHECK_THAT(e.what(), Catch::Contains(what));
    }
  };
  expect_io_error(dir.path / "missing.txt", "no such file");
  expect_io_error(write_file(dir.path / "empty.txt", ""), "empty");
  expect_io_error(dir.path, "not a regular file");
  expect_io_error(write_file(dir.path / "big.txt", std::string(100, 'x')), "limit", {.max_bytes = 99});
  CHECK(io::load_text(dir.path / "big.txt", {.max_bytes = 100}).size() == 100);
}

TEST_CASE("load_text: tinyshakespeare", "[io][text]") {
  const fs::path p = fs::path(MOEKIT_SHARED_DATA_DIR) / "tinyshakespeare" / "input.txt";
  if (!fs::exists(p)) {
    WARN("skipped: " << p << " is not there");
    return;
  }
  const auto t = io::load_text(p);
  CHECK(t.size() == 1115394);
  CHECK(t.vocabulary_size() == 65);
  CHECK(t.decode(t.tokens.data(), 14) == "First Citizen:");
  const auto s = io::split_text(t, 0.1);
  CHECK(s.train.size() + s.val.size() == t.size());
  const double h = t.unigram_entropy(0, t.size());
  CHECK(h > 2.5);
  CHECK(h < 3.5);
}

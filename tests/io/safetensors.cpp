// safetensors checkpoints: round trips through our writer, files built byte by
// byte from the format's spec, every kind of corruption (io_error naming the
// file and tensor, model untouched) and atomic writes.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "../support/temp_dir.hpp"
#include <moekit/autograd/parameter.hpp>
#include <moekit/core/random.hpp>
#include <moekit/io/safetensors.hpp>
#include <moekit/nn/batch_norm.hpp>
#include <moekit/nn/layer.hpp>
#include <moekit/tensor/ops/creation.hpp>

using namespace moekit;
using moekit::testing::temp_dir;
namespace fs = std::filesystem;

namespace {


struct block {
  parameter<double, shape<2, 3>> weight;
  parameter<double, shape<3>> bias;
  void parameters(auto&& visit) {
    visit("weight", weight);
    visit("bias", bias);
  }
};

/// Three parameters: fc.weight (2, 3) F64, fc.bias (3) F64, table (2, 2) F32.
struct tiny_model {
  block fc;
  parameter<float, shape<dyn, dyn>> table;

  explicit tiny_model(std::uint64_t seed) {
    rng g(seed);
    fc.weight = parameter<double, shape<2, 3>>(normal<double>(g, shape<2, 3>{}));
    fc.bias = parameter<double, shape<3>>(normal<double>(g, shape<3>{}));
    table = parameter<float, shape<dyn, dyn>>(normal<float>(g, shape<dyn, dyn>{2, 2}));
  }
  void parameters(auto&& visit) {
    visit("fc", fc);
    visit("table", table);
  }
};

/// Every value of the model, in visiting order, as doubles.
std::vector<double> snapshot(tiny_model& m) {
  std::vector<double> out;
  visit_parameters(m, [&](const std::string&, auto& p) {
    for (std::size_t i = 0; i < p.size(); ++i) out.push_back(static_cast<double>(p.value()[i]));
  });
  return out;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream is(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
}
void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream os(p, std::ios::binary | std::ios::trunc);
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(os.good());
}

/// The low `n` bytes of `bits`, least significant first (the format's byte order).
std::string little_endian(std::uint64_t bits, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += static_cast<char>((bits >> (8 * i)) & 0xFF);
  return out;
}
/// A whole file: 8-byte header length, header text, data buffer.
std::string file_bytes(const std::string& header, const std::string& body) {
  return little_endian(header.size(), 8) + header + body;
}

/// One tensor entry of a hand-written header.
struct raw_entry {
  std::string name, dtype, shape;  // shape as JSON text: "[2,3]"
  std::size_t begin, end;
};
std::string header_of(const std::vector<raw_entry>& entries) {
  std::string h = "{";
  for (const auto& e : entries) {
    if (h.size() > 1) h += ", ";
    h += "\"" + e.name + "\": {\"dtype\": \"" + e.dtype + "\", \"shape\": " + e.shape + ", \"data_offsets\": [" +
         std::to_string(e.begin) + ", " + std::to_string(e.end) + "]}";
  }
  return h + "}";
}

/// The entries a tiny_model's file holds, back to back.
std::vector<raw_entry> tiny_entries() {
  return {{"fc.weight", "F64", "[2, 3]", 0, 48}, {"fc.bias", "F64", "[3]", 48, 72}, {"table", "F32", "[2, 2]", 72, 88}};
}
/// 88 bytes of data for tiny_entries(): 9 doubles then 4 floats.
std::string tiny_body() {
  std::string body;
  for (int i = 0; i < 9; ++i) {
    const double v = 0.5 * i - 1.0;
    body.append(reinterpret_cast<const char*>(&v), 8);
  }
  for (int i = 0; i < 4; ++i) {
    const float v = 2.0f * static_cast<float>(i) + 0.25f;
    body.append(reinterpret_cast<const char*>(&v), 4);
  }
  return body;
}

/// Loading `file` into a fresh model throws io_error whose message names the
/// file and contains every one of `needles`; the model keeps its values.
void require_load_fails(const fs::path& file, std::initializer_list<std::string> needles, bool allow_extra = false) {
  tiny_model m(7);
  const auto before = snapshot(m);
  std::string message;
  try {
    io::load_safetensors(file, m, allow_extra);
  } catch (const io_error& e) {
    message = e.what();
  }
  INFO("message: " << message);
  REQUIRE_FALSE(message.empty());
  CHECK_THAT(message, Catch::Contains(file.string()));
  for (const auto& n : needles) CHECK_THAT(message, Catch::Contains(n));
  REQUIRE(snapshot(m) == before);
}

}  // namespace

TEST_CASE("safetensors: round trip of double and float parameters, in place", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "model.safetensors";
  tiny_model a(1), b(2);
  REQUIRE(snapshot(a) != snapshot(b));

  // Views as an optimizer holds them must see the loaded values.
  auto views = parameter_views<float>(b);
  REQUIRE(views.size() == 1);
  const double* weight_storage = b.fc.weight.value().data();

  io::save_safetensors(file, a);
  io::load_safetensors(file, b);
  REQUIRE(snapshot(b) == snapshot(a));
  REQUIRE(b.fc.weight.value().data() == weight_storage);
  for (std::size_t i = 0; i < 4; ++i) REQUIRE(views[0].value[i] == a.table.value()[i]);
  REQUIRE_FALSE(fs::exists(file.string() + ".tmp." + std::to_string(::getpid())));

  // The file follows the layout: 8-byte length, header starting with '{', data
  // aligned to 8 bytes, raw little-endian values in visiting order.
  const std::string bytes = read_bytes(file);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  REQUIRE(bytes[8] == '{');
  REQUIRE((8 + n) % 8 == 0);
  REQUIRE(bytes.size() == 8 + n + 48 + 24 + 16);
  double w0 = 0;
  std::memcpy(&w0, bytes.data() + 8 + n, 8);
  REQUIRE(w0 == a.fc.weight.value()[0]);

  const auto data = io::read_safetensors(file);
  REQUIRE(data.tensors.size() == 3);
  REQUIRE(data.tensors[0].name == "fc.weight");
  REQUIRE(data.tensors[0].dtype == "F64");
  REQUIRE(data.tensors[0].shape == std::vector<std::size_t>{2, 3});
  REQUIRE(data.tensors[1].name == "fc.bias");
  REQUIRE(data.tensors[1].shape == std::vector<std::size_t>{3});
  REQUIRE(data.tensors[2].name == "table");
  REQUIRE(data.tensors[2].dtype == "F32");
  REQUIRE(data.tensors[2].bytes.size() == 16);
  REQUIRE(data.metadata == io::metadata_map{{"format", "pt"}});
}

TEST_CASE("safetensors: a file built byte by byte from the spec loads", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "by_hand.safetensors";
  // Entries in another order than their data, whitespace between tokens, metadata in the middle.
  const std::string header =
      "{\"table\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [72, 88]},\n"
      " \"__metadata__\": {\"format\": \"pt\", \"epoch\": \"12\"},\n"
      " \"fc.bias\" : { \"shape\":[3], \"dtype\":\"F64\", \"data_offsets\":[48,72] } ,\n"
      " \"fc.weight\": {\"dtype\": \"F64\", \"shape\": [2, 3], \"data_offsets\": [0, 48]}}";
  // IEEE-754 bit patterns, written least significant byte first.
  const std::uint64_t weight_bits[] = {0x3FE0000000000000,   // 0.5
                                       0xBFF0000000000000,   // -1
                                       0x4000000000000000,   // 2
                                       0x3FD0000000000000,   // 0.25
                                       0x4008000000000000,   // 3
                                       0xC010000000000000};  // -4
  const std::uint64_t bias_bits[] = {0x0000000000000000,     // 0
                                     0x3FF8000000000000,     // 1.5
                                     0xC024000000000000};    // -10
  const std::uint32_t table_bits[] = {0x3F800000,            // 1
                                      0xC0200000,            // -2.5
                                      0x3E000000,            // 0.125
                                      0x41200000};           // 10
  std::string body;
  for (auto b : weight_bits) body += little_endian(b, 8);
  for (auto b : bias_bits) body += little_endian(b, 8);
  for (auto b : table_bits) body += little_endian(b, 4);
  write_bytes(file, file_bytes(header, body));

  tiny_model m(3);
  io::load_safetensors(file, m);
  REQUIRE(snapshot(m) == std::vector<double>{0.5, -1, 2, 0.25, 3, -4, 0, 1.5, -10, 1, -2.5, 0.125, 10});
  REQUIRE(m.fc.weight.value()(1, 2) == -4.0);
  REQUIRE(m.table.value()(1, 0) == 0.125f);
  REQUIRE(io::read_safetensors(file).metadata == io::metadata_map{{"format", "pt"}, {"epoch", "12"}});
}

TEST_CASE("safetensors: metadata round trip, escapes and Unicode", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "meta.safetensors";
  tiny_model m(4);
  const io::metadata_map meta{{"epoch", "17"},
                              {"note", "quote \" backslash \\ slash / newline \n tab \t bell \x07 end"},
                              {"unicode \xC3\xA9", "caf\xC3\xA9 \xF0\x9F\x98\x80"},
                              {"empty", ""}};
  io::save_safetensors(file, m, meta);
  auto expected = meta;
  expected["format"] = "pt";
  REQUIRE(io::read_safetensors(file).metadata == expected);

  // A caller's "format" wins.
  io::save_safetensors(file, m, {{"format", "moekit"}});
  REQUIRE(io::read_safetensors(file).metadata == io::metadata_map{{"format", "moekit"}});
}

TEST_CASE("safetensors: padded headers and \\u escapes are accepted", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "padded.safetensors";
  const std::string body = tiny_body();
  for (std::size_t pad : {1u, 7u, 64u}) {
    write_bytes(file, file_bytes(header_of(tiny_entries()) + std::string(pad, ' '), body));
    tiny_model m(5);
    io::load_safetensors(file, m);
    REQUIRE(snapshot(m)[1] == -0.5);
    REQUIRE(m.table.value()[3] == 6.25f);
  }

  // Escaped names decode to UTF-8: \u00e9 is é, the surrogate pair is U+1F600.
  const std::string header =
      "{\"caf\\u00e9\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
      " \"\\ud83d\\ude00\\n\\\"\": {\"dtype\": \"U8\", \"shape\": [], \"data_offsets\": [1, 2]}}   ";
  write_bytes(file, file_bytes(header, "\x05\x06"));
  const auto data = io::read_safetensors(file);
  REQUIRE(data.find("caf\xC3\xA9"));
  REQUIRE(data.find("\xF0\x9F\x98\x80\n\""));
  REQUIRE(data.find("\xF0\x9F\x98\x80\n\"")->shape.empty());
  REQUIRE(std::to_integer<int>(data.find("caf\xC3\xA9")->bytes[0]) == 5);
}

TEST_CASE("safetensors: records of several dtypes (optimizer state)", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "state.safetensors";
  rng g(9);
  auto exp_avg = normal<float>(g, shape<dyn>{5});
  auto counts = from_values<index_t>(shape<2, 2>{}, {1, -2, 3, 2147483647});
  auto step = from_values<double>(shape<>{}, {42.0});
  auto nothing = zeros<float>(shape<0, 4>{});
  const std::vector<io::tensor_record> records{
      io::record_of("state.fc1.weight.exp_avg", exp_avg), io::record_of("counts", counts),
      io::record_of("step", step), io::record_of("empty", nothing)};
  io::save_safetensors(file, records, {{"optimizer", "adamw"}});

  const auto data = io::read_safetensors(file);
  REQUIRE(data.tensors.size() == 4);
  REQUIRE(data.metadata == io::metadata_map{{"optimizer", "adamw"}});
  for (const auto& r : records) {
    const auto* got = data.find(r.name);
    REQUIRE(got);
    REQUIRE(got->dtype == r.dtype);
    REQUIRE(got->shape == r.shape);
    REQUIRE(std::ranges::equal(got->bytes, r.bytes));
  }
  REQUIRE(data.find("counts")->dtype == "I32");
  REQUIRE(data.find("step")->shape.empty());

  auto back = zeros<float>(shape<dyn>{5});
  io::copy_into(data, "state.fc1.weight.exp_avg", back);
  for (std::size_t i = 0; i < 5; ++i) REQUIRE(back[i] == exp_avg[i]);
  auto wrong_shape = zeros<float>(shape<dyn>{4});
  REQUIRE_THROWS_WITH(io::copy_into(data, "state.fc1.weight.exp_avg", wrong_shape),
                      Catch::Contains("state.fc1.weight.exp_avg") && Catch::Contains("shape (5) in the file"));
  auto wrong_dtype = zeros<double>(shape<dyn>{5});
  REQUIRE_THROWS_AS(io::copy_into(data, "state.fc1.weight.exp_avg", wrong_dtype), io_error);
  REQUIRE_THROWS_WITH(io::copy_into(data, "nope", back), Catch::Contains("'nope'") && Catch::Contains("missing"));

  // Invalid records: value_error, and nothing is written.
  const auto other = dir / "bad.safetensors";
  std::vector<io::tensor_record> bad{io::record_of("x", exp_avg)};
  bad[0].shape = {4};
  REQUIRE_THROWS_WITH(io::save_safetensors(other, bad), Catch::Contains("'x'") && Catch::Contains("needs 16"));
  bad[0].shape = {5};
  bad[0].dtype = "F17";
  REQUIRE_THROWS_AS(io::save_safetensors(other, bad), value_error);
  bad[0].dtype = "F32";
  bad.push_back(bad[0]);
  REQUIRE_THROWS_WITH(io::save_safetensors(other, bad), Catch::Contains("appears twice"));
  bad.resize(1);
  bad[0].name = "__metadata__";
  REQUIRE_THROWS_AS(io::save_safetensors(other, bad), value_error);
  REQUIRE_FALSE(fs::exists(other));
}

TEST_CASE("safetensors: structural mismatches name the tensor and leave the model untouched", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "bad.safetensors";
  const std::string body = tiny_body();

  SECTION("the untouched file loads (the baseline of the cases below)") {
    write_bytes(file, file_bytes(header_of(tiny_entries()), body));
    tiny_model m(7);
    io::load_safetensors(file, m);
    REQUIRE(snapshot(m)[0] == -1.0);
  }
  SECTION("missing tensor") {
    auto e = tiny_entries();
    e.erase(e.begin() + 1);
    e[1].begin -= 24;
    e[1].end -= 24;
    write_bytes(file, file_bytes(header_of(e), body.substr(0, 48) + body.substr(72)));
    require_load_fails(file, {"'fc.bias'", "missing"});
  }
  SECTION("extra tensor, unless allowed") {
    auto e = tiny_entries();
    e.push_back({"extra", "F32", "[1]", 88, 92});
    write_bytes(file, file_bytes(header_of(e), body + "abcd"));
    require_load_fails(file, {"'extra'", "allow_extra"});
    tiny_model m(7);
    io::load_safetensors(file, m, /*allow_extra=*/true);
    REQUIRE(m.table.value()[0] == 0.25f);
  }
  SECTION("wrong shape") {
    auto e = tiny_entries();
    e[0].shape = "[3, 2]";
    write_bytes(file, file_bytes(header_of(e), body));
    require_load_fails(file, {"'fc.weight'", "shape (3, 2) in the file, (2, 3) expected"});
  }
  SECTION("wrong rank") {
    auto e = tiny_entries();
    e[2].shape = "[4]";
    write_bytes(file, file_bytes(header_of(e), body));
    require_load_fails(file, {"'table'", "shape (4)"});
  }
  SECTION("wrong dtype") {
    auto e = tiny_entries();
    e[1] = {"fc.bias", "F32", "[3]", 48, 60};
    e[2].begin -= 12;
    e[2].end -= 12;
    write_bytes(file, file_bytes(header_of(e), body.substr(0, 60) + body.substr(72)));
    require_load_fails(file, {"'fc.bias'", "dtype F32 in the file, F64 expected"});
  }
}

TEST_CASE("safetensors: corrupt files raise io_error naming file and tensor", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "corrupt.safetensors";
  const std::string body = tiny_body();

  SECTION("truncated body") {
    tiny_model a(1);
    io::save_safetensors(file, a);
    fs::resize_file(file, fs::file_size(file) - 4);
    require_load_fails(file, {"'table'", "outside the data buffer", "truncated"});
  }
  SECTION("header length larger than the file") {
    std::string bytes = file_bytes(header_of(tiny_entries()), body);
    bytes.replace(0, 8, little_endian(bytes.size(), 8));
    write_bytes(file, bytes);
    require_load_fails(file, {"header length", "exceeds"});
  }
  SECTION("absurd header length") {
    std::string bytes = file_bytes(header_of(tiny_entries()), body);
    bytes.replace(0, 8, little_endian(0xFFFFFFFFFFFFFFF0ull, 8));
    write_bytes(file, bytes);
    require_load_fails(file, {"header length"});
  }
  SECTION("shorter than the length field") {
    write_bytes(file, "\x10\x00\x00");
    require_load_fails(file, {"no header"});
  }
  SECTION("missing file") {
    require_load_fails(dir / "absent.safetensors", {"cannot read"});
  }
  SECTION("offsets out of range") {
    auto e = tiny_entries();
    e[2].end = 10000;
    write_bytes(file, file_bytes(header_of(e), body));
    require_load_fails(file, {"'table'", "[72, 10000]", "outside"});
  }
  SECTION("offsets disagree with shape and dtype") {
    auto e = tiny_entries();
    e[1].end = 70;
    e[2].begin = 70;
    write_bytes(file, file_bytes(header_of(e), body.substr(0, 86)));
    require_load_fails(file, {"'fc.bias'", "needs 24"});
  }
  SECTION("overlapping tensors") {
    auto e = tiny_entries();
    e[1] = {"fc.bias", "F64", "[3]", 40, 64};
    write_bytes(file, file_bytes(header_of(e), body));
    require_load_fails(file, {"'fc.bias'", "overlap"});
  }
  SECTION("end before begin") {
    auto e = tiny_entries();
    e[2].begin = 88;
    e[2].end = 72;
    write_bytes(file, file_bytes(header_of(e), body));
    require_load_fails(file, {"'table'", "end before they begin"});
  }
  SECTION("a hole in the buffer") {
    auto e = tiny_entries();
    e[2].begin += 8;
    e[2].end += 8;
    write_bytes(file, file_bytes(header_of(e), body.substr(0, 72) + "12345678" + body.substr(72)));
    require_load_fails(file, {"'table'", "belong to no tensor"});
  }
  SECTION("trailing bytes after the last tensor") {
    write_bytes(file, file_bytes(header_of(tiny_entries()), body + "xyz"));
    require_load_fails(file, {"3 bytes at the end"});
  }
  SECTION("unknown dtype") {
    auto e = tiny_entries();
    e[0].dtype = "F17";
    write_bytes(file, file_bytes(header_of(e), body));
    require_load_fails(file, {"'fc.weight'", "unknown dtype 'F17'"});
  }
}

TEST_CASE("safetensors: malformed header JSON is rejected", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "json.safetensors";
  const std::string body = tiny_body();
  const std::string good = header_of(tiny_entries());
  const std::string t = R"("table": {"dtype": "F32", "shape": [2, 2], "data_offsets": [72, 88]})";
  const std::string w = R"("fc.weight": {"dtype": "F64", "shape": [2, 3], "data_offsets": [0, 48]})";
  const std::string b = R"("fc.bias": {"dtype": "F64", "shape": [3], "data_offsets": [48, 72]})";
  const std::string two = w + ", " + b + ", ";  // followed by a variant of the table entry

  const std::vector<std::pair<std::string, std::string>> cases{
      {"missing closing brace", good.substr(0, good.size() - 1)},
      {"trailing comma", "{" + two + t + ",}"},
      {"unquoted key", "{" + two + R"(table: {"dtype": "F32", "shape": [2, 2], "data_offsets": [72, 88]}})"},
      {"negative extent", "{" + two + R"("table": {"dtype": "F32", "shape": [-2, 2], "data_offsets": [72, 88]}})"},
      {"fractional extent", "{" + two + R"("table": {"dtype": "F32", "shape": [2.0, 2], "data_offsets": [72, 88]}})"},
      {"leading zero", "{" + two + R"("table": {"dtype": "F32", "shape": [02, 2], "data_offsets": [72, 88]}})"},
      {"huge integer", "{" + two + R"("table": {"dtype": "F32", "shape": [99999999999999999999999, 2], "data_offsets": [72, 88]}})"},
      {"three offsets", "{" + two + R"("table": {"dtype": "F32", "shape": [2, 2], "data_offsets": [72, 80, 88]}})"},
      {"unknown key", "{" + two + R"("table": {"dtyp": "F32", "shape": [2, 2], "data_offsets": [72, 88]}})"},
      {"missing key", "{" + two + R"("table": {"dtype": "F32", "data_offsets": [72, 88]}})"},
      {"repeated key", "{" + two + R"("table": {"dtype": "F32", "dtype": "F32", "shape": [2, 2], "data_offsets": [72, 88]}})"},
      {"repeated tensor", "{" + two + t + ", " + t + "}"},
      {"dtype not a string", "{" + two + R"("table": {"dtype": 4, "shape": [2, 2], "data_offsets": [72, 88]}})"},
      {"bad escape", "{" + two + R"("ta\xble": {"dtype": "F32", "shape": [2, 2], "data_offsets": [72, 88]}})"},
      {"lone surrogate", "{" + two + R"("\ud83d": {"dtype": "F32", "shape": [2, 2], "data_offsets": [72, 88]}})"},
      {"raw newline in a string", "{" + two + "\"ta\nble\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [72, 88]}}"},
      {"invalid UTF-8", "{" + two + "\"ta\xFF" "ble\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [72, 88]}}"},
      {"metadata value not a string", R"({"__metadata__": {"epoch": 3}, )" + two + t + "}"},
      {"text after the object", good + " x"},
      {"a second object", good + good},
      {"not an object", "[1, 2, 3]"},
      {"empty header", ""},
      {"NUL padding", good + std::string(3, '\0')},
  };
  for (const auto& [what, header] : cases) {
    INFO(what);
    write_bytes(file, file_bytes(header, body));
    REQUIRE_THROWS_AS(io::read_safetensors(file), io_error);
    require_load_fails(file, {"safetensors: "});
  }
  // The parse errors say where.
  write_bytes(file, file_bytes("{" + two + t + ",}", body));
  REQUIRE_THROWS_WITH(io::read_safetensors(file), Catch::Contains("invalid header JSON at byte"));
  write_bytes(file, file_bytes("{" + two + R"("table": {"dtype": "F32", "shape": [2, 2], "data_offsets": [72, 88], "x": 1}})", body));
  REQUIRE_THROWS_WITH(io::read_safetensors(file), Catch::Contains("'table'") && Catch::Contains("unexpected key"));
}

TEST_CASE("safetensors: writes are atomic", "[io][safetensors]") {
  temp_dir dir;
  const auto file = dir / "ckpt.safetensors";
  tiny_model old_model(1), new_model(2);
  io::save_safetensors(file, old_model);
  const std::string old_bytes = read_bytes(file);
  const std::string tmp_name = file.string() + ".tmp." + std::to_string(::getpid());

  SECTION("overwriting replaces the file and leaves no temporary file") {
    io::save_safetensors(file, new_model);
    REQUIRE(read_bytes(file) != old_bytes);
    tiny_model m(3);
    io::load_safetensors(file, m);
    REQUIRE(snapshot(m) == snapshot(new_model));
    REQUIRE_FALSE(fs::exists(tmp_name));
  }
  SECTION("the temporary file cannot be created: io_error, old file intact") {
    // A folder that is a file makes creating it fail, even for root (who may
    // write into read-only directories).
    write_bytes(dir / "plain", "not a folder");
    const auto inside = dir / "plain" / "ckpt.safetensors";
    REQUIRE_THROWS_WITH(io::save_safetensors(inside, new_model),
                        Catch::Contains(inside.string()) && Catch::Contains("cannot create"));
    REQUIRE(read_bytes(file) == old_bytes);
  }
  SECTION("a folder named like a temporary file is not ours: left alone") {
    fs::create_directories(fs::path(tmp_name) / "keep");
    io::save_safetensors(file, new_model);
    REQUIRE(fs::exists(fs::path(tmp_name) / "keep"));
  }
  SECTION("the directory does not exist") {
    const auto nowhere = dir / "no" / "such" / "dir" / "ckpt.safetensors";
    REQUIRE_THROWS_AS(io::save_safetensors(nowhere, new_model), io_error);
    REQUIRE_FALSE(fs::exists(dir / "no"));
  }
  SECTION("the rename fails: the temporary file is removed") {
    const auto blocked = dir / "blocked.safetensors";
    fs::create_directories(blocked / "child");  // rename cannot replace a non-empty directory
    REQUIRE_THROWS_WITH(io::save_safetensors(blocked, new_model), Catch::Contains("rename"));
    REQUIRE(fs::is_directory(blocked / "child"));
    for (const auto& e : fs::directory_iterator(dir.path))
      REQUIRE_FALSE(e.path().filename().string().starts_with("blocked.safetensors.tmp."));
    REQUIRE(read_bytes(file) == old_bytes);
  }
  SECTION("a read-only directory") {
    if (::geteuid() == 0) {
      WARN("running as root, who can write into read-only directories: skipped");
    } else {
      fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
      REQUIRE_THROWS_AS(io::save_safetensors(file, new_model), io_error);
      fs::permissions(dir.path, fs::perms::owner_all);
      REQUIRE(read_bytes(file) == old_bytes);
    }
  }
}

TEST_CASE("safetensors: buffers (batch-norm running statistics) are saved and loaded", "[io][safetensors]") {
  temp_dir dir;
  const auto path = dir.path / "bn.safetensors";
  rng g(5);
  nn::batch_norm1d<4> trained;
  {
    tape t;
    (void)trained(t.input(normal<float>(g, shape<dyn, 4>{16}, 3.0f, 2.0f)));  // moves the running stats
  }
  REQUIRE(trained.running_mean()[0] != 0.0f);
  io::save_safetensors(path, trained);
  nn::batch_norm1d<4> fresh;
  io::load_safetensors(path, fresh);
  for (std::size_t i = 0; i < 4; ++i) {
    REQUIRE(fresh.running_mean()[i] == trained.running_mean()[i]);
    REQUIRE(fresh.running_var()[i] == trained.running_var()[i]);
  }
  REQUIRE(io::read_safetensors(path).find("running_mean") != nullptr);
}

// fuzz/fuzz_graph.cpp — io::load_graph on a folder made from the input: the
// bytes split at NUL bytes into meta.txt, features.txt, labels.txt,
// edges.txt, train.txt, val.txt and test.txt, in that order; files beyond the
// pieces present are left out (a missing file is bad input too).
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include <moekit/io/graph.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static constexpr std::array<const char*, 7> names{"meta.txt",  "features.txt", "labels.txt", "edges.txt",
                                                    "train.txt", "val.txt",      "test.txt"};
  static const auto dir = moekit_fuzz::scratch_dir() / "graph";
  std::filesystem::create_directories(dir);
  std::string_view rest = moekit_fuzz::as_text(data, size);
  for (std::size_t k = 0; k < names.size(); ++k) {
    std::error_code ec;
    if (rest.data() == nullptr) {
      std::filesystem::remove(dir / names[k], ec);
      continue;
    }
    const std::size_t cut = rest.find('\0');
    moekit_fuzz::write_file(dir / names[k], rest.substr(0, cut));
    rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 1);
  }
  return moekit_fuzz::run([&] { (void)moekit::io::load_graph(dir); });
}

// fuzz/fuzz_idx.cpp — io::read_idx, load_idx_images and load_idx_labels on
// arbitrary bytes. The reader opens files through zlib, which inflates gzip
// and passes other bytes through: the seeds hold both kinds, so one file
// covers the raw and the gzip paths (CRC, length, trailing data).
#include <cstddef>
#include <cstdint>

#include <moekit/io/idx.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto path = moekit_fuzz::scratch_dir() / "input.idx";
  moekit_fuzz::write_file(path, moekit_fuzz::as_text(data, size));
  return moekit_fuzz::run([&] {
    const auto raw = moekit::io::read_idx(path);
    if (raw.dims.size() == 3) (void)moekit::io::load_idx_images(path);
    if (raw.dims.size() == 1) (void)moekit::io::load_idx_labels(path);
  });
}

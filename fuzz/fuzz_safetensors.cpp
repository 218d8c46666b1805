// fuzz/fuzz_safetensors.cpp — io::parse_safetensors (what read_safetensors
// runs on a file's bytes) on arbitrary bytes. Every record it accepts must
// view bytes inside the buffer: the harness reads them all (ASan checks), and
// checks that the byte count matches dtype and shape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include <moekit/io/safetensors.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return moekit_fuzz::run([&] {
    const auto* first = reinterpret_cast<const std::byte*>(data);
    auto bytes = std::make_shared<const std::vector<std::byte>>(first, first + size);
    const auto file = moekit::io::parse_safetensors(bytes, "fuzz.safetensors");
    unsigned sum = 0;
    for (const auto& r : file.tensors) {
      std::size_t need = 0;
      if (!moekit::io::detail::tensor_bytes(r.dtype, r.shape, need) || need != r.bytes.size()) std::abort();
      if (file.find(r.name) == nullptr) std::abort();
      for (const std::byte b : r.bytes) sum += std::to_integer<unsigned>(b);
    }
    for (const auto& [key, value] : file.metadata) sum += static_cast<unsigned>(key.size() + value.size());
    volatile unsigned sink = sum;
    (void)sink;
  });
}

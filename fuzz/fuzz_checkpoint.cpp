// fuzz/fuzz_checkpoint.cpp — io::load_checkpoint of arbitrary bytes into a
// small bottleneck MLP and its AdamW optimizer (checkpoint_model.hpp): the
// safetensors parse, the model's name/dtype/shape checks, the optimizer
// state's step counts and buffers, and the copies into both.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <moekit/io/checkpoint.hpp>

#include "checkpoint_model.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static moekit::rng g(1);
  static moekit_fuzz::checkpoint_model model(g);
  static moekit_fuzz::checkpoint_optimizer opt(model);
  return moekit_fuzz::run([&] {
    const auto* first = reinterpret_cast<const std::byte*>(data);
    auto bytes = std::make_shared<const std::vector<std::byte>>(first, first + size);
    const auto file = moekit::io::parse_safetensors(bytes, "fuzz.safetensors");
    (void)moekit::io::load_checkpoint(file, model, opt);
  });
}

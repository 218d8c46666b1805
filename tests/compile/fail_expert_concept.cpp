// expect: satisfaction of [^a-z]*expert<|does not satisfy [^a-z]*expert
// An expert spec without a nested bank<E, T, B> used as moe::layer's Expert
// must not compile, and the diagnostic must name the expert concept.
#include <moekit.hpp>
#include <moekit/moe.hpp>

namespace {
// Says its width but has no bank of stacked weights.
struct not_an_expert {
  static constexpr std::size_t d_model = 8;
};
}  // namespace

int main() {
  using namespace moekit;
  using bad_layer = moe::layer<moe::top_k_router<8, 4, 1>, not_an_expert>;
  return static_cast<int>(bad_layer::d_model);
}

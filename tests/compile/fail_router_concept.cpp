// expect: moe::layer: Router does not model moe::router.*(router<|route\(x\))
// A router type without route(x) used as moe::layer's Router must not compile,
// and the diagnostic must name the router concept and the missing requirement.
#include <moekit.hpp>
#include <moekit/moe.hpp>

namespace {
// Has parameters and experts() but no route(x).
struct not_a_router {
  static constexpr std::size_t experts_extent = 4;
  std::size_t experts() const { return 4; }
  template <class V>
  void parameters(V&&) {}
};
}  // namespace

int main() {
  using namespace moekit;
  using bad_layer = moe::layer<not_a_router, moe::ffn_expert<8, 16>>;
  rng g(1);
  bad_layer layer(not_a_router{}, bad_layer::bank_type(g));
  tape t;
  auto x = t.input(zeros<float>(shape<dyn, 8>{2}));
  auto y = layer(x);
  return static_cast<int>(y.size());
}

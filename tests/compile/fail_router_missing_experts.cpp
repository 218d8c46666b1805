// expect: moe::layer: Router does not model moe::router(.|\n)*r\.experts\(\)
// A router type with route(x) but no experts() used as moe::layer's Router
// must not compile, and the diagnostic must name the concept and experts().
#include <moekit.hpp>
#include <moekit/moe.hpp>

namespace {
// Routes, has parameters, but does not say how many experts it routes to.
struct router_without_experts {
  template <class T, class S, class B>
  moekit::moe::routing<T, B> route(const moekit::var<T, S, B>&) {
    return {};
  }
  template <class V>
  void parameters(V&&) {}
};
}  // namespace

int main() {
  using namespace moekit;
  using bad_layer = moe::layer<router_without_experts, moe::ffn_expert<8, 16>>;
  return static_cast<int>(bad_layer::d_model);
}

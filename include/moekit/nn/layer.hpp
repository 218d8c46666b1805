// moekit/nn/layer.hpp — the layer concept and layer lists.
//
// A layer is callable on its input and lists its parameters and sub-layers
// (the parameter-tree protocol of autograd/parameter_tree.hpp):
//
//   void parameters(auto&& visit) { visit("weight", weight_); visit("fc1", fc1_); }
//
// visit_parameters(), visit_buffers(), parameter_views() and the
// `parameterized` concept live in autograd/parameter_tree.hpp, below nn/, so
// optimizers, checkpoints and gradient checks need no nn header; this header
// includes it, so code that includes nn/layer.hpp sees them too.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "../autograd/parameter_tree.hpp"

namespace moekit {

/// A layer: callable on In, and parameterized.
template <class L, class In>
concept layer = parameterized<L> && requires(L& l, const In& x) { l(x); };

namespace nn {
/// A vector of layers seen as a layer list ("0", "1", ...), for a model that
/// keeps its layers in a std::vector: `visit("convs", layer_list<Conv>{&convs_})`.
template <class L>
struct layer_list {
  std::vector<L>* items;
  template <class V>
  void parameters(V&& visit) {
    for (std::size_t i = 0; i < items->size(); ++i) visit(std::to_string(i), (*items)[i]);
  }
};
}  // namespace nn

}  // namespace moekit

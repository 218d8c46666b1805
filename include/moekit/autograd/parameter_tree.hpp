// moekit/autograd/parameter_tree.hpp — the parameter-tree protocol: how a
// model lists its parameters, sub-models and buffers, and how they are walked.
//
// Anything with
//
//   void parameters(auto&& visit) { visit("weight", weight_); visit("fc1", fc1_); }
//
// is `parameterized`: `visit` takes a parameter or a parameterized child.
// visit_parameters() walks the tree and hands every parameter to a callback
// with its dotted path ("blocks.3.fc1.weight"), the key under which
// checkpoints store it; visit_buffers() does the same for the tensors a model
// keeps besides its parameters (running statistics). Optimizers (flat
// parameter views), checkpoints (io/) and gradient checks work on this
// protocol alone, below nn/: the `layer` concept (callable and
// parameterized) is nn/layer.hpp.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "parameter.hpp"

namespace moekit {

namespace detail {
template <class X>
struct is_parameter : std::false_type {};
template <class T, class S, class B>
struct is_parameter<parameter<T, S, B>> : std::true_type {};

/// Stand-in visitor for checking the concept: accepts anything by name.
struct any_visitor {
  template <class P>
  void operator()(std::string_view, P&) const {}
};
}  // namespace detail

/// Any moekit::parameter.
template <class P>
concept parameter_type = detail::is_parameter<std::remove_cvref_t<P>>::value;

/// Something that lists its parameters (and sub-layers) to a visitor.
template <class L>
concept parameterized = requires(L& l, detail::any_visitor v) { l.parameters(v); };

/// Calls f(path, p) for every parameter p under `model`, depth first, in the
/// order the layers list them. Paths join names with '.'.
template <parameterized M, class F>
void visit_parameters(M& model, F&& f, const std::string& prefix = "") {
  model.parameters([&](std::string_view name, auto& item) {
    std::string path = prefix.empty() ? std::string(name) : prefix + "." + std::string(name);
    if constexpr (parameter_type<decltype(item)>) f(path, item);
    else visit_parameters(item, f, path);
  });
}

/// Something that lists tensors it keeps besides its parameters (running statistics).
template <class L>
concept buffered = requires(L& l, detail::any_visitor v) { l.buffers(v); };

/// Calls f(path, tensor) for every buffer under `model`, depth first, reaching
/// sub-layers through parameters() as visit_parameters() does.
template <parameterized M, class F>
void visit_buffers(M& model, F&& f, const std::string& prefix = "") {
  auto path_of = [&](std::string_view name) {
    return prefix.empty() ? std::string(name) : prefix + "." + std::string(name);
  };
  if constexpr (buffered<M>) model.buffers([&](std::string_view name, auto& t) { f(path_of(name), t); });
  model.parameters([&](std::string_view name, auto& item) {
    if constexpr (!parameter_type<decltype(item)>) visit_buffers(item, f, path_of(name));
  });
}

/// Number of scalar parameters under `model`.
template <parameterized M>
std::size_t count_parameters(M& model) {
  std::size_t n = 0;
  visit_parameters(model, [&](const std::string&, auto& p) { n += p.size(); });
  return n;
}

/// A parameter seen as flat vectors of its value and gradient (views sharing
/// the parameter's storage): what optimizers and checkpoints work on.
template <class T, backend B = cpu>
struct parameter_view {
  std::string name;
  tensor<T, shape<dyn>, B> value;  // (size)
  tensor<T, shape<dyn>, B> grad;   // (size)
  std::vector<std::size_t> extents; // the parameter's own shape, e.g. {784, 256}
};

/// Flat views of every parameter of element type T under `model`.
template <class T, backend B = cpu, parameterized M>
std::vector<parameter_view<T, B>> parameter_views(M& model) {
  std::vector<parameter_view<T, B>> out;
  visit_parameters(model, [&](const std::string& path, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    if constexpr (std::is_same_v<typename P::value_type, T> && std::is_same_v<typename P::backend_type, B>) {
      const shape<dyn> flat{p.size()};
      const auto e = p.shape().extents();
      out.push_back({path, p.value().reshape(flat), p.grad().reshape(flat), {e.begin(), e.end()}});
    }
  });
  return out;
}

}  // namespace moekit

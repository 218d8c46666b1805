// moekit/nn/transfer.hpp — moving a model between backends: copy_state(from, to)
// copies every parameter value and buffer (running statistics) of one model
// into the same-named, same-shaped ones of another, on any two backends.
//
//   mlp::bottleneck_mlp<C, float, cpu> host{g};      // trained, or loaded from a checkpoint
//   mlp::bottleneck_mlp<C, float, cuda> gpu{g2};     // same sizes; its own values are overwritten
//   nn::copy_state(host, gpu);                       // and back: nn::copy_state(gpu, host)
//
// Each tensor goes through the host when the two backends have no direct
// transfer (e.g. emulated_device and cuda); a host source is read in place.
// Gradients are not copied. Optimizer state moves with optim::copy_state.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "layer.hpp"

namespace moekit::nn {

namespace detail {

/// One source tensor staged on the host: its element type, extents and bytes.
struct staged_tensor {
  std::string dtype;
  std::vector<std::size_t> extents;
  std::shared_ptr<const void> host;  // a tensor<T, S, cpu>: keeps `bytes` alive
  const void* bytes = nullptr;
  std::size_t size = 0;  // in bytes
  bool used = false;
};

/// Every parameter ("<path>") and buffer ("<path> (buffer)" in messages) of a
/// model, staged on the host under its dotted path.
template <class M>
std::map<std::string, staged_tensor> stage(M& model) {
  std::map<std::string, staged_tensor> out;
  auto add = [&](const std::string& name, const auto& t) {
    using X = std::remove_cvref_t<decltype(t)>;
    auto host = std::make_shared<const tensor<typename X::value_type, typename X::shape_type, cpu>>(
        t.template to<cpu>());  // the tensor itself when it is on the host
    const auto e = t.shape().extents();
    out[name] = {std::string(dtype_name<typename X::value_type>()), {e.begin(), e.end()}, host, host->data(),
                 host->size() * sizeof(typename X::value_type)};
  };
  visit_parameters(model, [&](const std::string& name, auto& p) { add(name, p.value()); });
  visit_buffers(model, [&](const std::string& name, auto& t) { add(name, t); });
  return out;
}

inline std::string extents_str(const std::vector<std::size_t>& e) {
  std::string s = "(";
  for (std::size_t i = 0; i < e.size(); ++i) s += (i ? ", " : "") + std::to_string(e[i]);
  return s + ")";
}

}  // namespace detail

/// Copies every parameter value and buffer of `from` into the same-named,
/// same-shaped one of `to` (any two backends; `from` is only read). Checked
/// first, copied after: value_error naming the tensor when a name is missing
/// on either side or the element types differ, shape_error when the shapes
/// differ; `to` is untouched then.
template <parameterized From, parameterized To>
void copy_state(const From& from, To& to) {
  // Visiting needs a non-const model (parameters() hands out references); nothing is written.
  auto staged = detail::stage(const_cast<From&>(from));
  std::vector<std::function<void()>> copies;
  auto plan = [&](const std::string& name, const auto& t) {
    using X = std::remove_cvref_t<decltype(t)>;
    using B = typename X::backend_type;
    static_assert(transferable<cpu, B>, "copy_state: no transfer from the host to the destination backend");
    const auto it = staged.find(name);
    if (it == staged.end()) throw value_error("copy_state: '" + name + "' of the destination is not in the source");
    detail::staged_tensor& s = it->second;
    const auto e = t.shape().extents();
    const std::vector<std::size_t> extents(e.begin(), e.end());
    if (s.dtype != dtype_name<typename X::value_type>())
      throw value_error("copy_state: '" + name + "' is " + s.dtype + " in the source, " +
                        std::string(dtype_name<typename X::value_type>()) + " in the destination");
    if (s.extents != extents)
      throw shape_error("copy_state: '" + name + "' is " + detail::extents_str(s.extents) + " in the source, " +
                        detail::extents_str(extents) + " in the destination");
    s.used = true;
    copies.push_back([src = s.bytes, bytes = s.size, dst = static_cast<void*>(t.data())] {
      if (bytes) transfer<cpu, B>::copy(src, dst, bytes);
    });
  };
  visit_parameters(to, [&](const std::string& name, auto& p) { plan(name, p.value()); });
  visit_buffers(to, plan);
  for (const auto& [name, s] : staged)
    if (!s.used) throw value_error("copy_state: '" + name + "' of the source is not in the destination");
  for (const auto& c : copies) c();
}

}  // namespace moekit::nn

// moekit/io/checkpoint.hpp — a training checkpoint in one safetensors file:
// the model's parameters and buffers (running statistics, a shared bank's
// slot map, a packed bank's layout) under their dotted names, the optimizer's state
// under "optim." (io/optimizer_state.hpp) and string metadata (epoch, ...).
//
//   io::save_checkpoint("run.safetensors", model, opt, {{"epoch", "3"}});
//   auto meta = io::load_checkpoint("run.safetensors", model, opt);  // meta["epoch"] == "3"
//
// The file stays readable by safetensors tools (the optimizer's step counts
// are U64 scalars).
//
// `opt` is an optim::optimizer (sgd, adamw, ...), or any type for which
// optimizer_state_records(opt, prefix) and load_optimizer_state(opt, file,
// prefix) are found by argument-dependent lookup: a type-erased optimizer
// forwards them to the io:: functions (examples/scaling_mlp.cpp does).
#pragma once

#include <filesystem>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "../autograd/parameter_tree.hpp"
#include "optimizer_state.hpp"
#include "safetensors.hpp"

namespace moekit::io {

/// Writes model parameters and buffers, optimizer state and `metadata` to `path` atomically.
template <parameterized M, class Opt>
void save_checkpoint(const std::filesystem::path& path, M& model, const Opt& opt, metadata_map metadata = {}) {
  std::vector<tensor_record> records;
  visit_parameters(model, [&](const std::string& name, auto& p) { records.push_back(record_of(name, p.value())); });
  visit_buffers(model, [&](const std::string& name, auto& t) { records.push_back(record_of(name, t)); });
  for (auto& r : optimizer_state_records(opt, optimizer_prefix)) records.push_back(std::move(r));
  metadata.try_emplace("format", "pt");
  save_safetensors(path, records, metadata);
}

/// Loads what save_checkpoint wrote into `model` and `opt` (built with the same
/// sizes) and returns the metadata. Everything is checked before anything is
/// written: io_error naming the file and tensor when a parameter is missing
/// or has another shape or dtype, when the optimizer state does not fit, or
/// when the file holds tensors that are neither.
template <parameterized M, class Opt>
metadata_map load_checkpoint(const safetensors_data& file, M& model, Opt& opt) {
  const auto& path = file.path;
  std::unordered_set<std::string> params;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    using T = typename std::remove_cvref_t<decltype(p)>::value_type;
    const auto e = p.shape().extents();
    (void)file.expect(name, dtype_name<T>(), e);
    params.insert(name);
  });
  visit_buffers(model, [&](const std::string& name, const auto& t) {
    using X = std::remove_cvref_t<decltype(t)>;
    (void)file.expect(name, dtype_name<typename X::value_type>(), t.shape().extents());
    params.insert(name);
  });
  for (const auto& r : file.tensors)
    if (!params.contains(r.name) && !r.name.starts_with(optimizer_prefix))
      detail::safetensors_fail(path, r.name, "neither a parameter of the model nor optimizer state");
  load_optimizer_state(opt, file, optimizer_prefix);  // all or nothing itself; the model checks are done
  visit_parameters(model, [&](const std::string& name, auto& p) { copy_into(file, name, p.value()); });
  visit_buffers(model, [&](const std::string& name, const auto& t) { copy_into(file, name, t); });
  return file.metadata;
}

/// The same, from the file at `path`.
template <parameterized M, class Opt>
metadata_map load_checkpoint(const std::filesystem::path& path, M& model, Opt& opt) {
  return load_checkpoint(read_safetensors(path), model, opt);
}

}  // namespace moekit::io

// moekit/io/optimizer_state.hpp — an optimizer's state (step counts and
// buffers: momentum, exp_avg, ...) as safetensors records, for a checkpoint
// next to the model's parameters:
//
//   auto records = io::optimizer_state_records(opt);          // "optim.steps", "optim.fc1.weight.step", ...
//   io::save_safetensors("adamw.safetensors", records);
//   io::load_optimizer_state(opt, io::read_safetensors("adamw.safetensors"));
//
// io::save_checkpoint / load_checkpoint (io/checkpoint.hpp) write and read
// these together with the parameters. The optimizer itself (optim/) knows no
// file format: it hands out its state through for_each_state() and takes it
// back through restore_state().
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../optim/optimizer.hpp"
#include "safetensors.hpp"

namespace moekit::io {

/// Where checkpoints keep the optimizer's state.
inline constexpr const char* optimizer_prefix = "optim.";

/// The state of `opt` as safetensors records: "<prefix>steps" (U64 scalar),
/// and per parameter "<prefix><name>.step" (U64 scalar) and
/// "<prefix><name>.buffer<k>" (its flat size) for each buffer allocated so
/// far. Options (lr, ...) are not state: the program sets them. The step
/// count records own their bytes; the buffer records view the optimizer's
/// memory, so write them before the next step().
template <class T, class O, class B>
std::vector<tensor_record> optimizer_state_records(const optim::optimizer<T, O, B>& opt,
                                                   const std::string& prefix = optimizer_prefix) {
  static_assert(sizeof(std::size_t) == 8, "optimizer_state_records: step counts are stored as U64");
  using opt_type = optim::optimizer<T, O, B>;
  const auto count = [](std::string name, std::size_t n) {  // the record owns its copy of n
    auto value = std::make_shared<const std::size_t>(n);
    tensor_record r{std::move(name), "U64", {}, std::as_bytes(std::span<const std::size_t>(value.get(), 1))};
    r.owner = std::move(value);
    return r;
  };
  std::vector<tensor_record> out{count(prefix + "steps", opt.steps())};
  opt.for_each_state([&](const typename opt_type::view_type& p, const typename opt_type::state_type& s) {
    out.push_back(count(prefix + p.name + ".step", s.step));
    for (std::size_t k = 0; k < s.buffers.size(); ++k)
      if (s.buffers[k].defined()) out.push_back(record_of(prefix + p.name + ".buffer" + std::to_string(k), s.buffers[k]));
  });
  return out;
}

/// Restores into `opt` the state optimizer_state_records() wrote (a file from
/// read_safetensors): step counts and buffers; a buffer the file lacks starts
/// again as zeros. All or nothing: io_error naming the file and tensor when a
/// step count is missing, an entry has the wrong dtype or shape, or an entry
/// under `prefix` belongs to no parameter (a checkpoint of another model).
template <class T, class O, class B>
void load_optimizer_state(optim::optimizer<T, O, B>& opt, const safetensors_data& file,
                          const std::string& prefix = optimizer_prefix) {
  using opt_type = optim::optimizer<T, O, B>;
  using state_type = typename opt_type::state_type;
  const auto count = [&](const std::string& name) {
    std::size_t n = 0;
    std::memcpy(&n, file.expect(name, "U64", std::span<const std::size_t>{}).bytes.data(), sizeof n);
    return n;
  };
  std::unordered_set<std::string> known{prefix + "steps"};
  std::vector<state_type> loaded;  // in for_each_state order; applied only once all are read
  const std::size_t steps = count(prefix + "steps");
  opt.for_each_state([&](const typename opt_type::view_type& p, const state_type&) {
    const std::string base = prefix + p.name;
    state_type s;
    s.step = count(base + ".step");
    known.insert(base + ".step");
    for (std::size_t k = 0; file.find(base + ".buffer" + std::to_string(k)); ++k) {
      const std::string name = base + ".buffer" + std::to_string(k);
      known.insert(name);
      copy_into(file, name, s.buffer(k, p.value.size()));
    }
    loaded.push_back(std::move(s));
  });
  for (const auto& r : file.tensors)
    if (r.name.starts_with(prefix) && !known.contains(r.name))
      throw io_error("safetensors: " + file.path.string() + ": tensor '" + r.name +
                     "': optimizer state of no parameter of this optimizer");
  opt.restore_state(steps, std::move(loaded));
}

}  // namespace moekit::io

// moekit/moe/slot_map.hpp — which weight set serves each router slot of an
// expert bank: E slots, G <= E weight sets (MC-SMoE's merged experts: several
// slots, one set of weights). The map lives on the bank's backend, where the
// layer regroups its plan by it; a bank saves it in checkpoints (as the
// buffer "slot_map") whenever it is not the identity.
//
//   slot_map<cpu> m({0, 1, 0, 2});   // 4 slots, 3 weight sets: slots 0 and 2 share set 0
//   layer.experts().share(m);        // the bank now holds 3 weight sets
//
// A checkpoint of a shared bank holds 3 weight sets: load_slot_maps(path,
// model) gives each bank of a fresh model its saved map first, so that
// io::load_safetensors / io::load_checkpoint then find every weight at its
// saved (merged) size.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../io/safetensors.hpp"
#include "../nn/layer.hpp"
#include "../tensor/ops/creation.hpp"

namespace moekit::moe {

template <backend B = cpu>
class slot_map {
 public:
  /// The identity over `slots` slots: one weight set each.
  explicit slot_map(std::size_t slots = 0) : slots_(slots), sets_(slots), identity_(true) {
    map_ = arange<index_t, B>(slots);
  }

  /// From the weight set of each slot (host values): every value in [0, G),
  /// and every set in [0, G) serves at least one slot, G = max + 1.
  explicit slot_map(const std::vector<index_t>& sets_of_slots) : slots_(sets_of_slots.size()) {
    if (sets_of_slots.empty()) throw value_error("slot_map: no slots");
    const index_t top = *std::max_element(sets_of_slots.begin(), sets_of_slots.end());
    sets_ = static_cast<std::size_t>(top) + 1;
    std::vector<bool> used(sets_, false);
    identity_ = true;
    for (std::size_t s = 0; s < slots_; ++s) {
      const index_t g = sets_of_slots[s];
      if (g < 0) throw value_error("slot_map: slot " + std::to_string(s) + " maps to weight set " + std::to_string(g));
      used[static_cast<std::size_t>(g)] = true;
      identity_ = identity_ && g == static_cast<index_t>(s);
    }
    for (std::size_t g = 0; g < sets_; ++g)
      if (!used[g]) throw value_error("slot_map: weight set " + std::to_string(g) + " serves no slot");
    auto host = tensor<index_t, shape<dyn>, cpu>(shape<dyn>{slots_});
    std::copy(sets_of_slots.begin(), sets_of_slots.end(), host.data());
    map_ = moekit::detail::to_backend<B>(host);
  }

  std::size_t slots() const noexcept { return slots_; }        // E
  std::size_t weight_sets() const noexcept { return sets_; }   // G
  bool identity() const noexcept { return identity_; }
  /// (E) the weight set of each slot, on B.
  const tensor<index_t, shape<dyn>, B>& map() const noexcept { return map_; }
  tensor<index_t, shape<dyn>, B>& map() noexcept { return map_; }
  /// The map on the host (a device map is copied back).
  std::vector<index_t> host() const {
    const auto h = map_.template to<cpu>();
    return {h.data(), h.data() + h.size()};
  }

 private:
  std::size_t slots_ = 0, sets_ = 0;
  bool identity_ = true;
  tensor<index_t, shape<dyn>, B> map_;  // (E)
};

namespace detail {
/// Calls f(path, layer) for `model` and every sub-layer under it, depth first.
template <class M, class F>
void visit_layers(M& model, F& f, const std::string& path) {
  f(path, model);
  model.parameters([&](std::string_view name, auto& item) {
    if constexpr (!parameter_type<decltype(item)>)
      visit_layers(item, f, path.empty() ? std::string(name) : path + "." + std::string(name));
  });
}
}  // namespace detail

/// Gives every bank under `model` (anything with slots() and share()) the
/// slot map saved with it in the safetensors file at `path`, so that the
/// bank's weights take their saved size before the weights are loaded. A
/// bank with no saved map keeps one weight set per slot; a bank that already
/// shares weights needs a saved map (io_error otherwise). Weight values are
/// left to the load that follows.
template <parameterized M>
void load_slot_maps(const std::filesystem::path& path, M& model) {
  const auto file = io::read_safetensors(path);
  auto visit = [&](const std::string& at, auto& layer) {
    if constexpr (requires { layer.slots().identity(); layer.share(layer.slots()); }) {
      using map_type = std::remove_cvref_t<decltype(layer.slots())>;
      const std::string name = at.empty() ? "slot_map" : at + ".slot_map";
      const std::size_t e = layer.experts();
      if (!file.find(name)) {
        if (!layer.slots().identity())
          throw io_error(path.string() + ": " + name + ": missing from the file, but the bank shares weights");
        return;
      }
      const std::size_t extents[1] = {e};
      const auto& r = file.expect(name, dtype_name<index_t>(), extents);
      std::vector<index_t> sets(e);
      std::memcpy(sets.data(), r.bytes.data(), e * sizeof(index_t));
      for (index_t g : sets)
        if (g < 0 || static_cast<std::size_t>(g) >= e)
          throw io_error(path.string() + ": " + name + ": weight set " + std::to_string(g) + " out of range [0, " +
                         std::to_string(e) + ")");
      try {
        layer.share(map_type(sets));
      } catch (const value_error& err) {
        throw io_error(path.string() + ": " + name + ": " + err.what());
      }
    }
  };
  detail::visit_layers(model, visit, "");
}

}  // namespace moekit::moe

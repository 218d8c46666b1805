// moekit/io/torch_state.hpp — a model (and its optimizer) saved and loaded
// with PyTorch's conventions, so that torch.nn.Module.load_state_dict and
// torch.optim.AdamW.load_state_dict take it (docs/interop.md):
//
//   io::save_torch_state("moe.safetensors", layer, opt, io::torch_style::mixtral);
//   io::load_torch_state("from_torch.safetensors", layer, opt, io::torch_style::mixtral);
//
// Layout: an nn::linear's weight, a router's (d_model, experts) weight and
// every expert matrix are stored (out, in) as nn.Linear stores them
// (transposed against moekit's (in, out)); biases and every other parameter
// (embeddings, norms) as they are. A moe::layer's stacked experts (E, in, out)
// become one (out, in) matrix per expert, named in a torch_style:
//
//   style     MoE block          router                     expert i (ffn: w1 b1 w2 b2 | gated: w_gate w_up w_down)
//   plain     its moekit name    router.weight              experts.{i}.w1.weight, .w1.bias, ... | experts.{i}.w_gate.weight, ...
//   mixtral   block_sparse_moe   gate.weight                gated only: experts.{i}.w1 (gate), .w3 (up), .w2 (down)
//   olmoe     mlp                gate.weight                gated only: experts.{i}.gate_proj, .up_proj, .down_proj
//   switch    mlp                router.classifier.weight   ffn without biases only: experts.expert_{i}.wi, .wo
//
// (the MoE block's name replaces the moe::layer's own name in its path: a
// layer saved by itself is "block_sparse_moe.gate.weight", one at
// "blocks.0.ffn" is "blocks.0.block_sparse_moe.gate.weight"). A shared
// expert is named "shared.<matrix>.weight" in the plain style only. A model
// that does not fit the style (Mixtral with FFN experts, Switch with biases,
// a bank whose slots share weight sets, a router with other parameters) is
// a value_error naming the style and the layer.
//
// Optimizer state, as torch.optim keeps it per parameter: for each torch
// tensor name N, "optim.N.step" (I64 scalar; loading also takes torch's own
// F32 step) and "optim.N.<buffer>" shaped and laid out like N's tensor, with
// the buffers named as torch names them: adam/adamw exp_avg, exp_avg_sq,
// max_exp_avg_sq; sgd momentum_buffer; lion exp_avg. The optimizer's total
// step count is metadata "moekit.optim.steps". Torch's state_dict indexes the
// same entries by position in module.parameters(): docs/interop.md shows the
// conversion. A stacked moekit tensor keeps one step count, so loading
// requires its experts' counts to agree.
//
// Loading checks every name, dtype and shape (and the optimizer's) before it
// writes anything: io_error naming the file and tensor otherwise.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../autograd/parameter_tree.hpp"
#include "../core/error.hpp"
#include "../nn/linear.hpp"
#include "../optim/optimizer.hpp"
#include "safetensors.hpp"

namespace moekit::io {

/// How a moe::layer's router and experts are named (see the table above).
enum class torch_style { plain, mixtral, olmoe, switch_transformers };

inline const char* torch_style_name(torch_style s) noexcept {
  switch (s) {
    case torch_style::plain: return "plain";
    case torch_style::mixtral: return "mixtral";
    case torch_style::olmoe: return "olmoe";
    case torch_style::switch_transformers: return "switch";
  }
  return "?";
}

namespace detail {

/// One tensor of the torch state made from (part of) one moekit parameter.
struct torch_piece {
  std::string name;            // e.g. "block_sparse_moe.experts.3.w1.weight"
  std::ptrdiff_t slice = -1;   // index along the leading (expert) axis, or -1: the whole parameter
  bool transpose = false;      // swap the two axes (after slicing)
};

/// moekit parameter path -> its torch pieces, in visiting order.
struct torch_plan {
  std::vector<std::pair<std::string, std::vector<torch_piece>>> params;

  const std::vector<torch_piece>* find(std::string_view path) const noexcept {
    for (const auto& [name, pieces] : params)
      if (name == path) return &pieces;
    return nullptr;
  }
};

template <class X>
struct is_nn_linear : std::false_type {};
template <std::size_t In, std::size_t Out, class T, class B>
struct is_nn_linear<nn::linear<In, Out, T, B>> : std::true_type {};

/// A moe::layer (io/ sits below moe/, so it is recognised by its members).
template <class M>
concept moe_layer_like = requires(M& m) {
  m.router();
  m.experts();
  m.last_routing();
};

inline std::string join_path(const std::string& a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return a;
  return a + "." + std::string(b);
}

/// Walks a model and says which torch tensors each parameter becomes.
class torch_plan_builder {
 public:
  explicit torch_plan_builder(torch_style s) : style_(s) {}

  template <parameterized M>
  torch_plan build(M& model) {
    if constexpr (moe_layer_like<M>) moe_layer(model, "", block_name(""));
    else module(model, "", "");
    return std::move(plan_);
  }

 private:
  template <parameterized M>
  void module(M& m, const std::string& path, const std::string& tpath) {
    if constexpr (moe_layer_like<M>) {
      moe_layer(m, path, tpath);
    } else {
      m.parameters([&](std::string_view name, auto& item) {
        using I = std::remove_cvref_t<decltype(item)>;
        const std::string p = join_path(path, name);
        if constexpr (parameter_type<I>)
          add(p, {{join_path(tpath, name), -1, is_nn_linear<M>::value && name == "weight"}});
        else if constexpr (moe_layer_like<I>)
          moe_layer(item, p, join_path(tpath, block_name(name)));
        else
          module(item, p, join_path(tpath, name));
      });
    }
  }

  template <class L>
  void moe_layer(L& layer, const std::string& path, const std::string& tpath) {
    layer.parameters([&](std::string_view name, auto& item) {
      using I = std::remove_cvref_t<decltype(item)>;
      const std::string p = join_path(path, name);
      if constexpr (parameter_type<I>) {
        fail(path, "lists a parameter '" + std::string(name) + "' outside its router and experts");
      } else if (name == "router") {
        router(item, p, tpath);
      } else if (name == "experts") {
        bank(item, p, join_path(tpath, "experts"), false);
      } else if (name == "shared") {
        if (style_ != torch_style::plain)
          fail(path, "has a shared expert, which the " + std::string(torch_style_name(style_)) +
                         " style does not name (use torch_style::plain)");
        bank(item, p, join_path(tpath, "shared"), true);
      } else {
        fail(path, "has a part '" + std::string(name) + "' that no torch style names");
      }
    });
  }

  template <class R>
  void router(R& r, const std::string& path, const std::string& tpath) {
    std::vector<std::string> names;
    std::size_t rank = 0;
    visit_parameters(r, [&](const std::string& n, auto& w) {
      names.push_back(n);
      rank = w.shape().extents().size();
    });
    if (names.size() != 1 || names[0] != "weight" || rank != 2)
      fail(path, "is a router with parameters (" + list(names) + "); only a single (d_model, experts) 'weight' maps");
    add(path + ".weight", {{join_path(tpath, router_name()), -1, true}});
  }

  template <class Bank>
  void bank(Bank& b, const std::string& path, const std::string& tpath, bool shared) {
    if constexpr (requires { b.slots().identity(); })
      if (!b.slots().identity())
        fail(path, "shares weight sets among its slots (a slot map), which torch styles cannot name");
    std::vector<std::string> names;
    std::size_t sets = 0;
    visit_parameters(b, [&](const std::string& n, auto& w) {
      names.push_back(n);
      sets = w.shape().extents().empty() ? 0 : w.extent(0);
    });
    const bool gated = names == std::vector<std::string>{"w_gate", "w_up", "w_down"};
    const bool ffn = std::ranges::all_of(names, [](const auto& n) { return n == "w1" || n == "b1" || n == "w2" || n == "b2"; }) &&
                     std::ranges::count(names, "w1") == 1 && std::ranges::count(names, "w2") == 1;
    const bool biased = ffn && names.size() > 2;
    const std::string kind = gated ? "gated (SwiGLU) experts" : biased ? "FFN experts with biases" : "FFN experts";
    if (!gated && !ffn) fail(path, "is an expert bank with parameters (" + list(names) + "), which no torch style names");
    if ((style_ == torch_style::mixtral || style_ == torch_style::olmoe) && !gated)
      fail(path, "holds " + kind + "; the " + std::string(torch_style_name(style_)) +
                     " style needs gated (SwiGLU) experts (moe::swiglu_expert)");
    if (style_ == torch_style::switch_transformers && (gated || biased))
      fail(path, "holds " + kind + "; the switch style needs FFN experts without biases (moe::ffn_expert<D, F, act, false>)");
    if (shared && sets != 1) fail(path, "is a shared expert with " + std::to_string(sets) + " weight sets, not 1");
    for (const auto& n : names) {
      const bool bias = n[0] == 'b';
      const std::string suffix = "." + matrix_name(bias ? "w" + n.substr(1) : n) + (bias ? ".bias" : ".weight");
      std::vector<torch_piece> pieces;
      if (shared) pieces.push_back({tpath + suffix, 0, !bias});
      for (std::size_t i = 0; !shared && i < sets; ++i)
        pieces.push_back({tpath + "." + expert_prefix() + std::to_string(i) + suffix, static_cast<std::ptrdiff_t>(i), !bias});
      add(path + "." + n, std::move(pieces));
    }
  }

  std::string block_name(std::string_view own) const {
    switch (style_) {
      case torch_style::mixtral: return "block_sparse_moe";
      case torch_style::olmoe: case torch_style::switch_transformers: return "mlp";
      case torch_style::plain: break;
    }
    return std::string(own);
  }
  const char* router_name() const noexcept {
    switch (style_) {
      case torch_style::mixtral: case torch_style::olmoe: return "gate.weight";
      case torch_style::switch_transformers: return "router.classifier.weight";
      case torch_style::plain: break;
    }
    return "router.weight";
  }
  const char* expert_prefix() const noexcept { return style_ == torch_style::switch_transformers ? "expert_" : ""; }
  /// The torch name of an expert matrix (moekit's w1, w2, w_gate, w_up, w_down).
  std::string matrix_name(const std::string& m) const {
    if (style_ == torch_style::mixtral) return m == "w_gate" ? "w1" : m == "w_up" ? "w3" : "w2";
    if (style_ == torch_style::olmoe) return m == "w_gate" ? "gate_proj" : m == "w_up" ? "up_proj" : "down_proj";
    if (style_ == torch_style::switch_transformers) return m == "w1" ? "wi" : "wo";
    return m;
  }

  void add(const std::string& path, std::vector<torch_piece> pieces) { plan_.params.emplace_back(path, std::move(pieces)); }

  static std::string list(const std::vector<std::string>& names) {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
  }
  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw value_error(std::string("torch_state: style ") + torch_style_name(style_) + ": '" +
                      (path.empty() ? "(the model)" : path) + "' " + what);
  }

  torch_style style_;
  torch_plan plan_;
};

/// The torch shape of `piece` of a parameter with extents `ext`.
inline std::vector<std::size_t> piece_shape(std::span<const std::size_t> ext, const torch_piece& piece) {
  std::vector<std::size_t> s(ext.begin() + (piece.slice >= 0 ? 1 : 0), ext.end());
  if (piece.transpose) std::swap(s[0], s[1]);
  return s;
}

/// Moves values between a parameter's moekit layout (`full`, extents `ext`)
/// and `piece`'s torch layout (`part`): to_torch copies full -> part, else part -> full.
template <class T>
void convert_piece(std::span<const std::size_t> ext, const torch_piece& piece, T* full, T* part, bool to_torch) {
  const std::span<const std::size_t> sub = ext.subspan(piece.slice >= 0 ? 1 : 0);
  std::size_t n = 1;
  for (std::size_t e : sub) n *= e;
  T* base = full + (piece.slice >= 0 ? static_cast<std::size_t>(piece.slice) * n : 0);
  const std::size_t rows = piece.transpose ? sub[0] : 1, cols = piece.transpose ? sub[1] : n;
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) {
      T& m = base[i * cols + j];                           // moekit (rows, cols)
      T& t = part[piece.transpose ? j * rows + i : j];     // torch (cols, rows)
      if (to_torch) t = m;
      else m = t;
    }
}

/// The values of a tensor of any backend, on the host.
template <class T, class S, class B>
std::vector<T> host_values(const tensor<T, S, B>& t) {
  std::vector<T> v(t.size());
  if constexpr (B::host_accessible) {
    std::copy_n(t.data(), t.size(), v.begin());
  } else {
    const auto h = t.template to<cpu>();
    std::copy_n(h.data(), h.size(), v.begin());
  }
  return v;
}

/// Records of `pieces` of a parameter whose host values are `full` (extents `ext`), named prefix + piece + suffix.
template <class T>
void append_pieces(std::vector<tensor_record>& out, std::span<const std::size_t> ext, std::vector<T> full,
                   const std::vector<torch_piece>& pieces, const std::string& prefix = "", const std::string& suffix = "") {
  for (const auto& piece : pieces) {
    auto shape = piece_shape(ext, piece);
    std::size_t n = 1;
    for (std::size_t e : shape) n *= e;
    auto part = std::make_shared<std::vector<T>>(n);
    convert_piece(ext, piece, full.data(), part->data(), true);
    tensor_record r{prefix + piece.name + suffix, std::string(dtype_name<T>()), std::move(shape),
                    std::as_bytes(std::span<const T>(*part))};
    r.owner = std::move(part);
    out.push_back(std::move(r));
  }
}

/// A parameter's moekit-layout host values gathered from its pieces' records (checked already).
template <class T>
std::vector<T> gather_pieces(std::span<const std::size_t> ext, const std::vector<torch_piece>& pieces,
                             const std::vector<const tensor_record*>& records) {
  std::size_t n = 1;
  for (std::size_t e : ext) n *= e;
  std::vector<T> full(n);
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    std::vector<T> part(records[k]->bytes.size() / sizeof(T));
    std::memcpy(part.data(), records[k]->bytes.data(), records[k]->bytes.size());
    convert_piece(ext, pieces[k], full.data(), part.data(), false);
  }
  return full;
}

/// Where torch state files keep the optimizer's state.
inline constexpr const char* torch_optim_prefix = "optim.";

inline tensor_record owned_i64(std::string name, std::int64_t v) {
  auto value = std::make_shared<const std::int64_t>(v);
  tensor_record r{std::move(name), "I64", {}, std::as_bytes(std::span<const std::int64_t>(value.get(), 1))};
  r.owner = std::move(value);
  return r;
}

/// Torch's names of an optimizer's state buffers, by buffer index; value_error for an optimizer torch lacks.
template <class O>
std::vector<std::string> torch_buffer_names() {
  if constexpr (O::name == "adam" || O::name == "adamw") return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  else if constexpr (O::name == "sgd") return {"momentum_buffer"};
  else if constexpr (O::name == "lion") return {"exp_avg"};
  else throw value_error("torch_state: optimizer '" + std::string(O::name) + "': no torch names for its state");
}

inline const std::vector<torch_piece>& optimizer_pieces(const torch_plan& plan, const std::string& name) {
  const auto* pieces = plan.find(name);
  if (!pieces) throw value_error("torch_state: optimizer parameter '" + name + "' is not a parameter of the model");
  return *pieces;
}

/// A step count record: I64, or torch's own F32 (F64) holding a whole number >= 0.
inline std::size_t read_step(const safetensors_data& file, const tensor_record& r) {
  if (!r.shape.empty()) safetensors_fail(file.path, r.name, "a step count must be a scalar, found shape " + shape_str(r.shape));
  if (r.dtype == "I64") {
    std::int64_t i = 0;
    std::memcpy(&i, r.bytes.data(), sizeof i);
    if (i < 0) safetensors_fail(file.path, r.name, "negative step count " + std::to_string(i));
    return static_cast<std::size_t>(i);
  }
  double v = 0;
  if (r.dtype == "F32") {
    float f = 0;
    std::memcpy(&f, r.bytes.data(), sizeof f);
    v = f;
  } else if (r.dtype == "F64") {
    std::memcpy(&v, r.bytes.data(), sizeof v);
  } else {
    safetensors_fail(file.path, r.name, "step count of dtype " + r.dtype + " (I64, F32 or F64 expected)");
  }
  if (!(v >= 0 && v < 9.0e15 && v == std::floor(v)))
    safetensors_fail(file.path, r.name, "step count " + std::to_string(v) + " is not a whole number >= 0");
  return static_cast<std::size_t>(v);
}

/// The records "optim.<piece>.<key>" of every piece, or none (an empty list);
/// io_error when only some pieces (experts of one stacked tensor) have one.
inline std::vector<const tensor_record*> all_or_none(const safetensors_data& file, const std::vector<torch_piece>& pieces,
                                                     const std::string& key, std::unordered_set<std::string>& known) {
  std::vector<const tensor_record*> found;
  std::string missing_name;
  for (const auto& piece : pieces) {
    const std::string name = torch_optim_prefix + piece.name + "." + key;
    if (const tensor_record* r = file.find(name)) {
      found.push_back(r);
      known.insert(name);
    } else if (missing_name.empty()) {
      missing_name = name;
    }
  }
  if (!found.empty() && found.size() != pieces.size())
    safetensors_fail(file.path, missing_name, "missing, while other experts of the same moekit tensor have it");
  return found;
}

template <parameterized M>
std::vector<tensor_record> torch_model_records(M& model, const torch_plan& plan) {
  std::vector<tensor_record> out;
  visit_parameters(model, [&](const std::string& name, auto& p) {
    const auto e = p.shape().extents();
    append_pieces(out, std::span<const std::size_t>(e.data(), e.size()), host_values(p.value()), *plan.find(name));
  });
  visit_buffers(model, [&](const std::string& name, auto& t) { out.push_back(record_of(name, t)); });
  return out;
}

template <class T, class O, class B>
void append_optimizer_records(std::vector<tensor_record>& out, metadata_map& metadata,
                              const optim::optimizer<T, O, B>& opt, const torch_plan& plan) {
  const auto keys = torch_buffer_names<O>();
  using opt_type = optim::optimizer<T, O, B>;
  opt.for_each_state([&](const typename opt_type::view_type& p, const typename opt_type::state_type& s) {
    const auto& pieces = optimizer_pieces(plan, p.name);
    const bool any_buffer = std::ranges::any_of(s.buffers, [](const auto& b) { return b.defined(); });
    if (s.step == 0 && !any_buffer) return;  // torch keeps no state for a parameter never stepped
    for (const auto& piece : pieces)
      out.push_back(owned_i64(torch_optim_prefix + piece.name + ".step", static_cast<std::int64_t>(s.step)));
    for (std::size_t k = 0; k < s.buffers.size(); ++k) {
      if (!s.buffers[k].defined()) continue;
      if (k >= keys.size())
        throw value_error("torch_state: optimizer '" + std::string(O::name) + "': buffer " + std::to_string(k) +
                          " has no torch name");
      append_pieces(out, p.extents, host_values(s.buffers[k]), pieces, torch_optim_prefix, "." + keys[k]);
    }
  });
  metadata["moekit.optimizer"] = std::string(O::name);
  metadata["moekit.optim.steps"] = std::to_string(opt.steps());
}

/// Checks every parameter's pieces and every buffer in `file`; adds their names to `known`.
template <parameterized M>
void check_torch_model(const safetensors_data& file, M& model, const torch_plan& plan,
                       std::unordered_set<std::string>& known) {
  visit_parameters(model, [&](const std::string& name, auto& p) {
    using T = typename std::remove_cvref_t<decltype(p)>::value_type;
    const auto e = p.shape().extents();
    for (const auto& piece : *plan.find(name)) {
      (void)file.expect(piece.name, dtype_name<T>(), piece_shape(std::span<const std::size_t>(e.data(), e.size()), piece));
      known.insert(piece.name);
    }
  });
  visit_buffers(model, [&](const std::string& name, const auto& t) {
    using X = std::remove_cvref_t<decltype(t)>;
    (void)file.expect(name, dtype_name<typename X::value_type>(), t.shape().extents());
    known.insert(name);
  });
}

/// Writes what check_torch_model() accepted into the model.
template <parameterized M>
void write_torch_model(const safetensors_data& file, M& model, const torch_plan& plan) {
  visit_parameters(model, [&](const std::string& name, auto& p) {
    using P = std::remove_cvref_t<decltype(p)>;
    using T = typename P::value_type;
    const auto e = p.shape().extents();
    const auto& pieces = *plan.find(name);
    std::vector<const tensor_record*> records;
    for (const auto& piece : pieces) records.push_back(file.find(piece.name));
    const auto full = gather_pieces<T>(std::span<const std::size_t>(e.data(), e.size()), pieces, records);
    copy_from_host<typename P::backend_type>(std::as_bytes(std::span<const T>(full)), p.value().data());
  });
  visit_buffers(model, [&](const std::string& name, const auto& t) { copy_into(file, name, t); });
}

/// The optimizer state in `file`, checked, in for_each_state() order; `steps`: the total step count.
template <class T, class O, class B>
std::vector<optim::param_state<T, B>> read_torch_optimizer(const safetensors_data& file,
                                                           const optim::optimizer<T, O, B>& opt,
                                                           const torch_plan& plan, std::size_t& steps) {
  using opt_type = optim::optimizer<T, O, B>;
  const auto keys = torch_buffer_names<O>();
  std::unordered_set<std::string> known;
  std::vector<optim::param_state<T, B>> loaded;
  std::size_t max_step = 0;
  opt.for_each_state([&](const typename opt_type::view_type& p, const typename opt_type::state_type&) {
    const auto& pieces = optimizer_pieces(plan, p.name);
    optim::param_state<T, B> s;
    const auto step_records = all_or_none(file, pieces, "step", known);
    for (const auto* r : step_records) {
      const std::size_t v = read_step(file, *r);
      if (r != step_records.front() && v != s.step)
        safetensors_fail(file.path, r->name, "step count " + std::to_string(v) + " differs from " +
                                                 step_records.front()->name + "'s " + std::to_string(s.step) +
                                                 " (moekit keeps one step count per stacked tensor)");
      s.step = v;
    }
    for (std::size_t k = 0; k < keys.size(); ++k) {
      const auto records = all_or_none(file, pieces, keys[k], known);
      if (records.empty()) continue;
      if (step_records.empty()) safetensors_fail(file.path, records.front()->name, "optimizer state without a step count");
      for (std::size_t j = 0; j < pieces.size(); ++j)
        (void)file.expect(records[j]->name, dtype_name<T>(), piece_shape(p.extents, pieces[j]));
      const auto full = gather_pieces<T>(p.extents, pieces, records);
      copy_from_host<B>(std::as_bytes(std::span<const T>(full)), s.buffer(k, p.value.size()).data());
    }
    max_step = std::max(max_step, s.step);
    loaded.push_back(std::move(s));
  });
  for (const auto& r : file.tensors)
    if (r.name.starts_with(torch_optim_prefix) && !known.contains(r.name))
      safetensors_fail(file.path, r.name, "optimizer state of no parameter of this " + std::string(O::name) + " optimizer");
  steps = max_step;
  if (const auto it = file.metadata.find("moekit.optim.steps"); it != file.metadata.end()) {
    const auto& v = it->second;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), steps);
    if (ec != std::errc{} || end != v.data() + v.size() || v.empty())
      safetensors_fail(file.path, "metadata 'moekit.optim.steps' = '" + v + "' is not a step count");
  }
  return loaded;
}

/// The file, checked against `style` (metadata "moekit.style", when present) and the model.
template <parameterized M>
safetensors_data read_torch_file(const std::filesystem::path& path, M& model, const torch_plan& plan,
                                 torch_style style) {
  safetensors_data file = read_safetensors(path);
  if (const auto it = file.metadata.find("moekit.style"); it != file.metadata.end() && it->second != torch_style_name(style))
    safetensors_fail(path, "written in the " + it->second + " style, loaded as " + torch_style_name(style));
  std::unordered_set<std::string> known;
  check_torch_model(file, model, plan, known);
  for (const auto& r : file.tensors)
    if (!known.contains(r.name) && !r.name.starts_with(torch_optim_prefix))  // optim.*: read_torch_optimizer()
      safetensors_fail(path, r.name, std::string("not a parameter of the model in the ") + torch_style_name(style) + " style");
  return file;
}

}  // namespace detail

/// Writes the parameters and buffers of `model` with PyTorch's names and
/// layouts in `style` (value_error when the model does not fit it).
template <parameterized M>
void save_torch_state(const std::filesystem::path& path, M& model, torch_style style = torch_style::plain,
                      metadata_map metadata = {}) {
  const auto plan = detail::torch_plan_builder(style).build(model);
  const auto records = detail::torch_model_records(model, plan);
  metadata.try_emplace("format", "pt");
  metadata["moekit.style"] = torch_style_name(style);
  save_safetensors(path, records, metadata);
}

/// The same, with the state of `opt` (built on `model`) as torch.optim keeps it.
template <parameterized M, class T, class O, class B>
void save_torch_state(const std::filesystem::path& path, M& model, const optim::optimizer<T, O, B>& opt,
                      torch_style style = torch_style::plain, metadata_map metadata = {}) {
  const auto plan = detail::torch_plan_builder(style).build(model);
  auto records = detail::torch_model_records(model, plan);
  detail::append_optimizer_records(records, metadata, opt, plan);
  metadata.try_emplace("format", "pt");
  metadata["moekit.style"] = torch_style_name(style);
  save_safetensors(path, records, metadata);
}

/// Loads a torch state (saved by save_torch_state or by PyTorch in `style`)
/// into `model`, in place; optimizer state in the file is ignored. Returns
/// the metadata. io_error naming the file and tensor, and the model
/// untouched, when a tensor is missing, has another dtype or shape, or
/// belongs to no parameter.
template <parameterized M>
metadata_map load_torch_state(const std::filesystem::path& path, M& model, torch_style style = torch_style::plain) {
  const auto plan = detail::torch_plan_builder(style).build(model);
  const auto file = detail::read_torch_file(path, model, plan, style);
  detail::write_torch_model(file, model, plan);
  return file.metadata;
}

/// The same, and the state of `opt` (built on `model`): all or nothing.
template <parameterized M, class T, class O, class B>
metadata_map load_torch_state(const std::filesystem::path& path, M& model, optim::optimizer<T, O, B>& opt,
                              torch_style style = torch_style::plain) {
  const auto plan = detail::torch_plan_builder(style).build(model);
  const auto file = detail::read_torch_file(path, model, plan, style);
  std::size_t steps = 0;
  auto states = detail::read_torch_optimizer(file, opt, plan, steps);
  opt.restore_state(steps, std::move(states));
  detail::write_torch_model(file, model, plan);
  return file.metadata;
}

}  // namespace moekit::io

// moekit/mlp/config.hpp — the sizes of the Scaling-MLP models (Bachmann et
// al., "Scaling MLPs: A Tale of Inductive Bias") as one structural type, so a
// model can fix them at compile time or take them at run time:
//
//   mlp::bottleneck_mlp<mlp::config{.in = 784, .width = 256, .blocks = 4, .classes = 10, .expansion = 4}> a(g);
//   mlp::bottleneck_mlp<> b(g, {.in = 784, .width = 256, .blocks = 4, .classes = 10});           // run time
//   mlp::bottleneck_mlp<mlp::config{.in = 784, .classes = 10}> m(g, {.width = 256, .blocks = 4});  // mixed
//   mlp::bottleneck_mlp<> c(g, mlp::parse_model_name("B_4-Wi_256", "--model").with_io(784, 10));
//
// A field left at `dyn` in the template argument is taken from the
// constructor's config; a static field must agree with it there (or be dyn).
// Every field defaults to dyn; an expansion left dyn on both sides is 4.
#pragma once

#include <charconv>
#include <cstddef>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "../core/shape.hpp"

namespace moekit::mlp {

struct config {
  std::size_t in = dyn;         // input features (784 for 28×28 images)
  std::size_t width = dyn;      // w: the residual stream's width
  std::size_t blocks = dyn;     // B: number of blocks
  std::size_t classes = dyn;    // outputs of the head
  std::size_t expansion = dyn;  // the bottleneck's hidden width is expansion·w; 4 when left dyn everywhere

  /// The same config with its input and output sizes set.
  constexpr config with_io(std::size_t in_features, std::size_t out_classes) const noexcept {
    config c = *this;
    c.in = in_features;
    c.classes = out_classes;
    return c;
  }
  constexpr bool operator==(const config&) const noexcept = default;
};

/// The reference's expansion, used when neither the type nor the constructor sets one.
inline constexpr std::size_t default_expansion = 4;

/// c's expansion, or the default when it is dyn.
constexpr std::size_t expansion_of(const config& c) noexcept { return c.expansion == dyn ? default_expansion : c.expansion; }

/// Every size left to run time: the models' default template argument, so
/// `bottleneck_mlp<>` takes all its sizes at construction.
inline constexpr config runtime_config{};

namespace detail {

/// a·b, or dyn when either is dyn: the static extent of a product of extents.
constexpr std::size_t times(std::size_t a, std::size_t b) noexcept { return a == dyn || b == dyn ? dyn : a * b; }

/// One field of a model's sizes: the static value, or the run-time one, or
/// `fallback` when neither is set (dyn: the field must be set).
inline std::size_t resolve_field(const char* model, const char* field, std::size_t fixed, std::size_t given,
                                 std::size_t fallback = dyn) {
  if (fixed == dyn && given == dyn && fallback != dyn) return fallback;
  if (fixed != dyn) {
    if (given != dyn && given != fixed)
      throw value_error(std::string(model) + ": " + field + " = " + std::to_string(given) +
                        " but the type fixes it to " + std::to_string(fixed));
    return fixed;
  }
  if (given == dyn || given == 0)
    throw value_error(std::string(model) + ": " + field + " must be given (>= 1) when the type leaves it dyn");
  return given;
}

/// The sizes a model of static config `fixed` is built with, given `sizes`.
inline config resolve(const char* model, const config& fixed, const config& sizes) {
  return {resolve_field(model, "in", fixed.in, sizes.in), resolve_field(model, "width", fixed.width, sizes.width),
          resolve_field(model, "blocks", fixed.blocks, sizes.blocks),
          resolve_field(model, "classes", fixed.classes, sizes.classes),
          resolve_field(model, "expansion", fixed.expansion, sizes.expansion, default_expansion)};
}

/// Reads "<prefix><positive integer>" at the start of `s`, consuming it.
inline bool read_field(std::string_view& s, std::string_view prefix, std::size_t& out) {
  if (!s.starts_with(prefix)) return false;
  s.remove_prefix(prefix.size());
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc{} || end == s.data() || out == 0) return false;
  s.remove_prefix(static_cast<std::size_t>(end - s.data()));
  return true;
}

}  // namespace detail

/// Parses the reference repository's names "B_<blocks>-Wi_<width>" with an
/// optional "-Exp_<expansion>" suffix (e.g. "B_6-Wi_512", "B_4-Wi_256-Exp_2").
/// `in` and `classes` stay dyn (see with_io); expansion is 4 unless the suffix says otherwise. value_error naming `what` (the
/// flag it came from, say "--model") for anything else.
inline config parse_model_name(std::string_view name, std::string_view what = "parse_model_name") {
  config c;
  c.expansion = default_expansion;
  std::string_view s = name;
  bool ok = detail::read_field(s, "B_", c.blocks) && detail::read_field(s, "-Wi_", c.width);
  if (ok && !s.empty()) ok = detail::read_field(s, "-Exp_", c.expansion) && s.empty();
  if (!ok)
    throw value_error(std::string(what) + ": '" + std::string(name) +
                      "' is not a model name of the form B_<blocks>-Wi_<width>[-Exp_<expansion>], e.g. B_4-Wi_256");
  return c;
}

/// "B_4-Wi_256" (with "-Exp_k" when the expansion is not 4): the inverse of parse_model_name.
inline std::string model_name(const config& c) {
  std::string s = "B_" + std::to_string(c.blocks) + "-Wi_" + std::to_string(c.width);
  if (c.expansion != default_expansion && c.expansion != dyn) s += "-Exp_" + std::to_string(c.expansion);
  return s;
}

}  // namespace moekit::mlp

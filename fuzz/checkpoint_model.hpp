// fuzz/checkpoint_model.hpp — the small model and optimizer that
// fuzz_checkpoint loads into and make_seeds saves its seed checkpoints from.
#pragma once

#include <moekit.hpp>
#include <moekit/mlp/bottleneck_mlp.hpp>
#include <moekit/optim/adamw.hpp>

namespace moekit_fuzz {

inline constexpr moekit::mlp::config checkpoint_config{.in = 4, .width = 3, .blocks = 1, .classes = 2, .expansion = 2};
using checkpoint_model = moekit::mlp::bottleneck_mlp<checkpoint_config>;
using checkpoint_optimizer = moekit::optim::adamw<float>;

}  // namespace moekit_fuzz

// moekit/moe.hpp — Mixture-of-Experts: routing plans, routers, experts, the layer.
#pragma once

#include "moe/aux_loss.hpp"
#include "moe/baselines.hpp"
#include "moe/cast_router.hpp"
#include "moe/dispatch.hpp"
#include "moe/concepts.hpp"
#include "moe/expert_bank.hpp"
#include "moe/expert_choice.hpp"
#include "moe/moe_layer.hpp"
#include "moe/routing.hpp"
#include "moe/slot_map.hpp"
#include "moe/stats.hpp"
#include "moe/top_k.hpp"
#include "moe/transformer_block.hpp"

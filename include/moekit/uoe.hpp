// moekit/uoe.hpp — Union-of-Experts: a dense transformer decomposed into
// experts as tensor parallelism cuts it (MLP slices, attention heads), with
// data selection (experts choose tokens or patches) or expert selection.
#pragma once

#include "moe.hpp"
#include "uoe/block.hpp"
#include "uoe/decompose.hpp"
#include "uoe/mlp_slices.hpp"
#include "uoe/router.hpp"
#include "uoe/selection.hpp"
#include "uoe/smha.hpp"
#include "uoe/spec.hpp"
#include "uoe/uome.hpp"

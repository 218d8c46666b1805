// moekit/mowst.hpp — Mowst: weak (MLP) and strong (GNN) experts on graphs,
// gated by the weak expert's confidence; training, inference, compute saving.
#pragma once

#include "graph.hpp"
#include "mowst/confidence.hpp"
#include "mowst/inference.hpp"
#include "mowst/mlp.hpp"
#include "mowst/mowst.hpp"
#include "mowst/training.hpp"

// moekit/merge.hpp — Merge, Then Compress (MC-SMoE) on any moekit MoE:
// permutation alignment of experts (our own linear-sum-assignment solver),
// grouping by routing statistics under one global budget, frequency-weighted
// merging into shared weight sets, and low-rank + pruned-sparse compression
// with packed inference and checkpoints at their real size. docs/mcsmoe.md.
#pragma once

#include "moe.hpp"
#include "merge/align.hpp"
#include "merge/assignment.hpp"
#include "merge/grouping.hpp"
#include "merge/low_rank_sparse.hpp"
#include "merge/merge.hpp"
#include "merge/prune.hpp"
#include "merge/svd.hpp"

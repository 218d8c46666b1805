// moekit/backend/cuda/tile_schedule.hpp — which rows of which group a linear
// row-tile id covers, computed from the group offsets alone. Plain C++ (no
// CUDA headers) so host tests pin the arithmetic the grouped GEMM kernels use.
//
// Why this layout: on the device the offsets are never read by the host (no
// sync inside an MoE layer), so the tile count cannot be a host-side prefix
// sum of ceil(rows_g / tile_rows). Instead group g owns the global tile_rows-
// aligned row blocks its rows touch, plus one: tiles
//   [offsets[g]/R - offsets[0]/R + g,  offsets[g+1]/R - offsets[0]/R + g + 1)
// (R = tile_rows). That start is O(1) from the offsets and strictly increasing
// in g, so a block finds its group by binary search, and the total,
// offsets[G]/R - offsets[0]/R + G <= ceil(total_rows / R) + G, is read by the
// kernel from offsets[0] and offsets[G]. The price: a group's rows may be
// split at an aligned boundary (at most one partial tile more than
// ceil(rows / R)), and a group ending on a boundary or empty owns one empty
// tile that its block skips.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../../core/config.hpp"
#include "../../core/host_device.hpp"

namespace moekit::detail {

/// Rows [begin, end) of group `group` (absolute row indices, as in offsets);
/// begin == end for an empty tile.
struct row_tile {
  std::int64_t group;
  std::int64_t begin;
  std::int64_t end;
};

/// Linear id of group g's first row tile (g may be `groups`: then the total).
MOEKIT_HOST_DEVICE inline std::int64_t first_row_tile(const index_t* offsets, std::size_t g,
                                                      std::int64_t tile_rows) noexcept {
  return offsets[g] / tile_rows - offsets[0] / tile_rows + static_cast<std::int64_t>(g);
}

/// Row tiles over all groups: at most ceil(total_rows / tile_rows) + groups.
MOEKIT_HOST_DEVICE inline std::int64_t row_tile_count(const index_t* offsets, std::size_t groups,
                                                      std::int64_t tile_rows) noexcept {
  return first_row_tile(offsets, groups, tile_rows);
}

/// The rows of linear row tile t, 0 <= t < row_tile_count(): the group is the
/// last one whose first tile is <= t (binary search over the offsets); its
/// rows are the part of aligned block offsets[g]/tile_rows + (t - first) that
/// lies inside the group. Offsets must be non-decreasing and non-negative.
MOEKIT_HOST_DEVICE inline row_tile find_row_tile(const index_t* offsets, std::size_t groups, std::int64_t tile_rows,
                                                 std::int64_t t) noexcept {
  std::size_t lo = 0, hi = groups - 1;  // invariant: first_row_tile(lo) <= t < first_row_tile(hi + 1)
  while (lo < hi) {
    const std::size_t mid = lo + (hi - lo + 1) / 2;
    if (first_row_tile(offsets, mid, tile_rows) <= t) lo = mid;
    else hi = mid - 1;
  }
  const std::int64_t group_begin = offsets[lo], group_end = offsets[lo + 1];
  const std::int64_t block = group_begin / tile_rows + (t - first_row_tile(offsets, lo, tile_rows));
  const std::int64_t block_begin = block * tile_rows, block_end = block_begin + tile_rows;
  const std::int64_t begin = block_begin > group_begin ? block_begin : group_begin;
  const std::int64_t end = block_end < group_end ? block_end : group_end;
  return {static_cast<std::int64_t>(lo), begin, end > begin ? end : begin};
}

}  // namespace moekit::detail

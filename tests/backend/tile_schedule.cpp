// The row-tile schedule of the CUDA grouped GEMM (backend/cuda/tile_schedule.hpp),
// checked on the host against a brute-force enumeration of the tiles: for every
// group, every tile_rows-aligned row block its rows touch, plus one.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

#include <moekit/backend/cuda/tile_schedule.hpp>
#include <moekit/core/random.hpp>

using moekit::index_t;
using moekit::detail::row_tile;

namespace {

/// Group g's tiles: aligned blocks offsets[g]/R .. offsets[g+1]/R, clipped to the group.
std::vector<row_tile> enumerate_tiles(const std::vector<index_t>& offsets, std::int64_t tile_rows) {
  std::vector<row_tile> tiles;
  for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
    const std::int64_t b = offsets[g], e = offsets[g + 1];
    for (std::int64_t block = b / tile_rows; block <= e / tile_rows; ++block) {
      const std::int64_t lo = std::max(b, block * tile_rows), hi = std::min(e, (block + 1) * tile_rows);
      tiles.push_back({static_cast<std::int64_t>(g), lo, std::max(lo, hi)});
    }
  }
  return tiles;
}

/// Random offsets: a start row, then group sizes of which about a third are
/// empty, some are one row and some span several tiles.
std::vector<index_t> random_offsets(moekit::rng& g, std::size_t groups, std::int64_t tile_rows) {
  std::vector<index_t> offsets{static_cast<index_t>(g.next_uniform<double>() * 3 * static_cast<double>(tile_rows))};
  for (std::size_t i = 0; i < groups; ++i) {
    const double u = g.next_uniform<double>();
    const double v = g.next_uniform<double>();
    index_t rows = 0;
    if (u < 0.33) rows = 0;
    else if (u < 0.5) rows = 1;
    else rows = static_cast<index_t>(v * 4 * static_cast<double>(tile_rows));
    offsets.push_back(offsets.back() + rows);
  }
  return offsets;
}

void check_schedule(const std::vector<index_t>& offsets, std::int64_t tile_rows) {
  const std::size_t groups = offsets.size() - 1;
  const auto expected = enumerate_tiles(offsets, tile_rows);
  const std::int64_t count = moekit::detail::row_tile_count(offsets.data(), groups, tile_rows);
  REQUIRE(count == static_cast<std::int64_t>(expected.size()));
  const std::int64_t total = offsets.back() - offsets.front();
  REQUIRE(count <= (total + tile_rows - 1) / tile_rows + static_cast<std::int64_t>(groups));

  std::vector<int> covered(static_cast<std::size_t>(offsets.back()), 0);
  for (std::int64_t t = 0; t < count; ++t) {
    const row_tile got = moekit::detail::find_row_tile(offsets.data(), groups, tile_rows, t);
    const row_tile& want = expected[static_cast<std::size_t>(t)];
    INFO("tile " << t << " of " << count << ", tile_rows " << tile_rows);
    REQUIRE(got.group == want.group);
    REQUIRE(got.begin == want.begin);
    REQUIRE(got.end == want.end);
    // Inside its group and inside one tile's worth of rows.
    REQUIRE(got.begin >= offsets[static_cast<std::size_t>(got.group)]);
    REQUIRE(got.end <= offsets[static_cast<std::size_t>(got.group) + 1]);
    REQUIRE(got.end - got.begin <= tile_rows);
    for (std::int64_t r = got.begin; r < got.end; ++r) ++covered[static_cast<std::size_t>(r)];
  }
  // Every row of every group in exactly one tile; rows before offsets[0] in none.
  for (std::size_t r = 0; r < covered.size(); ++r) {
    INFO("row " << r);
    REQUIRE(covered[r] == (static_cast<index_t>(r) >= offsets.front() ? 1 : 0));
  }
}

}  // namespace

TEST_CASE("tile schedule: hand-worked offsets", "[backend][cuda][tile_schedule]") {
  // Groups of 5, 0, 7, 1 rows over tiles of 4 rows: group 0 touches blocks 0..1
  // (rows 0-3, 4), group 1 (empty at row 5) block 1, group 2 rows 5-11 blocks
  // 1..3 (rows 5-7, 8-11, then an empty tile at 12), group 3 row 12 block 3.
  const std::vector<index_t> offsets{0, 5, 5, 12, 13};
  REQUIRE(moekit::detail::row_tile_count(offsets.data(), 4, 4) == 2 + 1 + 3 + 1);
  const std::vector<row_tile> want{{0, 0, 4}, {0, 4, 5}, {1, 5, 5}, {2, 5, 8}, {2, 8, 12}, {2, 12, 12}, {3, 12, 13}};
  for (std::int64_t t = 0; t < 7; ++t) {
    const row_tile got = moekit::detail::find_row_tile(offsets.data(), 4, 4, t);
    INFO("tile " << t);
    REQUIRE(got.group == want[static_cast<std::size_t>(t)].group);
    REQUIRE(got.begin == want[static_cast<std::size_t>(t)].begin);
    REQUIRE(got.end == want[static_cast<std::size_t>(t)].end);
  }
  check_schedule(offsets, 4);
}

TEST_CASE("tile schedule: one group, and all groups empty", "[backend][cuda][tile_schedule]") {
  check_schedule({0, 64}, 64);   // exactly one tile plus the empty one at the boundary
  check_schedule({0, 130}, 64);  // 3 tiles, the last partial
  check_schedule({7, 7, 7, 7}, 64);
  REQUIRE(moekit::detail::row_tile_count(std::vector<index_t>{7, 7, 7, 7}.data(), 3, 64) == 3);
}

TEST_CASE("tile schedule: random offsets with empty and one-row groups match brute force",
          "[backend][cuda][tile_schedule]") {
  moekit::rng g(2024);
  for (std::int64_t tile_rows : {1, 4, 16, 64, 128})
    for (std::size_t groups : {1u, 2u, 3u, 8u, 33u, 128u})
      for (int rep = 0; rep < 5; ++rep) check_schedule(random_offsets(g, groups, tile_rows), tile_rows);
}

// moekit/backend/cpu/microkernel.hpp — moekit's own fp32 GEMM for the expert
// GEMMs: the B operand (a weight, or the gradient rows of a weight gradient)
// is re-laid-out into panels of NR columns (gemm_grouped.hpp packs one
// 256-column slab per piece of work), and a register-blocked tile
// (microkernel_tile.inl) runs over them with A read in place through two
// strides, so Xᵀ needs no copy. Three tiles, chosen at run
// time from CPUID:
//   avx512   8 x 32 (16 zmm accumulators),
//   avx2     6 x 16 (12 ymm accumulators, FMA),
//   portable 4 x 8  (SSE2, any x86-64; plain vector code elsewhere).
// MOEKIT_GEMM_ISA=portable|avx2|avx512 (or set_isa) picks a lower one (tests, A/B).
//
// Blocking: kc = 256 rows of a panel (32 KB at NR = 32) stay in L1 while the
// tile walks down up to mc = 48 rows of A (mc x kc in L2). Every element of C is
// summed in the same k order whatever the blocks and threads, so results do
// not depend on the thread count. An epilogue sees each finished tile while it
// is still in L1 (bias + activation of the forward, the activation's
// backward of dH).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOEKIT_MICROKERNEL_X86 1
#endif

// Full unrolling of the tile's register loops (nvcc's front end, which also
// reads host code, knows no GCC pragmas; g++ does the host compile anyway).
#if defined(__CUDACC__) || !(defined(__GNUC__) || defined(__clang__))
#define MOEKIT_UNROLL
#elif defined(__clang__)
#define MOEKIT_UNROLL _Pragma("unroll")
#else
#define MOEKIT_UNROLL _Pragma("GCC unroll 16")
#endif

namespace moekit::detail::microkernel {

enum class isa { portable, avx2, avx512 };

inline const char* isa_name(isa i) noexcept {
  return i == isa::avx512 ? "avx512" : i == isa::avx2 ? "avx2" : "portable";
}

/// The widest tile this CPU runs (the OS saving its registers included).
inline isa best_isa() noexcept {
#if defined(MOEKIT_MICROKERNEL_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return isa::avx2;
#endif
  return isa::portable;
}

namespace detail_isa {
inline isa& setting() noexcept {
  static isa chosen = [] {
    const isa best = best_isa();
    const char* env = std::getenv("MOEKIT_GEMM_ISA");
    if (env == nullptr) return best;
    const std::string_view want(env);
    const isa asked = want == "portable" ? isa::portable : want == "avx2" ? isa::avx2 : best;
    return std::min(asked, best);
  }();
  return chosen;
}
}  // namespace detail_isa

/// The tiles moekit's GEMMs run: best_isa(), or the lower one that
/// MOEKIT_GEMM_ISA (read once) or set_isa names.
inline isa active_isa() noexcept { return detail_isa::setting(); }

/// Runs later GEMMs on `i`, or on best_isa() if this CPU lacks `i`; returns
/// the one chosen. Not synchronised: call it while no GEMM runs (tests, A/B).
inline isa set_isa(isa i) noexcept { return detail_isa::setting() = std::min(i, best_isa()); }

/// Tile rows (mr) and panel width (nr) of each instruction set.
constexpr std::size_t tile_rows_of(isa i) noexcept { return i == isa::avx512 ? 8 : i == isa::avx2 ? 6 : 4; }
constexpr std::size_t panel_width(isa i) noexcept { return i == isa::avx512 ? 32 : i == isa::avx2 ? 16 : 8; }

// ---- the tiles, one per instruction set ------------------------------------
#if defined(MOEKIT_MICROKERNEL_X86)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
namespace avx512 {
struct simd {
  using type = __m512;
  static constexpr std::size_t lanes = 16, nv = 2, mr = 8;
  static type load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, type v) { _mm512_storeu_ps(p, v); }
  static type set1(float x) { return _mm512_set1_ps(x); }
  static type fmadd(type a, type b, type c) { return _mm512_fmadd_ps(a, b, c); }
  static type mul(type a, type b) { return _mm512_mul_ps(a, b); }
};
#include "microkernel_tile.inl"
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace avx2 {
struct simd {
  using type = __m256;
  static constexpr std::size_t lanes = 8, nv = 2, mr = 6;
  static type load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, type v) { _mm256_storeu_ps(p, v); }
  static type set1(float x) { return _mm256_set1_ps(x); }
  static type fmadd(type a, type b, type c) { return _mm256_fmadd_ps(a, b, c); }
  static type mul(type a, type b) { return _mm256_mul_ps(a, b); }
};
#include "microkernel_tile.inl"

/// dst(8, 8) = src(8, 8)ᵀ: dst[p·ldd + j] = src[j·lds + p] (packing Wᵀ's panels).
inline void transpose_8x8(const float* src, std::size_t lds, float* dst, std::size_t ldd) {
  __m256 r[8], t[8];
  for (std::size_t j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * lds);
  for (std::size_t j = 0; j < 8; j += 2) {  // t[j] = (r[j][0] r[j+1][0] r[j][1] r[j+1][1] | the same at 4, 5)
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (std::size_t q = 0; q < 8; q += 4) {  // r[q + c] = column c of rows q..q+3 (and c + 4 in the high half)
    r[q + 0] = _mm256_shuffle_ps(t[q], t[q + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (std::size_t c = 0; c < 4; ++c) {
    _mm256_storeu_ps(dst + c * ldd, _mm256_permute2f128_ps(r[c], r[c + 4], 0x20));
    _mm256_storeu_ps(dst + (c + 4) * ldd, _mm256_permute2f128_ps(r[c], r[c + 4], 0x31));
  }
}
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // MOEKIT_MICROKERNEL_X86

namespace portable {
struct simd {  // GCC/clang vector extension: SSE2 on x86-64, whatever the target has elsewhere
  using type = float __attribute__((vector_size(16)));
  static constexpr std::size_t lanes = 4, nv = 2, mr = 4;
  static type load(const float* p) {
    type r;
    std::memcpy(&r, p, sizeof r);
    return r;
  }
  static void store(float* p, type x) { std::memcpy(p, &x, sizeof x); }
  static type set1(float x) { return type{x, x, x, x}; }
  static type fmadd(type a, type b, type c) { return a * b + c; }
  static type mul(type a, type b) { return a * b; }
};
#include "microkernel_tile.inl"
}  // namespace portable

/// The tile of `i` for mr rows (1 <= mr <= tile_rows_of(i)).
inline void run_tile(isa i, std::size_t mr, std::size_t kc, const float* a, std::size_t rs_a, std::size_t cs_a,
                     const float* p, std::size_t ldp, float* c, std::size_t ldc, std::size_t nr, float alpha,
                     float beta) {
#if defined(MOEKIT_MICROKERNEL_X86)
  if (i == isa::avx512) return avx512::tile_rows(mr, kc, a, rs_a, cs_a, p, ldp, c, ldc, nr, alpha, beta);
  if (i == isa::avx2) return avx2::tile_rows(mr, kc, a, rs_a, cs_a, p, ldp, c, ldc, nr, alpha, beta);
#endif
  portable::tile_rows(mr, kc, a, rs_a, cs_a, p, ldp, c, ldc, nr, alpha, beta);
}

// ---- packing -----------------------------------------------------------------

/// Floats of op(B) (k, n) packed into panels of panel_width(i) columns.
inline std::size_t packed_size(isa i, std::size_t k, std::size_t n) noexcept {
  const std::size_t nr = panel_width(i);
  return (n + nr - 1) / nr * nr * k;
}

/// Packs op(B) (k, n) into panels of NR columns: panel q holds columns
/// [q·NR, q·NR + NR) as k rows of NR floats (zeros past n), panel after panel.
/// B is stored (k, n) with row stride ldb, or (n, k) when `trans` (then
/// transposed 8 x 8 in AVX registers where `avx` says the CPU has them).
template <std::size_t NR>
void pack_panels(bool trans, std::size_t k, std::size_t n, const float* b, std::size_t ldb, float* out,
                 [[maybe_unused]] bool avx) {
  for (std::size_t j0 = 0; j0 < n; j0 += NR) {
    const std::size_t w = std::min(NR, n - j0);
    float* panel = out + j0 * k;  // (j0 / NR) · (k · NR)
    if (!trans && w == NR) {
      for (std::size_t p = 0; p < k; ++p)
        for (std::size_t j = 0; j < NR; ++j) panel[p * NR + j] = b[p * ldb + j0 + j];  // a fixed-size copy
    } else if (!trans) {
      for (std::size_t p = 0; p < k; ++p)
        for (std::size_t j = 0; j < NR; ++j) panel[p * NR + j] = j < w ? b[p * ldb + j0 + j] : 0.0f;
    } else {  // column j of the panel is row j0 + j of B: a transpose
      std::size_t p0 = 0;
#if defined(MOEKIT_MICROKERNEL_X86)
      if constexpr (NR % 8 == 0)
        if (avx && w == NR)
          for (; p0 + 8 <= k; p0 += 8)
            for (std::size_t j = 0; j < NR; j += 8)
              avx2::transpose_8x8(b + (j0 + j) * ldb + p0, ldb, panel + p0 * NR + j, NR);
#endif
      if (w < NR) std::fill(panel + p0 * NR, panel + k * NR, 0.0f);
      constexpr std::size_t depth = 16;  // one cache line of each row of B
      for (; p0 < k; p0 += depth) {
        const std::size_t d = std::min(depth, k - p0);
        float block[depth][NR];
        for (std::size_t j = 0; j < w; ++j) {
          const float* row = b + (j0 + j) * ldb + p0;
          for (std::size_t p = 0; p < d; ++p) block[p][j] = row[p];
        }
        for (std::size_t p = 0; p < d; ++p)
          for (std::size_t j = 0; j < w; ++j) panel[(p0 + p) * NR + j] = block[p][j];
      }
    }
  }
}

/// pack_panels with the panel width of `i`.
inline void pack(isa i, bool trans, std::size_t k, std::size_t n, const float* b, std::size_t ldb, float* out) {
  const bool avx = i != isa::portable;
  switch (panel_width(i)) {
    case 32: return pack_panels<32>(trans, k, n, b, ldb, out, avx);
    case 16: return pack_panels<16>(trans, k, n, b, ldb, out, avx);
    default: return pack_panels<panel_width(isa::portable)>(trans, k, n, b, ldb, out, avx);
  }
}

// ---- the blocked product -----------------------------------------------------

/// Rows of A per block (a multiple of every tile's mr) and panel rows per
/// pass (a 256 x 32 panel is 32 KB: it stays in a 48 KB L1 while the tiles
/// walk down the block). Chosen by bench/gemm_libs on Zen 5: 96 x 128 and
/// 96 x 256 were 3-8 % slower on C-M and C-F.
inline constexpr std::size_t block_rows = 48, block_depth = 256;

/// One operand A(m, k) read in place: A(i, p) = a[i·rs + p·cs].
struct strided {
  const float* a;
  std::size_t rs, cs;
};

/// An epilogue that leaves the tile as it is.
struct no_epilogue {
  void operator()(float*, std::size_t, std::size_t, std::size_t, std::size_t, std::size_t) const noexcept {}
};

/// The B operand as the tiles read it: panel column j, depth p at
/// at + j·col + p·ld. Packed by pack() into (k, n): {packed, k, nr}. (A B
/// (k, n) read in place would be {b, 1, ldb}, n a multiple of nr; the
/// grouped GEMMs stopped doing that when they began packing per slab.)
struct panels {
  const float* at;
  std::size_t col, ld;
};

/// panels of op(B) packed by pack() for a (k, n) product on `i`.
inline panels packed_panels(isa i, const float* packed, std::size_t k) noexcept {
  return {packed, k, panel_width(i)};
}

/// C(rows [i0, i1), columns [j0, j1)) = alpha · A · op(B) + beta · C, op(B)
/// (k, n) given as panels; then epi(c_tile, ldc, row, col, rows, cols) once
/// per finished tile (row, col relative to C).
template <class Epilogue = no_epilogue>
void gemm_block(isa i, std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1, std::size_t n, std::size_t k,
                float alpha, strided a, panels b, float beta, float* c, std::size_t ldc, const Epilogue& epi = {}) {
  const std::size_t mr = tile_rows_of(i), nr = panel_width(i);
  j1 = std::min(j1, n);
  if (k == 0) {
    for (std::size_t r = i0; r < i1; ++r)
      for (std::size_t j = j0; j < j1; ++j) c[r * ldc + j] = beta == 0.0f ? 0.0f : beta * c[r * ldc + j];
    for (std::size_t r = i0; r < i1; r += mr)
      for (std::size_t j = j0; j < j1; j += nr)
        epi(c + r * ldc + j, ldc, r, j, std::min(mr, i1 - r), std::min(nr, j1 - j));
    return;
  }
  for (std::size_t p0 = 0; p0 < k; p0 += block_depth) {
    const std::size_t kc = std::min(block_depth, k - p0);
    const bool last = p0 + kc == k;
    for (std::size_t j = j0; j < j1; j += nr) {
      const float* panel = b.at + j * b.col + p0 * b.ld;
      const std::size_t w = std::min(nr, j1 - j);
      for (std::size_t r = i0; r < i1; r += mr) {
        const std::size_t h = std::min(mr, i1 - r);
        float* ct = c + r * ldc + j;
        run_tile(i, h, kc, a.a + r * a.rs + p0 * a.cs, a.rs, a.cs, panel, b.ld, ct, ldc, w, alpha,
                 p0 == 0 ? beta : 1.0f);
        if (last) epi(ct, ldc, r, j, h, w);
      }
    }
  }
}

}  // namespace moekit::detail::microkernel

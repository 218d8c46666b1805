// moekit/backend/cpu/microkernel_tile.inl — the register-blocked tile of
// moekit's fp32 GEMM, written once and compiled once per instruction set:
// microkernel.hpp includes this file (no include guard, on purpose) inside a
// namespace and a target region that first define `simd` (the vector type,
// its lane count, nv = vectors per tile row, and load/store/set1/fmadd/mul).
//
// tile<MR>: C(MR, nr) = alpha · A(MR, kc) · P(kc, NR) [+ beta · C], where
//   A(i, p) = a[i·rs_a + p·cs_a]  (rows of X, or columns of Xᵀ: read in place),
//   P(p, j) = p[p·ldp + j]: kc rows of NR = nv·lanes floats (a packed panel,
//             ldp = NR, or NR columns of B read in place, ldp = B's row stride),
//   nr <= NR columns are stored (a packed panel's padding columns are zeros).
// MR·nv accumulators live in registers for the whole k loop; each step loads
// nv vectors of P and broadcasts MR elements of A into MR·nv FMAs.

template <std::size_t MR>
void tile(std::size_t kc, const float* a, std::size_t rs_a, std::size_t cs_a, const float* p, std::size_t ldp,
          float* c, std::size_t ldc, std::size_t nr, float alpha, float beta) {
  constexpr std::size_t NV = simd::nv, L = simd::lanes, NR = NV * L;
  using V = typename simd::type;
  V acc[MR][NV];
MOEKIT_UNROLL
  for (std::size_t i = 0; i < MR; ++i)
MOEKIT_UNROLL
    for (std::size_t v = 0; v < NV; ++v) acc[i][v] = simd::set1(0.0f);
  // P's row `ahead` steps on is fetched while this one runs. Added when small
  // weights were read in place (rows 512 B apart in C-F, which the hardware
  // prefetchers follow poorly from DRAM: C-F's GEMMs 6-8 % faster); with every
  // B packed per slab it still gave +2-5 % at 1 thread on C-S, C-F and C-M
  // and nothing at 2 (bench medians of 5, Zen 5). It only moves data.
  constexpr std::size_t ahead = 24;
  for (std::size_t k = 0; k < kc; ++k) {
    const float* ak = a + k * cs_a;
    const float* pk = p + k * ldp;
    if (k + ahead < kc)
MOEKIT_UNROLL
      for (std::size_t line = 0; line < NR * sizeof(float); line += 64)
        __builtin_prefetch(reinterpret_cast<const char*>(pk + ahead * ldp) + line, 0, 3);
    V b[NV];
MOEKIT_UNROLL
    for (std::size_t v = 0; v < NV; ++v) b[v] = simd::load(pk + v * L);
MOEKIT_UNROLL
    for (std::size_t i = 0; i < MR; ++i) {
      const V ai = simd::set1(ak[i * rs_a]);
MOEKIT_UNROLL
      for (std::size_t v = 0; v < NV; ++v) acc[i][v] = simd::fmadd(ai, b[v], acc[i][v]);
    }
  }
  const V va = simd::set1(alpha), vb = simd::set1(beta);
  if (nr == NR) {
MOEKIT_UNROLL
    for (std::size_t i = 0; i < MR; ++i)
MOEKIT_UNROLL
      for (std::size_t v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + v * L;
        V r = simd::mul(acc[i][v], va);
        if (beta != 0.0f) r = simd::fmadd(vb, simd::load(ci), r);
        simd::store(ci, r);
      }
    return;
  }
  alignas(64) float buf[MR * NR];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t v = 0; v < NV; ++v) simd::store(buf + i * NR + v * L, simd::mul(acc[i][v], va));
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < nr; ++j)
      c[i * ldc + j] = beta != 0.0f ? buf[i * NR + j] + beta * c[i * ldc + j] : buf[i * NR + j];
}

/// tile<mr> for a run-time mr in [1, MR].
template <std::size_t MR = simd::mr>
void tile_rows(std::size_t mr, std::size_t kc, const float* a, std::size_t rs_a, std::size_t cs_a, const float* p,
               std::size_t ldp, float* c, std::size_t ldc, std::size_t nr, float alpha, float beta) {
  if (mr == MR) return tile<MR>(kc, a, rs_a, cs_a, p, ldp, c, ldc, nr, alpha, beta);
  if constexpr (MR > 1) tile_rows<MR - 1>(mr, kc, a, rs_a, cs_a, p, ldp, c, ldc, nr, alpha, beta);
}

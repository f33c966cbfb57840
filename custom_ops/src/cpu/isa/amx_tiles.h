// AMX tile products of the amx path (amx.cc): included by kernels_impl.h inside the path's
// namespace, after FmaProducts, through PASA_PRODUCTS_HEADER. No include guard on purpose.
//
// Operands are split exactly into bf16 terms, hi = the upper 16 bits of the float (truncation:
// never rounds up into inf), lo = bf16_rne(x − hi); every product of two bf16 values is exact in
// fp32 and the tiles accumulate in fp32 (TDPBF16PS):
//   - Q (fp16) = Qh + Ql exactly; K' (fp32, shifted) ≈ Kh + Km (16 significant bits, |error| ≤
//     2⁻¹⁶·|K'|); S = Qh·Khᵀ + Qh·Kmᵀ + Ql·Khᵀ (bf16 Q: Ql = 0, two products);
//   - P (rounded to fp16) = Ph + Pl, V (fp16) = Vh + Vl exactly; P·V = Ph·Vh + Ph·Vl + Pl·Vh
//     (bf16 P and V: one exact product, as the avx512bf16 path's vdpbf16ps).
// The dropped terms (Ql·Km, Q·(K' − Kh − Km), Pl·Vl) are below 2⁻¹⁶ of each product, against the
// 2⁻¹¹ rounding of S and P that half mode applies; pasa_onnx.numerics.split_products emulates it.
// Float precision and decode-sized problems (row-major K', direct blocks) keep the FMA products,
// and so do the rows of a half-mode fp16 score tile that would overflow fp16 (RescoreRow, which
// the row pass calls for a row it finds at or past 65520; RescoreLarge where softcap applies).
//
// Per output element the order is fixed (32 dimensions or keys per step, the terms in the order
// above, the steps in order), whatever the tile, block_q or thread.

constexpr int64_t kAmxK = 32;  // bf16 elements of one tile row (64 bytes)

inline int64_t AmxAlign(int64_t n) { return (n + kAmxK - 1) / kAmxK * kAmxK; }

// Whether the amx products run `p`: half or paper precision on fp16/bf16 inputs.
inline bool AmxApplies(const AttentionProblem& p) {
  const auto half = [](ElemType e) { return e == ElemType::kFloat16 || e == ElemType::kBFloat16; };
  return p.precision != Precision::kFloat && half(p.q.type) && half(p.k.type) && half(p.v.type);
}

// Tile configuration: palette 1, all eight tiles 16 rows x 64 bytes. Loaded at the start of
// every product call (the configuration belongs to the thread, and other code in the process,
// oneDNN for one, may load its own or release the tiles in between).
struct alignas(64) AmxConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

inline void AmxConfigure() {
  static const AmxConfig cfg;
  _tile_loadconfig(&cfg);
}

// hi and lo terms of 16 floats, as bf16 bits in the low halves of 32-bit lanes.
inline __m512i HiBits(T x) { return _mm512_srli_epi32(_mm512_castps_si512(x), 16); }
inline T HiValue(T x) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}
inline T LoValue(T x) { return V::round_bf16(V::sub(x, HiValue(x))); }

// (hi16(a[w]), hi16(b[w])) per 32-bit lane: two rows interleaved into TDPBF16PS pairs.
inline __m512i Interleave(T a, T b) {
  const __m512i idx = _mm512_set_epi16(63, 31, 61, 29, 59, 27, 57, 25, 55, 23, 53, 21, 51, 19, 49, 17,
                                       47, 15, 45, 13, 43, 11, 41, 9, 39, 7, 37, 5, 35, 3, 33, 1);
  return _mm512_permutex2var_epi16(_mm512_castps_si512(a), idx, _mm512_castps_si512(b));
}

// Rows [0, rows) of x ([rows][n], ld floats) as bf16 terms hi (and lo when not null),
// [rows32][n32]; zeros in the padding rows and columns.
inline void SplitRows(const float* x, int64_t rows, int64_t n, int64_t ld, uint16_t* hi, uint16_t* lo) {
  const int64_t rows32 = AmxAlign(rows), n32 = AmxAlign(n);
  for (int64_t i = 0; i < rows32; ++i) {
    uint16_t* h = hi + i * n32;
    uint16_t* l = lo != nullptr ? lo + i * n32 : nullptr;
    for (int64_t d = 0; d < n32; d += W) {
      const __mmask16 live = i < rows && d < n ? static_cast<__mmask16>(n - d >= W ? 0xffffu : (1u << (n - d)) - 1u) : 0;
      const T v = _mm512_maskz_loadu_ps(live, x + i * ld + d);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + d), _mm512_cvtepi32_epi16(HiBits(v)));
      if (l != nullptr) _mm256_storeu_si256(reinterpret_cast<__m256i*>(l + d), _mm512_cvtepi32_epi16(HiBits(LoValue(v))));
    }
  }
}

// Pairs of rows of x ([rows][cols], ld floats; rows ≥ `rows` read as 0) as TDPBF16PS B operands:
// hi[k][c] = (x[2k][c], x[2k+1][c]) for k < rows32/2, likewise lo (when not null). cols % W == 0.
inline void PairRows(const float* x, int64_t rows, int64_t cols, int64_t ld, uint32_t* hi, uint32_t* lo) {
  const int64_t pairs = AmxAlign(rows) / 2;
  for (int64_t k = 0; k < pairs; ++k)
    for (int64_t c = 0; c < cols; c += W) {
      const T a = 2 * k < rows ? V::load(x + 2 * k * ld + c) : V::zero();
      const T b = 2 * k + 1 < rows ? V::load(x + (2 * k + 1) * ld + c) : V::zero();
      _mm512_storeu_si512(hi + k * cols + c, Interleave(a, b));
      if (lo != nullptr) _mm512_storeu_si512(lo + k * cols + c, Interleave(LoValue(a), LoValue(b)));
    }
}

// The block pack: Kh, Km ([D32/2][n_pad] pairs each), then Vh, Vl ([n32/2][dv_pad] pairs each).
struct AmxBlockPack {
  const uint32_t *kh, *km, *vh, *vl;
  AmxBlockPack(const void* pack, int64_t D, int64_t n_pad, int64_t dv_pad) {
    kh = static_cast<const uint32_t*>(pack);
    km = kh + AmxAlign(D) / 2 * n_pad;
    vh = km + AmxAlign(D) / 2 * n_pad;
    vl = vh + AmxAlign(n_pad) / 2 * dv_pad;
  }
};

inline int64_t AmxPackFloats(const AttentionProblem& p, int64_t n_pad, int64_t dv_pad) {
  return AmxApplies(p) ? AmxAlign(p.head_dim) * n_pad + AmxAlign(n_pad) * dv_pad : 0;
}

inline void AmxPackBlock(const AttentionProblem& p, const float* kt, const float* v, int64_t n_pad, int64_t dv_pad,
                         float* pack) {
  const AmxBlockPack b(pack, p.head_dim, n_pad, dv_pad);
  auto* out = reinterpret_cast<uint32_t*>(pack);  // the pack is 32-bit words: floats' storage reused
  const int64_t k_words = AmxAlign(p.head_dim) / 2 * n_pad;
  PairRows(kt, p.head_dim, n_pad, n_pad, out, out + k_words);
  const bool v_lo = p.v.type == ElemType::kFloat16;
  PairRows(v, n_pad, dv_pad, dv_pad, out + 2 * k_words, v_lo ? out + 2 * k_words + (b.vl - b.vh) : nullptr);
}

// ---- The tile GEMM -----------------------------------------------------------------------------
// C tiles 0..3 (2 x 2 of 16 x 16 floats), A tiles 4, 5 (row tiles), B tiles 6, 7 (column tiles).

// C tile `id` to out (16 rows, ldo floats apart), of which `live` rows are kept. (GCC's tile
// intrinsics paste the tile number into the assembly: it must be a literal, hence the macro.)
#define PASA_AMX_STORE_C(id)                                                            \
  inline void AmxStoreC##id(float* out, int64_t ldo, int64_t live, float* tmp) {        \
    if (live >= 16) {                                                                   \
      _tile_stored(id, out, ldo * 4);                                                   \
    } else if (live > 0) {                                                              \
      _tile_stored(id, tmp, 64);                                                        \
      for (int64_t r = 0; r < live; ++r) std::memcpy(out + r * ldo, tmp + r * 16, 64);  \
    }                                                                                   \
  }
PASA_AMX_STORE_C(0)
PASA_AMX_STORE_C(1)
PASA_AMX_STORE_C(2)
PASA_AMX_STORE_C(3)
#undef PASA_AMX_STORE_C

struct AmxOperands {
  const uint16_t *ah, *al;  // A terms [rows32][lda] bf16 (al: null when A has no lo term)
  int64_t lda;
  const uint32_t *bh, *bl;  // B terms [16·ksteps][ldb] pairs (bl: null when B has no lo term)
  int64_t ldb;
  int64_t ksteps;
};

// One term of a k-step, A·B into the C tiles, reloading A (row tiles 4, 5) and/or B (column
// tiles 6, 7) as asked. Each load sits just before the first dot that reads it, so the tile
// unit can start on the tiles already loaded (end to end within noise of four loads, then four
// dots: docs/benchmarks.md). The dots into each C tile keep their order, so the sums are the same.
template <int NR, int NC, bool kLoadA, bool kLoadB>
inline void AmxTerm(const uint16_t* a, int64_t lda, const uint32_t* b, int64_t ldb) {
  if constexpr (kLoadA) _tile_loadd(4, a, lda * 2);
  if constexpr (kLoadB) _tile_loadd(6, b, ldb * 4);
  _tile_dpbf16ps(0, 4, 6);
  if constexpr (NC > 1) {
    if constexpr (kLoadB) _tile_loadd(7, b + 16, ldb * 4);
    _tile_dpbf16ps(1, 4, 7);
  }
  if constexpr (NR > 1) {
    if constexpr (kLoadA) _tile_loadd(5, a + 16 * lda, lda * 2);
    _tile_dpbf16ps(2, 5, 6);
    if constexpr (NC > 1) _tile_dpbf16ps(3, 5, 7);
  }
}

// 32 x 32 (NR x NC tiles) of out = Σ_s Ah·Bh + Ah·Bl + Al·Bh, rows r0.. (live of them), columns c0..
template <int NR, int NC, bool BL, bool AL>
inline void AmxMicro(const AmxOperands& o, int64_t r0, int64_t c0, int64_t live, float* out, int64_t ldo, float* tmp) {
  _tile_zero(0);
  if constexpr (NC > 1) _tile_zero(1);
  if constexpr (NR > 1) _tile_zero(2);
  if constexpr (NR > 1 && NC > 1) _tile_zero(3);
  const uint16_t* ah = o.ah + r0 * o.lda;
  const uint16_t* al = AL ? o.al + r0 * o.lda : nullptr;
  for (int64_t s = 0; s < o.ksteps; ++s) {
    const int64_t bo = s * 16 * o.ldb + c0;
    AmxTerm<NR, NC, true, true>(ah + s * kAmxK, o.lda, o.bh + bo, o.ldb);
    if constexpr (BL) AmxTerm<NR, NC, false, true>(nullptr, o.lda, o.bl + bo, o.ldb);
    if constexpr (AL) AmxTerm<NR, NC, true, BL>(al + s * kAmxK, o.lda, o.bh + bo, o.ldb);
  }
  float* base = out + r0 * ldo + c0;
  AmxStoreC0(base, ldo, live, tmp);
  if constexpr (NC > 1) AmxStoreC1(base + 16, ldo, live, tmp);
  if constexpr (NR > 1) AmxStoreC2(base + 16 * ldo, ldo, live - 16, tmp);
  if constexpr (NR > 1 && NC > 1) AmxStoreC3(base + 16 * ldo + 16, ldo, live - 16, tmp);
}

template <bool BL, bool AL>
inline void AmxGemmT(const AmxOperands& o, int64_t rows, int64_t cols, float* out, int64_t ldo, float* tmp) {
  for (int64_t r0 = 0; r0 < rows; r0 += 32) {
    const int64_t live = std::min<int64_t>(32, rows - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += 32) {
      const bool two_c = cols - c0 > 16;
      if (live > 16 && two_c) AmxMicro<2, 2, BL, AL>(o, r0, c0, live, out, ldo, tmp);
      else if (live > 16) AmxMicro<2, 1, BL, AL>(o, r0, c0, live, out, ldo, tmp);
      else if (two_c) AmxMicro<1, 2, BL, AL>(o, r0, c0, live, out, ldo, tmp);
      else AmxMicro<1, 1, BL, AL>(o, r0, c0, live, out, ldo, tmp);
    }
  }
}

// out[rows][cols] (ldo floats apart; cols % 16 == 0) = the split product of the operands.
inline void AmxGemm(const AmxOperands& o, int64_t rows, int64_t cols, float* out, int64_t ldo) {
  alignas(64) float tmp[16 * 16];
  AmxConfigure();
  const bool bl = o.bl != nullptr, al = o.al != nullptr;
  if (bl && al) AmxGemmT<true, true>(o, rows, cols, out, ldo, tmp);
  else if (bl) AmxGemmT<true, false>(o, rows, cols, out, ldo, tmp);
  else if (al) AmxGemmT<false, true>(o, rows, cols, out, ldo, tmp);
  else AmxGemmT<false, false>(o, rows, cols, out, ldo, tmp);
}

// Per-thread packed query and probability terms, grown on demand.
struct AmxScratch {
  AlignedVector<uint16_t> qh, ql, ph, pl;  // tile rows start on cache lines (aligned_vector.h)
  static uint16_t* Grow(AlignedVector<uint16_t>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  }
};

inline AmxScratch& ThreadAmxScratch() {
  thread_local AmxScratch s;
  return s;
}

struct AmxProducts : FmaProducts {
  static void Score(TileState& t, const RowParams& rp, const KvBlock& kv) {
    if (kv.pack == nullptr) {
      FmaProducts::Score(t, rp, kv);
      return;
    }
    const int64_t D = rp.head_dim, D32 = AmxAlign(D), n = kv.n_pad;
    const bool q_lo = rp.q_type == ElemType::kFloat16;
    AmxScratch& sc = ThreadAmxScratch();
    const int64_t q_elems = AmxAlign(t.rows) * D32;
    uint16_t* qh = AmxScratch::Grow(sc.qh, q_elems);
    uint16_t* ql = q_lo ? AmxScratch::Grow(sc.ql, q_elems) : nullptr;
    if (t.q_fresh) {  // once per tile: the queries stay, the key blocks change
      SplitRows(t.q, t.rows, D, D, qh, ql);
      t.q_fresh = false;
    }
    const AmxBlockPack b(kv.pack, D, n, rp.dv_pad);
    AmxGemm({qh, ql, D32, b.kh, b.km, n, D32 / kAmxK}, t.rows, n, t.s, n);
    // Without softcap the row pass checks each row as it reads it (RescoresRows, RescoreRow).
    if (RescoresFp16(rp) && rp.softcap > 0.0f) RescoreLarge(t, D, kv);
  }

  static bool RescoresFp16(const RowParams& rp) {
    return rp.precision == Precision::kHalf && rp.half_type == ElemType::kFloat16;
  }
  static bool RescoresRows(const RowParams& rp, const KvBlock& kv) { return kv.pack != nullptr && RescoresFp16(rp); }
  static void RescoreRow(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t i) {
    ScoreTile(t.q + i * rp.head_dim, 1, rp.head_dim, kv.kt, kv.n_pad, t.s + i * kv.n_pad);
  }

  // P goes straight from the exp pass into its A-operand terms, [rows][n32] in the thread's
  // scratch (the rows rows..rows32 of the last row tile and rows that skip the block hold
  // whatever they held: each output row of the product depends on its own row of P only, and
  // only the updated rows' outputs are used).
  template <int R>
  static PTerms PTarget(TileState& t, const RowParams&, const KvBlock& kv) {
    if (kv.pack == nullptr || R == kNoRound) return {};
    const int64_t n32 = AmxAlign(kv.n_pad), p_elems = AmxAlign(t.rows) * n32;
    AmxScratch& sc = ThreadAmxScratch();
    return {AmxScratch::Grow(sc.ph, p_elems), R == kRoundF16 ? AmxScratch::Grow(sc.pl, p_elems) : nullptr, n32};
  }

  // Half mode keeps a row's fp32 scores where they would overflow fp16 (|s| ≥ 65520): there the
  // scores are large and the split's 2⁻¹⁶ of K' is not small against their differences, so such
  // a row is recomputed with the FMA product (the fp32 tile of the contract).
  static void RescoreLarge(TileState& t, int64_t D, const KvBlock& kv) {
    const int64_t n = kv.n_pad;
    const T thr = V::set1(65520.0f);
    for (int64_t i = 0; i < t.rows; ++i) {
      M big = V::mfalse();
      for (int64_t r = 0; r < n; r += W) big = V::mor(big, V::ge(V::abs(V::load(t.s + i * n + r)), thr));
      if (V::any(big)) ScoreTile(t.q + i * D, 1, D, kv.kt, n, t.s + i * n);
    }
  }

  template <int R, class VRow>
  static void Pv(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t n_keys, const VRow& vrow) {
    if (kv.pack == nullptr || R == kNoRound) {
      FmaProducts::Pv<R>(t, rp, kv, n_keys, vrow);
      return;
    }
    const int64_t n = kv.n_pad, n32 = AmxAlign(n);
    const bool v_lo = rp.v_type == ElemType::kFloat16;
    const PTerms p = PTarget<R>(t, rp, kv);  // written by the exp pass
    const AmxBlockPack b(kv.pack, rp.head_dim, n, rp.dv_pad);
    AmxGemm({p.hi, p.lo, n32, b.vh, v_lo ? b.vl : nullptr, rp.dv_pad, n32 / kAmxK}, t.rows, rp.dv_pad, t.pv, rp.dv_pad);
  }
};

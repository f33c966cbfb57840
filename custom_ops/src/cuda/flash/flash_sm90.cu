// The Hopper main kernel of the flash path (sm_90a): S = Q·K'ᵀ and O += P·V on warpgroup MMAs.
//
// One CTA per (128 packed query rows, kv unit, batch), 384 threads:
//   - warpgroup 0, the producer: streams 128-key tiles of K' (the shift pre-pass's output) and V
//     into a 2-stage ring of shared-memory buffers with cp.async (zero-filling keys past the valid
//     length, as the mma.sync kernel) and the tile's kbar rows, split into the half type for the
//     consumers' shift product (StoreSplitKbar), then hands each stage to the consumers through
//     a `full` mbarrier; it waits on the stage's `empty` mbarrier before refilling it.
//   - warpgroups 1 and 2, the consumers, 64 query rows each: S = Q·K'ᵀ with wgmma (Q and K' read
//     from shared memory through matrix descriptors, 128-byte swizzled; the K' tile's last 8
//     rows are the split kbar rows, so the S product's last 8 columns give the removed shifts:
//     TensorShifts), the PASA row steps of
//     flash_fwd.cu on the fp32 accumulators, P rounded to the half type in registers, O += P·V
//     with wgmma (P from registers, V from shared memory, transposed through the descriptor).
// The numerics are the mma.sync kernel's, with the online softmax per 128-key tile (the overflow
// fallback and the removed shift stay per 64 keys, as pasa_onnx.numerics_gpu emulates them).
// The producer gives its registers to the consumers (setmaxnreg).
#include "flash_sm90.h"

#include <cstdint>
#include <string>
#include <type_traits>

#include "device_caps.h"
#include "flash_ptx.cuh"
#include "sm90_ptx.cuh"
#include "wgmma_ops.cuh"

// Programmatic dependent launch of the kernel after the shift pre-pass, for head size 64 (H200,
// flash_selftest bench, kernel time with the pre-pass: H12/D64 S = 1k 29.8 against 30.9 us,
// causal 35.5 against 37.3; at D = 128 69.5 against 68.6 us, so plain stream order there).
// PASA_SM90_PDL=0 turns it off.
#ifndef PASA_SM90_PDL
#define PASA_SM90_PDL 1
#endif

namespace pasa::cuda::flash {
namespace {

constexpr int kBM = 128;           // packed query rows per CTA (two consumer warpgroups of 64)
constexpr int kBN = 128;           // keys per tile (one online-softmax step)
constexpr int kHalf = 64;          // keys per overflow-fallback / shift unit (the emulation's tile)
constexpr int kStages = 2;         // K'/V ring depth
constexpr int kThreads = 384;      // producer warpgroup + two consumer warpgroups
constexpr int kProducerRegs = 56;  // setmaxnreg: 128·56 + 256·224 = 384·168, the registers the CTA starts with
constexpr int kConsumerRegs = 224;  // (more than that pool: setmaxnreg.inc waits forever)

// The removed shifts c·(q·kbar) come from the tensor cores, as 8 more columns of the S GEMM.
// The producer stores each 64-key half's kbar row (fp32) as three rows of the half type, hi +
// mid + lo (each the rounding of what the earlier ones leave: 24 significant bits with bf16, 33
// with fp16), as rows kBN .. kBN + 7 of the K' tile; wgmma.m64n136k16 multiplies the Q rows by
// the keys and these rows at once (fp32 sums), and a quad shuffle adds each half's three
// columns. The products of half-type values are exact in fp32; the order of the sums is the
// tensor cores', so a shift agrees with the emulation's fp32 dot product to a few fp32 ulps, not
// bit for bit (flash_selftest allows for it). H200, flash_selftest bench, 2026-12-02: 1.06-1.15x
// at D = 128 against a consumer dot product of ~250 instructions per tile, 0.98-1.07x at D = 64
// (noise) against the producer's.
// As 8 columns of the one S MMA instead of a second m64n8k16 per k-step (and l as 8 columns of the
// P·V MMA, see PvProduct): 1.02-1.04x at S >= 4k (the same bench, 2026-12-02, two runs), with
// the same output bits.
constexpr int kShiftRows = 8;  // the split kbar rows: kBN + 4h .. kBN + 4h + 2 hold half h's hi, mid, lo; +3, +7 zero
constexpr int kKRows = kBN + kShiftRows;  // rows of a K' tile: the keys, then the split kbar rows
constexpr int kSAcc = kKRows / 2;         // S product accumulators per thread: 64 scores, then 4 shift sums
constexpr int kPanel = kBN * 128;         // one 64-column panel of a V tile

// Shared memory, every tile as 64-column panels of 128-byte rows, 128-byte swizzled: Q [kBM][D];
// K'[stage][kKRows][D] (the keys, then the split kbar rows); V[stage][kBN][D + 64] (the values,
// then a panel of ones: P·V's columns D .. D + 7 are the rows' sums of P, see PvProduct);
// mbarriers.
template <int D>
struct SmemPlan {
  static constexpr int kQBytes = kBM * D * 2;
  static constexpr int kKTileBytes = kKRows * D * 2;
  static constexpr int kVTileBytes = (D / 64 + 1) * kPanel;
  static constexpr int kOffK = kQBytes;
  static constexpr int kOffV = kOffK + kStages * kKTileBytes;
  static constexpr int kOffBar = kOffV + kStages * kVTileBytes;
  static constexpr int kBytes = kOffBar + 4 * kStages * 8;
  static constexpr int kAlloc = kBytes + 1024;  // the swizzle needs 1024-byte aligned tiles
  static_assert(kKRows * 128 % 1024 == 0 && kOffV % 1024 == 0, "K' panels and V tiles: 1024-byte aligned");
};

// The CTA's packed rows, valid keys, query offset and key tiles (kBN keys each; no split). With a
// mask (p.mcls set: the launch for classified planes, see LaunchSm90), the CTA's plane class from
// MaskClassKernel: a padding plane ({1, n}) or a causal + padding plane ({2, n}) runs as the
// unmasked steps with that geometry (TileRange::causal); a general plane ({0, 0}) is the kExt
// kernel's (*skip set). The query offset comes before the class, as in the kExt kernel.
__device__ __forceinline__ TileRange MakeRange(const FwdParams& p, bool* skip) {
  TileRange r;
  const int2 tu = CtaTileUnit(p);
  const int tile_m = tu.x;
  r.unit = tu.y;
  r.R0 = tile_m * kBM;
  r.R1 = min(r.R0 + kBM, p.rows);
  const int b = blockIdx.z;
  r.valid = ValidLen(p.nonpad, b, p.kv_len);
  r.off = p.nonpad != nullptr ? static_cast<int64_t>(r.valid) - p.q_len : p.past_len;
  int causal = p.causal;
  *skip = false;
  if (p.mcls != nullptr) {
    const int2 cls = p.mcls[(p.m_sb != 0 ? b : 0) * p.m_planes_h + (p.m_sh != 0 ? r.unit * p.group : 0)];
    *skip = cls.x == 0;
    r.valid = min(r.valid, cls.y);
    if (cls.x == 2) causal = 1;
  }
  KeyTiles<kBN, false>(p, r, 0, 1, causal);
  return r;
}

// The ring's mbarriers, 8 bytes each from `base` (addresses, not arrays: a stage index known only
// at run time would put an array in local memory). K' (with its kbar rows) and V have their own:
// K' of tile i is read by the S product of iteration i, V by the P·V product of iteration i + 1.
// Iteration 0's P·V product (P = 0) reads stage kStages - 1 as a virtual tile -1 that the
// producer fills with ones (FillOnes) and the consumers release as they release any tile.
//   full_k(s), full_v(s): the producer's copies into stage s landed (128 asynchronous arrivals;
//     full_k also 128 plain ones after the kbar stores);
//   empty_k(s), empty_v(s): the consumers have read it (empty_k: every consumer thread, whose
//     fp16-sums fallback may read K' with its own loads; empty_v: one arrival per consumer warp,
//     V is read by MMAs only).
struct Bars {
  uint32_t base;
  __device__ __forceinline__ uint32_t full_k(int s) const { return base + 8 * s; }
  __device__ __forceinline__ uint32_t full_v(int s) const { return base + 8 * (kStages + s); }
  __device__ __forceinline__ uint32_t empty_k(int s) const { return base + 8 * (2 * kStages + s); }
  __device__ __forceinline__ uint32_t empty_v(int s) const { return base + 8 * (3 * kStages + s); }
};

// The mbarrier's arrival when all of this thread's earlier cp.async copies have landed (counted
// against the expected arrivals: .noinc); the producer never waits for its own copies.
__device__ __forceinline__ void CpAsyncArrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// Four kbar values (columns 4·c4 .. 4·c4 + 3) as rows r, r + 1, r + 2 of the K' tile at sKs
// (r >= kBN: the split kbar rows): hi = T(x), mid = T(x - hi), lo = T(x - hi - mid),
// each difference exact in fp32. Their sum is x to 24 significant bits with bf16 (8 + 8 + 8) and
// beyond fp32's with fp16 (fp16's subnormal grid, 2^-24, bounds lo's absolute error).
template <typename T>
__device__ __forceinline__ void StoreSplitKbar(uint32_t sKs, int r, int c4, float4 x) {
  using Tr = HalfTraits<T>;
  float2 rest[2] = {make_float2(x.x, x.y), make_float2(x.z, x.w)};
#pragma unroll
  for (int term = 0; term < 3; ++term) {
    uint32_t w[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const auto t2 = Tr::Pack(rest[e].x, rest[e].y);
      const float2 back = Tr::Unpack(t2);
      rest[e].x -= back.x;
      rest[e].y -= back.y;
      w[e] = AsU32(t2);
    }
    const uint32_t addr = sKs + SwizzledOffset(r + term, c4 >> 1, kKRows) + (c4 & 1) * 8;
    StsU32x2(addr, w[0], w[1]);
  }
}

// The split kbar rows' zero rows (kBN + 3 and kBN + 7) of every stage: written once, never
// overwritten.
template <int D>
__device__ __forceinline__ void ZeroSplitKbarPad(uint32_t sK, int ptid) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int idx = ptid; idx < kStages * 2 * kChunks; idx += 128) {
    const int s = idx / (2 * kChunks), r = kBN + 3 + 4 * ((idx / kChunks) % 2), c = idx % kChunks;
    const uint32_t addr = sK + s * SmemPlan<D>::kKTileBytes + SwizzledOffset(r, c, kKRows);
    StsU32x4(addr, 0u, 0u, 0u, 0u);
  }
}

// The V ring's ones (see PvProduct and Bars): the panel after each stage's values, and the values
// of the last stage, the virtual tile -1. Each of those value chunks is stored by the producer
// thread whose copies overwrite it later (at dv + soff_v + j * row_step * 128, as in Produce), so
// that store and copy are ordered by the thread's own program order. Published by the first
// full_k arrival, as the split kbar rows.
template <int D, typename T>
__device__ __forceinline__ void FillOnes(uint32_t sV, int ptid, uint32_t soff_v, int row_step) {
  using Plan = SmemPlan<D>;
  const uint32_t one2 = AsU32(HalfTraits<T>::Pack(1.f, 1.f));
  const uint32_t last = sV + (kStages - 1) * Plan::kVTileBytes;
  for (int r = 0; r < kBN; r += row_step) StsU32x4(last + soff_v + r * 128, one2, one2, one2, one2);
#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    const uint32_t panel = sV + s * Plan::kVTileBytes + (D / 64) * kPanel;
    for (int idx = ptid; idx < kPanel / 16; idx += 128) StsU32x4(panel + idx * 16, one2, one2, one2, one2);
  }
}

// Producer warpgroup: K' rows (zero past the workspace's padded length) with the tile's two kbar
// rows, then V rows (zero past the valid length: P·V never sees padded keys' ±inf or NaN), each
// into its ring once the consumers have released the stage.
template <int D, typename T>
__device__ __forceinline__ void Produce(const FwdParams& p, const TileRange& rg, uint8_t* base, const Bars& bars) {
  using Plan = SmemPlan<D>;
  constexpr int CH = D / 8;
  const int ptid = threadIdx.x;  // 0..127
  const int b = blockIdx.z, hkv = rg.unit;
  const int64_t slab = static_cast<int64_t>(b) * p.hkv + hkv;
  const T* kp = static_cast<const T*>(p.kp) + slab * p.kv_pad * D;
  const T* v = static_cast<const T*>(p.v) + b * p.v_sb + (hkv / p.kv_div) * p.v_sh;  // unit -> kv head
  const float* kb = p.kbar + slab * p.nblk * D;
  const int block_kv = p.blk_tiles * 64;
  const uint32_t sK = SmemAddr(base + Plan::kOffK), sV = SmemAddr(base + Plan::kOffV);
  // Thread ptid copies the 16-byte chunk c = ptid % CH of rows r0, r0 + kRowStep, ... of each
  // tile. kRowStep is a multiple of 8, so the swizzle term of those rows is the same: the shared
  // address steps by kRowStep rows (the per-chunk index arithmetic was ~20 instructions per copy,
  // and the producer warps issued more instructions than the consumers; ncu, 2026-12-01).
  constexpr int kRowStep = 128 / CH, kIters = kBN / kRowStep;
  static_assert(kRowStep % 8 == 0 && kBN % kRowStep == 0, "copy rows share the swizzle phase");
  const int c = ptid % CH, r0 = ptid / CH;
  const uint32_t soff_k = SwizzledOffset(r0, c, kKRows), soff_v = SwizzledOffset(r0, c, kBN);
  const int64_t v_step = static_cast<int64_t>(kRowStep) * p.v_ss;
  ZeroSplitKbarPad<D>(sK, ptid);  // published by the first full_k arrival
  const int n = rg.t_end - rg.t_begin;
  for (int i = 0; i < n; ++i) {
    const int t = rg.t_begin + i, s = i % kStages;
    const uint32_t parity = static_cast<uint32_t>((i / kStages - 1) & 1);
    if (i >= kStages) MbarWait(bars.empty_k(s), parity);
    const uint32_t dk = sK + s * Plan::kKTileBytes, dv = sV + s * Plan::kVTileBytes;
    const int key0 = t * kBN + r0;
    const T* ksrc = kp + static_cast<int64_t>(key0) * D + c * 8;
    if ((t + 1) * kBN <= p.kv_pad) {  // the whole tile inside the workspace: no zero fill
#pragma unroll
      for (int j = 0; j < kIters; ++j) CpAsync16Full(dk + soff_k + j * kRowStep * 128, ksrc + j * kRowStep * D);
    } else {
#pragma unroll
      for (int j = 0; j < kIters; ++j) {
        const bool in = key0 + j * kRowStep < p.kv_pad;
        CpAsync16(dk + soff_k + j * kRowStep * 128, in ? ksrc + j * kRowStep * D : kp, in ? 16 : 0);
      }
    }
    CpAsyncArrive(bars.full_k(s));
    // The kbar rows with plain loads and stores, published by a plain (release) arrival: a second
    // arrival per producer thread; split into the half type's hi, mid, lo rows for the
    // consumers' shift product (a generic-proxy write that wgmma reads: fenced below).
    for (int idx = ptid; idx < 2 * D / 4; idx += 128) {
      const int h = idx / (D / 4), c4 = idx % (D / 4);
      const int blk = (t * kBN + h * kHalf) / block_kv;
      const float4 v4 = blk < p.nblk ? __ldg(reinterpret_cast<const float4*>(kb + static_cast<int64_t>(blk) * D) + c4)
                                     : make_float4(0.f, 0.f, 0.f, 0.f);
      StoreSplitKbar<T>(dk, kBN + 4 * h, c4, v4);
    }
    if (i == 0) FillOnes<D, T>(sV, ptid, soff_v, kRowStep);
    FenceProxyAsync();
    MbarArrive(bars.full_k(s));  // K' landed (the cp.async arrival above), the split kbar rows stored
    // V stage s is free once the consumers released the tiles stored there before: i / kStages
    // of them, and the virtual tile -1 in the last stage (see Bars).
    const int v_releases = i / kStages + (s == kStages - 1 ? 1 : 0);
    if (v_releases > 0) MbarWait(bars.empty_v(s), static_cast<uint32_t>((v_releases - 1) & 1));
    const T* vsrc = v + static_cast<int64_t>(key0) * p.v_ss + c * 8;
    if ((t + 1) * kBN <= rg.valid) {  // every key of the tile valid: no zero fill
#pragma unroll
      for (int j = 0; j < kIters; ++j) {
        CpAsync16Full(dv + soff_v + j * kRowStep * 128, vsrc);
        vsrc += v_step;
      }
    } else {
#pragma unroll
      for (int j = 0; j < kIters; ++j) {
        const bool in = key0 + j * kRowStep < rg.valid;
        CpAsync16(dv + soff_v + j * kRowStep * 128, in ? vsrc : v, in ? 16 : 0);
        vsrc += v_step;
      }
    }
    CpAsyncArrive(bars.full_v(s));
  }
  CpAsyncWaitAll();  // nothing in flight when the producer's warps exit
}

// Accumulator layout of a 64xN wgmma tile per thread: element (j, rr, e) = acc[4j + 2rr + e] is
// row 16·warp + g + 8·rr, column 8j + 2·tq + e (the m16n8 layout, N/8 tiles wide). The S product's
// acc[kBN / 2 ..] are its shift columns (TensorShifts); the row steps read the scores before them.
constexpr int kNT = kBN / 8;  // 8-column tiles of S

// The mask of a partial tile (-inf where a key is past the valid length or outside the row's
// causal/window range) and the attended max |S| per (64-key half, row), for the overflow test.
// Each row's keys are one range [lo, hi), found once per tile, so a score's test is two compares
// with a constant (Geometry::Allowed per score compiled to short-circuit branches and a parameter
// load per score: ~20 instructions, against ~4.5 for a full tile's rounding, max and exp).
__device__ __forceinline__ void MaskAbsMax(float (&acc)[kSAcc], float (&amax)[2][2], int t, int valid,
                                           const Geometry& geo, const int (&row_pos)[2], int tq) {
  const int64_t base = static_cast<int64_t>(t) * kBN + 2 * tq;  // this thread's first column's key
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t pos = row_pos[rr];
    int64_t lo = 0, hi = valid;  // Geometry::Allowed's keys for this row
    if (geo.causal) hi = Min64(hi, pos + 1);
    if (geo.left >= 0) lo = Max64(lo, pos - geo.left);
    if (geo.right >= 0) hi = Min64(hi, pos + geo.right + 1);
    // relative to the thread's first column, clamped to the tile (column c = 8j + e attends when lo <= c < hi)
    const int c_lo = static_cast<int>(Min64(Max64(lo - base, -1), kBN + 1));
    const int c_hi = static_cast<int>(Min64(Max64(hi - base, -1), kBN + 1));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float am = 0.f;
#pragma unroll
      for (int j = h * 8; j < h * 8 + 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = acc[4 * j + 2 * rr + e];
          const bool ok = 8 * j + e >= c_lo && 8 * j + e < c_hi;
          am = fmaxf(am, ok ? fabsf(x) : 0.f);
          x = ok ? x : -INFINITY;
        }
      amax[h][rr] = am;
    }
  }
}

// |h| of both halves of a packed pair (after __habs2) reaches the half type's infinity.
template <typename T>
__device__ __forceinline__ bool PairHasInf(uint32_t u) {
  constexpr uint32_t kInf = std::is_same<T, __half>::value ? 0x7C00u : 0x7F80u;
  return (u & 0xFFFFu) >= kInf || (u >> 16) >= kInf;
}

// The row steps of a tile: S rounded to the half type with the conversion unit
// (round-to-nearest-even; a score at or past the overflow threshold becomes ±inf, which is how
// the overflow test reads it: a (row, 64-key half)'s max |round(S)| reaches inf);
// acc holds round(S) afterwards (a row whose half overflows: fp32 S there), and m the rows'
// maxima of x = acc + shift, taken as max(acc) + shift per half (fp32 addition is monotonic: the
// same value as the maximum of the sums), the max of the rounded scores on the packed halves.
// One warp vote per tile (fp16; bf16: per 64-key half, which keeps the D = 128 kernel from
// spilling), so that the common path (nothing overflows) is one straight-line block the
// compiler can interleave across both halves.
// kMasked (a partial tile, after MaskAbsMax): the overflow test reads the attended max |S| of
// each (half, row) from fp32_amax instead (a masked key's -inf is not an overflow).
template <typename T, bool kMasked>
__device__ __forceinline__ void TileSteps(float (&acc)[kSAcc], float (&m)[2], const float (&shift)[2][2],
                                          const float (&fp32_amax)[2][2]) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int kVoteHalves = std::is_same<T, __half>::value ? 2 : 1;  // 64-key halves per warp vote
  float hmax[2][2];  // per (half, rr): the max of round(S)
#pragma unroll
  for (int h0 = 0; h0 < 2; h0 += kVoteHalves) {
    uint32_t pk[kVoteHalves][2][8];  // round(S) packed, [half - h0][rr][jj]: row g + 8rr, columns 8(8h + jj) + 2tq, +1
    uint32_t amax[kVoteHalves][2];   // per (half, rr): the pairwise max |round(S)|
    bool inf = false;
#pragma unroll
    for (int hh = 0; hh < kVoteHalves; ++hh)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int h = h0 + hh;
        T2 am = Tr::Pack(0.f, 0.f), sm = am;
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) {
          const int j = 8 * h + jj;
          const T2 r2 = Tr::Pack(acc[4 * j + 2 * rr], acc[4 * j + 2 * rr + 1]);
          pk[hh][rr][jj] = AsU32(r2);
          am = __hmax2(am, __habs2(r2));
          sm = jj == 0 ? r2 : __hmax2(sm, r2);
        }
        amax[hh][rr] = kMasked ? (fp32_amax[h][rr] >= OverflowThreshold<T>() ? 0xFFFFFFFFu : 0u) : AsU32(am);
        inf |= PairHasInf<T>(amax[hh][rr]);
        const float2 sf = Tr::Unpack(sm);
        hmax[h][rr] = fmaxf(sf.x, sf.y);
      }
    if (__any_sync(0xffffffffu, inf)) {  // rare: which rows' halves overflow, quad-reduced
#pragma unroll
      for (int hh = 0; hh < kVoteHalves; ++hh)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const int h = h0 + hh;
          const bool ovf = QuadRowOr(PairHasInf<T>(amax[hh][rr]) ? 1 : 0) != 0;
          float fm = -INFINITY;  // an overflowing row: the max of its fp32 scores
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) {
            const int j = 8 * h + jj;
            const float2 r = Tr::Unpack(*reinterpret_cast<const T2*>(&pk[hh][rr][jj]));
            acc[4 * j + 2 * rr] = ovf ? acc[4 * j + 2 * rr] : r.x;
            acc[4 * j + 2 * rr + 1] = ovf ? acc[4 * j + 2 * rr + 1] : r.y;
            fm = fmaxf(fm, fmaxf(acc[4 * j + 2 * rr], acc[4 * j + 2 * rr + 1]));
          }
          if (ovf) hmax[h][rr] = fm;
        }
    } else {
#pragma unroll
      for (int hh = 0; hh < kVoteHalves; ++hh)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr)
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) {
            const int j = 8 * (h0 + hh) + jj;
            const float2 r = Tr::Unpack(*reinterpret_cast<const T2*>(&pk[hh][rr][jj]));
            acc[4 * j + 2 * rr] = r.x;
            acc[4 * j + 2 * rr + 1] = r.y;
          }
    }
  }
  // from -inf, as the running max starts: a NaN half leaves -inf (fmaxf drops NaN)
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) m[rr] = fmaxf(fmaxf(-INFINITY, hmax[0][rr] + shift[0][rr]), hmax[1][rr] + shift[1][rr]);
}

// The row steps of tile t: full tiles (every score attended) straight to TileSteps, partial
// ones (the mask's edge) masked first.
template <typename T>
__device__ __forceinline__ void RowSteps(float (&acc)[kSAcc], float (&mx)[2], const float (&shift)[2][2], bool full,
                                         int t, int valid, const Geometry& geo, const int (&row_pos)[2], int tq) {
  float amax[2][2] = {};  // partial tiles: the attended max |S| (MaskAbsMax)
  if (full) {
    TileSteps<T, false>(acc, mx, shift, amax);
  } else {
    MaskAbsMax(acc, amax, t, valid, geo, row_pos, tq);
    TileSteps<T, true>(acc, mx, shift, amax);
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) mx[rr] = QuadRowMax(mx[rr]);
}

// Online softmax step: P = 2^((x − m)·log2e) rounded to the half type, with x = acc + shift taken
// inside the product, acc·log2e + (shift − m)·log2e: the shift and the max (both large where the
// scores are, ~10⁴ with keys at 3·10⁴) cancel first, and round(S)'s low bits are not dropped by
// the sum x (one FADD per score less). P is packed as the A fragments of P·V (pf[j][rr]: row
// g + 8rr, columns 8j + 2tq, +1); O and the row sums (o, see PvProduct) rescaled (the sums of this
// tile's P are added by the next P·V product). A row with no attended key yet (m = -inf) has bias
// 0 and P = 0.
template <int D, typename T>
__device__ __forceinline__ void Softmax(uint32_t (&pf)[kNT][2], const float (&acc)[kSAcc], const float (&shift)[2][2],
                                        const float (&mx)[2], float (&m_run)[2], float (&o)[D / 2 + 4]) {
  using Tr = HalfTraits<T>;
  float corr_r[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const float m_new = fmaxf(m_run[rr], mx[rr]);
    const float mL = m_new == -INFINITY ? 0.f : m_new * kLog2e;
    corr_r[rr] = Exp2(fmaf(m_run[rr], kLog2e, -mL));
    m_run[rr] = m_new;
    float bias[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) bias[h] = m_new == -INFINITY ? 0.f : (shift[h][rr] - m_new) * kLog2e;
#pragma unroll
    for (int j = 0; j < kNT; ++j)
      pf[j][rr] = AsU32(Tr::Pack(Exp2(fmaf(acc[4 * j + 2 * rr], kLog2e, bias[j / 8])),
                                 Exp2(fmaf(acc[4 * j + 2 * rr + 1], kLog2e, bias[j / 8]))));
  }
  // O·corr; skipped when no row of the warp changed its max (corr = 2^0 = 1 exactly: the same O).
  if (__any_sync(0xffffffffu, corr_r[0] != 1.f || corr_r[1] != 1.f)) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
#pragma unroll
      for (int j = 0; j < D / 8 + 1; ++j) {
        o[4 * j + 2 * rr] *= corr_r[rr];
        o[4 * j + 2 * rr + 1] *= corr_r[rr];
      }
    }
  }
}

// ---- fp16 score accumulation (kHalfAcc: PASA_ONNX_CUDA_SCORE_ACCUM=half, fp16) ----
// The fp16 accumulators of a 64x128 tile: register 2j + rr packs the fp32 layout's elements
// 4j + 2rr and 4j + 2rr + 1 (row g + 8rr, columns 8j + 2tq, +1).

// S of this warp's 16 rows over 64-key half h of the tile with fp32 accumulators, on mma.sync
// from the swizzled Q and K' tiles (the fallback of HalfSums; the m16n8 layout is the wgmma
// accumulator's, so the scores land where the fp32 kernel's would). q_row: the warp's first CTA
// row; sK: the stage's K' tile.
template <int D>
__device__ __forceinline__ void HalfFallbackProduct(float (&acc)[kSAcc], int h, uint32_t sQa, uint32_t sK, int q_row,
                                                    int lane) {
#pragma unroll
  for (int j = 8 * h; j < 8 * h + 8; ++j) acc[4 * j] = acc[4 * j + 1] = acc[4 * j + 2] = acc[4 * j + 3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    LdMatrixX4(sQa + SwizzledOffset(q_row + (lane & 15), 2 * kk + (lane >> 4), kBM), a[0], a[1], a[2], a[3]);
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const int key = 64 * h + 16 * jj + (lane & 7) + ((lane >> 4) << 3);
      uint32_t b0, b1, b2, b3;
      LdMatrixX4(sK + SwizzledOffset(key, 2 * kk + ((lane >> 3) & 1), kKRows), b0, b1, b2, b3);
      const int j = 8 * h + 2 * jj;
      Mma16816<__half>(&acc[4 * j], a, b0, b1);
      Mma16816<__half>(&acc[4 * (j + 1)], a, b2, b3);
    }
  }
}

// The tile's scores from fp16 sums, per (this warp's 16 rows, 64-key half): finite sums into acc
// (half values already: no rounding or overflow test needed), or, where one is not finite (an
// fp16 partial sum overflowed), the fp32 product, which the default steps then take. Returns true
// when no half fell back. Reads K' (the fallback): before the stage is released.
template <int D>
__device__ __forceinline__ bool HalfSums(float (&acc)[kSAcc], const uint32_t (&hs)[kBN / 4], uint32_t sQa, uint32_t sK,
                                         int q_row, int lane) {
  bool all_finite = true;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (WarpAnyNonFiniteHalf2<16>(&hs[16 * h])) {  // rare
      HalfFallbackProduct<D>(acc, h, sQa, sK, q_row, lane);
      all_finite = false;
    } else {
#pragma unroll
      for (int i = 16 * h; i < 16 * h + 16; ++i) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&hs[i]));
        acc[2 * i] = f.x;
        acc[2 * i + 1] = f.y;
      }
    }
  }
  return all_finite;
}

// The full-tile row steps for finite fp16 sums: the rows' maxima of x = S + shift (quad-reduced).
__device__ __forceinline__ void HalfSumSteps(const float (&acc)[kSAcc], float (&mx)[2], const float (&shift)[2][2]) {
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      m = fmaxf(m, fmaxf(acc[4 * j + 2 * rr], acc[4 * j + 2 * rr + 1]) + shift[j / 8][rr]);
    }
    mx[rr] = QuadRowMax(m);
  }
}

// Issues [O | l] += P·[V | 1] over one tile and commits it as one group: P from registers; V
// through descriptor dv of the tile's first 16 keys (N-major: leading offset one 64-column panel,
// stride offset 8 keys), whose panel after the values holds ones, so columns D .. D + 7 of the
// product are the rows' sums of P: o[D / 2] = o[D / 2 + 1] is row g's, o[D / 2 + 2] = o[D / 2 + 3]
// row g + 8's (the rounded P summed in fp32 by the tensor cores, in the same instruction as O).
// Iteration 0 reads the virtual tile -1 (all ones) with P = 0.
template <int D, typename T>
__device__ __forceinline__ void PvProduct(float (&o)[D / 2 + 4], const uint32_t (&pf)[kNT][2], uint64_t dv) {
  WgmmaFence();
#pragma unroll
  for (int kk = 0; kk < kBN / 16; ++kk) {
    const uint32_t a[4] = {pf[2 * kk][0], pf[2 * kk][1], pf[2 * kk + 1][0], pf[2 * kk + 1][1]};
    WgmmaRS<D + 8, T, 1>(o, a, DescAdvance(dv, kk * 16 * 128), 1);
  }
  WgmmaCommit();
}

// The removed shifts c·(q·kbar) of this thread's rows (g, g + 8) for both 64-key halves from the
// S product's shift columns (kBN .. kBN + 7): column kBN + 2tq + e of row g + 8rr is sacc[2rr + e];
// half h's hi, mid, lo are columns 4h .. 4h + 2 (column 4h + 3 is zero), so lanes tq = 2h, 2h + 1
// hold them: (hi + mid) + (lo + 0), then the other half's sum from the lane two along.
__device__ __forceinline__ void TensorShifts(float (&shift)[2][2], const float* sacc, int tq, float scale) {
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float mine = sacc[2 * rr] + sacc[2 * rr + 1];
    mine += __shfl_xor_sync(0xffffffffu, mine, 1);
    const float other = __shfl_xor_sync(0xffffffffu, mine, 2);
    const bool first_half = tq < 2;
    shift[0][rr] = scale * (first_half ? mine : other);
    shift[1][rr] = scale * (first_half ? other : mine);
  }
}

// What a consumer thread carries from tile to tile: O, the softmax statistics and P of the
// previous tile (the A operand of its P·V product).
template <int D>
struct ConsumerState {
  float o[D / 2 + 4];  // O, then the rows' sums of P (see PvProduct)
  float m_run[2];
  uint32_t pf[kNT][2];
};

// A consumer thread's constants: shared-memory addresses, its place, the key geometry.
struct ConsumerCtx {
  uint32_t sQa, sK, sV;
  uint64_t desc_q, desc_k, desc_v;  // this warpgroup's Q rows, stage 0 of K' and of V
  int cw, lane, tq, r0, n, my_turn, other_turn;
  int row_pos[2];
  Geometry geo;
};

// One tile i: wait for its K' (and the previous tile's V), then in this warpgroup's turn S = Q·K'ᵀ
// with the removed shifts' columns (TensorShifts) and the previous tile's O += P·V, the row steps
// while P·V runs, the softmax. Tile 0 has no previous tile: its P·V product multiplies P = 0 by
// the virtual tile -1 of ones (the MMAs stay unconditional: a wgmma on a path the compiler cannot
// prove uniform is serialised).
template <int D, typename T, bool kHalfAcc>
__device__ __forceinline__ void ConsumeTile(const FwdParams& p, const TileRange& rg, const Bars& bars,
                                            const ConsumerCtx& cx, ConsumerState<D>& st, int i) {
  using Plan = SmemPlan<D>;
  const int t = rg.t_begin + i, s = i % kStages, sp = (i + kStages - 1) % kStages;
  MbarWait(bars.full_k(s), static_cast<uint32_t>((i / kStages) & 1));
  if (i > 0) MbarWait(bars.full_v(sp), static_cast<uint32_t>(((i - 1) / kStages) & 1));
  FenceProxyAsync();  // the producer's cp.async writes, seen through the mbarriers, before wgmma reads
  const bool arrive_other = cx.cw == 0 || i + 1 < cx.n;
  float acc[kSAcc];  // the scores, then the shift columns
  [[maybe_unused]] uint32_t hs[kBN / 4];  // kHalfAcc: the fp16 sums
  NamedBarrierSync(cx.my_turn, 256);
  FenceRegs(st.o);
  WgmmaFence();
  const uint64_t dk = DescAdvance(cx.desc_k, s * Plan::kKTileBytes);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {  // k-step kk: panel kk / 4, 32 bytes per 16 columns
    const uint32_t off = (kk & 3) * 32;
    const uint64_t dq = DescAdvance(cx.desc_q, (kk >> 2) * kBM * 128 + off);
    const uint64_t dkk = DescAdvance(dk, (kk >> 2) * kKRows * 128 + off);
    if constexpr (kHalfAcc) {  // fp16 sums of the scores; the shift columns keep fp32 sums
      WgmmaSSHalfAcc<kBN>(hs, dq, dkk, kk > 0 ? 1 : 0);
      WgmmaSS<kShiftRows, T>(&acc[kBN / 2], dq, DescAdvance(dkk, kBN * 128), kk > 0 ? 1 : 0);
    } else {
      WgmmaSS<kKRows, T>(acc, dq, dkk, kk > 0 ? 1 : 0);
    }
  }
  WgmmaCommit();
  PvProduct<D, T>(st.o, st.pf, DescAdvance(cx.desc_v, sp * Plan::kVTileBytes));
  if (arrive_other) NamedBarrierArrive(cx.other_turn, 256);
  WgmmaWait<1>();  // S done; the P·V product may still run
  bool half_sums = false;  // kHalfAcc: acc holds every row's finite fp16 sums
  if constexpr (kHalfAcc) {
    FenceRegs(hs);
    FenceRegs(acc);
    half_sums = HalfSums<D>(acc, hs, cx.sQa, cx.sK + s * Plan::kKTileBytes, cx.r0 - cx.lane / 4, cx.lane);
  } else {
    FenceRegs(acc);
  }
  float shift[2][2];  // the removed shift of each 64-key half's PASA block, [half][row]
  TensorShifts(shift, &acc[kBN / 2], cx.tq, p.scale);
  __syncwarp();
  MbarArrive(bars.empty_k(s));  // every consumer thread (the stage's reads are all MMAs but the fallback's)

  const bool full = static_cast<int64_t>(t) * kBN >= rg.a_lo && static_cast<int64_t>(t + 1) * kBN <= rg.a_hi;
  float mx[2];
  if (kHalfAcc && half_sums && full) HalfSumSteps(acc, mx, shift);
  else RowSteps<T>(acc, mx, shift, full, t, rg.valid, cx.geo, cx.row_pos, cx.tq);
  WgmmaWait<0>();  // P·V done before O is rescaled and pf overwritten
  FenceRegs(st.o);
  __syncwarp();
  if (cx.lane == 0) MbarArrive(bars.empty_v(sp));  // tile i - 1's V (i = 0: the virtual tile -1)
  Softmax<D, T>(st.pf, acc, shift, mx, st.m_run, st.o);
}

// Consumer warpgroup cw (0 or 1): CTA rows 64·cw .. 64·cw + 63. cw is a template parameter so
// that the compiler knows the warpgroup's descriptors are uniform: from threadIdx, its Q
// descriptor was formed per k-step in vector registers and moved to uniform ones (six
// instructions per S MMA).
template <int D, typename T, bool kHalfAcc, int cw>
__device__ __forceinline__ void Consume(const FwdParams& p, const TileRange& rg, uint8_t* base, const Bars& bars) {
  using Plan = SmemPlan<D>;
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int CH = D / 8;
  const int tid = threadIdx.x - 128 * (cw + 1);
  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int b = blockIdx.z, hkv = rg.unit;
  uint8_t* sQ = base;
  const uint32_t sQa = SmemAddr(sQ);

  {  // this warpgroup's Q rows (packed rows R = i·G + g; rows past R1 zero-filled)
    const T* qbase = static_cast<const T*>(p.q) + b * p.q_sb;
    for (int idx = tid; idx < 64 * CH; idx += 128) {
      const int r = 64 * cw + idx / CH, c = idx % CH;
      const int R = rg.R0 + r;
      const bool ok = R < rg.R1;
      const T* src = qbase;
      if (ok) {
        const int i = R / p.group, gh = R % p.group;
        src = qbase + (static_cast<int64_t>(hkv) * p.group + gh) * p.q_sh + static_cast<int64_t>(i) * p.q_ss + c * 8;
      }
      CpAsync16(sQa + SwizzledOffset(r, c, kBM), src, ok ? 16 : 0);
    }
    CpAsyncCommit();
    CpAsyncWaitAll();
    FenceProxyAsync();
    NamedBarrierSync(1 + cw, 128);
  }

  ConsumerState<D> st;
#pragma unroll
  for (int i = 0; i < D / 2 + 4; ++i) st.o[i] = 0.f;
  st.m_run[0] = st.m_run[1] = -INFINITY;
#pragma unroll
  for (int j = 0; j < kNT; ++j) st.pf[j][0] = st.pf[j][1] = 0u;
  ConsumerCtx cx;
  cx.sQa = sQa;
  cx.sK = SmemAddr(base + Plan::kOffK);
  cx.sV = SmemAddr(base + Plan::kOffV);
  cx.desc_q = Desc(sQa + 64 * cw * 128, 16, 1024);
  cx.desc_k = Desc(cx.sK, 16, 1024);
  cx.desc_v = Desc(cx.sV, kPanel, 1024);
  cx.cw = cw;
  cx.lane = lane;
  cx.tq = tq;
  cx.r0 = 64 * cw + 16 * warp + g;  // this thread's first CTA row
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) cx.row_pos[rr] = static_cast<int>((rg.R0 + cx.r0 + rr * 8) / p.group + rg.off);
  cx.geo = Geometry{rg.causal, p.left, p.right};
  cx.n = rg.t_end - rg.t_begin;
  const int r0 = cx.r0;

  // Ping-pong: the two consumer warpgroups take turns to issue their MMAs (named barriers 3 and
  // 4, 256 threads: one warpgroup waits, the other arrives), so one's row steps run while the
  // tensor cores work through the other's products. Warpgroup 0 goes first.
  cx.my_turn = 3 + cw;
  cx.other_turn = 4 - cw;
  if (cw == 1) NamedBarrierArrive(3, 256);
  const int n = cx.n;
  for (int i = 0; i < n; ++i) ConsumeTile<D, T, kHalfAcc>(p, rg, bars, cx, st, i);
  if (n > 0) {  // the last tile's P·V
    const int sl = (n - 1) % kStages;
    MbarWait(bars.full_v(sl), static_cast<uint32_t>(((n - 1) / kStages) & 1));
    FenceProxyAsync();
    FenceRegs(st.o);
    PvProduct<D, T>(st.o, st.pf, DescAdvance(cx.desc_v, sl * Plan::kVTileBytes));
    WgmmaWait<0>();
    FenceRegs(st.o);
  }

  // Epilogue: y = O / l in the half type (a row that attended nothing: 0).
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const float l = st.o[D / 2 + 2 * rr];
    const int R = rg.R0 + r0 + rr * 8;
    if (R >= rg.R1) continue;
    const float inv = l != 0.f ? 1.0f / l : 0.f;
    const int i = R / p.group, gh = R % p.group;
    T* y = static_cast<T*>(p.y) + b * p.y_sb + (static_cast<int64_t>(hkv) * p.group + gh) * p.y_sh +
           static_cast<int64_t>(i) * p.y_ss;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
      *reinterpret_cast<T2*>(y + j * 8 + tq * 2) = Tr::Pack(st.o[4 * j + 2 * rr] * inv, st.o[4 * j + 2 * rr + 1] * inv);
  }
}

// kHalfAcc (fp16 only): S accumulates in fp16 (PASA_ONNX_CUDA_SCORE_ACCUM=half, HalfSums).
template <int D, typename T, bool kHalfAcc>
__global__ void __launch_bounds__(kThreads, 1) FlashFwdSm90Kernel(const __grid_constant__ FwdParams p) {
  static_assert(!kHalfAcc || std::is_same<T, __half>::value, "fp16 accumulators: fp16 inputs");
  using Plan = SmemPlan<D>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  // Launched with programmatic stream serialisation (Launch): wait here for the pre-passes before
  // anything is read (a no-op without a preceding grid).
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  bool skip;
  const TileRange rg = MakeRange(p, &skip);
  if (skip) return;  // the whole CTA: a general mask plane, run by the kExt kernel
  const Bars bars{SmemAddr(base + Plan::kOffBar)};
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      MbarInit(bars.full_k(s), 256);  // every producer thread: once its copies landed, once for kbar
      MbarInit(bars.full_v(s), 128);
      MbarInit(bars.empty_k(s), 256);  // every consumer thread, once its MMAs (and fallback loads) read the stage
      MbarInit(bars.empty_v(s), 8);
    }
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    Produce<D, T>(p, rg, base, bars);
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
    if (wg == 1) Consume<D, T, kHalfAcc, 0>(p, rg, base, bars);
    else Consume<D, T, kHalfAcc, 1>(p, rg, base, bars);
  }
}

template <int D, typename T, bool kHalfAcc = false>
std::string Launch(const FwdParams& fp, int units, int batch, cudaStream_t stream) {
  const int smem = SmemPlan<D>::kAlloc;
  cudaError_t e = AllowDynamicSmem<FlashFwdSm90Kernel<D, T, kHalfAcc>>(smem);
  if (e != cudaSuccess) return std::string("flash sm90: cudaFuncSetAttribute: ") + cudaGetErrorString(e);
  const unsigned q_tiles = static_cast<unsigned>((fp.rows + kBM - 1) / kBM);
  // Programmatic dependent launch (D = 64, see PASA_SM90_PDL): the CTAs are placed while the
  // shift pre-pass finishes, not after it (the kernel waits for it with griddepcontrol.wait).
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(q_tiles, static_cast<unsigned>(units), static_cast<unsigned>(batch));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = PASA_SM90_PDL && D == 64 ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  e = cudaLaunchKernelEx(&cfg, FlashFwdSm90Kernel<D, T, kHalfAcc>, fp);
  if (e != cudaSuccess) return std::string("flash sm90: launch: ") + cudaGetErrorString(e);
  e = cudaGetLastError();
  if (e != cudaSuccess) return std::string("flash sm90: launch: ") + cudaGetErrorString(e);
  return "";
}

}  // namespace

bool Sm90Covers(int head_dim, bool softcap, bool classified_mask, bool mask, int splits, int64_t rows) {
  if ((head_dim != 64 && head_dim != 128) || softcap) return false;
  if (mask) return classified_mask && splits == 1;  // the kExt launch beside it must not split
  return splits == 1 || rows >= 2 * kBM;             // two row tiles per unit outrun the split path
}

std::string LaunchSm90(const FwdParams& fp, int head_dim, bool bf16, bool half_acc, int units, int batch,
                       cudaStream_t stream) {
  if (half_acc && !bf16) {
    if (head_dim == 64) return Launch<64, __half, true>(fp, units, batch, stream);
    if (head_dim == 128) return Launch<128, __half, true>(fp, units, batch, stream);
  }
  if (head_dim == 64) return bf16 ? Launch<64, __nv_bfloat16>(fp, units, batch, stream) : Launch<64, __half>(fp, units, batch, stream);
  if (head_dim == 128)
    return bf16 ? Launch<128, __nv_bfloat16>(fp, units, batch, stream) : Launch<128, __half>(fp, units, batch, stream);
  return "flash sm90: unsupported head size " + std::to_string(head_dim);
}

}  // namespace pasa::cuda::flash

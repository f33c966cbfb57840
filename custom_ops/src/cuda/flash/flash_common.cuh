// Pieces shared by the flash kernels (flash_fwd.cu: mma.sync, sm_80+; flash_sm90.cu: wgmma,
// sm_90a): the main kernels' parameter block and the per-score steps whose numerics both follow.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace pasa::cuda::flash {

constexpr float kLog2e = 1.4426950408889634f;

struct FwdParams {
  const void* q;
  const void* v;
  void* y;
  const void* kp;     // K' [B][Hkv][kv_pad][D], half type
  const float* kbar;  // [B][Hkv][nblk][D]
  float* part_o;      // [B][Hkv][splits][rows][D] (splits > 1)
  float* part_ml;     // [B][Hkv][splits][rows][2]
  const int64_t* nonpad;
  int64_t q_sb, q_sh, q_ss, v_sb, v_sh, v_ss, y_sb, y_sh, y_ss;
  int64_t past_len;
  int hkv, group, q_len, kv_len, kv_pad, nblk, blk_tiles, rows, splits;
  int causal, left, right;
  float scale;
  // Masks and softcap (read by the kExt kernels only). mask: [B][Hq][Sq][mask_len] through the
  // element strides m_* (bool bytes, or additive values of type T); mvalid: [.][.][kv_len] bytes,
  // key r of (batch b, unit u) at b·mv_sb + u·mv_sh + r: 1 when some query row of the unit's mask
  // plane attends it (MaskKeysKernel). A unit is a kv head, or a query head (kv_div = G) when the
  // mask varies over the heads.
  const void* mask;
  const uint8_t* mvalid;
  int64_t m_sb, m_sh, m_ss, mv_sb, mv_sh;
  int mask_kind, mask_len, kv_div;  // mask_kind: 0 none, 1 bool, 2 additive
  float softcap;                    // > 0: S = softcap·tanh(S / softcap)
  // Per mask plane [planes_b][m_planes_h], from MaskClassKernel (null: not classified): {0, 0}
  // a general mask; {1, n} every row attends exactly keys [0, n) with value 0 (a padding mask);
  // {2, n} row i attends exactly keys [0, min(i + past_len + 1, n)) (causal + padding).
  const int2* mcls;
  int m_planes_h;
  int skip_classified;  // kExt on Hopper: planes of class 1 or 2 are the sm90 kernel's (return)
  int units_first;      // CTA order: the units' heavy tiles first, across units (CtaTileUnit)
};

// Reductions over the quad of lanes (lane ^ 1, lane ^ 2) that holds one row of an m16n8
// accumulator: every lane of the quad gets the row's value. The sum adds (x0 + x1) + (x2 + x3),
// the order the emulations reproduce.
__device__ __forceinline__ float QuadRowSum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float QuadRowMax(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ int QuadRowOr(int x) {
  x |= __shfl_xor_sync(0xffffffffu, x, 1);
  return x | __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ int64_t Max64(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t Min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ int ValidLen(const int64_t* nonpad, int b, int kv_len) {
  if (nonpad == nullptr) return kv_len;
  const int64_t v = nonpad[b];
  return static_cast<int>(v < 0 ? 0 : (v > kv_len ? kv_len : v));
}

// Key range [lo, hi) a query at absolute position `pos` may attend (before padding).
struct Geometry {
  int causal, left, right;
  __device__ __forceinline__ bool Allowed(int pos, int key) const {
    const int diff = pos - key;
    if (causal && diff < 0) return false;
    if (left >= 0 && diff > left) return false;
    if (right >= 0 && -diff > right) return false;
    return true;
  }
};

// The CTA's packed rows [R0, R1), the valid keys of its batch row, the position offset of its
// queries (absolute position of packed row R: R / G + off) and its key tiles.
struct TileRange {
  int R0, R1, valid;
  int64_t off;
  int64_t a_lo, a_hi;  // keys every row of the CTA attends: [a_lo, a_hi)
  int t_begin, t_end;  // key tiles of this CTA (and split)
  int causal;          // the causality KeyTiles was given
  int unit;            // the kv unit (sm90: from the block's number, see flash_sm90.cu's MakeRange)
};

// Whether any thread of the warp holds a non-finite value among its N packed fp16 pairs at h
// (fp16 score sums that overflowed): x·0 + acc stays ±0 for finite x and turns NaN for ±inf or
// NaN, one HFMA2 per two values.
template <int N>
__device__ __forceinline__ bool WarpAnyNonFiniteHalf2(const uint32_t* h) {
  const __half2 zero = __float2half2_rn(0.f);
  __half2 acc = zero;
#pragma unroll
  for (int i = 0; i < N; ++i) acc = __hfma2(*reinterpret_cast<const __half2*>(&h[i]), zero, acc);
  return __any_sync(0xffffffffu, __hisnan(__low2half(acc)) || __hisnan(__high2half(acc)));
}

// The CTA's query tile (heavy, late causal tiles first) and kv unit, of a grid (query tiles,
// units, ...). With p.units_first, block (x, y) is number L = x + gridDim.x·y and the units take
// consecutive numbers per query tile, from the last tile down: the block scheduler starts every
// unit's longest causal tiles in the first wave and the short ones fill in behind them. Otherwise
// tile x of unit y (heavy first within a unit; neighbouring blocks share the unit's K' and V in
// L2). Measured on the H200 (sm90 kernel time, docs/benchmarks-cuda.md): units first took
// H32/D128 causal 1k from 78 to 66 us and 4k from 498 to 461, H12/D64 causal 4k from 165 to 140,
// but made 16k keys 2-4 % slower (causal or not), hence only for causal problems of at most 4096
// packed rows. (The mma.sync kernel takes the same order; not timed there.)
__device__ __forceinline__ int2 CtaTileUnit(const FwdParams& p) {
  if (!p.units_first) return make_int2(static_cast<int>(gridDim.x - 1 - blockIdx.x), static_cast<int>(blockIdx.y));
  const int64_t L = blockIdx.x + static_cast<int64_t>(gridDim.x) * blockIdx.y;
  return make_int2(static_cast<int>(gridDim.x - 1 - L / gridDim.y), static_cast<int>(L % gridDim.y));
}

// The CTA's key tiles of kTile keys [t_begin, t_end) (kSplit: of split `split` of `splits`) and
// the keys every row attends [a_lo, a_hi), from the rows [R0, R1), valid and off already in tr,
// with the causality `causal` (the problem's, or a classified mask plane's).
template <int kTile, bool kSplit>
__device__ __forceinline__ void KeyTiles(const FwdParams& p, TileRange& tr, int split, int splits, int causal) {
  const int R0 = tr.R0, R1 = tr.R1, valid = tr.valid;
  const int64_t off = tr.off;
  const int64_t pos_first = R0 / p.group + off, pos_last = (R1 - 1) / p.group + off;
  // Keys any row of the CTA may attend: [k_lo, k_hi); keys every row attends: [a_lo, a_hi).
  int64_t k_lo = 0, k_hi = valid, a_lo = 0, a_hi = valid;
  if (p.left >= 0) {
    k_lo = Max64(0, pos_first - p.left);
    a_lo = Max64(0, pos_last - p.left);
  }
  if (causal) {
    k_hi = Min64(k_hi, pos_last + 1);
    a_hi = Min64(a_hi, pos_first + 1);
  }
  if (p.right >= 0) {
    k_hi = Min64(k_hi, pos_last + p.right + 1);
    a_hi = Min64(a_hi, pos_first + p.right + 1);
  }
  int t_begin = 0, t_end = 0;
  if (k_hi > k_lo) {
    t_begin = static_cast<int>(k_lo / kTile);
    t_end = static_cast<int>((k_hi + kTile - 1) / kTile);
  }
  if constexpr (kSplit) {
    const int nt = t_end - t_begin, per = (nt + splits - 1) / splits;
    const int s_begin = min(t_end, t_begin + split * per);
    t_end = min(t_end, s_begin + per);
    t_begin = s_begin;
  }
  tr.a_lo = a_lo;
  tr.a_hi = a_hi;
  tr.t_begin = t_begin;
  tr.t_end = t_end;
  tr.causal = causal;
}

// Round an fp32 score to the half type's precision, round-to-nearest-even on the bit pattern
// (integer ALU, not the conversion unit): exact for bf16; for fp16 exact in the normal range
// (|s| < 2^-14 keeps 11 significant bits instead of fp16's subnormal grid; |s| >= 65520 never
// reaches here: that row uses its fp32 scores).
template <typename T>
__device__ __forceinline__ float RoundScore(float s);
template <>
__device__ __forceinline__ float RoundScore<__half>(float s) {
  const uint32_t u = __float_as_uint(s);
  return __uint_as_float((u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u);
}
template <>
__device__ __forceinline__ float RoundScore<__nv_bfloat16>(float s) {
  const uint32_t u = __float_as_uint(s);
  return __uint_as_float((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}
// The half type's lowest finite value (fp16 −65504, bf16 −3.39e38): transformers' finfo(dtype).min,
// the value its exports write for masked keys.
template <typename T>
__device__ __forceinline__ float LowestFinite() {
  return std::is_same<T, __half>::value ? -65504.f : __uint_as_float(0xFF7F0000u);
}
// |s| at or above this rounds to inf in the half type.
template <typename T>
__device__ __forceinline__ float OverflowThreshold() {
  return std::is_same<T, __half>::value ? 65520.f : __uint_as_float(0x7F7F8000u);
}

}  // namespace pasa::cuda::flash

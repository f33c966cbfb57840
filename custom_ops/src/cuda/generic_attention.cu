// The generic CUDA kernel of PasaAttention (see generic_attention.cuh). Three launches per call,
// all on the caller's stream, scratch from the caller's workspace:
//   1. (masked problems only) key validity: a key enters the PASA block mean when it lies before
//      the batch's valid length and at least one query row of its mask plane attends it;
//   2. per key block: α·mean over the valid keys (float32) and 1/count;
//   3. one CTA per (batch, query-head group, query tile): per key block, K' = c·(K − α·mean)
//      in float32 (rounded to the half type in `half` and `paper` mode), scores in float32,
//      PASA's global recovery and the online softmax with float32 statistics, P rounded to the
//      half type, O in float32 (the `paper` mode rounds every stored value instead).
// The code mirrors pasa_onnx/numerics_gpu.py step for step.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "cuda/generic_attention.cuh"

namespace pasa {
namespace cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 32;     // keys per shared-memory chunk (one per lane)
constexpr int kMaxRows = 32;   // query rows per CTA (8 per warp)
constexpr int kRowsPerWarp = kMaxRows / kWarps;
constexpr int kColGroup = 128;  // value columns per P·V pass (4 per lane)
// Half mode: a row's scores are rounded to the half type per tile of 64 keys (aligned to absolute
// key positions) unless one of its attended scores there would overflow (the flash kernels' tile).
constexpr int kOverflowTile = 64;

enum Prec : int { kPrecHalf = 0, kPrecPaper = 1, kPrecFloat = 2 };
enum RoundType : int { kRoundNone = 0, kRoundF16 = 1, kRoundBF16 = 2 };

struct Args {
  const void* q;
  const void* k;
  const void* v;
  void* y;
  int64_t qs[4], ks[4], vs[4], ys[4];
  const void* mask;
  int64_t ms[4];
  int mask_kind;  // 0 none, 1 bool, 2 additive
  int mask_type;  // additive: 0 f32, 1 f16, 2 bf16
  int64_t mask_len;
  const int64_t* nonpad;
  int64_t past_len;
  const uint8_t* key_valid;  // [B][U][Skv] or null (no mask)
  float* amean;              // [B][U][nblk][Dp]: α·mean of the block's valid keys
  float* inv_count;          // [B][U][nblk]: 1/count, 0 when the block has no valid key
  int B, Hq, Hkv, U, G, Sq, Skv, D, Dv, Dp, nblk, block_kv;
  int unit_per_qhead;  // 1: one unit per query head (the mask varies over heads); 0: per kv head
  float scale, softcap, alpha, beta;
  float overflow_at;  // |S| at or above this rounds to inf in the half type
  int causal;
  int64_t left, right;
  int prec;
  int rt;        // the half type that rounding goes to
  int rows_cap;  // R: rows per CTA (multiple of 4, <= 32)
  int hp, qr;    // query heads and query rows per CTA
  int kst;       // row stride of the K' chunk in shared memory
  unsigned* status;  // paper mode: bit 0 set when an output is not finite (else null)
};

__host__ __device__ __forceinline__ int64_t MinI64(int64_t x, int64_t y) { return x < y ? x : y; }

__device__ __forceinline__ float Round(float x, int rt) {
  if (rt == kRoundF16) return __half2float(__float2half_rn(x));
  if (rt == kRoundBF16) return __bfloat162float(__float2bfloat16_rn(x));
  return x;
}

// Rounds an operand of a product to the half type, keeping float32 where that would overflow.
__device__ __forceinline__ float RoundOperand(float x, int rt) {
  const float r = Round(x, rt);
  return (isinf(r) && !isinf(x)) ? x : r;
}

template <typename T>
__device__ __forceinline__ float Load(const void* base, int64_t i);
template <>
__device__ __forceinline__ float Load<float>(const void* base, int64_t i) {
  return static_cast<const float*>(base)[i];
}
template <>
__device__ __forceinline__ float Load<__half>(const void* base, int64_t i) {
  return __half2float(static_cast<const __half*>(base)[i]);
}
template <>
__device__ __forceinline__ float Load<__nv_bfloat16>(const void* base, int64_t i) {
  return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
}

template <typename T>
__device__ __forceinline__ void Store(void* base, int64_t i, float x);
template <>
__device__ __forceinline__ void Store<float>(void* base, int64_t i, float x) {
  static_cast<float*>(base)[i] = x;
}
template <>
__device__ __forceinline__ void Store<__half>(void* base, int64_t i, float x) {
  static_cast<__half*>(base)[i] = __float2half_rn(x);
}
template <>
__device__ __forceinline__ void Store<__nv_bfloat16>(void* base, int64_t i, float x) {
  static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(x);
}

__device__ __forceinline__ float LoadMaskValue(const Args& a, int64_t i) {
  if (a.mask_type == 1) return Load<__half>(a.mask, i);
  if (a.mask_type == 2) return Load<__nv_bfloat16>(a.mask, i);
  return Load<float>(a.mask, i);
}

__device__ __forceinline__ int64_t ValidLen(const Args& a, int b) {
  if (a.nonpad == nullptr) return a.Skv;
  const int64_t n = a.nonpad[b];
  return n < 0 ? 0 : (n > a.Skv ? a.Skv : n);
}

__device__ __forceinline__ int64_t QueryOffset(const Args& a, int b) {
  return a.nonpad == nullptr ? a.past_len : ValidLen(a, b) - a.Sq;
}

// Keys [lo, hi) that absolute query position pos may attend, before masks (the CPU's Range).
__device__ __forceinline__ void KeyRange(const Args& a, int64_t pos, int64_t valid_len, int64_t* lo,
                                         int64_t* hi) {
  int64_t l = a.left >= 0 ? pos - a.left : 0;
  if (l < 0) l = 0;
  int64_t h = valid_len < a.Skv ? valid_len : a.Skv;
  if (a.causal && pos + 1 < h) h = pos + 1;
  if (a.right >= 0 && pos + a.right + 1 < h) h = pos + a.right + 1;
  *lo = l;
  *hi = h;
}

// Whether (b, query head h, row i) attends key r by the mask alone; *add gets the additive term.
__device__ __forceinline__ bool MaskAttends(const Args& a, int b, int h, int64_t i, int64_t r, float* add) {
  *add = 0.0f;
  if (a.mask_kind == 0) return true;
  if (r >= a.mask_len) return false;
  const int64_t idx = b * a.ms[0] + h * a.ms[1] + i * a.ms[2] + r * a.ms[3];
  if (a.mask_kind == 1) return static_cast<const uint8_t*>(a.mask)[idx] != 0;
  const float v = LoadMaskValue(a, idx);
  *add = v;
  return v != -INFINITY;
}

__device__ __forceinline__ bool KeyValid(const Args& a, int b, int u, int64_t r, int64_t valid_len) {
  if (r >= valid_len) return false;
  return a.key_valid == nullptr || a.key_valid[(static_cast<int64_t>(b) * a.U + u) * a.Skv + r] != 0;
}

__device__ __forceinline__ float WarpSum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Max that propagates NaN (fmaxf would drop it).
__device__ __forceinline__ float NanMax(float x, float y) {
  if (isnan(x) || isnan(y)) return NAN;
  return x > y ? x : y;
}

__device__ __forceinline__ float WarpNanMax(float x) {
  for (int o = 16; o > 0; o >>= 1) x = NanMax(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// ---- 1. key validity ---------------------------------------------------------------------------
// grid (ceil(Skv/128), U, B): key r of (b, unit u) is valid when it is before the valid length and
// some query row of the unit's mask plane attends it.
__global__ void __launch_bounds__(kThreads) KeyValidKernel(Args a, uint8_t* out) {
  const int b = blockIdx.z, u = blockIdx.y;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (r >= a.Skv) return;
  const int h = a.unit_per_qhead ? u : 0;  // per-kv-head units: the mask broadcasts over heads
  bool valid = false;
  if (r < ValidLen(a, b) && r < a.mask_len) {
    const int64_t rows = a.ms[2] == 0 ? 1 : a.Sq;  // a mask broadcast over the rows: one row
    for (int64_t i = 0; i < rows && !valid; ++i) {
      float add;
      valid = MaskAttends(a, b, h, i, r, &add);
    }
  }
  out[(static_cast<int64_t>(b) * a.U + u) * a.Skv + r] = valid ? 1 : 0;
}

// ---- 2. block means ----------------------------------------------------------------------------
// grid (nblk, U, B): α·mean over the block's valid keys (float32) and 1/count.
template <typename T>
__global__ void __launch_bounds__(kThreads) BlockMeanKernel(Args a) {
  const int blk = blockIdx.x, u = blockIdx.y, b = blockIdx.z;
  const int kvh = a.unit_per_qhead ? u / a.G : u;
  const int64_t r0 = static_cast<int64_t>(blk) * a.block_kv;
  const int n = static_cast<int>(MinI64(a.block_kv, a.Skv - r0));
  const int64_t valid_len = ValidLen(a, b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __shared__ float part[kWarps][32];
  __shared__ int count_s;
  if (threadIdx.x == 0) count_s = 0;
  __syncthreads();
  int count = 0;
  for (int r = threadIdx.x; r < n; r += kThreads) count += KeyValid(a, b, u, r0 + r, valid_len);
  if (count) atomicAdd(&count_s, count);
  __syncthreads();
  const int total = count_s;
  const int64_t slot = (static_cast<int64_t>(b) * a.U + u) * a.nblk + blk;
  const float inv = total > 0 ? 1.0f / static_cast<float>(total) : 0.0f;
  if (threadIdx.x == 0) a.inv_count[slot] = inv;
  float* mean = a.amean + slot * a.Dp;
  const int64_t kbase = b * a.ks[0] + kvh * a.ks[1];
  for (int c0 = 0; c0 < a.Dp; c0 += 32) {
    const int d = c0 + lane;
    float sum = 0.0f;
    if (total > 0 && d < a.D) {
#pragma unroll 8
      for (int r = warp; r < n; r += kWarps)
        if (KeyValid(a, b, u, r0 + r, valid_len)) sum += Load<T>(a.k, kbase + (r0 + r) * a.ks[2] + d * a.ks[3]);
    }
    part[warp][lane] = sum;
    __syncthreads();
    if (warp == 0 && d < a.Dp) {
      const float s = (part[0][lane] + part[1][lane]) + (part[2][lane] + part[3][lane]);
      mean[d] = d < a.D ? a.alpha * (s * inv) : 0.0f;
    }
    __syncthreads();
  }
}

// ---- 3. attention ------------------------------------------------------------------------------
// The shared-memory carve-up and the constants of one CTA (see AttendKernel).
struct Tile {
  float *q_s, *kv_s, *s_s, *o_s, *mean_s, *m_s, *l_s, *abar_s, *nb_s, *corr_s;
  int *upd_s, *valid_s, *ovf_s;
  int R, NB, Dp, Dv, kst, n_tiles;
  int b, h0, q_rows, rows, u, kvh, warp, lane, rt;
  int64_t i0, valid_len, offset, kbase, vbase;
  float c;
  bool half_mode, paper, direct;
};

// Every member of the Tile as a local of the same name (the pieces below read as one kernel).
#define PASA_TILE_LOCALS(t)                                                                     \
  [[maybe_unused]] const auto q_s = (t).q_s; \
  [[maybe_unused]] const auto kv_s = (t).kv_s; \
  [[maybe_unused]] const auto s_s = (t).s_s; \
  [[maybe_unused]] const auto o_s = (t).o_s; \
  [[maybe_unused]] const auto mean_s = (t).mean_s; \
  [[maybe_unused]] const auto m_s = (t).m_s; \
  [[maybe_unused]] const auto l_s = (t).l_s; \
  [[maybe_unused]] const auto abar_s = (t).abar_s; \
  [[maybe_unused]] const auto nb_s = (t).nb_s; \
  [[maybe_unused]] const auto corr_s = (t).corr_s; \
  [[maybe_unused]] const auto upd_s = (t).upd_s; \
  [[maybe_unused]] const auto valid_s = (t).valid_s; \
  [[maybe_unused]] const auto ovf_s = (t).ovf_s; \
  [[maybe_unused]] const auto R = (t).R; \
  [[maybe_unused]] const auto NB = (t).NB; \
  [[maybe_unused]] const auto Dp = (t).Dp; \
  [[maybe_unused]] const auto Dv = (t).Dv; \
  [[maybe_unused]] const auto kst = (t).kst; \
  [[maybe_unused]] const auto n_tiles = (t).n_tiles; \
  [[maybe_unused]] const auto b = (t).b; \
  [[maybe_unused]] const auto h0 = (t).h0; \
  [[maybe_unused]] const auto q_rows = (t).q_rows; \
  [[maybe_unused]] const auto rows = (t).rows; \
  [[maybe_unused]] const auto u = (t).u; \
  [[maybe_unused]] const auto kvh = (t).kvh; \
  [[maybe_unused]] const auto warp = (t).warp; \
  [[maybe_unused]] const auto lane = (t).lane; \
  [[maybe_unused]] const auto rt = (t).rt; \
  [[maybe_unused]] const auto i0 = (t).i0; \
  [[maybe_unused]] const auto valid_len = (t).valid_len; \
  [[maybe_unused]] const auto offset = (t).offset; \
  [[maybe_unused]] const auto kbase = (t).kbase; \
  [[maybe_unused]] const auto vbase = (t).vbase; \
  [[maybe_unused]] const auto c = (t).c; \
  [[maybe_unused]] const auto half_mode = (t).half_mode; \
  [[maybe_unused]] const auto paper = (t).paper; \
  [[maybe_unused]] const auto direct = (t).direct;

template <typename T>
__device__ __forceinline__ Tile MakeTile(const Args& a) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int R = a.rows_cap, NB = a.block_kv, Dp = a.Dp, Dv = a.Dv, kst = a.kst;
  float* q_s = smem;                                          // [R][Dp]
  float* kv_s = q_s + R * Dp;                                 // [kChunk][max(kst, kColGroup)]
  float* s_s = kv_s + kChunk * max(kst, kColGroup);           // [R][NB]
  float* o_s = s_s + R * NB;                                  // [R][Dv]
  float* mean_s = o_s + R * Dv;                               // [Dp]
  float* m_s = mean_s + Dp;                                   // [R] each
  float* l_s = m_s + R;
  float* abar_s = l_s + R;
  float* nb_s = abar_s + R;
  float* corr_s = nb_s + R;
  int* upd_s = reinterpret_cast<int*>(corr_s + R);            // [R]
  int* valid_s = upd_s + R;                                   // [NB]
  const int n_tiles = NB / kOverflowTile + 2;                 // 64-key tiles a block touches
  int* ovf_s = valid_s + NB;                                  // [R][n_tiles] (half mode)

  const int b = blockIdx.z;
  const int h0 = blockIdx.y * a.hp;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * a.qr;
  const int q_rows = static_cast<int>(MinI64(a.qr, a.Sq - i0));
  const int rows = a.hp * q_rows;
  const int u = a.unit_per_qhead ? h0 : h0 / a.G;
  const int kvh = h0 / a.G;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t valid_len = ValidLen(a, b);
  const int64_t offset = QueryOffset(a, b);
  const bool half_mode = a.prec == kPrecHalf, paper = a.prec == kPrecPaper;
  const int rt = a.rt;
  Tile t;
  t.q_s = q_s;
  t.kv_s = kv_s;
  t.s_s = s_s;
  t.o_s = o_s;
  t.mean_s = mean_s;
  t.m_s = m_s;
  t.l_s = l_s;
  t.abar_s = abar_s;
  t.nb_s = nb_s;
  t.corr_s = corr_s;
  t.upd_s = upd_s;
  t.valid_s = valid_s;
  t.ovf_s = ovf_s;
  t.R = R;
  t.NB = NB;
  t.Dp = Dp;
  t.Dv = Dv;
  t.kst = kst;
  t.n_tiles = n_tiles;
  t.b = b;
  t.h0 = h0;
  t.q_rows = q_rows;
  t.rows = rows;
  t.u = u;
  t.kvh = kvh;
  t.warp = warp;
  t.lane = lane;
  t.rt = rt;
  t.i0 = i0;
  t.valid_len = valid_len;
  t.offset = offset;
  t.half_mode = half_mode;
  t.paper = paper;
  t.direct = !paper;  // half and float mode recover the shift directly
  t.c = a.scale;
  t.kbase = b * a.ks[0] + kvh * a.ks[1];
  t.vbase = b * a.vs[0] + kvh * a.vs[1];
  return t;
}

// Queries and the row state of the tile.
template <typename T>
__device__ __forceinline__ void LoadQueries(const Args& a, const Tile& t) {
  PASA_TILE_LOCALS(t);
  // Queries (half mode: rounded to the half type, the tensor-core operand), zero-padded to Dp.
  for (int e = threadIdx.x; e < rows * Dp; e += kThreads) {
    const int ri = e / Dp, d = e % Dp;
    const int h = h0 + ri / q_rows;
    const int64_t i = i0 + ri % q_rows;
    float x = 0.0f;
    if (d < a.D) {
      x = Load<T>(a.q, b * a.qs[0] + h * a.qs[1] + i * a.qs[2] + d * a.qs[3]);
      if (half_mode) x = RoundOperand(x, rt);
    }
    q_s[e] = x;
  }
  for (int e = threadIdx.x; e < rows * Dv; e += kThreads) o_s[e] = 0.0f;
  for (int ri = threadIdx.x; ri < R; ri += kThreads) {
    m_s[ri] = -INFINITY;
    l_s[ri] = 0.0f;
    abar_s[ri] = 0.0f;
    nb_s[ri] = 0.0f;
  }
}

// S = Q·K'ᵀ of one key block into s_s.
template <typename T>
__device__ __forceinline__ void BlockScores(const Args& a, const Tile& t, int64_t r0, int n) {
  PASA_TILE_LOCALS(t);
  // Scores S = Q·K'ᵀ, chunk by chunk of 32 keys (lane = key, warp = rows w, w+4, ...).
  for (int c0 = 0; c0 < n; c0 += kChunk) {
    // Unrolled so that several global loads are in flight per thread (latency, not bandwidth,
    // bounds these tile loads).
#pragma unroll 8
    for (int e = threadIdx.x; e < kChunk * Dp; e += kThreads) {
      const int kk = e / Dp, d = e % Dp;
      float x = 0.0f;
      if (c0 + kk < n && d < a.D && valid_s[c0 + kk]) {
        x = c * (Load<T>(a.k, kbase + (r0 + c0 + kk) * a.ks[2] + d * a.ks[3]) - mean_s[d]);
        if (half_mode) x = RoundOperand(x, rt);
        else if (paper) x = Round(x, rt);
      }
      kv_s[kk * kst + d] = x;
    }
    __syncthreads();
    float acc[kRowsPerWarp];
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) acc[j] = 0.0f;
    const float* kr = kv_s + lane * kst;
    for (int d = 0; d < Dp; d += 4) {
      const float4 kf = *reinterpret_cast<const float4*>(kr + d);
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const int ri = warp + kWarps * j;
        if (ri < rows) {
          const float4 qf = *reinterpret_cast<const float4*>(q_s + ri * Dp + d);
          acc[j] = fmaf(qf.x, kf.x, acc[j]);
          acc[j] = fmaf(qf.y, kf.y, acc[j]);
          acc[j] = fmaf(qf.z, kf.z, acc[j]);
          acc[j] = fmaf(qf.w, kf.w, acc[j]);
        }
      }
    }
    if (c0 + lane < n) {
#pragma unroll
      for (int j = 0; j < kRowsPerWarp; ++j) {
        const int ri = warp + kWarps * j;
        if (ri < rows) s_s[ri * NB + c0 + lane] = acc[j];
      }
    }
    __syncthreads();
  }
}

// The row pipeline of half and float mode over one key block (S in s_s becomes P).
__device__ __forceinline__ void RowsDirect(const Args& a, const Tile& t, int64_t r0, int n) {
  PASA_TILE_LOCALS(t);
  // Row pipeline: one warp per row; lanes stride over the block's keys.
  for (int ri = warp; ri < rows && direct; ri += kWarps) {
    // Half mode, as the flash kernels: S rounded to the half type per 64-key tile (a tile
    // whose attended |S| would overflow keeps float32), the removed shift recovered directly,
    // x = (S + mask) + c·(q·α·mean), online softmax in float32, P rounded. Float mode is the
    // same pipeline with no rounding (rt = kRoundNone), as the CPU kernel's float mode.
    const int h = h0 + ri / q_rows;
    const int64_t i = i0 + ri % q_rows;
    const int64_t pos = i + offset;
    int64_t lo, hi;
    KeyRange(a, pos, valid_len, &lo, &hi);
    float* s = s_s + ri * NB;
    int* ovf = ovf_s + ri * n_tiles;
    const int tile0 = static_cast<int>(r0 / kOverflowTile);
    for (int t = lane; t < n_tiles; t += 32) ovf[t] = 0;
    float dot = 0.0f;
    for (int d = lane; d < Dp; d += 32) dot = fmaf(q_s[ri * Dp + d], mean_s[d], dot);
    const float shift = c * WarpSum(dot);
    __syncwarp();
    bool any = false;
    for (int k = lane; k < n; k += 32) {
      float x = s[k];
      if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
      const int64_t r = r0 + k;
      float add = 0.0f;
      const bool att = valid_s[k] && r >= lo && r < hi && MaskAttends(a, b, h, i, r, &add);
      any = any || att;
      if (att && !(fabsf(x) < a.overflow_at)) ovf[static_cast<int>(r / kOverflowTile) - tile0] = 1;
      s[k] = att ? x : -INFINITY;
    }
    any = __any_sync(0xffffffffu, any);
    __syncwarp();
    if (!any) {
      if (lane == 0) upd_s[ri] = 0;
      continue;
    }
    float mx = -INFINITY;
    for (int k = lane; k < n; k += 32) {
      float x = s[k];
      if (x != -INFINITY) {
        const int64_t r = r0 + k;
        float add = 0.0f;
        MaskAttends(a, b, h, i, r, &add);
        if (!ovf[static_cast<int>(r / kOverflowTile) - tile0]) x = Round(x, rt);
        x = (x + add) + shift;
      }
      s[k] = x;
      mx = NanMax(mx, x);
    }
    mx = WarpNanMax(mx);
    const float m_old = m_s[ri];
    const float m_new = NanMax(m_old, mx);
    if (m_new == -INFINITY) {
      if (lane == 0) upd_s[ri] = 0;
      continue;
    }
    const float corr = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
    float psum = 0.0f;
    for (int k = lane; k < n; k += 32) {
      const float x = s[k];
      const float p = x == -INFINITY ? 0.0f : Round(expf(x - m_new), rt);
      s[k] = p;
      psum += p;
    }
    psum = WarpSum(psum);
    __syncwarp();  // every lane has read m_s/l_s of this row before lane 0 writes them
    if (lane == 0) {
      l_s[ri] = l_s[ri] * corr + psum;
      m_s[ri] = m_new;
      corr_s[ri] = corr;
      upd_s[ri] = 1;
    }
  }
}

// The row pipeline of paper mode (the CPU's, with the authors' recovery).
__device__ __forceinline__ void RowsCpuPipeline(const Args& a, const Tile& t, int64_t r0, int n, float inv_count) {
  PASA_TILE_LOCALS(t);
  for (int ri = warp; ri < rows && paper; ri += kWarps) {
    const int h = h0 + ri / q_rows;
    const int64_t i = i0 + ri % q_rows;
    const int64_t pos = i + offset;
    int64_t lo, hi;
    KeyRange(a, pos, valid_len, &lo, &hi);
    float* s = s_s + ri * NB;
    // a) softcap (paper: S rounded), the block row sum over all keys (invalid keys score 0),
    //    and t = S + mask where the row attends the key, -inf elsewhere.
    float sum = 0.0f;
    bool any = false;
    for (int k = lane; k < n; k += 32) {
      float x = s[k];
      if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
      if (paper) x = Round(x, rt);
      sum += x;
      const int64_t r = r0 + k;
      float add = 0.0f;
      const bool att = valid_s[k] && r >= lo && r < hi && MaskAttends(a, b, h, i, r, &add);
      any = any || att;
      s[k] = att ? x + add : -INFINITY;
    }
    any = __any_sync(0xffffffffu, any);
    sum = WarpSum(sum);
    if (!any) {  // the row meets no key of this block: its state is unchanged
      if (lane == 0) upd_s[ri] = 0;
      continue;
    }
    // b) global recovery: offsets of this block and of the running state against the new ā.
    float mu = sum * inv_count;
    if (paper) mu = Round(mu, rt);
    const float abar_old = abar_s[ri];
    const float nb = nb_s[ri] + 1.0f;
    float abar_new = abar_old + (mu - abar_old) / nb;
    if (paper) abar_new = Round(abar_new, rt);
    float off_cur = a.beta * (mu - abar_new);
    float off_old = a.beta * (abar_old - abar_new);
    if (paper) {
      off_cur = Round(off_cur, rt);
      off_old = Round(off_old, rt);
    }
    float mx = -INFINITY;
    for (int k = lane; k < n; k += 32) {
      float x = s[k];
      if (x != -INFINITY) {
        x = x + off_cur;
        if (paper) x = Round(x, rt);
      }
      s[k] = x;
      mx = NanMax(mx, x);
    }
    mx = WarpNanMax(mx);
    float m_old = m_s[ri];
    if (m_old != -INFINITY) {
      m_old = m_old + off_old;
      if (paper) m_old = Round(m_old, rt);
    }
    const float m_new = NanMax(m_old, mx);
    __syncwarp();
    if (lane == 0) {
      abar_s[ri] = abar_new;
      nb_s[ri] = nb;
    }
    if (m_new == -INFINITY) {
      if (lane == 0) upd_s[ri] = 0;
      continue;
    }
    // c) probabilities (rounded to the half type unless float mode) and the running sum.
    float corr = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
    if (paper) corr = Round(corr, rt);
    float psum = 0.0f;
    for (int k = lane; k < n; k += 32) {
      const float x = s[k];
      float p = x == -INFINITY ? 0.0f : expf(x - m_new);
      if (a.prec != kPrecFloat) p = Round(p, rt);
      s[k] = p;
      psum += p;
    }
    psum = WarpSum(psum);
    __syncwarp();  // every lane has read m_s/l_s of this row before lane 0 writes them
    if (lane == 0) {
      const float l = l_s[ri];
      l_s[ri] = paper ? Round(Round(l * corr, rt) + Round(psum, rt), rt) : l * corr + psum;
      m_s[ri] = m_new;
      corr_s[ri] = corr;
      upd_s[ri] = 1;
    }
  }
}

// O = O·corr + P·V of one key block.
template <typename T>
__device__ __forceinline__ void BlockPV(const Args& a, const Tile& t, int64_t r0, int n) {
  PASA_TILE_LOCALS(t);
  // O = O·corr + P·V, per group of 128 value columns (lane = columns lane + 32j).
  for (int cg = 0; cg < Dv; cg += kColGroup) {
    float acc[kRowsPerWarp][4];
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[j][q] = 0.0f;
    for (int c0 = 0; c0 < n; c0 += kChunk) {
#pragma unroll 8
      for (int e = threadIdx.x; e < kChunk * kColGroup; e += kThreads) {
        const int kk = e / kColGroup, col = cg + e % kColGroup;
        float x = 0.0f;
        if (c0 + kk < n && col < Dv && valid_s[c0 + kk]) {
          x = Load<T>(a.v, vbase + (r0 + c0 + kk) * a.vs[2] + col * a.vs[3]);
          if (half_mode) x = RoundOperand(x, rt);
        }
        kv_s[e] = x;
      }
      __syncthreads();
      const int kn = min(kChunk, n - c0);
      for (int kk = 0; kk < kn; ++kk) {
        const float* vr = kv_s + kk * kColGroup + lane;
        const float v0 = vr[0], v1 = vr[32], v2 = vr[64], v3 = vr[96];
#pragma unroll
        for (int j = 0; j < kRowsPerWarp; ++j) {
          const int ri = warp + kWarps * j;
          if (ri < rows) {
            const float p = s_s[ri * NB + c0 + kk];
            acc[j][0] = fmaf(p, v0, acc[j][0]);
            acc[j][1] = fmaf(p, v1, acc[j][1]);
            acc[j][2] = fmaf(p, v2, acc[j][2]);
            acc[j][3] = fmaf(p, v3, acc[j][3]);
          }
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < kRowsPerWarp; ++j) {
      const int ri = warp + kWarps * j;
      if (ri >= rows || !upd_s[ri]) continue;
      const float corr = corr_s[ri];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int col = cg + lane + 32 * q;
        if (col >= Dv) continue;
        float* o = o_s + ri * Dv + col;
        *o = paper ? Round(Round(*o * corr, rt) + Round(acc[j][q], rt), rt) : *o * corr + acc[j][q];
      }
    }
  }
}

// The normalised output of the tile.
template <typename T>
__device__ __forceinline__ void StoreOutput(const Args& a, const Tile& t) {
  PASA_TILE_LOCALS(t);
  // Y = O / l; a row that attended nothing is 0 (ONNX Attention semantics). A batch whose
  // nonpad_kv_seqlen is out of [0, Skv] (which the device cannot report) gets NaN, not a guess.
  const bool bad_nonpad = a.nonpad != nullptr && (a.nonpad[b] < 0 || a.nonpad[b] > a.Skv);
  for (int e = threadIdx.x; e < rows * Dv; e += kThreads) {
    const int ri = e / Dv, d = e % Dv;
    const int h = h0 + ri / q_rows;
    const int64_t i = i0 + ri % q_rows;
    const float l = l_s[ri];
    const float y = bad_nonpad ? NAN : (l != 0.0f ? o_s[e] / l : 0.0f);
    Store<T>(a.y, b * a.ys[0] + h * a.ys[1] + i * a.ys[2] + d * a.ys[3], y);
    // Paper mode rounds every stored value to the half type, so finite inputs can overflow it;
    // the op reads this flag after the kernel and fails the node (CheckDeviceStatus).
    if (a.status != nullptr && !isfinite(Load<T>(a.y, b * a.ys[0] + h * a.ys[1] + i * a.ys[2] + d * a.ys[3])))
      atomicOr(a.status, 1u);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) AttendKernel(Args a) {
  const Tile t = MakeTile<T>(a);
  PASA_TILE_LOCALS(t);
  LoadQueries<T>(a, t);

  // Key blocks any row of the tile may attend (causal and window skip whole blocks).
  int64_t lo0, hi0, lo1, hi1;
  KeyRange(a, i0 + offset, valid_len, &lo0, &hi0);
  KeyRange(a, i0 + q_rows - 1 + offset, valid_len, &lo1, &hi1);
  const int64_t key_lo = min(lo0, lo1), key_hi = max(hi0, hi1);
  const int first_block = key_hi > key_lo ? static_cast<int>(key_lo / NB) : 0;
  const int end_block = key_hi > key_lo ? static_cast<int>((key_hi - 1) / NB + 1) : 0;
  __syncthreads();

  for (int blk = first_block; blk < end_block; ++blk) {
    const int64_t slot = (static_cast<int64_t>(b) * a.U + u) * a.nblk + blk;
    const float inv_count = a.inv_count[slot];
    if (inv_count == 0.0f) continue;  // no valid key in the block: it contributes nothing
    const int64_t r0 = static_cast<int64_t>(blk) * NB;
    const int n = static_cast<int>(MinI64(NB, a.Skv - r0));
    for (int d = threadIdx.x; d < Dp; d += kThreads) mean_s[d] = a.amean[slot * Dp + d];
    for (int k = threadIdx.x; k < NB; k += kThreads) valid_s[k] = k < n && KeyValid(a, b, u, r0 + k, valid_len);
    __syncthreads();
    BlockScores<T>(a, t, r0, n);
    if (direct) RowsDirect(a, t, r0, n);
    else RowsCpuPipeline(a, t, r0, n, inv_count);
    __syncthreads();
    BlockPV<T>(a, t, r0, n);
    __syncthreads();
  }
  __syncthreads();
  StoreOutput<T>(a, t);
}
#undef PASA_TILE_LOCALS

size_t AlignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

int64_t DivUp(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Everything about the launch that depends on the problem only.
struct Plan {
  int U = 0, G = 0, Dp = 0, nblk = 0, NB = 0, kst = 0, R = 0, hp = 1, qr = 1;
  size_t smem = 0;
  size_t valid_off = 0, inv_off = 0, mean_off = 0, status_off = 0, bytes = 0;
};

size_t SmemBytes(int R, int Dp, int Dv, int NB, int kst) {
  const size_t floats = static_cast<size_t>(R) * Dp + static_cast<size_t>(kChunk) * std::max(kst, kColGroup) +
                        static_cast<size_t>(R) * NB + static_cast<size_t>(R) * Dv + Dp + 5 * static_cast<size_t>(R);
  return (floats + R + NB + static_cast<size_t>(R) * (NB / kOverflowTile + 2)) * 4;
}

int MaxSmemOptin() {
  static const int value = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
      return 48 * 1024;
    return v;
  }();
  return value;
}

Plan MakePlan(const AttentionProblem& p) {
  Plan pl;
  pl.G = static_cast<int>(p.q_heads / p.kv_heads);
  const bool per_head_mask = p.mask.kind != MaskKind::kNone && p.mask.stride[1] != 0;
  pl.U = static_cast<int>(per_head_mask ? p.q_heads : p.kv_heads);
  pl.Dp = static_cast<int>(AlignUp(static_cast<size_t>(p.head_dim), 4));
  pl.NB = static_cast<int>(std::min(p.block_kv, p.kv_len));
  pl.nblk = static_cast<int>(DivUp(p.kv_len, p.block_kv));
  pl.kst = pl.Dp + 4;  // float4 rows, conflict-free across the 8 keys of a quarter warp
  const int dv = static_cast<int>(p.v_head_dim);
  // Rows per CTA: as many as fit a shared-memory budget that keeps two CTAs per SM.
  const size_t budget = std::min<size_t>(100 * 1024, static_cast<size_t>(MaxSmemOptin()));
  int R = kMaxRows;
  while (R > 4 && SmemBytes(R, pl.Dp, dv, pl.NB, pl.kst) > budget) R /= 2;
  // Short query sequences (decode): a CTA takes several query heads of a GQA group, which share
  // the group's keys, when their key validity agrees (no per-head mask).
  int hp = 1, qr = R;
  if (!per_head_mask && pl.G > 1 && p.q_len < R) {
    for (int d = 1; d <= pl.G; ++d)
      if (pl.G % d == 0 && d * p.q_len <= R) hp = d;
    qr = static_cast<int>(p.q_len);
  }
  const int rows = hp * std::min<int>(qr, static_cast<int>(p.q_len));
  pl.R = static_cast<int>(AlignUp(static_cast<size_t>(std::max(rows, 1)), 4));
  if (pl.R > R) pl.R = R;
  pl.hp = hp;
  pl.qr = qr;
  pl.smem = SmemBytes(pl.R, pl.Dp, dv, pl.NB, pl.kst);
  const size_t units = static_cast<size_t>(p.batch) * pl.U;
  size_t off = 0;
  if (p.mask.kind != MaskKind::kNone) {
    pl.valid_off = off;
    off = AlignUp(off + units * static_cast<size_t>(p.kv_len), 256);
  }
  pl.inv_off = off;
  off = AlignUp(off + units * pl.nblk * sizeof(float), 256);
  pl.mean_off = off;
  off = AlignUp(off + units * pl.nblk * static_cast<size_t>(pl.Dp) * sizeof(float), 256);
  pl.status_off = off;
  if (p.precision == Precision::kPaper) off = AlignUp(off + sizeof(unsigned), 256);
  pl.bytes = off;
  return pl;
}

void CopyStrides(const int64_t (&src)[4], int64_t (&dst)[4]) {
  for (int i = 0; i < 4; ++i) dst[i] = src[i];
}

std::string CudaError(const char* what, cudaError_t e) {
  return std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e);
}

template <typename T>
std::string Launch(const Args& a, const Plan& pl, const AttentionProblem& p, cudaStream_t stream, uint8_t* valid) {
  if (valid != nullptr) {
    KeyValidKernel<<<dim3(static_cast<unsigned>(DivUp(p.kv_len, kThreads)), pl.U, static_cast<unsigned>(p.batch)),
                     kThreads, 0, stream>>>(a, valid);
  }
  if (a.status != nullptr) {
    const cudaError_t e = cudaMemsetAsync(a.status, 0, sizeof(unsigned), stream);
    if (e != cudaSuccess) return CudaError("cudaMemsetAsync (status)", e);
  }
  BlockMeanKernel<T><<<dim3(pl.nblk, pl.U, static_cast<unsigned>(p.batch)), kThreads, 0, stream>>>(a);
  if (pl.smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(AttendKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(pl.smem));
    if (e != cudaSuccess) return CudaError("cudaFuncSetAttribute", e);
  }
  const dim3 grid(static_cast<unsigned>(DivUp(p.q_len, pl.qr)), static_cast<unsigned>(p.q_heads / pl.hp),
                  static_cast<unsigned>(p.batch));
  AttendKernel<T><<<grid, kThreads, pl.smem, stream>>>(a);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : CudaError("the generic attention kernel launch", e);
}

}  // namespace

std::string GenericCheck(const AttentionProblem& p) {
  if (p.head_dim > kMaxHeadDim || p.v_head_dim > kMaxHeadDim)
    return "head sizes D=" + std::to_string(p.head_dim) + ", Dv=" + std::to_string(p.v_head_dim) +
           " are not supported by the CUDA kernel; expected at most " + std::to_string(kMaxHeadDim);
  if (p.block_kv > kMaxBlockKv)
    return "attribute block_kv=" + std::to_string(p.block_kv) + " is not supported by the CUDA kernel; expected at most " +
           std::to_string(kMaxBlockKv);
  if (p.batch > 65535 || p.q_heads > 65535)
    return "batch " + std::to_string(p.batch) + " or query heads " + std::to_string(p.q_heads) +
           " exceed the CUDA kernel's grid; expected at most 65535 each";
  const Plan pl = MakePlan(p);
  if (pl.smem > static_cast<size_t>(MaxSmemOptin()))
    return "head sizes D=" + std::to_string(p.head_dim) + ", Dv=" + std::to_string(p.v_head_dim) + " with block_kv=" +
           std::to_string(p.block_kv) + " need " + std::to_string(pl.smem) + " bytes of shared memory; this GPU has " +
           std::to_string(MaxSmemOptin());
  return {};
}

size_t GenericWorkspaceBytes(const AttentionProblem& p) { return MakePlan(p).bytes; }

std::string GenericStatus(const AttentionProblem& p, cudaStream_t stream, void* workspace) {
  if (p.precision != Precision::kPaper || p.batch == 0 || p.q_len == 0) return {};
  // Paper mode only (the authors' all-half pipeline, for reproducing the paper): the one place
  // the op waits for the device, so that an overflow is a node error instead of inf/NaN.
  unsigned status = 0;
  const auto* flag = static_cast<const uint8_t*>(workspace) + MakePlan(p).status_off;
  cudaError_t e = cudaMemcpyAsync(&status, flag, sizeof status, cudaMemcpyDeviceToHost, stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  if (e != cudaSuccess) return CudaError("reading the paper-mode status", e);
  if (status & 1u)
    return "the attention scores overflow float16 in precision 'paper' (it rounds every stored value to the "
           "half type), or an input holds a non-finite value; use precision 'half' or 'float'";
  return {};
}

std::string RunGeneric(const AttentionProblem& p, cudaStream_t stream, void* workspace) {
  const std::string bad = GenericCheck(p);
  if (!bad.empty()) return bad;
  const Plan pl = MakePlan(p);
  auto* ws = static_cast<uint8_t*>(workspace);
  Args a{};
  a.q = p.q.data;
  a.k = p.k.data;
  a.v = p.v.data;
  a.y = p.y;
  CopyStrides(p.q.stride, a.qs);
  CopyStrides(p.k.stride, a.ks);
  CopyStrides(p.v.stride, a.vs);
  CopyStrides(p.y_stride, a.ys);
  a.mask = p.mask.data;
  CopyStrides(p.mask.stride, a.ms);
  a.mask_kind = p.mask.kind == MaskKind::kNone ? 0 : (p.mask.kind == MaskKind::kBool ? 1 : 2);
  a.mask_type = p.mask.type == ElemType::kFloat16 ? 1 : (p.mask.type == ElemType::kBFloat16 ? 2 : 0);
  a.mask_len = p.mask.kind == MaskKind::kNone ? p.kv_len : p.mask.mask_len;
  a.nonpad = p.nonpad_kv_seqlen;
  a.past_len = p.past_len;
  uint8_t* valid = p.mask.kind != MaskKind::kNone ? ws + pl.valid_off : nullptr;
  a.key_valid = valid;
  a.inv_count = reinterpret_cast<float*>(ws + pl.inv_off);
  a.amean = reinterpret_cast<float*>(ws + pl.mean_off);
  a.status = p.precision == Precision::kPaper ? reinterpret_cast<unsigned*>(ws + pl.status_off) : nullptr;
  a.B = static_cast<int>(p.batch);
  a.Hq = static_cast<int>(p.q_heads);
  a.Hkv = static_cast<int>(p.kv_heads);
  a.U = pl.U;
  a.G = pl.G;
  a.Sq = static_cast<int>(p.q_len);
  a.Skv = static_cast<int>(p.kv_len);
  a.D = static_cast<int>(p.head_dim);
  a.Dv = static_cast<int>(p.v_head_dim);
  a.Dp = pl.Dp;
  a.nblk = pl.nblk;
  a.block_kv = pl.NB;
  // Units are query heads when the mask varies over heads (or there is no grouping).
  a.unit_per_qhead = pl.U == p.q_heads ? 1 : 0;
  a.scale = p.scale;
  a.softcap = p.softcap;
  a.alpha = p.softcap > 0.0f ? 0.0f : p.alpha;
  a.beta = a.alpha / (1.0f - a.alpha);
  a.overflow_at = 65520.0f;
  if (p.half_type == ElemType::kBFloat16) {  // the largest float that rounds to a finite bf16, + 1 ulp
    const uint32_t bits = 0x7f7f8000u;
    std::memcpy(&a.overflow_at, &bits, sizeof bits);
  }
  a.causal = p.causal ? 1 : 0;
  a.left = p.left_window;
  a.right = p.right_window;
  a.prec = p.precision == Precision::kHalf ? kPrecHalf : (p.precision == Precision::kPaper ? kPrecPaper : kPrecFloat);
  a.rt = p.precision == Precision::kFloat ? kRoundNone
                                          : (p.half_type == ElemType::kBFloat16 ? kRoundBF16 : kRoundF16);
  a.rows_cap = pl.R;
  a.hp = pl.hp;
  a.qr = pl.qr;
  a.kst = pl.kst;
  switch (p.q.type) {
    case ElemType::kFloat16: return Launch<__half>(a, pl, p, stream, valid);
    case ElemType::kBFloat16: return Launch<__nv_bfloat16>(a, pl, p, stream, valid);
    case ElemType::kFloat32:
    default: return Launch<float>(a, pl, p, stream, valid);
  }
}

}  // namespace cuda
}  // namespace pasa

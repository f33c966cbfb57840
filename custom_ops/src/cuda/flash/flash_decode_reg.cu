// The register decode kernel (flash_decode.h): decode with at most 2 packed query rows, where the
// 16-warp kernel of flash_decode.cu leaves the SM waiting on its barriers (one CTA per SM). Here
// a CTA is 4 warps with K and V in registers and 3-8 KB of static shared memory (ptxas), so
// several CTAs share an SM and one's math runs under the others' loads.
//
// Per PASA block of 128 keys, warp w takes the block rows of ShiftKeysKernel's row groups 2w and
// 2w + 1 (rows 8i + 2w + e, i = 0..15, e = 0..1), lane l the head columns [l·C, l·C + C)
// (C = D / 32):
//   1. the warp's 32 key rows are loaded (8 or 4 bytes per lane and row; rows at or past the
//      valid length are zero, never read);
//   2. the warp sums its two row groups in ShiftKeysKernel's order; after a barrier every warp
//      adds the 8 group sums in group order: kbar = α·mean, bit for bit the pre-pass path's;
//   3. the removed shift c·(q·kbar) per row, in BlockShift's order of sums (lanes gather the
//      kbar pairs by shuffles);
//   4. K' = c·(K − kbar) in fp32, rounded to the half type, times Q (fp32 products of half
//      values, exact, as on the tensor cores), summed over the lanes by a butterfly: lane l then
//      holds the score of (key, row) l of each round of 32 / R keys;
//   5. V rows are loaded; the warps exchange each row's max S and max |S| per 64-key tile through
//      shared memory (a second barrier), then every warp has the tiles' overflow flags and the
//      block's row max (the same in every warp);
//   6. P, rounded to the half type, and O += P·V over the warp's keys (P broadcast by shuffles).
// Every warp runs the online softmax with the block's common max, so the warps' l and O are
// partials of one (m, l, O), added in warp order once at the end.
#include <algorithm>

#include "flash_decode.h"
#include "flash_decode_range.cuh"
#include "flash_ptx.cuh"

#ifndef PASA_DECODE_REG_CTAS
#define PASA_DECODE_REG_CTAS 1056  // CTAs to aim at: 8 per SM of a 132-SM GPU (two waves of 4)
#endif

namespace pasa::cuda::flash {
namespace {

constexpr int kRegWarps = 4;
constexpr int kRegThreads = 32 * kRegWarps;
constexpr int kRegKeys = kDecodeBlock / kRegWarps;  // 32 keys per warp and block
constexpr int kGroups = 8;                          // ShiftKeysKernel's row groups

// Block row of the warp's key j (0..31): row group 2w + (j & 1), the (j >> 1)-th row of it.
__device__ __forceinline__ int KeyRow(int warp, int j) { return 8 * (j >> 1) + 2 * warp + (j & 1); }

// One lane's C = D / 32 columns of a row, as packed half pairs.
template <int D>
struct Chunk {
  static constexpr int C = D / 32;
  uint32_t w[C / 2];
};

template <int D, typename T>
__device__ __forceinline__ Chunk<D> LoadChunk(const T* src, bool ok) {
  Chunk<D> c;
  if constexpr (D == 128) {
    const uint2 v = ok ? __ldg(reinterpret_cast<const uint2*>(src)) : make_uint2(0u, 0u);
    c.w[0] = v.x;
    c.w[1] = v.y;
  } else {
    c.w[0] = ok ? __ldg(reinterpret_cast<const unsigned int*>(src)) : 0u;
  }
  return c;
}

template <typename T>
__device__ __forceinline__ float2 UnpackU32(uint32_t u) {
  using T2 = typename HalfTraits<T>::T2;
  return HalfTraits<T>::Unpack(*reinterpret_cast<const T2*>(&u));
}

// One butterfly step over H-value halves: lanes with bit H send the lower half and keep the upper.
template <int H>
__device__ __forceinline__ void ButterflyStep(float (&v)[32], int lane) {
  const bool upper = (lane & H) != 0;
#pragma unroll
  for (int i = 0; i < H; ++i) {
    const float send = upper ? v[i] : v[i + H];
    const float keep = upper ? v[i + H] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, H);
  }
}

// Sum over the warp's lanes of each of the 32 values v[0..31]; lane l gets the sum of v[l]
// (31 shuffles instead of 32 · 5). Template steps: fully unrolled, v stays in registers.
__device__ __forceinline__ float ButterflySum(float (&v)[32], int lane) {
  ButterflyStep<16>(v, lane);
  ButterflyStep<8>(v, lane);
  ButterflyStep<4>(v, lane);
  ButterflyStep<2>(v, lane);
  ButterflyStep<1>(v, lane);
  return v[0];
}

// Shared memory (static): the row groups' sums and the tile maxima (one copy each: a warp writes
// the next block's only after the barrier that every warp reaches after reading this block's),
// Q in fp32, the epilogue's partials of warps 1..3.
template <int D, int R>
struct RegSmem {
  float grp[kGroups][D];
  float2 red[kRegWarps][R][2];  // {max S, max |S|} per warp, row, 64-key tile
  float qf[R][D];
  float o[kRegWarps - 1][R][D];
  float l[kRegWarps - 1][R];
};

// The removed shift c·(q·kbar) of row `row` (lanes 4·row .. 4·row + 3 compute it; the value is
// returned in lane 4·row): BlockShift's order, lane tq adding columns 8·k2 + 2·tq, + 1 over k2,
// then (p0 + p1) + (p2 + p3). kb: this lane's kbar columns; every lane takes part in the shuffles.
template <int D, int R>
__device__ __forceinline__ float RowShift(const RegSmem<D, R>& sm, const float (&kb)[D / 32], float scale, int lane) {
  constexpr int C = D / 32;
  const int g = lane >> 2, tq = lane & 3;
  const float* q = sm.qf[g < R ? g : 0];
  float acc = 0.f;
#pragma unroll
  for (int k2 = 0; k2 < D / 8; ++k2) {
    // columns 8·k2 + 2·tq, + 1 live in lane (8·k2 + 2·tq) / C at element (2·tq) % C
    const int col = 8 * k2 + 2 * tq;
    const int src = col / C;
    float a, b;
    if constexpr (C == 4) {
      const float a0 = __shfl_sync(0xffffffffu, kb[0], src), b0 = __shfl_sync(0xffffffffu, kb[1], src);
      const float a1 = __shfl_sync(0xffffffffu, kb[2], src), b1 = __shfl_sync(0xffffffffu, kb[3], src);
      a = (tq & 1) ? a1 : a0;
      b = (tq & 1) ? b1 : b0;
    } else {
      a = __shfl_sync(0xffffffffu, kb[0], src);
      b = __shfl_sync(0xffffffffu, kb[1], src);
    }
    const float2 qv = *reinterpret_cast<const float2*>(q + col);
    acc = fmaf(qv.x, a, acc);
    acc = fmaf(qv.y, b, acc);
  }
  return scale * QuadRowSum(acc);
}

// Q in fp32 into shared memory (rows past `rows` are zero and never written).
template <int D, typename T, int R>
__device__ __forceinline__ void LoadQ(const FwdParams& p, RegSmem<D, R>& sm, int rows, int unit, int b, int tid) {
  const T* qbase = static_cast<const T*>(p.q) + b * p.q_sb;
  for (int idx = tid; idx < R * D; idx += kRegThreads) {
    const int r = idx / D, c = idx % D;
    float x = 0.f;
    if (r < rows) {
      const int i = r / p.group, gh = r % p.group;
      x = static_cast<float>(
          qbase[(static_cast<int64_t>(unit) * p.group + gh) * p.q_sh + static_cast<int64_t>(i) * p.q_ss + c]);
    }
    sm.qf[r][c] = x;
  }
  __syncthreads();
}

// Steps 1-2: the warp's key rows, its two row groups' sums (invalid rows are zero: adding them
// changes no sum), then (one barrier) kbar of this lane's columns from the 8 groups in order.
template <int D, typename T, int R>
__device__ __forceinline__ void BlockKbar(RegSmem<D, R>& sm, Chunk<D> (&kr)[kRegKeys], float (&kb)[D / 32],
                                          const T* kbase, int64_t k_ss, int key0, int count, float alpha, int warp,
                                          int lane) {
  constexpr int C = D / 32;
#pragma unroll
  for (int j = 0; j < kRegKeys; ++j) {
    const int row = KeyRow(warp, j);
    kr[j] = LoadChunk<D, T>(kbase + static_cast<int64_t>(key0 + row) * k_ss, row < count);
  }
  float s[2][C];
#pragma unroll
  for (int e = 0; e < 2; ++e)
#pragma unroll
    for (int c = 0; c < C; ++c) s[e][c] = 0.f;
#pragma unroll
  for (int j = 0; j < kRegKeys; ++j)
#pragma unroll
    for (int h = 0; h < C / 2; ++h) {
      const float2 x = UnpackU32<T>(kr[j].w[h]);
      s[j & 1][2 * h] += x.x;
      s[j & 1][2 * h + 1] += x.y;
    }
#pragma unroll
  for (int e = 0; e < 2; ++e)
#pragma unroll
    for (int c = 0; c < C; ++c) sm.grp[2 * warp + e][lane * C + c] = s[e][c];
  __syncthreads();
  const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.f;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    float sum = 0.f;
#pragma unroll
    for (int gi = 0; gi < kGroups; ++gi) sum += sm.grp[gi][lane * C + c];
    kb[c] = alpha * (sum * inv);
  }
}

// Step 4: the scores, one round of 32 / R keys at a time: sc[t] is the score of the warp's key
// t·(32 / R) + lane / R and row lane % R.
template <int D, typename T, int R>
__device__ __forceinline__ void BlockScores(float (&sc)[R], const Chunk<D> (&kr)[kRegKeys], const float (&kb)[D / 32],
                                            const float (&qv)[R][D / 32], float scale, int count, int warp,
                                            int lane) {
  constexpr int C = D / 32, KPR = kRegKeys / R;
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
#pragma unroll
  for (int t = 0; t < R; ++t) {
    float v[32];
#pragma unroll
    for (int jj = 0; jj < KPR; ++jj) {
      const int j = t * KPR + jj;
      const bool ok = KeyRow(warp, j) < count;  // invalid keys: K' = 0, as in the pre-pass path
      float kp[C];
#pragma unroll
      for (int h = 0; h < C / 2; ++h) {
        const float2 x = UnpackU32<T>(kr[j].w[h]);
        const T2 r2 = ok ? Tr::Pack(scale * (x.x - kb[2 * h]), scale * (x.y - kb[2 * h + 1])) : Tr::Pack(0.f, 0.f);
        const float2 y = Tr::Unpack(r2);
        kp[2 * h] = y.x;
        kp[2 * h + 1] = y.y;
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float acc = 0.f;
#pragma unroll
        for (int c = 0; c < C; ++c) acc = fmaf(qv[r][c], kp[c], acc);
        v[jj * R + r] = acc;
      }
    }
    sc[t] = ButterflySum(v, lane);
  }
}

// Step 5: mask the scores (unless every row attends the whole block), the row's max S and max |S|
// per 64-key tile over the warp, then over the warps (one barrier): the tiles' overflow flags and
// the block's max of x = (S, rounded unless its tile overflows) + shift.
template <int D, typename T, int R>
__device__ __forceinline__ float BlockMax(RegSmem<D, R>& sm, float (&sc)[R], bool& ovf0, bool& ovf1, float shift,
                                          const DecodeRange& dr, const Geometry& geo, int pos, int key0, int warp,
                                          int lane) {
  constexpr int KPR = kRegKeys / R;
  const float NEG_INF = -INFINITY;
  const bool full = key0 >= dr.a_lo && key0 + kDecodeBlock <= dr.a_hi;
  float ms0 = NEG_INF, ma0 = 0.f, ms1 = NEG_INF, ma1 = 0.f;  // tiles 0 and 1 (selects: no local memory)
#pragma unroll
  for (int t = 0; t < R; ++t) {
    const int j = t * KPR + lane / R;
    const int row = KeyRow(warp, j);
    if (!full && !(key0 + row < dr.valid && geo.Allowed(pos, key0 + row))) sc[t] = NEG_INF;
    const float a = sc[t] == NEG_INF ? 0.f : fabsf(sc[t]);
    if (j >= 16) {  // block rows 64..127
      ms1 = fmaxf(ms1, sc[t]);
      ma1 = fmaxf(ma1, a);
    } else {
      ms0 = fmaxf(ms0, sc[t]);
      ma0 = fmaxf(ma0, a);
    }
  }
#pragma unroll
  for (int off = 16; off >= R; off >>= 1) {
    ms0 = fmaxf(ms0, __shfl_xor_sync(0xffffffffu, ms0, off));
    ma0 = fmaxf(ma0, __shfl_xor_sync(0xffffffffu, ma0, off));
    ms1 = fmaxf(ms1, __shfl_xor_sync(0xffffffffu, ms1, off));
    ma1 = fmaxf(ma1, __shfl_xor_sync(0xffffffffu, ma1, off));
  }
  if (lane < R) {
    sm.red[warp][lane][0] = make_float2(ms0, ma0);
    sm.red[warp][lane][1] = make_float2(ms1, ma1);
  }
  __syncthreads();
  const float thr = OverflowThreshold<T>();
  float mx = NEG_INF;
#pragma unroll
  for (int tl = 0; tl < 2; ++tl) {
    float ts = NEG_INF, ta = 0.f;
#pragma unroll
    for (int w = 0; w < kRegWarps; ++w) {
      const float2 r2 = sm.red[w][lane % R][tl];
      ts = fmaxf(ts, r2.x);
      ta = fmaxf(ta, r2.y);
    }
    const bool ov = ta >= thr;
    (tl == 0 ? ovf0 : ovf1) = ov;
    mx = fmaxf(mx, ts == NEG_INF ? NEG_INF : (ov ? ts : RoundScore<T>(ts)) + shift);
  }
  return mx;
}

// The online softmax of one row (m, l: this lane's row; l a partial over the lane's keys) and O
// (every row, this lane's columns: a partial over the warp's keys).
template <int D, int R>
struct RegState {
  float m, l;
  float o[R][D / 32];
};

// Step 6: the online-softmax step with the block's max mx, P rounded to the half type, O += P·V
// over the warp's 32 keys (P and the rows' corrections broadcast by shuffles).
template <int D, typename T, int R>
__device__ __forceinline__ void SoftmaxPv(RegState<D, R>& st, const float (&sc)[R], const Chunk<D> (&vr)[kRegKeys],
                                          float mx, bool ovf0, bool ovf1, float shift, int lane) {
  constexpr int C = D / 32, KPR = kRegKeys / R;
  using Tr = HalfTraits<T>;
  const float NEG_INF = -INFINITY;
  const float m_new = fmaxf(st.m, mx);
  const float mL = m_new == NEG_INF ? 0.f : m_new * kLog2e;
  const float corr = Exp2(fmaf(st.m, kLog2e, -mL));
  st.m = m_new;
  float pr[R];
  float psum = 0.f;
#pragma unroll
  for (int t = 0; t < R; ++t) {
    const bool ov = (t * KPR + lane / R) >= 16 ? ovf1 : ovf0;
    const float x = sc[t] == NEG_INF ? NEG_INF : (ov ? sc[t] : RoundScore<T>(sc[t])) + shift;
    pr[t] = Tr::Unpack(Tr::Pack(Exp2(fmaf(x, kLog2e, -mL)), 0.f)).x;
    psum += pr[t];
  }
  st.l = st.l * corr + psum;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float cr = __shfl_sync(0xffffffffu, corr, r);
#pragma unroll
    for (int c = 0; c < C; ++c) st.o[r][c] *= cr;
  }
#pragma unroll
  for (int j = 0; j < kRegKeys; ++j) {
    const int t = j / KPR, jj = j % KPR;
    float vf[C];
#pragma unroll
    for (int h = 0; h < C / 2; ++h) {
      const float2 x = UnpackU32<T>(vr[j].w[h]);
      vf[2 * h] = x.x;
      vf[2 * h + 1] = x.y;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float pj = __shfl_sync(0xffffffffu, pr[t], jj * R + r);
#pragma unroll
      for (int c = 0; c < C; ++c) st.o[r][c] = fmaf(pj, vf[c], st.o[r][c]);
    }
  }
}

// The split's (m, l, O): l over the lanes of a row, then the warps' partials added in warp order.
template <int D, int R>
__device__ __forceinline__ void WriteSplit(const FwdParams& p, RegSmem<D, R>& sm, RegState<D, R>& st, int rows,
                                           int64_t prow0, int warp, int lane) {
  constexpr int C = D / 32;
#pragma unroll
  for (int off = 16; off >= R; off >>= 1) st.l += __shfl_xor_sync(0xffffffffu, st.l, off);
  if (warp > 0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int c = 0; c < C; ++c) sm.o[warp - 1][r][lane * C + c] = st.o[r][c];
    if (lane < R) sm.l[warp - 1][lane] = st.l;
  }
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      float acc = st.o[r][c];
#pragma unroll
      for (int w = 1; w < kRegWarps; ++w) acc += sm.o[w - 1][r][lane * C + c];
      p.part_o[(prow0 + r) * D + lane * C + c] = acc;
    }
  }
  if (lane < rows) {
    float lt = st.l;
#pragma unroll
    for (int w = 1; w < kRegWarps; ++w) lt += sm.l[w - 1][lane];
    *reinterpret_cast<float2*>(p.part_ml + (prow0 + lane) * 2) = make_float2(st.m, lt);
  }
}

template <int D, typename T, int R>
__global__ void __launch_bounds__(kRegThreads, D == 128 ? 3 : 4) FlashDecodeRegKernel(DecodeParams dp) {
  constexpr int C = D / 32;
  const FwdParams& p = dp.f;
  __shared__ RegSmem<D, R> sm;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int split = blockIdx.x, unit = blockIdx.y, b = blockIdx.z;
  const DecodeRange dr = MakeRange(p, split, b);
  const T* kbase = static_cast<const T*>(dp.k) + b * dp.k_sb + unit * dp.k_sh + lane * C;
  const T* vbase = static_cast<const T*>(p.v) + b * p.v_sb + unit * p.v_sh + lane * C;
  LoadQ<D, T, R>(p, sm, dr.rows, unit, b, tid);
  // This lane's scores are of row lane % R in every round; it holds its Q columns of every row.
  float qv[R][C];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) qv[r][c] = sm.qf[r][lane * C + c];
  const int pos = static_cast<int>((lane % R) / p.group + dr.off);
  const Geometry geo{p.causal, p.left, p.right};

  RegState<D, R> st;
  st.m = -INFINITY;
  st.l = 0.f;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) st.o[r][c] = 0.f;

  for (int blk = dr.blk_begin; blk < dr.blk_end; ++blk) {
    const int key0 = blk * kDecodeBlock;
    const int count = max(0, min(kDecodeBlock, dr.valid - key0));
    Chunk<D> kr[kRegKeys];
    float kb[C];
    BlockKbar<D, T, R>(sm, kr, kb, kbase, dp.k_ss, key0, count, dp.alpha, warp, lane);
    // step 3: the shifts, row r's in lane 4·r, then each lane takes its row's
    const float shift = __shfl_sync(0xffffffffu, RowShift<D, R>(sm, kb, p.scale, lane), 4 * (lane % R));
    float sc[R];
    BlockScores<D, T, R>(sc, kr, kb, qv, p.scale, count, warp, lane);
    // step 5's V rows first: their latency runs under the exchange
    Chunk<D> vr[kRegKeys];
#pragma unroll
    for (int j = 0; j < kRegKeys; ++j) {
      const int row = KeyRow(warp, j);
      vr[j] = LoadChunk<D, T>(vbase + static_cast<int64_t>(key0 + row) * p.v_ss, row < count);
    }
    bool ovf0 = false, ovf1 = false;
    const float mx = BlockMax<D, T, R>(sm, sc, ovf0, ovf1, shift, dr, geo, pos, key0, warp, lane);
    SoftmaxPv<D, T, R>(st, sc, vr, mx, ovf0, ovf1, shift, lane);
  }
  const int64_t slab = static_cast<int64_t>(b) * p.hkv + unit;
  WriteSplit<D, R>(p, sm, st, dr.rows, (slab * p.splits + split) * dr.rows, warp, lane);
}

template <int D, typename T, int R>
std::string LaunchDTR(const DecodeParams& dp, int units, int batch, cudaStream_t stream) {
  FlashDecodeRegKernel<D, T, R><<<dim3(static_cast<unsigned>(dp.f.splits), static_cast<unsigned>(units),
                                       static_cast<unsigned>(batch)),
                                  kRegThreads, 0, stream>>>(dp);
  return "";
}

template <int D, typename T>
std::string LaunchDT(const DecodeParams& dp, int units, int batch, cudaStream_t stream) {
  static_assert(kDecodeRegMaxRows == 2, "one instantiation per row count");
  return dp.f.rows <= 1 ? LaunchDTR<D, T, 1>(dp, units, batch, stream) : LaunchDTR<D, T, 2>(dp, units, batch, stream);
}

}  // namespace

bool DecodeRegCovers(int head_dim, int64_t block_kv, int64_t rows, int64_t kv_len, bool ext) {
  return !ext && block_kv == kDecodeBlock && rows >= 1 && rows <= kDecodeRegMaxRows && kv_len >= 1 &&
         (head_dim == 64 || head_dim == 128);
}

int DecodeRegSplits(int64_t batch, int64_t units, int64_t nblk) {
  const int64_t total = batch * units * nblk;
  const int64_t per = std::max<int64_t>(1, (total + PASA_DECODE_REG_CTAS - 1) / PASA_DECODE_REG_CTAS);
  return static_cast<int>(std::min<int64_t>((nblk + per - 1) / per, 65535));
}

std::string LaunchDecodeReg(const DecodeParams& dp, int head_dim, bool bf16, int units, int batch,
                            cudaStream_t stream) {
  if (head_dim == 64)
    return bf16 ? LaunchDT<64, __nv_bfloat16>(dp, units, batch, stream) : LaunchDT<64, __half>(dp, units, batch, stream);
  if (head_dim == 128)
    return bf16 ? LaunchDT<128, __nv_bfloat16>(dp, units, batch, stream)
                : LaunchDT<128, __half>(dp, units, batch, stream);
  return "flash decode: unsupported head size " + std::to_string(head_dim);
}

}  // namespace pasa::cuda::flash

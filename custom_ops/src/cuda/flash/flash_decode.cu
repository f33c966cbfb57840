// The fused split-KV decode kernel (flash_decode.h). One CTA of 16 warps per (split, kv head,
// batch); per PASA block of 128 keys:
//   1. the block's K and V rows land in a cp.async stage (rows past the valid length zero-filled);
//   2. the fp32 mean of the valid keys in ShiftKeysKernel's order of sums (8 row groups, then the
//      groups in order) and kbar = α·mean: bit for bit the pre-pass path's kbar and K';
//   3. warp w takes keys 8w .. 8w + 7: K' = c·(K − kbar) in fp32, rounded to the half type, is
//      formed in registers as the B operand of S = Q·K'ᵀ (fp32 accumulators);
//   4. the overflow test per row and 64-key tile, S rounded (or kept in fp32), the removed shift
//      c·(q·kbar) added. The warps exchange each row's max S and max |S| through shared memory and
//      take the block's row max from them (rounding and adding the shift are monotone, so the max
//      of x is the transformed max of S);
//   5. one online-softmax step per block with that common max; P, rounded to the half type, goes
//      to shared memory;
//   6. O += P·V with the output columns spread over the warps (D = 128: 8 columns per warp over
//      all 128 keys; D = 64: 8 columns over 64 keys, two warps per column tile).
// Sixteen warps with few registers each (the O accumulators are spread over them): four warps per
// scheduler. On the H200 this runs as fast as an 8-warp version that held all of O in every warp
// (2 warps per scheduler), with cp.async's 16-byte copies or with one bulk copy per key row: all
// stream K and V at about 2.1 TB/s (docs/cuda-kernels.md, "The decode kernel").
#include "flash_decode.h"

#include <algorithm>

#include "device_caps.h"

#include "flash_decode_range.cuh"
#include "flash_ptx.cuh"

namespace pasa::cuda::flash {
namespace {

constexpr int kDecWarps = 16;
constexpr int kDecThreads = 32 * kDecWarps;
constexpr int kKeysPerWarp = kDecodeBlock / kDecWarps;  // 8: one n-tile of S per warp
constexpr int kDecPad = 8;                              // row padding (halves): conflict-free reads
constexpr int kMeanGroups = 8;                          // ShiftKeysKernel's row groups (kShiftGroups)

template <int D>
struct DecodeShape {
  static constexpr int LD = D + kDecPad;               // halves per shared row of Q, K, V
  static constexpr int PLD = kDecodeBlock + kDecPad;   // halves per shared row of P
  static constexpr int CH = D / 8;                     // 16-byte chunks per row
  static constexpr int HALF_D = D / 2;                 // column pairs
  static constexpr int STAGE = 2 * kDecodeBlock * LD;  // halves per stage: K rows, then V rows
  static constexpr int CT = D / 8;                     // column tiles of O
  static constexpr int PARTS = kDecWarps / CT;         // warps per column tile (key parts of P·V)
  static constexpr int PART_KEYS = kDecodeBlock / PARTS;
  static constexpr int OLD = D + 8;                    // floats per row of the epilogue's O sums
};

// Shared memory: Q rows (half type; read only before the first block's P is written, so P
// [row][PLD] shares them), NS stages, the mean's partial sums [8][D], kbar [D], the row maxima
// [warp][row] (float2), the tile maxima [2][row] (float2), the shifts [row], Q in fp32 [row][D].
// The epilogue reuses the stages.
template <int D>
__host__ __device__ constexpr int QpHalves() {
  return kDecodeMaxRows * (DecodeShape<D>::LD > DecodeShape<D>::PLD ? DecodeShape<D>::LD : DecodeShape<D>::PLD);
}
template <int D>
constexpr size_t DecodeSmemBytes(int ns) {
  using S = DecodeShape<D>;
  return (static_cast<size_t>(QpHalves<D>()) + static_cast<size_t>(ns) * S::STAGE) * 2 +
         (static_cast<size_t>(kMeanGroups) * D + D + kDecWarps * kDecodeMaxRows * 2 + 2 * kDecodeMaxRows * 2 +
          kDecodeMaxRows + static_cast<size_t>(kDecodeMaxRows) * D) *
             sizeof(float);
}

template <int D>
constexpr bool EpilogueFits() {
  using S = DecodeShape<D>;
  return (S::PARTS * kDecodeMaxRows * S::OLD + kDecWarps * kDecodeMaxRows) * sizeof(float) <= 2 * S::STAGE * 2;
}
static_assert(EpilogueFits<64>() && EpilogueFits<128>(), "epilogue sums must fit in two stages");

template <int N>
__device__ __forceinline__ void CpAsyncWaitGroup() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX2Trans(uint32_t addr, uint32_t& r0, uint32_t& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(addr));
}

// Shared-memory carve-up of one CTA.
template <int D, typename T>
struct DecodeSmem {
  T* q;        // [16][LD], until the first block's P
  T* p;        // [16][PLD], in the same place
  T* stage;    // [NS][STAGE]
  float* part;   // [8][D]
  float* kbar;   // [D]
  float* red;    // [warp][row] float2 {max S, max |S|}
  float* tile;   // [2][row] float2 {max S, max |S|} per 64-key tile
  float* shift;  // [row]
  float* qf;     // [row][D]
  __device__ DecodeSmem(void* raw, int ns) {
    using S = DecodeShape<D>;
    q = static_cast<T*>(raw);
    p = q;
    stage = q + QpHalves<D>();
    part = reinterpret_cast<float*>(stage + ns * S::STAGE);
    kbar = part + kMeanGroups * D;
    red = kbar + D;
    tile = red + kDecWarps * kDecodeMaxRows * 2;
    shift = tile + 2 * kDecodeMaxRows * 2;
    qf = shift + kDecodeMaxRows;
  }
};

// Step 1: cp.async of block `blk`'s K and V rows into a stage (keys at or past `valid`:
// zero-filled). Each thread copies one 16-byte column chunk of rows r0, r0 + kRowStep, ...: the
// addresses step by constants (a chunk's row and column from a flat index cost about 20
// instructions per copy).
template <int D, typename T>
__device__ __forceinline__ void IssueBlock(T* stage, const T* kbase, const T* vbase, int64_t k_ss, int64_t v_ss,
                                           int blk, int valid, int tid) {
  using S = DecodeShape<D>;
  constexpr int kRowStep = kDecThreads / S::CH;
  const int c = (tid % S::CH) * 8, r0 = tid / S::CH;
  const int key0 = blk * kDecodeBlock + r0;
  uint32_t dk = SmemAddr(stage + r0 * S::LD + c);
  uint32_t dv = dk + kDecodeBlock * S::LD * 2;
  const T* ks = kbase + static_cast<int64_t>(key0) * k_ss + c;
  const T* vs = vbase + static_cast<int64_t>(key0) * v_ss + c;
  if ((blk + 1) * kDecodeBlock <= valid) {  // every key valid: no selects
#pragma unroll
    for (int i = 0; i < kDecodeBlock / kRowStep; ++i) {
      CpAsync16(dk + i * kRowStep * S::LD * 2, ks + i * kRowStep * k_ss, 16);
      CpAsync16(dv + i * kRowStep * S::LD * 2, vs + i * kRowStep * v_ss, 16);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kDecodeBlock / kRowStep; ++i) {
    const bool ok = key0 + i * kRowStep < valid;
    CpAsync16(dk, ok ? ks : kbase, ok ? 16 : 0);
    CpAsync16(dv, ok ? vs : vbase, ok ? 16 : 0);
    dk += kRowStep * S::LD * 2;
    dv += kRowStep * S::LD * 2;
    ks += kRowStep * k_ss;
    vs += kRowStep * v_ss;
  }
}

// Step 2: kbar of the block (two barriers inside). Thread (grp, column pair) loads rows grp,
// grp + 8, ... first (independent loads), then adds them in order up to `count`; the 8 group sums
// are added in group order.
template <int D, typename T>
__device__ __forceinline__ void BlockMean(const DecodeSmem<D, T>& sm, const T* tK, int count, float alpha, int tid) {
  using S = DecodeShape<D>;
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int kRows = kDecodeBlock / kMeanGroups;
  if (tid < kMeanGroups * S::HALF_D) {
    const int cp = tid % S::HALF_D, grp = tid / S::HALF_D;
    const T* src = tK + grp * S::LD + 2 * cp;
    T2 raw[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) raw[i] = *reinterpret_cast<const T2*>(src + i * kMeanGroups * S::LD);
    float s0 = 0.f, s1 = 0.f;
    if (count == kDecodeBlock) {
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const float2 x = Tr::Unpack(raw[i]);
        s0 += x.x;
        s1 += x.y;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        if (grp + i * kMeanGroups >= count) break;
        const float2 x = Tr::Unpack(raw[i]);
        s0 += x.x;
        s1 += x.y;
      }
    }
    reinterpret_cast<float2*>(sm.part)[grp * S::HALF_D + cp] = make_float2(s0, s1);
  }
  __syncthreads();
  if (tid < D) {
    float sum = 0.f;
#pragma unroll
    for (int gi = 0; gi < kMeanGroups; ++gi) sum += sm.part[gi * D + tid];
    const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.f;
    sm.kbar[tid] = alpha * (sum * inv);
  }
  __syncthreads();
}

// The removed shift c·(q·kbar) of packed row `row` into sm.shift, in BlockShift's order of sums
// (this lane's columns 8·k2 + 2·tq, +1 in order, then the quad's sums as (p0 + p1) + (p2 + p3)).
template <int D, typename T>
__device__ __forceinline__ void RowShift(const DecodeSmem<D, T>& sm, float scale, int row, int tq) {
  const float* q = sm.qf + row * D;
  float acc = 0.f;
#pragma unroll
  for (int k2 = 0; k2 < D / 8; ++k2) {
    const int col = k2 * 8 + tq * 2;
    const float2 kv2 = *reinterpret_cast<const float2*>(sm.kbar + col);
    const float2 qv = *reinterpret_cast<const float2*>(q + col);
    acc = fmaf(qv.x, kv2.x, acc);
    acc = fmaf(qv.y, kv2.y, acc);
  }
  const float sh = scale * QuadRowSum(acc);
  if (tq == 0) sm.shift[row] = sh;
}

// Step 3: S = Q·K'ᵀ for the warp's 8 keys [j0, j0 + 8) of the block, K' formed from the raw keys.
// The MMA's k slots of step kk are mapped to head columns so that each lane's four are adjacent:
// slots 2·tq, 2·tq + 1 -> columns 16·kk + 4·tq + {0, 1}, slots 2·tq + 8, + 9 -> + {2, 3} (the same
// for Q, see QFragments): one 8-byte load of K and one 16-byte load of kbar per step.
template <int D, typename T>
__device__ __forceinline__ void ShiftedScores(float (&s)[4], const uint32_t (&qf)[D / 16][4], const T* tK,
                                              const float* kbar, float scale, int count, int j0, int g, int tq) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int LD = DecodeShape<D>::LD;
  s[0] = s[1] = s[2] = s[3] = 0.f;
  const int r = j0 + g;
  const bool ok = r < count;  // invalid keys: K' = 0, as in the pre-pass path's workspace
  const T* kr = tK + r * LD + 4 * tq;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const float4 kb = *reinterpret_cast<const float4*>(kbar + kk * 16 + 4 * tq);
    const uint2 raw = *reinterpret_cast<const uint2*>(kr + kk * 16);
    const float2 x0 = Tr::Unpack(*reinterpret_cast<const T2*>(&raw.x));
    const float2 x1 = Tr::Unpack(*reinterpret_cast<const T2*>(&raw.y));
    const T2 b0 = ok ? Tr::Pack(scale * (x0.x - kb.x), scale * (x0.y - kb.y)) : Tr::Pack(0.f, 0.f);
    const T2 b1 = ok ? Tr::Pack(scale * (x1.x - kb.z), scale * (x1.y - kb.w)) : Tr::Pack(0.f, 0.f);
    Mma16816<T>(s, qf[kk], AsU32(b0), AsU32(b1));
  }
}

// The A fragments of Q for ShiftedScores' slot-to-column mapping: a0/a2 = row g, columns
// 16·kk + 4·tq + {0, 1} / {2, 3}; a1/a3 the same for row g + 8.
template <int D, typename T>
__device__ __forceinline__ void QFragments(uint32_t (&qf)[D / 16][4], const T* sQ, int g, int tq) {
  constexpr int LD = DecodeShape<D>::LD;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint2 lo = *reinterpret_cast<const uint2*>(sQ + g * LD + kk * 16 + 4 * tq);
    const uint2 hi = *reinterpret_cast<const uint2*>(sQ + (g + 8) * LD + kk * 16 + 4 * tq);
    qf[kk][0] = lo.x;
    qf[kk][2] = lo.y;
    qf[kk][1] = hi.x;
    qf[kk][3] = hi.y;
  }
}

// Prologue: Q rows (zero past `rows`), the first NS − 1 blocks, then Q in fp32 for the shifts.
template <int D, typename T, int NS>
__device__ __forceinline__ void Prologue(const FwdParams& p, const DecodeSmem<D, T>& sm, const DecodeRange& dr,
                                         const T* kbase, const T* vbase, int64_t k_ss, int unit, int b, int tid) {
  using S = DecodeShape<D>;
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  const T* qbase = static_cast<const T*>(p.q) + b * p.q_sb;
  for (int idx = tid; idx < kDecodeMaxRows * S::CH; idx += kDecThreads) {
    const int r = idx / S::CH, c = (idx % S::CH) * 8;
    const bool ok = r < dr.rows;
    const T* src = qbase;
    if (ok) {
      const int i = r / p.group, gh = r % p.group;
      src = qbase + (static_cast<int64_t>(unit) * p.group + gh) * p.q_sh + static_cast<int64_t>(i) * p.q_ss + c;
    }
    CpAsync16(SmemAddr(sm.q + r * S::LD + c), src, ok ? 16 : 0);
  }
#pragma unroll
  for (int st = 0; st < NS - 1; ++st) {
    if (dr.blk_begin + st < dr.blk_end)
      IssueBlock<D, T>(sm.stage + st * S::STAGE, kbase, vbase, k_ss, p.v_ss, dr.blk_begin + st, dr.valid, tid);
    CpAsyncCommit();
  }
  CpAsyncWaitGroup<NS - 2>();  // Q (in the first group)
  __syncthreads();
  for (int idx = tid; idx < kDecodeMaxRows * S::HALF_D; idx += kDecThreads) {
    const int r = idx / S::HALF_D, c = (idx % S::HALF_D) * 2;
    reinterpret_cast<float2*>(sm.qf + r * D)[c / 2] = Tr::Unpack(*reinterpret_cast<const T2*>(sm.q + r * S::LD + c));
  }
}

// Step 4: mask (blocks outside the keys every row attends), this warp's row maxima of the attended
// S and |S| to shared memory; after a barrier, the 64-key tiles' maxima (one lane per row and
// tile), after another, each thread's rows: overflow flags of its tile, the block max of x.
struct RowState {
  float m[2], l[2];
  int pos[2];
};

template <int D, typename T>
__device__ __forceinline__ void BlockMax(const DecodeSmem<D, T>& sm, float (&s)[4], float (&mx)[2], bool (&ovf)[2],
                                         float (&shift)[2], const RowState& rs, const DecodeRange& dr, const Geometry& geo,
                                         bool full, int blk, int warp, int lane) {
  const float NEG_INF = -INFINITY;
  const int g = lane >> 2, tq = lane & 3;
  const int j0 = warp * kKeysPerWarp;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float ms = NEG_INF, ma = 0.f;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float& x = s[2 * rr + e];
      const int key = blk * kDecodeBlock + j0 + tq * 2 + e;
      if (!full && !(key < dr.valid && geo.Allowed(rs.pos[rr], key))) x = NEG_INF;
      ms = fmaxf(ms, x);
      ma = fmaxf(ma, x == NEG_INF ? 0.f : fabsf(x));
    }
    ms = QuadRowMax(ms);
    ma = QuadRowMax(ma);
    if (tq == 0) reinterpret_cast<float2*>(sm.red)[warp * kDecodeMaxRows + g + rr * 8] = make_float2(ms, ma);
  }
  __syncthreads();
  if (warp == 0) {  // lane = (tile, row): the max over the tile's 8 warps
    const int row = lane % kDecodeMaxRows, t = lane / kDecodeMaxRows;
    float ms = NEG_INF, ma = 0.f;
#pragma unroll
    for (int w = 0; w < kDecWarps / 2; ++w) {
      const float2 r2 = reinterpret_cast<const float2*>(sm.red)[(t * kDecWarps / 2 + w) * kDecodeMaxRows + row];
      ms = fmaxf(ms, r2.x);
      ma = fmaxf(ma, r2.y);
    }
    reinterpret_cast<float2*>(sm.tile)[t * kDecodeMaxRows + row] = make_float2(ms, ma);
  }
  __syncthreads();
  const float thr = OverflowThreshold<T>();
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int R = g + rr * 8;
    shift[rr] = R < dr.rows ? sm.shift[R] : 0.f;
    float xt[2];
    bool ov[2];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const float2 r2 = reinterpret_cast<const float2*>(sm.tile)[t * kDecodeMaxRows + R];
      ov[t] = r2.y >= thr;
      xt[t] = r2.x == NEG_INF ? NEG_INF : (ov[t] ? r2.x : RoundScore<T>(r2.x)) + shift[rr];
    }
    mx[rr] = fmaxf(xt[0], xt[1]);
    ovf[rr] = warp < kDecWarps / 2 ? ov[0] : ov[1];  // this warp's tile (a select: no local memory)
  }
}

// Step 5: x = round(S) + shift; online softmax step; P to shared memory; this warp's l partial.
// Returns the rows' correction factors for O.
template <int D, typename T>
__device__ __forceinline__ void SoftmaxStep(const DecodeSmem<D, T>& sm, const float (&s)[4], const float (&mx)[2],
                                            const bool (&ovf)[2], const float (&shift)[2], RowState& rs,
                                            float (&corr)[2], bool full, int warp, int lane) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int PLD = DecodeShape<D>::PLD;
  const float NEG_INF = -INFINITY;
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const float m_new = fmaxf(rs.m[rr], mx[rr]);
    const float mL = m_new == NEG_INF ? 0.f : m_new * kLog2e;
    corr[rr] = Exp2(fmaf(rs.m[rr], kLog2e, -mL));
    rs.m[rr] = m_new;
    float x2[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float x = s[2 * rr + e];
      if (full && !ovf[rr]) x2[e] = RoundScore<T>(x) + shift[rr];  // no masked score in the block
      else x2[e] = x == NEG_INF ? NEG_INF : (ovf[rr] ? x : RoundScore<T>(x)) + shift[rr];
    }
    const T2 ph = Tr::Pack(Exp2(fmaf(x2[0], kLog2e, -mL)), Exp2(fmaf(x2[1], kLog2e, -mL)));
    const float2 pr = Tr::Unpack(ph);
    rs.l[rr] = rs.l[rr] * corr[rr] + (pr.x + pr.y);
    *reinterpret_cast<T2*>(sm.p + (g + rr * 8) * PLD + warp * kKeysPerWarp + 2 * tq) = ph;
  }
}

// Step 6: O (this warp's 8 columns, rows g and g + 8) = O·corr + P·V over the warp's key part.
template <int D, typename T>
__device__ __forceinline__ void PvStep(const DecodeSmem<D, T>& sm, const T* tV, float (&o)[4], const float (&corr)[2],
                                       int warp, int lane) {
  using S = DecodeShape<D>;
  const int ct = warp % S::CT, part = warp / S::CT;
  // Two accumulator chains (even and odd k-steps) for the tensor cores' latency; O·corr feeds the even one.
  float o2[4] = {0.f, 0.f, 0.f, 0.f};
  o[0] *= corr[0];
  o[1] *= corr[0];
  o[2] *= corr[1];
  o[3] *= corr[1];
#pragma unroll
  for (int kk = 0; kk < S::PART_KEYS / 16; ++kk) {
    const int k0 = part * S::PART_KEYS + kk * 16;
    uint32_t a[4], b0, b1;
    LdMatrixX4(SmemAddr(sm.p + (lane & 15) * S::PLD + k0 + (lane >> 4) * 8), a[0], a[1], a[2], a[3]);
    LdMatrixX2Trans(SmemAddr(tV + (k0 + (lane & 15)) * S::LD + ct * 8), b0, b1);
    Mma16816<T>(kk % 2 == 0 ? o : o2, a, b0, b1);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) o[i] += o2[i];
}

// The split's fp32 (m, l, O): the key parts' O and the warps' l added in order, through the
// stages (free once every copy landed and every warp left the loop).
template <int D, typename T>
__device__ __forceinline__ void Epilogue(const FwdParams& p, const DecodeSmem<D, T>& sm, const float (&o)[4],
                                         const RowState& rs, int rows, int64_t prow0, int warp, int lane, int tid) {
  using S = DecodeShape<D>;
  const int g = lane >> 2, tq = lane & 3;
  CpAsyncWaitGroup<0>();
  __syncthreads();
  float* sO = reinterpret_cast<float*>(sm.stage);  // [part][row][OLD]
  float* sL = sO + S::PARTS * kDecodeMaxRows * S::OLD;
  const int ct = warp % S::CT, part = warp / S::CT;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int R = g + rr * 8;
    *reinterpret_cast<float2*>(sO + (part * kDecodeMaxRows + R) * S::OLD + ct * 8 + tq * 2) =
        make_float2(o[2 * rr], o[2 * rr + 1]);
    const float l = QuadRowSum(rs.l[rr]);
    if (tq == 0) sL[warp * kDecodeMaxRows + R] = l;
  }
  __syncthreads();
  for (int idx = tid; idx < rows * S::HALF_D; idx += kDecThreads) {
    const int R = idx / S::HALF_D, c = (idx % S::HALF_D) * 2;
    float2 acc = make_float2(0.f, 0.f);
#pragma unroll
    for (int pt = 0; pt < S::PARTS; ++pt) {
      const float2 v = *reinterpret_cast<const float2*>(sO + (pt * kDecodeMaxRows + R) * S::OLD + c);
      acc.x += v.x;
      acc.y += v.y;
    }
    *reinterpret_cast<float2*>(p.part_o + (prow0 + R) * D + c) = acc;
  }
  // m is the same in every warp; warp 0's lane (row % 8) * 4 holds row `row` in slot row / 8.
  if (warp == 0 && tq == 0) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int R = g + rr * 8;
      if (R >= rows) continue;
      float l = 0.f;
#pragma unroll
      for (int w = 0; w < kDecWarps; ++w) l += sL[w * kDecodeMaxRows + R];
      *reinterpret_cast<float2*>(p.part_ml + (prow0 + R) * 2) = make_float2(rs.m[rr], l);
    }
  }
}

template <int D, typename T, int NS>
__global__ void __launch_bounds__(kDecThreads, 1) FlashDecodeKernel(DecodeParams dp) {
  using S = DecodeShape<D>;
  constexpr int LD = S::LD;
  const FwdParams& p = dp.f;
  extern __shared__ uint4 smem_raw[];
  const DecodeSmem<D, T> sm(smem_raw, NS);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int split = blockIdx.x, unit = blockIdx.y, b = blockIdx.z;
  const DecodeRange dr = MakeRange(p, split, b);
  const T* kbase = static_cast<const T*>(dp.k) + b * dp.k_sb + unit * dp.k_sh;
  const T* vbase = static_cast<const T*>(p.v) + b * p.v_sb + unit * p.v_sh;
  if (dr.blk_begin < dr.blk_end) Prologue<D, T, NS>(p, sm, dr, kbase, vbase, dp.k_ss, unit, b, tid);

  float o[4] = {0.f, 0.f, 0.f, 0.f};
  RowState rs;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {  // rows past `rows` compute on zero Q rows and are never written
    rs.m[rr] = -INFINITY;
    rs.l[rr] = 0.f;
    rs.pos[rr] = static_cast<int>((g + rr * 8) / p.group + dr.off);
  }
  const Geometry geo{p.causal, p.left, p.right};
  uint32_t qf[D / 16][4];

  for (int blk = dr.blk_begin; blk < dr.blk_end; ++blk) {
    const int step = blk - dr.blk_begin;
    CpAsyncWaitGroup<NS - 2>();
    __syncthreads();  // the block's rows are visible; every warp is done with the previous stage
    if (blk + NS - 1 < dr.blk_end)
      IssueBlock<D, T>(sm.stage + ((step + NS - 1) % NS) * S::STAGE, kbase, vbase, dp.k_ss, p.v_ss, blk + NS - 1,
                       dr.valid, tid);
    CpAsyncCommit();
    const T* tK = sm.stage + (step % NS) * S::STAGE;
    const int count = max(0, min(kDecodeBlock, dr.valid - blk * kDecodeBlock));
    if (step == 0) QFragments<D, T>(qf, sm.q, g, tq);
    BlockMean<D, T>(sm, tK, count, dp.alpha, tid);
    if (warp * 8 < dr.rows) RowShift<D, T>(sm, p.scale, warp * 8 + g, tq);  // read after BlockMax's barrier
    float s[4];
    ShiftedScores<D, T>(s, qf, tK, sm.kbar, p.scale, count, warp * kKeysPerWarp, g, tq);
    const bool full = blk * kDecodeBlock >= dr.a_lo && (blk + 1) * kDecodeBlock <= dr.a_hi;
    float mx[2], shift[2], corr[2];
    bool ovf[2];
    BlockMax<D, T>(sm, s, mx, ovf, shift, rs, dr, geo, full, blk, warp, lane);
    SoftmaxStep<D, T>(sm, s, mx, ovf, shift, rs, corr, full, warp, lane);
    __syncthreads();  // P of every warp
    PvStep<D, T>(sm, tK + kDecodeBlock * LD, o, corr, warp, lane);
  }
  const int64_t slab = static_cast<int64_t>(b) * p.hkv + unit;
  Epilogue<D, T>(p, sm, o, rs, dr.rows, (slab * p.splits + split) * dr.rows, warp, lane, tid);
}

// Stages of the ring: 3 where the device's shared memory allows, else 2.
template <int D>
int DecodeStages(int max_smem) {
  return static_cast<size_t>(max_smem) >= DecodeSmemBytes<D>(3) ? 3 : 2;
}

template <int D, typename T, int NS>
std::string LaunchNS(const DecodeParams& dp, int units, int batch, cudaStream_t stream) {
  const size_t smem = DecodeSmemBytes<D>(NS);
  const cudaError_t e = AllowDynamicSmem<FlashDecodeKernel<D, T, NS>>(static_cast<int>(smem));
  if (e != cudaSuccess) return std::string("flash decode: cudaFuncSetAttribute: ") + cudaGetErrorString(e);
  FlashDecodeKernel<D, T, NS><<<dim3(static_cast<unsigned>(dp.f.splits), static_cast<unsigned>(units),
                                     static_cast<unsigned>(batch)),
                                kDecThreads, smem, stream>>>(dp);
  return "";
}

template <int D, typename T>
std::string LaunchDT(const DecodeParams& dp, int units, int batch, int max_smem, cudaStream_t stream) {
  return DecodeStages<D>(max_smem) == 3 ? LaunchNS<D, T, 3>(dp, units, batch, stream)
                                        : LaunchNS<D, T, 2>(dp, units, batch, stream);
}

}  // namespace

bool DecodeCovers(int head_dim, int64_t block_kv, int64_t rows, int64_t kv_len, bool ext, int max_smem) {
  if (ext || block_kv != kDecodeBlock || rows < 1 || rows > kDecodeMaxRows || kv_len < 1) return false;
  if (head_dim == 64) return static_cast<size_t>(max_smem) >= DecodeSmemBytes<64>(2);
  if (head_dim == 128) return static_cast<size_t>(max_smem) >= DecodeSmemBytes<128>(2);
  return false;
}

int DecodeSplits(int64_t batch, int64_t units, int64_t nblk) {
  const int64_t total = batch * units * nblk;
  const int64_t per = std::max<int64_t>(1, (total + 263) / 264);
  return static_cast<int>(std::min<int64_t>((nblk + per - 1) / per, 65535));
}

std::string LaunchDecode(const DecodeParams& dp, int head_dim, bool bf16, int units, int batch, int max_smem,
                         cudaStream_t stream) {
  if (head_dim == 64)
    return bf16 ? LaunchDT<64, __nv_bfloat16>(dp, units, batch, max_smem, stream)
                : LaunchDT<64, __half>(dp, units, batch, max_smem, stream);
  if (head_dim == 128)
    return bf16 ? LaunchDT<128, __nv_bfloat16>(dp, units, batch, max_smem, stream)
                : LaunchDT<128, __half>(dp, units, batch, max_smem, stream);
  return "flash decode: unsupported head size " + std::to_string(head_dim);
}

}  // namespace pasa::cuda::flash

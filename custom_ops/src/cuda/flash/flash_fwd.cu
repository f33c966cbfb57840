// The tensor-core flash path of PasaAttention (mma.sync m16n8k16 + ldmatrix + cp.async, sm_80+).
//
// Three kernels, all on the caller's stream:
//   1. ShiftKeysKernel: per PASA block of n = block_kv keys of one (batch, kv head): the fp32 mean
//      over the valid keys (key < nonpad[b] or kv_len), kbar = α·mean, and K' = c·(K − kbar)
//      rounded to the half type, written to the workspace (invalid keys: 0). Shared by every
//      query tile and every query head of the GQA group.
//   2. FlashFwdKernel: one CTA per (query tile, kv head, batch[, split]). Query rows of the CTA are
//      the packed (position, head-of-group) pairs R = i·G + g, so the heads of a GQA group share
//      every K'/V tile. 64-key tiles stream through shared memory, double-buffered with cp.async.
//      Per tile: S = Q·K'ᵀ (fp32 accumulation), S rounded to the half type (a row whose tile would
//      overflow the half type keeps fp32 scores), plus the removed shift recovered directly,
//      off = c·(q·kbar) (one fp32 dot of length D per row and tile), online softmax in fp32,
//      P rounded to the half type, O += P·V in fp32.
//   3. CombineKernel (split-KV only): merges the splits' (m, l, O) in fp32.
// With a mask or softcap the kExt instantiation of FlashFwdKernel runs (the plain one is
// untouched): softcap on S first, the mask element (bool, or additive added after S is rounded,
// before the shift) read per score, and MaskKeysKernel before the shift pass (a key enters the
// block mean only when some row of its mask plane attends it).
// docs/cuda-kernels.md has the contract; flash_selftest.cu emulates it step by step.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "device_caps.h"
#include "flash.h"
#include "flash_common.cuh"
#include "flash_decode.h"
#include "flash_ptx.cuh"
#include "flash_sm90.h"

// The sm_90a kernel is built by default (CMake: nvcc 12 or later); PASA_HAVE_SM90=0 leaves it out.
#ifndef PASA_HAVE_SM90
#define PASA_HAVE_SM90 1
#endif

namespace pasa::cuda {
namespace flash {

constexpr int kTileN = 64;     // keys per shared-memory tile (the softmax / overflow-fallback tile)
constexpr int kPad = 8;        // row padding of the shared tiles (halves): conflict-free ldmatrix

struct ShiftParams {
  const void* k;
  void* kp;
  float* kbar;
  const int64_t* nonpad;
  int64_t k_sb, k_sh, k_ss;
  int hkv, kv_len, kv_pad, n, d;
  float scale, alpha;
  const uint8_t* mvalid;  // masked problems (kMasked): key validity by the mask, see FwdParams
  int64_t mv_sb, mv_sh;
  int kv_div;             // units per kv head
};

// grid (nblk, units, B), block kShiftGroups·D/2 threads: thread (grp, c) owns columns 2c, 2c+1 and
// sums rows grp, grp + 8, grp + 16, ... in order; the 8 partial sums are added in group order
// (the emulation sums in the same order: bit-identical K' and kbar). kMasked: a key is valid when
// it is before the valid length and the mask's validity byte (mvalid) says so; else the valid
// keys are the prefix before the valid length.
constexpr int kShiftGroups = 8;
template <typename T, bool kMasked>
__global__ void ShiftKeysKernel(ShiftParams sp) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Hopper: the main kernel (launched with programmatic stream serialisation) may start its
  // launch now; it waits for this grid's completion before it reads anything (griddepcontrol.wait).
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  __shared__ float2 part[kShiftGroups][128];
  __shared__ int cnt_part[kShiftGroups];  // kMasked: valid keys per row group
  const int blk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int half_d = sp.d / 2;
  const int cp = threadIdx.x % half_d, grp = threadIdx.x / half_d;
  const int c = cp * 2;
  const int valid = ValidLen(sp.nonpad, b, sp.kv_len);
  const int k0 = blk * sp.n;
  const int lim = max(0, min(sp.n, valid - k0));  // the block's keys before the valid length
  const int kvh = kMasked ? h / sp.kv_div : h;
  const T* src = static_cast<const T*>(sp.k) + b * sp.k_sb + kvh * sp.k_sh + static_cast<int64_t>(k0) * sp.k_ss + c;
  const uint8_t* mv = kMasked ? sp.mvalid + b * sp.mv_sb + h * sp.mv_sh + k0 : nullptr;
  float s0 = 0.f, s1 = 0.f;
  int count = lim;
  if constexpr (kMasked) {
    int cn = 0;
    for (int r = grp; r < lim; r += kShiftGroups) {
      if (mv[r] == 0) continue;
      const float2 x = Tr::Unpack(*reinterpret_cast<const T2*>(src + r * sp.k_ss));
      s0 += x.x;
      s1 += x.y;
      ++cn;
    }
    if (cp == 0) cnt_part[grp] = cn;
  } else {
#pragma unroll 4
    for (int r = grp; r < count; r += kShiftGroups) {
      const float2 x = Tr::Unpack(*reinterpret_cast<const T2*>(src + r * sp.k_ss));
      s0 += x.x;
      s1 += x.y;
    }
  }
  part[grp][cp] = make_float2(s0, s1);
  __syncthreads();
  s0 = 0.f;
  s1 = 0.f;
  for (int gi = 0; gi < kShiftGroups; ++gi) {
    s0 += part[gi][cp].x;
    s1 += part[gi][cp].y;
  }
  if constexpr (kMasked) {
    count = 0;
    for (int gi = 0; gi < kShiftGroups; ++gi) count += cnt_part[gi];
  }
  const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.f;
  const float kb0 = sp.alpha * (s0 * inv), kb1 = sp.alpha * (s1 * inv);
  const int64_t slab = static_cast<int64_t>(b) * sp.hkv + h;
  if (grp == 0) {
    float* kbar = sp.kbar + (slab * (sp.kv_pad / sp.n) + blk) * sp.d;
    kbar[c] = kb0;
    kbar[c + 1] = kb1;
  }
  T2* dst = reinterpret_cast<T2*>(static_cast<T*>(sp.kp) + (slab * sp.kv_pad + k0) * sp.d + c);
#pragma unroll 4
  for (int r = grp; r < sp.n; r += kShiftGroups) {
    T2 o = Tr::Pack(0.f, 0.f);
    if (kMasked ? (r < lim && mv[r] != 0) : r < count) {
      const float2 x = Tr::Unpack(*reinterpret_cast<const T2*>(src + r * sp.k_ss));
      o = Tr::Pack(sp.scale * (x.x - kb0), sp.scale * (x.y - kb1));
    }
    dst[static_cast<int64_t>(r) * half_d] = o;
  }
}

// ---- masks ----
// An element of a bool mask (one byte, 0 = not attended) or of an additive mask of type T (the
// 16-bit pattern, read through the read-only cache).
__device__ __forceinline__ bool MaskBoolAt(const void* m, int64_t i) {
  return __ldg(static_cast<const unsigned char*>(m) + i) != 0;
}
template <typename T>
__device__ __forceinline__ float MaskAddAt(const void* m, int64_t i) {
  const unsigned short u = __ldg(static_cast<const unsigned short*>(m) + i);
  if constexpr (std::is_same<T, __half>::value) return __half2float(__ushort_as_half(u));
  else return __uint_as_float(static_cast<uint32_t>(u) << 16);
}
// Whether mask element i attends its key. MK: 1 bool, 2 additive (-inf: not attended).
template <int MK, typename T>
__device__ __forceinline__ bool MaskAttendsAt(const void* m, int64_t i) {
  if constexpr (MK == 1) return MaskBoolAt(m, i);
  else return MaskAddAt<T>(m, i) != -INFINITY;
}

struct MaskKeyParams {
  const void* mask;
  uint8_t* out;           // [planes_b][planes_h][kv_len]
  int64_t sb, sh, ss;     // mask strides over batch, heads, rows (0: broadcast)
  int rows, mask_len, kv_len;
};

// grid (ceil(kv_len / 32), planes over heads, planes over batch), block (32, 8): out[plane][r] = 1
// when some row of the mask plane attends key r by the mask alone (r < mask_len). The same key
// validity as the generic kernel's KeyValidKernel and numerics._key_valid (the causal/window
// geometry does not enter; the valid length is applied by ShiftKeysKernel).
template <int MK, typename T>
__global__ void MaskKeysKernel(MaskKeyParams mp) {
  __shared__ int hit[8][32];
  const int r = blockIdx.x * 32 + threadIdx.x;
  bool any = false;
  if (r < mp.mask_len) {
    const int64_t base = blockIdx.z * mp.sb + blockIdx.y * mp.sh + r;
    for (int i0 = threadIdx.y; i0 < mp.rows && !any; i0 += 64) {
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int i = i0 + 8 * u;
        if (i < mp.rows) any |= MaskAttendsAt<MK, T>(mp.mask, base + i * mp.ss);
      }
    }
  }
  hit[threadIdx.y][threadIdx.x] = any ? 1 : 0;
  __syncthreads();
  if (threadIdx.y == 0 && r < mp.kv_len) {
    int v = 0;
    for (int y = 0; y < 8; ++y) v |= hit[y][threadIdx.x];
    mp.out[(static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * mp.kv_len + r] = static_cast<uint8_t>(v);
  }
}

struct MaskClassParams {
  const void* mask;
  int* row_len;        // [planes][rows]: n when the row attends exactly keys [0, n) with value 0, else -1
  int2* cls;           // [planes]: see FwdParams::mcls
  int64_t sb, sh, ss;  // mask strides over batch, heads, rows (0: broadcast)
  int rows, mask_len, off;
};

// grid (rows, planes over heads, planes over batch), block 128: whether mask row i of the plane
// attends exactly a prefix of the keys [0, n) (additive: with value 0 there), and n.
// Additive masks: a value at or below the half type's lowest finite one (transformers'
// finfo(dtype).min) removes the key here as −inf does. The mask path would add it to the score:
// x − m ≤ −65504 + (S_k − S_max) then, so exp rounds P to 0 in the half type unless S_k exceeds
// the row's largest attended score by more than 65486. The plain steps give the key P = 0 outright.
// A row left with no key keeps the mask path (−1): there the exported graph's softmax runs over
// all of the row's keys.
template <int MK, typename T>
__global__ void MaskRowsKernel(MaskClassParams mp) {
  __shared__ int count_s, last_s;
  const int i = blockIdx.x;
  const int64_t base = blockIdx.z * mp.sb + blockIdx.y * mp.sh + static_cast<int64_t>(i) * mp.ss;
  if (threadIdx.x == 0) count_s = last_s = 0;
  __syncthreads();
  int count = 0, last = 0;
  bool nonzero = false, finite_removed = false;
  for (int key = threadIdx.x; key < mp.mask_len; key += blockDim.x) {
    bool att;
    if constexpr (MK == 1) {
      att = MaskBoolAt(mp.mask, base + key);
    } else {
      const float v = MaskAddAt<T>(mp.mask, base + key);
      const bool removed = v <= LowestFinite<T>();  // −inf, or the lowest finite value (not NaN)
      att = !removed;
      finite_removed = finite_removed || (removed && v != -INFINITY);
      nonzero = nonzero || (att && v != 0.f);  // NaN too: a general mask
    }
    if (att) {
      ++count;
      last = key + 1;
    }
  }
  atomicAdd(&count_s, count);
  atomicMax(&last_s, last);
  const bool any_nonzero = __syncthreads_or(nonzero);  // also the barrier after the atomics
  const bool any_finite = __syncthreads_or(finite_removed);
  if (threadIdx.x == 0) {
    const int plane = blockIdx.z * gridDim.y + blockIdx.y;
    const bool prefix = count_s == last_s && !any_nonzero && !(count_s == 0 && any_finite);
    mp.row_len[static_cast<int64_t>(plane) * mp.rows + i] = prefix ? count_s : -1;
  }
}

// grid (planes over heads, planes over batch), block 256: the plane's class from its rows.
__global__ void MaskClassKernel(MaskClassParams mp) {
  const int plane = blockIdx.y * gridDim.x + blockIdx.x;
  const int* rl = mp.row_len + static_cast<int64_t>(plane) * mp.rows;
  const int n0 = rl[0], n_last = rl[mp.rows - 1];
  bool prefix = true, causal = true;
  for (int i = threadIdx.x; i < mp.rows; i += blockDim.x) {
    const int c = rl[i];
    prefix = prefix && c >= 0 && c == n0;
    causal = causal && c >= 0 && static_cast<int64_t>(c) == Min64(static_cast<int64_t>(i) + mp.off + 1, n_last);
  }
  prefix = __syncthreads_and(prefix);
  causal = __syncthreads_and(causal);
  if (threadIdx.x == 0) mp.cls[plane] = prefix ? make_int2(1, n0) : (causal ? make_int2(2, n_last) : make_int2(0, 0));
}

// ---- FlashFwdKernel, in steps ----
// Every step is __forceinline__ and keeps the statements and their order of the former single
// function: the generated PTX is the same (modulo register names), so are the numerics. Register
// arrays stay in the kernel's frame and are passed by reference, indexed with unrolled constants.

// Compile-time shape of one kernel instantiation; MT: 16-row m-tiles per warp.
template <int D, int MT>
struct FwdShape {
  static constexpr int LD = D + kPad;                   // halves per shared row
  static constexpr int KSTEPS = D / 16;                 // k-steps of S = Q·K'ᵀ
  static constexpr int NT_O = D / 8;                    // n-tiles of O
  static constexpr int NT_S = kTileN / 8;               // n-tiles of S
  static constexpr bool kQInRegs = MT == 1 && D <= 128;  // Q fragments kept in registers
  static constexpr int CH = D / 8;                      // 16-byte chunks per row
  static constexpr int QF = kQInRegs ? KSTEPS : 1;      // rows of the Q fragment array
};

// Shared-memory layout: Q tile, two K' and two V tiles (double buffer), two kbar rows.
template <typename T>
struct SmemTiles {
  T* sQ;
  T* sK;
  T* sV;
  float* sKb;
};

// Global sources of the K'/V/kbar tiles of one (batch, kv head): K' and kbar in the workspace, V.
template <typename T>
struct KvSource {
  const T* kp;
  const T* v;
  const float* kb;
  const uint8_t* mv;  // kExt with a mask: the key validity row of this (batch, unit), else null
};

// cp.async of key tile t into buffer buf: K' rows, V rows (zero-filled past `valid` and, kExt with
// a mask, for keys no row of the mask plane attends: P·V never sees their ±inf or NaN), kbar.
template <int D, typename T, bool kExt = false>
__device__ __forceinline__ void IssueKvTile(const FwdParams& p, const SmemTiles<T>& sm, const KvSource<T>& src, int valid,
                                            int t, int buf, int tid, int nthreads) {
  constexpr int LD = D + kPad, CH = D / 8;
  T* dk = sm.sK + buf * kTileN * LD;
  T* dv = sm.sV + buf * kTileN * LD;
  for (int idx = tid; idx < kTileN * CH; idx += nthreads) {
    const int r = idx / CH, c = (idx % CH) * 8;
    const int key = t * kTileN + r;
    CpAsync16(SmemAddr(dk + r * LD + c), src.kp + static_cast<int64_t>(key) * D + c, 16);
    const bool ok = key < valid && (!kExt || src.mv == nullptr || src.mv[key] != 0);
    const T* vs = ok ? src.v + static_cast<int64_t>(key) * p.v_ss + c : src.v;
    CpAsync16(SmemAddr(dv + r * LD + c), vs, ok ? 16 : 0);
  }
  for (int idx = tid; idx < D / 4; idx += nthreads)
    CpAsync16(SmemAddr(sm.sKb + buf * D + idx * 4), src.kb + static_cast<int64_t>(t / p.blk_tiles) * D + idx * 4,
              16);
}

// cp.async of the CTA's Q rows (packed rows R = i·G + g; rows past R1 zero-filled).
template <int D, typename T>
__device__ __forceinline__ void IssueQTile(const FwdParams& p, T* sQ, const T* qbase, int hkv, int R0, int R1, int bm,
                                           int tid, int nthreads) {
  constexpr int LD = D + kPad, CH = D / 8;
  for (int idx = tid; idx < bm * CH; idx += nthreads) {
    const int r = idx / CH, c = (idx % CH) * 8;
    const int R = R0 + r;
    const bool ok = R < R1;
    const T* src = qbase;
    if (ok) {
      const int i = R / p.group, gh = R % p.group;
      src = qbase + (static_cast<int64_t>(hkv) * p.group + gh) * p.q_sh + static_cast<int64_t>(i) * p.q_ss + c;
    }
    CpAsync16(SmemAddr(sQ + r * LD + c), src, ok ? 16 : 0);
  }
}

// The Q fragments of the warp's 16 rows, kept in registers for the whole key loop (MT = 1, D <= 128).
template <int D, typename T, int MT>
__device__ __forceinline__ void LoadQFragments(uint32_t (&qf)[FwdShape<D, MT>::QF][4], const T* sQ, int wr0, int lane) {
  using S = FwdShape<D, MT>;
#pragma unroll
  for (int kk = 0; kk < (S::kQInRegs ? S::KSTEPS : 0); ++kk)
    LdMatrixX4(SmemAddr(sQ + (wr0 + (lane & 15)) * S::LD + kk * 16 + (lane >> 4) * 8), qf[kk][0], qf[kk][1],
               qf[kk][2], qf[kk][3]);
}

// The removed shift of this tile's PASA block, per row: c·(q·kbar), quad-reduced.
template <int D, typename T, int MT>
__device__ __forceinline__ void BlockShift(const FwdParams& p, float (&shift)[MT][2], const T* sQ, const float* kb, int wr0,
                                           int g, int tq) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int LD = FwdShape<D, MT>::LD;
  float acc[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) acc[mt][0] = acc[mt][1] = 0.f;
#pragma unroll
  for (int k2 = 0; k2 < D / 8; ++k2) {
    const int col = k2 * 8 + tq * 2;
    const float2 kv2 = *reinterpret_cast<const float2*>(kb + col);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float2 qv = Tr::Unpack(*reinterpret_cast<const T2*>(sQ + (wr0 + mt * 16 + g + rr * 8) * LD + col));
        acc[mt][rr] = fmaf(qv.x, kv2.x, acc[mt][rr]);
        acc[mt][rr] = fmaf(qv.y, kv2.y, acc[mt][rr]);
      }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      shift[mt][rr] = p.scale * QuadRowSum(acc[mt][rr]);
    }
}

// The k-steps of S = Q·K'ᵀ over the tile's 64 keys, in column order: per k-step the warp's Q
// fragments (registers for MT = 1, else ldmatrix) and each pair of 8-key K' fragments, handed to
// mma(mt, j, a, b0, b1) for m-tile mt and key tile j.
template <int D, typename T, int MT, typename Mma>
__device__ __forceinline__ void ScoreKSteps(const uint32_t (&qf)[FwdShape<D, MT>::QF][4], const T* sQ, const T* tK,
                                            int wr0, int lane, Mma&& mma) {
  using S = FwdShape<D, MT>;
  constexpr int LD = S::LD, NT_S = S::NT_S;
#pragma unroll
  for (int kk = 0; kk < S::KSTEPS; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if constexpr (S::kQInRegs) {
        a[mt][0] = qf[kk][0]; a[mt][1] = qf[kk][1]; a[mt][2] = qf[kk][2]; a[mt][3] = qf[kk][3];
      } else {
        LdMatrixX4(SmemAddr(sQ + (wr0 + mt * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8), a[mt][0],
                   a[mt][1], a[mt][2], a[mt][3]);
      }
    }
#pragma unroll
    for (int jj = 0; jj < NT_S / 2; ++jj) {
      uint32_t b0, b1, b2, b3;
      LdMatrixX4(SmemAddr(tK + (jj * 16 + (lane & 7) + ((lane >> 4) << 3)) * LD + kk * 16 + ((lane >> 3) & 1) * 8),
                 b0, b1, b2, b3);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma(mt, 2 * jj, a[mt], b0, b1);
        mma(mt, 2 * jj + 1, a[mt], b2, b3);
      }
    }
  }
}

// S = Q·K'ᵀ over the tile's 64 keys (fp32 accumulators).
template <int D, typename T, int MT>
__device__ __forceinline__ void ScoreProduct(float (&s)[MT][kTileN / 8][4], const uint32_t (&qf)[FwdShape<D, MT>::QF][4],
                                             const T* sQ, const T* tK, int wr0, int lane) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < kTileN / 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
  ScoreKSteps<D, T, MT>(qf, sQ, tK, wr0, lane, [&](int mt, int j, const uint32_t* a, uint32_t b0, uint32_t b1) {
    Mma16816<T>(s[mt][j], a, b0, b1);
  });
}

// S = Q·K'ᵀ with fp16 accumulators (FlashScoreAccum "half", fp16 inputs): h[mt][j][rr] packs
// row g + 8rr's columns 8j + 2tq, +1. Each k-step rounds its partial sum to fp16.
template <int D, int MT>
__device__ __forceinline__ void HalfAccScoreProduct(uint32_t (&h)[MT][kTileN / 8][2],
                                                    const uint32_t (&qf)[FwdShape<D, MT>::QF][4], const __half* sQ,
                                                    const __half* tK, int wr0, int lane) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < kTileN / 8; ++j) h[mt][j][0] = h[mt][j][1] = 0u;
  ScoreKSteps<D, __half, MT>(qf, sQ, tK, wr0, lane, [&](int mt, int j, const uint32_t* a, uint32_t b0, uint32_t b1) {
    Mma16816HalfAcc(h[mt][j], a, b0, b1);
  });
}

// S = Q·K'ᵀ of m-tile mt alone (16 rows) with fp32 accumulators: ScoreProduct's operations for
// those rows (the fallback of HalfAccScores).
template <int D, int MT>
__device__ __forceinline__ void ScoreProductMTile(float (&s)[kTileN / 8][4], int mt,
                                                  const uint32_t (&qf)[FwdShape<D, MT>::QF][4], const __half* sQ,
                                                  const __half* tK, int wr0, int lane) {
  using S = FwdShape<D, MT>;
  constexpr int LD = S::LD, NT_S = S::NT_S;
#pragma unroll
  for (int j = 0; j < NT_S; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < S::KSTEPS; ++kk) {
    uint32_t a[4];
    if constexpr (S::kQInRegs) {
      a[0] = qf[kk][0]; a[1] = qf[kk][1]; a[2] = qf[kk][2]; a[3] = qf[kk][3];
    } else {
      LdMatrixX4(SmemAddr(sQ + (wr0 + mt * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8), a[0], a[1], a[2],
                 a[3]);
    }
#pragma unroll
    for (int jj = 0; jj < NT_S / 2; ++jj) {
      uint32_t b0, b1, b2, b3;
      LdMatrixX4(SmemAddr(tK + (jj * 16 + (lane & 7) + ((lane >> 4) << 3)) * LD + kk * 16 + ((lane >> 3) & 1) * 8),
                 b0, b1, b2, b3);
      Mma16816<__half>(s[2 * jj], a, b0, b1);
      Mma16816<__half>(s[2 * jj + 1], a, b2, b3);
    }
  }
}

// The tile's scores from fp16 accumulators, per m-tile (16 packed rows): when every sum of the
// m-tile is finite, s holds them (half values already: rounding them again is exact, and none
// reaches the overflow threshold); when one is not (an fp16 partial sum overflowed), the m-tile
// takes its fp32 product instead, which the default steps then round or keep (overflow test).
// Returns true when no m-tile of the warp fell back. One m-tile at a time keeps the fallback
// within the fp32 kernel's registers.
template <int D, int MT>
__device__ __forceinline__ bool HalfAccScores(float (&s)[MT][kTileN / 8][4], const uint32_t (&qf)[FwdShape<D, MT>::QF][4],
                                              const __half* sQ, const __half* tK, int wr0, int lane) {
  constexpr int NT_S = kTileN / 8;
  uint32_t h[MT][NT_S][2];
  HalfAccScoreProduct<D, MT>(h, qf, sQ, tK, wr0, lane);
  bool all_finite = true;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    if (WarpAnyNonFiniteHalf2<2 * NT_S>(&h[mt][0][0])) {  // rare
      ScoreProductMTile<D, MT>(s[mt], mt, qf, sQ, tK, wr0, lane);
      all_finite = false;
    } else {
#pragma unroll
      for (int j = 0; j < NT_S; ++j) {
        const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&h[mt][j][0]));
        const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&h[mt][j][1]));
        s[mt][j][0] = lo.x;
        s[mt][j][1] = lo.y;
        s[mt][j][2] = hi.x;
        s[mt][j][3] = hi.y;
      }
    }
  }
  return all_finite;
}

// Mask (partial tiles only) and the rows' attended max |S| of this thread, for the overflow test.
template <int MT>
__device__ __forceinline__ void MaskAndAbsMax(float (&s)[MT][kTileN / 8][4], float (&amax)[MT][2], bool full, int t,
                                              int valid, const Geometry& geo, const int (&row_pos)[MT][2], int tq) {
  constexpr int NT_S = kTileN / 8;
  const float NEG_INF = -INFINITY;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float am = 0.f;
      if (full) {
        float t4[4];
#pragma unroll
        for (int q4 = 0; q4 < 4; ++q4)
          t4[q4] = fmaxf(fmaxf(fabsf(s[mt][2 * q4][2 * rr]), fabsf(s[mt][2 * q4][2 * rr + 1])),
                         fmaxf(fabsf(s[mt][2 * q4 + 1][2 * rr]), fabsf(s[mt][2 * q4 + 1][2 * rr + 1])));
        am = fmaxf(fmaxf(t4[0], t4[1]), fmaxf(t4[2], t4[3]));
      } else {
#pragma unroll
        for (int j = 0; j < NT_S; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][j][2 * rr + e];
            const int key = t * kTileN + j * 8 + tq * 2 + e;
            if (!(key < valid && geo.Allowed(row_pos[mt][rr], key))) x = NEG_INF;
            am = fmaxf(am, x == NEG_INF ? 0.f : fabsf(x));
          }
      }
      amax[mt][rr] = am;
    }
}

// Overflow fallback decision: whether any row of the warp would overflow the half type (returned),
// and per row (ovf, quad-reduced; only computed in that rare case).
template <int MT>
__device__ __forceinline__ bool OverflowRows(bool (&ovf)[MT][2], const float (&amax)[MT][2], float thr) {
  bool any_ovf = false;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) any_ovf |= amax[mt][0] >= thr || amax[mt][1] >= thr;
  any_ovf = __any_sync(0xffffffffu, any_ovf);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) ovf[mt][rr] = false;
  if (any_ovf) {  // rare: per-row decision, quad-reduced
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        ovf[mt][rr] = QuadRowMax(amax[mt][rr]) >= thr;
      }
  }
  return any_ovf;
}

// The tile maximum of row (mt, rr) over this thread's 16 scores (before the quad reduction).
template <int MT>
__device__ __forceinline__ float ThreadRowMax(const float (&s)[MT][kTileN / 8][4], int mt, int rr) {
  float t4[4];
#pragma unroll
  for (int q4 = 0; q4 < 4; ++q4)
    t4[q4] = fmaxf(fmaxf(s[mt][2 * q4][2 * rr], s[mt][2 * q4][2 * rr + 1]),
                   fmaxf(s[mt][2 * q4 + 1][2 * rr], s[mt][2 * q4 + 1][2 * rr + 1]));
  return fmaxf(fmaxf(t4[0], t4[1]), fmaxf(t4[2], t4[3]));
}

// The rows' maxima over the quad of lanes that holds each row's 64 scores.
template <int MT>
__device__ __forceinline__ void QuadMax(float (&mx)[MT][2]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) mx[mt][rr] = fmaxf(mx[mt][rr], __shfl_xor_sync(0xffffffffu, mx[mt][rr], 1));
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) mx[mt][rr] = fmaxf(mx[mt][rr], __shfl_xor_sync(0xffffffffu, mx[mt][rr], 2));
}

// x = round(S) + shift (overflowing rows: fp32 S + shift), and the rows' tile maxima, quad-reduced
// (all rows first: independent chains).
template <typename T, int MT>
__device__ __forceinline__ void RoundShiftMax(float (&s)[MT][kTileN / 8][4], float (&mx)[MT][2],
                                              const float (&shift)[MT][2], const bool (&ovf)[MT][2], bool full,
                                              bool any_ovf) {
  constexpr int NT_S = kTileN / 8;
  const float NEG_INF = -INFINITY;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const float sh = shift[mt][rr];
      if (full && !any_ovf) {
#pragma unroll
        for (int j = 0; j < NT_S; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) s[mt][j][2 * rr + e] = RoundScore<T>(s[mt][j][2 * rr + e]) + sh;
      } else {
        const bool ov = ovf[mt][rr];
#pragma unroll
        for (int j = 0; j < NT_S; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][j][2 * rr + e];
            x = x == NEG_INF ? NEG_INF : (ov ? x : RoundScore<T>(x)) + sh;
          }
      }
      mx[mt][rr] = ThreadRowMax<MT>(s, mt, rr);
    }
  QuadMax<MT>(mx);
}

// The full-tile step for fp16 sums that all stayed finite (HalfAccScores): x = S + shift (S is
// a half value already, so RoundShiftMax's rounding would return it unchanged, and no row can
// overflow), and the rows' tile maxima, quad-reduced.
template <int MT>
__device__ __forceinline__ void AddShiftMax(float (&s)[MT][kTileN / 8][4], float (&mx)[MT][2],
                                            const float (&shift)[MT][2]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
#pragma unroll
      for (int j = 0; j < kTileN / 8; ++j) {
        s[mt][j][2 * rr] += shift[mt][rr];
        s[mt][j][2 * rr + 1] += shift[mt][rr];
      }
      mx[mt][rr] = ThreadRowMax<MT>(s, mt, rr);
    }
  QuadMax<MT>(mx);
}

// ---- the kExt steps: masks and softcap ----

// Element offsets of this thread's rows in the mask (-1: a row past the CTA's rows).
template <int MT>
__device__ __forceinline__ void MaskRowOffsets(const FwdParams& p, int64_t (&mrow)[MT][2], int b, int hkv, int R0,
                                               int R1, int wr0, int g) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int R = R0 + wr0 + mt * 16 + g + rr * 8;
      mrow[mt][rr] = -1;
      if (R < R1) {
        const int i = R / p.group, gh = R % p.group;
        mrow[mt][rr] = b * p.m_sb + (static_cast<int64_t>(hkv) * p.group + gh) * p.m_sh + static_cast<int64_t>(i) * p.m_ss;
      }
    }
}

// S = cap·tanh(S / cap) in fp32 (before the mask, the overflow test and the rounding).
template <int MT>
__device__ __forceinline__ void SoftcapTile(float (&s)[MT][kTileN / 8][4], float cap) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < kTileN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][j][e] = cap * tanhf(s[mt][j][e] / cap);
}

// Mask of a tile with a bool (MK = 1) or additive (MK = 2) mask: the causal/window/padding test
// (partial tiles only), then the mask element (every tile; keys at or past mask_len are masked);
// a masked score becomes -inf. And the rows' attended max |S| of this thread, for the overflow test.
template <int MK, typename T, int MT, bool kUniform>
__device__ __forceinline__ void MaskTile(const FwdParams& p, float (&s)[MT][kTileN / 8][4], float (&amax)[MT][2],
                                         bool full, int t, int valid, const Geometry& geo, const int (&row_pos)[MT][2],
                                         const int64_t (&mrow)[MT][2], const float (&kb)[kTileN / 8][2], int tq) {
  constexpr int NT_S = kTileN / 8;
  const float NEG_INF = -INFINITY;
  const int klim = min(valid, p.mask_len);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int64_t mr = mrow[mt][rr];
      float am = 0.f;
#pragma unroll
      for (int j = 0; j < NT_S; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[mt][j][2 * rr + e];
          const int key = t * kTileN + j * 8 + tq * 2 + e;
          bool att;
          if constexpr (kUniform) {  // the tile's key mask, read once (LoadKeyMask)
            att = kb[j][e] != NEG_INF && (full || geo.Allowed(row_pos[mt][rr], key));
          } else {
            // the element is read only for a row of the CTA and a key inside the bounds and the
            // geometry (conditional reads: fewer registers than reading every element)
            att = mr >= 0 && key < klim && (full || geo.Allowed(row_pos[mt][rr], key));
            if (att) att = MaskAttendsAt<MK, T>(p.mask, mr + key);
          }
          if (!att) x = NEG_INF;
          am = fmaxf(am, x == NEG_INF ? 0.f : fabsf(x));
        }
      amax[mt][rr] = am;
    }
}

// The additive-mask form of RoundShiftMax: x = (round(S) + mask) + shift for attended scores
// (overflowing rows: fp32 S), the mask element read again (L1) rather than kept in registers;
// then the rows' tile maxima, quad-reduced.
template <typename T, int MT, bool kUniform>
__device__ __forceinline__ void RoundAddShiftMax(const FwdParams& p, float (&s)[MT][kTileN / 8][4], float (&mx)[MT][2],
                                                 const float (&shift)[MT][2], const bool (&ovf)[MT][2], int t,
                                                 const int64_t (&mrow)[MT][2], const float (&kb)[kTileN / 8][2],
                                                 int tq) {
  constexpr int NT_S = kTileN / 8;
  const float NEG_INF = -INFINITY;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const float sh = shift[mt][rr];
      const bool ov = ovf[mt][rr];
      const int64_t mr = mrow[mt][rr];
#pragma unroll
      for (int j = 0; j < NT_S; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[mt][j][2 * rr + e];
          const int key = t * kTileN + j * 8 + tq * 2 + e;
          // attended (x > -inf) implies mr >= 0 and key < mask_len: the read is in bounds
          if (x != NEG_INF)
            x = ((ov ? x : RoundScore<T>(x)) + (kUniform ? kb[j][e] : MaskAddAt<T>(p.mask, mr + key))) + sh;
        }
      mx[mt][rr] = ThreadRowMax<MT>(s, mt, rr);
    }
  QuadMax<MT>(mx);
}

// Whether every row of the CTA reads the same mask row: masks broadcast over the query rows
// (m_ss = 0) and over the heads of the CTA's rows (m_sh = 0, or one head per CTA) — the
// [B,1,1,Skv] padding masks that exporters write.
__device__ __forceinline__ bool MaskRowUniform(const FwdParams& p) {
  return p.m_ss == 0 && (p.m_sh == 0 || p.group == 1);
}

// The tile's 16 keys of this thread in a row-uniform mask (at element offset mr), read once for
// all its rows, as additive values: bool true 0, false -inf; keys at or past min(valid,
// mask_len) -inf. The same values MaskTile/RoundAddShiftMax read per row otherwise.
template <int MK, typename T>
__device__ __forceinline__ void LoadKeyMask(const FwdParams& p, float (&kb)[kTileN / 8][2], int64_t mr, int t,
                                            int valid, int tq) {
  const int klim = min(valid, p.mask_len);
#pragma unroll
  for (int j = 0; j < kTileN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int key = t * kTileN + j * 8 + tq * 2 + e;
      float v = -INFINITY;
      if (key < klim) {
        if constexpr (MK == 1) v = MaskBoolAt(p.mask, mr + key) ? 0.f : -INFINITY;
        else v = MaskAddAt<T>(p.mask, mr + key);
      }
      kb[j][e] = v;
    }
}

// The mask step of a kExt kernel: softcap (if any), then the mask of kind mask_kind (row-uniform
// masks: the tile's key mask into kb first, which the rounding step reuses).
template <typename T, int MT>
__device__ __forceinline__ void ExtMaskStep(const FwdParams& p, float (&s)[MT][kTileN / 8][4], float (&amax)[MT][2],
                                            bool full, int t, int valid, const Geometry& geo,
                                            const int (&row_pos)[MT][2], const int64_t (&mrow)[MT][2],
                                            int64_t mrow_uniform, float (&kb)[kTileN / 8][2], int mask_kind, int tq) {
  if (p.softcap > 0.f) SoftcapTile<MT>(s, p.softcap);
  const bool uniform = MaskRowUniform(p);
  if (mask_kind == 1) {
    if (uniform) {
      LoadKeyMask<1, T>(p, kb, mrow_uniform, t, valid, tq);
      MaskTile<1, T, MT, true>(p, s, amax, full, t, valid, geo, row_pos, mrow, kb, tq);
    } else {
      MaskTile<1, T, MT, false>(p, s, amax, full, t, valid, geo, row_pos, mrow, kb, tq);
    }
  } else if (mask_kind == 2) {
    if (uniform) {
      LoadKeyMask<2, T>(p, kb, mrow_uniform, t, valid, tq);
      MaskTile<2, T, MT, true>(p, s, amax, full, t, valid, geo, row_pos, mrow, kb, tq);
    } else {
      MaskTile<2, T, MT, false>(p, s, amax, full, t, valid, geo, row_pos, mrow, kb, tq);
    }
  } else {
    MaskAndAbsMax<MT>(s, amax, full, t, valid, geo, row_pos, tq);
  }
}

// The rounding step of a kExt kernel: with an additive mask x = (round(S) + mask) + shift, else as
// the plain kernel (a bool mask left -inf in masked scores: never the `full` fast form).
template <typename T, int MT>
__device__ __forceinline__ void ExtRoundStep(const FwdParams& p, float (&s)[MT][kTileN / 8][4], float (&mx)[MT][2],
                                             const float (&shift)[MT][2], const bool (&ovf)[MT][2], bool full,
                                             bool any_ovf, int t, const int64_t (&mrow)[MT][2],
                                             const float (&kb)[kTileN / 8][2], int mask_kind, int tq) {
  if (mask_kind == 2 && MaskRowUniform(p)) RoundAddShiftMax<T, MT, true>(p, s, mx, shift, ovf, t, mrow, kb, tq);
  else if (mask_kind == 2) RoundAddShiftMax<T, MT, false>(p, s, mx, shift, ovf, t, mrow, kb, tq);
  else RoundShiftMax<T, MT>(s, mx, shift, ovf, full && mask_kind == 0, any_ovf);
}

// Online softmax in fp32: new running max, P = 2^(x·log2e − m·log2e) rounded to the half type
// (packed into pf for P·V), l and O rescaled by the correction factor.
template <int D, typename T, int MT>
__device__ __forceinline__ void SoftmaxUpdate(uint32_t (&pf)[MT][kTileN / 8][2], const float (&s)[MT][kTileN / 8][4],
                                              const float (&mx)[MT][2], float (&m_run)[MT][2], float (&l_run)[MT][2],
                                              float (&o)[MT][D / 8][4]) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int NT_S = kTileN / 8, NT_O = D / 8;
  const float NEG_INF = -INFINITY;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const float m_new = fmaxf(m_run[mt][rr], mx[mt][rr]);
      const float mL = m_new == NEG_INF ? 0.f : m_new * kLog2e;
      const float corr = Exp2(fmaf(m_run[mt][rr], kLog2e, -mL));
      m_run[mt][rr] = m_new;
      float ps[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < NT_S; ++j) {
        const T2 ph = Tr::Pack(Exp2(fmaf(s[mt][j][2 * rr], kLog2e, -mL)), Exp2(fmaf(s[mt][j][2 * rr + 1], kLog2e, -mL)));
        const float2 pr = Tr::Unpack(ph);
        ps[j & 3] += pr.x + pr.y;
        pf[mt][j][rr] = AsU32(ph);
      }
      l_run[mt][rr] = l_run[mt][rr] * corr + ((ps[0] + ps[1]) + (ps[2] + ps[3]));
#pragma unroll
      for (int j = 0; j < NT_O; ++j) {
        o[mt][j][2 * rr] *= corr;
        o[mt][j][2 * rr + 1] *= corr;
      }
    }
}

// O += P·V (fp32 accumulators), V from buffer buf. (tV is formed here, not passed in: that keeps
// the address arithmetic, and so the PTX, exactly that of the single-function kernel.)
template <int D, typename T, int MT>
__device__ __forceinline__ void PvProduct(float (&o)[MT][D / 8][4], const uint32_t (&pf)[MT][kTileN / 8][2],
                                          const SmemTiles<T>& sm, int buf, int lane) {
  constexpr int LD = D + kPad, NT_O = D / 8;
  const T* tV = sm.sV + buf * kTileN * LD;
#pragma unroll
  for (int kk = 0; kk < kTileN / 16; ++kk) {
#pragma unroll
    for (int jj = 0; jj < NT_O / 2; ++jj) {
      uint32_t b0, b1, b2, b3;
      LdMatrixX4Trans(SmemAddr(tV + (kk * 16 + (lane & 15)) * LD + jj * 16 + (lane >> 4) * 8), b0, b1, b2, b3);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint32_t a[4] = {pf[mt][2 * kk][0], pf[mt][2 * kk][1], pf[mt][2 * kk + 1][0], pf[mt][2 * kk + 1][1]};
        Mma16816<T>(o[mt][2 * jj], a, b0, b1);
        Mma16816<T>(o[mt][2 * jj + 1], a, b2, b3);
      }
    }
  }
}

// Epilogue: l quad-reduced; y = O / l in the half type (one split), or the split's fp32 (O, m, l).
template <int D, typename T, int MT>
__device__ __forceinline__ void StoreRows(const FwdParams& p, const float (&o)[MT][D / 8][4], const float (&m_run)[MT][2],
                                          const float (&l_run)[MT][2], int R0, int R1, int wr0, int g, int tq, int b,
                                          int hkv, int split, int64_t slab) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  constexpr int NT_O = D / 8;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const float l = QuadRowSum(l_run[mt][rr]);
      const int R = R0 + wr0 + mt * 16 + g + rr * 8;
      if (R >= R1) continue;
      if (p.splits == 1) {
        const float inv = l != 0.f ? 1.0f / l : 0.f;
        const int i = R / p.group, gh = R % p.group;
        T* y = static_cast<T*>(p.y) + b * p.y_sb + (static_cast<int64_t>(hkv) * p.group + gh) * p.y_sh +
               static_cast<int64_t>(i) * p.y_ss;
#pragma unroll
        for (int j = 0; j < NT_O; ++j)
          *reinterpret_cast<T2*>(y + j * 8 + tq * 2) = Tr::Pack(o[mt][j][2 * rr] * inv, o[mt][j][2 * rr + 1] * inv);
      } else {
        const int64_t prow = (slab * p.splits + split) * p.rows + R;
        float* po = p.part_o + prow * D;
#pragma unroll
        for (int j = 0; j < NT_O; ++j)
          *reinterpret_cast<float2*>(po + j * 8 + tq * 2) = make_float2(o[mt][j][2 * rr], o[mt][j][2 * rr + 1]);
        if (tq == 0) *reinterpret_cast<float2*>(p.part_ml + prow * 2) = make_float2(m_run[mt][rr], l);
      }
    }
}

// MT: 16-row m-tiles per warp (2: 32 rows per warp, K/V fragments reused twice). kExt: the
// instantiation with masks and softcap (p.mask_kind, p.softcap, units); the plain one has neither.
// kHalfAcc (plain fp16 only): the score product accumulates in fp16 (FlashScoreAccum "half").
template <int D, typename T, int MT, bool kExt, bool kHalfAcc = false>
__global__ void __launch_bounds__(128, 2) FlashFwdKernel(FwdParams p) {
  static_assert(!kHalfAcc || (!kExt && std::is_same<T, __half>::value), "fp16 accumulators: plain fp16 kernels");
  using S = FwdShape<D, MT>;
  constexpr int LD = S::LD, NT_O = S::NT_O, NT_S = S::NT_S;

  extern __shared__ uint4 smem_raw[];
  const int nthreads = blockDim.x;
  const int bm = (nthreads / 32) * 16 * MT;
  SmemTiles<T> sm;
  sm.sQ = reinterpret_cast<T*>(smem_raw);
  sm.sK = sm.sQ + bm * LD;
  sm.sV = sm.sK + 2 * kTileN * LD;
  sm.sKb = reinterpret_cast<float*>(sm.sV + 2 * kTileN * LD);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int2 tu = CtaTileUnit(p);
  const int tile_m = tu.x, hkv = tu.y;
  const int b = blockIdx.z / p.splits, split = blockIdx.z % p.splits;
  const int R0 = tile_m * bm, R1 = min(R0 + bm, p.rows);

  int valid = ValidLen(p.nonpad, b, p.kv_len);
  const int64_t off = p.nonpad != nullptr ? static_cast<int64_t>(valid) - p.q_len : p.past_len;
  // kExt: a mask plane that only restates padding (keys [0, n)) or causal + padding runs as the
  // plain steps with that geometry: the same scores attended, the same per-score arithmetic. The
  // key tiles (KeyTiles) then end at n, so split-KV divides only the attended tiles among the
  // splits: other split boundaries than the mask path's, fp32 results that may differ by rounding
  // (the selftest's emulation classifies the plane too, EmuGeometry).
  int mask_kind = kExt ? p.mask_kind : 0, causal = p.causal;
  if constexpr (kExt) {
    if (p.mcls != nullptr) {
      const int2 cls = p.mcls[(p.m_sb != 0 ? b : 0) * p.m_planes_h + (p.m_sh != 0 ? hkv * p.group : 0)];
      if (cls.x != 0) {
        if (p.skip_classified) return;  // the whole CTA: the sm90 kernel runs this plane
        mask_kind = 0;
        valid = min(valid, cls.y);
        if (cls.x == 2) causal = 1;
      }
    }
  }
  TileRange tr;
  tr.R0 = R0;
  tr.R1 = R1;
  tr.valid = valid;
  tr.off = off;
  KeyTiles<kTileN, true>(p, tr, split, p.splits, causal);
  const int t_begin = tr.t_begin, t_end = tr.t_end;

  const int64_t slab = static_cast<int64_t>(b) * p.hkv + hkv;
  const T* qbase = static_cast<const T*>(p.q) + b * p.q_sb;
  KvSource<T> src;
  src.kp = static_cast<const T*>(p.kp) + slab * p.kv_pad * D;
  src.v = static_cast<const T*>(p.v) + b * p.v_sb + (kExt ? hkv / p.kv_div : hkv) * p.v_sh;
  src.kb = p.kbar + slab * p.nblk * D;
  src.mv = kExt && p.mvalid != nullptr ? p.mvalid + b * p.mv_sb + hkv * p.mv_sh : nullptr;

  if (t_begin < t_end) {
    IssueQTile<D, T>(p, sm.sQ, qbase, hkv, R0, R1, bm, tid, nthreads);
    IssueKvTile<D, T, kExt>(p, sm, src, valid, t_begin, 0, tid, nthreads);
    CpAsyncCommit();
  }

  float o[MT][NT_O][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT_O; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
  float m_run[MT][2], l_run[MT][2], shift[MT][2];
  int row_pos[MT][2];  // absolute positions (< 2^31: FlashSupports bounds the lengths)
  const int wr0 = warp * 16 * MT;  // first row of this warp in the CTA tile
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      m_run[mt][rr] = -INFINITY;
      l_run[mt][rr] = 0.f;
      shift[mt][rr] = 0.f;
      row_pos[mt][rr] = static_cast<int>((R0 + wr0 + mt * 16 + g + rr * 8) / p.group + tr.off);
    }
  int64_t mrow[MT][2];  // kExt: the rows' offsets in the mask
  if constexpr (kExt) MaskRowOffsets<MT>(p, mrow, b, hkv, R0, R1, wr0, g);
  // kExt, row-uniform masks: the one mask row of the CTA, and this thread's keys of the tile in it
  [[maybe_unused]] const int64_t mrow_uniform = b * p.m_sb + static_cast<int64_t>(hkv) * p.group * p.m_sh;
  [[maybe_unused]] float kb[NT_S][2];
  uint32_t qf[S::QF][4];
  const bool warp_active = R0 + wr0 < R1;
  const Geometry geo{causal, p.left, p.right};
  const float thr = OverflowThreshold<T>();

  for (int t = t_begin; t < t_end; ++t) {
    const int buf = (t - t_begin) & 1;
    CpAsyncWaitAll();
    __syncthreads();
    if (t + 1 < t_end) {
      IssueKvTile<D, T, kExt>(p, sm, src, valid, t + 1, buf ^ 1, tid, nthreads);
      CpAsyncCommit();
    }
    if (!warp_active) continue;
    const T* tK = sm.sK + buf * kTileN * LD;
    if (S::kQInRegs && t == t_begin) LoadQFragments<D, T, MT>(qf, sm.sQ, wr0, lane);
    if (t == t_begin || t % p.blk_tiles == 0) BlockShift<D, T, MT>(p, shift, sm.sQ, sm.sKb + buf * D, wr0, g, tq);

    float s[MT][NT_S][4];
    bool half_sums = false;  // kHalfAcc: s holds every row's finite fp16 sums
    if constexpr (kHalfAcc) half_sums = HalfAccScores<D, MT>(s, qf, sm.sQ, tK, wr0, lane);
    else ScoreProduct<D, T, MT>(s, qf, sm.sQ, tK, wr0, lane);

    // (Softcap;) mask; overflow test on the attended |S| (a row whose tile would overflow the half
    // type keeps its fp32 scores); round S, (add the mask,) add the shift, online softmax; P
    // rounded for P·V.
    const bool full = t * kTileN >= tr.a_lo && (t + 1) * kTileN <= tr.a_hi;
    float mx[MT][2];
    if (kHalfAcc && half_sums && full) {
      AddShiftMax<MT>(s, mx, shift);
    } else {
      float amax[MT][2];
      if constexpr (kExt)
        ExtMaskStep<T, MT>(p, s, amax, full, t, tr.valid, geo, row_pos, mrow, mrow_uniform, kb, mask_kind, tq);
      else MaskAndAbsMax<MT>(s, amax, full, t, tr.valid, geo, row_pos, tq);
      bool ovf[MT][2];
      const bool any_ovf = OverflowRows<MT>(ovf, amax, thr);
      if constexpr (kExt) ExtRoundStep<T, MT>(p, s, mx, shift, ovf, full, any_ovf, t, mrow, kb, mask_kind, tq);
      else RoundShiftMax<T, MT>(s, mx, shift, ovf, full, any_ovf);
    }
    uint32_t pf[MT][NT_S][2];
    SoftmaxUpdate<D, T, MT>(pf, s, mx, m_run, l_run, o);
    PvProduct<D, T, MT>(o, pf, sm, buf, lane);
  }

  if (!warp_active) return;
  StoreRows<D, T, MT>(p, o, m_run, l_run, R0, R1, wr0, g, tq, b, hkv, split, slab);
}

// grid (rows, Hkv, B), block D/2 threads: merges the splits' (m, l, O) of one row in fp32.
template <typename T>
__global__ void CombineKernel(FwdParams p, int d) {
  using Tr = HalfTraits<T>;
  using T2 = typename Tr::T2;
  const int R = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
  const int c = threadIdx.x * 2;
  if (c >= d) return;
  const int64_t slab = static_cast<int64_t>(b) * p.hkv + hkv;
  float mmax = -INFINITY;
  for (int s = 0; s < p.splits; ++s) mmax = fmaxf(mmax, p.part_ml[((slab * p.splits + s) * p.rows + R) * 2]);
  const float mL = mmax == -INFINITY ? 0.f : mmax * kLog2e;
  float l = 0.f, o0 = 0.f, o1 = 0.f;
  for (int s = 0; s < p.splits; ++s) {
    const int64_t prow = (slab * p.splits + s) * p.rows + R;
    const float2 ml = *reinterpret_cast<const float2*>(p.part_ml + prow * 2);
    const float w = Exp2(fmaf(ml.x, kLog2e, -mL));
    l += w * ml.y;
    const float2 ov = *reinterpret_cast<const float2*>(p.part_o + prow * d + c);
    o0 += w * ov.x;
    o1 += w * ov.y;
  }
  const float inv = l != 0.f ? 1.0f / l : 0.f;
  const int i = R / p.group, gh = R % p.group;
  T* y = static_cast<T*>(p.y) + b * p.y_sb + (static_cast<int64_t>(hkv) * p.group + gh) * p.y_sh +
         static_cast<int64_t>(i) * p.y_ss;
  *reinterpret_cast<T2*>(y + c) = Tr::Pack(o0 * inv, o1 * inv);
}

// ---- host side ----

// Kernel shape, a function of the problem only: 4 warps; 32 rows per warp (MT = 2) for
// D <= 128 with more than 64 packed query rows, else 16 (D = 256, decode).
constexpr int kWarps = 4;

// The heads a CTA's rows come from: a kv head (its GQA group of query heads share the K'/V tiles),
// or one query head when the mask varies over the heads (its key validity, and so the PASA block
// mean, is then per query head).
int64_t Units(const AttentionProblem& p) {
  return p.mask.kind != MaskKind::kNone && p.mask.stride[1] != 0 ? p.q_heads : p.kv_heads;
}
// Mask planes of the key validity: over the batch and over the (query) heads, 1 where broadcast.
int64_t MaskPlanesB(const AttentionProblem& p) { return p.mask.stride[0] != 0 ? p.batch : 1; }
int64_t MaskPlanesH(const AttentionProblem& p) { return p.mask.stride[1] != 0 ? p.q_heads : 1; }
int64_t MaskRows(const AttentionProblem& p) { return p.mask.stride[2] != 0 ? p.q_len : 1; }
// Masks are classified per plane (FwdParams::mcls) unless nonpad_kv_seqlen moves the queries'
// offset per batch row (then the general mask path runs).
bool ClassifyMask(const AttentionProblem& p) {
  return p.mask.kind != MaskKind::kNone && p.nonpad_kv_seqlen == nullptr && p.q_len > 0 && p.kv_len > 0;
}

// The kExt kernels (masks, softcap) keep MT = 2 for D = 64 only: for D = 80..128 the mask step's
// registers push MT = 2 past 255 (ptxas spills the O accumulators), MT = 1 does not spill.
bool ExtKernel(const AttentionProblem& p) { return p.mask.kind != MaskKind::kNone || p.softcap > 0.f; }
int MTiles(const AttentionProblem& p) {
  const int64_t rows = p.q_len * (p.q_heads / std::max<int64_t>(1, Units(p)));
  if (ExtKernel(p) && p.head_dim > 64) return 1;
  return (p.head_dim <= 128 && rows > 64) ? 2 : 1;
}
int BlockM(const AttentionProblem& p) { return 16 * kWarps * MTiles(p); }

size_t SmemBytes(int d, int bm) {
  return static_cast<size_t>(bm + 4 * kTileN) * (d + kPad) * 2 + 2 * d * sizeof(float);
}

struct Layout {
  int64_t kv_pad = 0, nblk = 0, rows = 0, q_tiles = 0, units = 0;
  int splits = 1;
  bool sm90 = false;    // the Hopper kernel runs it (UseSm90); then splits = 1
  bool decode = false;  // a fused decode kernel runs it (UseDecode): no K' workspace, no pre-pass
  bool decode_reg = false;  // ... the register decode kernel (at most 2 packed rows)
  bool half_acc = false;    // fp16 score accumulators (UseHalfAcc), on the sm90 or mma.sync kernel
  size_t off_kbar = 0, off_po = 0, off_ml = 0, off_mv = 0, off_mrow = 0, off_mcls = 0, total = 0;
};

size_t Align256(size_t x) { return (x + 255) / 256 * 256; }

// Causal problems of at most this many packed rows per unit order their CTAs units first
// (CtaTileUnit: the measurements are there).
constexpr int64_t kUnitsFirstRows = 4096;

// The Hopper kernel (flash_sm90.cu) runs the shapes it covers on compute capability 9.0 (its
// sm_90a code runs nowhere else), the fused decode kernel (flash_decode.cu) the decode shapes;
// PASA_ONNX_CUDA_KERNEL=sm80 keeps the mma.sync main kernel with the shift pre-pass for both
// (read once per process).
bool Sm80Forced() {
  static const bool value = [] {
    const char* env = std::getenv("PASA_ONNX_CUDA_KERNEL");
    return env != nullptr && std::strcmp(env, "sm80") == 0;
  }();
  return value;
}
// PASA_ONNX_CUDA_SCORE_ACCUM: "float" (the default) or "half", read once per process. "half"
// accumulates the score product in fp16 (PASA's own setting, docs/cuda-kernels.md) for plain fp16
// problems on the mma.sync and sm90 kernels; anything else keeps fp32 accumulation.
enum class ScoreAccumSetting { kFloat, kHalf, kUnknown };
ScoreAccumSetting ScoreAccumFromEnv() {
  static const ScoreAccumSetting value = [] {
    const char* env = std::getenv("PASA_ONNX_CUDA_SCORE_ACCUM");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "float") == 0) return ScoreAccumSetting::kFloat;
    return std::strcmp(env, "half") == 0 ? ScoreAccumSetting::kHalf : ScoreAccumSetting::kUnknown;
  }();
  return value;
}
// fp16 inputs, no mask or softcap (the plain kernel). (Decode shapes never ask: MakeLayout
// settles them first.)
bool UseHalfAcc(const AttentionProblem& p) {
  return ScoreAccumFromEnv() == ScoreAccumSetting::kHalf && p.q.type == ElemType::kFloat16 && !ExtKernel(p);
}

bool DeviceIsSm90() {
  const DeviceCaps c = CurrentDeviceCaps();
  return c.cc_major == 9 && c.cc_minor == 0;
}
// `splits`, `rows`: the mma.sync path's split factor and packed rows per unit (MakeLayout).
bool UseSm90(const AttentionProblem& p, int splits, int64_t rows) {
#if PASA_HAVE_SM90
  return Sm90Covers(static_cast<int>(p.head_dim), p.softcap > 0.f, ClassifyMask(p), p.mask.kind != MaskKind::kNone,
                    splits, rows) &&
         !Sm80Forced() && DeviceIsSm90();
#else
  (void)p, (void)splits, (void)rows, (void)Sm80Forced, (void)DeviceIsSm90;
  return false;
#endif
}

int MaxSmemOptin();

// Decode shapes (at most 16 packed query rows, no mask or softcap, D 64 or 128, block_kv 128).
bool UseDecode(const AttentionProblem& p, int64_t rows) {
  return !Sm80Forced() && DecodeCovers(static_cast<int>(p.head_dim), p.block_kv, rows, p.kv_len, ExtKernel(p),
                                       MaxSmemOptin());
}
// Of those, at most 2 packed rows run the register decode kernel; PASA_ONNX_CUDA_KERNEL=decode16
// keeps the 16-warp one for them (read once per process).
bool UseDecodeReg(const AttentionProblem& p, int64_t rows) {
  static const bool decode16 = [] {
    const char* env = std::getenv("PASA_ONNX_CUDA_KERNEL");
    return env != nullptr && std::strcmp(env, "decode16") == 0;
  }();
  return !decode16 && DecodeRegCovers(static_cast<int>(p.head_dim), p.block_kv, rows, p.kv_len, ExtKernel(p));
}

Layout MakeLayout(const AttentionProblem& p) {
  Layout L;
  const int64_t n = p.block_kv;
  L.nblk = (p.kv_len + n - 1) / n;
  L.kv_pad = L.nblk * n;
  L.units = Units(p);
  const int64_t group = p.q_heads / L.units;
  L.rows = p.q_len * group;
  const int bm = BlockM(p);
  L.q_tiles = (L.rows + bm - 1) / bm;
  // The mma.sync path's fixed split-KV factor, a function of the problem only (never of the
  // device): aim at >= 256 CTAs, with at least 4 key tiles per split and at most 64 splits.
  const int64_t base = L.q_tiles * L.units * p.batch;
  const int64_t kv_tiles = (p.kv_len + kTileN - 1) / kTileN;
  int64_t s = 1;
  if (base < 128 && kv_tiles >= 8) s = std::min<int64_t>({(256 + base - 1) / base, kv_tiles / 4, 64});
  L.splits = static_cast<int>(std::max<int64_t>(1, s));
  const int64_t slabs = p.batch * L.units;
  // Decode shapes first (they never run the sm90 kernel: no device queries for them).
  L.decode = UseDecode(p, L.rows);
  if (L.decode) {  // split partials only: the kernel forms K' from the raw keys
    L.decode_reg = UseDecodeReg(p, L.rows);
    L.splits = L.decode_reg ? DecodeRegSplits(p.batch, L.units, L.nblk) : DecodeSplits(p.batch, L.units, L.nblk);
    L.off_po = 0;
    size_t off = Align256(static_cast<size_t>(slabs * L.splits * L.rows * p.head_dim) * sizeof(float));
    L.off_ml = off;
    off += Align256(static_cast<size_t>(slabs * L.splits * L.rows * 2) * sizeof(float));
    L.total = off;
    return L;
  }
  // The sm90 kernel never splits: where it runs there is no split workspace and no combine.
  L.half_acc = UseHalfAcc(p);
  L.sm90 = UseSm90(p, L.splits, L.rows);
  if (L.sm90) L.splits = 1;
  const size_t es = 2;
  size_t off = Align256(static_cast<size_t>(slabs * L.kv_pad * p.head_dim) * es);
  L.off_kbar = off;
  off += Align256(static_cast<size_t>(slabs * L.nblk * p.head_dim) * sizeof(float));
  if (L.splits > 1) {
    L.off_po = off;
    off += Align256(static_cast<size_t>(slabs * L.splits * L.rows * p.head_dim) * sizeof(float));
    L.off_ml = off;
    off += Align256(static_cast<size_t>(slabs * L.splits * L.rows * 2) * sizeof(float));
  }
  if (p.mask.kind != MaskKind::kNone) {
    L.off_mv = off;
    off += Align256(static_cast<size_t>(MaskPlanesB(p) * MaskPlanesH(p) * p.kv_len));
    if (ClassifyMask(p)) {
      L.off_mrow = off;
      off += Align256(static_cast<size_t>(MaskPlanesB(p) * MaskPlanesH(p) * MaskRows(p)) * sizeof(int));
      L.off_mcls = off;
      off += Align256(static_cast<size_t>(MaskPlanesB(p) * MaskPlanesH(p)) * sizeof(int2));
    }
  }
  L.total = off;
  return L;
}

bool Aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

int MaxSmemOptin() { return CurrentDeviceCaps().max_smem_optin; }

// The pre-passes (kv_len > 0): the mask's key validity (masked problems), then the block shift.
template <int D, typename T>
void LaunchPrepass(const AttentionProblem& p, const Layout& L, cudaStream_t stream, char* w) {
  const bool masked = p.mask.kind != MaskKind::kNone;
  if (masked) {
    MaskKeyParams mp{};
    mp.mask = p.mask.data;
    mp.out = reinterpret_cast<uint8_t*>(w + L.off_mv);
    mp.sb = p.mask.stride[0];
    mp.sh = p.mask.stride[1];
    mp.ss = p.mask.stride[2];
    mp.rows = p.mask.stride[2] != 0 ? static_cast<int>(p.q_len) : 1;  // rows broadcast: one row
    mp.mask_len = static_cast<int>(p.mask.mask_len);
    mp.kv_len = static_cast<int>(p.kv_len);
    const dim3 grid(static_cast<unsigned>((p.kv_len + 31) / 32), static_cast<unsigned>(MaskPlanesH(p)),
                    static_cast<unsigned>(MaskPlanesB(p)));
    if (p.mask.kind == MaskKind::kBool) MaskKeysKernel<1, T><<<grid, dim3(32, 8), 0, stream>>>(mp);
    else MaskKeysKernel<2, T><<<grid, dim3(32, 8), 0, stream>>>(mp);
  }
  if (ClassifyMask(p)) {
    MaskClassParams cp{};
    cp.mask = p.mask.data;
    cp.row_len = reinterpret_cast<int*>(w + L.off_mrow);
    cp.cls = reinterpret_cast<int2*>(w + L.off_mcls);
    cp.sb = p.mask.stride[0];
    cp.sh = p.mask.stride[1];
    cp.ss = p.mask.stride[2];
    cp.rows = static_cast<int>(MaskRows(p));
    cp.mask_len = static_cast<int>(p.mask.mask_len);
    cp.off = static_cast<int>(p.past_len);
    const dim3 rows(static_cast<unsigned>(cp.rows), static_cast<unsigned>(MaskPlanesH(p)),
                    static_cast<unsigned>(MaskPlanesB(p)));
    if (p.mask.kind == MaskKind::kBool) MaskRowsKernel<1, T><<<rows, 128, 0, stream>>>(cp);
    else MaskRowsKernel<2, T><<<rows, 128, 0, stream>>>(cp);
    MaskClassKernel<<<dim3(static_cast<unsigned>(MaskPlanesH(p)), static_cast<unsigned>(MaskPlanesB(p))), 256, 0,
                      stream>>>(cp);
  }
  {
    ShiftParams sp{};
    sp.k = p.k.data;
    sp.kp = w;
    sp.kbar = reinterpret_cast<float*>(w + L.off_kbar);
    sp.nonpad = p.nonpad_kv_seqlen;
    sp.k_sb = p.k.stride[0];
    sp.k_sh = p.k.stride[1];
    sp.k_ss = p.k.stride[2];
    sp.hkv = static_cast<int>(L.units);
    sp.kv_len = static_cast<int>(p.kv_len);
    sp.kv_pad = static_cast<int>(L.kv_pad);
    sp.n = static_cast<int>(p.block_kv);
    sp.d = D;
    sp.scale = p.scale;
    sp.alpha = p.softcap > 0.f ? 0.f : p.alpha;  // softcap: no shift (the generic kernel's rule)
    sp.kv_div = static_cast<int>(L.units / p.kv_heads);
    const dim3 grid(static_cast<unsigned>(L.nblk), static_cast<unsigned>(L.units), static_cast<unsigned>(p.batch));
    if (masked) {
      sp.mvalid = reinterpret_cast<const uint8_t*>(w + L.off_mv);
      sp.mv_sb = p.mask.stride[0] != 0 ? MaskPlanesH(p) * p.kv_len : 0;
      sp.mv_sh = p.mask.stride[1] != 0 ? p.kv_len : 0;
      ShiftKeysKernel<T, true><<<grid, kShiftGroups * D / 2, 0, stream>>>(sp);
    } else {
      ShiftKeysKernel<T, false><<<grid, kShiftGroups * D / 2, 0, stream>>>(sp);
    }
  }
}

// The kExt fields of the main kernel's parameters: mask view, key validity, softcap, units.
void SetExtParams(const AttentionProblem& p, const Layout& L, char* w, FwdParams& fp) {
  const bool masked = p.mask.kind != MaskKind::kNone;
  fp.mask = masked ? p.mask.data : nullptr;
  fp.mvalid = masked ? reinterpret_cast<const uint8_t*>(w + L.off_mv) : nullptr;
  fp.m_sb = p.mask.stride[0];
  fp.m_sh = p.mask.stride[1];
  fp.m_ss = p.mask.stride[2];
  fp.mv_sb = masked && p.mask.stride[0] != 0 ? MaskPlanesH(p) * p.kv_len : 0;
  fp.mv_sh = masked && p.mask.stride[1] != 0 ? p.kv_len : 0;
  fp.mask_kind = !masked ? 0 : (p.mask.kind == MaskKind::kBool ? 1 : 2);
  fp.mask_len = masked ? static_cast<int>(p.mask.mask_len) : static_cast<int>(p.kv_len);
  fp.kv_div = static_cast<int>(L.units / p.kv_heads);
  fp.softcap = p.softcap > 0.f ? p.softcap : 0.f;
  fp.mcls = ClassifyMask(p) ? reinterpret_cast<const int2*>(w + L.off_mcls) : nullptr;
  fp.m_planes_h = static_cast<int>(MaskPlanesH(p));
}

// The fused decode kernel (no pre-pass: it forms K' itself), then the merge of its splits.
template <typename T>
std::string LaunchDecodePath(const AttentionProblem& p, const Layout& L, const FwdParams& fp, cudaStream_t stream) {
  DecodeParams dp{};
  dp.f = fp;
  dp.k = p.k.data;
  dp.k_sb = p.k.stride[0];
  dp.k_sh = p.k.stride[1];
  dp.k_ss = p.k.stride[2];
  dp.alpha = p.alpha;
  const bool bf16 = std::is_same<T, __nv_bfloat16>::value;
  const std::string err =
      L.decode_reg ? LaunchDecodeReg(dp, static_cast<int>(p.head_dim), bf16, static_cast<int>(L.units),
                                     static_cast<int>(p.batch), stream)
                   : LaunchDecode(dp, static_cast<int>(p.head_dim), bf16, static_cast<int>(L.units),
                                  static_cast<int>(p.batch), MaxSmemOptin(), stream);
  if (!err.empty()) return err;
  CombineKernel<T><<<dim3(static_cast<unsigned>(L.rows), static_cast<unsigned>(L.units),
                          static_cast<unsigned>(p.batch)),
                     static_cast<unsigned>(p.head_dim / 2), 0, stream>>>(fp, static_cast<int>(p.head_dim));
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return std::string("flash decode: launch: ") + cudaGetErrorString(e);
  return "";
}

template <int D, typename T, int MT, bool kExt, bool kHalfAcc = false>
std::string Launch(const AttentionProblem& p, const Layout& L, cudaStream_t stream, void* ws) {
  char* w = static_cast<char*>(ws);
  FwdParams fp{};
  fp.q = p.q.data;
  fp.v = p.v.data;
  fp.y = p.y;
  fp.kp = w;
  fp.kbar = reinterpret_cast<const float*>(w + L.off_kbar);
  const bool partials = L.splits > 1 || L.decode;  // the decode kernel always writes partials
  fp.part_o = partials ? reinterpret_cast<float*>(w + L.off_po) : nullptr;
  fp.part_ml = partials ? reinterpret_cast<float*>(w + L.off_ml) : nullptr;
  fp.nonpad = p.nonpad_kv_seqlen;
  fp.q_sb = p.q.stride[0];
  fp.q_sh = p.q.stride[1];
  fp.q_ss = p.q.stride[2];
  fp.v_sb = p.v.stride[0];
  fp.v_sh = p.v.stride[1];
  fp.v_ss = p.v.stride[2];
  fp.y_sb = p.y_stride[0];
  fp.y_sh = p.y_stride[1];
  fp.y_ss = p.y_stride[2];
  fp.past_len = p.past_len;
  fp.hkv = static_cast<int>(L.units);
  fp.group = static_cast<int>(p.q_heads / L.units);
  fp.q_len = static_cast<int>(p.q_len);
  fp.kv_len = static_cast<int>(p.kv_len);
  fp.kv_pad = static_cast<int>(L.kv_pad);
  fp.nblk = static_cast<int>(L.nblk);
  fp.blk_tiles = static_cast<int>(p.block_kv / kTileN);
  fp.rows = static_cast<int>(L.rows);
  fp.splits = L.splits;
  fp.causal = p.causal ? 1 : 0;
  fp.left = static_cast<int>(p.left_window);
  fp.right = static_cast<int>(p.right_window);
  fp.scale = p.scale;
  fp.units_first = p.causal && L.rows <= kUnitsFirstRows ? 1 : 0;
  SetExtParams(p, L, w, fp);
  if constexpr (!kExt && (D == 64 || D == 128)) {
    if (L.decode) return LaunchDecodePath<T>(p, L, fp, stream);
  }
  if (p.kv_len > 0) LaunchPrepass<D, T>(p, L, stream, w);
#if PASA_HAVE_SM90
  // Hopper: the sm90 kernel runs unmasked problems, and with a classified mask the padding and
  // causal+padding planes; the kExt kernel below then runs only the general planes (its CTAs of
  // classified planes return at once).
  if (L.sm90) {
    const std::string err = LaunchSm90(fp, D, std::is_same<T, __nv_bfloat16>::value, L.half_acc,
                                       static_cast<int>(L.units), static_cast<int>(p.batch), stream);
    if (!err.empty() || !kExt) return err;
    fp.skip_classified = 1;
  }
#endif
  const size_t smem = SmemBytes(D, 16 * kWarps * MT);
  cudaError_t e = AllowDynamicSmem<FlashFwdKernel<D, T, MT, kExt, kHalfAcc>>(static_cast<int>(smem));
  if (e != cudaSuccess) return std::string("flash: cudaFuncSetAttribute: ") + cudaGetErrorString(e);
  FlashFwdKernel<D, T, MT, kExt, kHalfAcc><<<dim3(static_cast<unsigned>(L.q_tiles), static_cast<unsigned>(L.units),
                                        static_cast<unsigned>(p.batch * L.splits)),
                                   32 * kWarps, smem, stream>>>(fp);
  if (L.splits > 1)
    CombineKernel<T><<<dim3(static_cast<unsigned>(L.rows), static_cast<unsigned>(L.units),
                            static_cast<unsigned>(p.batch)),
                       D / 2, 0, stream>>>(fp, D);
  e = cudaGetLastError();
  if (e != cudaSuccess) return std::string("flash: launch: ") + cudaGetErrorString(e);
  return "";
}

// The instantiation for the problem: MT = 2 or 1, the plain kernel or the kExt one (mask, softcap),
// or the plain fp16 kernel with fp16 score accumulators.
template <int D, typename T>
std::string LaunchMT(const AttentionProblem& p, const Layout& L, cudaStream_t stream, void* ws) {
  const bool two = MTiles(p) == 2, ext = ExtKernel(p);
  if constexpr (std::is_same<T, __half>::value) {
    if (L.half_acc && !L.decode) {
      if constexpr (D == 256) return Launch<D, T, 1, false, true>(p, L, stream, ws);
      else return two ? Launch<D, T, 2, false, true>(p, L, stream, ws) : Launch<D, T, 1, false, true>(p, L, stream, ws);
    }
  }
  if constexpr (D == 256) {
    return ext ? Launch<D, T, 1, true>(p, L, stream, ws) : Launch<D, T, 1, false>(p, L, stream, ws);
  } else if constexpr (D > 64) {  // kExt: MT = 1 only (see MTiles)
    if (ext) return Launch<D, T, 1, true>(p, L, stream, ws);
    return two ? Launch<D, T, 2, false>(p, L, stream, ws) : Launch<D, T, 1, false>(p, L, stream, ws);
  } else {
    if (ext) return two ? Launch<D, T, 2, true>(p, L, stream, ws) : Launch<D, T, 1, true>(p, L, stream, ws);
    return two ? Launch<D, T, 2, false>(p, L, stream, ws) : Launch<D, T, 1, false>(p, L, stream, ws);
  }
}

template <typename T>
std::string LaunchD(const AttentionProblem& p, const Layout& L, cudaStream_t stream, void* ws) {
  switch (p.head_dim) {
    case 64: return LaunchMT<64, T>(p, L, stream, ws);
    case 80: return LaunchMT<80, T>(p, L, stream, ws);
    case 96: return LaunchMT<96, T>(p, L, stream, ws);
    case 128: return LaunchMT<128, T>(p, L, stream, ws);
    case 256: return LaunchMT<256, T>(p, L, stream, ws);
    default: return "flash: unsupported head size " + std::to_string(p.head_dim);
  }
}

}  // namespace flash

bool FlashSupports(const AttentionProblem& p) {
  using flash::Aligned16;
  if (p.precision != Precision::kHalf) return false;
  if (p.q.type != ElemType::kFloat16 && p.q.type != ElemType::kBFloat16) return false;
  if (p.k.type != p.q.type || p.v.type != p.q.type || p.half_type != p.q.type) return false;
  if (!(p.softcap >= 0.f) || std::isinf(p.softcap)) return false;  // 0: none
  const int64_t d = p.head_dim;
  if (d != 64 && d != 80 && d != 96 && d != 128 && d != 256) return false;
  if (p.v_head_dim != d) return false;
  if (p.batch <= 0 || p.q_heads <= 0 || p.kv_heads <= 0 || p.q_heads % p.kv_heads != 0) return false;
  if (p.q_len < 0 || p.kv_len < 0 || p.block_kv <= 0 || p.block_kv % flash::kTileN != 0) return false;
  if (p.batch > 65535 || p.kv_heads > 65535 || flash::Units(p) > 65535) return false;
  const int64_t lim = int64_t{1} << 30;
  if (p.q_len * (p.q_heads / p.kv_heads) >= lim || p.kv_len >= lim) return false;
  if (p.mask.kind != MaskKind::kNone) {  // bool, or additive of the input's type; [B,Hq,Sq,mask_len] view
    if (p.mask.kind == MaskKind::kAdditive && p.mask.type != p.q.type) return false;
    if (p.mask.mask_len < 1 || p.mask.mask_len > p.kv_len || p.mask.stride[3] != 1) return false;
    for (int i = 0; i < 3; ++i)
      if (p.mask.stride[i] < 0) return false;
  }
  if (p.left_window >= lim || p.right_window >= lim) return false;
  for (const TensorView* t : {&p.q, &p.k, &p.v}) {
    if (t->stride[3] != 1 || !Aligned16(t->data)) return false;
    for (int i = 0; i < 3; ++i)
      if (t->stride[i] % 8 != 0) return false;
  }
  if (p.y_stride[3] != 1 || (reinterpret_cast<uintptr_t>(p.y) & 3u) != 0) return false;
  for (int i = 0; i < 3; ++i)
    if (p.y_stride[i] % 2 != 0) return false;
  if (static_cast<int>(flash::SmemBytes(static_cast<int>(d), flash::BlockM(p))) > flash::MaxSmemOptin()) return false;
  const flash::Layout L = flash::MakeLayout(p);
  if (L.q_tiles > 0x7fffffff || p.batch * L.splits > 65535) return false;
  return true;
}

size_t FlashWorkspaceBytes(const AttentionProblem& p) { return flash::MakeLayout(p).total; }

int FlashNumSplits(const AttentionProblem& p) { return flash::MakeLayout(p).splits; }

const char* FlashKernelName(const AttentionProblem& p) {
  const flash::Layout L = flash::MakeLayout(p);
  if (L.decode) return L.decode_reg ? "decode_reg" : "decode";
  if (L.half_acc) return L.sm90 ? "sm90-f16acc" : "sm80-f16acc";
  if (!L.sm90) return "sm80";
  return p.mask.kind != MaskKind::kNone ? "sm90/sm80" : "sm90";
}

std::string FlashSettingsError() {
  if (flash::ScoreAccumFromEnv() != flash::ScoreAccumSetting::kUnknown) return "";
  return std::string("environment variable PASA_ONNX_CUDA_SCORE_ACCUM is '") +
         std::getenv("PASA_ONNX_CUDA_SCORE_ACCUM") + "'; expected 'float' or 'half'";
}

std::string RunFlash(const AttentionProblem& p, cudaStream_t stream, void* workspace) {
  if (!FlashSupports(p)) return "flash: problem not supported by the flash path";
  const std::string bad = FlashSettingsError();
  if (!bad.empty()) return bad;
  if (p.batch == 0 || p.q_len == 0) return "";
  const flash::Layout L = flash::MakeLayout(p);
  if (p.q.type == ElemType::kFloat16) return flash::LaunchD<__half>(p, L, stream, workspace);
  return flash::LaunchD<__nv_bfloat16>(p, L, stream, workspace);
}

}  // namespace pasa::cuda

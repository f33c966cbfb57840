// Standalone harness of the flash path: random problems, RunFlash on the GPU, compared against a
// float64 attention (ONNX semantics) and against a step-by-step CPU emulation of the flash
// pipeline (same rounding points; docs/cuda-kernels.md), plus cudaEvent timings (medians).
//
// Build (no GPU needed):
//   nvcc -std=c++17 -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
//        -Xcompiler -fopenmp custom_ops/src/cuda/flash/flash_selftest.cu
//        custom_ops/src/cuda/flash/flash_fwd.cu -o flash_selftest
// Run:  ./flash_selftest [check|paper|bench|bench_normal|bench_scan|quick|mask|bench_mask]...   (default: check paper bench)
//   check: every case (masks and softcap included); quick: a few of each; mask: the mask and
//   softcap cases alone; bench_mask: the time of masks and softcap against the same shapes without;
//   bench_normal: bench's shapes on standard-normal inputs; bench_scan: one shape over key lengths.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flash.h"

namespace {

using pasa::AttentionProblem;
using pasa::ElemType;

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

// ---- host half types (round to nearest even) ----
uint16_t F2H(float f, bool bf) {
  if (bf) {
    const __nv_bfloat16_raw r = static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(f));
    return r.x;
  }
  const __half_raw r = static_cast<__half_raw>(__float2half_rn(f));
  return r.x;
}
float H2F(uint16_t u, bool bf) {
  if (bf) {
    uint32_t x = static_cast<uint32_t>(u) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  __half_raw r;
  r.x = u;
  return __half2float(__half(r));
}
float Rnd(float f, bool bf) { return H2F(F2H(f, bf), bf); }

// The kernel's score rounding: round-to-nearest-even on the fp32 bit pattern to the half type's
// significand (fp16: 11 bits, no subnormal grid; bf16: exact), see RoundScore in flash_fwd.cu.
float RoundScore(float s, bool bf) {
  uint32_t u;
  std::memcpy(&u, &s, 4);
  u = bf ? (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u : (u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}
float OverflowThreshold(bool bf) {
  const uint32_t u = 0x7F7F8000u;
  float f;
  std::memcpy(&f, &u, 4);
  return bf ? f : 65520.f;
}

struct Case {
  std::string name;
  int B = 1, Hq = 8, Hkv = 8, Sq = 256, Skv = 256, D = 128;
  bool bf = false, causal = false, layout3d = false, packed = false;
  int left = -1, right = -1, past = 0;
  std::vector<int64_t> nonpad;  // empty: none
  int dist = 0;                 // 0 normal(mean, amp); 1 paper uniform; 2 paper normal+spikes
  float mean = 0.f, amp = 1.f;
  float kmean = 0.f;            // extra shared offset added to K (O1-like stress)
  int block_kv = 128;
  float alpha = -1.f;           // <0: default for the type
  bool poison = false;          // ±inf / huge values in keys and values beyond nonpad
  bool fast_fill = false;       // timing only: cheap uniform(-1, 1) inputs
  unsigned seed = 1;
  // attn_mask: 0 none, 1 bool, 2 additive (the input's type). Its dims [mb?B:1, mh?Hq:1, ms?Sq:1,
  // mask_len]; a dim left out broadcasts (stride 0).
  int mask = 0;
  bool mb = true, mh = true, ms = true;
  int mask_len = -1;        // < 0: Skv
  int mpat = 0;             // 0 random (mask_p masked; additive: mask_amp·normal); 1 padding:
                            // batch b attends keys < Skv − 37·b (additive: 0 / -inf); 2 padding
                            // and causal (key <= i + past, as transformers writes it); 3 padding
                            // but key 3 of the middle row masked; 4 left padding (keys >= 37·b)
  float mask_p = 0.25f, mask_amp = 2.f;
  int masked_rows = 0;      // > 0: every masked_rows-th row of a mask plane attends nothing
  bool mask_cols = false;   // keys ≡ 5 (mod 17) masked in every row (they leave the block mean)
  bool mask_poison = false; // with mask_cols: ±inf in K and V at those keys
  bool mask_min = false;    // additive: masked keys hold the type's lowest finite value (transformers'
                            // finfo(dtype).min) instead of -inf
  float softcap = 0.f;
};

struct Tensor {
  std::vector<uint16_t> h;  // storage
  int64_t stride[4];
  int64_t offset = 0;
};

struct Result {
  double rel_rmse = 0, max_abs = 0, emu_max = 0, emu_rmse = 0, emu_rel_rmse = 0, y_rms = 0;
  long nonfinite = 0, emu_bad = 0;
  int splits = 1;
};

void MakeInputs(const Case& c, std::vector<uint16_t>& buf, Tensor& q, Tensor& k, Tensor& v) {
  std::mt19937_64 rng(c.seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  uint64_t lcg = c.seed * 0x9E3779B97F4A7C15ull + 1;
  auto draw = [&](float extra) {
    float x;
    if (c.fast_fill) {
      lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
      return Rnd(static_cast<float>(static_cast<int32_t>(lcg >> 32)) * 4.6566e-10f + extra, c.bf);
    }
    if (c.dist == 1) x = (ud(rng) - 0.5f) * 2.f * c.amp + c.mean;
    else if (c.dist == 2) x = nd(rng) + c.mean + (ud(rng) < 0.001f ? nd(rng) * c.amp : 0.f);
    else x = c.mean + c.amp * nd(rng);
    return Rnd(x + extra, c.bf);
  };
  const int64_t D = c.D;
  if (c.packed) {  // one [B, S, 3, H, D] buffer (Hq == Hkv, Sq == Skv)
    const int64_t H = c.Hq, S = c.Sq;
    buf.assign(static_cast<size_t>(c.B * S * 3 * H * D), 0);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t w = 0; w < 3; ++w)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t d = 0; d < D; ++d)
              buf[static_cast<size_t>((((b * S + s) * 3 + w) * H + h) * D + d)] =
                  F2H(draw(w == 1 ? c.kmean : 0.f), c.bf);
    for (Tensor* t : {&q, &k, &v}) {
      t->stride[0] = S * 3 * H * D;
      t->stride[1] = D;
      t->stride[2] = 3 * H * D;
      t->stride[3] = 1;
    }
    q.offset = 0;
    k.offset = H * D;
    v.offset = 2 * H * D;
    return;
  }
  auto fill = [&](Tensor& t, int H, int S, float extra) {
    t.h.resize(static_cast<size_t>(c.B) * H * S * D);
    for (auto& x : t.h) x = F2H(draw(extra), c.bf);
    if (c.layout3d) {
      t.stride[0] = int64_t{S} * H * D;
      t.stride[1] = D;
      t.stride[2] = int64_t{H} * D;
    } else {
      t.stride[0] = int64_t{H} * S * D;
      t.stride[1] = int64_t{S} * D;
      t.stride[2] = D;
    }
    t.stride[3] = 1;
  };
  fill(q, c.Hq, c.Sq, 0.f);
  fill(k, c.Hkv, c.Skv, c.kmean);
  fill(v, c.Hkv, c.Skv, 0.f);
  if (c.poison && !c.nonpad.empty()) {
    for (int b = 0; b < c.B; ++b)
      for (int h = 0; h < c.Hkv; ++h)
        for (int64_t s = c.nonpad[static_cast<size_t>(b)]; s < c.Skv; ++s)
          for (int64_t d = 0; d < D; ++d) {
            const size_t ik = static_cast<size_t>(b * k.stride[0] + h * k.stride[1] + s * k.stride[2] + d);
            k.h[ik] = F2H((s + d) % 2 ? INFINITY : -INFINITY, c.bf);
            v.h[ik] = F2H((s % 3) ? INFINITY : 6e4f, c.bf);
          }
  }
}

float At(const std::vector<uint16_t>& buf, const Tensor& t, bool bf, int64_t b, int64_t h, int64_t s, int64_t d) {
  const std::vector<uint16_t>& src = t.h.empty() ? buf : t.h;
  return H2F(src[static_cast<size_t>(t.offset + b * t.stride[0] + h * t.stride[1] + s * t.stride[2] + d)], bf);
}

struct Geo {
  bool causal;
  int left, right;
  bool Allowed(int64_t pos, int64_t key) const {
    const int64_t diff = pos - key;
    if (causal && diff < 0) return false;
    if (left >= 0 && diff > left) return false;
    if (right >= 0 && -diff > right) return false;
    return true;
  }
};

// The CTA row tiling and split boundaries of the kernel (copied logic, see flash_fwd.cu, KeyTiles):
// valid and causal are those the kernel's tile range uses (EmuGeometry).
struct CtaRange {
  int t_begin, t_end;
};
CtaRange KernelRange(const Case& c, const AttentionProblem& p, int group, int bm, int splits, int tile_m, int split,
                     int64_t valid, int64_t off, bool causal) {
  const int rows = c.Sq * group;
  const int R0 = tile_m * bm, R1 = std::min(R0 + bm, rows);
  const int64_t pos_first = R0 / group + off, pos_last = (R1 - 1) / group + off;
  int64_t k_lo = 0, k_hi = valid;
  if (p.left_window >= 0) k_lo = std::max<int64_t>(0, pos_first - p.left_window);
  if (causal) k_hi = std::min<int64_t>(k_hi, pos_last + 1);
  if (p.right_window >= 0) k_hi = std::min<int64_t>(k_hi, pos_last + p.right_window + 1);
  int tb = 0, te = 0;
  if (k_hi > k_lo) {
    tb = static_cast<int>(k_lo / 64);
    te = static_cast<int>((k_hi + 63) / 64);
  }
  const int nt = te - tb, per = (nt + splits - 1) / splits;
  const int sb = std::min(te, tb + split * per);
  return {sb, std::min(te, sb + per)};
}

struct Run {
  Case c;
  AttentionProblem p;
  std::vector<uint16_t> packed;
  Tensor q, k, v;
  std::vector<uint16_t> y;  // [B,Hq,Sq,D] contiguous or 3-D as the case says
  int64_t y_stride[4];
  std::vector<uint8_t> mbool;   // bool mask
  std::vector<uint16_t> madd;   // additive mask (half type bits)
  int64_t mstride[3] = {0, 0, 0};
  int64_t mlen = 0;
};

// Whether (b, query head h, row i) attends key by the mask; *add gets the additive value.
bool MaskAt(const Run& r, int64_t b, int64_t h, int64_t i, int64_t key, float* add) {
  *add = 0.f;
  if (r.c.mask == 0) return true;
  if (key >= r.mlen) return false;
  const size_t ix = static_cast<size_t>(b * r.mstride[0] + h * r.mstride[1] + i * r.mstride[2] + key);
  if (r.c.mask == 1) return r.mbool[ix] != 0;
  *add = H2F(r.madd[ix], r.c.bf);
  return *add != -INFINITY;
}

// The mask of the case, on the host (see Case).
void MakeMask(Run& r) {
  const Case& c = r.c;
  if (c.mask == 0) return;
  const int64_t nb = c.mb ? c.B : 1, nh = c.mh ? c.Hq : 1, ns = c.ms ? c.Sq : 1;
  r.mlen = c.mask_len < 0 ? c.Skv : c.mask_len;
  r.mstride[2] = c.ms ? r.mlen : 0;
  r.mstride[1] = c.mh ? ns * r.mlen : 0;
  r.mstride[0] = c.mb ? nh * ns * r.mlen : 0;
  const size_t n = static_cast<size_t>(nb * nh * ns * r.mlen);
  std::mt19937_64 rng(c.seed * 7919u + 17u);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  std::vector<float> val(n, 0.f);
  std::vector<uint8_t> att(n, 1);
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t i = 0; i < ns; ++i) {
        const bool row_off = c.masked_rows > 0 && (b * nh * ns + h * ns + i) % c.masked_rows == c.masked_rows - 1;
        for (int64_t key = 0; key < r.mlen; ++key) {
          const size_t ix = static_cast<size_t>(b * r.mstride[0] + h * r.mstride[1] + i * r.mstride[2] + key);
          bool a = true;
          if (c.mpat == 1) a = key < c.Skv - 37 * b;
          else if (c.mpat == 2) a = key < c.Skv - 37 * b && key <= i + c.past;
          else if (c.mpat == 3) a = key < c.Skv - 37 * b && !(i == ns / 2 && key == 3);
          else if (c.mpat == 4) a = key >= 37 * b;
          else a = ud(rng) >= c.mask_p;
          if (c.mpat == 0 && c.mask == 2) val[ix] = Rnd(c.mask_amp * nd(rng), c.bf);
          if (row_off || (c.mask_cols && key % 17 == 5)) a = false;
          att[ix] = a ? 1 : 0;
        }
      }
  if (c.mask == 1) {
    r.mbool = att;
  } else {
    r.madd.resize(n);
    const float off = !c.mask_min ? -INFINITY : (c.bf ? -3.38953139e38f : -65504.f);
    for (size_t ix = 0; ix < n; ++ix) r.madd[ix] = F2H(att[ix] ? val[ix] : off, c.bf);
  }
  if (c.mask_poison && c.mask_cols && !c.packed) {
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.Hkv; ++h)
        for (int64_t key = 5; key < c.Skv; key += 17)
          for (int64_t d = 0; d < c.D; ++d) {
            const size_t ik = static_cast<size_t>(b * r.k.stride[0] + h * r.k.stride[1] + key * r.k.stride[2] + d);
            r.k.h[ik] = F2H((key + d) % 2 ? INFINITY : -INFINITY, c.bf);
            r.v.h[ik] = F2H((key % 3) ? INFINITY : -INFINITY, c.bf);
          }
  }
}

float Alpha(const Case& c) { return c.alpha >= 0.f ? c.alpha : (c.bf ? 0.9689939f : 0.9375f); }

// The units of the kernel (flash_fwd.cu, Units): query heads when the mask varies over the heads.
int Units(const Run& r) { return r.c.mask != 0 && r.p.mask.stride[1] != 0 ? r.c.Hq : r.c.Hkv; }
// The kernel's CTA rows (flash_fwd.cu, MTiles): the kExt kernels keep 128 rows for D = 64 only.
int BlockRows(const Run& r, int rows) {
  const bool ext = r.c.mask != 0 || r.c.softcap > 0.f;
  if (ext && r.c.D > 64) return 64;
  return (r.c.D <= 128 && rows > 64) ? 128 : 64;
}

void Setup(Run& r) {
  const Case& c = r.c;
  MakeInputs(c, r.packed, r.q, r.k, r.v);
  AttentionProblem& p = r.p;
  p.batch = c.B;
  p.q_heads = c.Hq;
  p.kv_heads = c.Hkv;
  p.q_len = c.Sq;
  p.kv_len = c.Skv;
  p.head_dim = p.v_head_dim = c.D;
  const ElemType et = c.bf ? ElemType::kBFloat16 : ElemType::kFloat16;
  for (pasa::TensorView* t : {&p.q, &p.k, &p.v}) t->type = et;
  p.half_type = et;
  std::memcpy(p.q.stride, r.q.stride, sizeof(r.q.stride));
  std::memcpy(p.k.stride, r.k.stride, sizeof(r.k.stride));
  std::memcpy(p.v.stride, r.v.stride, sizeof(r.v.stride));
  if (c.layout3d || c.packed) {
    r.y_stride[0] = int64_t{c.Sq} * c.Hq * c.D;
    r.y_stride[1] = c.D;
    r.y_stride[2] = int64_t{c.Hq} * c.D;
  } else {
    r.y_stride[0] = int64_t{c.Hq} * c.Sq * c.D;
    r.y_stride[1] = int64_t{c.Sq} * c.D;
    r.y_stride[2] = c.D;
  }
  r.y_stride[3] = 1;
  std::memcpy(p.y_stride, r.y_stride, sizeof(r.y_stride));
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  p.causal = c.causal;
  p.left_window = c.left;
  p.right_window = c.right;
  p.past_len = c.past;
  p.precision = pasa::Precision::kHalf;
  p.alpha = Alpha(c);
  p.block_kv = c.block_kv;
  p.softcap = c.softcap;
  MakeMask(r);
  if (c.mask != 0) {
    p.mask.kind = c.mask == 1 ? pasa::MaskKind::kBool : pasa::MaskKind::kAdditive;
    p.mask.type = et;
    p.mask.stride[0] = r.mstride[0];
    p.mask.stride[1] = r.mstride[1];
    p.mask.stride[2] = r.mstride[2];
    p.mask.stride[3] = 1;
    p.mask.mask_len = r.mlen;
  }
}

// float64 attention with ONNX semantics.
void Golden(const Run& r, std::vector<double>& out) {
  const Case& c = r.c;
  const AttentionProblem& p = r.p;
  const int group = c.Hq / c.Hkv;
  out.assign(static_cast<size_t>(c.B) * c.Hq * c.Sq * c.D, 0.0);
  const Geo geo{c.causal, c.left, c.right};
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < c.B; ++b)
    for (int hq = 0; hq < c.Hq; ++hq) {
      const int64_t valid = c.nonpad.empty() ? c.Skv : std::min<int64_t>(c.Skv, c.nonpad[static_cast<size_t>(b)]);
      const int64_t off = c.nonpad.empty() ? c.past : valid - c.Sq;
      const int hk = hq / group;
      std::vector<double> sc(static_cast<size_t>(c.Skv)), qd(static_cast<size_t>(c.D));
      for (int i = 0; i < c.Sq; ++i) {
        for (int d = 0; d < c.D; ++d) qd[static_cast<size_t>(d)] = At(r.packed, r.q, c.bf, b, hq, i, d);
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.Skv; ++j) {
          float add = 0.f;
          if (j >= valid || !geo.Allowed(i + off, j) || !MaskAt(r, b, hq, i, j, &add)) {
            sc[static_cast<size_t>(j)] = -INFINITY;
            continue;
          }
          double s = 0;
          for (int d = 0; d < c.D; ++d) s += qd[static_cast<size_t>(d)] * At(r.packed, r.k, c.bf, b, hk, j, d);
          s *= p.scale;
          if (c.softcap > 0.f) s = c.softcap * std::tanh(s / c.softcap);
          s += add;
          sc[static_cast<size_t>(j)] = s;
          mx = std::max(mx, s);
        }
        double den = 0;
        std::vector<double> o(static_cast<size_t>(c.D), 0.0);
        if (mx != -INFINITY) {
          for (int64_t j = 0; j < c.Skv; ++j) {
            if (sc[static_cast<size_t>(j)] == -INFINITY) continue;
            const double e = std::exp(sc[static_cast<size_t>(j)] - mx);
            den += e;
            for (int d = 0; d < c.D; ++d) o[static_cast<size_t>(d)] += e * At(r.packed, r.v, c.bf, b, hk, j, d);
          }
        }
        for (int d = 0; d < c.D; ++d)
          out[static_cast<size_t>(((int64_t{b} * c.Hq + hq) * c.Sq + i) * c.D + d)] =
              den > 0 ? o[static_cast<size_t>(d)] / den : 0.0;
      }
    }
}

// Step-by-step CPU emulation of the flash pipeline (flash_fwd.cu): block shift, K' rounded,
// fp32 scores, softcap, mask, S rounded (per-row tile fallback), additive mask, direct shift,
// exp2 online softmax, P rounded, split-KV combine. Matrix products are accumulated in double and
// rounded to fp32 once (the tensor cores' accumulation order is not specified); everything else
// is fp32 in kernel order.

// One (batch, unit) of the emulation: its valid length, query offset, K' and kbar, V.
struct EmuSlab {
  int b = 0, u = 0, hk = 0, group = 1;
  int64_t valid = 0, off = 0;
  std::vector<float> kbar, kp, vv;
};

// The shift pass (ShiftKeysKernel) of one (batch, unit): a key enters the block mean when it is
// before the valid length and (with a mask) some row of the unit's mask plane attends it
// (MaskKeysKernel); the others get K' = 0 and V = 0.
void EmuShift(const Run& r, EmuSlab& e) {
  const Case& c = r.c;
  const bool bf = c.bf;
  const int D = c.D, n = c.block_kv, nblk = (c.Skv + n - 1) / n;
  const float scale = r.p.scale, alpha = c.softcap > 0.f ? 0.f : r.p.alpha;
  std::vector<uint8_t> ok(static_cast<size_t>(c.Skv), 0);
  const bool per_head = c.mask != 0 && r.p.mask.stride[1] != 0;
  const int64_t mrows = c.mask != 0 && r.p.mask.stride[2] == 0 ? 1 : c.Sq;
  for (int64_t key = 0; key < e.valid; ++key) {
    bool any = c.mask == 0;
    for (int64_t i = 0; i < mrows && !any; ++i) {
      float add;
      any = MaskAt(r, e.b, per_head ? e.u : 0, i, key, &add);
    }
    ok[static_cast<size_t>(key)] = any ? 1 : 0;
  }
  e.kbar.assign(static_cast<size_t>(nblk) * D, 0.f);
  e.kp.assign(static_cast<size_t>(nblk) * n * D, 0.f);
  e.vv.assign(static_cast<size_t>(nblk) * n * D, 0.f);
  for (int blk = 0; blk < nblk; ++blk) {
    const int lim = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(n, e.valid - int64_t{blk} * n)));
    int count = 0;
    for (int j = 0; j < lim; ++j) count += ok[static_cast<size_t>(blk * n + j)];
    const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.f;
    for (int d = 0; d < D; ++d) {
      float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};  // the kernel's 8 row groups
      for (int j = 0; j < lim; ++j)
        if (ok[static_cast<size_t>(blk * n + j)]) part[j % 8] += At(r.packed, r.k, bf, e.b, e.hk, blk * n + j, d);
      float s = 0.f;
      for (float x : part) s += x;
      const float kb = alpha * (s * inv);
      e.kbar[static_cast<size_t>(blk * D + d)] = kb;
      for (int j = 0; j < lim; ++j) {
        if (!ok[static_cast<size_t>(blk * n + j)]) continue;
        const size_t ix = static_cast<size_t>((blk * n + j) * D + d);
        e.kp[ix] = Rnd(scale * (At(r.packed, r.k, bf, e.b, e.hk, blk * n + j, d) - kb), bf);
        e.vv[ix] = At(r.packed, r.v, bf, e.b, e.hk, blk * n + j, d);
      }
    }
  }
}

// The removed shift of row q for the PASA block of kb: c·(q·kbar), the kernel's quad order.
float EmuShiftDot(const std::vector<float>& qv, const float* kb, int D, float scale) {
  float part[4];
  for (int tq = 0; tq < 4; ++tq) {
    float acc = 0.f;
    for (int k2 = 0; k2 < D / 8; ++k2) {
      const int col = k2 * 8 + tq * 2;
      acc = std::fma(qv[static_cast<size_t>(col)], kb[col], acc);
      acc = std::fma(qv[static_cast<size_t>(col + 1)], kb[col + 1], acc);
    }
    part[tq] = acc;
  }
  return scale * ((part[0] + part[1]) + (part[2] + part[3]));
}

// The geometry the kernel's key tiles (and so its split-KV boundaries) come from for unit u of
// batch row b: the valid length and causality, narrowed as FlashFwdKernel narrows them when the
// unit's mask plane only restates padding or causal + padding (the host's own classification of
// the plane, the rules of MaskRowsKernel/MaskClassKernel). Which scores are attended does not
// depend on it (EmuSplit applies the mask itself): only which split's tiles hold them.
// Returns whether the plane is classified (padding or causal + padding).
bool EmuGeometry(const Run& r, const EmuSlab& e, int64_t& valid, bool& causal) {
  const Case& c = r.c;
  valid = e.valid;
  causal = c.causal;
  if (c.mask == 0 || !c.nonpad.empty() || c.Sq == 0 || c.Skv == 0) return false;
  const int64_t h = r.p.mask.stride[1] != 0 ? e.u : 0;  // a per-head mask: one query head per unit
  const int64_t mrows = r.p.mask.stride[2] == 0 ? 1 : c.Sq;
  std::vector<int64_t> len(static_cast<size_t>(mrows));
  // MaskRowsKernel's rule: an additive value at or below the type's lowest finite one counts as
  // removed (EmuSplit still adds it to the score, as the mask path does), unless that leaves the
  // row no key.
  const float lowest = c.bf ? -3.38953139e38f : -65504.f;
  for (int64_t i = 0; i < mrows; ++i) {  // n when row i attends exactly keys [0, n) (value 0), else -1
    int64_t count = 0, last = 0;
    bool nonzero = false, finite_removed = false;
    for (int64_t key = 0; key < r.mlen; ++key) {
      float add;
      bool att = MaskAt(r, e.b, h, i, key, &add);
      if (att && c.mask == 2 && add <= lowest) {
        att = false;
        finite_removed = true;
      }
      if (att) {
        ++count;
        last = key + 1;
        nonzero = nonzero || add != 0.f;
      }
    }
    len[static_cast<size_t>(i)] = count == last && !nonzero && !(count == 0 && finite_removed) ? count : -1;
  }
  const int64_t n0 = len[0], n_last = len[static_cast<size_t>(mrows - 1)];
  bool prefix = true, causal_pad = true;
  for (int64_t i = 0; i < mrows; ++i) {
    const int64_t n = len[static_cast<size_t>(i)];
    prefix = prefix && n >= 0 && n == n0;
    causal_pad = causal_pad && n >= 0 && n == std::min<int64_t>(i + c.past + 1, n_last);
  }
  if (prefix) {
    valid = std::min(valid, n0);
  } else if (causal_pad) {
    valid = std::min(valid, n_last);
    causal = true;
  }
  return prefix || causal_pad;
}

// One split of packed row R of slab e: the 64-key tiles [t_begin, t_end), fp32 (m, l, O). The
// online softmax steps over W keys (64: the mma.sync kernel; 128: the sm90 kernel, whose tiles are
// aligned to 128 keys: the 64-key tiles it adds before t_begin or after t_end are masked for the
// row, so they change nothing); the overflow fallback and the shift stay per 64 keys.
// The fp16-accumulator score (the "-f16acc" kernels): per 16-column k-step, the step's products (exact)
// added to the fp16 partial sum and rounded to fp16. `finite` turns false once a partial sum is
// not finite (it stays inf or NaN from there).
// PASA_SELFTEST_KSTEP (8 or 16, default 16): columns per rounding, to probe the hardware's.
int HalfAccKStep() {
  static const int k = [] {
    const char* env = std::getenv("PASA_SELFTEST_KSTEP");
    return env != nullptr && std::atoi(env) == 8 ? 8 : 16;
  }();
  return k;
}
float HalfAccDot(const float* q, const float* k, int D, bool& finite) {
  float h = 0.f;
  const int ks = HalfAccKStep();
  for (int k0 = 0; k0 < D; k0 += ks) {
    double chunk = 0;
    for (int d = k0; d < k0 + ks; ++d) chunk += static_cast<double>(q[d]) * k[d];
    h = Rnd(static_cast<float>(static_cast<double>(h) + chunk), false);
  }
  finite = std::isfinite(h);
  return h;
}

// fp16 score sums ("sm80-f16acc", "sm90-f16acc"): whether each (16 packed rows, 64-key tile)
// has a non-finite fp16 sum (then the kernel computes those rows' tile with fp32 accumulators),
// over the keys before the valid length (K' past it is 0). bad[(R / 16) * tiles + t].
std::vector<uint8_t> EmuHalfAccBad(const Run& r, const EmuSlab& e, int rows, int tiles) {
  const int D = r.c.D;
  std::vector<uint8_t> row_bad(static_cast<size_t>(rows) * tiles, 0);
#pragma omp parallel for schedule(dynamic, 4)
  for (int R = 0; R < rows; ++R) {
    std::vector<float> qv(static_cast<size_t>(D));
    const int i = R / e.group, hq = e.u * e.group + R % e.group;
    for (int d = 0; d < D; ++d) qv[static_cast<size_t>(d)] = At(r.packed, r.q, false, e.b, hq, i, d);
    for (int key = 0; key < e.valid; ++key) {
      bool finite = true;
      HalfAccDot(qv.data(), &e.kp[static_cast<size_t>(key) * D], D, finite);
      if (!finite) row_bad[static_cast<size_t>(R) * tiles + key / 64] = 1;
    }
  }
  std::vector<uint8_t> bad(static_cast<size_t>((rows + 15) / 16) * tiles, 0);
  for (int R = 0; R < rows; ++R)
    for (int t = 0; t < tiles; ++t) bad[static_cast<size_t>(R / 16) * tiles + t] |= row_bad[static_cast<size_t>(R) * tiles + t];
  return bad;
}

// hbad (fp16 accumulators only, else nullptr): EmuHalfAccBad's flags of this row's 16-row group.
void EmuSplit(const Run& r, const EmuSlab& e, int R, const std::vector<float>& qv, const CtaRange& cr, float& m,
              float& l, std::vector<float>& o, int W, const uint8_t* hbad) {
  const Case& c = r.c;
  const bool bf = c.bf;
  const int D = c.D, blk_tiles = c.block_kv / 64, U64 = W / 64;
  const float L2E = 1.4426950408889634f, scale = r.p.scale;
  const Geo geo{c.causal, c.left, c.right};
  const int i = R / e.group, hq = e.u * e.group + R % e.group;
  const int64_t pos = i + e.off;
  std::vector<float> s(static_cast<size_t>(W)), x(static_cast<size_t>(W)), add(static_cast<size_t>(W));
  std::vector<double> pv(static_cast<size_t>(D));
  float shift = 0.f;
  int shift_blk = -1;
  m = -INFINITY;
  l = 0.f;
  std::fill(o.begin(), o.end(), 0.f);
  const int w_begin = cr.t_begin / U64, w_end = (cr.t_end + U64 - 1) / U64;
  for (int tw = w_begin; tw < w_end && cr.t_begin < cr.t_end; ++tw) {
    for (int hu = 0; hu < U64; ++hu) {  // 64-key units: the shift of their block, the overflow test
      const int t = tw * U64 + hu;
      const bool in_range = t >= cr.t_begin && t < cr.t_end;
      if (in_range && t / blk_tiles != shift_blk) {
        shift_blk = t / blk_tiles;
        shift = EmuShiftDot(qv, &e.kbar[static_cast<size_t>(shift_blk * D)], D, scale);
      }
      bool ovf = false;
      for (int j = 0; j < 64; ++j) {
        const size_t jw = static_cast<size_t>(hu * 64 + j);
        const int key = t * 64 + j;
        x[jw] = -INFINITY;
        if (!in_range || key >= e.valid) continue;
        float sj;
        if (hbad != nullptr && !hbad[t]) {  // finite fp16 sums: no overflow test can fire
          bool finite = true;
          sj = HalfAccDot(qv.data(), &e.kp[static_cast<size_t>(key) * D], D, finite);
        } else {
          double acc = 0;
          for (int d = 0; d < D; ++d)
            acc += static_cast<double>(qv[static_cast<size_t>(d)]) * e.kp[static_cast<size_t>(key) * D + d];
          sj = static_cast<float>(acc);
        }
        if (c.softcap > 0.f) sj = c.softcap * std::tanh(sj / c.softcap);
        s[jw] = sj;
        const bool ok = geo.Allowed(pos, key) && MaskAt(r, e.b, hq, i, key, &add[jw]);
        x[jw] = ok ? 0.f : -INFINITY;
        if (ok && std::fabs(sj) >= OverflowThreshold(bf)) ovf = true;
      }
      for (int j = 0; j < 64; ++j) {
        const size_t jw = static_cast<size_t>(hu * 64 + j);
        float& xj = x[jw];
        if (xj == -INFINITY) continue;
        const float sr = ovf ? s[jw] : RoundScore(s[jw], bf);
        xj = (c.mask == 2 ? sr + add[jw] : sr) + shift;
      }
    }
    float mx = -INFINITY;
    for (int j = 0; j < W; ++j) mx = std::max(mx, x[static_cast<size_t>(j)]);
    const float m_new = std::max(m, mx);
    const float mL = m_new == -INFINITY ? 0.f : m_new * L2E;
    const float corr = std::exp2(std::fma(m, L2E, -mL));
    m = m_new;
    float psum = 0.f;
    std::fill(pv.begin(), pv.end(), 0.0);
    for (int j = 0; j < W; ++j) {
      const float pj = Rnd(std::exp2(std::fma(x[static_cast<size_t>(j)], L2E, -mL)), bf);
      psum += pj;
      if (pj != 0.f)
        for (int d = 0; d < D; ++d)
          pv[static_cast<size_t>(d)] += static_cast<double>(pj) * e.vv[static_cast<size_t>((tw * W + j) * D + d)];
    }
    l = l * corr + psum;
    for (int d = 0; d < D; ++d)
      o[static_cast<size_t>(d)] =
          static_cast<float>(static_cast<double>(o[static_cast<size_t>(d)] * corr) + pv[static_cast<size_t>(d)]);
  }
}

// max_shift (if given): the largest |c·(q·kbar)| of any row and PASA block, the emulation's shift.
void Emulate(const Run& r, std::vector<float>& out, float* max_shift = nullptr) {
  const Case& c = r.c;
  const AttentionProblem& p = r.p;
  const bool bf = c.bf;
  const int D = c.D, U = Units(r), group = c.Hq / U;
  const int rows = c.Sq * group;
  const int bm = BlockRows(r, rows);
  const int splits = pasa::cuda::FlashNumSplits(p);
  // The sm90 kernel steps the softmax over 128 keys: every plane ("sm90"), or with a classified
  // mask the padding and causal+padding planes ("sm90/sm80", EmuGeometry's classification).
  const char* kernel = pasa::cuda::FlashKernelName(p);
  const bool sm90_all = std::strcmp(kernel, "sm90") == 0 || std::strcmp(kernel, "sm90-f16acc") == 0,
             sm90_classified = std::strcmp(kernel, "sm90/sm80") == 0;
  // The decode kernel steps over whole 128-key PASA blocks too; its splits cut the blocks
  // [0, nblk) into equal parts, each then cut to the keys the rows attend.
  const bool decode = std::strncmp(kernel, "decode", 6) == 0;  // "decode", "decode_reg"
  const bool half_acc = std::strstr(kernel, "-f16acc") != nullptr;  // "sm80-f16acc", "sm90-f16acc"
  const int nblk = static_cast<int>((c.Skv + c.block_kv - 1) / c.block_kv);
  const float L2E = 1.4426950408889634f;
  out.assign(static_cast<size_t>(c.B) * c.Hq * c.Sq * D, 0.f);
  float shift_max = 0.f;
  for (int b = 0; b < c.B; ++b)
    for (int u = 0; u < U; ++u) {
      EmuSlab e;
      e.b = b;
      e.u = u;
      e.hk = u / (U / c.Hkv);
      e.group = group;
      e.valid = c.nonpad.empty() ? c.Skv
                                 : std::max<int64_t>(0, std::min<int64_t>(c.Skv, c.nonpad[static_cast<size_t>(b)]));
      e.off = c.nonpad.empty() ? c.past : e.valid - c.Sq;
      EmuShift(r, e);
      int64_t geo_valid;
      bool geo_causal;
      const bool classified = EmuGeometry(r, e, geo_valid, geo_causal);
      const int softmax_w = sm90_all || decode || (sm90_classified && classified) ? 128 : 64;
      const int tiles = (c.Skv + 63) / 64;
      const std::vector<uint8_t> hbad = half_acc ? EmuHalfAccBad(r, e, rows, tiles) : std::vector<uint8_t>();
#pragma omp parallel for schedule(dynamic, 4) reduction(max : shift_max)
      for (int R = 0; R < rows; ++R) {
        std::vector<float> po(static_cast<size_t>(splits) * D), pm(static_cast<size_t>(splits)),
            pl(static_cast<size_t>(splits)), qv(static_cast<size_t>(D)), o(static_cast<size_t>(D));
        const int i = R / group, hq = u * group + R % group;
        for (int d = 0; d < D; ++d) qv[static_cast<size_t>(d)] = At(r.packed, r.q, bf, b, hq, i, d);
        if (max_shift != nullptr)
          for (int kb = 0; kb < nblk; ++kb)
            shift_max = std::max(shift_max, std::fabs(EmuShiftDot(qv, &e.kbar[static_cast<size_t>(kb) * D], D, p.scale)));
        for (int sp = 0; sp < splits; ++sp) {
          CtaRange cr = KernelRange(c, p, group, bm, splits, R / bm, sp, geo_valid, e.off, geo_causal);
          if (decode) {  // every row of the unit in one CTA; split sp: blocks [sp·per, (sp + 1)·per)
            const CtaRange all = KernelRange(c, p, group, rows, 1, 0, 0, geo_valid, e.off, geo_causal);
            const int per = (nblk + splits - 1) / splits, tpb = c.block_kv / 64;
            cr.t_begin = std::max(all.t_begin, sp * per * tpb);
            cr.t_end = std::min(all.t_end, std::min(nblk, (sp + 1) * per) * tpb);
            if (cr.t_end < cr.t_begin) cr.t_end = cr.t_begin;
          }
          EmuSplit(r, e, R, qv, cr, pm[static_cast<size_t>(sp)], pl[static_cast<size_t>(sp)], o, softmax_w,
                   half_acc ? &hbad[static_cast<size_t>(R / 16) * tiles] : nullptr);
          std::copy(o.begin(), o.end(), po.begin() + static_cast<int64_t>(sp) * D);
        }
        float* y = &out[static_cast<size_t>(((int64_t{b} * c.Hq + hq) * c.Sq + i) * D)];
        if (splits == 1) {
          const float inv = pl[0] != 0.f ? 1.0f / pl[0] : 0.f;
          for (int d = 0; d < D; ++d) y[d] = Rnd(po[static_cast<size_t>(d)] * inv, bf);
        } else {
          float mmax = -INFINITY;
          for (int sp = 0; sp < splits; ++sp) mmax = std::max(mmax, pm[static_cast<size_t>(sp)]);
          const float mL = mmax == -INFINITY ? 0.f : mmax * L2E;
          float l = 0.f;
          std::vector<float> acc(static_cast<size_t>(D), 0.f);
          for (int sp = 0; sp < splits; ++sp) {
            const float w = std::exp2(std::fma(pm[static_cast<size_t>(sp)], L2E, -mL));
            l += w * pl[static_cast<size_t>(sp)];
            for (int d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += w * po[static_cast<size_t>(sp * D + d)];
          }
          const float inv = l != 0.f ? 1.0f / l : 0.f;
          for (int d = 0; d < D; ++d) y[d] = Rnd(acc[static_cast<size_t>(d)] * inv, bf);
        }
      }
    }
  if (max_shift != nullptr) *max_shift = shift_max;
}

struct Dev {
  void* q = nullptr;
  void* k = nullptr;
  void* v = nullptr;
  void* buf = nullptr;
  void* y = nullptr;
  void* ws = nullptr;
  void* mask = nullptr;
  int64_t* nonpad = nullptr;
  size_t y_elems = 0;
  ~Dev() {
    for (void* ptr : {q, k, v, buf, y, ws, mask, static_cast<void*>(nonpad)})
      if (ptr) cudaFree(ptr);
  }
};

void Upload(Run& r, Dev& dv) {
  const Case& c = r.c;
  auto up = [](const std::vector<uint16_t>& h, void** d) {
    CK(cudaMalloc(d, h.size() * 2));
    CK(cudaMemcpy(*d, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  };
  if (c.packed) {
    up(r.packed, &dv.buf);
    r.p.q.data = static_cast<uint16_t*>(dv.buf) + r.q.offset;
    r.p.k.data = static_cast<uint16_t*>(dv.buf) + r.k.offset;
    r.p.v.data = static_cast<uint16_t*>(dv.buf) + r.v.offset;
  } else {
    up(r.q.h, &dv.q);
    up(r.k.h, &dv.k);
    up(r.v.h, &dv.v);
    r.p.q.data = dv.q;
    r.p.k.data = dv.k;
    r.p.v.data = dv.v;
  }
  dv.y_elems = static_cast<size_t>(c.B) * c.Hq * c.Sq * c.D;
  CK(cudaMalloc(&dv.y, dv.y_elems * 2));
  CK(cudaMemset(dv.y, 0xff, dv.y_elems * 2));  // NaN pattern: unwritten outputs show
  r.p.y = dv.y;
  if (!c.nonpad.empty()) {
    CK(cudaMalloc(&dv.nonpad, c.nonpad.size() * 8));
    CK(cudaMemcpy(dv.nonpad, c.nonpad.data(), c.nonpad.size() * 8, cudaMemcpyHostToDevice));
    r.p.nonpad_kv_seqlen = dv.nonpad;
  }
  if (c.mask == 1) {
    CK(cudaMalloc(&dv.mask, r.mbool.size()));
    CK(cudaMemcpy(dv.mask, r.mbool.data(), r.mbool.size(), cudaMemcpyHostToDevice));
    r.p.mask.data = dv.mask;
  } else if (c.mask == 2) {
    CK(cudaMalloc(&dv.mask, r.madd.size() * 2));
    CK(cudaMemcpy(dv.mask, r.madd.data(), r.madd.size() * 2, cudaMemcpyHostToDevice));
    r.p.mask.data = dv.mask;
  }
  const size_t wsb = pasa::cuda::FlashWorkspaceBytes(r.p);
  CK(cudaMalloc(&dv.ws, std::max<size_t>(wsb, 256)));
}

// Index of logical element (b, h, s, d) in the output buffer.
size_t YIndex(const Run& r, int64_t b, int64_t h, int64_t s, int64_t d) {
  return static_cast<size_t>(b * r.y_stride[0] + h * r.y_stride[1] + s * r.y_stride[2] + d);
}

int g_fail = 0;
std::string g_only;  // "check:NAME": only the cases whose name contains NAME

Result Check(Case c, bool with_emu = true) {
  Run r;
  r.c = c;
  Setup(r);
  Result res;
  if (!pasa::cuda::FlashSupports(r.p)) {
    std::printf("%-44s NOT SUPPORTED\n", c.name.c_str());
    ++g_fail;
    return res;
  }
  Dev dv;
  Upload(r, dv);
  res.splits = pasa::cuda::FlashNumSplits(r.p);
  const std::string err = pasa::cuda::RunFlash(r.p, nullptr, dv.ws);
  if (!err.empty()) {
    std::printf("%-44s RunFlash: %s\n", c.name.c_str(), err.c_str());
    ++g_fail;
    return res;
  }
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> yh(dv.y_elems);
  CK(cudaMemcpy(yh.data(), dv.y, yh.size() * 2, cudaMemcpyDeviceToHost));
  std::vector<double> gold;
  Golden(r, gold);
  std::vector<float> emu;
  // The sm90 kernel sums the removed shifts on the tensor cores (flash_sm90.cu): an fp32 sum in
  // their order (truncating, D / 16 k-steps of three terms), within 16 fp32 ulps of the largest
  // shift, not the emulation's bits. A score offset δ of one block moves that block's weights by
  // e^δ - 1 ≈ δ, an output by about δ·(|y| + rms(V)).
  const bool tensor_shifts = std::strncmp(pasa::cuda::FlashKernelName(r.p), "sm90", 4) == 0;
  float max_shift = 0.f;
  if (with_emu) Emulate(r, emu, tensor_shifts ? &max_shift : nullptr);
  const double shift_slack = tensor_shifts ? 16.0 * std::ldexp(1.0, -24) * max_shift : 0.0;
  double se = 0, sv = 0, see = 0, sye = 0, sy = 0;
  long nv = 0;
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.Hkv; ++h)
      for (int s = 0; s < c.Skv; ++s) {
        if (!c.nonpad.empty() && s >= c.nonpad[static_cast<size_t>(b)]) continue;
        if (c.mask_poison && s % 17 == 5) continue;
        for (int d = 0; d < c.D; ++d) {
          const double x = At(r.packed, r.v, c.bf, b, h, s, d);
          sv += x * x;
          ++nv;
        }
      }
  const double rms_v = std::sqrt(sv / std::max<long>(1, nv));
  const size_t N = gold.size();
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.Hq; ++h)
      for (int s = 0; s < c.Sq; ++s)
        for (int d = 0; d < c.D; ++d) {
          const size_t li = static_cast<size_t>(((int64_t{b} * c.Hq + h) * c.Sq + s) * c.D + d);
          const double y = H2F(yh[YIndex(r, b, h, s, d)], c.bf);
          if (!std::isfinite(y)) {
            ++res.nonfinite;
            continue;
          }
          const double e = y - gold[li];
          se += e * e;
          sy += gold[li] * gold[li];
          res.max_abs = std::max(res.max_abs, std::fabs(e));
          if (with_emu) {
            const double ee = y - emu[li];
            see += ee * ee;
            res.emu_max = std::max(res.emu_max, std::fabs(ee));
            // a 1-ulp-of-half disagreement (of the larger value) is rounding; more is a bug
            const double tol = 2.0 * std::max(std::fabs(static_cast<double>(emu[li])), 1e-3) *
                                   (c.bf ? 1.0 / 128 : 1.0 / 1024) +
                               (std::fabs(static_cast<double>(emu[li])) + rms_v) * shift_slack;
            if (std::fabs(ee) > tol) ++res.emu_bad;
            const double eg = emu[li] - gold[li];
            sye += eg * eg;
          }
        }
  res.rel_rmse = std::sqrt(se / N) / rms_v;
  res.emu_rmse = std::sqrt(see / N);
  res.emu_rel_rmse = std::sqrt(sye / N) / rms_v;
  res.y_rms = std::sqrt(sy / N);
  // pass: finite, and the kernel agrees with its emulation to rounding (a handful of outliers
  // may come from an exp2/accumulation-order flip of a rounded P or S element). With fp16 score
  // sums a flip moves a partial sum by an fp16 ulp: the tensor cores' sum of a k-step is not
  // exactly the emulation's rounded exact sum (H200: 0.02-0.34 % of the outputs, against at most
  // 0.1 % otherwise; the emulation's relative RMSE matched the kernel's to 3 digits).
  const bool half_acc = std::strstr(pasa::cuda::FlashKernelName(r.p), "-f16acc") != nullptr;
  const long outliers = static_cast<long>(N / (half_acc ? 200 : 1000)) + 2;
  const bool ok = res.nonfinite == 0 && (!with_emu || res.emu_bad <= outliers) &&
                  (!with_emu || res.rel_rmse <= 1.5 * res.emu_rel_rmse + 1e-4);
  if (!ok) ++g_fail;
  std::printf("%-44s %s %s split=%-2d relRMSE %.3e (emu %.3e) maxabs %.2e | vs emu: rmse %.2e max %.2e off>2ulp %ld/%zu nonfinite %ld\n",
              c.name.c_str(), ok ? "ok  " : "FAIL", pasa::cuda::FlashKernelName(r.p), res.splits, res.rel_rmse, res.emu_rel_rmse, res.max_abs,
              res.emu_rmse, res.emu_max, res.emu_bad, N, res.nonfinite);
  return res;
}

// Masks (bool, additive with -inf, broadcast shapes, fully masked rows, keys masked for every
// row), combined with causal, windows, GQA, nonpad, split-KV; and softcap.
std::vector<Case> MaskCases() {
  std::vector<Case> cs;
  Case c;
  c.name = "bool [B,H,Sq,Skv] fp16 D128 B2 S300/333"; c.mask = 1; c.B = 2; c.Hq = c.Hkv = 2; c.Sq = 300; c.Skv = 333;
  c.masked_rows = 7; cs.push_back(c);
  c = Case{}; c.name = "add -inf [B,H,Sq,Skv] bf16 D64 rows off"; c.mask = 2; c.bf = true; c.D = 64; c.B = 2;
  c.Hq = c.Hkv = 2; c.Sq = 300; c.Skv = 333; c.mask_p = 0.2f; c.masked_rows = 5; cs.push_back(c);
  c = Case{}; c.name = "bool padding [B,1,1,Skv] B3 D64 S200/256"; c.mask = 1; c.mpat = 1; c.mh = c.ms = false;
  c.B = 3; c.D = 64; c.Hq = c.Hkv = 4; c.Sq = 200; c.Skv = 256; cs.push_back(c);
  c = Case{}; c.name = "add per-head [1,H,Sq,Skv] GQA 8/2 causal D128"; c.mask = 2; c.mb = false; c.causal = true;
  c.Hq = 8; c.Hkv = 2; c.Sq = c.Skv = 260; c.mask_cols = true; cs.push_back(c);
  c = Case{}; c.name = "softcap 8 fp16 D128 causal GQA 4/2"; c.softcap = 8.f; c.amp = 2.f; c.causal = true;
  c.Hq = 4; c.Hkv = 2; c.Sq = c.Skv = 400; cs.push_back(c);
  c = Case{}; c.name = "bool [Sq,Skv] causal GQA 8/2 bf16 D96 3-D"; c.mask = 1; c.mb = c.mh = false; c.causal = true;
  c.bf = true; c.D = 96; c.Hq = 8; c.Hkv = 2; c.Sq = c.Skv = 300; c.layout3d = true; cs.push_back(c);
  c = Case{}; c.name = "add padding [B,1,1,Skv] B2 fp16 D64 MT2 GQA"; c.mask = 2; c.mpat = 1; c.mh = c.ms = false;
  c.B = 2; c.D = 64; c.Hq = 6; c.Hkv = 2; c.Sq = c.Skv = 333; cs.push_back(c);
  c = Case{}; c.name = "add [B,1,Sq,mask_len 200] Skv 333 D80"; c.mask = 2; c.mh = false; c.mask_len = 200;
  c.B = 2; c.D = 80; c.Hq = c.Hkv = 2; c.Sq = 150; c.Skv = 333; cs.push_back(c);
  c = Case{}; c.name = "bool [1,H,1,Skv] GQA 4/2 D64 masked cols poison"; c.mask = 1; c.mb = c.ms = false;
  c.D = 64; c.Hq = 4; c.Hkv = 2; c.Sq = c.Skv = 300; c.mask_cols = true; c.mask_poison = true; cs.push_back(c);
  c = Case{}; c.name = "add + softcap 10 bf16 D256 causal"; c.mask = 2; c.softcap = 10.f; c.amp = 2.f; c.bf = true;
  c.D = 256; c.causal = true; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 300; cs.push_back(c);
  c = Case{}; c.name = "bool + nonpad B3 poison GQA 4/2 D128"; c.mask = 1; c.B = 3; c.Sq = 40; c.Skv = 512;
  c.Hq = 4; c.Hkv = 2; c.nonpad = {500, 0, 131}; c.poison = true; c.masked_rows = 9; cs.push_back(c);
  c = Case{}; c.name = "add window L64 R32 D128 bk64"; c.mask = 2; c.left = 64; c.right = 32; c.block_kv = 64;
  c.Hq = c.Hkv = 2; c.Sq = c.Skv = 500; cs.push_back(c);
  c = Case{}; c.name = "bool all masked fp16 D64"; c.mask = 1; c.mask_p = 1.1f; c.D = 64; c.Hq = c.Hkv = 2;
  c.Sq = 100; c.Skv = 200; cs.push_back(c);
  c = Case{}; c.name = "add overflow fallback amp 300 fp16 D128"; c.mask = 2; c.amp = 300.f; c.mask_p = 0.1f;
  c.mask_amp = 5.f; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 300; cs.push_back(c);
  c = Case{}; c.name = "add mean 30 O1 K=3e4 fp16 D128 [B,1,Sq,Skv]"; c.mask = 2; c.mh = false; c.kmean = 30000.f;
  c.Hq = c.Hkv = 2; c.Sq = c.Skv = 400; cs.push_back(c);
  for (int ql : {1, 16}) {
    c = Case{};
    c.name = "decode q" + std::to_string(ql) + " kv4100 GQA 8/2 D128 bool pad + softcap";
    c.mask = 1; c.mpat = 1; c.mh = c.ms = false; c.softcap = 20.f; c.B = 2; c.Hq = 8; c.Hkv = 2; c.Sq = ql;
    c.Skv = 4100; c.causal = true; c.past = 4100 - ql; cs.push_back(c);
  }
  c = Case{}; c.name = "decode q1 kv4100 add per-head GQA 8/2 D64 split"; c.mask = 2; c.mb = false; c.ms = false;
  c.D = 64; c.Hq = 8; c.Hkv = 2; c.Sq = 1; c.Skv = 4100; cs.push_back(c);
  c = Case{}; c.name = "softcap 10 bf16 D64 S600 window"; c.softcap = 10.f; c.amp = 2.f; c.bf = true; c.D = 64;
  c.left = 200; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 600; cs.push_back(c);
  // Masks that only restate padding or causality (the plain steps run them, MaskClassKernel),
  // and near misses that must take the general mask path.
  c = Case{}; c.name = "geom bool padding [B,1,Sq,Skv] B3 D64 MT2"; c.mask = 1; c.mpat = 1; c.mh = false;
  c.B = 3; c.D = 64; c.Hq = c.Hkv = 4; c.Sq = 200; c.Skv = 256; cs.push_back(c);
  c = Case{}; c.name = "geom add causal+pad [B,1,S,S] B2 GQA 8/2 D128"; c.mask = 2; c.mpat = 2; c.mh = false;
  c.B = 2; c.Hq = 8; c.Hkv = 2; c.Sq = c.Skv = 300; cs.push_back(c);
  c = Case{}; c.name = "geom add causal+pad [1,1,S,S] D64 + is_causal"; c.mask = 2; c.mpat = 2; c.mb = c.mh = false;
  c.causal = true; c.D = 64; c.Hq = c.Hkv = 4; c.Sq = c.Skv = 333; cs.push_back(c);
  // transformers' masks: finfo(dtype).min where a key is masked (classified as the -inf ones)
  c = Case{}; c.name = "geom finfo.min causal+pad [1,1,S,S] GQA 8/2 D64"; c.mask = 2; c.mpat = 2; c.mb = c.mh = false;
  c.mask_min = true; c.D = 64; c.Hq = 8; c.Hkv = 2; c.Sq = c.Skv = 333; cs.push_back(c);
  c = Case{}; c.name = "geom finfo.min pad [B,1,1,S] bf16 B2 D128"; c.mask = 2; c.mpat = 1; c.mh = c.ms = false;
  c.mask_min = true; c.bf = true; c.B = 2; c.Hq = c.Hkv = 2; c.Sq = 200; c.Skv = 300; cs.push_back(c);
  // a plane whose rows attend nothing but finfo.min keys keeps the mask path (softmax over them all)
  c = Case{}; c.name = "geom finfo.min rows all masked [B,1,S,S] D128"; c.mask = 2; c.mpat = 1; c.mh = false;
  c.mask_min = true; c.masked_rows = 3; c.B = 2; c.Hq = c.Hkv = 2; c.Sq = 150; c.Skv = 260; cs.push_back(c);
  c = Case{}; c.name = "geom bool causal+pad past 400 q77 bf16 D96"; c.mask = 1; c.mpat = 2; c.mh = false;
  c.B = 2; c.bf = true; c.D = 96; c.Hq = c.Hkv = 2; c.Sq = 77; c.Skv = 477; c.past = 400; cs.push_back(c);
  c = Case{}; c.name = "geom near miss bool [B,1,Sq,Skv] D128"; c.mask = 1; c.mpat = 3; c.mh = false;
  c.B = 2; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 260; cs.push_back(c);
  c = Case{}; c.name = "geom left padding add [B,1,Sq,Skv] D64"; c.mask = 2; c.mpat = 4; c.mh = false;
  c.B = 2; c.D = 64; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 300; cs.push_back(c);
  c = Case{}; c.name = "geom add padding [B,1,Sq,Skv] + softcap 20"; c.mask = 2; c.mpat = 1; c.mh = false;
  c.softcap = 20.f; c.B = 3; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 200; cs.push_back(c);
  for (size_t i = 0; i < cs.size(); ++i) cs[i].seed = static_cast<unsigned>(1000 + 13 * i);
  return cs;
}

void MaskSuite(bool quick) {
  std::printf("== masks and softcap\n");
  std::vector<Case> cs = MaskCases();
  if (quick) cs.resize(std::min<size_t>(cs.size(), 5));
  for (const Case& c : cs) Check(c);
}

void CheckSuite(bool quick) {
  std::printf("== correctness: flash kernel vs float64 and vs the emulation of its pipeline\n");
  std::vector<Case> cs;
  auto add = [&](Case c) { cs.push_back(c); };
  for (int d : {64, 80, 96, 128, 256})
    for (bool bf : {false, true}) {
      Case c;
      c.name = std::string("D") + std::to_string(d) + (bf ? " bf16" : " fp16") + " H4 S300/333";
      c.D = d;
      c.bf = bf;
      c.Hq = c.Hkv = quick ? 2 : 4;
      c.Sq = 300;
      c.Skv = 333;
      c.seed = static_cast<unsigned>(d * 3 + bf);
      add(c);
    }
  {
    Case c; c.name = "causal fp16 D128 H4 S777"; c.causal = true; c.Hq = c.Hkv = 4; c.Sq = c.Skv = 777; add(c);
    c.name = "causal bf16 D64 GQA 8/2 S600 3-D"; c.bf = true; c.D = 64; c.Hq = 8; c.Hkv = 2; c.Sq = c.Skv = 600; c.layout3d = true; add(c);
    c = Case{}; c.name = "causal past 700 q100 D128 GQA 4/1"; c.causal = true; c.Hq = 4; c.Hkv = 1; c.Sq = 100; c.Skv = 800; c.past = 700; add(c);
    c = Case{}; c.name = "window L100 R0 causal D96 S500"; c.D = 96; c.causal = true; c.left = 100; c.right = 0; c.Sq = c.Skv = 500; c.Hq = c.Hkv = 2; add(c);
    c = Case{}; c.name = "window L64 R32 D128 S500"; c.left = 64; c.right = 32; c.Sq = c.Skv = 500; c.Hq = c.Hkv = 2; add(c);
    c = Case{}; c.name = "nonpad B3 [500,0,131] poison D128"; c.B = 3; c.Sq = 40; c.Skv = 512; c.Hq = 4; c.Hkv = 2; c.nonpad = {500, 0, 131}; c.poison = true; add(c);
    c.name = "nonpad causal B3 poison D64 bk64"; c.D = 64; c.causal = true; c.block_kv = 64; add(c);
    c = Case{}; c.name = "packed qkv D64 H6 S513"; c.packed = true; c.D = 64; c.Hq = c.Hkv = 6; c.Sq = c.Skv = 513; add(c);
    c = Case{}; c.name = "block_kv 64 fp16 D128 mean 30"; c.block_kv = 64; c.dist = 2; c.mean = 30; c.amp = 20; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 600; add(c);
    c = Case{}; c.name = "O1: K=3e4+noise fp16 D128"; c.kmean = 30000.f; c.amp = 1.f; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 400; add(c);
    c.name = "O1: K=3e4+noise alpha=1-2^-8"; c.alpha = 0.99609375f; add(c);
    c = Case{}; c.name = "overflow fallback: amp 300 fp16 D128"; c.amp = 300.f; c.Hq = c.Hkv = 2; c.Sq = c.Skv = 300; add(c);
    c = Case{}; c.name = "long 8192 keys |V|~10 mean 10"; c.mean = 10.f; c.amp = 1.f; c.Hq = c.Hkv = 1; c.Sq = 64; c.Skv = 8192; add(c);
    // More CTAs (query tiles x units x batch) than the H200's 132 SMs, no causality or mask,
    // one with a batch of no keys (a grid of several waves; written for a persistent-CTA build
    // of the sm90 kernel, docs/experiments/sm90_persistent.patch, which was not kept)
    c = Case{}; c.name = "many CTAs B3 GQA 24/8 S500 nonpad [500,257,0] poison D128"; c.B = 3; c.Hq = 24; c.Hkv = 8; c.Sq = c.Skv = 500; c.nonpad = {500, 257, 0}; c.poison = true; add(c);
    c = Case{}; c.name = "many CTAs bf16 D64 H40 S400/650"; c.bf = true; c.D = 64; c.Hq = c.Hkv = 40; c.Sq = 400; c.Skv = 650; add(c);
    c = Case{}; c.name = "many CTAs B2 H16 S1100 3-D mean 30 fp16 D128"; c.B = 2; c.Hq = c.Hkv = 16; c.Sq = c.Skv = 1100; c.layout3d = true; c.dist = 2; c.mean = 30; c.amp = 20; add(c);
  }
  for (int ql : {1, 5, 16}) {
    Case c;
    c.name = "decode q" + std::to_string(ql) + " kv4100 GQA 8/2 D128 nonpad";
    c.B = 2; c.Hq = 8; c.Hkv = 2; c.Sq = ql; c.Skv = 4100; c.nonpad = {4100, 3001}; c.causal = true;
    add(c);
  }
  { Case c; c.name = "decode q1 kv2048 bf16 D256 past"; c.bf = true; c.D = 256; c.Hq = 4; c.Hkv = 4; c.Sq = 1; c.Skv = 2048; c.past = 2047; c.causal = true; add(c); }
  {  // the fused decode kernel (at most 16 packed rows, D 64/128, block_kv 128, no mask)
    Case c; c.name = "decode kernel q1 kv4096 H32/32 D128"; c.Hq = c.Hkv = 32; c.Sq = 1; c.Skv = 4096; c.past = 4095; c.causal = true; add(c);
    c = Case{}; c.name = "decode kernel q1 kv8192 H32/8 D128 bf16"; c.bf = true; c.Hq = 32; c.Hkv = 8; c.Sq = 1; c.Skv = 8192; add(c);
    c = Case{}; c.name = "decode kernel q4 GQA 16/4 D64 nonpad poison causal L1000"; c.D = 64; c.B = 2; c.Hq = 16; c.Hkv = 4; c.Sq = 4; c.Skv = 3000; c.nonpad = {3000, 1777}; c.poison = true; c.causal = true; c.left = 1000; add(c);
    c = Case{}; c.name = "decode kernel O1: K=3e4 alpha=1-2^-8 q1 kv2000"; c.kmean = 30000.f; c.amp = 1.f; c.alpha = 0.99609375f; c.Hq = c.Hkv = 8; c.Sq = 1; c.Skv = 2000; add(c);
    c = Case{}; c.name = "decode kernel overflow fallback amp 300 q2 GQA 4/2"; c.amp = 300.f; c.Hq = 4; c.Hkv = 2; c.Sq = 2; c.Skv = 1000; add(c);
    c = Case{}; c.name = "decode kernel q1 kv300 bf16 D128 3-D window R5"; c.bf = true; c.layout3d = true; c.Hq = c.Hkv = 4; c.Sq = 1; c.Skv = 300; c.past = 150; c.left = 60; c.right = 5; add(c);
    // the register decode kernel (at most 2 packed rows; the cases above with one row run it too)
    c = Case{}; c.name = "decode reg q2 H8/8 D64 nonpad poison causal L700"; c.D = 64; c.B = 2; c.Hq = c.Hkv = 8; c.Sq = 2; c.Skv = 3000; c.nonpad = {3000, 1777}; c.poison = true; c.causal = true; c.left = 700; add(c);
    c = Case{}; c.name = "decode reg q1 GQA 8/4 D128 bf16 nonpad poison"; c.bf = true; c.B = 2; c.Hq = 8; c.Hkv = 4; c.Sq = 1; c.Skv = 2500; c.nonpad = {2500, 1300}; c.poison = true; add(c);
    c = Case{}; c.name = "decode reg q2 H3/3 D128 overflow amp 300 causal"; c.amp = 300.f; c.Hq = c.Hkv = 3; c.Sq = 2; c.Skv = 1500; c.past = 1498; c.causal = true; add(c);
    c = Case{}; c.name = "decode reg q1 GQA 4/2 D64 O1 K=3e4 right window"; c.D = 64; c.kmean = 30000.f; c.amp = 1.f; c.alpha = 0.99609375f; c.Hq = 4; c.Hkv = 2; c.Sq = 1; c.Skv = 1000; c.past = 400; c.left = 300; c.right = 200; add(c);
  }
  if (quick) cs.resize(std::min<size_t>(cs.size(), 6));
  for (const Case& c : cs)
    if (g_only.empty() || c.name.find(g_only) != std::string::npos) Check(c);
  if (g_only.empty()) MaskSuite(quick);
}

void PaperGrid() {
  std::printf("== the paper's random benchmark (fp16, 1x14/2 heads, S=1407, D=128)\n");
  for (int dist : {1, 2})
    for (float mean : {0.f, 30.f})
      for (float amp : {0.5f, 20.f}) {
        if (dist == 2 && amp < 1.f) continue;
        Case c;
        c.dist = dist;
        c.mean = mean;
        c.amp = amp;
        c.Hq = 14;
        c.Hkv = 2;
        c.Sq = c.Skv = 1407;
        char nm[96];
        std::snprintf(nm, sizeof(nm), "paper %s mean %g amp %g", dist == 1 ? "uniform" : "normal", mean, amp);
        c.name = nm;
        c.seed = static_cast<unsigned>(dist * 100 + mean * 3 + amp);
        Check(c);
      }
}

double Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median time (ms) of `reps` RunFlash calls after `warmup` more (cudaEvents); -1 on an error.
double TimeRunFlash(Run& r, Dev& dv, int warmup, int reps) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ts;
  double result = 0.0;
  for (int it = 0; it < warmup + reps; ++it) {
    CK(cudaEventRecord(e0));
    const std::string err = pasa::cuda::RunFlash(r.p, nullptr, dv.ws);
    CK(cudaEventRecord(e1));
    if (!err.empty()) {
      std::printf("RunFlash: %s\n", err.c_str());
      result = -1.0;
      break;
    }
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (it >= warmup) ts.push_back(ms);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return result < 0 ? result : Median(ts);
}

// Median time (ms) of RunFlash on case c, or < 0 where the flash path does not take it; r keeps
// the problem for the caller's report (kernel name, splits).
double TimeShape(const Case& c, Run& r, int warmup, int reps) {
  r.c = c;
  Setup(r);
  if (!pasa::cuda::FlashSupports(r.p)) return -1.0;
  Dev dv;
  Upload(r, dv);
  return TimeRunFlash(r, dv, warmup, reps);
}

// normal: standard-normal inputs (bench_cuda.py's data) instead of the cheap uniform(-1, 1) ones,
// for the data's share of a time (the O rescale is skipped when no row's max moved; the tensor
// cores' power grows with the operands' bit activity). H200, 2026-12-03: within 1 % at H32/D128
// S >= 4k (docs/benchmarks-cuda.md, twelfth session).
void Bench(bool normal) {
  std::printf("== timing (B=1 fp16, %s inputs, cudaEvents, median of 50 after 5 warm-up; TFLOP/s = 4*H*Sq*Skv*D/t, half for causal)\n",
              normal ? "normal(0, 1)" : "uniform(-1, 1)");
  struct B {
    int H, Hkv, Sq, Skv, D;
    bool causal;
  };
  std::vector<B> bs;
  for (int S : {1024, 4096, 16384})
    for (bool cz : {false, true}) bs.push_back({32, 32, S, S, 128, cz});
  for (int S : {1024, 4096, 16384})
    for (bool cz : {false, true}) bs.push_back({12, 12, S, S, 64, cz});
  for (int S : {4096, 32768})
    for (int hkv : {32, 8}) bs.push_back({32, hkv, 1, S, 128, false});
  for (const B& x : bs) {
    Case c;
    c.Hq = x.H;
    c.Hkv = x.Hkv;
    c.Sq = x.Sq;
    c.Skv = x.Skv;
    c.D = x.D;
    c.causal = x.causal;
    c.fast_fill = !normal;
    Run r;
    const double ms = TimeShape(c, r, 5, 50);
    if (ms < 0) return;
    double flop = 4.0 * x.H * double(x.Sq) * x.Skv * x.D;
    if (x.causal) flop /= 2;
    const double bytes = 2.0 * x.Hkv * double(x.Skv) * x.D * 2;
    std::printf("H%d/%d D%d Sq %5d Skv %5d %-7s split=%-2d %8.1f us  %6.1f TFLOP/s  (K+V %.0f GB/s) %s\n", x.H,
                x.Hkv, x.D, x.Sq, x.Skv, x.causal ? "causal" : "", pasa::cuda::FlashNumSplits(r.p), ms * 1e3,
                flop / (ms * 1e-3) / 1e12, bytes / (ms * 1e-3) / 1e9, pasa::cuda::FlashKernelName(r.p));
  }
}

// The fixed cost of a CTA: H32/D128, 4096 queries (8 waves of CTAs on 132 SMs) over 512 .. 8192
// keys, standard-normal inputs; t = a + b·Skv, and a / waves is what each CTA costs besides its
// tiles (launch, Q load, the pipeline's fill and drain, the epilogue).
void BenchScan() {
  std::printf("== key-length scan (H32/D128, Sq 4096, fp16 normal(0, 1) inputs, median of 30 after 5 warm-up)\n");
  for (int skv : {512, 1024, 2048, 4096, 8192}) {
    Case c;
    c.Hq = c.Hkv = 32;
    c.D = 128;
    c.Sq = 4096;
    c.Skv = skv;
    Run r;
    const double ms = TimeShape(c, r, 5, 30);
    if (ms < 0) return;
    std::printf("H32/32 D128 Sq  4096 Skv %5d scan    split=%-2d %8.1f us  %6.1f TFLOP/s %s\n", skv,
                pasa::cuda::FlashNumSplits(r.p), ms * 1e3, 4.0 * 32 * 4096.0 * skv * 128 / (ms * 1e-3) / 1e12,
                pasa::cuda::FlashKernelName(r.p));
  }
}

// Decode shapes (fp16, D128 unless said): the kernel RunFlash picks, its splits and time. Run it
// again with PASA_ONNX_CUDA_KERNEL=sm80 for the pre-pass path on the same shapes, or =decode16 for
// the 16-warp decode kernel where the register one runs.
void BenchDecode() {
  std::printf("== decode timing (fp16, cudaEvents, median of 50 after 5 warm-up; GB/s of K+V read once)\n");
  struct B {
    int B, H, Hkv, Sq, Skv, D;
  };
  const std::vector<B> bs = {{1, 32, 32, 1, 1024, 128},  {1, 32, 8, 1, 1024, 128},  {1, 32, 32, 1, 4096, 128},
                             {1, 32, 8, 1, 4096, 128},   {1, 32, 32, 1, 32768, 128}, {1, 32, 8, 1, 32768, 128},
                             {8, 32, 8, 1, 4096, 128},   {1, 32, 8, 4, 8192, 128},   {1, 12, 12, 1, 8192, 64},
                             {1, 32, 32, 16, 2048, 128}, {1, 32, 32, 1, 300, 128},   {1, 32, 32, 2, 8192, 128},
                             {1, 32, 32, 4, 4096, 128},  {1, 12, 12, 1, 32768, 64}};
  for (const B& x : bs) {
    Case c;
    c.B = x.B;
    c.Hq = x.H;
    c.Hkv = x.Hkv;
    c.Sq = x.Sq;
    c.Skv = x.Skv;
    c.past = x.Skv - x.Sq;
    c.causal = true;
    c.D = x.D;
    c.fast_fill = true;
    Run r;
    const double ms = TimeShape(c, r, 5, 50);
    if (ms < 0) return;
    const double bytes = 2.0 * x.B * x.Hkv * double(x.Skv) * x.D * 2;
    std::printf("B%d H%d/%d D%d Sq %2d Skv %6d %-6s split=%-3d %8.1f us  (K+V %5.0f GB/s)\n", x.B, x.H, x.Hkv, x.D,
                x.Sq, x.Skv, pasa::cuda::FlashKernelName(r.p), pasa::cuda::FlashNumSplits(r.p), ms * 1e3,
                bytes / (ms * 1e-3) / 1e9);
  }
}

// Median time (ms) of RunFlash on one case: 20 runs after 3 warm-up (cudaEvents).
double TimeCase(const Case& c) {
  Run r;
  return TimeShape(c, r, 3, 20);
}

// The cost of masks and softcap: each shape without, then with (time includes the pre-passes).
void BenchMask() {
  std::printf("== timing of masks and softcap (fp16, median of 20; ratio against the same shape without)\n");
  struct M {
    const char* name;
    int B, H, Hkv, Sq, Skv, D;
    bool causal;
    int mask, mpat;
    bool mb, mh, ms;
    float softcap;
    bool mask_min = false;  // masked keys at the type's lowest finite value (transformers' exports)
  };
  const std::vector<M> ms = {
      {"BERT-like B8 H12 S512 D64 bool pad [B,1,1,S]", 8, 12, 12, 512, 512, 64, false, 1, 1, true, false, false, 0.f},
      {"BERT-like B8 H12 S512 D64 add pad [B,1,1,S]", 8, 12, 12, 512, 512, 64, false, 2, 1, true, false, false, 0.f},
      {"H32 S2048 D128 bool pad [B,1,1,S]", 1, 32, 32, 2048, 2048, 128, false, 1, 1, true, false, false, 0.f},
      {"H32 S2048 D128 causal bool [S,S] random", 1, 32, 32, 2048, 2048, 128, true, 1, 0, false, false, true, 0.f},
      {"H8 S2048 D128 add bias [1,H,S,S]", 1, 8, 8, 2048, 2048, 128, false, 2, 0, false, true, true, 0.f},
      {"Gemma2-like H16/8 S4096 D256 causal softcap 50", 1, 16, 8, 4096, 4096, 256, true, 0, 0, true, true, true, 50.f},
      {"decode q1 kv8192 GQA 32/8 D128 bool pad", 4, 32, 8, 1, 8192, 128, false, 1, 1, true, false, false, 0.f},
      {"BERT-like B8 H12 S512 D64 add pad [B,1,S,S] (export)", 8, 12, 12, 512, 512, 64, false, 2, 1, true, false, true, 0.f},
      {"Llama-like H32 S2048 D64 add causal+pad [1,1,S,S] + causal", 1, 32, 32, 2048, 2048, 64, true, 2, 2, false, false, true, 0.f},
      {"Llama export H32/4 S2048 D64 finfo.min causal+pad [1,1,S,S]", 1, 32, 4, 2048, 2048, 64, false, 2, 2, false, false, true, 0.f, true},
  };
  for (const M& m : ms) {
    Case c;
    c.B = m.B;
    c.Hq = m.H;
    c.Hkv = m.Hkv;
    c.Sq = m.Sq;
    c.Skv = m.Skv;
    c.D = m.D;
    c.mask_min = m.mask_min;
    c.causal = m.causal;
    c.fast_fill = true;
    c.mask_p = 0.1f;
    const double base = TimeCase(c);
    c.mask = m.mask;
    c.mpat = m.mpat;
    c.mb = m.mb;
    c.mh = m.mh;
    c.ms = m.ms;
    c.softcap = m.softcap;
    const double t = TimeCase(c);
    std::printf("%-52s %9.1f us (without: %9.1f us, x%.2f)\n", m.name, t * 1e3, base * 1e3, base > 0 ? t / base : 0.0);
  }
}

// One run of a few shapes, for Nsight Compute.
void Prof() {
  for (int which = 0; which < 3; ++which) {
    Case c;
    c.Hq = c.Hkv = which == 2 ? 12 : 32;
    c.D = which == 2 ? 64 : 128;
    c.Sq = which == 1 ? 1 : 4096;
    c.Skv = which == 1 ? 32768 : 4096;
    if (which == 1) c.Hkv = 8;
    Run r;
    r.c = c;
    Setup(r);
    Dev dv;
    Upload(r, dv);
    const std::string err = pasa::cuda::RunFlash(r.p, nullptr, dv.ws);
    CK(cudaDeviceSynchronize());
    if (!err.empty()) std::printf("%s\n", err.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::string> modes;
  for (int i = 1; i < argc; ++i) modes.emplace_back(argv[i]);
  if (modes.empty()) modes = {"check", "paper", "bench"};
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  for (const std::string& m : modes) {
    if (m == "check") CheckSuite(false);
    else if (m.rfind("check:", 0) == 0) g_only = m.substr(6), CheckSuite(false);
    else if (m == "quick") CheckSuite(true);
    else if (m == "mask") MaskSuite(false);
    else if (m == "bench_mask") BenchMask();
    else if (m == "paper") PaperGrid();
    else if (m == "bench") Bench(false);
    else if (m == "bench_normal") Bench(true);
    else if (m == "bench_scan") BenchScan();
    else if (m == "bench_decode") BenchDecode();
    else if (m == "prof") Prof();
  }
  std::printf("failures: %d\n", g_fail);
  return g_fail == 0 ? 0 : 1;
}

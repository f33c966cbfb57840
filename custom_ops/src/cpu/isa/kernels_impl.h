// The CPU kernel's inner loops, written once against a small vector interface `V` and compiled
// once per instruction set (the files of isa_list.def include this file after defining their `V`,
// PASA_ISA_NAMESPACE and PASA_ISA_NAME, and optionally PASA_PRODUCTS: the tile products). Every path runs the same algorithm; only the vector width and whether a
// multiply-add is fused differ.
//
// `V` provides: W (lanes), T (vector), M (lane mask), kTileRows/kTileVecs (register block of the
// tile products), zero/load/store/set1, add/sub/mul/div/fma(a,b,c)=a·b+c, max/abs,
// gt/ge/eq/unord -> M, mor/mand/mfalse, any, select(m, a, b) = m ? a : b, round_nearest, pow2i (2^n for
// integral n in [-127, 127]), scale2(p, n) = p·2^n for integral n in [-127, 0], round_half/round_bf16 (round-to-nearest-even and back),
// reduce_add/reduce_max, load_f16/load_bf16/store_f16/store_bf16 (W elements); optionally
// dot_f64, transpose_w, nonfinite (±inf or NaN lanes) and round_bf16_nonnan (round_bf16 for
// lanes without NaN), each detected and replaced by a generic form where V lacks it.
//
// The row pipeline per key block (AttendBlockT): the tile's score product, the removed shifts of
// its rows, then per row two passes over its n scores (ShiftMax: shift, max, overflow check;
// ExpRow: exp, rounding, sum, P written where the products read it), then P·V and the rescale.
//
// Determinism: every score is one multiply-add chain over the head dimension, every P·V output one
// chain over the keys, every row reduction a fixed tree — so a row's result does not depend on
// the tile it sits in, on block_q, or on the thread that runs it.
// No include guard: each instruction-set file includes it once, inside its own namespace.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "problem/half_types.h"
#include "cpu/isa/kernels.h"

namespace pasa {
namespace PASA_ISA_NAMESPACE {
namespace {  // internal linkage: no copy compiled for one ISA can be picked for another

using T = V::T;
using M = V::M;
constexpr int64_t W = V::W;
static_assert(kKeyAlign % W == 0, "key padding must be a whole number of vectors");

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Rounding applied to stored values: none, to fp16, to bf16.
enum Rounding { kNoRound = 0, kRoundF16 = 1, kRoundBF16 = 2 };

template <int R>
inline T RoundV(T x) {
  if constexpr (R == kRoundF16) return V::round_half(x);
  else if constexpr (R == kRoundBF16) return V::round_bf16(x);
  else return x;
}

// Whether V offers round_bf16_nonnan (round_bf16 without the NaN handling).
template <class VV, class = void>
struct HasRoundBf16NonNaN : std::false_type {};
template <class VV>
struct HasRoundBf16NonNaN<VV, std::void_t<decltype(static_cast<void>(VV::round_bf16_nonnan(*std::declval<typename VV::T*>())))>>
    : std::true_type {};

// RoundV for x that holds no NaN (the same values).
template <int R, class VV = V>
inline T RoundVNonNaN(T x) {
  if constexpr (R == kRoundBF16 && HasRoundBf16NonNaN<VV>::value) return VV::round_bf16_nonnan(x);
  else return RoundV<R>(x);
}

inline float RoundScalar(float x, int r) {
  if (r == kRoundF16) return RoundToHalf(x);
  if (r == kRoundBF16) return RoundToBFloat16(x);
  return x;
}

// exp(x) for float lanes x <= 0 (the only use: x − max): Cody-Waite reduction x = n·ln2 + r,
// |r| <= ln2/2, and a degree-7 polynomial (Cephes' expf coefficients), scaled by 2^n. Within
// 2 float32 ulps of the correctly rounded result over [-87.3, 0]; below -87.3 it returns 0 (the
// exact value is under 2^-125); NaN stays NaN. (Positive x is not supported.)
// kNaN false: for callers whose x is never NaN (the NaN select dropped; otherwise the same).
template <bool kNaN = true>
inline T ExpNonPositive(T x) {
  const M keep = V::ge(x, V::set1(-87.33654f));  // false for NaN and tiny results
  const T n = V::round_nearest(V::mul(x, V::set1(1.44269504088896341f)));
  T r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  T p = V::set1(1.9875691500e-4f);
  p = V::fma(p, r, V::set1(1.3981999507e-3f));
  p = V::fma(p, r, V::set1(8.3334519073e-3f));
  p = V::fma(p, r, V::set1(4.1665795894e-2f));
  p = V::fma(p, r, V::set1(1.6666665459e-1f));
  p = V::fma(p, r, V::set1(5.0000001201e-1f));
  p = V::fma(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  const T y = V::select(keep, V::scale2(p, n), V::zero());
  if constexpr (kNaN) return V::select(V::unord(x), x, y);
  else return y;
}

// ---- Loading inputs ------------------------------------------------------------------------

// W elements (or one) of an input of element type E, as floats.
template <ElemType E>
inline T LoadSrc(const void* base, int64_t i) {
  if constexpr (E == ElemType::kFloat16) return V::load_f16(static_cast<const uint16_t*>(base) + i);
  else if constexpr (E == ElemType::kBFloat16) return V::load_bf16(static_cast<const uint16_t*>(base) + i);
  else return V::load(static_cast<const float*>(base) + i);
}

template <ElemType E>
inline float LoadSrcScalar(const void* base, int64_t i) {
  if constexpr (E == ElemType::kFloat16) return HalfToFloat(static_cast<const uint16_t*>(base)[i]);
  else if constexpr (E == ElemType::kBFloat16) return BFloat16ToFloat(static_cast<const uint16_t*>(base)[i]);
  else return static_cast<const float*>(base)[i];
}

// Calls f(std::integral_constant<ElemType, type>) for a source element type.
template <class F>
inline void WithSrcType(ElemType type, F&& f) {
  if (type == ElemType::kFloat16) f(std::integral_constant<ElemType, ElemType::kFloat16>{});
  else if (type == ElemType::kBFloat16) f(std::integral_constant<ElemType, ElemType::kBFloat16>{});
  else f(std::integral_constant<ElemType, ElemType::kFloat32>{});
}

// Whether V offers nonfinite(x) (one instruction where the ISA classifies floats).
template <class VV, class = void>
struct HasNonFinite : std::false_type {};
template <class VV>
struct HasNonFinite<VV, std::void_t<decltype(VV::nonfinite(*std::declval<typename VV::T*>()))>> : std::true_type {};

// Lanes holding inf or NaN (x − x is 0 exactly for finite x).
template <class VV = V>
inline M NonFinite(T x) {
  if constexpr (HasNonFinite<VV>::value) return VV::nonfinite(x);
  else return V::unord(V::sub(x, x));
}

// ---- Tile products -------------------------------------------------------------------------

// s[r][c0 .. c0 + NV·W) = Σ_d q[r][d] · kt[d][c0 ..] for MR query rows.
template <int MR, int NV>
inline void ScoreMicro(const float* q, int64_t D, const float* kt, int64_t ld, float* s, int64_t lds) {
  T acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
  for (int64_t d = 0; d < D; ++d) {
    T k[NV];
    for (int v = 0; v < NV; ++v) k[v] = V::load(kt + d * ld + v * W);
    for (int r = 0; r < MR; ++r) {
      const T qb = V::set1(q[r * D + d]);
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(qb, k[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) V::store(s + r * lds + v * W, acc[r][v]);
}

// out[r][c0 .. c0 + NV·W) = Σ_{k<n} p[r][k] · V[k][c0 ..] for MR rows of p (ldp apart);
// vrow(k, c) gives the W values of V at key k, columns c.. (a prepared row, or the input).
template <int MR, int NV, class VRow>
inline void PvMicro(const float* p, int64_t ldp, int64_t n, const VRow& vrow, int64_t c0, float* out,
                    int64_t ldo) {
  T acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = V::zero();
  for (int64_t k = 0; k < n; ++k) {
    T vv[NV];
    for (int j = 0; j < NV; ++j) vv[j] = vrow(k, c0 + j * W);
    for (int r = 0; r < MR; ++r) {
      const T pb = V::set1(p[r * ldp + k]);
      for (int j = 0; j < NV; ++j) acc[r][j] = V::fma(pb, vv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NV; ++j) V::store(out + r * ldo + c0 + j * W, acc[r][j]);
}

// Runs Micro<mr, nv> for a row remainder mr in [1, kTileRows] and vector count nv in [1, kTileVecs].
template <int MR, int NV, class F>
inline void DispatchNv(int nv, F&& f) {
  if constexpr (NV >= 1) {
    if (nv == NV) {
      f(std::integral_constant<int, MR>{}, std::integral_constant<int, NV>{});
      return;
    }
    DispatchNv<MR, NV - 1>(nv, f);
  }
}

template <int MR, class F>
inline void DispatchMrNv(int mr, int nv, F&& f) {
  if constexpr (MR >= 1) {
    if (mr == MR) {
      DispatchNv<MR, V::kTileVecs>(nv, f);
      return;
    }
    DispatchMrNv<MR - 1>(mr, nv, f);
  }
}

// S[rows][n] = Q[rows][D] · K'ᵀ, K' given transposed as kt[D][n].
inline void ScoreTile(const float* q, int64_t rows, int64_t D, const float* kt, int64_t n, float* s) {
  constexpr int64_t kCols = V::kTileVecs * W;
  for (int64_t i0 = 0; i0 < rows; i0 += V::kTileRows) {
    const int mr = static_cast<int>(std::min<int64_t>(V::kTileRows, rows - i0));
    for (int64_t c0 = 0; c0 < n; c0 += kCols) {
      const int nv = static_cast<int>(std::min<int64_t>(kCols, n - c0) / W);
      DispatchMrNv<V::kTileRows>(mr, nv, [&](auto MR, auto NV) {
        ScoreMicro<decltype(MR)::value, decltype(NV)::value>(q + i0 * D, D, kt + c0, n, s + i0 * n + c0, n);
      });
    }
  }
}

// S[rows][n] = Q[rows][D] · K'ᵀ with K' row-major: krow(r, d) gives the W values of K' row r
// from dimension d, kval(r, d) one value (the D % W tail). One vector dot product per score
// (partial sums over W lanes, a fixed reduction tree, then the tail in order); up to kChunk query
// rows share each K' vector. Keys r ≥ n_live score 0, as a prepared block's zero rows do.
template <class KRow, class KVal>
inline void ScoreRows(const float* q, int64_t rows, int64_t D, int64_t n, int64_t n_live, const KRow& krow,
                      const KVal& kval, float* s) {
  constexpr int64_t kChunk = 4;
  const int64_t dv = D / W * W;
  for (int64_t r = 0; r < n; ++r) {
    if (r >= n_live) {
      for (int64_t i = 0; i < rows; ++i) s[i * n + r] = 0.0f;
      continue;
    }
    for (int64_t i0 = 0; i0 < rows; i0 += kChunk) {
      const int64_t m = std::min(kChunk, rows - i0);
      const float* qc = q + i0 * D;
      T acc[kChunk];
      for (int64_t i = 0; i < kChunk; ++i) acc[i] = V::zero();
      for (int64_t d = 0; d < dv; d += W) {
        const T k = krow(r, d);
        for (int64_t i = 0; i < m; ++i) acc[i] = V::fma(V::load(qc + i * D + d), k, acc[i]);
      }
      for (int64_t i = 0; i < m; ++i) {
        float dot = V::reduce_add(acc[i]);
        for (int64_t d = dv; d < D; ++d) dot += qc[i * D + d] * kval(r, d);
        s[(i0 + i) * n + r] = dot;
      }
    }
  }
}

// PV[rows][dv] = P[rows][0..n) · V[0..n)[dv], P rows ldp apart, V rows from vrow (see PvMicro).
template <class VRow>
inline void PvTile(const float* p, int64_t rows, int64_t ldp, int64_t n, const VRow& vrow, int64_t dv, float* out) {
  constexpr int64_t kCols = V::kTileVecs * W;
  for (int64_t i0 = 0; i0 < rows; i0 += V::kTileRows) {
    const int mr = static_cast<int>(std::min<int64_t>(V::kTileRows, rows - i0));
    for (int64_t c0 = 0; c0 < dv; c0 += kCols) {
      const int nv = static_cast<int>(std::min<int64_t>(kCols, dv - c0) / W);
      DispatchMrNv<V::kTileRows>(mr, nv, [&](auto MR, auto NV) {
        PvMicro<decltype(MR)::value, decltype(NV)::value>(p + i0 * ldp, ldp, n, vrow, c0, out + i0 * dv, dv);
      });
    }
  }
}

// ---- Direct blocks (decode): the block mean of K read where it lies -----------------------

// KernelTable::direct_key_sum for one element type.
template <ElemType E>
inline bool DirectKeySumT(const void* k, const void* v, int64_t n, int64_t D, int64_t Dv, int64_t k_stride,
                          int64_t v_stride, float* sum) {
  const int64_t dv = D / W * W;
  M bad = V::mfalse();
  bool bad_tail = false;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t d = 0; d < dv; d += W) {
      const T x = LoadSrc<E>(k, r * k_stride + d);
      bad = V::mor(bad, NonFinite(x));
      V::store(sum + d, V::add(V::load(sum + d), x));
    }
    for (int64_t d = dv; d < D; ++d) {
      const float x = LoadSrcScalar<E>(k, r * k_stride + d);
      bad_tail = bad_tail || !std::isfinite(x);
      sum[d] += x;
    }
    for (int64_t d = 0; d < Dv; d += W) {  // Dv is a multiple of W for direct blocks
      bad = V::mor(bad, NonFinite(LoadSrc<E>(v, r * v_stride + d)));
    }
  }
  return !V::any(bad) && !bad_tail;
}

inline bool DirectKeySum(const void* k, const void* v, ElemType type, int64_t n, int64_t D, int64_t Dv,
                         int64_t k_stride, int64_t v_stride, float* sum) {
  bool finite = false;
  WithSrcType(type, [&](auto e) { finite = DirectKeySumT<decltype(e)::value>(k, v, n, D, Dv, k_stride, v_stride, sum); });
  return finite;
}

#if defined(PASA_PV_BF16)
// PV[rows][dv] = P[rows][n] · V[n][dv] on bf16 pairs (vdpbf16ps), for P and V that are bf16
// values: pp[rows][n] holds P's bf16 bits (key order, so each 32-bit word is a key pair; the
// exp pass writes it, ExpRow) and vp[n/2][dv] the packed V (Bf16Pack). Each output is one chain
// over the key pairs, each step adding the products of keys 2k+1 and 2k exactly (the
// instruction's order) — independent of the tile, like PvTile.
template <int MR, int NV>
inline void PvMicroBf16(const uint16_t* pp, int64_t n, const uint32_t* vp, int64_t ldv, float* out) {
  T acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = V::zero();
  for (int64_t k = 0; k < n / 2; ++k) {
    __m512i vv[NV];
    for (int j = 0; j < NV; ++j) vv[j] = _mm512_loadu_si512(vp + k * ldv + j * W);
    for (int r = 0; r < MR; ++r) {
      uint32_t pair = 0;
      std::memcpy(&pair, pp + r * n + 2 * k, sizeof pair);
      const __m512i pb = _mm512_set1_epi32(static_cast<int>(pair));
      for (int j = 0; j < NV; ++j) acc[r][j] = Bf16Pack::dot(acc[r][j], pb, vv[j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NV; ++j) V::store(out + r * ldv + j * W, acc[r][j]);
}

// V rows from vrow (see PvMicro) for keys below n_keys, zero for the padding keys up to n
// (n is a multiple of kKeyAlign).
template <class VRow>
inline void PvTileBf16(int64_t rows, int64_t n, int64_t n_keys, const VRow& vrow, int64_t dv, float* out,
                       const uint16_t* pp, uint32_t* vp) {
  const auto row = [&](int64_t k, int64_t c) { return k < n_keys ? vrow(k, c) : V::zero(); };
  const int64_t half_n = n / 2;
  for (int64_t k = 0; k < half_n; ++k)
    for (int64_t c = 0; c < dv; c += W)
      _mm512_storeu_si512(vp + k * dv + c, Bf16Pack::interleave(row(2 * k, c), row(2 * k + 1, c)));
  constexpr int64_t kCols = V::kTileVecs * W;
  for (int64_t i0 = 0; i0 < rows; i0 += V::kTileRows) {
    const int mr = static_cast<int>(std::min<int64_t>(V::kTileRows, rows - i0));
    for (int64_t c0 = 0; c0 < dv; c0 += kCols) {
      const int nv = static_cast<int>(std::min<int64_t>(kCols, dv - c0) / W);
      DispatchMrNv<V::kTileRows>(mr, nv, [&](auto MR, auto NV) {
        PvMicroBf16<decltype(MR)::value, decltype(NV)::value>(pp + i0 * n, n, vp + c0, dv, out + i0 * dv + c0);
      });
    }
  }
}
#endif

// ---- Row passes (n is a multiple of kKeyAlign) ----------------------------------------------

// 1) s = round(s) in place, 2) sum = Σ s (invalid and padding keys hold 0)
template <int R>
inline float RoundSum(float* s, int64_t n) {
  T acc = V::zero();
  for (int64_t r = 0; r < n; r += W) {
    const T x = RoundV<R>(V::load(s + r));
    V::store(s + r, x);
    acc = V::add(acc, x);
  }
  return V::reduce_add(acc);
}

// Whether V offers its own dot_f64 (the same value as DotF64: exact products, sums in double).
template <class VV, class = void>
struct HasDotF64 : std::false_type {};
template <class VV>
struct HasDotF64<VV, std::void_t<decltype(VV::dot_f64(static_cast<const float*>(nullptr),
                                                      static_cast<const float*>(nullptr), int64_t{0}))>>
    : std::true_type {};

// The fp32 value of Σ a[d]·b[d] accumulated in double (the removed shift): V's own dot_f64 where
// it has one, else sixteen independent partial sums (no serial dependency chain) added in a
// fixed order. b: floats, or doubles holding floats' values (converted once for many rows:
// the same value).
template <class VV = V, class B = float>
inline float DotF64(const float* a, const B* b, int64_t n) {
  if constexpr (HasDotF64<VV>::value) {
    return VV::dot_f64(a, b, n);
  } else {
    constexpr int kLanes = 16;
    double acc[kLanes] = {};
    int64_t d = 0;
    for (; d + kLanes <= n; d += kLanes)
      for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(a[d + j]) * static_cast<double>(b[d + j]);
    double tail = 0.0;
    for (; d < n; ++d) tail += static_cast<double>(a[d]) * static_cast<double>(b[d]);
    for (int w = kLanes / 2; w > 0; w /= 2)
      for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
    return static_cast<float>(acc[0] + tail);
  }
}

// The first pass over a row's scores s (left as they are): x = round_x((round_s(s) + add) + off)
// where attended, −inf elsewhere, into `dst`, and max = max(x), NaN when any x is NaN. With
// kCheck (half mode: RS rounds S to the half type), also whether some round_s(s) is ±inf or NaN
// (|s| at or past the half type's overflow threshold, or NaN): among the attended keys
// (big_attended) and among all keys (big_any). On a row without an additive row and with a
// finite offset, a NaN x can only come from a NaN score, which big_attended reports: the
// caller reruns such a row without rounding, which checks for NaN itself. add: the row's
// additive terms (−inf: not attended), or null when every key is attended.
struct RowMax {
  float max;
  bool big_attended, big_any;
};

template <int RS, int RX, bool kCheck>
inline RowMax ShiftMax(const float* s, const float* add, int64_t n, float off, float* dst) {
  static_assert(!kCheck || RS != kNoRound, "the check classifies the rounded scores");
  const T o = V::set1(off);
  const T ninf = V::set1(-kInf);
  T mx = ninf;
  M nan = V::mfalse(), big_att = V::mfalse(), big_any = V::mfalse();
  if (add == nullptr && kCheck && !std::isnan(off)) {  // NaN x implies big_attended: no NaN check
    for (int64_t r = 0; r < n; r += W) {
      const T xr = RoundV<RS>(V::load(s + r));
      big_att = V::mor(big_att, NonFinite(xr));
      const T x = RoundV<RX>(V::add(xr, o));
      mx = V::max(mx, x);
      V::store(dst + r, x);
    }
    const bool big = V::any(big_att);
    return {V::reduce_max(mx), big, big};
  }
  for (int64_t r = 0; r < n; r += W) {
    T x = RoundV<RS>(V::load(s + r));
    if constexpr (kCheck) {
      const M b = NonFinite(x);
      big_any = V::mor(big_any, b);
      big_att = add != nullptr ? V::mor(big_att, V::mand(b, V::gt(V::load(add + r), ninf))) : V::mor(big_att, b);
    }
    if (add != nullptr) {
      const T a = V::load(add + r);
      x = RoundV<RX>(V::add(V::add(x, a), o));
      x = V::select(V::eq(a, ninf), ninf, x);
    } else {
      x = RoundV<RX>(V::add(x, o));
    }
    nan = V::mor(nan, V::unord(x));
    mx = V::max(mx, x);
    V::store(dst + r, x);
  }
  return {V::any(nan) ? kNaN : V::reduce_max(mx), V::any(big_att), V::any(big_any)};
}

// Where the exp pass puts the probabilities: floats over the score row (hi == null), or a
// path's bf16 operand terms: row i at hi + i·ld (and lo + i·ld when lo is not null; lo = p −
// hi, exact in bf16 for P rounded to fp16), with zeros in the columns [n, ld).
struct PTerms {
  uint16_t* hi = nullptr;
  uint16_t* lo = nullptr;
  int64_t ld = 0;
};

// (hi16(a[w]), hi16(b[w])) of 32 consecutive values a ++ b: their upper 16 bits, in order.
inline void StoreHi16(uint16_t* dst, T a, T b, bool full) {
#if defined(__AVX512BW__)
  const __m512i idx = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,
                                       31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m512i w = _mm512_permutex2var_epi16(_mm512_castps_si512(a), idx, _mm512_castps_si512(b));
  if (full) _mm512_storeu_si512(dst, w);
  else _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_castsi512_si256(w));
#else
  float va[W], vb[W];
  V::store(va, a);
  V::store(vb, b);
  for (int64_t w = 0; w < W; ++w) {
    uint32_t bits = 0;
    std::memcpy(&bits, &va[w], sizeof bits);
    dst[w] = static_cast<uint16_t>(bits >> 16);
    if (full) {
      std::memcpy(&bits, &vb[w], sizeof bits);
      dst[W + w] = static_cast<uint16_t>(bits >> 16);
    }
  }
#endif
}

// x with its lower 16 bits cleared (the bf16 truncation, never rounding up into inf).
inline T Truncate16(T x) {
#if defined(__AVX512F__)
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
#else
  float v[W];
  V::store(v, x);
  for (int64_t w = 0; w < W; ++w) {
    uint32_t bits = 0;
    std::memcpy(&bits, &v[w], sizeof bits);
    bits &= 0xffff0000u;
    std::memcpy(&v[w], &bits, sizeof bits);
  }
  return V::load(v);
#endif
}

// How the exp pass meets its row: a finite max m (x − m is never NaN, and exp(−inf) is 0
// already: masked keys need no select), or a NaN or +inf max, where P must come out NaN where
// x − m is NaN and 0 where the key is masked, as the emulation has it.
enum ExpMode { kExpFiniteMax = 0, kExpNaN = 1, kExpNaNMasked = 2 };

// p = round(exp(x − m)) (see ExpMode).
template <int R, int kMode>
inline T ExpVec(const float* x, T mv) {
  const T xv = V::load(x);
  const T e = ExpNonPositive<kMode != kExpFiniteMax>(V::sub(xv, mv));
  T p = kMode == kExpFiniteMax ? RoundVNonNaN<R>(e) : RoundV<R>(e);  // finite max: no NaN
  if constexpr (kMode == kExpNaNMasked) p = V::select(V::eq(xv, V::set1(-kInf)), V::zero(), p);
  return p;
}

// 1) p = round(exp(x − m)) (ExpVec), into dst (or, packed, into pt's row),
// 2) sum = Σ p (in key order, one vector at a time)
template <int R, int kMode, bool kPack>
inline float ExpRow(const float* x, int64_t n, float m, float* dst, const PTerms& pt, int64_t i) {
  const T mv = V::set1(m);
  T acc = V::zero();
  if constexpr (kPack) {
    uint16_t* hi = pt.hi + i * pt.ld;
    uint16_t* lo = pt.lo != nullptr ? pt.lo + i * pt.ld : nullptr;
    int64_t r = 0;
    for (; r + 2 * W <= n; r += 2 * W) {
      const T a = ExpVec<R, kMode>(x + r, mv);
      const T b = ExpVec<R, kMode>(x + r + W, mv);
      acc = V::add(V::add(acc, a), b);
      StoreHi16(hi + r, a, b, true);
      if (lo != nullptr) StoreHi16(lo + r, V::sub(a, Truncate16(a)), V::sub(b, Truncate16(b)), true);
    }
    if (r < n) {  // one vector left (n is a multiple of W); zeros after it where the row has room
      const T a = ExpVec<R, kMode>(x + r, mv);
      acc = V::add(acc, a);
      const bool full = pt.ld >= r + 2 * W;
      StoreHi16(hi + r, a, V::zero(), full);
      if (lo != nullptr) StoreHi16(lo + r, V::sub(a, Truncate16(a)), V::zero(), full);
      r += full ? 2 * W : W;
    }
    for (; r < pt.ld; ++r) {
      hi[r] = 0;
      if (lo != nullptr) lo[r] = 0;
    }
  } else {
    for (int64_t r = 0; r < n; r += W) {
      const T p = ExpVec<R, kMode>(x + r, mv);
      acc = V::add(acc, p);
      V::store(dst + r, p);
    }
  }
  return V::reduce_add(acc);
}

// o = o·corr + pv   (paper: o = round(round(o·corr) + round(pv)))
template <int R>
inline void Rescale(float* o, const float* pv, float corr, int64_t n) {
  const T c = V::set1(corr);
  for (int64_t d = 0; d < n; d += W) {
    const T a = RoundV<R>(V::mul(V::load(o + d), c));
    V::store(o + d, RoundV<R>(V::add(a, RoundV<R>(V::load(pv + d)))));
  }
}

// o = o + pv (Rescale's value for corr = 1 without rounding: x·1 is x, NaN included)
inline void Accumulate(float* o, const float* pv, int64_t n) {
  for (int64_t d = 0; d < n; d += W) V::store(o + d, V::add(V::load(o + d), V::load(pv + d)));
}

// ---- One key block for one query tile ------------------------------------------------------

// ---- The tile products: the seam between the row pipeline and an instruction set's products ---
//
// A Products type offers
//   Score(t, kv):            t.s[rows][n_pad] = Q · K'ᵀ of the block (fp32 accumulation),
//   Pv<R>(t, kv, n_keys, vrow): t.pv[rows][dv_pad] = P · V over the first n_keys keys,
// where vrow(k, c) gives the W values of V at key k, columns c.. . FmaProducts runs them on the
// vector FMA units; a path with its own dot-product instructions (bf16 pairs, AMX tiles)
// provides another type and names it PASA_PRODUCTS.
struct FmaProducts {
  static void Score(TileState& t, const RowParams& rp, const KvBlock& kv) {
    const int64_t D = rp.head_dim, n = kv.n_pad;
    if (kv.k_src != nullptr) {  // direct block: K' = scale·(K − mean) formed from the input
      WithSrcType(kv.src_type, [&](auto e) {
        constexpr ElemType E = decltype(e)::value;
        const T c = V::set1(kv.scale);
        ScoreRows(t.q, t.rows, D, n, kv.n,
                  [&](int64_t r, int64_t d) { return V::mul(c, V::sub(LoadSrc<E>(kv.k_src, r * kv.k_stride + d), V::load(kv.mean + d))); },
                  [&](int64_t r, int64_t d) { return kv.scale * (LoadSrcScalar<E>(kv.k_src, r * kv.k_stride + d) - kv.mean[d]); },
                  t.s);
      });
    } else if (kv.k_rows) {
      ScoreRows(t.q, t.rows, D, n, n, [&](int64_t r, int64_t d) { return V::load(kv.kt + r * D + d); },
                [&](int64_t r, int64_t d) { return kv.kt[r * D + d]; }, t.s);
    } else {
      ScoreTile(t.q, t.rows, D, kv.kt, n, t.s);
    }
  }
  template <int R, class VRow>
  static void Pv(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t n_keys, const VRow& vrow) {
    PvTile(t.s, t.rows, kv.n_pad, n_keys, vrow, rp.dv_pad, t.pv);
  }
  // Whether rows whose scores reach 65520 are recomputed (RescoreRow): not by these products.
  static bool RescoresRows(const RowParams&, const KvBlock&) { return false; }
  static void RescoreRow(TileState&, const RowParams&, const KvBlock&, int64_t) {}
  // Where the exp pass writes P (PTerms): here floats over the score rows, as PvTile reads them.
  template <int R>
  static PTerms PTarget(TileState&, const RowParams&, const KvBlock&) {
    return {};
  }
};

#if defined(PASA_PV_BF16)
// P·V on vdpbf16ps where P and V are bf16 values (bf16 inputs, half/paper precision): exact
// products accumulated in fp32, as the contract asks; everything else as FmaProducts.
struct Bf16PvProducts : FmaProducts {
  template <int R, class VRow>
  static void Pv(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t n_keys, const VRow& vrow) {
    if constexpr (R == kRoundBF16) PvTileBf16(t.rows, kv.n_pad, n_keys, vrow, rp.dv_pad, t.pv, t.pack_p, t.pack_v);
    else FmaProducts::Pv<R>(t, rp, kv, n_keys, vrow);
  }
  // bf16 P goes straight from the exp pass into its key-pair layout, pack_p[rows][n_pad].
  template <int R>
  static PTerms PTarget(TileState& t, const RowParams&, const KvBlock& kv) {
    if constexpr (R == kRoundBF16) return {t.pack_p, nullptr, kv.n_pad};
    else return {};
  }
};
#endif

#if defined(PASA_PRODUCTS_HEADER)  // a path's own products, built on FmaProducts (amx.cc)
#include PASA_PRODUCTS_HEADER
#endif
#if !defined(PASA_PRODUCTS)
#define PASA_PRODUCTS FmaProducts
#endif
using Products = PASA_PRODUCTS;

// The first row pass of half and float mode, into x: half mode rounds S unless an attended
// score would overflow the half type (then the row keeps its fp32 scores, as the contract says);
// where `rescore` (the amx path's fp16 half mode), a row with any |s| ≥ 65520 first gets its
// scores recomputed by the path's fp32 products (Products::RescoreRow).
template <int R>
inline RowMax FirstPass(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t i, const float* add, float off,
                        bool rescore, float* x) {
  const int64_t n = kv.n_pad;
  const float* s = t.s + i * n;
  if constexpr (R == kNoRound) {
    return ShiftMax<kNoRound, kNoRound, false>(s, add, n, off, x);
  } else {
    RowMax rm = ShiftMax<R, kNoRound, true>(s, add, n, off, x);
    if (rescore && rm.big_any) {
      Products::RescoreRow(t, rp, kv, i);
      rm = ShiftMax<R, kNoRound, true>(s, add, n, off, x);
    }
    if (rm.big_attended) rm = ShiftMax<kNoRound, kNoRound, false>(s, add, n, off, x);
    return rm;
  }
}

// One row's state between its two passes (AttendBlockT).
struct RowPending {
  float m_old, m_new;
  bool live;  // the row takes the block (a finite running max)
};

// Row i's first part: the removed shift, the offsets of the global recovery, the first pass over
// its scores (into x) and the new running max.
template <int R>
inline RowPending RowFirst(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t i, bool rescore, float* x) {
  const int64_t n = kv.n_pad;
  const bool paper = rp.precision == Precision::kPaper;
  t.upd[i] = 0;
  if (t.kind[i] == kRowNone) return {0.0f, 0.0f, false};
  float* s = t.s + i * n;
  const float* add = t.kind[i] == kRowAdd ? t.add + i * n : nullptr;
  if (rp.softcap > 0.0f)
    for (int64_t r = 0; r < n; ++r) s[r] = rp.softcap * std::tanh(s[r] / rp.softcap);

  // The block's removed shift. Paper mode recovers it as the authors do, β times the row mean
  // of the (rounded) shifted scores; half and float modes compute it directly, c·q·(α·mean),
  // exact to fp32 for any α.
  const float shift = paper ? RoundScalar(RoundSum<R>(s, n) * kv.inv_count, R) : t.shift[i];

  // Global recovery: offsets of this block and of the running state against the new ā.
  const float abar_old = t.abar[i];
  const float nb = t.nblocks[i] + 1.0f;
  float abar_new = abar_old + (shift - abar_old) / nb;
  if (paper) abar_new = RoundScalar(abar_new, R);
  const float gain = paper ? rp.beta : 1.0f;
  float off_cur = gain * (shift - abar_new);
  float off_old = gain * (abar_old - abar_new);
  if (paper) {
    off_cur = RoundScalar(off_cur, R);
    off_old = RoundScalar(off_old, R);
  }

  const float mx = paper ? ShiftMax<kNoRound, R, false>(s, add, n, off_cur, x).max
                         : FirstPass<R>(t, rp, kv, i, add, off_cur, rescore, x).max;

  float m_old = t.m[i];
  if (m_old != -kInf) {
    m_old = m_old + off_old;
    if (paper) m_old = RoundScalar(m_old, R);
  }
  const float m_new = (std::isnan(m_old) || std::isnan(mx)) ? kNaN : std::max(m_old, mx);
  t.abar[i] = abar_new;
  t.nblocks[i] = nb;
  return {m_old, m_new, m_new != -kInf};  // -inf: nothing finite seen yet
}

// Row i's second part: the rescale factor and the exp pass (x to P, into the score row or the
// path's operand terms pt).
template <int R>
inline void RowSecond(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t i, const RowPending& r,
                      const PTerms& pt, const float* x) {
  const int64_t n = kv.n_pad;
  float* s = t.s + i * n;
  const bool masked = t.kind[i] == kRowAdd;
  // exp(0) is 1 exactly: the call is skipped when the running max stays (+inf excepted).
  const float m_old = r.m_old, m_new = r.m_new;
  float corr = m_old == -kInf ? 0.0f : (m_old == m_new && m_new != kInf ? 1.0f : std::exp(m_old - m_new));
  if (rp.precision == Precision::kPaper) corr = RoundScalar(corr, R);
  const int mode = std::isfinite(m_new) ? kExpFiniteMax : masked ? kExpNaNMasked : kExpNaN;
  const auto run = [&](auto pack) {
    constexpr bool kPack = decltype(pack)::value;
    if (mode == kExpFiniteMax) return ExpRow<R, kExpFiniteMax, kPack>(x, n, m_new, s, pt, i);
    if (mode == kExpNaNMasked) return ExpRow<R, kExpNaNMasked, kPack>(x, n, m_new, s, pt, i);
    return ExpRow<R, kExpNaN, kPack>(x, n, m_new, s, pt, i);
  };
  t.psum[i] = pt.hi != nullptr ? run(std::true_type{}) : run(std::false_type{});
  t.corr[i] = corr;
  t.m[i] = m_new;
  t.upd[i] = 1;
}

// The removed shifts of the tile's attending rows, c·q·(α·mean), ahead of the rows' serial
// steps (each row's own DotF64; the mean converted to double once).
inline void ShiftsOf(TileState& t, const RowParams& rp, const KvBlock& kv) {
  const int64_t D = rp.head_dim;
  constexpr int64_t kMaxD = 512;
  double mean_d[kMaxD];
  if (D <= kMaxD)
    for (int64_t d = 0; d < D; ++d) mean_d[d] = static_cast<double>(kv.mean[d]);
  for (int64_t i = 0; i < t.rows; ++i) {
    if (t.kind[i] == kRowNone) continue;
    const float* q = t.q + i * D;
    t.shift[i] = kv.scale * (D <= kMaxD ? DotF64(q, mean_d, D) : DotF64(q, kv.mean, D));
  }
}

// The rows go in groups of kRowGroup: first parts of the group, then second parts, so that the
// rows' serial steps (reductions, the scalar bookkeeping) overlap with the other rows' passes.
template <int R>
void AttendBlockT(const RowParams& rp, const KvBlock& kv, TileState& t) {
  const int64_t n = kv.n_pad;
  const bool paper = rp.precision == Precision::kPaper;
  Products::Score(t, rp, kv);
  const bool rescore = !paper && rp.softcap <= 0.0f && Products::RescoresRows(rp, kv);
  const PTerms pt = Products::template PTarget<R>(t, rp, kv);  // hi null: P as floats over S
  if (!paper) ShiftsOf(t, rp, kv);

  bool any = false;
  for (int64_t g0 = 0; g0 < t.rows; g0 += kRowGroup) {
    const int64_t g = std::min(kRowGroup, t.rows - g0);
    RowPending pending[kRowGroup];
    for (int64_t j = 0; j < g; ++j) pending[j] = RowFirst<R>(t, rp, kv, g0 + j, rescore, t.x + j * n);
    for (int64_t j = 0; j < g; ++j) {
      if (!pending[j].live) continue;
      RowSecond<R>(t, rp, kv, g0 + j, pending[j], pt, t.x + j * n);
      any = true;
    }
  }
  if (!any) return;

  if (kv.k_src != nullptr) {  // direct block: V read from the input, padding keys skipped
    WithSrcType(kv.src_type, [&](auto e) {
      constexpr ElemType E = decltype(e)::value;
      Products::template Pv<R>(t, rp, kv, kv.n, [&](int64_t k, int64_t c) { return LoadSrc<E>(kv.v_src, k * kv.v_stride + c); });
    });
  } else {
    const int64_t dv = rp.dv_pad;
    Products::template Pv<R>(t, rp, kv, n, [&](int64_t k, int64_t c) { return V::load(kv.v + k * dv + c); });
  }
  for (int64_t i = 0; i < t.rows; ++i) {
    if (!t.upd[i]) continue;
    const float corr = t.corr[i];
    if (paper) {
      t.l[i] = RoundScalar(RoundScalar(t.l[i] * corr, R) + RoundScalar(t.psum[i], R), R);
      Rescale<R>(t.o + i * rp.dv_pad, t.pv + i * rp.dv_pad, corr, rp.dv_pad);
    } else {
      t.l[i] = t.l[i] * corr + t.psum[i];
      if (corr == 1.0f) Accumulate(t.o + i * rp.dv_pad, t.pv + i * rp.dv_pad, rp.dv_pad);  // o·1 is o
      else Rescale<kNoRound>(t.o + i * rp.dv_pad, t.pv + i * rp.dv_pad, corr, rp.dv_pad);
    }
  }
}

inline void AttendBlock(const RowParams& rp, const KvBlock& kv, TileState& t) {
  if (rp.precision == Precision::kFloat) AttendBlockT<kNoRound>(rp, kv, t);
  else if (rp.half_type == ElemType::kBFloat16) AttendBlockT<kRoundBF16>(rp, kv, t);
  else AttendBlockT<kRoundF16>(rp, kv, t);
}

// ---- Conversions ---------------------------------------------------------------------------

// Also reports whether every element is finite, so inputs are checked in the pass that converts
// them rather than in a pass of their own.
inline bool ConvertRow(const void* src, ElemType type, int64_t n, float* out) {
  bool finite = true;
  WithSrcType(type, [&](auto e) {
    constexpr ElemType E = decltype(e)::value;
    M bad = V::mfalse();
    bool bad_tail = false;
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      const T x = LoadSrc<E>(src, i);
      bad = V::mor(bad, NonFinite(x));
      V::store(out + i, x);
    }
    for (; i < n; ++i) {
      out[i] = LoadSrcScalar<E>(src, i);
      bad_tail = bad_tail || !std::isfinite(out[i]);
    }
    finite = !V::any(bad) && !bad_tail;
  });
  return finite;
}

// Whether V offers an in-place W x W transpose (transpose_w).
template <class VV, class = void>
struct HasTranspose : std::false_type {};
template <class VV>
struct HasTranspose<VV, std::void_t<decltype(VV::transpose_w(std::declval<typename VV::T*>()))>>
    : std::true_type {};

// The W x W tiles of ShiftTranspose's key chunk [r0, r0 + W), transposed in registers where V
// can; returns the head dimensions done (the rest take gathers).
template <class VV, class Put>
inline int64_t ShiftTransposeTiles(const float* krows, int64_t r0, int64_t D, Put&& put) {
  int64_t d = 0;
  if constexpr (HasTranspose<VV>::value) {
    for (; d + W <= D; d += W) {
      typename VV::T tile[W];
      for (int64_t j = 0; j < W; ++j) tile[j] = VV::load(krows + (r0 + j) * D + d);
      VV::transpose_w(tile);
      for (int64_t j = 0; j < W; ++j) put(d + j, tile[j]);
    }
  }
  return d;
}

// kt[d][r] = c·(krows[r][d] − mean[d]) where valid[r], else 0; n_pad is a multiple of W.
inline void ShiftTranspose(const float* krows, const uint8_t* valid, int64_t n_pad, int64_t D,
                           const float* mean, float c, float* kt) {
  const T cv = V::set1(c);
  for (int64_t r0 = 0; r0 < n_pad; r0 += W) {
    bool all = true;
    for (int64_t r = r0; r < r0 + W; ++r) all = all && valid[r];
    float keep_bits[W];
    for (int64_t r = 0; r < W; ++r) keep_bits[r] = valid[r0 + r] ? 1.0f : 0.0f;
    const M drop = V::eq(V::load(keep_bits), V::zero());
    const auto put = [&](int64_t d, T k) {
      T x = V::mul(cv, V::sub(k, V::set1(mean[d])));
      if (!all) x = V::select(drop, V::zero(), x);
      V::store(kt + d * n_pad + r0, x);
    };
    for (int64_t d = ShiftTransposeTiles<V>(krows, r0, D, put); d < D; ++d)
      put(d, V::gather(krows + r0 * D + d, D));
  }
}

// dst = o / l rounded to the output type, or 0 when l == 0 (NaN/inf in l must show).
inline void StoreRow(const float* o, float l, int64_t n, ElemType type, void* dst) {
  const bool zero = l == 0.0f;
  const T lv = V::set1(l);
  int64_t i = 0;
  auto value = [&](int64_t d) { return zero ? 0.0f : o[d] / l; };
  auto vec = [&](int64_t d) { return zero ? V::zero() : V::div(V::load(o + d), lv); };
  switch (type) {
    case ElemType::kFloat16: {
      uint16_t* h = static_cast<uint16_t*>(dst);
      for (; i + W <= n; i += W) V::store_f16(h + i, vec(i));
      for (; i < n; ++i) h[i] = FloatToHalf(value(i));
      break;
    }
    case ElemType::kBFloat16: {
      uint16_t* h = static_cast<uint16_t*>(dst);
      for (; i + W <= n; i += W) V::store_bf16(h + i, vec(i));
      for (; i < n; ++i) h[i] = FloatToBFloat16(value(i));
      break;
    }
    case ElemType::kFloat32:
    default: {
      float* f = static_cast<float*>(dst);
      for (; i + W <= n; i += W) V::store(f + i, vec(i));
      for (; i < n; ++i) f[i] = value(i);
      break;
    }
  }
}

}  // namespace
}  // namespace PASA_ISA_NAMESPACE
}  // namespace pasa

#define PASA_CAT2(a, b) a##b
#define PASA_CAT(a, b) PASA_CAT2(a, b)
#define PASA_STR2(a) #a
#define PASA_STR(a) PASA_STR2(a)

#if !defined(PASA_PACK_FLOATS)  // a path with a packed block layout names its hooks
#define PASA_PACK_FLOATS nullptr
#define PASA_PACK_BLOCK nullptr
#endif

namespace pasa {
const KernelTable* PASA_CAT(Kernels_, PASA_ISA_NAME)() {
  static const KernelTable table{PASA_STR(PASA_ISA_NAME), PASA_ISA_NAMESPACE::ConvertRow,
                                 PASA_ISA_NAMESPACE::ShiftTranspose, PASA_ISA_NAMESPACE::DirectKeySum,
                                 PASA_ISA_NAMESPACE::StoreRow, PASA_ISA_NAMESPACE::AttendBlock,
                                 PASA_PACK_FLOATS, PASA_PACK_BLOCK};
  return &table;
}
}  // namespace pasa

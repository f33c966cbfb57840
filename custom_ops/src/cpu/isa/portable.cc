// Portable path: the same algorithm over 8-lane arrays in plain C++ (the compiler may vectorise
// them for the baseline ISA). The multiply-add is not fused here, so scores differ from the SIMD
// paths by float rounding only. Compiled with the project's default flags.
#include <cmath>
#include <cstring>

#include "problem/half_types.h"
#include "cpu/isa/kernels.h"

namespace pasa {
namespace isa_portable {

struct V {
  static constexpr int W = 8;
  static constexpr int kTileRows = 4;
  static constexpr int kTileVecs = 2;
  struct T {
    float v[W];
  };
  struct M {
    bool b[W];
  };

  template <class F>
  static T map(F f) {
    T r;
    for (int i = 0; i < W; ++i) r.v[i] = f(i);
    return r;
  }
  template <class F>
  static M mmap(F f) {
    M r;
    for (int i = 0; i < W; ++i) r.b[i] = f(i);
    return r;
  }

  static T zero() { return map([](int) { return 0.0f; }); }
  static T load(const float* p) { return map([&](int i) { return p[i]; }); }
  static T gather(const float* p, int64_t stride) { return map([&](int i) { return p[i * stride]; }); }
  static void store(float* p, const T& a) { std::memcpy(p, a.v, sizeof a.v); }
  static T set1(float x) { return map([&](int) { return x; }); }
  static T add(const T& a, const T& b) { return map([&](int i) { return a.v[i] + b.v[i]; }); }
  static T sub(const T& a, const T& b) { return map([&](int i) { return a.v[i] - b.v[i]; }); }
  static T mul(const T& a, const T& b) { return map([&](int i) { return a.v[i] * b.v[i]; }); }
  static T div(const T& a, const T& b) { return map([&](int i) { return a.v[i] / b.v[i]; }); }
  static T fma(const T& a, const T& b, const T& c) { return map([&](int i) { return a.v[i] * b.v[i] + c.v[i]; }); }
  // max/min return the second operand when either is NaN, as the x86 instructions do.
  static T max(const T& a, const T& b) { return map([&](int i) { return a.v[i] > b.v[i] ? a.v[i] : b.v[i]; }); }
  static T abs(const T& a) { return map([&](int i) { return std::fabs(a.v[i]); }); }
  static M gt(const T& a, const T& b) { return mmap([&](int i) { return a.v[i] > b.v[i]; }); }
  static M ge(const T& a, const T& b) { return mmap([&](int i) { return a.v[i] >= b.v[i]; }); }
  static M eq(const T& a, const T& b) { return mmap([&](int i) { return a.v[i] == b.v[i]; }); }
  static M unord(const T& a) { return mmap([&](int i) { return std::isnan(a.v[i]); }); }
  static M mor(const M& a, const M& b) { return mmap([&](int i) { return a.b[i] || b.b[i]; }); }
  static M mand(const M& a, const M& b) { return mmap([&](int i) { return a.b[i] && b.b[i]; }); }
  static M mfalse() { return mmap([](int) { return false; }); }
  static bool any(const M& m) {
    bool r = false;
    for (int i = 0; i < W; ++i) r = r || m.b[i];
    return r;
  }
  static T select(const M& m, const T& a, const T& b) { return map([&](int i) { return m.b[i] ? a.v[i] : b.v[i]; }); }
  // Round to nearest even for |x| < 2^22 (the only use: exp's reduction, |x| <= 128).
  static T round_nearest(const T& x) {
    return map([&](int i) {
      const float magic = 12582912.0f;  // 1.5 * 2^23
      const float y = x.v[i] + magic;
      return y - magic;
    });
  }
  static T pow2i(const T& n) {
    return map([&](int i) {
      const float e = n.v[i] >= -127.0f && n.v[i] <= 127.0f ? n.v[i] : -127.0f;  // no UB on NaN/inf
      return BitsFloat(static_cast<uint32_t>(static_cast<int32_t>(e) + 127) << 23);
    });
  }
  // p·2^n for n in [-127, 0]: 2^(n+1)·(p/2) keeps n = -127 a normal exponent field.
  static T scale2(const T& p, const T& n) { return mul(mul(p, set1(0.5f)), pow2i(add(n, set1(1.0f)))); }
  static T round_half(const T& x) { return map([&](int i) { return RoundToHalf(x.v[i]); }); }
  static T round_bf16(const T& x) { return map([&](int i) { return RoundToBFloat16(x.v[i]); }); }
  static float reduce_add(const T& a) {
    return ((a.v[0] + a.v[4]) + (a.v[2] + a.v[6])) + ((a.v[1] + a.v[5]) + (a.v[3] + a.v[7]));
  }
  static float reduce_max(const T& a) {
    float m = a.v[0];
    for (int i = 1; i < W; ++i) m = a.v[i] > m ? a.v[i] : m;
    return m;
  }
  static T load_f16(const uint16_t* p) { return map([&](int i) { return HalfToFloat(p[i]); }); }
  static T load_bf16(const uint16_t* p) { return map([&](int i) { return BFloat16ToFloat(p[i]); }); }
  static void store_f16(uint16_t* p, const T& x) {
    for (int i = 0; i < W; ++i) p[i] = FloatToHalf(x.v[i]);
  }
  static void store_bf16(uint16_t* p, const T& x) {
    for (int i = 0; i < W; ++i) p[i] = FloatToBFloat16(x.v[i]);
  }
};

}  // namespace isa_portable
}  // namespace pasa

#define PASA_ISA_NAMESPACE isa_portable
#define PASA_ISA_NAME portable
#include "cpu/isa/kernels_impl.h"

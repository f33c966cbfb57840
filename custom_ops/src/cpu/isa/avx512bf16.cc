// AVX-512 path plus AVX512-BF16: identical to avx512.cc, except that for bfloat16 inputs in
// `half` and `paper` precision the P·V product runs on vdpbf16ps (32 multiply-adds per
// instruction). There P is already rounded to bfloat16 and V is bfloat16, so the products are
// exact and accumulate in fp32, as the contract asks; everywhere else (fp16 inputs, where P and V
// would lose bits, and `float` precision) it runs the fp32 product. Compiled with the AVX-512
// flags plus -mavx512bf16.
#include <immintrin.h>

#include <type_traits>

#include "cpu/isa/kernels.h"

namespace pasa {
namespace isa_avx512bf16 {

#include "cpu/isa/avx512_vec.h"  // struct V

// Packs the bf16 halves of two consecutive keys into one dword per column (low: key r, high:
// key r+1), the operand layout of vdpbf16ps. Exact for values that are bf16 already.
struct Bf16Pack {
  // out[w] for w < 16: (hi16(a[w]), hi16(b[w])) — interleave two rows.
  static __m512i interleave(__m512 a, __m512 b) {
    const __m512i idx = _mm512_set_epi16(63, 31, 61, 29, 59, 27, 57, 25, 55, 23, 53, 21, 51, 19, 49, 17,
                                         47, 15, 45, 13, 43, 11, 41, 9, 39, 7, 37, 5, 35, 3, 33, 1);
    return _mm512_permutex2var_epi16(_mm512_castps_si512(a), idx, _mm512_castps_si512(b));
  }
  // out[k] for k < 16: (hi16(x[2k]), hi16(x[2k+1])) of 32 consecutive values x = a ++ b.
  static __m512i pairs(__m512 a, __m512 b) {
    const __m512i idx = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33,
                                         31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(_mm512_castps_si512(a), idx, _mm512_castps_si512(b));
  }
  static __m512 dot(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);  // same-size vector casts
  }
};

}  // namespace isa_avx512bf16
}  // namespace pasa

#define PASA_ISA_NAMESPACE isa_avx512bf16
#define PASA_ISA_NAME avx512bf16
#define PASA_PV_BF16 1
#define PASA_PRODUCTS Bf16PvProducts
#include "cpu/isa/kernels_impl.h"

// AVX-512 path (F, BW, VL, DQ) with F16C conversions and FMA: 16 float lanes, 6x4-vector register
// blocks. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mf16c -mfma (isa_list.def).
#include <immintrin.h>

#include <type_traits>

#include "cpu/isa/kernels.h"

namespace pasa {
namespace isa_avx512 {

#include "cpu/isa/avx512_vec.h"  // struct V

}  // namespace isa_avx512
}  // namespace pasa

#define PASA_ISA_NAMESPACE isa_avx512
#define PASA_ISA_NAME avx512
#include "cpu/isa/kernels_impl.h"

// AVX-512 path (F, BW, VL, DQ) with F16C conversions and FMA: 16 float lanes, 6x4-vector register
// blocks. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mf16c -mfma (CMakeLists.txt).
#include <immintrin.h>

#include "isa_kernels.h"

namespace pasa {
namespace isa_avx512 {

#include "isa_avx512_vec.h"  // struct V

}  // namespace isa_avx512
}  // namespace pasa

#define PASA_ISA_NAMESPACE isa_avx512
#include "isa_kernels_impl.h"

namespace pasa {
const KernelTable* Avx512Kernels() {
  static const KernelTable table{"avx512", isa_avx512::ConvertRow, isa_avx512::ShiftTranspose, isa_avx512::DirectKeySum, isa_avx512::StoreRow, isa_avx512::AttendBlock};
  return &table;
}
}  // namespace pasa

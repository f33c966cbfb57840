// AMX path: the avx512bf16 path's vector code, with the score product and P·V on AMX tiles
// (TDPBF16PS) for fp16 and bf16 inputs in half and paper precision, through exact bf16 splits
// (amx_tiles.h says which products and why). Float precision, fp32 inputs and decode-sized
// problems keep the FMA products. Compiled with the AVX-512 flags plus -mavx512bf16 -mamx-tile
// -mamx-bf16; offered only when the CPU has AMX and the OS grants the tile data (dispatch.cc).
#include <immintrin.h>

#include <type_traits>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/isa/kernels.h"

namespace pasa {
namespace isa_amx {

#include "cpu/isa/avx512_vec.h"  // struct V

}  // namespace isa_amx
}  // namespace pasa

#define PASA_ISA_NAMESPACE isa_amx
#define PASA_ISA_NAME amx
#define PASA_PRODUCTS_HEADER "cpu/isa/amx_tiles.h"
#define PASA_PRODUCTS AmxProducts
#define PASA_PACK_FLOATS PASA_ISA_NAMESPACE::AmxPackFloats
#define PASA_PACK_BLOCK PASA_ISA_NAMESPACE::AmxPackBlock
#include "cpu/isa/kernels_impl.h"

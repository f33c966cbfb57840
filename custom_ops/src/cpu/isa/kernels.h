// The instruction-set-specific inner loops of the CPU kernel, behind a table of function pointers.
// One implementation (kernels_impl.h) is compiled once per instruction set, each in its own file
// with that file's flags (avx512bf16.cc, avx512.cc, avx2.cc, portable.cc: the list is
// isa_list.def); the table is chosen once, when the library loads, from the CPU's features or
// from PASA_ONNX_ISA.
#pragma once

#include <cstdint>
#include <string>

#include "cpu/geometry.h"
#include "problem/attention_problem.h"

namespace pasa {

// How one query row meets one key block.
enum RowKind : uint8_t {
  kRowNone = 0,  // attends no key of the block: its state is left unchanged
  kRowFull = 1,  // attends every key of the block (no padding), additive mask 0
  kRowAdd = 2,   // attends where its additive row (0, a mask value, or -inf) is not -inf
};

// A prepared key/value block: K' = c·(K − α·mean) and V in float ([n_pad][dv_pad]); invalid and
// padding keys are zero. K' is transposed ([D][n_pad], keys contiguous: the tile product
// broadcasts query elements) or, for decode-sized problems (k_rows), row-major ([n_pad][D]: each
// score is one vector dot product, no transposition needed).
struct KvBlock {
  const float* kt = nullptr;
  bool k_rows = false;
  const float* v = nullptr;
  int64_t n_pad = 0;
  float inv_count = 0.0f;  // 1 / number of valid keys (those that enter the block mean)

  // Direct blocks (decode-sized problems whose block keys are all valid): no
  // prepared copy; K and V are read where they lie and K' = scale·(K − mean) is formed in
  // registers by the same operations as the prepared copy, so the results are the same bits.
  const void* k_src = nullptr;  // row 0 of the block; set: a direct block (kt, v unused)
  const void* v_src = nullptr;
  ElemType src_type = ElemType::kFloat16;
  int64_t k_stride = 0, v_stride = 0;  // elements between consecutive keys
  int64_t n = 0;                        // keys in the block (n_pad − n padding keys score 0)
  // Every block: α·mean of its valid keys and the score scale c. The removed shift of query row
  // i is c·(q_i · α·mean), recovered directly in half and float precision.
  const float* mean = nullptr;  // [D]
  float scale = 0.0f;

  // The block's K' and V in a path's own operand layout (KernelTable::pack_block), or null.
  const void* pack = nullptr;
};

// Per-problem constants of the row pipeline.
struct RowParams {
  Precision precision = Precision::kHalf;
  ElemType half_type = ElemType::kFloat16;
  float beta = 0.0f;
  float softcap = 0.0f;
  int64_t head_dim = 0;
  int64_t dv_pad = 0;
  ElemType q_type = ElemType::kFloat32, v_type = ElemType::kFloat32;  // the inputs' element types
};

// Rows of a tile whose two row passes interleave (the first pass of each, then the second):
// TileState::x holds that many rows.
constexpr int64_t kRowGroup = 8;

// The state of one query tile across key blocks (per-thread scratch, allocated once).
struct TileState {
  int64_t rows = 0;
  float* q = nullptr;       // [rows][D] float queries
  float* s = nullptr;       // [rows][n_pad] scores, then probabilities
  float* add = nullptr;     // [rows][n_pad] additive rows for kRowAdd
  const uint8_t* kind = nullptr;  // [rows] RowKind for the current block
  float* pv = nullptr;      // [rows][dv_pad] P·V of the current block
  float* o = nullptr;       // [rows][dv_pad] output accumulator
  float* m = nullptr;       // [rows] running max
  float* l = nullptr;       // [rows] running sum
  float* abar = nullptr;    // [rows] running pseudo-average ā
  float* nblocks = nullptr;  // [rows] blocks seen (float: the emulation divides by it)
  float* corr = nullptr;    // [rows] scratch: rescale factor of the current block
  float* psum = nullptr;    // [rows] scratch: probability sum of the current block
  float* shift = nullptr;   // [rows] scratch: removed shift of the current block (half, float)
  uint8_t* upd = nullptr;   // [rows] scratch: whether the row's state takes this block
  float* x = nullptr;       // [kRowGroup][n_pad] scratch: shifted scores between a row's two passes
  uint16_t* pack_p = nullptr;  // [rows][n_pad] scratch of paths with bf16 pair products (P's bits)
  uint32_t* pack_v = nullptr;  // [n_pad/2][dv_pad] likewise (V's key pairs)
  bool q_fresh = true;      // q was loaded since the last block: a path's packed copy is stale
};

struct KernelTable {
  const char* name;
  // out[0..n) = float(src[0..n)) for contiguous elements of `type`; false when any is inf or NaN.
  bool (*convert_row)(const void* src, ElemType type, int64_t n, float* out);
  // kt[d][r] = c·(krows[r][d] − mean[d]) for keys r < n_pad whose valid[r] is set, 0 for the
  // others (krows: [n_pad][D], rows of invalid keys may hold anything).
  void (*shift_transpose)(const float* krows, const uint8_t* valid, int64_t n_pad, int64_t D,
                          const float* mean, float c, float* kt);
  // sum[d] += Σ_r float(k[r·k_stride + d]) over n rows, row by row (the prepared path's order);
  // false when any of those keys, or of the n value rows of Dv elements, is inf or NaN.
  bool (*direct_key_sum)(const void* k, const void* v, ElemType type, int64_t n, int64_t D,
                         int64_t Dv, int64_t k_stride, int64_t v_stride, float* sum);
  // dst[0..n) = round_to(type, o[i] / l), or 0 where l == 0 (a row that attended nothing).
  void (*store_row)(const float* o, float l, int64_t n, ElemType type, void* dst);
  // One key block for a query tile: scores, PASA shift bookkeeping, online softmax, P·V.
  void (*attend_block)(const RowParams& rp, const KvBlock& kv, TileState& t);
  // Optional (null on paths without a packed layout): floats of one prepared block's packed copy
  // for `p` (0: this problem takes none), and the packing of a prepared block (kt[D][n_pad],
  // v[n_pad][dv_pad]) into `pack`, once per block, after K' and V are final.
  int64_t (*pack_floats)(const AttentionProblem& p, int64_t n_pad, int64_t dv_pad);
  void (*pack_block)(const AttentionProblem& p, const float* kt, const float* v, int64_t n_pad, int64_t dv_pad,
                     float* pack);
};

// The table in use (chosen at load time).
const KernelTable& ActiveKernels();
// Empty when the selection succeeded, else why PASA_ONNX_ISA could not be honoured.
const std::string& IsaSelectionError();
// The selection as JSON: {"active": name, "supported": [...], "known": [...], "error": "..."}.
const char* IsaInfoJson();

// Per-instruction-set tables (isa_list.def); nullptr when the build does not carry that path.
#define PASA_ISA(name, features) const KernelTable* Kernels_##name();
#include "cpu/isa/isa_list.def"
#undef PASA_ISA

}  // namespace pasa

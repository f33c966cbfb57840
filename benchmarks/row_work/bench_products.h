// Products of the row-work microbenchmark (row_work_bench.cc): the amx path's own code around the
// tile products, without the tile products. Included by kernels_impl.h through
// PASA_PRODUCTS_HEADER, like amx_tiles.h, whose functions it reuses. No include guard on purpose.
#include "cpu/isa/amx_tiles.h"

// The scores of the "product": preset by the benchmark, copied into the tile (the copy is timed
// separately and reported as the baseline).
inline const float*& BenchScores() {
  static const float* s = nullptr;
  return s;
}

struct BenchProducts : AmxProducts {
  static void Score(TileState& t, const RowParams& rp, const KvBlock& kv) {
    const int64_t D = rp.head_dim, n = kv.n_pad;
    std::memcpy(t.s, BenchScores(), static_cast<size_t>(t.rows * n) * sizeof(float));
    if (rp.precision == Precision::kHalf && rp.half_type == ElemType::kFloat16) RescoreLarge(t, D, kv);
  }
  template <int R, class VRow>
  static void Pv(TileState& t, const RowParams& rp, const KvBlock& kv, int64_t, const VRow&) {
    AmxPackP<R>(t, rp, kv);  // everything of AmxProducts::Pv but the tile GEMM
  }
};

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
  static void Score(TileState& t, const RowParams&, const KvBlock& kv) {
    std::memcpy(t.s, BenchScores(), static_cast<size_t>(t.rows * kv.n_pad) * sizeof(float));
  }
  template <int R, class VRow>
  static void Pv(TileState&, const RowParams&, const KvBlock&, int64_t, const VRow&) {}  // P is packed already
};

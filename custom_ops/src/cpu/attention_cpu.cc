// PASA attention on the CPU: key-block preparation and the per-tile loop. See attention_cpu.h
// and shared/PASA.md; pasa_onnx/numerics.py is the numpy emulation that the tests hold this file
// to, step for step. The per-block inner loops live in isa/kernels_impl.h (one copy per
// instruction set).
#include "cpu/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "cpu/aligned_vector.h"
#include "cpu/geometry.h"
#include "cpu/isa/kernels.h"
#include "problem/half_types.h"

namespace pasa {
namespace {

// Loads `rows` rows of `cols` elements of a [B,H,S,D] view into a dense float buffer; false when
// any of them is inf or NaN.
bool LoadRows(const TensorView& view, int64_t b, int64_t h, int64_t s0, int64_t rows, int64_t cols,
              float* out) {
  const int64_t base = RowOffset(view, b, h, s0);
  if (view.stride[3] == 1) {
    const KernelTable& k = ActiveKernels();
    const auto* bytes = static_cast<const unsigned char*>(view.data);
    if (view.stride[2] == cols)  // contiguous rows: one conversion
      return k.convert_row(bytes + static_cast<size_t>(base) * ElemBytes(view.type), view.type, rows * cols, out);
    bool finite = true;
    for (int64_t r = 0; r < rows; ++r) {
      const size_t at = static_cast<size_t>(base + r * view.stride[2]) * ElemBytes(view.type);
      finite = k.convert_row(bytes + at, view.type, cols, out + r * cols) && finite;
    }
    return finite;
  }
  bool finite = true;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < cols; ++d) {
      const float x = LoadElem(view.data, view.type, base + r * view.stride[2] + d * view.stride[3]);
      finite = finite && std::isfinite(x);
      out[r * cols + d] = x;
    }
  return finite;
}

// Index of the first non-finite element of a row (n elements, element stride), or -1.
int64_t FirstNonFinite(const void* data, ElemType type, int64_t base, int64_t n, int64_t stride) {
  const auto bad_at = [&](int64_t d) {
    const int64_t i = base + d * stride;
    if (type == ElemType::kFloat32) {
      return (FloatBits(static_cast<const float*>(data)[i]) & 0x7f800000u) == 0x7f800000u;
    }
    const uint16_t h = static_cast<const uint16_t*>(data)[i];
    return type == ElemType::kFloat16 ? (h & 0x7c00u) == 0x7c00u : (h & 0x7f80u) == 0x7f80u;
  };
  if (stride == 1) {  // branch-free counting scan first (vectorises), then find the position
    uint32_t bad = 0;
    if (type == ElemType::kFloat32) {
      const uint32_t* f = static_cast<const uint32_t*>(data) + base;
      for (int64_t d = 0; d < n; ++d) bad += (f[d] & 0x7f800000u) == 0x7f800000u;
    } else {
      const uint16_t* h = static_cast<const uint16_t*>(data) + base;
      const uint16_t e = type == ElemType::kFloat16 ? 0x7c00u : 0x7f80u;
      for (int64_t d = 0; d < n; ++d) bad += (h[d] & e) == e;
    }
    if (bad == 0) return -1;
  }
  for (int64_t d = 0; d < n; ++d)
    if (bad_at(d)) return d;
  return -1;
}

float RoundTo(ElemType half_type, float v) {
  return half_type == ElemType::kBFloat16 ? RoundToBFloat16(v) : RoundToHalf(v);
}

std::string Describe(const char* what, int64_t b, int64_t h, int64_t s, int64_t d) {
  std::ostringstream os;
  os << what << " holds a non-finite value at [batch=" << b << ", head=" << h << ", seq=" << s
     << ", dim=" << d << "]";
  return os.str();
}

// Per-thread scratch of a tile or a block build, grown on demand (owned by a thread_local).
// Cache-line aligned: the tile products load and store whole rows of them.
struct Scratch {
  AlignedVector<float> q, s, x, add, pv, o, m, l, abar, nblocks, corr, psum, shift, kt, v, pack, krows, ksum, kmean;
  AlignedVector<uint8_t> kind, upd, valid, read;
  AlignedVector<uint16_t> pack_p;
  AlignedVector<uint32_t> pack_v;
};

template <class T>
T* Grow(AlignedVector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}


}  // namespace

// The state of one query tile: its rows (q_rows query positions of each of its heads h, h+1, ...,
// head-major), its geometry and its per-thread scratch.
struct PreparedProblem::TileCtx {
  int64_t b, h, unit, i0, q_rows, heads, rows, offset;
  Geometry geom;
  bool masked;
  Scratch* t;
  TileState st;
  uint8_t* kind;    // [rows] RowKind for the current block
  uint8_t* read;    // [kv_blocks] blocks read by the tile (unshared problems), else null
  float* own_kt;    // unshared problems: the tile's own prepared block
  float* own_v;
  float* own_pack;  // and its packed copy (null when the path takes none)
  int64_t HeadOf(int64_t i) const { return h + i / q_rows; }
  int64_t QueryOf(int64_t i) const { return i0 + i % q_rows; }
};

namespace {

// Per-thread scratch of the tile's rows, its state reset and its queries loaded.
TileState StartTile(const AttentionProblem& p, int64_t rows, int64_t slot_n, int64_t dvp, Scratch& t) {
  const int64_t D = p.head_dim;
  TileState st;
  st.rows = rows;
  st.q = Grow(t.q, rows * D);
  st.s = Grow(t.s, rows * slot_n);
  st.add = Grow(t.add, rows * slot_n);
  st.pv = Grow(t.pv, rows * dvp);
  st.o = Grow(t.o, rows * dvp);
  st.m = Grow(t.m, rows);
  st.l = Grow(t.l, rows);
  st.abar = Grow(t.abar, rows);
  st.nblocks = Grow(t.nblocks, rows);
  st.corr = Grow(t.corr, rows);
  st.psum = Grow(t.psum, rows);
  st.shift = Grow(t.shift, rows);
  st.upd = Grow(t.upd, rows);
  st.x = Grow(t.x, kRowGroup * slot_n);
  st.pack_p = Grow(t.pack_p, rows * slot_n);
  st.pack_v = Grow(t.pack_v, slot_n / 2 * dvp);
  st.kind = Grow(t.kind, rows);
  std::fill(st.o, st.o + rows * dvp, 0.0f);
  std::fill(st.m, st.m + rows, kNegInf);
  std::fill(st.l, st.l + rows, 0.0f);
  std::fill(st.abar, st.abar + rows, 0.0f);
  std::fill(st.nblocks, st.nblocks + rows, 0.0f);
  st.q_fresh = true;
  return st;
}

RowParams RowParamsOf(const AttentionProblem& p, int64_t dvp) {
  RowParams rp;
  rp.precision = p.precision;
  rp.half_type = p.half_type;
  const float alpha = p.softcap > 0.0f ? 0.0f : p.alpha;
  rp.beta = alpha < 1.0f ? alpha / (1.0f - alpha) : 0.0f;  // paper mode only (alpha < 1 there)
  rp.softcap = p.softcap;
  rp.head_dim = p.head_dim;
  rp.dv_pad = dvp;
  rp.q_type = p.q.type;
  rp.v_type = p.v.type;
  return rp;
}

}  // namespace

PreparedProblem::PreparedProblem(const AttentionProblem& p, const CpuPlan& plan, float* cache)
    : problem_(&p), plan_(&plan), cache_(cache) {
  inv_count_.assign(plan.units.size() * static_cast<size_t>(plan.kv_blocks), 0.0f);
}

int64_t PreparedProblem::NumTasks(int64_t stage) const {
  const CpuPlan::Stage& s = plan_->stages[static_cast<size_t>(stage)];
  return s.prepare ? s.num_units * plan_->kv_blocks : static_cast<int64_t>(s.items.size());
}

void PreparedProblem::RunTask(int64_t stage, int64_t task) {
  const CpuPlan::Stage& s = plan_->stages[static_cast<size_t>(stage)];
  if (s.prepare) PrepareTask(s, task);
  else RunTile(s.items[static_cast<size_t>(task)]);
}

// One block of a unit of the chunk, into its cache slot.
void PreparedProblem::PrepareTask(const CpuPlan::Stage& stage, int64_t task) {
  const AttentionProblem& p = *problem_;
  const CpuPlan& plan = *plan_;
  const int64_t unit = stage.first_unit + task / plan.kv_blocks;
  const int64_t block = task % plan.kv_blocks;
  float* kt = cache_ + ((unit % plan.units_per_chunk) * plan.kv_blocks + block) * plan.slot_floats;
  float* v = kt + plan.slot_keys * p.head_dim;
  float* mean = v + plan.slot_keys * plan.dv_pad;
  float* pack = plan.pack_floats > 0 ? mean + AlignUp(p.head_dim, kKeyAlign) : nullptr;
  inv_count_[static_cast<size_t>(unit * plan.kv_blocks + block)] = BuildBlock(unit, block, kt, v, mean, pack);
}

// 1) block mean over the valid keys, 2) K' = c·(K − α·mean), to kt[D][n_pad] (or kt[n_pad][D])
// (paper mode rounds K'), 3) V in float to v[n_pad][dv_pad]. Invalid and padding keys are zero.
// 4) α·mean into `mean_out`, 5) the path's packed copy into `pack` (when not null). Returns
// 1 / (number of valid keys), or 0 when the block has none.
float PreparedProblem::BuildBlock(int64_t unit, int64_t block, float* kt, float* v, float* mean_out, float* pack) {
  const AttentionProblem& p = *problem_;
  const CpuPlan::Unit& u = plan_->units[static_cast<size_t>(unit)];
  const int64_t D = p.head_dim, Dv = p.v_head_dim;
  const int64_t r0 = block * p.block_kv;
  const int64_t n = std::min(p.block_kv, p.kv_len - r0);
  const int64_t n_pad = AlignUp(n, kKeyAlign);
  const float alpha = p.softcap > 0.0f ? 0.0f : p.alpha;
  const bool paper = p.precision == Precision::kPaper;

  thread_local Scratch t;
  float* krows = Grow(t.krows, AlignUp(n, kKeyAlign) * D);
  float* sum = Grow(t.ksum, D);
  std::fill(sum, sum + D, 0.0f);
  int64_t count = 0;
  for (int64_t r = 0; r < n; ++r) count += KeyValid(u.b, u.rep_head, r0 + r);
  bool finite = true;  // of the keys and values read
  if (count == n) finite = LoadRows(p.k, u.b, u.kvh, r0, n, D, krows);  // every row is read: one pass
  for (int64_t r = 0; r < n; ++r) {
    if (!KeyValid(u.b, u.rep_head, r0 + r)) continue;
    if (count != n) finite = LoadRows(p.k, u.b, u.kvh, r0 + r, 1, D, krows + r * D) && finite;
    float* __restrict acc = sum;
    const float* __restrict kr = krows + r * D;
    for (int64_t d = 0; d < D; ++d) acc[d] += kr[d];
  }
  if (count == 0) return 0.0f;  // no key here can be attended: the block contributes nothing
  const float inv_count = 1.0f / static_cast<float>(count);
  for (int64_t d = 0; d < D; ++d) sum[d] = alpha * (sum[d] * inv_count);  // α·mean
  std::copy(sum, sum + D, mean_out);  // the removed shift of row i is c·q_i·(α·mean)
  // Every row and column is written: K' and V of valid keys, zeros for the rest and the padding.
  const bool whole_v = Dv == plan_->dv_pad && count == n;
  uint8_t* valid = Grow(t.valid, n_pad);
  for (int64_t r = 0; r < n_pad; ++r) valid[r] = r < n && KeyValid(u.b, u.rep_head, r0 + r);
  const float c = p.scale;  // locals and restrict pointers: these loops vectorise
  const float* __restrict mean = sum;
  if (plan_->k_rows) {
    for (int64_t r = 0; r < n_pad; ++r) {
      float* __restrict out = kt + r * D;
      const float* __restrict kr = krows + r * D;
      if (!valid[r]) {
        std::fill(out, out + D, 0.0f);
        continue;
      }
      for (int64_t d = 0; d < D; ++d) out[d] = c * (kr[d] - mean[d]);
    }
  } else {  // transposed: contiguous stores along the keys
    ActiveKernels().shift_transpose(krows, valid, n_pad, D, mean, c, kt);
  }
  if (paper)
    for (int64_t i = 0; i < D * n_pad; ++i) kt[i] = RoundTo(p.half_type, kt[i]);
  for (int64_t r = 0; r < n_pad; ++r) {
    float* vr = v + r * plan_->dv_pad;
    if (!valid[r]) {
      std::fill(vr, vr + plan_->dv_pad, 0.0f);
    } else if (!whole_v) {
      finite = LoadRows(p.v, u.b, u.kvh, r0 + r, 1, Dv, vr) && finite;
      std::fill(vr + Dv, vr + plan_->dv_pad, 0.0f);
    }
  }
  if (whole_v) finite = LoadRows(p.v, u.b, u.kvh, r0, n, Dv, v) && finite;
  if (!finite) FlagNonFinite();
  if (pack != nullptr) ActiveKernels().pack_block(p, kt, v, n_pad, plan_->dv_pad, pack);
  return inv_count;
}

// A direct block (see KvBlock) when every key of the block is valid: the block mean, from K in
// place, into `mean`; false (nothing set) otherwise. Flags non-finite keys and values.
bool PreparedProblem::DirectBlock(int64_t unit, int64_t block, float* mean, KvBlock* kv) {
  const AttentionProblem& p = *problem_;
  const CpuPlan::Unit& u = plan_->units[static_cast<size_t>(unit)];
  const int64_t r0 = block * p.block_kv;
  const int64_t n = std::min(p.block_kv, p.kv_len - r0);
  for (int64_t r = 0; r < n; ++r)
    if (!KeyValid(u.b, u.rep_head, r0 + r)) return false;
  const int64_t D = p.head_dim;
  const auto at = [&](const TensorView& view) {
    return static_cast<const unsigned char*>(view.data) +
           static_cast<size_t>(RowOffset(view, u.b, u.kvh, r0)) * ElemBytes(view.type);
  };
  const void* k = at(p.k);
  const void* v = at(p.v);
  std::fill(mean, mean + D, 0.0f);
  if (!ActiveKernels().direct_key_sum(k, v, p.k.type, n, D, p.v_head_dim, p.k.stride[2], p.v.stride[2], mean))
    FlagNonFinite();
  // The same operations as BuildBlock: α·(sum · (1/count)).
  const float inv_count = 1.0f / static_cast<float>(n);
  const float alpha = p.softcap > 0.0f ? 0.0f : p.alpha;
  for (int64_t d = 0; d < D; ++d) mean[d] = alpha * (mean[d] * inv_count);
  kv->k_src = k;
  kv->v_src = v;
  kv->src_type = p.k.type;
  kv->k_stride = p.k.stride[2];
  kv->v_stride = p.v.stride[2];
  kv->n = n;
  kv->mean = mean;
  kv->scale = p.scale;
  kv->inv_count = inv_count;
  return true;
}

// Whether the keys and values of a block that the unit may attend are all finite.
bool PreparedProblem::BlockInputsFinite(int64_t unit, int64_t block) const {
  const AttentionProblem& p = *problem_;
  const CpuPlan::Unit& u = plan_->units[static_cast<size_t>(unit)];
  const int64_t r0 = block * p.block_kv, r1 = std::min(p.kv_len, r0 + p.block_kv);
  const auto finite = [&](const TensorView& view, int64_t r, int64_t cols) {
    return FirstNonFinite(view.data, view.type, RowOffset(view, u.b, u.kvh, r), cols, view.stride[3]) < 0;
  };
  for (int64_t r = r0; r < r1; ++r)
    if (KeyValid(u.b, u.rep_head, r) && (!finite(p.k, r, p.head_dim) || !finite(p.v, r, p.v_head_dim)))
      return false;
  return true;
}


// How each row meets key block [r0, r0 + n): not at all, every key, or through an additive row
// (kind, st.add). Returns whether any row attends a key of the block.
bool PreparedProblem::ClassifyRows(const TileCtx& c, int64_t r0, int64_t n, int64_t n_pad) {
  const AttentionProblem& p = *problem_;
  bool any_row = false;
  for (int64_t i = 0; i < c.rows; ++i) {
    const int64_t pos = c.QueryOf(i) + c.offset;
    float* add = c.st.add + i * n_pad;
    int64_t lo, hi;
    c.geom.Range(pos, p.kv_len, &lo, &hi);
    lo = std::max(lo, r0);
    if (!c.masked) {
      hi = std::min(hi, r0 + n);
      if (hi <= lo) {
        c.kind[i] = kRowNone;
      } else if (lo == r0 && hi == r0 + n && n == n_pad) {
        c.kind[i] = kRowFull;
      } else {
        c.kind[i] = kRowAdd;
        std::fill(add, add + n_pad, kNegInf);
        std::fill(add + (lo - r0), add + (hi - r0), 0.0f);
      }
    } else {
      // Keys the geometry allows ([lo, hi), which also ends at the valid length), then the
      // mask row read directly; keys past the mask's length are masked (ONNX padding).
      std::fill(add, add + n_pad, kNegInf);
      hi = std::min({hi, r0 + n, p.mask.mask_len});
      const uint8_t* valid = plan_->key_valid.data() + (c.b * p.q_heads + c.HeadOf(i)) * p.kv_len;
      const int64_t row = c.b * p.mask.stride[0] + c.HeadOf(i) * p.mask.stride[1] + c.QueryOf(i) * p.mask.stride[2];
      const int64_t ms = p.mask.stride[3];
      int64_t unmasked = 0;
      if (p.mask.kind == MaskKind::kBool) {
        const uint8_t* m = static_cast<const uint8_t*>(p.mask.data) + row;
        for (int64_t r = lo; r < hi; ++r) {
          const bool on = valid[r] && m[r * ms];
          add[r - r0] = on ? 0.0f : kNegInf;
          unmasked += on;
        }
      } else {
        for (int64_t r = lo; r < hi; ++r) {
          if (!valid[r]) continue;
          const float a = LoadElem(p.mask.data, p.mask.type, row + r * ms);
          add[r - r0] = a;
          unmasked += a != kNegInf;
        }
      }
      c.kind[i] = unmasked > 0 ? kRowAdd : kRowNone;
    }
    any_row = any_row || c.kind[i] != kRowNone;
  }
  return any_row;
}

// Where block j's shifted keys and values come from: the shared cache, the input itself (direct
// decode blocks) or the tile's own prepared copy.
void PreparedProblem::ResolveBlock(const TileCtx& c, int64_t j, KvBlock* kv) {
  const CpuPlan& plan = *plan_;
  const int64_t D = problem_->head_dim, slot_n = plan.slot_keys, dvp = plan.dv_pad;
  kv->scale = problem_->scale;
  if (plan.shared) {
    kv->inv_count = inv_count_[static_cast<size_t>(c.unit * plan.kv_blocks + j)];
    kv->kt = cache_ + ((c.unit % plan.units_per_chunk) * plan.kv_blocks + j) * plan.slot_floats;
    kv->v = kv->kt + slot_n * D;
    kv->mean = kv->v + slot_n * dvp;
    if (plan.pack_floats > 0) kv->pack = kv->mean + AlignUp(D, kKeyAlign);
  } else if (plan.direct_ok && DirectBlock(c.unit, j, Grow(c.t->ksum, D), kv)) {
    c.read[j] = 1;
  } else {
    float* mean = Grow(c.t->kmean, D);
    kv->inv_count = BuildBlock(c.unit, j, c.own_kt, c.own_v, mean, c.own_pack);
    c.read[j] = 1;
    kv->kt = c.own_kt;
    kv->v = c.own_v;
    kv->mean = mean;
    kv->pack = c.own_pack;
  }
}

// An unshared problem's tile reads only the blocks it attends. The others are checked all the
// same, as the prepare stage of a shared problem does, so that whether an input is accepted does
// not depend on how the work is split.
void PreparedProblem::CheckUnreadBlocks(const TileCtx& c) {
  if (c.read == nullptr) return;
  for (int64_t j = 0; j < plan_->kv_blocks; ++j)
    if (!c.read[j] && !BlockInputsFinite(c.unit, j)) FlagNonFinite();
}

// Normalise; a row that attended nothing is 0 (ONNX Attention semantics).
void PreparedProblem::StoreTile(const TileCtx& c) {
  const AttentionProblem& p = *problem_;
  const KernelTable& kernels = ActiveKernels();
  const int64_t dvp = plan_->dv_pad;
  for (int64_t i = 0; i < c.rows; ++i) {
    const int64_t base = c.b * p.y_stride[0] + c.HeadOf(i) * p.y_stride[1] + c.QueryOf(i) * p.y_stride[2];
    const float* oi = c.st.o + i * dvp;
    const float l = c.st.l[i];
    // inf or NaN in l or O (exponent bits all set): an OR over the bits, which vectorises.
    uint32_t bits = 0;
    std::memcpy(&bits, &l, sizeof bits);
    uint32_t bad = (bits & 0x7f800000u) == 0x7f800000u;
    for (int64_t d = 0; d < p.v_head_dim; ++d) {
      std::memcpy(&bits, oi + d, sizeof bits);
      bad |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    if (bad) overflow_.store(true, std::memory_order_relaxed);
    if (p.y_stride[3] == 1) {
      auto* out = static_cast<unsigned char*>(p.y) + static_cast<size_t>(base) * ElemBytes(p.q.type);
      kernels.store_row(oi, l, p.v_head_dim, p.q.type, out);
    } else {
      for (int64_t d = 0; d < p.v_head_dim; ++d)
        StoreElem(p.y, p.q.type, base + d * p.y_stride[3], l != 0.0f ? oi[d] / l : 0.0f);
    }
  }
}

// One query tile: load its queries, then per key block it may attend classify its rows, find the
// block's shifted keys and run the block (kernels.attend_block); then store the rows.
void PreparedProblem::RunTile(int64_t item) {
  const AttentionProblem& p = *problem_;
  const CpuPlan& plan = *plan_;
  thread_local Scratch scratch;  // per worker thread, grown on demand, freed with the thread
  TileCtx c;
  const int64_t bh = item / plan.q_blocks;
  c.h = bh % p.q_heads;
  c.b = bh / p.q_heads;
  c.unit = plan.unit_of[static_cast<size_t>(bh)];
  c.i0 = (item % plan.q_blocks) * plan.tile_q;
  c.q_rows = std::min(plan.tile_q, p.q_len - c.i0);
  c.heads = plan.heads_per_tile;
  c.rows = c.q_rows * c.heads;
  c.offset = p.query_offset[static_cast<size_t>(c.b)];
  c.geom = GeometryOf(p, c.b);
  c.masked = p.mask.kind != MaskKind::kNone;
  c.t = &scratch;
  c.st = StartTile(p, c.rows, plan.slot_keys, plan.dv_pad, scratch);
  c.kind = scratch.kind.data();
  for (int64_t j = 0; j < c.heads; ++j)
    if (!LoadRows(p.q, c.b, c.h + j, c.i0, c.q_rows, p.head_dim, c.st.q + j * c.q_rows * p.head_dim)) FlagNonFinite();
  c.read = plan.shared ? nullptr : Grow(scratch.read, plan.kv_blocks);
  if (c.read != nullptr) std::fill(c.read, c.read + plan.kv_blocks, uint8_t{0});
  c.own_kt = plan.shared ? nullptr : Grow(scratch.kt, plan.slot_keys * p.head_dim);
  c.own_v = plan.shared ? nullptr : Grow(scratch.v, plan.slot_keys * plan.dv_pad);
  c.own_pack = plan.shared || plan.pack_floats == 0 ? nullptr : Grow(scratch.pack, plan.pack_floats);
  const RowParams rp = RowParamsOf(p, plan.dv_pad);

  // Key blocks any row of the tile may attend.
  int64_t lo_first, hi_first, lo_last, hi_last;
  c.geom.Range(c.i0 + c.offset, p.kv_len, &lo_first, &hi_first);
  c.geom.Range(c.i0 + c.q_rows - 1 + c.offset, p.kv_len, &lo_last, &hi_last);
  const int64_t key_lo = std::min(lo_first, lo_last), key_hi = std::max(hi_first, hi_last);
  const int64_t first_block = key_hi > key_lo ? key_lo / p.block_kv : 0;
  const int64_t end_block = key_hi > key_lo ? (key_hi - 1) / p.block_kv + 1 : 0;
  for (int64_t j = first_block; j < end_block; ++j) {
    const int64_t r0 = j * p.block_kv;
    const int64_t n = std::min(p.block_kv, p.kv_len - r0);
    KvBlock kv;
    kv.n_pad = AlignUp(n, kKeyAlign);
    kv.k_rows = plan.k_rows;
    if (!ClassifyRows(c, r0, n, kv.n_pad)) continue;
    ResolveBlock(c, j, &kv);
    if (kv.inv_count == 0.0f) continue;  // no valid key in the block
    ActiveKernels().attend_block(rp, kv, c.st);
  }
  CheckUnreadBlocks(c);
  StoreTile(c);
}

std::string ValidateProblem(const PreparedProblem& pp) {
  const AttentionProblem& p = pp.problem();
  // Rows [s0, s1) of a view: one scan when they are contiguous, else row by row; -1 or the
  // first bad row.
  auto first_bad_row = [&](const TensorView& v, int64_t b, int64_t h, int64_t s0, int64_t s1, int64_t cols) {
    if (v.stride[3] == 1 && v.stride[2] == cols &&
        FirstNonFinite(v.data, v.type, RowOffset(v, b, h, s0), (s1 - s0) * cols, 1) < 0)
      return int64_t{-1};
    for (int64_t s = s0; s < s1; ++s)
      if (FirstNonFinite(v.data, v.type, RowOffset(v, b, h, s), cols, v.stride[3]) >= 0) return s;
    return int64_t{-1};
  };
  auto describe = [&](const TensorView& v, const char* what, int64_t b, int64_t h, int64_t s, int64_t cols) {
    return Describe(what, b, h, s, FirstNonFinite(v.data, v.type, RowOffset(v, b, h, s), cols, v.stride[3]));
  };
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.q_heads; ++h) {
      const int64_t s = first_bad_row(p.q, b, h, 0, p.q_len, p.head_dim);
      if (s >= 0) return describe(p.q, "input 'Q'", b, h, s, p.head_dim);
    }
  const int64_t group = p.q_heads / p.kv_heads;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      // Runs of keys some query may attend (masked keys are never read and may hold anything).
      int64_t r = 0;
      while (r < p.kv_len) {
        auto used = [&](int64_t key) {
          for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
            if (pp.KeyValid(b, h, key)) return true;
          return false;
        };
        if (!used(r)) {
          ++r;
          continue;
        }
        int64_t end = r + 1;
        while (end < p.kv_len && used(end)) ++end;
        int64_t bad = first_bad_row(p.k, b, kvh, r, end, p.head_dim);
        if (bad >= 0)
          return describe(p.k, "input 'K' (or past_key)", b, kvh, bad, p.head_dim) + " on a key that is not masked";
        bad = first_bad_row(p.v, b, kvh, r, end, p.v_head_dim);
        if (bad >= 0)
          return describe(p.v, "input 'V' (or past_value)", b, kvh, bad, p.v_head_dim) +
                 " on a key that is not masked";
        r = end;
      }
    }
  return {};
}

}  // namespace pasa

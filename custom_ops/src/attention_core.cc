// PASA attention core: planning, key-block preparation and the per-tile loop. See
// attention_core.h and shared/PASA.md; pasa_onnx/numerics.py is the numpy emulation that the tests
// hold this file to, step for step. The inner loops live in isa_kernels_impl.h (one copy per
// instruction set).
#include "attention_core.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>

#include "half_types.h"
#include "isa_kernels.h"

namespace pasa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Budget of the prepared key/value blocks (floats); above it heads are processed in chunks.
constexpr int64_t kCacheBudgetFloats = int64_t{48} << 18;  // 48 MiB
// Up to this many query rows (decode), K' stays row-major: no transposition per key block.
constexpr int64_t kRowMajorMaxQueries = 4;

float LoadElem(const void* base, ElemType type, int64_t index) {
  switch (type) {
    case ElemType::kFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[index]);
    case ElemType::kBFloat16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(base)[index]);
    case ElemType::kFloat32:
    default:
      return static_cast<const float*>(base)[index];
  }
}

void StoreElem(void* base, ElemType type, int64_t index, float value) {
  switch (type) {
    case ElemType::kFloat16:
      static_cast<uint16_t*>(base)[index] = FloatToHalf(value);
      break;
    case ElemType::kBFloat16:
      static_cast<uint16_t*>(base)[index] = FloatToBFloat16(value);
      break;
    case ElemType::kFloat32:
    default:
      static_cast<float*>(base)[index] = value;
      break;
  }
}

size_t ElemBytes(ElemType t) { return t == ElemType::kFloat32 ? 4 : 2; }

// Element offset of row s of (batch b, head h) in a [B,H,S,D] view.
int64_t RowOffset(const TensorView& view, int64_t b, int64_t h, int64_t s) {
  return b * view.stride[0] + h * view.stride[1] + s * view.stride[2];
}

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

// Whether query row i (absolute position pos) may attend key r by the geometric constraints
// (padding length, causal frontier, local window); masks are applied separately.
struct Geometry {
  bool causal;
  int64_t left, right, valid_len;
  bool Allows(int64_t pos, int64_t r) const {
    if (r >= valid_len) return false;
    if (causal && r > pos) return false;
    if (left >= 0 && pos - r > left) return false;
    if (right >= 0 && r - pos > right) return false;
    return true;
  }
  // Keys [lo, hi) that position pos may attend, before masks.
  void Range(int64_t pos, int64_t kv_len, int64_t* lo, int64_t* hi) const {
    int64_t a = left >= 0 ? std::max<int64_t>(0, pos - left) : 0;
    int64_t z = std::min(valid_len, kv_len);
    if (causal) z = std::min(z, pos + 1);
    if (right >= 0) z = std::min(z, pos + right + 1);
    *lo = a;
    *hi = z;
  }
};

// Mask value for (b, h, i, r): -inf when masked, otherwise the additive term (0 for bool).
float MaskValue(const MaskView& mask, int64_t b, int64_t h, int64_t i, int64_t r) {
  if (mask.kind == MaskKind::kNone) return 0.0f;
  if (r >= mask.mask_len) return kNegInf;
  const int64_t idx = b * mask.stride[0] + h * mask.stride[1] + i * mask.stride[2] + r * mask.stride[3];
  if (mask.kind == MaskKind::kBool) return static_cast<const uint8_t*>(mask.data)[idx] ? 0.0f : kNegInf;
  return LoadElem(mask.data, mask.type, idx);
}

std::string Describe(const char* what, int64_t b, int64_t h, int64_t s, int64_t d) {
  std::ostringstream os;
  os << what << " holds a non-finite value at [batch=" << b << ", head=" << h << ", seq=" << s
     << ", dim=" << d << "]";
  return os.str();
}

// Per-thread scratch, grown on demand and kept for the thread's lifetime.
struct Scratch {
  std::vector<float> q, s, add, pv, o, m, l, abar, nblocks, corr, psum, kt, v, krows, ksum;
  std::vector<uint8_t> kind, upd, valid, read;
  std::vector<uint32_t> pack_p, pack_v;
};

template <class T>
T* Grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace

float DefaultAlpha(ElemType half_type, Precision precision) {
  if (precision == Precision::kFloat) return 0.9375f;
  return half_type == ElemType::kBFloat16 ? 0.9689939f : 0.9375f;
}

const std::string& IsaError() { return IsaSelectionError(); }

PreparedProblem::PreparedProblem(const AttentionProblem& p) : problem_(&p) {
  q_blocks_ = (p.q_len + p.block_q - 1) / p.block_q;
  kv_blocks_ = (p.kv_len + p.block_kv - 1) / p.block_kv;
  slot_keys_ = AlignUp(std::min(p.block_kv, p.kv_len), kKeyAlign);
  dv_pad_ = AlignUp(p.v_head_dim, kKeyAlign);
  k_rows_ = p.q_len <= kRowMajorMaxQueries;

  // Key validity: before the batch's valid length, and attendable by at least one query row.
  key_valid_.assign(static_cast<size_t>(p.batch * p.q_heads * p.kv_len), 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.q_heads; ++h) {
      uint8_t* valid = key_valid_.data() + (b * p.q_heads + h) * p.kv_len;
      // Planes that the mask broadcasts share one answer: copy it.
      const bool same_as_head0 = h > 0 && (p.mask.kind == MaskKind::kNone || p.mask.stride[1] == 0);
      if (same_as_head0) {
        std::copy(valid - h * p.kv_len, valid - (h - 1) * p.kv_len, valid);
        continue;
      }
      const int64_t len = std::min(p.valid_kv_len[b], p.kv_len);
      for (int64_t r = 0; r < len; ++r) {
        if (p.mask.kind == MaskKind::kNone) {
          valid[r] = 1;
          continue;
        }
        for (int64_t i = 0; i < p.q_len; ++i) {
          if (MaskValue(p.mask, b, h, i, r) != kNegInf) {
            valid[r] = 1;
            break;
          }
        }
      }
    }
  }

  // Units: the query heads of a GQA group share shifted key blocks when their validity agrees.
  const int64_t group = p.q_heads / p.kv_heads;
  unit_of_.assign(static_cast<size_t>(p.batch * p.q_heads), -1);
  std::vector<int64_t> uses;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      const size_t first = units_.size();
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const uint8_t* mine = key_valid_.data() + (b * p.q_heads + h) * p.kv_len;
        int64_t found = -1;
        for (size_t u = first; u < units_.size() && found < 0; ++u) {
          const uint8_t* theirs = key_valid_.data() + (b * p.q_heads + units_[u].rep_head) * p.kv_len;
          if (std::memcmp(mine, theirs, static_cast<size_t>(p.kv_len)) == 0) found = static_cast<int64_t>(u);
        }
        if (found < 0) {
          found = static_cast<int64_t>(units_.size());
          units_.push_back({b, kvh, h});
          uses.push_back(0);
        }
        unit_of_[static_cast<size_t>(b * p.q_heads + h)] = found;
        uses[static_cast<size_t>(found)] += q_blocks_;
      }
    }
  }
  shared_ = *std::max_element(uses.begin(), uses.end()) > 1;
  // Decode-sized blocks can be read in place (see KvBlock) for these inputs.
  const bool direct_inputs = k_rows_ && p.precision != Precision::kPaper && p.k.stride[3] == 1 &&
                             p.v.stride[3] == 1 && p.v_head_dim == dv_pad_;
  // Decode-sized GQA problems whose heads agree on every key (no per-head mask): one tile per
  // group holds the query rows of all its heads and reads the group's keys and values once, in
  // place, instead of every head reading a shared prepared copy.
  const bool same_keys_per_group = p.mask.kind == MaskKind::kNone || p.mask.stride[1] == 0;
  if (direct_inputs && group > 1 && q_blocks_ == 1 && same_keys_per_group) {
    heads_per_tile_ = group;
    shared_ = false;  // each unit is read by one tile
  }
  direct_ok_ = direct_inputs && !shared_;
  inv_count_.assign(units_.size() * static_cast<size_t>(kv_blocks_), 0.0f);

  // Cost of a tile: the key blocks it visits (causal tiles near the top visit few).
  const auto tile_cost = [&](int64_t item) {
    const int64_t qb = item % q_blocks_;
    const int64_t b = item / q_blocks_ / p.q_heads;
    const int64_t i0 = qb * p.block_q, i1 = std::min(p.q_len, i0 + p.block_q) - 1;
    const Geometry g{p.causal, p.left_window, p.right_window, p.valid_kv_len[b]};
    int64_t lo0, hi0, lo1, hi1;
    g.Range(i0 + p.query_offset[b], p.kv_len, &lo0, &hi0);
    g.Range(i1 + p.query_offset[b], p.kv_len, &lo1, &hi1);
    const int64_t lo = std::min(lo0, lo1), hi = std::max(hi0, hi1);
    return hi > lo ? (hi - 1) / p.block_kv - lo / p.block_kv + 1 : 0;
  };

  // Chunks of units whose prepared blocks fit the budget (all units when not shared).
  const int64_t unit_floats = kv_blocks_ * slot_keys_ * (p.head_dim + dv_pad_);
  const int64_t num_units = static_cast<int64_t>(units_.size());
  const int64_t per_chunk = shared_ ? std::max<int64_t>(1, kCacheBudgetFloats / std::max<int64_t>(1, unit_floats))
                                    : num_units;
  units_per_chunk_ = std::max<int64_t>(1, per_chunk);
  const int64_t num_items = p.batch * p.q_heads * q_blocks_;
  for (int64_t u0 = 0; u0 < num_units; u0 += per_chunk) {
    const int64_t nu = std::min(per_chunk, num_units - u0);
    Stage attend{false, u0, nu, {}};
    std::vector<int64_t> cost;
    for (int64_t item = 0; item < num_items; ++item) {
      const int64_t bh = item / q_blocks_;
      if (bh % p.q_heads % heads_per_tile_ != 0) continue;  // a group tile's other heads
      const int64_t u = unit_of_[static_cast<size_t>(bh)];
      if (u < u0 || u >= u0 + nu) continue;
      attend.items.push_back(item);
    }
    for (int64_t item : attend.items) cost.push_back(tile_cost(item));
    std::vector<size_t> order(attend.items.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cost[a] > cost[b]; });
    std::vector<int64_t> sorted;
    for (size_t o : order) sorted.push_back(attend.items[o]);
    attend.items = std::move(sorted);
    if (shared_) stages_.push_back({true, u0, nu, {}});
    stages_.push_back(std::move(attend));
  }
  if (shared_) {
    // The calling thread keeps this buffer between runs: no page faults and no zeroing per run
    // (every slot a tile reads is written by the prepare stage first).
    thread_local std::vector<float> buffer;
    const auto need = static_cast<size_t>(std::min(per_chunk, num_units) * unit_floats);
    if (buffer.size() < need) buffer.resize(need);
    cache_ = buffer.data();
  }
}

int64_t PreparedProblem::NumTasks(int64_t stage) const {
  const Stage& s = stages_[static_cast<size_t>(stage)];
  return s.prepare ? s.num_units * kv_blocks_ : static_cast<int64_t>(s.items.size());
}

void PreparedProblem::RunTask(int64_t stage, int64_t task) {
  const Stage& s = stages_[static_cast<size_t>(stage)];
  if (!s.prepare) {
    RunTile(s.items[static_cast<size_t>(task)]);
    return;
  }
  const AttentionProblem& p = *problem_;
  const int64_t unit = s.first_unit + task / kv_blocks_;
  const int64_t block = task % kv_blocks_;
  const int64_t slot = ((unit % units_per_chunk_) * kv_blocks_ + block) * slot_keys_ * (p.head_dim + dv_pad_);
  float* kt = cache_ + slot;
  float* v = kt + slot_keys_ * p.head_dim;
  inv_count_[static_cast<size_t>(unit * kv_blocks_ + block)] = BuildBlock(unit, block, kt, v);
}

// 1) block mean over the valid keys, 2) K' = c·(K − α·mean), to kt[D][n_pad] (or kt[n_pad][D])
// (paper mode rounds K'), 3) V in float to v[n_pad][dv_pad]. Invalid and padding keys are zero.
// Returns 1 / (number of valid keys), or 0 when the block has none.
float PreparedProblem::BuildBlock(int64_t unit, int64_t block, float* kt, float* v) {
  const AttentionProblem& p = *problem_;
  const Unit& u = units_[static_cast<size_t>(unit)];
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
  // Every row and column is written: K' and V of valid keys, zeros for the rest and the padding.
  const bool whole_v = Dv == dv_pad_ && count == n;
  uint8_t* valid = Grow(t.valid, n_pad);
  for (int64_t r = 0; r < n_pad; ++r) valid[r] = r < n && KeyValid(u.b, u.rep_head, r0 + r);
  const float c = p.scale;  // locals and restrict pointers: these loops vectorise
  const float* __restrict mean = sum;
  if (k_rows_) {
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
    float* vr = v + r * dv_pad_;
    if (!valid[r]) {
      std::fill(vr, vr + dv_pad_, 0.0f);
    } else if (!whole_v) {
      finite = LoadRows(p.v, u.b, u.kvh, r0 + r, 1, Dv, vr) && finite;
      std::fill(vr + Dv, vr + dv_pad_, 0.0f);
    }
  }
  if (whole_v) finite = LoadRows(p.v, u.b, u.kvh, r0, n, Dv, v) && finite;
  if (!finite) nonfinite_input_.store(true, std::memory_order_relaxed);
  return inv_count;
}

// A direct block (see KvBlock) when every key of the block is valid: the block mean, from K in
// place, into `mean`; false (nothing set) otherwise. Flags non-finite keys and values.
bool PreparedProblem::DirectBlock(int64_t unit, int64_t block, float* mean, KvBlock* kv) {
  const AttentionProblem& p = *problem_;
  const Unit& u = units_[static_cast<size_t>(unit)];
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
    nonfinite_input_.store(true, std::memory_order_relaxed);
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
  const Unit& u = units_[static_cast<size_t>(unit)];
  const int64_t r0 = block * p.block_kv, r1 = std::min(p.kv_len, r0 + p.block_kv);
  const auto finite = [&](const TensorView& view, int64_t r, int64_t cols) {
    return FirstNonFinite(view.data, view.type, RowOffset(view, u.b, u.kvh, r), cols, view.stride[3]) < 0;
  };
  for (int64_t r = r0; r < r1; ++r)
    if (KeyValid(u.b, u.rep_head, r) && (!finite(p.k, r, p.head_dim) || !finite(p.v, r, p.v_head_dim)))
      return false;
  return true;
}

void PreparedProblem::RunTile(int64_t item) {
  const AttentionProblem& p = *problem_;
  const KernelTable& kernels = ActiveKernels();
  const int64_t qb = item % q_blocks_;
  const int64_t bh = item / q_blocks_;
  const int64_t h = bh % p.q_heads;
  const int64_t b = bh / p.q_heads;
  const int64_t unit = unit_of_[static_cast<size_t>(bh)];
  const int64_t i0 = qb * p.block_q;
  // Rows: q_rows query positions of each of the tile's heads (h, h+1, ...), head-major.
  const int64_t q_rows = std::min(p.block_q, p.q_len - i0);
  const int64_t heads = heads_per_tile_;
  const int64_t rows = q_rows * heads;
  const auto head_of = [&](int64_t i) { return h + i / q_rows; };
  const auto query_of = [&](int64_t i) { return i0 + i % q_rows; };
  const int64_t D = p.head_dim, Dv = p.v_head_dim, dvp = dv_pad_, slot_n = slot_keys_;
  const int64_t offset = p.query_offset[b];
  const Geometry geom{p.causal, p.left_window, p.right_window, p.valid_kv_len[b]};
  const bool masked = p.mask.kind != MaskKind::kNone;

  thread_local Scratch t;
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
  st.upd = Grow(t.upd, rows);
  st.pack_p = Grow(t.pack_p, rows * slot_n / 2);
  st.pack_v = Grow(t.pack_v, slot_n / 2 * dvp);
  uint8_t* kind = Grow(t.kind, rows);
  st.kind = kind;
  std::fill(st.o, st.o + rows * dvp, 0.0f);
  std::fill(st.m, st.m + rows, kNegInf);
  std::fill(st.l, st.l + rows, 0.0f);
  std::fill(st.abar, st.abar + rows, 0.0f);
  std::fill(st.nblocks, st.nblocks + rows, 0.0f);
  for (int64_t j = 0; j < heads; ++j)
    if (!LoadRows(p.q, b, h + j, i0, q_rows, D, st.q + j * q_rows * D))
      nonfinite_input_.store(true, std::memory_order_relaxed);

  RowParams rp;
  rp.precision = p.precision;
  rp.half_type = p.half_type;
  const float alpha = p.softcap > 0.0f ? 0.0f : p.alpha;
  rp.beta = alpha / (1.0f - alpha);
  rp.softcap = p.softcap;
  rp.head_dim = D;
  rp.dv_pad = dvp;

  // Key blocks any row of the tile may attend.
  int64_t lo_first, hi_first, lo_last, hi_last;
  geom.Range(i0 + offset, p.kv_len, &lo_first, &hi_first);
  geom.Range(i0 + q_rows - 1 + offset, p.kv_len, &lo_last, &hi_last);
  const int64_t key_lo = std::min(lo_first, lo_last), key_hi = std::max(hi_first, hi_last);
  const int64_t first_block = key_hi > key_lo ? key_lo / p.block_kv : 0;
  const int64_t end_block = key_hi > key_lo ? (key_hi - 1) / p.block_kv + 1 : 0;

  // Decode-sized, unshared problems read fp16/fp32 keys and values in place (see KvBlock).
  // Blocks read by this tile (unshared problems build their own).
  uint8_t* read = shared_ ? nullptr : Grow(t.read, kv_blocks_);
  if (read != nullptr) std::fill(read, read + kv_blocks_, uint8_t{0});
  float* own_kt = shared_ ? nullptr : Grow(t.kt, slot_n * D);
  float* own_v = shared_ ? nullptr : Grow(t.v, slot_n * dvp);
  for (int64_t j = first_block; j < end_block; ++j) {
    const int64_t r0 = j * p.block_kv;
    const int64_t n = std::min(p.block_kv, p.kv_len - r0);
    KvBlock kv;
    kv.n_pad = AlignUp(n, kKeyAlign);
    kv.k_rows = k_rows_;

    // How each row meets this block: not at all, every key, or through an additive row.
    bool any_row = false;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t pos = query_of(i) + offset;
      float* add = st.add + i * kv.n_pad;
      if (!masked) {
        int64_t lo, hi;
        geom.Range(pos, p.kv_len, &lo, &hi);
        lo = std::max(lo, r0);
        hi = std::min(hi, r0 + n);
        if (hi <= lo) {
          kind[i] = kRowNone;
        } else if (lo == r0 && hi == r0 + n && n == kv.n_pad) {
          kind[i] = kRowFull;
        } else {
          kind[i] = kRowAdd;
          std::fill(add, add + kv.n_pad, kNegInf);
          std::fill(add + (lo - r0), add + (hi - r0), 0.0f);
        }
      } else {
        // Keys the geometry allows ([lo, hi), which also ends at the valid length), then the
        // mask row read directly; keys past the mask's length are masked (ONNX padding).
        std::fill(add, add + kv.n_pad, kNegInf);
        int64_t lo, hi;
        geom.Range(pos, p.kv_len, &lo, &hi);
        lo = std::max(lo, r0);
        hi = std::min({hi, r0 + n, p.mask.mask_len});
        const uint8_t* valid = key_valid_.data() + (b * p.q_heads + head_of(i)) * p.kv_len;
        const int64_t row = b * p.mask.stride[0] + head_of(i) * p.mask.stride[1] + query_of(i) * p.mask.stride[2];
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
        kind[i] = unmasked > 0 ? kRowAdd : kRowNone;
      }
      any_row = any_row || kind[i] != kRowNone;
    }
    if (!any_row) continue;

    if (shared_) {
      kv.inv_count = inv_count_[static_cast<size_t>(unit * kv_blocks_ + j)];
      const int64_t slot = ((unit % units_per_chunk_) * kv_blocks_ + j) * slot_n * (D + dvp);
      kv.kt = cache_ + slot;
      kv.v = kv.kt + slot_n * D;
    } else if (direct_ok_ && DirectBlock(unit, j, Grow(t.ksum, D), &kv)) {
      read[j] = 1;
    } else {
      kv.inv_count = BuildBlock(unit, j, own_kt, own_v);
      read[j] = 1;
      kv.kt = own_kt;
      kv.v = own_v;
    }
    if (kv.inv_count == 0.0f) continue;  // no valid key in the block
    kernels.attend_block(rp, kv, st);
  }

  // An unshared problem's tile reads only the blocks it attends. The others are checked all the
  // same, as the prepare stage of a shared problem does, so that whether an input is accepted
  // does not depend on how the work is split.
  if (read != nullptr)
    for (int64_t j = 0; j < kv_blocks_; ++j)
      if (!read[j] && !BlockInputsFinite(unit, j)) nonfinite_input_.store(true, std::memory_order_relaxed);

  // Normalise; a row that attended nothing is 0 (ONNX Attention semantics).
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t base = b * p.y_stride[0] + head_of(i) * p.y_stride[1] + query_of(i) * p.y_stride[2];
    const float* oi = st.o + i * dvp;
    const float l = st.l[i];
    if (p.y_stride[3] == 1) {
      auto* out = static_cast<unsigned char*>(p.y) + static_cast<size_t>(base) * ElemBytes(p.q.type);
      kernels.store_row(oi, l, Dv, p.q.type, out);
    } else {
      for (int64_t d = 0; d < Dv; ++d)
        StoreElem(p.y, p.q.type, base + d * p.y_stride[3], l != 0.0f ? oi[d] / l : 0.0f);
    }
  }
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

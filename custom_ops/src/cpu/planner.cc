// MakeCpuPlan: key validity, units of shared key blocks, and stages of tiles (see planner.h).
#include "cpu/planner.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "cpu/geometry.h"

namespace pasa {
namespace {

// Budget of the prepared key/value blocks (floats); above it heads are processed in chunks.
constexpr int64_t kCacheBudgetFloats = int64_t{48} << 18;  // 48 MiB

// Tall tiles: a tile reads each prepared key block once for all its rows, so the taller the
// tile the fewer times a unit's blocks come again from the outer caches. Where a unit's prepared
// blocks are more than kL2ShareBytes (half of a 2 MB L2; 4 MB at S = 4096, D = 128), tiles grow
// up to kTallTileRows query positions, as long as the problem keeps kMinTiles tiles to share
// among threads.
constexpr int64_t kL2ShareBytes = int64_t{1} << 20;
constexpr int64_t kTallTileRows = 256;
constexpr int64_t kMinTiles = 32;

// The tile height (CpuPlan::tile_q). Only where the rows of a tile attend the same keys (no
// causal frontier or window: a taller causal tile would compute more masked scores) and the
// keys are transposed (decode-sized problems keep their tiles).
int64_t TileRows(const AttentionProblem& p, const CpuPlan& plan) {
  const bool same_keys = !p.causal && p.left_window < 0 && p.right_window < 0;
  const int64_t unit_bytes = plan.kv_blocks * plan.slot_floats * static_cast<int64_t>(sizeof(float));
  if (!same_keys || plan.k_rows || p.block_q >= kTallTileRows || unit_bytes <= kL2ShareBytes) return p.block_q;
  const auto tiles = [&](int64_t rows) { return p.batch * p.q_heads * ((p.q_len + rows - 1) / rows); };
  int64_t rows = p.block_q;
  while (2 * rows <= kTallTileRows && tiles(2 * rows) >= kMinTiles) rows *= 2;
  return rows;
}

// Key validity: before the batch's valid length, and attendable by at least one query row.
void MarkValidKeys(const AttentionProblem& p, CpuPlan* plan) {
  plan->key_valid.assign(static_cast<size_t>(p.batch * p.q_heads * p.kv_len), 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.q_heads; ++h) {
      uint8_t* valid = plan->key_valid.data() + (b * p.q_heads + h) * p.kv_len;
      // Planes that the mask broadcasts share one answer: copy it.
      const bool same_as_head0 = h > 0 && (p.mask.kind == MaskKind::kNone || p.mask.stride[1] == 0);
      if (same_as_head0) {
        std::copy(valid - h * p.kv_len, valid - (h - 1) * p.kv_len, valid);
        continue;
      }
      const int64_t len = std::min(p.valid_kv_len[static_cast<size_t>(b)], p.kv_len);
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
}

// Units: the query heads of a GQA group share shifted key blocks when their validity agrees.
// Returns how many query tiles read each unit.
std::vector<int64_t> FormUnits(const AttentionProblem& p, CpuPlan* plan) {
  const int64_t group = p.q_heads / p.kv_heads;
  plan->unit_of.assign(static_cast<size_t>(p.batch * p.q_heads), -1);
  std::vector<int64_t> uses;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      const size_t first = plan->units.size();
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const uint8_t* mine = plan->key_valid.data() + (b * p.q_heads + h) * p.kv_len;
        int64_t found = -1;
        for (size_t u = first; u < plan->units.size() && found < 0; ++u) {
          const uint8_t* theirs = plan->key_valid.data() + (b * p.q_heads + plan->units[u].rep_head) * p.kv_len;
          if (std::memcmp(mine, theirs, static_cast<size_t>(p.kv_len)) == 0) found = static_cast<int64_t>(u);
        }
        if (found < 0) {
          found = static_cast<int64_t>(plan->units.size());
          plan->units.push_back({b, kvh, h});
          uses.push_back(0);
        }
        plan->unit_of[static_cast<size_t>(b * p.q_heads + h)] = found;
        uses[static_cast<size_t>(found)] += plan->q_blocks;
      }
    }
  }
  return uses;
}

// Whether blocks are shared, read in place, or read once per GQA group tile.
void ChooseBlockReuse(const AttentionProblem& p, const std::vector<int64_t>& uses, CpuPlan* plan) {
  const int64_t group = p.q_heads / p.kv_heads;
  plan->shared = *std::max_element(uses.begin(), uses.end()) > 1;
  // Decode-sized blocks can be read in place (see KvBlock) for these inputs.
  const bool direct_inputs = plan->k_rows && p.precision != Precision::kPaper && p.k.stride[3] == 1 &&
                             p.v.stride[3] == 1 && p.v_head_dim == plan->dv_pad;
  // Decode-sized GQA problems whose heads agree on every key (no per-head mask): one tile per
  // group holds the query rows of all its heads and reads the group's keys and values once, in
  // place, instead of every head reading a shared prepared copy.
  const bool same_keys_per_group = p.mask.kind == MaskKind::kNone || p.mask.stride[1] == 0;
  if (direct_inputs && group > 1 && plan->q_blocks == 1 && same_keys_per_group) {
    plan->heads_per_tile = group;
    plan->shared = false;  // each unit is read by one tile
  }
  plan->direct_ok = direct_inputs && !plan->shared;
}

// Cost of a tile: the key blocks it visits (causal tiles near the top visit few).
int64_t TileCost(const AttentionProblem& p, const CpuPlan& plan, int64_t item) {
  const int64_t qb = item % plan.q_blocks;
  const int64_t b = item / plan.q_blocks / p.q_heads;
  const int64_t i0 = qb * plan.tile_q, i1 = std::min(p.q_len, i0 + plan.tile_q) - 1;
  const Geometry g = GeometryOf(p, b);
  const int64_t offset = p.query_offset[static_cast<size_t>(b)];
  int64_t lo0, hi0, lo1, hi1;
  g.Range(i0 + offset, p.kv_len, &lo0, &hi0);
  g.Range(i1 + offset, p.kv_len, &lo1, &hi1);
  const int64_t lo = std::min(lo0, lo1), hi = std::max(hi0, hi1);
  return hi > lo ? (hi - 1) / p.block_kv - lo / p.block_kv + 1 : 0;
}

// Chunks of units whose prepared blocks fit the budget (all units when not shared); per chunk a
// prepare stage (when shared) and an attend stage of its tiles, longest first.
void BuildStages(const AttentionProblem& p, CpuPlan* plan) {
  const int64_t unit_floats = plan->kv_blocks * plan->slot_floats;
  const int64_t num_units = static_cast<int64_t>(plan->units.size());
  const int64_t per_chunk =
      plan->shared ? std::max<int64_t>(1, kCacheBudgetFloats / std::max<int64_t>(1, unit_floats)) : num_units;
  plan->units_per_chunk = std::max<int64_t>(1, per_chunk);
  const int64_t num_items = p.batch * p.q_heads * plan->q_blocks;
  for (int64_t u0 = 0; u0 < num_units; u0 += per_chunk) {
    const int64_t nu = std::min(per_chunk, num_units - u0);
    CpuPlan::Stage attend{false, u0, nu, {}};
    for (int64_t item = 0; item < num_items; ++item) {
      const int64_t bh = item / plan->q_blocks;
      if (bh % p.q_heads % plan->heads_per_tile != 0) continue;  // a group tile's other heads
      const int64_t u = plan->unit_of[static_cast<size_t>(bh)];
      if (u < u0 || u >= u0 + nu) continue;
      attend.items.push_back(item);
    }
    std::vector<int64_t> cost;
    for (int64_t item : attend.items) cost.push_back(TileCost(p, *plan, item));
    std::vector<size_t> order(attend.items.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cost[a] > cost[b]; });
    std::vector<int64_t> sorted;
    for (size_t o : order) sorted.push_back(attend.items[o]);
    attend.items = std::move(sorted);
    if (plan->shared) plan->stages.push_back({true, u0, nu, {}});
    plan->stages.push_back(std::move(attend));
  }
  plan->cache_floats = plan->shared ? std::min(per_chunk, num_units) * unit_floats : 0;
}

}  // namespace

CpuPlan MakeCpuPlan(const AttentionProblem& p, PackFloatsFn pack_floats) {
  CpuPlan plan;
  plan.k_rows = p.q_len <= kRowMajorMaxQueries;
  plan.kv_blocks = (p.kv_len + p.block_kv - 1) / p.block_kv;
  plan.slot_keys = AlignUp(std::min(p.block_kv, p.kv_len), kKeyAlign);
  plan.dv_pad = AlignUp(p.v_head_dim, kKeyAlign);
  if (!plan.k_rows && pack_floats != nullptr) plan.pack_floats = pack_floats(p, plan.slot_keys, plan.dv_pad);
  plan.slot_floats =
      plan.slot_keys * (p.head_dim + plan.dv_pad) + AlignUp(p.head_dim, kKeyAlign) + plan.pack_floats;
  plan.tile_q = TileRows(p, plan);
  plan.q_blocks = (p.q_len + plan.tile_q - 1) / plan.tile_q;
  MarkValidKeys(p, &plan);
  const std::vector<int64_t> uses = FormUnits(p, &plan);
  ChooseBlockReuse(p, uses, &plan);
  BuildStages(p, &plan);
  return plan;
}

}  // namespace pasa

// Unit tests of the CPU planner (cpu/planner.h), a plain function from a problem to a plan, and of
// the cache-line alignment of its prepared slots and of AlignedVector (the tile products rely on it).
// Built and run by tests/test_cpu_planner.py: g++ -std=c++17 -I custom_ops/src planner_test.cc
// ../src/cpu/planner.cc. Prints one line per failed check; exit code 1 when any failed.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/geometry.h"
#include "cpu/planner.h"

namespace {

int failures = 0;

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::printf("%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                    \
    }                                                                \
  } while (0)

pasa::AttentionProblem Problem(int64_t hq, int64_t hkv, int64_t sq, int64_t skv, int64_t d, bool causal) {
  pasa::AttentionProblem p;
  p.batch = 1;
  p.q_heads = hq;
  p.kv_heads = hkv;
  p.q_len = sq;
  p.kv_len = skv;
  p.head_dim = d;
  p.v_head_dim = d;
  p.causal = causal;
  p.query_offset = {skv - sq};
  p.valid_kv_len = {skv};
  for (pasa::TensorView* v : {&p.q, &p.k, &p.v}) {
    v->type = pasa::ElemType::kFloat16;
    v->stride[3] = 1;
    v->stride[2] = d;
  }
  return p;
}

int64_t StageItems(const pasa::CpuPlan& plan) {
  int64_t n = 0;
  for (const auto& s : plan.stages) n += static_cast<int64_t>(s.items.size());
  return n;
}

void CausalTilesLongestFirst() {
  const pasa::AttentionProblem p = Problem(2, 2, 256, 256, 64, true);
  const pasa::CpuPlan plan = pasa::MakeCpuPlan(p);
  CHECK(plan.q_blocks == 4 && plan.kv_blocks == 2);
  CHECK(plan.shared);  // every unit's blocks are read by 4 query tiles
  CHECK(plan.stages.size() == 2 && plan.stages[0].prepare && !plan.stages[1].prepare);
  const std::vector<int64_t>& items = plan.stages[1].items;
  CHECK(items.size() == 8);
  // Query blocks 2 and 3 see both key blocks, blocks 0 and 1 only the first: they come first.
  CHECK(items.size() == 8 && items[0] % plan.q_blocks >= 2 && items[3] % plan.q_blocks >= 2 && items.back() % plan.q_blocks <= 1);
  CHECK(plan.cache_floats == 2 * plan.kv_blocks * plan.slot_floats);
}

void GqaDecodeReadsGroupsInPlace() {
  const pasa::AttentionProblem p = Problem(8, 2, 1, 4096, 128, false);
  const pasa::CpuPlan plan = pasa::MakeCpuPlan(p);
  CHECK(plan.k_rows);
  CHECK(plan.heads_per_tile == 4);
  CHECK(!plan.shared && plan.direct_ok);
  CHECK(StageItems(plan) == 2);  // one tile per KV group
  CHECK(plan.cache_floats == 0);
}

void MaskedKeysAreInvalidAndSplitUnits() {
  pasa::AttentionProblem p = Problem(2, 1, 4, 64, 16, false);
  // Per-head bool mask [1, 2, 4, 64]: head 0 masks key 5 for every query, head 1 masks nothing.
  std::vector<uint8_t> mask(2 * 4 * 64, 1);
  for (int i = 0; i < 4; ++i) mask[static_cast<size_t>(i * 64 + 5)] = 0;
  p.mask.kind = pasa::MaskKind::kBool;
  p.mask.data = mask.data();
  p.mask.mask_len = 64;
  p.mask.stride[0] = 0;
  p.mask.stride[1] = 4 * 64;
  p.mask.stride[2] = 64;
  p.mask.stride[3] = 1;
  const pasa::CpuPlan plan = pasa::MakeCpuPlan(p);
  CHECK(!plan.KeyValid(p, 0, 0, 5) && plan.KeyValid(p, 0, 1, 5) && plan.KeyValid(p, 0, 0, 4));
  CHECK(plan.units.size() == 2);  // the heads disagree on key 5: their shifted blocks differ
  CHECK(plan.heads_per_tile == 1);  // a per-head mask: no group tiles
}

void PaddingBeyondNonpadIsInvalid() {
  pasa::AttentionProblem p = Problem(1, 1, 8, 200, 16, false);
  p.valid_kv_len = {150};
  const pasa::CpuPlan plan = pasa::MakeCpuPlan(p);
  CHECK(plan.KeyValid(p, 0, 0, 149) && !plan.KeyValid(p, 0, 0, 150));
}

void LargeProblemsPrepareInChunks() {
  // 64 heads of 16k keys x 128 dims: the prepared blocks exceed the cache budget.
  const pasa::AttentionProblem p = Problem(64, 64, 16384, 16384, 128, false);
  const pasa::CpuPlan plan = pasa::MakeCpuPlan(p);
  int64_t prepares = 0;
  for (const auto& s : plan.stages) prepares += s.prepare;
  CHECK(plan.shared && prepares > 1);
  CHECK(plan.units_per_chunk < 64);
  CHECK(StageItems(plan) == 64 * plan.q_blocks);
}

void TallTilesWhereBlocksLeaveL2() {
  // H32/D128, S = 4096, non-causal: a unit's prepared blocks (4 MB) do not stay in L2, so a
  // tile takes 256 query positions (block_q 64 unchanged).
  pasa::CpuPlan plan = pasa::MakeCpuPlan(Problem(32, 32, 4096, 4096, 128, false));
  CHECK(plan.tile_q == 256 && plan.q_blocks == 16);
  // Causal tiles keep block_q (a taller tile would compute more masked scores); so do problems
  // whose blocks stay in L2, and those that would keep too few tiles for the threads.
  plan = pasa::MakeCpuPlan(Problem(32, 32, 4096, 4096, 128, true));
  CHECK(plan.tile_q == 64 && plan.q_blocks == 64);
  plan = pasa::MakeCpuPlan(Problem(12, 12, 512, 512, 64, false));
  CHECK(plan.tile_q == 64);
  plan = pasa::MakeCpuPlan(Problem(1, 1, 4096, 4096, 128, false));
  CHECK(plan.tile_q == 128 && plan.q_blocks == 32);
}

// The amx path's packed-copy size (amx_tiles.h AmxPackFloats): K' and V terms in 32-element steps.
int64_t AmxLikePackFloats(const pasa::AttentionProblem& p, int64_t n_pad, int64_t dv_pad) {
  const auto a32 = [](int64_t x) { return (x + 31) / 32 * 32; };
  return a32(p.head_dim) * n_pad + a32(n_pad) * dv_pad;
}

void PreparedSlotsStartOnCacheLines() {
  // The tile products load whole 64-byte rows of a prepared block's packed copy: every slot,
  // and the packed copy inside it (after K', V and alpha*mean), starts 16 floats apart from the
  // cache's (cache-line aligned) start, for any head size.
  for (int64_t d : {64, 72, 80, 96, 100, 128, 256})
    for (int64_t skv : {100, 1000, 4096}) {
      pasa::AttentionProblem p = Problem(4, 4, 64, skv, d, false);
      p.v_head_dim = d == 100 ? 40 : d;
      const pasa::CpuPlan plan = pasa::MakeCpuPlan(p, AmxLikePackFloats);
      const int64_t pack_at = plan.slot_keys * (d + plan.dv_pad) + pasa::AlignUp(d, pasa::kKeyAlign);
      CHECK(plan.slot_floats % 16 == 0);
      CHECK(pack_at % 16 == 0);
    }
  // And AlignedVector's storage starts on a cache line, whatever its size or element type.
  for (size_t n : {1, 3, 17, 1000, 65537}) {
    pasa::AlignedVector<float> f(n);
    pasa::AlignedVector<uint16_t> h(n);
    CHECK(reinterpret_cast<uintptr_t>(f.data()) % pasa::kCacheLine == 0);
    CHECK(reinterpret_cast<uintptr_t>(h.data()) % pasa::kCacheLine == 0);
    f.resize(3 * n + 5);
    CHECK(reinterpret_cast<uintptr_t>(f.data()) % pasa::kCacheLine == 0);
  }
}

}  // namespace

int main() {
  CausalTilesLongestFirst();
  GqaDecodeReadsGroupsInPlace();
  MaskedKeysAreInvalidAndSplitUnits();
  PaddingBeyondNonpadIsInvalid();
  LargeProblemsPrepareInChunks();
  TallTilesWhereBlocksLeaveL2();
  PreparedSlotsStartOnCacheLines();
  if (failures == 0) std::printf("planner tests passed\n");
  return failures == 0 ? 0 : 1;
}

// The CPU plan of one attention problem: which keys each (batch, query head) may read, which
// heads share their shifted key blocks, and the stages of work. A plain function of the problem
// (and of nothing else: not the thread count), so results never depend on how work is split.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "problem/attention_problem.h"

namespace pasa {

// Up to this many query rows (decode), K' stays row-major: no transposition per key block.
constexpr int64_t kRowMajorMaxQueries = 4;

struct CpuPlan {
  // One (batch, kv head, key-validity pattern): one set of shifted key blocks.
  struct Unit {
    int64_t b, kvh, rep_head;
  };
  // The tasks of one stage are independent (any order, any thread); a stage starts when the
  // previous one has finished.
  //   - "prepare" stages compute the shifted keys K' = c·(K − α·mean) and float values of every
  //     key block of a chunk of units, once (shared by the query heads of a GQA group whose key
  //     validity is the same, and by every query block);
  //   - "attend" stages run the query tiles (batch, query head, query block), longest first so
  //     that causal triangles balance over threads.
  struct Stage {
    bool prepare;
    int64_t first_unit, num_units;  // prepare: the chunk of units
    std::vector<int64_t> items;     // attend: tiles, longest first
  };

  std::vector<uint8_t> key_valid;  // [B * Hq * kv_len]: key r of (b, h) enters the mean, may be read
  std::vector<Unit> units;
  std::vector<int64_t> unit_of;    // [B * Hq]
  std::vector<Stage> stages;
  int64_t q_blocks = 0, kv_blocks = 0;
  // Query positions of a tile: block_q, or a multiple of it where every row of a tile attends
  // the same keys (TileRows in planner.cc). A row's result does not depend on it.
  int64_t tile_q = 0;
  int64_t slot_keys = 0;           // keys of one prepared block, padded
  int64_t dv_pad = 0;              // value width, padded
  // One prepared block: K' [slot_keys][D], V [slot_keys][dv_pad], α·mean [D, padded], then the
  // path's packed copy [pack_floats].
  int64_t slot_floats = 0;
  bool shared = false;             // key blocks are prepared once and read by several tiles
  bool k_rows = false;             // decode-sized queries: K' row-major (see KvBlock)
  bool direct_ok = false;          // unshared decode-sized blocks may be read in place (see KvBlock)
  int64_t heads_per_tile = 1;      // > 1: a tile holds all query heads of a GQA group
  int64_t units_per_chunk = 1;     // chunk c holds units [c·n, (c+1)·n); unit u sits in slot u % n
  int64_t cache_floats = 0;        // floats of the prepared-block cache (0 when not shared)
  int64_t pack_floats = 0;         // floats of a block's packed copy (KernelTable::pack_block), 0: none

  // Floats of one prepared block's slot: K', V, then the packed copy.

  bool KeyValid(const AttentionProblem& p, int64_t b, int64_t h, int64_t r) const {
    return key_valid[static_cast<size_t>((b * p.q_heads + h) * p.kv_len + r)] != 0;
  }
};

// Floats of a prepared block's packed copy for the instruction-set path (KernelTable::pack_floats).
using PackFloatsFn = int64_t (*)(const AttentionProblem& p, int64_t n_pad, int64_t dv_pad);

// The plan of `p` (whose query_offset and valid_kv_len are filled); `pack_floats`, when given,
// sizes the packed copy of each prepared block (transposed K' only).
CpuPlan MakeCpuPlan(const AttentionProblem& p, PackFloatsFn pack_floats = nullptr);

}  // namespace pasa

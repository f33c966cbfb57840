// PASA attention core: flash-style blocked attention with online pseudo-average shifting and
// global recovering (arXiv 2503.01873). Knows nothing about onnxruntime: plain pointers, shapes
// and element strides. The numerics are specified in shared/PASA.md and mirrored, step for step,
// by pasa_onnx/numerics.py.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "problem/attention_problem.h"

namespace pasa {

struct KvBlock;  // isa_kernels.h

// Default shift strength: the authors' values (0.9375 makes alpha/n exact in fp16 for n = 128;
// 0.9689939 for bf16). In `half` mode a stronger shift (1 - 2^-8) is up to 3.7x more accurate on
// strongly biased data and up to ~20% less on unbiased data (docs/numerics.md): not the default.
float DefaultAlpha(ElemType half_type, Precision precision);

// A prepared problem: per-(batch, head) key validity, which heads share their shifted key blocks,
// and the plan of work. Work runs in stages; the tasks of one stage are independent (any order,
// any thread), and a stage starts when the previous one has finished:
//   - "prepare" stages compute the shifted keys K' = c·(K − α·mean) and float values of every key
//     block once per (batch, kv head) — shared by every query head of a GQA group whose key
//     validity is the same, and by every query block;
//   - "attend" stages run the query tiles (batch, query head, query block), longest first so that
//     causal triangles balance over threads.
// The prepared blocks live in a buffer of O(S·D) floats; heads are processed in chunks when the
// buffer would exceed a budget. A problem where every head is read by a single query tile (short
// decode) builds its blocks on the fly in per-thread scratch instead. Problems of at most
// kRowMajorMaxQueries query rows keep K' row-major (a function of the problem only, so results
// never depend on block_q or the thread count).
class PreparedProblem {
 public:
  explicit PreparedProblem(const AttentionProblem& p);

  const AttentionProblem& problem() const { return *problem_; }
  // Whether key r of (b, query head h) enters the block mean (and may be read).
  bool KeyValid(int64_t b, int64_t h, int64_t r) const {
    return key_valid_[static_cast<size_t>((b * problem_->q_heads + h) * problem_->kv_len + r)] != 0;
  }
  int64_t NumStages() const { return static_cast<int64_t>(stages_.size()); }
  int64_t NumTasks(int64_t stage) const;
  // Thread-safe for distinct tasks of one stage.
  void RunTask(int64_t stage, int64_t task);
  // After the stages: whether any row that was read (queries, attended keys and values) held an
  // inf or NaN. The result is then meaningless; ValidateProblem names the position.
  bool SawNonFiniteInput() const { return nonfinite_input_.load(); }

 private:
  struct Unit {  // one (batch, kv head, key-validity pattern): one set of shifted key blocks
    int64_t b, kvh, rep_head;
  };
  struct Stage {
    bool prepare;
    int64_t first_unit, num_units;   // prepare: the chunk of units
    std::vector<int64_t> items;      // attend: tiles, longest first
  };
  float BuildBlock(int64_t unit, int64_t block, float* kt, float* v);
  void RunTile(int64_t item);
  bool BlockInputsFinite(int64_t unit, int64_t block) const;
  bool DirectBlock(int64_t unit, int64_t block, float* mean, KvBlock* kv);

  const AttentionProblem* problem_;
  std::vector<uint8_t> key_valid_;  // [B * Hq * kv_len]
  std::vector<Unit> units_;
  std::vector<int64_t> unit_of_;    // [B * Hq]
  std::vector<Stage> stages_;
  int64_t q_blocks_ = 0, kv_blocks_ = 0, slot_keys_ = 0, dv_pad_ = 0;
  bool shared_ = false;
  bool k_rows_ = false;  // decode-sized queries: K' row-major (see KvBlock)
  bool direct_ok_ = false;  // unshared decode-sized blocks may be read in place (see KvBlock)
  int64_t heads_per_tile_ = 1;  // > 1: a tile holds all query heads of a GQA group
  int64_t units_per_chunk_ = 1;  // chunk c holds units [c·n, (c+1)·n); unit u sits in slot u % n
  float* cache_ = nullptr;        // [units of chunk][kv_blocks] slots of kt + v (caller thread's)
  std::vector<float> inv_count_;  // [units][kv_blocks]; 0: the block has no valid key
  std::atomic<bool> nonfinite_input_{false};
};

// Names the first non-finite input element: empty when there is none, otherwise a message naming
// the input and the position. Scans Q, and every K/V row that some query may attend to (masked
// keys may hold anything: they are never read). The kernel checks the rows it reads while it
// converts them and calls this, a pass of its own, only when that check failed.
std::string ValidateProblem(const PreparedProblem& pp);

// Non-empty when PASA_ONNX_ISA named an instruction-set path that cannot run here.
const std::string& IsaError();

}  // namespace pasa

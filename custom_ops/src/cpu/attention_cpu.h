// PASA attention on the CPU: flash-style blocked attention with online pseudo-average shifting
// and global recovering (arXiv 2503.01873). Runs the stages of a CpuPlan (planner.h): prepare
// stages build shifted key blocks, attend stages run query tiles (tile_loop in attention_cpu.cc),
// whose per-block work is the active instruction set's (isa/kernels.h). Knows nothing about
// onnxruntime. The numerics are specified in shared/PASA.md and mirrored, step for step, by
// pasa_onnx/numerics.py.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "cpu/planner.h"
#include "problem/attention_problem.h"

namespace pasa {

struct KvBlock;  // isa/kernels.h

class PreparedProblem {
 public:
  // `cache` holds plan.cache_floats floats (the prepared key/value blocks of a chunk of units);
  // it may be null when the plan needs none.
  PreparedProblem(const AttentionProblem& p, const CpuPlan& plan, float* cache);

  const AttentionProblem& problem() const { return *problem_; }
  const CpuPlan& plan() const { return *plan_; }
  bool KeyValid(int64_t b, int64_t h, int64_t r) const { return plan_->KeyValid(*problem_, b, h, r); }
  int64_t NumStages() const { return static_cast<int64_t>(plan_->stages.size()); }
  int64_t NumTasks(int64_t stage) const;
  // Thread-safe for distinct tasks of one stage.
  void RunTask(int64_t stage, int64_t task);
  // After the stages: whether any row that was read (queries, attended keys and values) held an
  // inf or NaN. The result is then meaningless; ValidateProblem names the position.
  bool SawNonFiniteInput() const { return nonfinite_input_.load(); }

 private:
  struct TileCtx;
  float BuildBlock(int64_t unit, int64_t block, float* kt, float* v, float* mean, float* pack);
  void PrepareTask(const CpuPlan::Stage& stage, int64_t task);
  void RunTile(int64_t item);
  bool ClassifyRows(const TileCtx& c, int64_t r0, int64_t n, int64_t n_pad);
  void ResolveBlock(const TileCtx& c, int64_t j, KvBlock* kv);
  void CheckUnreadBlocks(const TileCtx& c);
  void StoreTile(const TileCtx& c);
  bool BlockInputsFinite(int64_t unit, int64_t block) const;
  bool DirectBlock(int64_t unit, int64_t block, float* mean, KvBlock* kv);
  void FlagNonFinite() { nonfinite_input_.store(true, std::memory_order_relaxed); }

  const AttentionProblem* problem_;
  const CpuPlan* plan_;
  float* cache_;                  // [units of chunk][kv_blocks] slots of kt + v
  std::vector<float> inv_count_;  // [units][kv_blocks]; 0: the block has no valid key
  std::atomic<bool> nonfinite_input_{false};
};

// Names the first non-finite input element: empty when there is none, otherwise a message naming
// the input and the position. Scans Q, and every K/V row that some query may attend to (masked
// keys may hold anything: they are never read). The kernel checks the rows it reads while it
// converts them and calls this, a pass of its own, only when that check failed.
std::string ValidateProblem(const PreparedProblem& pp);

}  // namespace pasa

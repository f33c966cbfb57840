// PASA attention core: flash-style blocked attention with online pseudo-average shifting and
// global recovering (arXiv 2503.01873). Knows nothing about onnxruntime: plain pointers, shapes
// and element strides. The numerics are specified in shared/PASA.md and mirrored, step for step,
// by pasa_onnx/numerics.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pasa {

enum class ElemType { kFloat32, kFloat16, kBFloat16 };
enum class Precision { kHalf, kPaper, kFloat };
enum class MaskKind { kNone, kBool, kAdditive };

// A read-only 4-D view [B, H, S, D] described by element strides; a stride of 0 broadcasts.
struct TensorView {
  const void* data = nullptr;
  ElemType type = ElemType::kFloat32;
  int64_t stride[4] = {0, 0, 0, 0};
};

struct MaskView {
  MaskKind kind = MaskKind::kNone;
  const void* data = nullptr;
  ElemType type = ElemType::kFloat32;  // element type of an additive mask
  int64_t stride[4] = {0, 0, 0, 0};     // over [B, H, Sq, mask_len]
  int64_t mask_len = 0;                 // keys at or beyond mask_len are masked (ONNX padding)
};

struct AttentionProblem {
  int64_t batch = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;  // total keys, past included
  int64_t head_dim = 0;
  int64_t v_head_dim = 0;

  TensorView q, k, v;  // [B,Hq,Sq,D], [B,Hkv,Skv,D], [B,Hkv,Skv,Dv]
  MaskView mask;

  // Output Y, written as [B,Hq,Sq,Dv] through element strides, same element type as Q.
  void* y = nullptr;
  int64_t y_stride[4] = {0, 0, 0, 0};

  float scale = 1.0f;
  float softcap = 0.0f;  // > 0: scores = softcap * tanh(scores / softcap), no PASA shift
  bool causal = false;
  int64_t left_window = -1;   // -1: unbounded
  int64_t right_window = -1;  // -1: unbounded
  // Per batch: query row i sits at absolute position i + query_offset[b] (causal/window frontier).
  std::vector<int64_t> query_offset;
  // Per batch: keys at or beyond valid_kv_len[b] are padding (nonpad_kv_seqlen), else kv_len.
  std::vector<int64_t> valid_kv_len;

  Precision precision = Precision::kHalf;
  ElemType half_type = ElemType::kFloat16;  // the type S and P are rounded to in half/paper mode
  float alpha = 0.9375f;
  int64_t block_q = 64;
  int64_t block_kv = 128;
};

// Default shift strength for an element type (PASA.md): 0.9375 makes alpha/n exact in fp16 for
// n = 128; the authors use 0.9689939 for bf16.
float DefaultAlpha(ElemType type);

// Per-(batch, head) key validity: a key counts for the block mean when it lies before the
// batch's valid length and at least one query row may attend to it.
struct PreparedProblem {
  const AttentionProblem* problem = nullptr;
  std::vector<uint8_t> key_valid;  // [B * Hq * kv_len]
  int64_t q_blocks = 0;
};

PreparedProblem Prepare(const AttentionProblem& p);

// Checks the data before any work; returns an empty string when it can run, otherwise a message
// naming the input and the position. Scans Q, and every K/V row that some query may attend to,
// for non-finite values (masked keys may hold anything: they are never read).
std::string ValidateProblem(const AttentionProblem& p, const PreparedProblem& pp);

// Independent work items: one per (batch, query head, query block).
inline int64_t NumWorkItems(const PreparedProblem& pp) {
  return pp.problem->batch * pp.problem->q_heads * pp.q_blocks;
}

// Computes the output rows of one work item. Thread-safe for distinct items.
void RunWorkItem(const PreparedProblem& pp, int64_t item);

}  // namespace pasa

// The EP-neutral description of one attention problem: what every kernel (CPU, CUDA) computes,
// as plain pointers, sizes and element strides. Knows nothing about onnxruntime. Built and
// validated from the op's inputs and attributes by problem/parse.h.
#pragma once

#include <cstdint>
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
  // Keys that come from past_key/past_value (they sit before the new keys).
  int64_t past_len = 0;
  // nonpad_kv_seqlen ([B] int64, in the memory of the kernel's device) or null. When set, keys at
  // or beyond nonpad[b] are padding and query row i sits at position i + nonpad[b] − q_len.
  const int64_t* nonpad_kv_seqlen = nullptr;
  // Host copies of the two per-batch values above, filled by the CPU kernel.
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

}  // namespace pasa

// From the op's inputs and attributes to one validated AttentionProblem: element types, layouts,
// heads, past/present, mask form and broadcast, windows, softcap, precision and output shapes.
// Shared by every execution provider's kernel and (for output shapes) by shape inference, so
// all of them accept the same inputs and word their errors the same way. No onnxruntime types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "problem/attention_problem.h"
#include "problem/op_contract.h"

namespace pasa {

// Thrown for an input or attribute the op cannot take; the binding turns it into an
// INVALID_ARGUMENT status prefixed with the node's name.
struct BadInput {
  std::string message;
};

// Element types as the op sees them; kOther covers every type it never accepts.
enum class DataType { kUndefined, kFloat32, kFloat16, kBFloat16, kBool, kInt64, kOther };

// One input as a kernel receives it: absent, or a tensor with its type, shape and data (in the
// memory of the kernel's device).
struct InputDesc {
  bool present = false;
  DataType type = DataType::kUndefined;
  std::string type_name;  // onnx's name of the element type, for messages
  std::vector<int64_t> shape;
  const void* data = nullptr;
};
using Inputs = InputDesc[contract::kNumInputs];

// The attributes, read and checked once per node (problem/attributes.h reads nothing itself:
// the binding fills this from the node).
struct OpAttributes {
  int64_t is_causal = 0;
  bool has_scale = false;
  float scale = 0.0f;
  bool has_q_num_heads = false;
  int64_t q_num_heads = 0;
  bool has_kv_num_heads = false;
  int64_t kv_num_heads = 0;
  float softcap = 0.0f;
  int64_t left_window = -1;
  int64_t right_window = -1;
  std::string precision;  // empty: the element type's default
  bool has_alpha = false;
  float alpha = 0.0f;
  int64_t block_q = 64;
  int64_t block_kv = 128;
};

// Empty when the attributes are usable, else the message (naming the attribute).
std::string CheckAttributes(const OpAttributes& a);

// A problem whose views point at the op's inputs. When past_key/past_value are given, K and V
// are read from present buffers ([B,Hkv,P+S,D], past then new keys) that the kernel fills: see
// BindPresent. Data-dependent checks (nonpad_kv_seqlen's range, +inf in an additive mask) need
// host memory and are separate (CheckHostData).
struct ParsedProblem {
  AttentionProblem problem;
  size_t rank = 4;          // 4: [B,H,S,D]; 3: [B,S,H*D]
  int64_t new_kv_len = 0;   // keys in K and V (the rest, past_len of them, come from the past)
  bool kv_from_present = false;
  std::vector<int64_t> y_shape, present_key_shape, present_value_shape;
};

ParsedProblem ParseProblem(const Inputs& in, const OpAttributes& attrs);

// Points K and V at the present buffers (4-D, past keys then new keys).
void BindPresent(ParsedProblem* parsed, const void* present_key, const void* present_value);

// With nonpad_kv_seqlen and the mask in host memory: checks nonpad's range and the additive
// mask's values, and fills problem.query_offset / valid_kv_len.
void CheckHostData(const Inputs& in, ParsedProblem* parsed);

// A dimension that may be unknown or symbolic (shape inference).
struct Dim {
  int64_t value = -1;  // -1: unknown
  std::string symbol;
};
using Dims = std::vector<Dim>;

struct OutputDims {
  bool known = false;  // false: the ranks do not say (the kernel reports the error)
  Dims y, present_key, present_value;
};

// The output shapes from the input shapes: the one rule that ParseProblem and shape inference
// share. past_key may be empty (absent).
OutputDims InferOutputDims(const Dims& q, const Dims& k, const Dims& v, const Dims* past_key,
                           int64_t q_num_heads, int64_t kv_num_heads);

std::string ShapeString(const std::vector<int64_t>& shape);

// Default shift strength. Half and float precision recover the removed shift directly (exact for
// any alpha), so they remove the whole block mean: 1 (docs/numerics.md measures why). Paper
// precision keeps the authors' values (0.9375 makes alpha/n exact in fp16 for n = 128; 0.9689939
// for bf16).
float DefaultAlpha(ElemType half_type, Precision precision);

}  // namespace pasa

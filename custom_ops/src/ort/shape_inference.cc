// Written against the C API: the 1.21 C++ helper's symbolic dims are rejected by newer runtimes.
#include "ort/shape_inference.h"

namespace pasa::ort {
namespace {

struct TypeShape {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  Dims dims;
  bool present = false;  // the input is given
  bool known = false;    // and its type and shape could be read
};

TypeShape GetInputTypeShape(OrtShapeInferContext* ctx, size_t index) {
  const OrtApi& api = Ort::GetApi();
  TypeShape ts;
  size_t count = 0;
  if (OrtStatus* st = api.ShapeInferContext_GetInputCount(ctx, &count)) {
    api.ReleaseStatus(st);
    return ts;
  }
  if (index >= count) return ts;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api.ShapeInferContext_GetInputTypeShape(ctx, index, &info)) {
    api.ReleaseStatus(st);
    return ts;
  }
  if (info == nullptr) return ts;
  ts.present = true;
  size_t n = 0;
  bool ok = api.GetTensorElementType(info, &ts.type) == nullptr;
  ok = ok && api.GetDimensionsCount(info, &n) == nullptr;
  if (ok) {
    std::vector<int64_t> values(n);
    std::vector<const char*> syms(n, nullptr);
    ok = api.GetDimensions(info, values.data(), n) == nullptr && api.GetSymbolicDimensions(info, syms.data(), n) == nullptr;
    for (size_t i = 0; ok && i < n; ++i)
      ts.dims.push_back(Dim{values[i], values[i] < 0 && syms[i] ? syms[i] : ""});
  }
  // The context owns `info` (onnxruntime 1.32 frees it itself: releasing it here double-frees).
  ts.known = ok;
  return ts;
}

int64_t ReadIntAttr(OrtShapeInferContext* ctx, const char* name, int64_t fallback) {
  const OrtApi& api = Ort::GetApi();
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* st = api.ShapeInferContext_GetAttribute(ctx, name, &attr)) {
    api.ReleaseStatus(st);
    return fallback;
  }
  if (attr == nullptr) return fallback;
  int64_t value = fallback;
  size_t out = 0;
  if (OrtStatus* st = api.ReadOpAttr(attr, ORT_OP_ATTR_INT, &value, sizeof value, &out)) {
    api.ReleaseStatus(st);
    return fallback;
  }
  return value;
}

OrtStatusPtr SetOutput(OrtShapeInferContext* ctx, size_t index, ONNXTensorElementDataType type, const Dims& dims) {
  const OrtApi& api = Ort::GetApi();
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api.CreateTensorTypeAndShapeInfo(&info)) return st;
  std::vector<int64_t> values;
  std::vector<const char*> symbols;
  for (const Dim& d : dims) {
    values.push_back(d.value);
    symbols.push_back(d.symbol.c_str());
  }
  OrtStatus* st = api.SetTensorElementType(info, type);
  if (!st) st = api.SetDimensions(info, values.data(), values.size());
  if (!st) st = api.SetSymbolicDimensions(info, symbols.data(), symbols.size());
  if (!st) st = api.ShapeInferContext_SetOutputTypeShape(ctx, index, info);
  api.ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

// The element type alone, the shape left unknown.
OrtStatusPtr SetOutputType(OrtShapeInferContext* ctx, size_t index, ONNXTensorElementDataType type) {
  const OrtApi& api = Ort::GetApi();
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api.CreateTensorTypeAndShapeInfo(&info)) return st;
  OrtStatus* st = api.SetTensorElementType(info, type);
  if (!st) st = api.ShapeInferContext_SetOutputTypeShape(ctx, index, info);
  api.ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

}  // namespace

OrtStatusPtr ORT_API_CALL InferShapes(const OrtCustomOp*, OrtShapeInferContext* ctx) {
  using contract::In;
  using contract::Index;
  const TypeShape q = GetInputTypeShape(ctx, Index(In::Q));
  const TypeShape k = GetInputTypeShape(ctx, Index(In::K));
  const TypeShape v = GetInputTypeShape(ctx, Index(In::V));
  const TypeShape past_k = GetInputTypeShape(ctx, Index(In::past_key));
  if (!q.known || !k.known || !v.known) return nullptr;  // nothing to infer from
  const OutputDims out = InferOutputDims(q.dims, k.dims, v.dims, past_k.present ? &past_k.dims : nullptr,
                                         ReadIntAttr(ctx, "q_num_heads", 0), ReadIntAttr(ctx, "kv_num_heads", 0));
  if (!out.known) {
    // Ranks unknown. onnxruntime gives the outputs the element type of the last open-typed
    // input, which is Q's unless a bool mask comes after it: then set Q's type, with no shape
    // (this makes onnxruntime warn, on each run, that the output's rank differs from the
    // model's empty shape; setting nothing would fail the session).
    const TypeShape mask = GetInputTypeShape(ctx, Index(In::attn_mask));
    if (!mask.present || mask.type == q.type) return nullptr;
    if (OrtStatus* st = SetOutputType(ctx, 0, q.type)) return st;
    if (OrtStatus* st = SetOutputType(ctx, 1, q.type)) Ort::GetApi().ReleaseStatus(st);
    if (OrtStatus* st = SetOutputType(ctx, 2, q.type)) Ort::GetApi().ReleaseStatus(st);
    return nullptr;  // the kernel reports a rank error with the node's name
  }
  if (OrtStatus* st = SetOutput(ctx, 0, q.type, out.y)) return st;
  // present_key/present_value are optional: a node without them rejects the index, which is fine.
  if (OrtStatus* st = SetOutput(ctx, 1, q.type, out.present_key)) Ort::GetApi().ReleaseStatus(st);
  if (OrtStatus* st = SetOutput(ctx, 2, q.type, out.present_value)) Ort::GetApi().ReleaseStatus(st);
  return nullptr;
}

}  // namespace pasa::ort

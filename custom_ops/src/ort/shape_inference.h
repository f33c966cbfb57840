// onnxruntime's shape-inference hook of PasaAttention (OrtCustomOp::InferOutputShapeFn): output
// types from Q, shapes from problem/parse.h's InferOutputDims (the rule the kernels use).
#pragma once

#include "ort/ort_common.h"

namespace pasa::ort {

OrtStatusPtr ORT_API_CALL InferShapes(const OrtCustomOp* op, OrtShapeInferContext* ctx);

}  // namespace pasa::ort

// The PasaAttention custom op, once for every execution provider: PasaAttentionOp<Kernel>
// declares the contract's inputs and outputs, reads and checks the attributes and creates the
// EP's kernel. A Kernel type provides
//   static constexpr const char* kProvider;   // onnxruntime's EP name, or nullptr for the CPU
//   Kernel(OpAttributes, std::string node, const OrtKernelInfo*);
//   OrtStatusPtr ComputeV2(OrtKernelContext*);
#pragma once

#include <memory>
#include <string>

#include "ort/ort_common.h"
#include "ort/shape_inference.h"

namespace pasa::ort {

template <class Kernel>
struct PasaAttentionOp : Ort::CustomOpBase<PasaAttentionOp<Kernel>, Kernel, true> {
  PasaAttentionOp() { OrtCustomOp::InferOutputShapeFn = &InferShapes; }

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    const std::string node = NodeName(info);
    OpAttributes attrs;
    std::string error = ReadAttributes(info, &attrs);
    if (error.empty()) error = CheckOutputs(info);
    if (!error.empty()) return MakeStatus(ORT_INVALID_ARGUMENT, NodePrefix(node) + error);
    return Guarded(node, [&] { *kernel = std::make_unique<Kernel>(std::move(attrs), node, info).release(); });
  }

  const char* GetName() const { return contract::kOpName; }
  const char* GetExecutionProviderType() const { return Kernel::kProvider; }
  size_t GetInputTypeCount() const { return contract::kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == contract::Index(contract::In::nonpad_kv_seqlen) ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64
                                                                    : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return contract::kInputOptional[index] ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  // One more than the contract: a node that asks for ONNX Attention's qk_matmul_output loads and
  // then gets a clear error (CheckOutputs) instead of onnxruntime's arity message.
  size_t GetOutputTypeCount() const { return contract::kNumOutputs + 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index < contract::kNumOutputs && !contract::kOutputOptional[index] ? INPUT_OUTPUT_REQUIRED
                                                                              : INPUT_OUTPUT_OPTIONAL;
  }
};

}  // namespace pasa::ort

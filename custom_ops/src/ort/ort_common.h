// What every onnxruntime kernel of PasaAttention shares: the C++ API (initialised by
// RegisterCustomOps), statuses, and the translation of a node's inputs and attributes into the
// EP-neutral types of problem/parse.h.
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <string>

#include "problem/parse.h"

namespace pasa::ort {

OrtStatusPtr MakeStatus(OrtErrorCode code, const std::string& message);

// The node's name, or "?".
std::string NodeName(const OrtKernelInfo* info);

// "PasaAttention node '<name>': " — the prefix of every message of a node.
std::string NodePrefix(const std::string& node);

// Reads every attribute of the contract; an attribute of the wrong type or an unusable value is
// an error naming it (returned, empty when the attributes are fine).
std::string ReadAttributes(const OrtKernelInfo* info, OpAttributes* attrs);

// Checks the node's outputs (qk_matmul_output is not supported); empty when fine.
std::string CheckOutputs(const OrtKernelInfo* info);

// The node's inputs as InputDesc (data pointers in the memory of the kernel's device).
void ReadInputs(Ort::KernelContext& ctx, Inputs* in);

// Output `index` with `shape`, or null when the node does not produce it.
void* OutputData(Ort::KernelContext& ctx, size_t index, const std::vector<int64_t>& shape);

// Runs body(); BadInput becomes INVALID_ARGUMENT and other exceptions FAIL, each prefixed.
template <class F>
OrtStatusPtr Guarded(const std::string& node, F&& body) {
  try {
    body();
    return nullptr;
  } catch (const BadInput& e) {
    return MakeStatus(ORT_INVALID_ARGUMENT, NodePrefix(node) + e.message);
  } catch (const Ort::Exception& e) {
    return MakeStatus(ORT_FAIL, NodePrefix(node) + e.what());
  } catch (const std::bad_alloc&) {
    return MakeStatus(ORT_FAIL, NodePrefix(node) + "out of memory");
  } catch (const std::exception& e) {
    return MakeStatus(ORT_FAIL, NodePrefix(node) + e.what());
  }
}

}  // namespace pasa::ort

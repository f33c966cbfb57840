// The generic CUDA kernel: the whole PasaAttention contract (any layout through strides, GQA/MQA,
// Dv != D, head sizes up to kMaxHeadDim, bool/additive masks with broadcasting, causal and
// windows with the query offset, nonpad_kv_seqlen read on the device, softcap, every precision
// mode) in fp32 arithmetic with explicit rounding where the GPU pipeline rounds (see
// docs/numerics.md, "The CUDA pipeline", and pasa_onnx/numerics_gpu.py). Not the fast path: the
// tensor-core kernels in cuda/flash/ take the problems they support.
#pragma once

#include <cstddef>
#include <string>

#include "problem/attention_problem.h"

namespace pasa {
namespace cuda {

constexpr int64_t kMaxHeadDim = 512;
constexpr int64_t kMaxBlockKv = 1024;

std::string GenericCheck(const AttentionProblem& p);
size_t GenericWorkspaceBytes(const AttentionProblem& p);
std::string RunGeneric(const AttentionProblem& p, cudaStream_t stream, void* workspace);
// After RunGeneric on the same stream: in paper mode, waits for the kernel and returns the
// node error when an output overflowed the half type; "" otherwise (no wait in other modes).
std::string GenericStatus(const AttentionProblem& p, cudaStream_t stream, void* workspace);

}  // namespace cuda
}  // namespace pasa

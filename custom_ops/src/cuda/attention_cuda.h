// The CUDA side of PasaAttention, as the onnxruntime binding sees it: plain host functions over
// a validated pasa::AttentionProblem whose pointers are device memory. Knows nothing about
// onnxruntime; takes a cudaStream_t as void* so that callers need no CUDA headers.
//
// Dispatch: the tensor-core flash kernels (cuda/flash/) when they support the problem, the
// generic kernel (cuda/generic_attention.cu) otherwise. Neither allocates or copies to the host,
// and only paper precision synchronises (CheckDeviceStatus): scratch is the caller's `workspace`
// (WorkspaceBytes(p) bytes, device memory that stays valid until the stream has consumed the
// launched work).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "problem/attention_problem.h"

namespace pasa {
namespace cuda {

// Empty when the CUDA kernels can compute `p` (host-side checks of sizes and attributes only),
// else a message naming what they cannot take and what they expect.
std::string CheckProblem(const AttentionProblem& p);

// Empty when a node with these attributes can run on CUDA and the CUDA settings of the
// environment are valid (PASA_ONNX_CUDA_SCORE_ACCUM), else the message (kernel creation).
std::string CheckAttributes(int64_t block_kv);

// Bytes of device scratch that RunAttention needs for `p` (may be 0).
size_t WorkspaceBytes(const AttentionProblem& p);

// Enqueues the attention of `p` on `stream`. `p.query_offset`/`p.valid_kv_len` are not used: the
// kernels derive them on the device from `p.past_len` and `p.nonpad_kv_seqlen`. Returns empty,
// or the CUDA error of a failed launch.
std::string RunAttention(const AttentionProblem& p, void* stream, void* workspace);

// After RunAttention: the errors only the device can see. In precision 'paper' it waits for the
// stream (the only host synchronisation of the op) and returns the node error when the half-type
// pipeline overflowed; in the other modes it returns "" at once.
std::string CheckDeviceStatus(const AttentionProblem& p, void* stream, void* workspace);

// Which kernel RunAttention uses for `p` ("flash" or "generic"); for tests and benchmarks.
const char* KernelFor(const AttentionProblem& p);

// One side of present = concat(past, new) along the sequence: writes dst[B,H,P+S,dim] (dense)
// from past[B,H,P,dim] (dense, may be null when P = 0) and the new rows, read through element
// strides over [B,H,S,dim] (the 3-D [B,S,H*dim] layout is a strided view too).
struct ConcatArgs {
  void* dst = nullptr;
  const void* past = nullptr;
  const void* cur = nullptr;
  int64_t cur_stride[4] = {0, 0, 0, 1};
  int64_t batch = 0, heads = 0, past_len = 0, new_len = 0, dim = 0;
  size_t elem_bytes = 2;
};
std::string ConcatPresent(const ConcatArgs& a, void* stream);

}  // namespace cuda
}  // namespace pasa

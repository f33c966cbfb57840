// Dispatch between the tensor-core flash kernels and the generic kernel, and the present
// key/value concatenation, all enqueued on the caller's stream (see attention_cuda.h).
#include "cuda/attention_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/generic_attention.cuh"

#if __has_include("cuda/flash/flash.h")
#include "cuda/flash/flash.h"
#define PASA_HAVE_FLASH 1
#else
#define PASA_HAVE_FLASH 0
#endif

namespace pasa {
namespace cuda {
namespace {

// The tensor-core flash path (custom_ops/src/cuda/flash/) runs every problem it supports
// (FlashSupports); the generic kernel runs the rest. PASA_ONNX_CUDA_KERNEL=generic forces the
// generic kernel everywhere (to compare the two, or to rule the flash path out); read once.
bool GenericForced() {
  static const bool value = [] {
    const char* env = std::getenv("PASA_ONNX_CUDA_KERNEL");
    return env != nullptr && std::strcmp(env, "generic") == 0;
  }();
  return value;
}

bool UseFlash(const AttentionProblem& p) {
#if PASA_HAVE_FLASH
  return !GenericForced() && FlashSupports(p);
#else
  (void)p;
  (void)GenericForced;
  return false;
#endif
}

template <typename T>
__global__ void ConcatNewKernel(ConcatArgs a) {
  // One thread per element of the new rows: dst[b][h][P + s][d] = cur(b, h, s, d).
  const int64_t total = a.batch * a.heads * a.new_len * a.dim;
  const int64_t dst_len = a.past_len + a.new_len;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = e % a.dim;
    int64_t rest = e / a.dim;
    const int64_t s = rest % a.new_len;
    rest /= a.new_len;
    const int64_t h = rest % a.heads;
    const int64_t b = rest / a.heads;
    const T* src = static_cast<const T*>(a.cur);
    T* dst = static_cast<T*>(a.dst);
    dst[((b * a.heads + h) * dst_len + a.past_len + s) * a.dim + d] =
        src[b * a.cur_stride[0] + h * a.cur_stride[1] + s * a.cur_stride[2] + d * a.cur_stride[3]];
  }
}

}  // namespace

std::string CheckProblem(const AttentionProblem& p) { return GenericCheck(p); }

std::string CheckAttributes(int64_t block_kv) {
#if PASA_HAVE_FLASH
  if (std::string bad = FlashSettingsError(); !bad.empty()) return bad;
#endif
  if (block_kv > kMaxBlockKv)
    return "attribute block_kv=" + std::to_string(block_kv) + " is not supported by the CUDA kernel; expected at most " +
           std::to_string(kMaxBlockKv);
  return {};
}

size_t WorkspaceBytes(const AttentionProblem& p) {
#if PASA_HAVE_FLASH
  if (UseFlash(p)) return FlashWorkspaceBytes(p);
#endif
  return GenericWorkspaceBytes(p);
}

const char* KernelFor(const AttentionProblem& p) { return UseFlash(p) ? "flash" : "generic"; }

std::string RunAttention(const AttentionProblem& p, void* stream, void* workspace) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
#if PASA_HAVE_FLASH
  if (UseFlash(p)) return RunFlash(p, s, workspace);
#endif
  return RunGeneric(p, s, workspace);
}

std::string CheckDeviceStatus(const AttentionProblem& p, void* stream, void* workspace) {
  if (UseFlash(p)) return {};
  return GenericStatus(p, static_cast<cudaStream_t>(stream), workspace);
}

std::string ConcatPresent(const ConcatArgs& a, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const size_t row = static_cast<size_t>(a.dim) * a.elem_bytes;
  const size_t dst_pitch = static_cast<size_t>(a.past_len + a.new_len) * row;
  const size_t planes = static_cast<size_t>(a.batch * a.heads);
  if (planes == 0 || row == 0) return {};
  cudaError_t e = cudaSuccess;
  if (a.past_len > 0) {  // dense [B,H,P,dim] planes into the first P rows of each plane
    const size_t width = static_cast<size_t>(a.past_len) * row;
    e = cudaMemcpy2DAsync(a.dst, dst_pitch, a.past, width, width, planes, cudaMemcpyDeviceToDevice, s);
    if (e != cudaSuccess) return std::string("CUDA error in cudaMemcpy2DAsync (past): ") + cudaGetErrorString(e);
  }
  if (a.new_len == 0) return {};
  const bool dense4d = a.cur_stride[3] == 1 && a.cur_stride[2] == a.dim && a.cur_stride[1] == a.new_len * a.dim &&
                       a.cur_stride[0] == a.heads * a.new_len * a.dim;
  if (dense4d) {
    const size_t width = static_cast<size_t>(a.new_len) * row;
    e = cudaMemcpy2DAsync(static_cast<unsigned char*>(a.dst) + static_cast<size_t>(a.past_len) * row, dst_pitch, a.cur,
                          width, width, planes, cudaMemcpyDeviceToDevice, s);
    if (e != cudaSuccess) return std::string("CUDA error in cudaMemcpy2DAsync (new keys): ") + cudaGetErrorString(e);
    return {};
  }
  const int64_t total = a.batch * a.heads * a.new_len * a.dim;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + threads - 1) / threads, 65535));
  if (a.elem_bytes == 4) ConcatNewKernel<uint32_t><<<blocks, threads, 0, s>>>(a);
  else ConcatNewKernel<uint16_t><<<blocks, threads, 0, s>>>(a);
  e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : std::string("CUDA error in the present concat kernel: ") + cudaGetErrorString(e);
}

}  // namespace cuda
}  // namespace pasa

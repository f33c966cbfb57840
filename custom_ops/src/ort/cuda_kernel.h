// The CUDA execution provider's kernel: inputs, outputs and nonpad_kv_seqlen in device memory,
// work enqueued on onnxruntime's compute stream, scratch from the execution provider's
// allocator. Parses and validates exactly as the CPU kernel does (problem/parse.h), so the two
// accept the same inputs and word their errors the same way.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "ort/ort_common.h"

namespace pasa::ort {

// Device scratch for one kernel: one buffer per compute stream, grown on demand. Work queued on
// a stream is ordered, so a stream's next call may reuse its buffer; an outgrown buffer may still
// be read by queued work, so it is kept (never freed or synchronised on) until the kernel dies.
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch();
  void SetAllocator(OrtAllocator* allocator) { allocator_ = allocator; }
  // At least `bytes` of device memory for work on `stream` (null for 0 bytes).
  void* Get(OrtKernelContext* context, void* stream, size_t bytes);

 private:
  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
  };
  std::mutex mutex_;
  OrtAllocator* allocator_ = nullptr;  // the execution provider's device allocator (owned)
  std::map<void*, Buffer> by_stream_;
  std::vector<void*> retired_;
};

class CudaKernel {
 public:
  static constexpr const char* kProvider = "CUDAExecutionProvider";
  CudaKernel(OpAttributes attrs, std::string node, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void Compute(OrtKernelContext* context);
  OpAttributes attrs_;
  std::string node_;
  DeviceScratch scratch_;
};

}  // namespace pasa::ort

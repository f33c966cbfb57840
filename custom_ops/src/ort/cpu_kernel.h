// The CPU execution provider's kernel: inputs and outputs in host memory, work on the session's
// intra-op thread pool (KernelContext_ParallelFor).
#pragma once

#include <string>

#include "cpu/cpu_kernel.h"
#include "ort/ort_common.h"

namespace pasa::ort {

class CpuKernel {
 public:
  static constexpr const char* kProvider = nullptr;  // onnxruntime's CPU execution provider
  CpuKernel(OpAttributes attrs, std::string node, const OrtKernelInfo*)
      : attrs_(std::move(attrs)), node_(std::move(node)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void Compute(OrtKernelContext* context);
  OpAttributes attrs_;
  std::string node_;
  CpuWorkspace workspace_;
};

}  // namespace pasa::ort

#include "ort/cpu_kernel.h"

namespace pasa::ort {

OrtStatusPtr CpuKernel::ComputeV2(OrtKernelContext* context) {
  return Guarded(node_, [&] { Compute(context); });
}

void CpuKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  Inputs in;
  ReadInputs(ctx, &in);
  ParsedProblem parsed = ParseProblem(in, attrs_);
  OutputBuffers out;
  out.y = OutputData(ctx, 0, parsed.y_shape);
  out.present_key = OutputData(ctx, 1, parsed.present_key_shape);
  out.present_value = OutputData(ctx, 2, parsed.present_value_shape);
  const ParallelFor parallel_for = [context](size_t n, void (*fn)(void*, size_t), void* data) {
    OrtStatus* st = Ort::GetApi().KernelContext_ParallelFor(context, fn, n, 0, data);
    if (st != nullptr) {  // no thread pool available: run inline
      Ort::GetApi().ReleaseStatus(st);
      for (size_t i = 0; i < n; ++i) fn(data, i);
    }
  };
  RunCpuAttention(in, parsed, out, workspace_, parallel_for);
}

}  // namespace pasa::ort

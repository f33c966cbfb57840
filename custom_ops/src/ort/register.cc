// The library's entry points: RegisterCustomOps (onnxruntime's custom-op library contract) adds
// the ai.pasa domain with one PasaAttention kernel per execution provider this build carries;
// PasaOnnxIsaInfo tells pasa_onnx.runtime.isa_info() which CPU path the library selected;
// PasaOnnxBuildInfo tells pasa_onnx.runtime.build_info() which execution providers it serves.
#include <vector>

#include "cpu/isa/kernels.h"
#include "ort/cpu_kernel.h"
#if PASA_HAVE_CUDA
#include "ort/cuda_kernel.h"
#endif
#include "ort/op.h"

namespace {

// Every op of the domain, one per execution provider. A new EP's kernel is one line here.
std::vector<OrtCustomOp*> DomainOps() {
  static pasa::ort::PasaAttentionOp<pasa::ort::CpuKernel> cpu_op;
#if PASA_HAVE_CUDA
  static pasa::ort::PasaAttentionOp<pasa::ort::CudaKernel> cuda_op;
  return {&cpu_op, &cuda_op};
#else
  return {&cpu_op};
#endif
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // The runtime predates our headers; any API version can still report the error.
    const OrtApi* old = api_base->GetApi(1);
    if (old == nullptr) return nullptr;
    std::string message = std::string("pasa-onnx: onnxruntime ") + api_base->GetVersionString() +
                          " is too old; PasaAttention needs onnxruntime >= 1." + std::to_string(ORT_API_VERSION) +
                          " (C API version " + std::to_string(ORT_API_VERSION) + ")";
    return old->CreateStatus(ORT_FAIL, message.c_str());
  }
  if (!pasa::IsaSelectionError().empty())
    return api->CreateStatus(ORT_FAIL, ("pasa-onnx: " + pasa::IsaSelectionError()).c_str());
  Ort::InitApi(api);
  // Registered ops and domains must outlive every session: keep them for the process.
  static OrtCustomOpDomain* domain = [] {
    OrtCustomOpDomain* d = nullptr;
    if (OrtStatus* st = Ort::GetApi().CreateCustomOpDomain(pasa::contract::kDomain, &d)) {
      Ort::GetApi().ReleaseStatus(st);
      return static_cast<OrtCustomOpDomain*>(nullptr);
    }
    for (OrtCustomOp* op : DomainOps()) {
      if (OrtStatus* st = Ort::GetApi().CustomOpDomain_Add(d, op)) {
        Ort::GetApi().ReleaseStatus(st);
        return static_cast<OrtCustomOpDomain*>(nullptr);
      }
    }
    return d;
  }();
  if (domain == nullptr) return api->CreateStatus(ORT_FAIL, "pasa-onnx: could not create the ai.pasa domain");
  return api->AddCustomOpDomain(options, domain);
}

extern "C" __attribute__((visibility("default"))) const char* PasaOnnxIsaInfo() { return pasa::IsaInfoJson(); }

extern "C" __attribute__((visibility("default"))) const char* PasaOnnxBuildInfo() {
#if PASA_HAVE_CUDA
  return "{\"execution_providers\": [\"CPUExecutionProvider\", \"CUDAExecutionProvider\"], "
         "\"cuda_architectures\": \"" PASA_CUDA_ARCHS "\"}";
#else
  return "{\"execution_providers\": [\"CPUExecutionProvider\"], \"cuda_architectures\": \"\"}";
#endif
}

#include "ort/cuda_kernel.h"

#include <stdexcept>

#include "cuda/attention_cuda.h"

namespace pasa::ort {
namespace {

size_t AlignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

size_t ElemBytes(ElemType t) { return t == ElemType::kFloat32 ? 4 : 2; }

// Element strides over [B,H,S,dim] of an input in the op's layout (rank 4 or 3).
void LayoutStrides(size_t rank, int64_t heads, int64_t seq, int64_t dim, int64_t (&stride)[4]) {
  if (rank == 4) {
    stride[0] = heads * seq * dim;
    stride[1] = seq * dim;
    stride[2] = dim;
  } else {
    stride[0] = seq * heads * dim;
    stride[1] = dim;
    stride[2] = heads * dim;
  }
  stride[3] = 1;
}

}  // namespace

DeviceScratch::~DeviceScratch() {
  if (allocator_ == nullptr) return;
  for (auto& entry : by_stream_) allocator_->Free(allocator_, entry.second.ptr);
  for (void* ptr : retired_) allocator_->Free(allocator_, ptr);
  Ort::GetApi().ReleaseAllocator(allocator_);
}

void* DeviceScratch::Get(OrtKernelContext* context, void* stream, size_t bytes) {
  if (bytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  if (allocator_ == nullptr) {
    // No allocator from the kernel info: the context's allocator for CUDA device memory.
    const Ort::MemoryInfo info("Cuda", OrtDeviceAllocator, 0, OrtMemTypeDefault);
    OrtAllocator* allocator = nullptr;
    Ort::ThrowOnError(Ort::GetApi().KernelContext_GetAllocator(context, info, &allocator));
    allocator_ = allocator;
  }
  Buffer& buf = by_stream_[stream];
  if (buf.bytes >= bytes) return buf.ptr;
  if (buf.ptr != nullptr) retired_.push_back(buf.ptr);
  buf = Buffer{};
  const size_t grown = AlignUp(bytes + bytes / 4, size_t{1} << 20);  // headroom: fewer regrowths
  void* ptr = allocator_->Alloc(allocator_, grown);
  if (ptr == nullptr) throw std::bad_alloc();
  buf = Buffer{ptr, grown};
  return ptr;
}

CudaKernel::CudaKernel(OpAttributes attrs, std::string node, const OrtKernelInfo* info)
    : attrs_(std::move(attrs)), node_(std::move(node)) {
  const std::string bad = cuda::CheckAttributes(attrs_.block_kv);
  if (!bad.empty()) throw BadInput{bad};
  OrtAllocator* allocator = nullptr;
  if (OrtStatus* st = Ort::GetApi().KernelInfoGetAllocator(info, OrtMemTypeDefault, &allocator)) {
    Ort::GetApi().ReleaseStatus(st);
    allocator = nullptr;
  }
  scratch_.SetAllocator(allocator);
}

OrtStatusPtr CudaKernel::ComputeV2(OrtKernelContext* context) {
  return Guarded(node_, [&] { Compute(context); });
}

void CudaKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  Inputs in;
  ReadInputs(ctx, &in);
  ParsedProblem parsed = ParseProblem(in, attrs_);
  AttentionProblem& p = parsed.problem;
  const std::string unsupported = cuda::CheckProblem(p);
  if (!unsupported.empty()) throw BadInput{unsupported};
  p.y = OutputData(ctx, 0, parsed.y_shape);
  void* present_k = OutputData(ctx, 1, parsed.present_key_shape);
  void* present_v = OutputData(ctx, 2, parsed.present_value_shape);
  void* stream = ctx.GetGPUComputeStream();

  // Scratch: the concatenated keys/values when a past is given but a present is not asked for,
  // then the kernels' workspace (which depends on the views, so bind them first).
  const size_t es = ElemBytes(p.q.type);
  const size_t k_bytes = static_cast<size_t>(p.batch * p.kv_heads * p.kv_len * p.head_dim) * es;
  const size_t v_bytes = static_cast<size_t>(p.batch * p.kv_heads * p.kv_len * p.v_head_dim) * es;
  const bool scratch_k = parsed.kv_from_present && present_k == nullptr;
  const bool scratch_v = parsed.kv_from_present && present_v == nullptr;
  if (parsed.kv_from_present) BindPresent(&parsed, nullptr, nullptr);
  const size_t k_off = 0;
  const size_t v_off = AlignUp(k_off + (scratch_k ? k_bytes : 0), 256);
  const size_t ws_off = AlignUp(v_off + (scratch_v ? v_bytes : 0), 256);
  const size_t ws_bytes = cuda::WorkspaceBytes(p);
  auto* base = static_cast<unsigned char*>(scratch_.Get(context, stream, ws_off + ws_bytes));
  if (scratch_k) present_k = base + k_off;
  if (scratch_v) present_v = base + v_off;

  // present = concat(past, new), on the stream.
  const auto concat = [&](void* dst, contract::In past, contract::In cur, int64_t dim) {
    if (dst == nullptr) return;
    cuda::ConcatArgs a;
    a.dst = dst;
    a.past = in[contract::Index(past)].present ? in[contract::Index(past)].data : nullptr;
    a.cur = in[contract::Index(cur)].data;
    LayoutStrides(parsed.rank, p.kv_heads, parsed.new_kv_len, dim, a.cur_stride);
    a.batch = p.batch;
    a.heads = p.kv_heads;
    a.past_len = p.past_len;
    a.new_len = parsed.new_kv_len;
    a.dim = dim;
    a.elem_bytes = es;
    const std::string error = cuda::ConcatPresent(a, stream);
    if (!error.empty()) throw std::runtime_error(error);
  };
  concat(present_k, contract::In::past_key, contract::In::K, p.head_dim);
  concat(present_v, contract::In::past_value, contract::In::V, p.v_head_dim);
  if (parsed.kv_from_present) BindPresent(&parsed, present_k, present_v);

  const std::string error = cuda::RunAttention(p, stream, ws_bytes > 0 ? base + ws_off : nullptr);
  if (!error.empty()) throw std::runtime_error(error);
  const std::string device_error = cuda::CheckDeviceStatus(p, stream, ws_bytes > 0 ? base + ws_off : nullptr);
  if (!device_error.empty()) throw BadInput{device_error};
}

}  // namespace pasa::ort

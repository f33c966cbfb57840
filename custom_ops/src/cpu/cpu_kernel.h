// The CPU kernel of PasaAttention, without onnxruntime: from a parsed problem and the output
// buffers to the result (past/present concatenation, host checks, plan, stages on a thread pool).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/aligned_vector.h"
#include "problem/parse.h"

namespace pasa {

// Runs fn(0..n) on the caller's thread pool; tasks may run concurrently and in any order.
using ParallelFor = std::function<void(size_t n, void (*fn)(void* data, size_t task), void* data)>;

// The prepared-block caches of one kernel, kept between runs (no page faults and no zeroing per
// run) and handed to one run at a time (sessions may run concurrently).
class CpuWorkspace {
 public:
  class Lease {
   public:
    Lease(CpuWorkspace* owner, std::unique_ptr<AlignedVector<float>> buffer)
        : owner_(owner), buffer_(std::move(buffer)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { owner_->Return(std::move(buffer_)); }
    float* Floats(size_t n) {
      if (buffer_->size() < n) buffer_->resize(n);
      return buffer_->data();
    }

   private:
    CpuWorkspace* owner_;
    std::unique_ptr<AlignedVector<float>> buffer_;
  };
  Lease Acquire();

 private:
  void Return(std::unique_ptr<AlignedVector<float>> buffer);
  std::mutex mutex_;
  std::vector<std::unique_ptr<AlignedVector<float>>> free_;
};

struct OutputBuffers {
  void* y = nullptr;
  void* present_key = nullptr;    // null: not requested
  void* present_value = nullptr;
};

// Throws BadInput for data the op cannot take (nonpad range, additive mask values, non-finite
// inputs that are read).
void RunCpuAttention(const Inputs& in, ParsedProblem& parsed, const OutputBuffers& out, CpuWorkspace& workspace,
                     const ParallelFor& parallel_for);

}  // namespace pasa

// Small vector helpers of the attention core's inner loops. Each is compiled for several
// instruction sets (GCC function multi-versioning) and picked at load time by the CPU's features.
#pragma once

#include <cstdint>

#include "attention_core.h"

namespace pasa {

// out[0..n) = float(src[offset + 0..n)) for a contiguous row of `type` elements.
void ConvertRow(const void* src, ElemType type, int64_t offset, int64_t n, float* out);
// acc[0..n) += x[0..n)
void AddTo(const float* x, int64_t n, float* acc);
// sum of a[d] * b[d], accumulated in float
float Dot(const float* a, const float* b, int64_t n);
// acc[0..n) += alpha * x[0..n)
void Axpy(float alpha, const float* x, int64_t n, float* acc);

}  // namespace pasa

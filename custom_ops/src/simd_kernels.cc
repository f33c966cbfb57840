#include "simd_kernels.h"

#include "half_types.h"

// x86-64 builds carry AVX-512 and AVX2 clones of each helper next to the portable one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(PASA_NO_MULTIVERSION)
#define PASA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PASA_CLONES
#endif

namespace pasa {

PASA_CLONES void ConvertRow(const void* src, ElemType type, int64_t offset, int64_t n, float* out) {
  switch (type) {
    case ElemType::kFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(s[i]);
      break;
    }
    case ElemType::kBFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(s[i]);
      break;
    }
    case ElemType::kFloat32:
    default: {
      const float* s = static_cast<const float*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = s[i];
      break;
    }
  }
}

PASA_CLONES void AddTo(const float* x, int64_t n, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

PASA_CLONES float Dot(const float* a, const float* b, int64_t n) {
  // Eight partial sums let the compiler vectorise without reassociation flags.
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) part[k] += a[i + k] * b[i + k];
  float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

PASA_CLONES void Axpy(float alpha, const float* x, int64_t n, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += alpha * x[i];
}

}  // namespace pasa

// Small helpers shared by the CPU planner and the tile loop: element access, the geometric
// constraints of a query row (padding, causal frontier, local window) and mask values.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "problem/attention_problem.h"
#include "problem/half_types.h"

namespace pasa {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float LoadElem(const void* base, ElemType type, int64_t index) {
  switch (type) {
    case ElemType::kFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[index]);
    case ElemType::kBFloat16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(base)[index]);
    case ElemType::kFloat32:
    default:
      return static_cast<const float*>(base)[index];
  }
}

inline void StoreElem(void* base, ElemType type, int64_t index, float value) {
  switch (type) {
    case ElemType::kFloat16:
      static_cast<uint16_t*>(base)[index] = FloatToHalf(value);
      break;
    case ElemType::kBFloat16:
      static_cast<uint16_t*>(base)[index] = FloatToBFloat16(value);
      break;
    case ElemType::kFloat32:
    default:
      static_cast<float*>(base)[index] = value;
      break;
  }
}

inline size_t ElemBytes(ElemType t) { return t == ElemType::kFloat32 ? 4 : 2; }

// Element offset of row s of (batch b, head h) in a [B,H,S,D] view.
inline int64_t RowOffset(const TensorView& view, int64_t b, int64_t h, int64_t s) {
  return b * view.stride[0] + h * view.stride[1] + s * view.stride[2];
}

// Whether query row i (absolute position pos) may attend key r by the geometric constraints
// (padding length, causal frontier, local window); masks are applied separately.
struct Geometry {
  bool causal;
  int64_t left, right, valid_len;
  // Keys [lo, hi) that position pos may attend, before masks.
  void Range(int64_t pos, int64_t kv_len, int64_t* lo, int64_t* hi) const {
    int64_t a = left >= 0 ? std::max<int64_t>(0, pos - left) : 0;
    int64_t z = std::min(valid_len, kv_len);
    if (causal) z = std::min(z, pos + 1);
    if (right >= 0) z = std::min(z, pos + right + 1);
    *lo = a;
    *hi = z;
  }
};

inline Geometry GeometryOf(const AttentionProblem& p, int64_t b) {
  return Geometry{p.causal, p.left_window, p.right_window, p.valid_kv_len[static_cast<size_t>(b)]};
}

// Mask value for (b, h, i, r): -inf when masked, otherwise the additive term (0 for bool).
inline float MaskValue(const MaskView& mask, int64_t b, int64_t h, int64_t i, int64_t r) {
  if (mask.kind == MaskKind::kNone) return 0.0f;
  if (r >= mask.mask_len) return kNegInf;
  const int64_t idx = b * mask.stride[0] + h * mask.stride[1] + i * mask.stride[2] + r * mask.stride[3];
  if (mask.kind == MaskKind::kBool) return static_cast<const uint8_t*>(mask.data)[idx] ? 0.0f : kNegInf;
  return LoadElem(mask.data, mask.type, idx);
}

// Keys of a block are padded to a multiple of this (zero keys, masked), so row passes and tile
// products never need a tail loop. Also the padding of the value width.
constexpr int64_t kKeyAlign = 16;

inline int64_t AlignUp(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

}  // namespace pasa

// The block range of one decode CTA, shared by the decode kernels (flash_decode.cu,
// flash_decode_reg.cu): its split's PASA blocks, cut to the keys its rows may attend.
#pragma once

#include "flash_decode.h"

namespace pasa::cuda::flash {

// The CTA's view of its problem: rows, valid keys, query offset and the block range.
struct DecodeRange {
  int rows, valid, blk_begin, blk_end;
  int64_t off, a_lo, a_hi;  // keys every row attends: [a_lo, a_hi)
};

__device__ __forceinline__ DecodeRange MakeRange(const FwdParams& p, int split, int b) {
  DecodeRange dr;
  dr.rows = p.rows;
  dr.valid = ValidLen(p.nonpad, b, p.kv_len);
  dr.off = p.nonpad != nullptr ? static_cast<int64_t>(dr.valid) - p.q_len : p.past_len;
  // Keys some row may attend: [k_lo, k_hi); keys every row attends: [a_lo, a_hi).
  const int64_t pos_first = dr.off, pos_last = (dr.rows - 1) / p.group + dr.off;
  int64_t k_lo = 0, k_hi = dr.valid;
  dr.a_lo = 0;
  dr.a_hi = dr.valid;
  if (p.left >= 0) {
    k_lo = Max64(0, pos_first - p.left);
    dr.a_lo = Max64(0, pos_last - p.left);
  }
  if (p.causal) {
    k_hi = Min64(k_hi, pos_last + 1);
    dr.a_hi = Min64(dr.a_hi, pos_first + 1);
  }
  if (p.right >= 0) {
    k_hi = Min64(k_hi, pos_last + p.right + 1);
    dr.a_hi = Min64(dr.a_hi, pos_first + p.right + 1);
  }
  // This split's blocks of [0, nblk), cut to [k_lo, k_hi).
  const int per = (p.nblk + p.splits - 1) / p.splits;
  dr.blk_begin = split * per;
  dr.blk_end = min(p.nblk, dr.blk_begin + per);
  if (k_hi > k_lo) {
    dr.blk_begin = max(dr.blk_begin, static_cast<int>(k_lo / kDecodeBlock));
    dr.blk_end = min(dr.blk_end, static_cast<int>((k_hi + kDecodeBlock - 1) / kDecodeBlock));
  } else {
    dr.blk_end = dr.blk_begin;
  }
  return dr;
}

}  // namespace pasa::cuda::flash

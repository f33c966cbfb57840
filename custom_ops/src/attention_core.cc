// PASA attention core. See attention_core.h and shared/PASA.md; pasa_onnx/numerics.py is the
// numpy emulation that the tests hold this file to, step for step.
#include "attention_core.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "half_types.h"
#include "simd_kernels.h"

namespace pasa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

float LoadElem(const void* base, ElemType type, int64_t index) {
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

void StoreElem(void* base, ElemType type, int64_t index, float value) {
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

// Loads `rows` rows of `cols` elements of a [B,H,S,D] view into a dense float buffer.
void LoadRows(const TensorView& view, int64_t b, int64_t h, int64_t s0, int64_t rows, int64_t cols,
              float* out) {
  const int64_t base = b * view.stride[0] + h * view.stride[1] + s0 * view.stride[2];
  if (view.stride[3] == 1) {
    for (int64_t r = 0; r < rows; ++r) {
      ConvertRow(view.data, view.type, base + r * view.stride[2], cols, out + r * cols);
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < cols; ++d)
      out[r * cols + d] = LoadElem(view.data, view.type, base + r * view.stride[2] + d * view.stride[3]);
}

// The rounding that `half`/`paper` apply to stored values: to fp16 or bf16.
struct Rounder {
  ElemType type;
  float operator()(float v) const {
    return type == ElemType::kBFloat16 ? RoundToBFloat16(v) : RoundToHalf(v);
  }
};

// Whether query row i (absolute position pos) may attend key r by the geometric constraints
// (padding length, causal frontier, local window); masks are applied separately.
struct Geometry {
  bool causal;
  int64_t left, right, valid_len;
  bool Allows(int64_t pos, int64_t r) const {
    if (r >= valid_len) return false;
    if (causal && r > pos) return false;
    if (left >= 0 && pos - r > left) return false;
    if (right >= 0 && r - pos > right) return false;
    return true;
  }
  // Smallest and largest key any of the positions [pos0, pos1] may attend.
  void KeyRange(int64_t pos0, int64_t pos1, int64_t kv_len, int64_t* lo, int64_t* hi) const {
    *lo = left >= 0 ? std::max<int64_t>(0, pos0 - left) : 0;
    int64_t top = std::min(valid_len, kv_len) - 1;
    if (causal) top = std::min(top, pos1);
    if (right >= 0) top = std::min(top, pos1 + right);
    *hi = top;
  }
};

// Mask value for (b, h, i, r): -inf when masked, otherwise the additive term (0 for bool).
float MaskValue(const MaskView& mask, int64_t b, int64_t h, int64_t i, int64_t r) {
  if (mask.kind == MaskKind::kNone) return 0.0f;
  if (r >= mask.mask_len) return kNegInf;
  const int64_t idx = b * mask.stride[0] + h * mask.stride[1] + i * mask.stride[2] + r * mask.stride[3];
  if (mask.kind == MaskKind::kBool) return static_cast<const uint8_t*>(mask.data)[idx] ? 0.0f : kNegInf;
  return LoadElem(mask.data, mask.type, idx);
}

int64_t KvHeadOf(const AttentionProblem& p, int64_t h) { return h / (p.q_heads / p.kv_heads); }

std::string Describe(const char* what, int64_t b, int64_t h, int64_t s, int64_t d) {
  std::ostringstream os;
  os << what << " holds a non-finite value at [batch=" << b << ", head=" << h << ", seq=" << s
     << ", dim=" << d << "]";
  return os.str();
}

struct Scratch {
  std::vector<float> q, k, kshift, v, s, add, o, m, l, abar, kbar, pv;
  std::vector<int64_t> nblocks, unmasked;
};

}  // namespace

float DefaultAlpha(ElemType type) { return type == ElemType::kBFloat16 ? 0.9689939f : 0.9375f; }

PreparedProblem Prepare(const AttentionProblem& p) {
  PreparedProblem pp;
  pp.problem = &p;
  pp.q_blocks = (p.q_len + p.block_q - 1) / p.block_q;
  pp.key_valid.assign(static_cast<size_t>(p.batch * p.q_heads * p.kv_len), 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.q_heads; ++h) {
      uint8_t* valid = pp.key_valid.data() + (b * p.q_heads + h) * p.kv_len;
      // Planes that the mask broadcasts share one answer: copy it.
      const bool same_as_head0 = h > 0 && (p.mask.kind == MaskKind::kNone || p.mask.stride[1] == 0);
      if (same_as_head0) {
        std::copy(valid - h * p.kv_len, valid - (h - 1) * p.kv_len, valid);
        continue;
      }
      const int64_t len = std::min(p.valid_kv_len[b], p.kv_len);
      for (int64_t r = 0; r < len; ++r) {
        if (p.mask.kind == MaskKind::kNone) {
          valid[r] = 1;
          continue;
        }
        for (int64_t i = 0; i < p.q_len; ++i) {
          if (MaskValue(p.mask, b, h, i, r) != kNegInf) {
            valid[r] = 1;
            break;
          }
        }
      }
    }
  }
  return pp;
}

std::string ValidateProblem(const AttentionProblem& p, const PreparedProblem& pp) {
  std::vector<float> row(static_cast<size_t>(std::max(p.head_dim, p.v_head_dim)));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.q_heads; ++h)
      for (int64_t s = 0; s < p.q_len; ++s) {
        LoadRows(p.q, b, h, s, 1, p.head_dim, row.data());
        for (int64_t d = 0; d < p.head_dim; ++d)
          if (!std::isfinite(row[d])) return Describe("input 'Q'", b, h, s, d);
      }
  const int64_t group = p.q_heads / p.kv_heads;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t kvh = 0; kvh < p.kv_heads; ++kvh)
      for (int64_t r = 0; r < p.kv_len; ++r) {
        bool used = false;
        for (int64_t h = kvh * group; h < (kvh + 1) * group && !used; ++h)
          used = pp.key_valid[(b * p.q_heads + h) * p.kv_len + r] != 0;
        if (!used) continue;  // masked for every query: its values are never read
        LoadRows(p.k, b, kvh, r, 1, p.head_dim, row.data());
        for (int64_t d = 0; d < p.head_dim; ++d)
          if (!std::isfinite(row[d])) return Describe("input 'K' (or past_key)", b, kvh, r, d) + " on a key that is not masked";
        LoadRows(p.v, b, kvh, r, 1, p.v_head_dim, row.data());
        for (int64_t d = 0; d < p.v_head_dim; ++d)
          if (!std::isfinite(row[d])) return Describe("input 'V' (or past_value)", b, kvh, r, d) + " on a key that is not masked";
      }
  return {};
}

void RunWorkItem(const PreparedProblem& pp, int64_t item) {
  const AttentionProblem& p = *pp.problem;
  const int64_t qb = item % pp.q_blocks;
  const int64_t bh = item / pp.q_blocks;
  const int64_t h = bh % p.q_heads;
  const int64_t b = bh / p.q_heads;
  const int64_t kvh = KvHeadOf(p, h);
  const int64_t i0 = qb * p.block_q;
  const int64_t rows = std::min(p.block_q, p.q_len - i0);
  const int64_t D = p.head_dim, Dv = p.v_head_dim, BK = p.block_kv;

  const bool rounds = p.precision != Precision::kFloat;
  const bool paper = p.precision == Precision::kPaper;
  const Rounder round{p.half_type};
  const float alpha = p.softcap > 0.0f ? 0.0f : p.alpha;
  const float beta = alpha / (1.0f - alpha);
  const float c = p.scale;
  const int64_t offset = p.query_offset[b];
  const Geometry geom{p.causal, p.left_window, p.right_window, p.valid_kv_len[b]};
  const uint8_t* key_valid = pp.key_valid.data() + (b * p.q_heads + h) * p.kv_len;

  thread_local Scratch t;
  t.q.resize(rows * D);
  t.k.resize(BK * D);
  t.kshift.resize(BK * D);
  t.v.resize(BK * Dv);
  t.s.resize(rows * BK);
  t.add.resize(rows * BK);
  t.o.assign(rows * Dv, 0.0f);
  t.m.assign(rows, kNegInf);
  t.l.assign(rows, 0.0f);
  t.abar.assign(rows, 0.0f);
  t.nblocks.assign(rows, 0);
  t.unmasked.resize(rows);
  t.kbar.resize(D);
  t.pv.resize(Dv);

  LoadRows(p.q, b, h, i0, rows, D, t.q.data());

  int64_t key_lo = 0, key_hi = -1;
  geom.KeyRange(i0 + offset, i0 + rows - 1 + offset, p.kv_len, &key_lo, &key_hi);
  const int64_t first_block = key_hi >= key_lo ? key_lo / BK : 0;
  const int64_t end_block = key_hi >= key_lo ? key_hi / BK + 1 : 0;

  for (int64_t j = first_block; j < end_block; ++j) {
    const int64_t r0 = j * BK;
    const int64_t n = std::min(BK, p.kv_len - r0);

    // 1) Block mean over the valid keys, then K' = c * (K - alpha * mean): the pseudo-average shift.
    int64_t count = 0;
    std::fill(t.kbar.begin(), t.kbar.end(), 0.0f);
    for (int64_t r = 0; r < n; ++r) {
      if (!key_valid[r0 + r]) continue;
      LoadRows(p.k, b, kvh, r0 + r, 1, D, t.k.data() + r * D);
      AddTo(t.k.data() + r * D, D, t.kbar.data());
      ++count;
    }
    if (count == 0) continue;  // no key here can be attended: the block contributes nothing
    const float inv_count = 1.0f / static_cast<float>(count);
    for (int64_t d = 0; d < D; ++d) t.kbar[d] = alpha * (t.kbar[d] * inv_count);
    for (int64_t r = 0; r < n; ++r) {
      if (!key_valid[r0 + r]) continue;
      float* kr = t.kshift.data() + r * D;
      const float* src = t.k.data() + r * D;
      for (int64_t d = 0; d < D; ++d) kr[d] = c * (src[d] - t.kbar[d]);
      if (paper) for (int64_t d = 0; d < D; ++d) kr[d] = round(kr[d]);
    }

    // 2) Which (row, key) pairs are attended, with their additive mask terms.
    bool any_row = false;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t pos = i0 + i + offset;
      int64_t unmasked = 0;
      float* add = t.add.data() + i * BK;
      for (int64_t r = 0; r < n; ++r) {
        float a = kNegInf;
        if (key_valid[r0 + r] && geom.Allows(pos, r0 + r)) a = MaskValue(p.mask, b, h, i0 + i, r0 + r);
        add[r] = a;
        unmasked += a != kNegInf;
      }
      t.unmasked[i] = unmasked;
      any_row = any_row || unmasked > 0;
    }
    if (!any_row) continue;

    // 3) Shifted scores of every valid key (all of them enter the row mean).
    for (int64_t r = 0; r < n; ++r) {
      if (!key_valid[r0 + r]) continue;
      LoadRows(p.v, b, kvh, r0 + r, 1, Dv, t.v.data() + r * Dv);
    }
    for (int64_t i = 0; i < rows; ++i) {
      if (t.unmasked[i] == 0) continue;
      const float* qi = t.q.data() + i * D;
      float* si = t.s.data() + i * BK;
      for (int64_t r = 0; r < n; ++r) {
        if (!key_valid[r0 + r]) continue;
        float dot = Dot(qi, t.kshift.data() + r * D, D);
        if (p.softcap > 0.0f) dot = p.softcap * std::tanh(dot / p.softcap);
        si[r] = dot;
      }
    }

    // 4) Per row: block mean, global recovery, online softmax update.
    for (int64_t i = 0; i < rows; ++i) {
      if (t.unmasked[i] == 0) continue;  // this row attends nothing here: state unchanged
      float* si = t.s.data() + i * BK;
      const float* add = t.add.data() + i * BK;

      float mu;
      if (paper) {
        float sum = 0.0f;
        for (int64_t r = 0; r < n; ++r)
          if (key_valid[r0 + r]) {
            si[r] = round(si[r]);
            sum += si[r];
          }
        mu = round(sum * inv_count);
      } else {
        float sum = 0.0f;
        for (int64_t r = 0; r < n; ++r)
          if (key_valid[r0 + r]) sum += si[r];
        mu = sum * inv_count;
        if (rounds) {
          // S tile rounded to the half type; a row-block that overflows it keeps fp32 scores.
          bool overflow = false;
          for (int64_t r = 0; r < n && !overflow; ++r)
            if (add[r] != kNegInf && std::isinf(round(si[r]))) overflow = true;
          if (!overflow)
            for (int64_t r = 0; r < n; ++r)
              if (key_valid[r0 + r]) si[r] = round(si[r]);
        }
      }

      const float abar_old = t.abar[i];
      const int64_t nb = ++t.nblocks[i];
      float abar_new = abar_old + (mu - abar_old) / static_cast<float>(nb);
      if (paper) abar_new = round(abar_new);
      float off_cur = beta * (mu - abar_new);
      float off_old = beta * (abar_old - abar_new);
      if (paper) {
        off_cur = round(off_cur);
        off_old = round(off_old);
      }

      // NaN (inf - inf in the paper pipeline) must propagate to the output, never vanish.
      float mx = kNegInf;
      for (int64_t r = 0; r < n; ++r) {
        if (add[r] == kNegInf) continue;
        float x = (si[r] + add[r]) + off_cur;
        if (paper) x = round(x);
        si[r] = x;
        mx = (std::isnan(x) || std::isnan(mx)) ? kNaN : std::max(mx, x);
      }
      float m_old = t.m[i];
      if (m_old != kNegInf) {
        m_old = m_old + off_old;
        if (paper) m_old = round(m_old);
      }
      const float m_new = (std::isnan(m_old) || std::isnan(mx)) ? kNaN : std::max(m_old, mx);
      t.abar[i] = abar_new;
      if (m_new == kNegInf) continue;  // nothing finite seen yet

      float corr = m_old == kNegInf ? 0.0f : std::exp(m_old - m_new);
      if (paper) corr = round(corr);
      float psum = 0.0f;
      std::fill(t.pv.begin(), t.pv.end(), 0.0f);
      for (int64_t r = 0; r < n; ++r) {
        if (add[r] == kNegInf) continue;
        float prob = std::exp(si[r] - m_new);
        if (rounds) prob = round(prob);
        if (prob == 0.0f) continue;
        psum += prob;
        Axpy(prob, t.v.data() + r * Dv, Dv, t.pv.data());
      }
      float* oi = t.o.data() + i * Dv;
      if (paper) {
        t.l[i] = round(round(t.l[i] * corr) + round(psum));
        for (int64_t d = 0; d < Dv; ++d) oi[d] = round(round(oi[d] * corr) + round(t.pv[d]));
      } else {
        t.l[i] = t.l[i] * corr + psum;
        for (int64_t d = 0; d < Dv; ++d) oi[d] = oi[d] * corr + t.pv[d];
      }
      t.m[i] = m_new;
    }
  }

  // 5) Normalise; a row that attended nothing is 0 (ONNX Attention semantics).
  for (int64_t i = 0; i < rows; ++i) {
    const float l = t.l[i];
    const int64_t base = b * p.y_stride[0] + h * p.y_stride[1] + (i0 + i) * p.y_stride[2];
    const float* oi = t.o.data() + i * Dv;
    for (int64_t d = 0; d < Dv; ++d) {
      const float y = l != 0.0f ? oi[d] / l : 0.0f;  // NaN/inf must show, never become 0
      StoreElem(p.y, p.q.type, base + d * p.y_stride[3], y);
    }
  }
}

}  // namespace pasa

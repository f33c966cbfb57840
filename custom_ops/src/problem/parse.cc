// ParseProblem and its helpers: the op's input and attribute rules, once for every execution
// provider. The messages are the op's documented errors (tests/test_bad_input.py).
#include "problem/parse.h"

#include <cmath>
#include <sstream>

#include "problem/half_types.h"

namespace pasa {
namespace {

using contract::In;
using contract::Index;
using contract::Name;

[[noreturn]] void Fail(const std::string& message) { throw BadInput{message}; }

std::string Str(int64_t v) { return std::to_string(v); }

void ExpectRank(const InputDesc& t, In which, size_t rank, const char* layout) {
  if (t.shape.size() != rank)
    Fail(std::string("input '") + Name(which) + "' has shape " + ShapeString(t.shape) + "; expected rank " +
         std::to_string(rank) + " " + layout);
}

ElemType ElemTypeOf(const InputDesc& q) {
  switch (q.type) {
    case DataType::kFloat32: return ElemType::kFloat32;
    case DataType::kFloat16: return ElemType::kFloat16;
    case DataType::kBFloat16: return ElemType::kBFloat16;
    default:
      Fail("input 'Q' has element type " + q.type_name + "; expected float16, bfloat16 or float32");
  }
}

void CheckTypes(const Inputs& in) {
  const InputDesc& q = in[Index(In::Q)];
  for (In i : {In::K, In::V, In::past_key, In::past_value}) {
    const InputDesc& t = in[Index(i)];
    if (t.present && t.type != q.type)
      Fail(std::string("input '") + Name(i) + "' has element type " + t.type_name + "; expected " + q.type_name +
           " like 'Q'");
  }
  const InputDesc& mask = in[Index(In::attn_mask)];
  if (mask.present && mask.type != q.type && mask.type != DataType::kBool)
    Fail("input 'attn_mask' has element type " + mask.type_name + "; expected bool or " + q.type_name + " like 'Q'");
  const InputDesc& nonpad = in[Index(In::nonpad_kv_seqlen)];
  if (nonpad.present && nonpad.type != DataType::kInt64)
    Fail("input 'nonpad_kv_seqlen' has element type " + nonpad.type_name + "; expected int64");
}

// Heads, lengths and head sizes of Q, K and V; returns the keys in K (and V).
int64_t ParseHeads(const Inputs& in, const OpAttributes& attrs, size_t rank, AttentionProblem* p) {
  const InputDesc& q = in[Index(In::Q)];
  const InputDesc& k = in[Index(In::K)];
  const InputDesc& v = in[Index(In::V)];
  p->batch = q.shape[0];
  int64_t k_seq, v_seq, k_dim;
  if (rank == 4) {
    p->q_heads = q.shape[1];
    p->q_len = q.shape[2];
    p->head_dim = q.shape[3];
    p->kv_heads = k.shape[1];
    k_seq = k.shape[2];
    k_dim = k.shape[3];
    v_seq = v.shape[2];
    p->v_head_dim = v.shape[3];
    if (v.shape[1] != k.shape[1])
      Fail("input 'V' has " + Str(v.shape[1]) + " heads (shape " + ShapeString(v.shape) + "); expected " +
           Str(k.shape[1]) + " like 'K'");
    if (attrs.q_num_heads > 0 && attrs.q_num_heads != p->q_heads)
      Fail("attribute q_num_heads=" + Str(attrs.q_num_heads) + " contradicts 'Q' shape " + ShapeString(q.shape));
    if (attrs.kv_num_heads > 0 && attrs.kv_num_heads != p->kv_heads)
      Fail("attribute kv_num_heads=" + Str(attrs.kv_num_heads) + " contradicts 'K' shape " + ShapeString(k.shape));
  } else {
    if (attrs.q_num_heads <= 0 || attrs.kv_num_heads <= 0)
      Fail("3-D inputs need attributes q_num_heads and kv_num_heads (positive); got q_num_heads=" +
           Str(attrs.q_num_heads) + ", kv_num_heads=" + Str(attrs.kv_num_heads));
    p->q_heads = attrs.q_num_heads;
    p->kv_heads = attrs.kv_num_heads;
    p->q_len = q.shape[1];
    k_seq = k.shape[1];
    v_seq = v.shape[1];
    if (q.shape[2] % p->q_heads != 0)
      Fail("input 'Q' has hidden size " + Str(q.shape[2]) + "; expected a multiple of q_num_heads=" +
           Str(p->q_heads));
    if (k.shape[2] % p->kv_heads != 0 || v.shape[2] % p->kv_heads != 0)
      Fail("inputs 'K' " + ShapeString(k.shape) + " and 'V' " + ShapeString(v.shape) +
           ": expected hidden sizes that are multiples of kv_num_heads=" + Str(p->kv_heads));
    p->head_dim = q.shape[2] / p->q_heads;
    k_dim = k.shape[2] / p->kv_heads;
    p->v_head_dim = v.shape[2] / p->kv_heads;
  }
  if (k.shape[0] != p->batch || v.shape[0] != p->batch)
    Fail("batch sizes differ: 'Q' " + ShapeString(q.shape) + ", 'K' " + ShapeString(k.shape) + ", 'V' " +
         ShapeString(v.shape));
  if (k_dim != p->head_dim)
    Fail("input 'K' has head size " + Str(k_dim) + " (shape " + ShapeString(k.shape) +
         "); expected the query head size " + Str(p->head_dim));
  if (k_seq != v_seq)
    Fail("inputs 'K' " + ShapeString(k.shape) + " and 'V' " + ShapeString(v.shape) +
         " have different sequence lengths; expected equal");
  if (p->q_heads <= 0 || p->kv_heads <= 0 || p->q_heads % p->kv_heads != 0)
    Fail("query heads (" + Str(p->q_heads) + ") must be a positive multiple of key/value heads (" +
         Str(p->kv_heads) + ")");
  if (p->batch <= 0 || p->q_len <= 0 || p->head_dim <= 0 || p->v_head_dim <= 0)
    Fail("empty input: 'Q' " + ShapeString(q.shape) + ", 'V' " + ShapeString(v.shape) +
         "; expected non-zero batch, sequence and head sizes");
  return k_seq;
}

// Past key/value: 4-D [B,Hkv,P,D] / [B,Hkv,P,Dv], concatenated before the new keys.
int64_t ParsePast(const Inputs& in, const AttentionProblem& p) {
  const InputDesc& past_k = in[Index(In::past_key)];
  const InputDesc& past_v = in[Index(In::past_value)];
  if (past_k.present != past_v.present) Fail("inputs 'past_key' and 'past_value' must be given together");
  if (!past_k.present) return 0;
  ExpectRank(past_k, In::past_key, 4, "[B,Hkv,P,D]");
  ExpectRank(past_v, In::past_value, 4, "[B,Hkv,P,Dv]");
  const std::vector<int64_t> want_k{p.batch, p.kv_heads, past_k.shape[2], p.head_dim};
  const std::vector<int64_t> want_v{p.batch, p.kv_heads, past_k.shape[2], p.v_head_dim};
  if (past_k.shape != want_k)
    Fail("input 'past_key' has shape " + ShapeString(past_k.shape) + "; expected " + ShapeString(want_k));
  if (past_v.shape != want_v)
    Fail("input 'past_value' has shape " + ShapeString(past_v.shape) + "; expected " + ShapeString(want_v));
  if (in[Index(In::nonpad_kv_seqlen)].present)
    Fail("input 'nonpad_kv_seqlen' cannot be combined with 'past_key'/'past_value'");
  return past_k.shape[2];
}

// A [B,H,S,D] view over a 4-D [B,H,S,D] or 3-D [B,S,H*D] tensor.
void SetView(TensorView* view, const void* data, ElemType et, bool is4d, int64_t heads, int64_t seq, int64_t dim) {
  view->data = data;
  view->type = et;
  if (is4d) {
    view->stride[0] = heads * seq * dim;
    view->stride[1] = seq * dim;
    view->stride[2] = dim;
  } else {
    view->stride[0] = seq * heads * dim;
    view->stride[1] = dim;
    view->stride[2] = heads * dim;
  }
  view->stride[3] = 1;
}

// attn_mask broadcasts (numpy rules, right-aligned) to [B,Hq,Sq,mask_len] with mask_len <= Skv.
void ParseMask(const InputDesc& mask, ElemType et, AttentionProblem* p) {
  const size_t mrank = mask.shape.size();
  const std::vector<int64_t> full{p->batch, p->q_heads, p->q_len, p->kv_len};
  if (mrank < 1 || mrank > 4)
    Fail("input 'attn_mask' has shape " + ShapeString(mask.shape) + "; expected rank 1 to 4 broadcastable to " +
         ShapeString(full));
  const int64_t mask_len = mask.shape[mrank - 1];
  if (mask_len > p->kv_len || mask_len <= 0)
    Fail("input 'attn_mask' has shape " + ShapeString(mask.shape) + "; its last dimension must be in [1, " +
         Str(p->kv_len) + "] (total key length), broadcastable to " + ShapeString(full));
  int64_t dims[4] = {1, 1, 1, mask_len};
  for (size_t i = 0; i + 1 < mrank; ++i) dims[4 - mrank + i] = mask.shape[i];
  p->mask.stride[3] = 1;
  int64_t stride = mask_len;
  for (int axis = 2; axis >= 0; --axis) {
    if (dims[axis] != 1 && dims[axis] != full[axis])
      Fail("input 'attn_mask' has shape " + ShapeString(mask.shape) + "; it does not broadcast to " +
           ShapeString(full));
    p->mask.stride[axis] = dims[axis] == 1 ? 0 : stride;
    stride *= dims[axis];
  }
  p->mask.data = mask.data;
  p->mask.mask_len = mask_len;
  p->mask.kind = mask.type == DataType::kBool ? MaskKind::kBool : MaskKind::kAdditive;
  p->mask.type = et;
}

void ParseNonpad(const InputDesc& nonpad, AttentionProblem* p) {
  if (!nonpad.present) return;
  if (nonpad.shape != std::vector<int64_t>{p->batch})
    Fail("input 'nonpad_kv_seqlen' has shape " + ShapeString(nonpad.shape) + "; expected [" + Str(p->batch) + "]");
  p->nonpad_kv_seqlen = static_cast<const int64_t*>(nonpad.data);
}

void SetScalars(const OpAttributes& attrs, ElemType et, AttentionProblem* p) {
  p->scale = attrs.has_scale ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(p->head_dim));
  p->softcap = attrs.softcap;
  p->causal = attrs.is_causal != 0;
  p->left_window = attrs.left_window;
  p->right_window = attrs.right_window;
  const std::string& prec =
      attrs.precision.empty() ? std::string(et == ElemType::kFloat32 ? "float" : "half") : attrs.precision;
  p->precision = prec == "float" ? Precision::kFloat : prec == "paper" ? Precision::kPaper : Precision::kHalf;
  // fp32 models that ask for half/paper emulate an fp16 pipeline.
  p->half_type = et == ElemType::kBFloat16 ? ElemType::kBFloat16 : ElemType::kFloat16;
  p->alpha = attrs.has_alpha ? attrs.alpha : DefaultAlpha(p->half_type, p->precision);
  p->block_q = attrs.block_q;
  p->block_kv = attrs.block_kv;
}

Dims ConcreteDims(const std::vector<int64_t>& shape) {
  Dims d;
  for (int64_t v : shape) d.push_back(Dim{v, ""});
  return d;
}

std::vector<int64_t> Values(const Dims& dims) {
  std::vector<int64_t> v;
  for (const Dim& d : dims) v.push_back(d.value);
  return v;
}

Dim DimAt(const Dims& dims, size_t i) { return i < dims.size() ? dims[i] : Dim{}; }
Dim Times(const Dim& a, int64_t f) { return a.value >= 0 ? Dim{a.value * f, ""} : Dim{}; }
Dim DivBy(const Dim& a, int64_t f) { return a.value >= 0 && f > 0 ? Dim{a.value / f, ""} : Dim{}; }
Dim Plus(const Dim& a, const Dim& b) { return a.value >= 0 && b.value >= 0 ? Dim{a.value + b.value, ""} : Dim{}; }

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << "]";
  return os.str();
}

float DefaultAlpha(ElemType half_type, Precision precision) {
  if (precision != Precision::kPaper) return 1.0f;
  return half_type == ElemType::kBFloat16 ? 0.9689939f : 0.9375f;
}

OutputDims InferOutputDims(const Dims& q, const Dims& k, const Dims& v, const Dims* past_key, int64_t q_num_heads,
                           int64_t kv_num_heads) {
  OutputDims out;
  const bool has_past = past_key != nullptr;
  // Without a past the total is the new length (a symbol stays a symbol); with a past of unknown
  // shape it is unknown.
  const Dim past_len = has_past && past_key->size() == 4 ? (*past_key)[2] : Dim{};
  const auto total = [&](const Dim& seq) { return has_past ? Plus(past_len, seq) : seq; };
  if (q.size() == 4 && k.size() == 4 && v.size() == 4) {
    out.y = {q[0], q[1], q[2], v[3]};
    out.present_key = {q[0], k[1], total(k[2]), k[3]};
    out.present_value = {q[0], v[1], total(k[2]), v[3]};
    out.known = true;
  } else if (q.size() == 3 && k.size() == 3 && v.size() == 3 && q_num_heads > 0 && kv_num_heads > 0) {
    out.y = {q[0], q[1], Times(DivBy(DimAt(v, 2), kv_num_heads), q_num_heads)};
    out.present_key = {q[0], Dim{kv_num_heads, ""}, total(k[1]), DivBy(k[2], kv_num_heads)};
    out.present_value = {q[0], Dim{kv_num_heads, ""}, total(k[1]), DivBy(v[2], kv_num_heads)};
    out.known = true;
  }
  return out;
}

ParsedProblem ParseProblem(const Inputs& in, const OpAttributes& attrs) {
  for (In i : {In::Q, In::K, In::V})
    if (!in[Index(i)].present) Fail(std::string("required input '") + Name(i) + "' is missing");
  const InputDesc& q = in[Index(In::Q)];
  const ElemType et = ElemTypeOf(q);
  CheckTypes(in);

  // Layouts: 4-D [B,H,S,D] or 3-D [B,S,H*D].
  const size_t rank = q.shape.size();
  if (rank != 3 && rank != 4)
    Fail("input 'Q' has shape " + ShapeString(q.shape) + "; expected rank 3 [B,S,H*D] or rank 4 [B,H,S,D]");
  const char* layout = rank == 4 ? "[B,H,S,D] like 'Q'" : "[B,S,H*D] like 'Q'";
  ExpectRank(in[Index(In::K)], In::K, rank, layout);
  ExpectRank(in[Index(In::V)], In::V, rank, layout);

  ParsedProblem parsed;
  parsed.rank = rank;
  AttentionProblem& p = parsed.problem;
  parsed.new_kv_len = ParseHeads(in, attrs, rank, &p);
  p.past_len = ParsePast(in, p);
  p.kv_len = p.past_len + parsed.new_kv_len;
  if (p.kv_len <= 0)
    Fail("empty key sequence: 'K' " + ShapeString(in[Index(In::K)].shape) + "; expected at least one key");

  const Dims past_dims = ConcreteDims(in[Index(In::past_key)].shape);
  const OutputDims out = InferOutputDims(ConcreteDims(q.shape), ConcreteDims(in[Index(In::K)].shape),
                                         ConcreteDims(in[Index(In::V)].shape),
                                         in[Index(In::past_key)].present ? &past_dims : nullptr, p.q_heads, p.kv_heads);
  parsed.y_shape = Values(out.y);
  parsed.present_key_shape = Values(out.present_key);
  parsed.present_value_shape = Values(out.present_value);

  parsed.kv_from_present = in[Index(In::past_key)].present;
  SetView(&p.q, q.data, et, rank == 4, p.q_heads, p.q_len, p.head_dim);
  SetView(&p.k, in[Index(In::K)].data, et, rank == 4, p.kv_heads, p.kv_len, p.head_dim);
  SetView(&p.v, in[Index(In::V)].data, et, rank == 4, p.kv_heads, p.kv_len, p.v_head_dim);
  p.y_stride[0] = rank == 4 ? p.q_heads * p.q_len * p.v_head_dim : p.q_len * p.q_heads * p.v_head_dim;
  p.y_stride[1] = rank == 4 ? p.q_len * p.v_head_dim : p.v_head_dim;
  p.y_stride[2] = rank == 4 ? p.v_head_dim : p.q_heads * p.v_head_dim;
  p.y_stride[3] = 1;

  if (in[Index(In::attn_mask)].present) ParseMask(in[Index(In::attn_mask)], et, &p);
  ParseNonpad(in[Index(In::nonpad_kv_seqlen)], &p);
  SetScalars(attrs, et, &p);
  return parsed;
}

void BindPresent(ParsedProblem* parsed, const void* present_key, const void* present_value) {
  AttentionProblem& p = parsed->problem;
  SetView(&p.k, present_key, p.q.type, true, p.kv_heads, p.kv_len, p.head_dim);
  SetView(&p.v, present_value, p.q.type, true, p.kv_heads, p.kv_len, p.v_head_dim);
}

void CheckHostData(const Inputs& in, ParsedProblem* parsed) {
  AttentionProblem& p = parsed->problem;
  if (p.mask.kind == MaskKind::kAdditive) {
    // +inf or NaN in an additive mask has no meaning: reject it (-inf masks a key).
    const std::vector<int64_t>& shape = in[Index(In::attn_mask)].shape;
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    for (int64_t i = 0; i < count; ++i) {
      float value;
      if (p.mask.type == ElemType::kFloat32) {
        value = static_cast<const float*>(p.mask.data)[i];
      } else {
        const uint16_t bits = static_cast<const uint16_t*>(p.mask.data)[i];
        value = p.mask.type == ElemType::kFloat16 ? HalfToFloat(bits) : BFloat16ToFloat(bits);
      }
      if (std::isnan(value) || value == INFINITY)
        Fail("input 'attn_mask' holds " + std::string(std::isnan(value) ? "NaN" : "+inf") + " at flat index " +
             Str(i) + "; expected finite values or -inf");
    }
  }
  // Per-batch frontier and padding (ONNX: offset = past length, or nonpad - Sq for a static cache).
  p.query_offset.assign(static_cast<size_t>(p.batch), p.past_len);
  p.valid_kv_len.assign(static_cast<size_t>(p.batch), p.kv_len);
  if (p.nonpad_kv_seqlen == nullptr) return;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t len = p.nonpad_kv_seqlen[b];
    if (len < 0 || len > p.kv_len)
      Fail("input 'nonpad_kv_seqlen' holds " + Str(len) + " for batch " + Str(b) + "; expected a value in [0, " +
           Str(p.kv_len) + "]");
    p.valid_kv_len[static_cast<size_t>(b)] = len;
    p.query_offset[static_cast<size_t>(b)] = len - p.q_len;
  }
}

std::string CheckAttributes(const OpAttributes& a) {
  if (a.is_causal != 0 && a.is_causal != 1) return "attribute is_causal must be 0 or 1, got " + Str(a.is_causal);
  if (a.has_scale && !std::isfinite(a.scale)) return "attribute scale must be finite";
  if (a.has_q_num_heads && a.q_num_heads <= 0)
    return "attribute q_num_heads must be positive, got " + Str(a.q_num_heads);
  if (a.has_kv_num_heads && a.kv_num_heads <= 0)
    return "attribute kv_num_heads must be positive, got " + Str(a.kv_num_heads);
  if (!(a.softcap >= 0.0f) || !std::isfinite(a.softcap)) return "attribute softcap must be finite and >= 0";
  if (a.left_window < -1 || a.right_window < -1)
    return "attributes left_window_size/right_window_size must be -1 or >= 0";
  if (!a.precision.empty() && a.precision != "half" && a.precision != "paper" && a.precision != "float")
    return "attribute precision is '" + a.precision + "'; expected 'half', 'paper' or 'float'";
  // Half and float precision recover the shift directly, so every alpha up to 1 is exact there;
  // paper mode's recovery divides by 1 - alpha.
  if (a.has_alpha && !(a.alpha >= 0.0f && a.alpha <= 1.0f))
    return "attribute alpha must be in [0, 1], got " + std::to_string(a.alpha);
  if (a.has_alpha && a.alpha == 1.0f && a.precision == "paper")
    return "attribute alpha=1 needs precision 'half' or 'float' (paper mode recovers the shift as "
           "alpha/(1-alpha) times the residual mean); got precision 'paper'";
  if (a.block_q < 1 || a.block_q > 4096 || a.block_kv < 1 || a.block_kv > 4096)
    return "attributes block_q/block_kv must be in [1, 4096]";
  return {};
}

}  // namespace pasa

// onnxruntime binding of ai.pasa::PasaAttention (version 1): reads attributes, validates inputs,
// maps ONNX Attention's layouts onto the core's strided views, and infers output shapes.
// Every error is a status whose message names the node, the input and what was expected.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "attention_core.h"
#include "half_types.h"

namespace {

constexpr const char* kDomain = "ai.pasa";
constexpr const char* kOpName = "PasaAttention";
constexpr size_t kNumInputs = 7;
constexpr size_t kNumOutputs = 4;
const char* const kInputNames[kNumInputs] = {"Q", "K", "V", "attn_mask", "past_key", "past_value",
                                            "nonpad_kv_seqlen"};

// Thrown inside the kernel; turned into an INVALID_ARGUMENT status at the API boundary.
struct BadInput {
  std::string message;
};

OrtStatusPtr MakeStatus(OrtErrorCode code, const std::string& message) {
  return Ort::GetApi().CreateStatus(code, message.c_str());
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << "]";
  return os.str();
}

const char* TypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    default: return "an unsupported type";
  }
}

size_t ElemSize(pasa::ElemType t) { return t == pasa::ElemType::kFloat32 ? 4 : 2; }

// Optional attributes: absent ones keep their defaults.
template <typename T>
bool ReadAttr(const OrtKernelInfo* info, const char* name, T* out);

template <>
bool ReadAttr<int64_t>(const OrtKernelInfo* info, const char* name, int64_t* out) {
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, out);
  if (st) Ort::GetApi().ReleaseStatus(st);
  return st == nullptr;
}

template <>
bool ReadAttr<float>(const OrtKernelInfo* info, const char* name, float* out) {
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_float(info, name, out);
  if (st) Ort::GetApi().ReleaseStatus(st);
  return st == nullptr;
}

template <>
bool ReadAttr<std::string>(const OrtKernelInfo* info, const char* name, std::string* out) {
  size_t size = 0;
  OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (st) {
    Ort::GetApi().ReleaseStatus(st);
    return false;
  }
  std::string value(size, '\0');
  st = Ort::GetApi().KernelInfoGetAttribute_string(info, name, value.data(), &size);
  if (st) {
    Ort::GetApi().ReleaseStatus(st);
    return false;
  }
  value.resize(std::strlen(value.c_str()));
  *out = value;
  return true;
}

struct Attributes {
  int64_t is_causal = 0;
  bool has_scale = false;
  float scale = 0.0f;
  int64_t q_num_heads = 0;
  int64_t kv_num_heads = 0;
  float softcap = 0.0f;
  int64_t left_window = -1;
  int64_t right_window = -1;
  std::string precision;  // empty: the element type's default
  bool has_alpha = false;
  float alpha = 0.0f;
  int64_t block_q = 64;
  int64_t block_kv = 128;
};

struct TensorArg {
  bool present = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

class PasaAttentionKernel {
 public:
  PasaAttentionKernel(Attributes attrs, std::string node_name)
      : attrs_(std::move(attrs)), node_(std::move(node_name)) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Compute(context);
      return nullptr;
    } catch (const BadInput& e) {
      return MakeStatus(ORT_INVALID_ARGUMENT, Prefix() + e.message);
    } catch (const Ort::Exception& e) {
      return MakeStatus(ORT_FAIL, Prefix() + e.what());
    } catch (const std::bad_alloc&) {
      return MakeStatus(ORT_FAIL, Prefix() + "out of memory");
    } catch (const std::exception& e) {
      return MakeStatus(ORT_FAIL, Prefix() + e.what());
    }
  }

 private:
  std::string Prefix() const { return std::string(kOpName) + " node '" + node_ + "': "; }

  [[noreturn]] static void Fail(const std::string& message) { throw BadInput{message}; }

  static TensorArg Input(Ort::KernelContext& ctx, size_t index) {
    TensorArg arg;
    if (index >= ctx.GetInputCount()) return arg;
    Ort::ConstValue value = ctx.GetInput(index);
    if (static_cast<const OrtValue*>(value) == nullptr) return arg;
    if (!value.IsTensor()) Fail(std::string("input '") + kInputNames[index] + "' must be a tensor");
    auto info = value.GetTensorTypeAndShapeInfo();
    arg.present = true;
    arg.type = info.GetElementType();
    arg.shape = info.GetShape();
    arg.data = value.GetTensorRawData();
    return arg;
  }

  static void ExpectRank(const TensorArg& t, size_t index, size_t rank, const char* layout) {
    if (t.shape.size() != rank)
      Fail(std::string("input '") + kInputNames[index] + "' has shape " + ShapeString(t.shape) +
           "; expected rank " + std::to_string(rank) + " " + layout);
  }

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    TensorArg in[kNumInputs];
    for (size_t i = 0; i < kNumInputs; ++i) in[i] = Input(ctx, i);
    const TensorArg& q = in[0];
    const TensorArg& k = in[1];
    const TensorArg& v = in[2];
    const TensorArg& mask = in[3];
    const TensorArg& past_k = in[4];
    const TensorArg& past_v = in[5];
    const TensorArg& nonpad = in[6];
    for (size_t i = 0; i < 3; ++i)
      if (!in[i].present) Fail(std::string("required input '") + kInputNames[i] + "' is missing");

    // Element types.
    pasa::ElemType et;
    switch (q.type) {
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: et = pasa::ElemType::kFloat32; break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: et = pasa::ElemType::kFloat16; break;
      case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: et = pasa::ElemType::kBFloat16; break;
      default:
        Fail(std::string("input 'Q' has element type ") + TypeName(q.type) +
             "; expected float16, bfloat16 or float32");
    }
    for (size_t i : {1, 2, 4, 5})
      if (in[i].present && in[i].type != q.type)
        Fail(std::string("input '") + kInputNames[i] + "' has element type " + TypeName(in[i].type) +
             "; expected " + TypeName(q.type) + " like 'Q'");
    if (mask.present && mask.type != q.type && mask.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL)
      Fail(std::string("input 'attn_mask' has element type ") + TypeName(mask.type) + "; expected bool or " +
           TypeName(q.type) + " like 'Q'");
    if (nonpad.present && nonpad.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
      Fail(std::string("input 'nonpad_kv_seqlen' has element type ") + TypeName(nonpad.type) +
           "; expected int64");

    // Layouts: 4-D [B,H,S,D] or 3-D [B,S,H*D].
    const size_t rank = q.shape.size();
    if (rank != 3 && rank != 4)
      Fail("input 'Q' has shape " + ShapeString(q.shape) + "; expected rank 3 [B,S,H*D] or rank 4 [B,H,S,D]");
    const char* layout = rank == 4 ? "[B,H,S,D] like 'Q'" : "[B,S,H*D] like 'Q'";
    ExpectRank(k, 1, rank, layout);
    ExpectRank(v, 2, rank, layout);

    pasa::AttentionProblem p;
    p.batch = q.shape[0];
    int64_t k_seq, v_seq, k_dim;
    if (rank == 4) {
      p.q_heads = q.shape[1];
      p.q_len = q.shape[2];
      p.head_dim = q.shape[3];
      p.kv_heads = k.shape[1];
      k_seq = k.shape[2];
      k_dim = k.shape[3];
      v_seq = v.shape[2];
      p.v_head_dim = v.shape[3];
      if (v.shape[1] != k.shape[1])
        Fail("input 'V' has " + std::to_string(v.shape[1]) + " heads (shape " + ShapeString(v.shape) +
             "); expected " + std::to_string(k.shape[1]) + " like 'K'");
      if (attrs_.q_num_heads > 0 && attrs_.q_num_heads != p.q_heads)
        Fail("attribute q_num_heads=" + std::to_string(attrs_.q_num_heads) + " contradicts 'Q' shape " +
             ShapeString(q.shape));
      if (attrs_.kv_num_heads > 0 && attrs_.kv_num_heads != p.kv_heads)
        Fail("attribute kv_num_heads=" + std::to_string(attrs_.kv_num_heads) + " contradicts 'K' shape " +
             ShapeString(k.shape));
    } else {
      if (attrs_.q_num_heads <= 0 || attrs_.kv_num_heads <= 0)
        Fail("3-D inputs need attributes q_num_heads and kv_num_heads (positive); got q_num_heads=" +
             std::to_string(attrs_.q_num_heads) + ", kv_num_heads=" + std::to_string(attrs_.kv_num_heads));
      p.q_heads = attrs_.q_num_heads;
      p.kv_heads = attrs_.kv_num_heads;
      p.q_len = q.shape[1];
      k_seq = k.shape[1];
      v_seq = v.shape[1];
      if (q.shape[2] % p.q_heads != 0)
        Fail("input 'Q' has hidden size " + std::to_string(q.shape[2]) + "; expected a multiple of q_num_heads=" +
             std::to_string(p.q_heads));
      if (k.shape[2] % p.kv_heads != 0 || v.shape[2] % p.kv_heads != 0)
        Fail("inputs 'K' " + ShapeString(k.shape) + " and 'V' " + ShapeString(v.shape) +
             ": expected hidden sizes that are multiples of kv_num_heads=" + std::to_string(p.kv_heads));
      p.head_dim = q.shape[2] / p.q_heads;
      k_dim = k.shape[2] / p.kv_heads;
      p.v_head_dim = v.shape[2] / p.kv_heads;
    }
    if (k.shape[0] != p.batch || v.shape[0] != p.batch)
      Fail("batch sizes differ: 'Q' " + ShapeString(q.shape) + ", 'K' " + ShapeString(k.shape) + ", 'V' " +
           ShapeString(v.shape));
    if (k_dim != p.head_dim)
      Fail("input 'K' has head size " + std::to_string(k_dim) + " (shape " + ShapeString(k.shape) +
           "); expected the query head size " + std::to_string(p.head_dim));
    if (k_seq != v_seq)
      Fail("inputs 'K' " + ShapeString(k.shape) + " and 'V' " + ShapeString(v.shape) +
           " have different sequence lengths; expected equal");
    if (p.q_heads <= 0 || p.kv_heads <= 0 || p.q_heads % p.kv_heads != 0)
      Fail("query heads (" + std::to_string(p.q_heads) + ") must be a positive multiple of key/value heads (" +
           std::to_string(p.kv_heads) + ")");
    if (p.batch <= 0 || p.q_len <= 0 || p.head_dim <= 0 || p.v_head_dim <= 0)
      Fail("empty input: 'Q' " + ShapeString(q.shape) + ", 'V' " + ShapeString(v.shape) +
           "; expected non-zero batch, sequence and head sizes");

    // Past key/value: 4-D [B,Hkv,P,D] / [B,Hkv,P,Dv], concatenated before the new keys.
    if (past_k.present != past_v.present)
      Fail("inputs 'past_key' and 'past_value' must be given together");
    int64_t past_len = 0;
    if (past_k.present) {
      ExpectRank(past_k, 4, 4, "[B,Hkv,P,D]");
      ExpectRank(past_v, 5, 4, "[B,Hkv,P,Dv]");
      const std::vector<int64_t> want_k{p.batch, p.kv_heads, past_k.shape[2], p.head_dim};
      const std::vector<int64_t> want_v{p.batch, p.kv_heads, past_k.shape[2], p.v_head_dim};
      if (past_k.shape != want_k) Fail("input 'past_key' has shape " + ShapeString(past_k.shape) + "; expected " + ShapeString(want_k));
      if (past_v.shape != want_v) Fail("input 'past_value' has shape " + ShapeString(past_v.shape) + "; expected " + ShapeString(want_v));
      past_len = past_k.shape[2];
      if (nonpad.present) Fail("input 'nonpad_kv_seqlen' cannot be combined with 'past_key'/'past_value'");
    }
    p.kv_len = past_len + k_seq;
    if (p.kv_len <= 0) Fail("empty key sequence: 'K' " + ShapeString(k.shape) + "; expected at least one key");

    // Outputs.
    const size_t n_out = ctx.GetOutputCount();
    std::vector<int64_t> y_shape = rank == 4 ? std::vector<int64_t>{p.batch, p.q_heads, p.q_len, p.v_head_dim}
                                             : std::vector<int64_t>{p.batch, p.q_len, p.q_heads * p.v_head_dim};
    void* y = ctx.GetOutput(0, y_shape).GetTensorMutableRawData();
    const std::vector<int64_t> pk_shape{p.batch, p.kv_heads, p.kv_len, p.head_dim};
    const std::vector<int64_t> pv_shape{p.batch, p.kv_heads, p.kv_len, p.v_head_dim};
    void* present_k = n_out > 1 ? OutputData(ctx, 1, pk_shape) : nullptr;
    void* present_v = n_out > 2 ? OutputData(ctx, 2, pv_shape) : nullptr;

    const size_t es = ElemSize(et);
    std::vector<unsigned char> scratch_k, scratch_v;
    if (past_k.present && present_k == nullptr) {
      scratch_k.resize(static_cast<size_t>(p.batch * p.kv_heads * p.kv_len * p.head_dim) * es);
      present_k = scratch_k.data();
    }
    if (past_v.present && present_v == nullptr) {
      scratch_v.resize(static_cast<size_t>(p.batch * p.kv_heads * p.kv_len * p.v_head_dim) * es);
      present_v = scratch_v.data();
    }
    const bool k_from_present = past_k.present;
    if (present_k) Concat(past_k, k, rank, p.batch, p.kv_heads, past_len, k_seq, p.head_dim, es, present_k);
    if (present_v) Concat(past_v, v, rank, p.batch, p.kv_heads, past_len, k_seq, p.v_head_dim, es, present_v);

    // Strided views over [B,H,S,D].
    auto set_view = [&](pasa::TensorView* view, const void* data, bool is4d, int64_t heads, int64_t seq, int64_t dim) {
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
    };
    set_view(&p.q, q.data, rank == 4, p.q_heads, p.q_len, p.head_dim);
    if (k_from_present) {
      set_view(&p.k, present_k, true, p.kv_heads, p.kv_len, p.head_dim);
      set_view(&p.v, present_v, true, p.kv_heads, p.kv_len, p.v_head_dim);
    } else {
      set_view(&p.k, k.data, rank == 4, p.kv_heads, p.kv_len, p.head_dim);
      set_view(&p.v, v.data, rank == 4, p.kv_heads, p.kv_len, p.v_head_dim);
    }
    p.y = y;
    if (rank == 4) {
      p.y_stride[0] = p.q_heads * p.q_len * p.v_head_dim;
      p.y_stride[1] = p.q_len * p.v_head_dim;
      p.y_stride[2] = p.v_head_dim;
    } else {
      p.y_stride[0] = p.q_len * p.q_heads * p.v_head_dim;
      p.y_stride[1] = p.v_head_dim;
      p.y_stride[2] = p.q_heads * p.v_head_dim;
    }
    p.y_stride[3] = 1;

    if (mask.present) SetMask(mask, et, &p);

    // Per-batch frontier and padding (ONNX: offset = past length, or nonpad - Sq for a static cache).
    p.query_offset.assign(static_cast<size_t>(p.batch), past_len);
    p.valid_kv_len.assign(static_cast<size_t>(p.batch), p.kv_len);
    if (nonpad.present) {
      if (nonpad.shape != std::vector<int64_t>{p.batch})
        Fail("input 'nonpad_kv_seqlen' has shape " + ShapeString(nonpad.shape) + "; expected [" +
             std::to_string(p.batch) + "]");
      const int64_t* lens = static_cast<const int64_t*>(nonpad.data);
      for (int64_t b = 0; b < p.batch; ++b) {
        if (lens[b] < 0 || lens[b] > p.kv_len)
          Fail("input 'nonpad_kv_seqlen' holds " + std::to_string(lens[b]) + " for batch " + std::to_string(b) +
               "; expected a value in [0, " + std::to_string(p.kv_len) + "]");
        p.valid_kv_len[b] = lens[b];
        p.query_offset[b] = lens[b] - p.q_len;
      }
    }

    p.scale = attrs_.has_scale ? attrs_.scale : 1.0f / std::sqrt(static_cast<float>(p.head_dim));
    p.softcap = attrs_.softcap;
    p.causal = attrs_.is_causal != 0;
    p.left_window = attrs_.left_window;
    p.right_window = attrs_.right_window;
    const std::string& prec = attrs_.precision.empty()
                                  ? std::string(et == pasa::ElemType::kFloat32 ? "float" : "half")
                                  : attrs_.precision;
    p.precision = prec == "float" ? pasa::Precision::kFloat
                  : prec == "paper" ? pasa::Precision::kPaper
                                    : pasa::Precision::kHalf;
    // fp32 models that ask for half/paper emulate an fp16 pipeline.
    p.half_type = et == pasa::ElemType::kBFloat16 ? pasa::ElemType::kBFloat16 : pasa::ElemType::kFloat16;
    p.alpha = attrs_.has_alpha ? attrs_.alpha : pasa::DefaultAlpha(p.half_type, p.precision);
    p.block_q = attrs_.block_q;
    p.block_kv = attrs_.block_kv;

    pasa::PreparedProblem pp(p);

    // Stages run one after another; the tasks of a stage go to the intra-op pool, which hands
    // them out one at a time (longest first: the core orders them), so causal tiles balance.
    for (int64_t stage = 0; stage < pp.NumStages(); ++stage) {
      StageRef ref{&pp, stage};
      const size_t tasks = static_cast<size_t>(pp.NumTasks(stage));
      OrtStatus* st = Ort::GetApi().KernelContext_ParallelFor(context, &RunTask, tasks, 0, &ref);
      if (st != nullptr) {  // no thread pool available: run inline
        Ort::GetApi().ReleaseStatus(st);
        for (size_t i = 0; i < tasks; ++i) RunTask(&ref, i);
      }
    }
    // Inputs are checked while they are converted (no pass of their own); a non-finite value in
    // a row that was read makes the output meaningless, so the node fails and names it.
    if (pp.SawNonFiniteInput()) {
      const std::string problem = pasa::ValidateProblem(pp);
      Fail((problem.empty() ? std::string("an input holds a non-finite value") : problem) +
           "; expected finite values");
    }
  }

  struct StageRef {
    pasa::PreparedProblem* pp;
    int64_t stage;
  };

  static void RunTask(void* data, size_t task) {
    const StageRef& ref = *static_cast<const StageRef*>(data);
    ref.pp->RunTask(ref.stage, static_cast<int64_t>(task));
  }

  static void* OutputData(Ort::KernelContext& ctx, size_t index, const std::vector<int64_t>& shape) {
    Ort::UnownedValue out = ctx.GetOutput(index, shape);
    if (static_cast<OrtValue*>(out) == nullptr) return nullptr;
    return out.GetTensorMutableRawData();
  }

  // present = concat(past, new) along the sequence axis, written as [B,Hkv,P+S,dim].
  static void Concat(const TensorArg& past, const TensorArg& cur, size_t rank, int64_t batch, int64_t heads,
                     int64_t past_len, int64_t seq, int64_t dim, size_t es, void* out) {
    auto* dst = static_cast<unsigned char*>(out);
    const auto* src_past = static_cast<const unsigned char*>(past.data);
    const auto* src_cur = static_cast<const unsigned char*>(cur.data);
    const int64_t total = past_len + seq;
    const size_t row = static_cast<size_t>(dim) * es;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h) {
        unsigned char* d = dst + static_cast<size_t>((b * heads + h) * total) * row;
        if (past_len > 0) std::memcpy(d, src_past + static_cast<size_t>((b * heads + h) * past_len) * row, past_len * row);
        for (int64_t s = 0; s < seq; ++s) {
          const int64_t src_row = rank == 4 ? (b * heads + h) * seq + s : (b * seq + s) * heads + h;
          std::memcpy(d + static_cast<size_t>(past_len + s) * row, src_cur + static_cast<size_t>(src_row) * row, row);
        }
      }
  }

  // attn_mask broadcasts (numpy rules, right-aligned) to [B,Hq,Sq,mask_len] with mask_len <= Skv.
  static void SetMask(const TensorArg& mask, pasa::ElemType et, pasa::AttentionProblem* p) {
    const size_t mrank = mask.shape.size();
    const std::vector<int64_t> full{p->batch, p->q_heads, p->q_len, p->kv_len};
    if (mrank < 1 || mrank > 4)
      Fail("input 'attn_mask' has shape " + ShapeString(mask.shape) + "; expected rank 1 to 4 broadcastable to " +
           ShapeString(full));
    const int64_t mask_len = mask.shape[mrank - 1];
    if (mask_len > p->kv_len || mask_len <= 0)
      Fail("input 'attn_mask' has shape " + ShapeString(mask.shape) + "; its last dimension must be in [1, " +
           std::to_string(p->kv_len) + "] (total key length), broadcastable to " + ShapeString(full));
    int64_t dims[4] = {1, 1, 1, mask_len};
    for (size_t i = 0; i + 1 < mrank; ++i) dims[4 - mrank + i] = mask.shape[i];
    int64_t stride = 1;
    p->mask.stride[3] = 1;
    stride = mask_len;
    for (int axis = 2; axis >= 0; --axis) {
      if (dims[axis] != 1 && dims[axis] != full[axis])
        Fail("input 'attn_mask' has shape " + ShapeString(mask.shape) + "; it does not broadcast to " +
             ShapeString(full));
      p->mask.stride[axis] = dims[axis] == 1 ? 0 : stride;
      stride *= dims[axis];
    }
    p->mask.data = mask.data;
    p->mask.mask_len = mask_len;
    if (mask.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL) {
      p->mask.kind = pasa::MaskKind::kBool;
      return;
    }
    p->mask.kind = pasa::MaskKind::kAdditive;
    p->mask.type = et;
    // +inf or NaN in an additive mask has no meaning: reject it (-inf masks a key).
    const int64_t count = stride;
    for (int64_t i = 0; i < count; ++i) {
      float value;
      if (et == pasa::ElemType::kFloat32) {
        value = static_cast<const float*>(mask.data)[i];
      } else {
        const uint16_t bits = static_cast<const uint16_t*>(mask.data)[i];
        value = et == pasa::ElemType::kFloat16 ? pasa::HalfToFloat(bits) : pasa::BFloat16ToFloat(bits);
      }
      if (std::isnan(value) || value == INFINITY)
        Fail("input 'attn_mask' holds " + std::string(std::isnan(value) ? "NaN" : "+inf") + " at flat index " +
             std::to_string(i) + "; expected finite values or -inf");
    }
  }

  Attributes attrs_;
  std::string node_;
};

std::string NodeName(const OrtKernelInfo* info) {
  size_t size = 0;
  OrtStatus* st = Ort::GetApi().KernelInfo_GetNodeName(info, nullptr, &size);
  if (st) {
    Ort::GetApi().ReleaseStatus(st);
    return "?";
  }
  std::string name(size, '\0');
  st = Ort::GetApi().KernelInfo_GetNodeName(info, name.data(), &size);
  if (st) {
    Ort::GetApi().ReleaseStatus(st);
    return "?";
  }
  name.resize(std::strlen(name.c_str()));
  return name;
}

// Shape inference (C API: the 1.21 C++ helper's symbolic dims are rejected by newer runtimes).
struct TypeShape {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
  std::vector<std::string> symbols;
  bool known = false;
};

TypeShape GetInputTypeShape(OrtShapeInferContext* ctx, size_t index) {
  const OrtApi& api = Ort::GetApi();
  TypeShape ts;
  size_t count = 0;
  if (OrtStatus* st = api.ShapeInferContext_GetInputCount(ctx, &count)) {
    api.ReleaseStatus(st);
    return ts;
  }
  if (index >= count) return ts;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api.ShapeInferContext_GetInputTypeShape(ctx, index, &info)) {
    api.ReleaseStatus(st);
    return ts;
  }
  if (info == nullptr) return ts;
  size_t n = 0;
  bool ok = api.GetTensorElementType(info, &ts.type) == nullptr;
  ok = ok && api.GetDimensionsCount(info, &n) == nullptr;
  if (ok) {
    ts.dims.resize(n);
    std::vector<const char*> syms(n, nullptr);
    ok = api.GetDimensions(info, ts.dims.data(), n) == nullptr &&
         api.GetSymbolicDimensions(info, syms.data(), n) == nullptr;
    for (size_t i = 0; i < n; ++i) ts.symbols.emplace_back(syms[i] ? syms[i] : "");
  }
  // The context owns `info` (onnxruntime 1.32 frees it itself: releasing it here double-frees).
  ts.known = ok;
  return ts;
}

int64_t ReadIntAttr(OrtShapeInferContext* ctx, const char* name, int64_t fallback) {
  const OrtApi& api = Ort::GetApi();
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* st = api.ShapeInferContext_GetAttribute(ctx, name, &attr)) {
    api.ReleaseStatus(st);
    return fallback;
  }
  if (attr == nullptr) return fallback;
  int64_t value = fallback;
  size_t out = 0;
  if (OrtStatus* st = api.ReadOpAttr(attr, ORT_OP_ATTR_INT, &value, sizeof value, &out)) {
    api.ReleaseStatus(st);
    return fallback;
  }
  return value;
}

struct Dim {
  int64_t value = -1;  // -1: unknown
  std::string symbol;
};

Dim DimOf(const TypeShape& ts, size_t i) {
  Dim d;
  if (!ts.known || i >= ts.dims.size()) return d;
  d.value = ts.dims[i];
  if (d.value < 0) d.symbol = ts.symbols[i];
  return d;
}

Dim Times(const Dim& a, int64_t f) { return a.value >= 0 ? Dim{a.value * f, ""} : Dim{}; }
Dim DivBy(const Dim& a, int64_t f) { return a.value >= 0 && f > 0 ? Dim{a.value / f, ""} : Dim{}; }
Dim Plus(const Dim& a, const Dim& b) { return a.value >= 0 && b.value >= 0 ? Dim{a.value + b.value, ""} : Dim{}; }

OrtStatusPtr SetOutput(OrtShapeInferContext* ctx, size_t index, ONNXTensorElementDataType type,
                       const std::vector<Dim>& dims) {
  const OrtApi& api = Ort::GetApi();
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api.CreateTensorTypeAndShapeInfo(&info)) return st;
  std::vector<int64_t> values;
  std::vector<const char*> symbols;
  for (const Dim& d : dims) {
    values.push_back(d.value);
    symbols.push_back(d.symbol.c_str());
  }
  OrtStatus* st = api.SetTensorElementType(info, type);
  if (!st) st = api.SetDimensions(info, values.data(), values.size());
  if (!st) st = api.SetSymbolicDimensions(info, symbols.data(), symbols.size());
  if (!st) st = api.ShapeInferContext_SetOutputTypeShape(ctx, index, info);
  api.ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

OrtStatusPtr ORT_API_CALL InferShapes(const OrtCustomOp*, OrtShapeInferContext* ctx) {
  const TypeShape q = GetInputTypeShape(ctx, 0);
  const TypeShape k = GetInputTypeShape(ctx, 1);
  const TypeShape v = GetInputTypeShape(ctx, 2);
  const TypeShape past_k = GetInputTypeShape(ctx, 4);
  if (!q.known || !k.known || !v.known) return nullptr;  // nothing to infer from
  const ONNXTensorElementDataType type = q.type;
  const int64_t hq = ReadIntAttr(ctx, "q_num_heads", 0);
  const int64_t hkv = ReadIntAttr(ctx, "kv_num_heads", 0);
  std::vector<Dim> y, pk, pv;
  Dim past_len = past_k.known && past_k.dims.size() == 4 ? DimOf(past_k, 2) : Dim{0, ""};
  if (q.dims.size() == 4 && k.dims.size() == 4 && v.dims.size() == 4) {
    y = {DimOf(q, 0), DimOf(q, 1), DimOf(q, 2), DimOf(v, 3)};
    Dim total = Plus(past_len, DimOf(k, 2));
    if (!past_k.known && DimOf(k, 2).value < 0) total = DimOf(k, 2);
    pk = {DimOf(q, 0), DimOf(k, 1), total, DimOf(k, 3)};
    pv = {DimOf(q, 0), DimOf(v, 1), total, DimOf(v, 3)};
  } else if (q.dims.size() == 3 && k.dims.size() == 3 && v.dims.size() == 3 && hq > 0 && hkv > 0) {
    y = {DimOf(q, 0), DimOf(q, 1), Times(DivBy(DimOf(v, 2), hkv), hq)};
    Dim total = Plus(past_len, DimOf(k, 1));
    if (!past_k.known && DimOf(k, 1).value < 0) total = DimOf(k, 1);
    pk = {DimOf(q, 0), Dim{hkv, ""}, total, DivBy(DimOf(k, 2), hkv)};
    pv = {DimOf(q, 0), Dim{hkv, ""}, total, DivBy(DimOf(v, 2), hkv)};
  } else {
    return nullptr;  // the kernel reports the rank error with the node's name
  }
  if (OrtStatus* st = SetOutput(ctx, 0, type, y)) return st;
  // present_key/present_value are optional: a node without them rejects the index, which is fine.
  if (OrtStatus* st = SetOutput(ctx, 1, type, pk)) Ort::GetApi().ReleaseStatus(st);
  if (OrtStatus* st = SetOutput(ctx, 2, type, pv)) Ort::GetApi().ReleaseStatus(st);
  return nullptr;
}

struct PasaAttentionOp : Ort::CustomOpBase<PasaAttentionOp, PasaAttentionKernel, true> {
  PasaAttentionOp() { OrtCustomOp::InferOutputShapeFn = &InferShapes; }

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    (void)api;
    const std::string node = NodeName(info);
    auto fail = [&](const std::string& message) {
      return MakeStatus(ORT_INVALID_ARGUMENT, std::string(kOpName) + " node '" + node + "': " + message);
    };
    Attributes a;
    ReadAttr(info, "is_causal", &a.is_causal);
    a.has_scale = ReadAttr(info, "scale", &a.scale);
    ReadAttr(info, "q_num_heads", &a.q_num_heads);
    ReadAttr(info, "kv_num_heads", &a.kv_num_heads);
    ReadAttr(info, "softcap", &a.softcap);
    ReadAttr(info, "left_window_size", &a.left_window);
    ReadAttr(info, "right_window_size", &a.right_window);
    ReadAttr(info, "precision", &a.precision);
    a.has_alpha = ReadAttr(info, "alpha", &a.alpha);
    ReadAttr(info, "block_q", &a.block_q);
    ReadAttr(info, "block_kv", &a.block_kv);
    if (a.is_causal != 0 && a.is_causal != 1) return fail("attribute is_causal must be 0 or 1, got " + std::to_string(a.is_causal));
    if (a.has_scale && !std::isfinite(a.scale)) return fail("attribute scale must be finite");
    if (!(a.softcap >= 0.0f) || !std::isfinite(a.softcap)) return fail("attribute softcap must be finite and >= 0");
    if (a.left_window < -1 || a.right_window < -1) return fail("attributes left_window_size/right_window_size must be -1 or >= 0");
    if (!a.precision.empty() && a.precision != "half" && a.precision != "paper" && a.precision != "float")
      return fail("attribute precision is '" + a.precision + "'; expected 'half', 'paper' or 'float'");
    if (a.has_alpha && !(a.alpha >= 0.0f && a.alpha < 1.0f)) return fail("attribute alpha must be in [0, 1), got " + std::to_string(a.alpha));
    if (a.block_q < 1 || a.block_q > 4096 || a.block_kv < 1 || a.block_kv > 4096)
      return fail("attributes block_q/block_kv must be in [1, 4096]");
    int64_t qk_mode = 0;
    ReadAttr(info, "qk_matmul_output_mode", &qk_mode);
    size_t n_out = 0;
    if (OrtStatus* st = Ort::GetApi().KernelInfo_GetOutputCount(info, &n_out)) {
      Ort::GetApi().ReleaseStatus(st);
      n_out = 0;
    }
    if (n_out > 3) {
      size_t size = 0;
      OrtStatus* st = Ort::GetApi().KernelInfo_GetOutputName(info, 3, nullptr, &size);
      if (st) Ort::GetApi().ReleaseStatus(st);
      if (!st && size > 1)
        return fail("output 'qk_matmul_output' is not supported (PASA never materialises the score matrix); "
                    "remove the node's 4th output");
    }
    if (n_out > kNumOutputs) return fail("too many outputs; expected at most Y, present_key, present_value");
    *kernel = std::make_unique<PasaAttentionKernel>(std::move(a), node).release();
    return nullptr;
  }

  const char* GetName() const { return kOpName; }
  size_t GetInputTypeCount() const { return kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 6 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index < 3 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return kNumOutputs; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index == 0 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
};

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
  if (!pasa::IsaError().empty()) return api->CreateStatus(ORT_FAIL, ("pasa-onnx: " + pasa::IsaError()).c_str());
  Ort::InitApi(api);
  // Registered ops and domains must outlive every session: keep them for the process.
  static PasaAttentionOp op;
  static OrtCustomOpDomain* domain = [] {
    OrtCustomOpDomain* d = nullptr;
    if (OrtStatus* st = Ort::GetApi().CreateCustomOpDomain(kDomain, &d)) {
      Ort::GetApi().ReleaseStatus(st);
      return static_cast<OrtCustomOpDomain*>(nullptr);
    }
    if (OrtStatus* st = Ort::GetApi().CustomOpDomain_Add(d, &op)) {
      Ort::GetApi().ReleaseStatus(st);
      return static_cast<OrtCustomOpDomain*>(nullptr);
    }
    return d;
  }();
  if (domain == nullptr) return api->CreateStatus(ORT_FAIL, "pasa-onnx: could not create the ai.pasa domain");
  return api->AddCustomOpDomain(options, domain);
}

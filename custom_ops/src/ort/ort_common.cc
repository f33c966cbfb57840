#include "ort/ort_common.h"

#include <cmath>
#include <cstring>

namespace pasa::ort {
namespace {

using contract::AttrType;

DataType DataTypeOf(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DataType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return DataType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return DataType::kBFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return DataType::kBool;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return DataType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED: return DataType::kUndefined;
    default: return DataType::kOther;
  }
}

const char* TypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    default: return "an unsupported type";
  }
}

bool Ok(OrtStatus* st) {
  if (st == nullptr) return true;
  Ort::GetApi().ReleaseStatus(st);
  return false;
}

// One attribute as the node holds it: which of the scalar kinds could be read.
struct AttrValue {
  bool is_int = false, is_float = false, is_string = false;
  int64_t i = 0;
  float f = 0.0f;
  std::string s;
  bool present() const { return is_int || is_float || is_string; }
};

AttrValue Probe(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  AttrValue a;
  a.is_int = Ok(api.KernelInfoGetAttribute_int64(info, name, &a.i));
  a.is_float = !a.is_int && Ok(api.KernelInfoGetAttribute_float(info, name, &a.f));
  size_t size = 0;
  if (!a.is_int && !a.is_float && Ok(api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) {
    std::string value(size, '\0');
    if (Ok(api.KernelInfoGetAttribute_string(info, name, value.data(), &size))) {
      if (!value.empty() && value.back() == '\0') value.pop_back();  // the API counts the terminator
      a.is_string = true;
      a.s = value;
    }
  }
  return a;
}

const char* KindName(const AttrValue& a) { return a.is_int ? "an INT" : a.is_float ? "a FLOAT" : "a STRING"; }

// The attribute as `type`, or an error naming it when it has another type.
std::string Expect(const char* name, const AttrValue& a, AttrType type) {
  const bool ok = (type == AttrType::kInt && a.is_int) || (type == AttrType::kFloat && a.is_float) ||
                  (type == AttrType::kString && a.is_string);
  if (ok || !a.present()) return {};
  const char* want = type == AttrType::kInt ? "an INT" : type == AttrType::kFloat ? "a FLOAT" : "a STRING";
  return std::string("attribute ") + name + " is " + KindName(a) + "; expected " + want;
}

}  // namespace

OrtStatusPtr MakeStatus(OrtErrorCode code, const std::string& message) {
  return Ort::GetApi().CreateStatus(code, message.c_str());
}

std::string NodePrefix(const std::string& node) { return std::string(contract::kOpName) + " node '" + node + "': "; }

std::string NodeName(const OrtKernelInfo* info) {
  size_t size = 0;
  if (!Ok(Ort::GetApi().KernelInfo_GetNodeName(info, nullptr, &size))) return "?";
  std::string name(size, '\0');
  if (!Ok(Ort::GetApi().KernelInfo_GetNodeName(info, name.data(), &size))) return "?";
  name.resize(std::strlen(name.c_str()));
  return name;
}

std::string ReadAttributes(const OrtKernelInfo* info, OpAttributes* attrs) {
  for (const contract::AttrSpec& spec : contract::kAttributes) {
    const std::string error = Expect(spec.name, Probe(info, spec.name), spec.type);
    if (!error.empty()) return error;
  }
  static_assert(contract::Declares("is_causal", AttrType::kInt) && contract::Declares("scale", AttrType::kFloat) &&
                    contract::Declares("q_num_heads", AttrType::kInt) &&
                    contract::Declares("kv_num_heads", AttrType::kInt) &&
                    contract::Declares("softcap", AttrType::kFloat) &&
                    contract::Declares("left_window_size", AttrType::kInt) &&
                    contract::Declares("right_window_size", AttrType::kInt) &&
                    contract::Declares("precision", AttrType::kString) &&
                    contract::Declares("alpha", AttrType::kFloat) && contract::Declares("block_q", AttrType::kInt) &&
                    contract::Declares("block_kv", AttrType::kInt),
                "attributes read here must be declared in pasa_onnx/op_contract.json");
  const auto get_int = [&](const char* name, int64_t* out) {
    const AttrValue a = Probe(info, name);
    if (a.is_int) *out = a.i;
    return a.is_int;
  };
  const auto get_float = [&](const char* name, float* out) {
    const AttrValue a = Probe(info, name);
    if (a.is_float) *out = a.f;
    return a.is_float;
  };
  OpAttributes& a = *attrs;
  get_int("is_causal", &a.is_causal);
  a.has_scale = get_float("scale", &a.scale);
  a.has_q_num_heads = get_int("q_num_heads", &a.q_num_heads);
  a.has_kv_num_heads = get_int("kv_num_heads", &a.kv_num_heads);
  get_float("softcap", &a.softcap);
  get_int("left_window_size", &a.left_window);
  get_int("right_window_size", &a.right_window);
  const AttrValue precision = Probe(info, "precision");
  if (precision.is_string) {
    if (std::strlen(precision.s.c_str()) != precision.s.size())
      return "attribute precision holds a NUL byte; expected 'half', 'paper' or 'float'";
    a.precision = precision.s;
    if (a.precision.empty()) return "attribute precision is ''; expected 'half', 'paper' or 'float'";
  }
  a.has_alpha = get_float("alpha", &a.alpha);
  get_int("block_q", &a.block_q);
  get_int("block_kv", &a.block_kv);
  return CheckAttributes(a);
}

std::string CheckOutputs(const OrtKernelInfo* info) {
  size_t n_out = 0;
  if (!Ok(Ort::GetApi().KernelInfo_GetOutputCount(info, &n_out))) n_out = 0;
  if (n_out > contract::kNumOutputs) {
    size_t size = 0;
    OrtStatus* st = Ort::GetApi().KernelInfo_GetOutputName(info, contract::kNumOutputs, nullptr, &size);
    const bool named = Ok(st) && size > 1;
    if (named)
      return "output 'qk_matmul_output' is not supported (PASA never materialises the score matrix); "
             "remove the node's 4th output";
  }
  if (n_out > contract::kNumOutputs + 1) return "too many outputs; expected at most Y, present_key, present_value";
  return {};
}

void ReadInputs(Ort::KernelContext& ctx, Inputs* in) {
  for (size_t index = 0; index < contract::kNumInputs; ++index) {
    InputDesc& arg = (*in)[index];
    arg = InputDesc{};
    if (index >= ctx.GetInputCount()) continue;
    Ort::ConstValue value = ctx.GetInput(index);
    if (static_cast<const OrtValue*>(value) == nullptr) continue;
    if (!value.IsTensor()) throw BadInput{std::string("input '") + contract::kInputNames[index] + "' must be a tensor"};
    auto info = value.GetTensorTypeAndShapeInfo();
    arg.present = true;
    arg.type = DataTypeOf(info.GetElementType());
    arg.type_name = TypeName(info.GetElementType());
    arg.shape = info.GetShape();
    arg.data = value.GetTensorRawData();
  }
}

void* OutputData(Ort::KernelContext& ctx, size_t index, const std::vector<int64_t>& shape) {
  if (index >= ctx.GetOutputCount()) return nullptr;
  Ort::UnownedValue out = ctx.GetOutput(index, shape);
  if (static_cast<OrtValue*>(out) == nullptr) return nullptr;
  return out.GetTensorMutableRawData();
}

}  // namespace pasa::ort

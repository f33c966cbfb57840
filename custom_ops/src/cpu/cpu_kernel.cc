#include "cpu/cpu_kernel.h"

#include <cstring>

#include "cpu/attention_cpu.h"
#include "cpu/geometry.h"
#include "cpu/isa/kernels.h"
#include "cpu/planner.h"

namespace pasa {
namespace {

using contract::In;
using contract::Index;

// present = concat(past, new) along the sequence axis, written as [B,Hkv,P+S,dim].
void Concat(const InputDesc& past, const InputDesc& cur, size_t rank, int64_t batch, int64_t heads,
            int64_t past_len, int64_t seq, int64_t dim, size_t es, void* out) {
  auto* dst = static_cast<unsigned char*>(out);
  const auto* src_past = static_cast<const unsigned char*>(past.data);
  const auto* src_cur = static_cast<const unsigned char*>(cur.data);
  const int64_t total = past_len + seq;
  const size_t row = static_cast<size_t>(dim) * es;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      unsigned char* d = dst + static_cast<size_t>((b * heads + h) * total) * row;
      if (past_len > 0)
        std::memcpy(d, src_past + static_cast<size_t>((b * heads + h) * past_len) * row, past_len * row);
      for (int64_t s = 0; s < seq; ++s) {
        const int64_t src_row = rank == 4 ? (b * heads + h) * seq + s : (b * seq + s) * heads + h;
        std::memcpy(d + static_cast<size_t>(past_len + s) * row, src_cur + static_cast<size_t>(src_row) * row, row);
      }
    }
}

// Writes the requested present outputs; with a past, K and V are then read from them (or from
// scratch copies when an output was not requested).
void ConcatPresent(const Inputs& in, ParsedProblem& parsed, const OutputBuffers& out,
                   std::vector<unsigned char>* scratch_k, std::vector<unsigned char>* scratch_v) {
  const AttentionProblem& p = parsed.problem;
  const size_t es = ElemBytes(p.q.type);
  void* present_k = out.present_key;
  void* present_v = out.present_value;
  if (parsed.kv_from_present && present_k == nullptr) {
    scratch_k->resize(static_cast<size_t>(p.batch * p.kv_heads * p.kv_len * p.head_dim) * es);
    present_k = scratch_k->data();
  }
  if (parsed.kv_from_present && present_v == nullptr) {
    scratch_v->resize(static_cast<size_t>(p.batch * p.kv_heads * p.kv_len * p.v_head_dim) * es);
    present_v = scratch_v->data();
  }
  if (present_k)
    Concat(in[Index(In::past_key)], in[Index(In::K)], parsed.rank, p.batch, p.kv_heads, p.past_len,
           parsed.new_kv_len, p.head_dim, es, present_k);
  if (present_v)
    Concat(in[Index(In::past_value)], in[Index(In::V)], parsed.rank, p.batch, p.kv_heads, p.past_len,
           parsed.new_kv_len, p.v_head_dim, es, present_v);
  if (parsed.kv_from_present) BindPresent(&parsed, present_k, present_v);
}

struct StageRef {
  PreparedProblem* pp;
  int64_t stage;
};

void RunStageTask(void* data, size_t task) {
  const StageRef& ref = *static_cast<const StageRef*>(data);
  ref.pp->RunTask(ref.stage, static_cast<int64_t>(task));
}

}  // namespace

CpuWorkspace::Lease CpuWorkspace::Acquire() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.empty()) return Lease(this, std::make_unique<AlignedVector<float>>());
  std::unique_ptr<AlignedVector<float>> buffer = std::move(free_.back());
  free_.pop_back();
  return Lease(this, std::move(buffer));
}

void CpuWorkspace::Return(std::unique_ptr<AlignedVector<float>> buffer) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.push_back(std::move(buffer));
}

void RunCpuAttention(const Inputs& in, ParsedProblem& parsed, const OutputBuffers& out, CpuWorkspace& workspace,
                     const ParallelFor& parallel_for) {
  AttentionProblem& p = parsed.problem;
  p.y = out.y;
  std::vector<unsigned char> scratch_k, scratch_v;
  ConcatPresent(in, parsed, out, &scratch_k, &scratch_v);
  CheckHostData(in, &parsed);

  const CpuPlan plan = MakeCpuPlan(p, ActiveKernels().pack_floats);
  CpuWorkspace::Lease cache = workspace.Acquire();
  PreparedProblem pp(p, plan, plan.cache_floats > 0 ? cache.Floats(static_cast<size_t>(plan.cache_floats)) : nullptr);
  // Stages run one after another; the tasks of a stage go to the pool, which hands them out one
  // at a time (longest first: the plan orders them), so causal tiles balance.
  for (int64_t stage = 0; stage < pp.NumStages(); ++stage) {
    StageRef ref{&pp, stage};
    parallel_for(static_cast<size_t>(pp.NumTasks(stage)), &RunStageTask, &ref);
  }
  // Inputs are checked while they are converted (no pass of their own); a non-finite value in
  // a row that was read makes the output meaningless, so the node fails and names it.
  if (pp.SawNonFiniteInput()) {
    const std::string problem = ValidateProblem(pp);
    throw BadInput{(problem.empty() ? std::string("an input holds a non-finite value") : problem) +
                   "; expected finite values"};
  }
  // Finite inputs whose scores leave the range of the precision mode: a clear error, never NaN.
  if (pp.SawOverflow()) {
    throw BadInput{p.precision == Precision::kPaper
                       ? "the attention scores overflow float16 in precision 'paper' (it rounds every "
                         "stored value to the half type); use precision 'half' or 'float'"
                       : "the attention scores overflow float32 (|scale * Q.K| reaches 3.4e38); expected "
                         "inputs and a scale whose scaled scores fit float32"};
  }
}

}  // namespace pasa

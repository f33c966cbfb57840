// Chooses the instruction-set table once, when the library loads: the best path this CPU runs,
// or the one PASA_ONNX_ISA names (avx512bf16 | avx512 | avx2 | portable). A named path the CPU cannot run is
// an error (reported when the library registers), never a silent fallback.
#include <cstdlib>
#include <string>
#include <vector>

#include "isa_kernels.h"

namespace pasa {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && defined(PASA_HAVE_X86_PATHS)
bool CpuHasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}
bool CpuHasAvx512Bf16() { return CpuHasAvx512() && __builtin_cpu_supports("avx512bf16"); }
bool CpuHasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}
#else
bool CpuHasAvx512() { return false; }
bool CpuHasAvx512Bf16() { return false; }
bool CpuHasAvx2() { return false; }
#endif

struct Candidate {
  const char* name;
  const KernelTable* table;
  bool cpu_ok;
};

std::vector<Candidate> Candidates() {
  return {{"avx512bf16", Avx512Bf16Kernels(), CpuHasAvx512Bf16()},
          {"avx512", Avx512Kernels(), CpuHasAvx512()},
          {"avx2", Avx2Kernels(), CpuHasAvx2()},
          {"portable", PortableKernels(), true}};
}

struct Selection {
  const KernelTable* table = nullptr;
  std::string error;
  std::string supported;
};

Selection Select() {
  Selection sel;
  const std::vector<Candidate> all = Candidates();
  for (const Candidate& c : all) {
    if (c.table == nullptr || !c.cpu_ok) continue;
    if (!sel.supported.empty()) sel.supported += ",";
    sel.supported += c.name;
  }
  const char* forced = std::getenv("PASA_ONNX_ISA");
  if (forced != nullptr && *forced != '\0') {
    const std::string want(forced);
    for (const Candidate& c : all) {
      if (want != c.name) continue;
      if (c.table == nullptr) {
        sel.error = "PASA_ONNX_ISA=" + want + ": this build of pasa-onnx carries no " + want + " path";
      } else if (!c.cpu_ok) {
        sel.error = "PASA_ONNX_ISA=" + want + ": this CPU lacks the instructions the " + want +
                    " path needs (supported here: " + sel.supported + ")";
      } else {
        sel.table = c.table;
      }
      break;
    }
    if (sel.table == nullptr && sel.error.empty())
      sel.error = "PASA_ONNX_ISA=" + want + " is not a known path; expected avx512bf16, avx512, avx2 or portable";
    if (sel.table == nullptr) sel.table = PortableKernels();  // never used: registration fails
    return sel;
  }
  for (const Candidate& c : all) {
    if (c.table != nullptr && c.cpu_ok) {
      sel.table = c.table;
      break;
    }
  }
  return sel;
}

const Selection& TheSelection() {
  static const Selection sel = Select();
  return sel;
}

}  // namespace

const KernelTable& ActiveKernels() { return *TheSelection().table; }
const std::string& IsaSelectionError() { return TheSelection().error; }
const char* SupportedIsas() { return TheSelection().supported.c_str(); }

#if !defined(PASA_HAVE_X86_PATHS)
const KernelTable* Avx512Bf16Kernels() { return nullptr; }
const KernelTable* Avx512Kernels() { return nullptr; }
const KernelTable* Avx2Kernels() { return nullptr; }
#endif

}  // namespace pasa

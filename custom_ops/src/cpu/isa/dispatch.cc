// Chooses the instruction-set table once, when the library loads: the best path (isa_list.def)
// that this build carries and this CPU runs, or the one PASA_ONNX_ISA names. A named path that
// cannot run is an error (reported when the library registers), never a silent fallback.
#include <cstdlib>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <sstream>
#include <string>
#include <vector>

#include "cpu/isa/kernels.h"

namespace pasa {
namespace {

// Whether the OS lets this process use the AMX tile data (Linux asks for it per process: once,
// at selection). Refused or unknown: the amx path is not offered.
bool OsAllowsTileData() {
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
  static const bool ok = [] {
    constexpr long kArchReqXcompPerm = 0x1023;  // ARCH_REQ_XCOMP_PERM (asm/prctl.h)
    constexpr long kXfeatureXtiledata = 18;     // XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

// CPUID.(EAX=7, ECX=0):EDX bit `bit` (22: AMX-BF16, 24: AMX-TILE).
bool CpuidLeaf7Edx(int bit) {
#if defined(__x86_64__) && defined(__GNUC__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && ((d >> bit) & 1u) != 0;
#else
  (void)bit;
  return false;
#endif
}

// Whether the CPU has one feature of isa_list.def (GCC's names; __builtin_cpu_supports needs a
// literal, hence the chain).
bool CpuHasFeature(const std::string& f) {
#if defined(__x86_64__) && defined(__GNUC__) && defined(PASA_HAVE_X86_PATHS)
  __builtin_cpu_init();
  if (f == "avx2") return __builtin_cpu_supports("avx2");
  if (f == "f16c") return __builtin_cpu_supports("f16c");
  if (f == "fma") return __builtin_cpu_supports("fma");
  if (f == "avx512f") return __builtin_cpu_supports("avx512f");
  if (f == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (f == "avx512vl") return __builtin_cpu_supports("avx512vl");
  if (f == "avx512dq") return __builtin_cpu_supports("avx512dq");
  if (f == "avx512bf16") return __builtin_cpu_supports("avx512bf16");
  if (f == "amx-bf16") return CpuidLeaf7Edx(22);  // CPUID directly (older libgcc
  if (f == "amx-tile") return CpuidLeaf7Edx(24) && OsAllowsTileData();  // lacks the names)
#endif
  (void)f;
  return false;  // a feature this check does not know: the path is not offered
}

bool CpuHasAll(const char* features) {
  std::istringstream words(features);
  std::string f;
  while (words >> f)
    if (!CpuHasFeature(f)) return false;
  return true;
}

struct Candidate {
  const char* name;
  const KernelTable* table;
  bool cpu_ok;
};

std::vector<Candidate> Candidates() {
  return {
#define PASA_ISA(name, features) {#name, Kernels_##name(), CpuHasAll(features)},
#include "cpu/isa/isa_list.def"
#undef PASA_ISA
  };
}

struct Selection {
  const KernelTable* table = nullptr;
  std::string error;
  std::vector<std::string> supported, known;
};

std::string Joined(const std::vector<std::string>& names, const char* sep) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : sep) + n;
  return out;
}

// The path PASA_ONNX_ISA names, or an error saying why it cannot run.
void SelectForced(const std::string& want, const std::vector<Candidate>& all, Selection* sel) {
  for (const Candidate& c : all) {
    if (want != c.name) continue;
    if (c.table == nullptr) {
      sel->error = "PASA_ONNX_ISA=" + want + ": this build of pasa-onnx carries no " + want + " path";
    } else if (!c.cpu_ok) {
      sel->error = "PASA_ONNX_ISA=" + want + ": this CPU lacks the instructions the " + want +
                   " path needs (supported here: " + Joined(sel->supported, ",") + ")";
    } else {
      sel->table = c.table;
    }
    return;
  }
  sel->error = "PASA_ONNX_ISA=" + want + " is not a known path; expected " + Joined(sel->known, ", ");
}

Selection Select() {
  Selection sel;
  const std::vector<Candidate> all = Candidates();
  for (const Candidate& c : all) {
    sel.known.emplace_back(c.name);
    if (c.table != nullptr && c.cpu_ok) sel.supported.emplace_back(c.name);
  }
  const char* forced = std::getenv("PASA_ONNX_ISA");
  if (forced != nullptr && *forced != '\0') {
    SelectForced(forced, all, &sel);
  } else {
    for (const Candidate& c : all)
      if (c.table != nullptr && c.cpu_ok) {
        sel.table = c.table;
        break;
      }
  }
  if (sel.table == nullptr) sel.table = Kernels_portable();  // never used: registration fails
  return sel;
}

const Selection& TheSelection() {
  static const Selection sel = Select();
  return sel;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

std::string JsonList(const std::vector<std::string>& names) {
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + JsonString(names[i]);
  return out + "]";
}

}  // namespace

const KernelTable& ActiveKernels() { return *TheSelection().table; }
const std::string& IsaSelectionError() { return TheSelection().error; }

const char* IsaInfoJson() {
  static const std::string json = [] {
    const Selection& sel = TheSelection();
    const std::string active = sel.error.empty() ? sel.table->name : "";
    return "{\"active\": " + JsonString(active) + ", \"supported\": " + JsonList(sel.supported) +
           ", \"known\": " + JsonList(sel.known) + ", \"error\": " + JsonString(sel.error) + "}";
  }();
  return json.c_str();
}

#if !defined(PASA_HAVE_X86_PATHS)
const KernelTable* Kernels_amx() { return nullptr; }
const KernelTable* Kernels_avx512bf16() { return nullptr; }
const KernelTable* Kernels_avx512() { return nullptr; }
const KernelTable* Kernels_avx2() { return nullptr; }
#endif

}  // namespace pasa

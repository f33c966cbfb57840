// Tile-GEMM microbenchmark of the amx path: AmxGemm (cpu/isa/amx_tiles.h) on the shapes that one
// query tile meets per key block, with its operands on cache lines and 16 bytes off them, and a
// register-only loop of tile dot products for the peak. Prints ns per TDPBF16PS (16x16x32).
// Needs a CPU with AMX-BF16 and a kernel that grants the tile data. Built and run by run.sh.
//
// Usage: amx_gemm_bench [reps]
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <type_traits>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/isa/kernels.h"

namespace pasa {
namespace isa_gemmbench {
#include "cpu/isa/avx512_vec.h"  // struct V
}  // namespace isa_gemmbench
}  // namespace pasa

#define PASA_ISA_NAMESPACE isa_gemmbench
#define PASA_ISA_NAME gemmbench
#define PASA_PRODUCTS_HEADER "cpu/isa/amx_tiles.h"
#define PASA_PRODUCTS AmxProducts
#include "cpu/isa/kernels_impl.h"

namespace pasa {
namespace isa_gemmbench {
namespace {

constexpr int kCalls = 200;  // GEMM calls per timed repetition

// A [rows][k32] bf16, B [k32/2][cols] pairs, hi and lo terms (random normal-range values), all
// `offset` bytes past a cache line.
struct Operands {
  std::vector<unsigned char> storage;
  AmxOperands o{};
  Operands(int64_t rows, int64_t cols, int64_t k, int64_t terms, size_t offset, std::mt19937& rng) {
    const int64_t k32 = AmxAlign(k), a_elems = rows * k32, b_words = k32 / 2 * cols;
    const size_t a_bytes = static_cast<size_t>(a_elems) * 2, b_bytes = static_cast<size_t>(b_words) * 4;
    const size_t slot = (std::max(a_bytes, b_bytes) / 64 + 2) * 64;
    storage.resize(4 * slot + 64);
    const size_t base = (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64 + offset;
    auto at = [&](int i) { return storage.data() + base + static_cast<size_t>(i) * slot; };
    for (auto& byte : storage) byte = static_cast<unsigned char>(rng() & 0x3f);  // small exponents, finite
    o = {reinterpret_cast<uint16_t*>(at(0)), terms == 3 ? reinterpret_cast<uint16_t*>(at(1)) : nullptr, k32,
         reinterpret_cast<uint32_t*>(at(2)), terms >= 2 ? reinterpret_cast<uint32_t*>(at(3)) : nullptr, cols,
         k32 / kAmxK};
  }
};

double NsPerDot(int64_t rows, int64_t cols, int64_t k, int64_t terms, size_t offset, int reps) {
  std::mt19937 rng(1);
  Operands ops(rows, cols, k, terms, offset, rng);
  AlignedVector<float> out_storage(static_cast<size_t>(rows * cols + 16));
  float* out = out_storage.data() + offset / sizeof(float);
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int c = 0; c < kCalls; ++c) AmxGemm(ops.o, rows, cols, out, cols);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kCalls);
  }
  std::sort(times.begin(), times.end());
  const double dots = static_cast<double>(rows / 16) * (cols / 16) * (AmxAlign(k) / kAmxK) * terms;
  return times[times.size() / 2] * 1e9 / dots;
}

double PeakNsPerDot(int reps) {
  alignas(64) static uint16_t a[2][16 * 32];
  alignas(64) static uint32_t b[2][16 * 16];
  AmxConfigure();
  _tile_loadd(4, a[0], 64);
  _tile_loadd(5, a[1], 64);
  _tile_loadd(6, b[0], 64);
  _tile_loadd(7, b[1], 64);
  constexpr int kIters = 100000;
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2] * 1e9 / (4.0 * kIters);
}

}  // namespace
}  // namespace isa_gemmbench
}  // namespace pasa

int main(int argc, char** argv) {
  using namespace pasa::isa_gemmbench;
  const int reps = argc > 1 ? std::atoi(argv[1]) : 15;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    std::fprintf(stderr, "amx_gemm_bench: the kernel does not grant the AMX tile data\n");
    return 1;
  }
  struct Shape {
    const char* name;
    int64_t rows, cols, k, terms;
  };
  // One 256-row tile against one 128-key block: S = Q·K'ᵀ (k = D) and P·V (k = keys, cols = Dv);
  // three terms for fp16 inputs, two and one for bf16 (amx_tiles.h).
  const Shape shapes[] = {{"fp16 Q.K' D=64", 256, 128, 64, 3},  {"fp16 P.V  D=64", 256, 64, 128, 3},
                          {"fp16 Q.K' D=128", 256, 128, 128, 3}, {"fp16 P.V  D=128", 256, 128, 128, 3},
                          {"bf16 Q.K' D=64", 256, 128, 64, 2},   {"bf16 P.V  D=64", 256, 64, 128, 1}};
  std::printf("register-only tile dot products: %.2f ns per TDPBF16PS\n", PeakNsPerDot(reps));
  std::printf("%-18s %14s %14s   (ns per TDPBF16PS, median of %d)\n", "AmxGemm", "on lines", "16 B off", reps);
  for (const Shape& s : shapes)
    std::printf("%-18s %14.2f %14.2f\n", s.name, NsPerDot(s.rows, s.cols, s.k, s.terms, 0, reps),
                NsPerDot(s.rows, s.cols, s.k, s.terms, 16, reps));
  _tile_release();
  return 0;
}

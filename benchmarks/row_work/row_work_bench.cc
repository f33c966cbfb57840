// Row-work microbenchmark: the amx path's per-block code (kernels_impl.h AttendBlock with the
// amx products' packing) with the tile products replaced by a copy of preset scores, so that what
// is timed is the row work that runs next to the AMX tiles (overflow checks, shift, max, exp,
// rounding of S and P, sums, packing P, the rescale). Runs on any AVX-512 CPU with AVX512-BF16
// (no AMX instruction executes). Built and run by benchmarks/row_work/run.sh.
//
// Usage: row_work_bench [reps] [blocks] [keys per block]   prints ns per score (median of reps) per case.
#include <immintrin.h>

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
namespace isa_rowbench {
#include "cpu/isa/avx512_vec.h"  // struct V
}  // namespace isa_rowbench
}  // namespace pasa

#define PASA_ISA_NAMESPACE isa_rowbench
#define PASA_ISA_NAME rowbench
#define PASA_PRODUCTS_HEADER "bench_products.h"
#define PASA_PRODUCTS BenchProducts
#include "cpu/isa/kernels_impl.h"

namespace pasa {
namespace isa_rowbench {
namespace {

struct Case {
  const char* name;
  Precision precision;
  ElemType type;
  bool causal_like;  // every row through an additive row (kRowAdd), half the keys masked
};

double RunCase(const Case& c, int reps, int blocks, int64_t n, double* copy_ns) {
  const int64_t rows = 64, D = 64, dvp = 64;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> scores(rows * n), q(rows * D), s(rows * n), xrow(kRowGroup * n), add(rows * n), pv(rows * dvp), o(rows * dvp);
  std::vector<float> m(rows), l(rows), abar(rows), nb(rows), corr(rows), psum(rows), shift(rows), mean(D, 0.01f);
  std::vector<uint8_t> kind(rows, c.causal_like ? kRowAdd : kRowFull), upd(rows);
  std::vector<uint16_t> pack_p(rows * n);
  std::vector<uint32_t> pack_v(n / 2 * dvp);
  for (auto& x : scores) x = nd(rng);
  for (auto& x : q) x = nd(rng) * 0.25f;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t r = 0; r < n; ++r) add[i * n + r] = r <= i + n / 2 ? 0.0f : -std::numeric_limits<float>::infinity();
  BenchScores() = scores.data();
  RowParams rp;
  rp.precision = c.precision;
  rp.half_type = c.type;
  rp.beta = 15.0f;
  rp.head_dim = D;
  rp.dv_pad = dvp;
  rp.q_type = rp.v_type = c.type;
  KvBlock kv;
  std::vector<float> kt(D * n, 0.01f), vv(n * dvp, 0.5f);
  kv.kt = kt.data();
  kv.v = vv.data();
  kv.n_pad = n;
  kv.inv_count = 1.0f / n;
  kv.mean = mean.data();
  kv.scale = 0.125f;
  std::vector<float> pack(D * 2 * n + n * 2 * dvp, 0.0f);
  kv.pack = pack.data();
  TileState t;
  t.rows = rows;
  t.q = q.data();
  t.s = s.data();
  t.x = xrow.data();
  t.add = add.data();
  t.kind = kind.data();
  t.pv = pv.data();
  t.o = o.data();
  t.m = m.data();
  t.l = l.data();
  t.abar = abar.data();
  t.nblocks = nb.data();
  t.corr = corr.data();
  t.psum = psum.data();
  t.shift = shift.data();
  t.upd = upd.data();
  t.pack_p = pack_p.data();
  t.pack_v = pack_v.data();
  std::vector<double> per, copy;
  for (int rep = 0; rep < reps; ++rep) {
    std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
    std::fill(l.begin(), l.end(), 0.0f);
    std::fill(abar.begin(), abar.end(), 0.0f);
    std::fill(nb.begin(), nb.end(), 0.0f);
    t.q_fresh = true;
    auto t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < blocks; ++b) AttendBlock(rp, kv, t);
    auto t1 = std::chrono::steady_clock::now();
    for (int b = 0; b < blocks; ++b) {
      std::memcpy(t.s, scores.data(), sizeof(float) * rows * n);
      __asm__ volatile("" : : "r"(t.s) : "memory");
    }
    auto t2 = std::chrono::steady_clock::now();
    const double el = static_cast<double>(rows * n) * blocks;
    per.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / el);
    copy.push_back(std::chrono::duration<double, std::nano>(t2 - t1).count() / el);
  }
  std::sort(per.begin(), per.end());
  std::sort(copy.begin(), copy.end());
  *copy_ns = copy[copy.size() / 2];
  double chk = 0;
  for (int64_t i = 0; i < rows; ++i) chk += l[i] + o[i * dvp];
  std::fprintf(stderr, "  (%s checksum %.6g)\n", c.name, chk);
  return per[per.size() / 2];
}

// The exp pass's packed P (ExpRow into PTerms) against the floats it writes otherwise, split by
// the amx path's SplitRows (the packing the product used to run): bit for bit, every mode.
template <int R, int kMode>
bool CheckPackingCase(int64_t n, std::mt19937& rng) {
  const int64_t n32 = AmxAlign(n);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> x(n), p(n);
  for (int64_t r = 0; r < n; ++r) x[r] = r % 7 == 3 ? -std::numeric_limits<float>::infinity() : nd(rng);
  const float m = kMode == kExpFiniteMax ? *std::max_element(x.begin(), x.end()) : std::nanf("");
  std::vector<uint16_t> hi(n32, 0xdead), lo(n32, 0xbeef), hi_ref(32 * n32), lo_ref(32 * n32);
  const PTerms pt{hi.data(), R == kRoundF16 ? lo.data() : nullptr, n32};
  const float sum_packed = ExpRow<R, kMode, true>(x.data(), n, m, nullptr, pt, 0);
  const float sum_floats = ExpRow<R, kMode, false>(x.data(), n, m, p.data(), PTerms{}, 0);
  SplitRows(p.data(), 1, n, n, hi_ref.data(), R == kRoundF16 ? lo_ref.data() : nullptr);
  bool ok = std::memcmp(&sum_packed, &sum_floats, sizeof(float)) == 0;
  ok = ok && std::equal(hi.begin(), hi.end(), hi_ref.begin());
  if (R == kRoundF16) ok = ok && std::equal(lo.begin(), lo.end(), lo_ref.begin());
  if (!ok) std::fprintf(stderr, "packing mismatch: R=%d mode=%d n=%lld\n", R, kMode, static_cast<long long>(n));
  return ok;
}

bool CheckPacking() {
  std::mt19937 rng(11);
  bool ok = true;
  for (int64_t n : {16, 32, 48, 112, 128, 256}) {
    ok = CheckPackingCase<kRoundF16, kExpFiniteMax>(n, rng) && ok;
    ok = CheckPackingCase<kRoundF16, kExpNaNMasked>(n, rng) && ok;
    ok = CheckPackingCase<kRoundBF16, kExpFiniteMax>(n, rng) && ok;
    ok = CheckPackingCase<kRoundBF16, kExpNaN>(n, rng) && ok;
  }
  return ok;
}

}  // namespace
}  // namespace isa_rowbench
}  // namespace pasa

int main(int argc, char** argv) {
  using namespace pasa;
  const int reps = argc > 1 ? std::atoi(argv[1]) : 21;
  const int blocks = argc > 2 ? std::atoi(argv[2]) : 64;
  const int64_t n = argc > 3 ? std::atoi(argv[3]) : 128;  // keys per block (a multiple of 16)
  const isa_rowbench::Case cases[] = {
      {"half fp16 full", Precision::kHalf, ElemType::kFloat16, false},
      {"half fp16 masked", Precision::kHalf, ElemType::kFloat16, true},
      {"half bf16 full", Precision::kHalf, ElemType::kBFloat16, false},
      {"paper fp16 full", Precision::kPaper, ElemType::kFloat16, false},
  };
  if (!isa_rowbench::CheckPacking()) return 1;
  std::printf("packing check: exp-pass P terms equal SplitRows of the P floats\n");
  for (const auto& c : cases) {
    double copy = 0;
    const double ns = isa_rowbench::RunCase(c, reps, blocks, n, &copy);
    std::printf("%-18s %.3f ns/score (score copy %.3f)\n", c.name, ns, copy);
  }
  return 0;
}

// The fused split-KV decode kernel of the flash path (mma.sync, sm_80+): for few packed query rows
// (decode: Sq·G <= 16) it forms each PASA block's mean and K' = c·(K − kbar) from the raw keys in
// shared memory, so K and V are read once and there is no shift pre-pass. Each CTA (split, kv
// head, batch) streams whole PASA blocks through a ring of cp.async stages; its 16 warps share a
// block (8 keys each) and one online-softmax step per block. The splits' (m, l, O) are merged by
// flash_fwd.cu's CombineKernel. docs/cuda-kernels.md, "Decode", has the numerics.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "flash_common.cuh"

namespace pasa::cuda::flash {

constexpr int kDecodeBlock = 128;   // keys per step: the PASA block (block_kv must equal it)
constexpr int kDecodeMaxRows = 16;  // packed query rows (one m16 tile)
// Packed query rows of the register decode kernel: with 4 rows its CUDA-core math made it slower
// than the tensor-core kernel above at 32k keys (H200: 103 against 88 us at 32/8 heads).
constexpr int kDecodeRegMaxRows = 2;

// The main kernel's parameters plus the raw keys (the kernel forms K' itself) and α.
struct DecodeParams {
  FwdParams f;  // f.kp and f.kbar unused; f.splits, f.nblk, f.rows as for the split path
  const void* k;
  int64_t k_sb, k_sh, k_ss;
  float alpha;
};

// Whether the decode kernel covers the shape (no mask, no softcap: `ext` false) on a device whose
// opt-in shared memory per block is `max_smem` bytes.
bool DecodeCovers(int head_dim, int64_t block_kv, int64_t rows, int64_t kv_len, bool ext, int max_smem);

// The fixed split factor, a function of the problem only (never of the device): about 264 CTAs
// (two waves of a 132-SM GPU), at least one PASA block per split.
int DecodeSplits(int64_t batch, int64_t units, int64_t nblk);

// Launches the decode kernel (grid: splits, units, batch); its partials go to f.part_o/f.part_ml.
std::string LaunchDecode(const DecodeParams& dp, int head_dim, bool bf16, int units, int batch, int max_smem,
                         cudaStream_t stream);

// The register decode kernel (flash_decode_reg.cu), for at most kDecodeRegMaxRows packed rows:
// CTAs of 4 warps with K and V in registers, several per SM. Same problems and partials as the
// kernel above, with its own split factor (about PASA_DECODE_REG_CTAS CTAs, a function of the
// problem only).
bool DecodeRegCovers(int head_dim, int64_t block_kv, int64_t rows, int64_t kv_len, bool ext);
int DecodeRegSplits(int64_t batch, int64_t units, int64_t nblk);
std::string LaunchDecodeReg(const DecodeParams& dp, int head_dim, bool bf16, int units, int batch,
                            cudaStream_t stream);

}  // namespace pasa::cuda::flash

// The fast tensor-core path of PasaAttention on CUDA (mma.sync, sm_80+): forward flash attention
// with PASA's per-block key shift and a direct recovery of the removed shift. EP-neutral: no
// onnxruntime types. See docs/cuda-kernels.md for the numerics and what it covers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "../../problem/attention_problem.h"

namespace pasa::cuda {

// True for the cases this path handles (fp16/bf16 in `half` precision, bool or additive masks of
// any broadcast shape, softcap, D = Dv in {64, 80, 96, 128, 256}, inner dims contiguous and
// 16-byte aligned rows, ...).
bool FlashSupports(const AttentionProblem& p);

// Device scratch RunFlash needs (shifted keys, block means, split-KV partials).
size_t FlashWorkspaceBytes(const AttentionProblem& p);

// Launches the kernels on `stream` (no sync, no allocation). Returns "" on success, else a message.
std::string RunFlash(const AttentionProblem& p, cudaStream_t stream, void* workspace);

// The fixed split-KV factor RunFlash uses for `p` (a function of the problem only; 1 = no split).
int FlashNumSplits(const AttentionProblem& p);

// Which main kernel RunFlash launches for `p` on the current device: "sm90" (wgmma, compute
// capability 9.0), "sm80" (mma.sync), "sm90-f16acc" / "sm80-f16acc" (those kernels with fp16
// score accumulators, PASA_ONNX_CUDA_SCORE_ACCUM=half), "sm90/sm80" (a classified mask on Hopper: sm90 for the
// padding and causal+padding planes, mma.sync for the general ones), "decode" or "decode_reg"
// (the fused split-KV kernels for at most 16 packed query rows, flash_decode.h).
const char* FlashKernelName(const AttentionProblem& p);

// "" when the flash path's environment settings are valid, else the error (names the variable,
// its value and what was expected): PASA_ONNX_CUDA_SCORE_ACCUM is 'float' (default) or 'half'.
std::string FlashSettingsError();

}  // namespace pasa::cuda

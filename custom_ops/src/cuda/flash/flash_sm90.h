// The Hopper (sm_90a) main kernel of the flash path: warpgroup MMAs (wgmma) with operands in
// shared memory, a producer warpgroup streaming K'/V tiles through an mbarrier pipeline, two
// consumer warpgroups of 64 query rows each. It takes the mma.sync kernel's parameter block and
// workspace (the shift pre-pass is shared), so flash_fwd.cu decides per call which one runs.
// Compiled for sm_90a only (its own translation unit): launch it on compute capability 9.0 alone.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "flash_common.cuh"

namespace pasa::cuda::flash {

// Whether the sm_90a kernel covers this shape: head size (D = Dv), no softcap; no mask (then also
// where the mma.sync path would split the keys, if there are at least 256 packed rows: the sm90
// kernel never splits), or one the device classifies per plane (FwdParams::mcls) and no split:
// the kernel then runs the padding and causal+padding planes, the mma.sync kExt kernel the
// general ones. `rows`: packed query rows per unit.
bool Sm90Covers(int head_dim, bool softcap, bool classified_mask, bool mask, int splits, int64_t rows);

// Launches the main kernel for `fp` (one CTA per 128 packed query rows, unit and batch), after the
// pre-passes. With fp.mcls set, CTAs of general mask planes return at once. `bf16`: the element
// type; `half_acc` (fp16, no mask): the score product accumulates in fp16. Returns "" or an
// error message.
std::string LaunchSm90(const FwdParams& fp, int head_dim, bool bf16, bool half_acc, int units, int batch,
                       cudaStream_t stream);

}  // namespace pasa::cuda::flash

#!/usr/bin/env bash
# Builds and runs the amx path's tile-GEMM microbenchmark (amx_gemm_bench.cc) with the amx path's
# flags. Usage: benchmarks/amx_gemm/run.sh [reps]   (needs AMX-BF16)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../amx_build.sh
. "$here/../amx_build.sh"
out=${AMX_GEMM_BIN:-/tmp/amx_gemm_bench}
amx_build "$here/amx_gemm_bench.cc" "$out"
"$out" "$@"

#!/usr/bin/env bash
# Builds and runs the amx path's tile-GEMM microbenchmark (amx_gemm_bench.cc) with the amx path's
# flags. Usage: benchmarks/amx_gemm/run.sh [reps]   (needs AMX-BF16)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${AMX_GEMM_BIN:-/tmp/amx_gemm_bench}
flags=$(sed -n 's/^PASA_ISA(amx, "\(.*\)")/\1/p' "$root/custom_ops/src/cpu/isa/isa_list.def" | sed 's/\([a-z0-9-]*\)/-m\1/g')
${CXX:-g++} -std=c++17 -O3 -DNDEBUG -ffp-contract=off -Wall -Wextra -Wno-maybe-uninitialized $flags \
  -I "$root/custom_ops/src" "$here/amx_gemm_bench.cc" -o "$out"
"$out" "$@"

#!/usr/bin/env bash
# Builds and runs the row-work microbenchmark (row_work_bench.cc) with the amx path's flags.
# Usage: benchmarks/row_work/run.sh [reps] [blocks]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${ROW_WORK_BIN:-/tmp/row_work_bench}
flags=$(sed -n 's/^PASA_ISA(amx, "\(.*\)")/\1/p' "$root/custom_ops/src/cpu/isa/isa_list.def" | sed 's/\([a-z0-9-]*\)/-m\1/g')
${CXX:-g++} -std=c++17 -O3 -DNDEBUG -ffp-contract=off -Wall -Wextra -Wno-maybe-uninitialized $flags \
  -I "$root/custom_ops/src" -I "$here" "$here/row_work_bench.cc" -o "$out"
"$out" "$@"

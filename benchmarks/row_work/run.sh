#!/usr/bin/env bash
# Builds and runs the row-work microbenchmark (row_work_bench.cc) with the amx path's flags.
# Usage: benchmarks/row_work/run.sh [reps] [blocks]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../amx_build.sh
. "$here/../amx_build.sh"
out=${ROW_WORK_BIN:-/tmp/row_work_bench}
amx_build "$here/row_work_bench.cc" "$out" -I "$here"
"$out" "$@"

#!/usr/bin/env bash
# Build the custom-op library with AddressSanitizer + UBSan and run the op's tests against it.
# Usage: scripts/run_sanitizers.sh [pytest args...]   (default: the op tests; the paper grid is slow)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${PASA_SANITIZE_BUILD:-$root/build/sanitize}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPASA_SANITIZE=ON >/dev/null
cmake --build "$build" >/dev/null
lib=$build/custom_ops/libpasa_onnx_ops.so
# Python itself is not instrumented: preload the sanitizer runtimes.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PASA_ONNX_LIBRARY=$lib
cd "$root"
if [ $# -eq 0 ]; then
  set -- -q tests/test_op_basics.py tests/test_bad_input.py tests/test_conformance.py \
    tests/test_numerics_stress.py tests/test_schema.py
fi
# `pytest`, not `python -m pytest`: the latter puts the checkout first on sys.path, shadowing
# the installed package (whose pasa_onnx.passes the checkout only has as passes/).
exec pytest "$@"

#!/usr/bin/env bash
# On the lent GPU machine, after scripts/device/cuda_checks.sh (same /tmp/ort-gpu, /tmp/pkg, /tmp/tools):
# compute-sanitizer memcheck over the flash and bad-input CUDA tests through onnxruntime, racecheck
# over the flash selftest's quick cases (both main kernels), then the end-to-end benchmark (BERT-base-
# and Llama-sized, seq 2048, CUDA EP). About 7 minutes; results in $OUT/san_e2e.tgz.
set -u
T=/tmp/tools
export PYTHONPATH=/tmp/ort-gpu PASA_ONNX_LIBRARY=/tmp/pkg/pasa_onnx/lib/libpasa_onnx_ops.so
O=/tmp/san_e2e; rm -rf $O; mkdir -p $O
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider -x \
  tests/test_cuda_flash.py tests/test_cuda_bad_input.py -k "not decode" > $O/san_memcheck.log 2>&1
el "memcheck (pytest) rc=$? $(grep -E 'ERROR SUMMARY' $O/san_memcheck.log | tail -1) | $(tail -1 $O/san_memcheck.log)"
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 $T/flash_selftest quick > $O/san_racecheck.log 2>&1
el "racecheck (selftest quick) rc=$? $(grep -E 'RACECHECK SUMMARY' $O/san_racecheck.log | tail -1)"
for m in bert llama; do
  PYTHONPATH=/tmp/ort-gpu:/tmp/pkg timeout 120 python3 benchmarks/end_to_end.py --model $m --seq 2048 --provider cuda \
    --reps 10 --max-ir-version 10 --json $O/e2e_cuda_${m}_2048.json > $O/e2e_$m.txt 2>&1
  el "e2e $m rc=$?"; tail -6 $O/e2e_$m.txt
done
tar -C /tmp -czf "$OUT/san_e2e.tgz" san_e2e

#!/usr/bin/env bash
# On the lent GPU machine, after scripts/device/stage.sh's steps 1-6 copied the parts (see there):
# the flash selftest, the CUDA test suite, the CUDA benchmark (SAN=1: and compute-sanitizer). About 4 minutes. Everything lands
# in $OUT/cuda_checks.tgz (a command brings back only a few files, so one archive).
set -u
T=/tmp/tools
[ -d /tmp/pkg ] || { mkdir -p /tmp/pkgx && tar -C /tmp/pkgx -xJf $T/pkg.tar.xz && mv /tmp/pkgx/pkg /tmp/pkg; }
export PYTHONPATH=/tmp/ort-gpu PASA_ONNX_LIBRARY=/tmp/pkg/pasa_onnx/lib/libpasa_onnx_ops.so
O=/tmp/cuda_checks; rm -rf $O; mkdir -p $O
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
PT="python3 -m pytest -q -p no:cacheprovider"
timeout 70 $T/flash_selftest check > $O/selftest_check.txt 2>&1
el "selftest check rc=$? $(grep -c ' ok ' $O/selftest_check.txt) ok, $(grep failures $O/selftest_check.txt)"
timeout 120 $PT tests/test_cuda_build.py tests/test_cuda_placement.py tests/test_cuda_bad_input.py \
  tests/test_cuda_conformance.py tests/test_cuda_flash.py tests/test_cuda_score_accum.py > $O/t_conf.log 2>&1
el "conformance, flash, bad input, placement, score accumulation: $(tail -1 $O/t_conf.log)"
# fp16 score accumulators (PASA_ONNX_CUDA_SCORE_ACCUM=half): the selftest's cases on that
# kernel, and F16ACC_BENCH=1: kernel time of the mma.sync kernel with fp32 and with fp16 sums.
PASA_ONNX_CUDA_SCORE_ACCUM=half timeout 90 $T/flash_selftest check > $O/selftest_check_f16acc.txt 2>&1
el "selftest check, fp16 sums: rc=$? $(grep -c ' ok ' $O/selftest_check_f16acc.txt) ok, $(grep -c 'sm80-f16acc' $O/selftest_check_f16acc.txt) on sm80-f16acc, $(grep failures $O/selftest_check_f16acc.txt)"
if [ "${F16ACC_BENCH:-0}" = 1 ]; then
  for acc in float half; do
    PASA_ONNX_CUDA_KERNEL=sm80 PASA_ONNX_CUDA_SCORE_ACCUM=$acc timeout 90 $T/flash_selftest bench > $O/bench_sm80_$acc.txt 2>&1
    el "bench sm80 $acc rc=$?"
  done
fi
# The paper grid is CPU-heavy (numpy emulation, CPU kernel): 4 processes of 3 BLAS threads each;
# more, or unlimited threads, oversubscribe the 16 cores and run past any timeout.
(timeout 160 $PT tests/test_cuda_numerics.py -k "not paper_grid" > $O/t_stress.log 2>&1) &
for g in "uniform-0- or uniform-10-" "uniform-20- or uniform-30-" "normal-0- or normal-10-" "normal-20- or normal-30-"; do
  n=$(echo "$g" | tr -cd 'a-z0-9')
  (OMP_NUM_THREADS=3 OPENBLAS_NUM_THREADS=3 timeout 160 $PT tests/test_cuda_numerics.py \
    -k "paper_grid and ($g)" --junitxml=$O/grid_$n.xml > $O/t_grid_$n.log 2>&1) &
done
wait
el "stress: $(tail -1 $O/t_stress.log)"
for f in $O/t_grid_*.log; do echo "  grid: $(tail -1 "$f")"; done
grep -h "^FAILED\|^ERROR" $O/t_*.log | cut -c1-300 | head -10
timeout 150 python3 benchmarks/bench_cuda.py --reps 10 --json $O/bench_cuda.json > $O/bench_cuda.txt 2>&1
el "bench_cuda rc=$?"
[ "${BENCH_MASK:-1}" = 1 ] && { timeout 60 $T/flash_selftest bench_mask > $O/bench_mask.txt 2>&1; el "bench_mask rc=$?"; }
# SAN=1: compute-sanitizer over a subset of the CUDA tests through onnxruntime (issue 11's
# criterion 4; a few minutes more).
if [ "${SAN:-0}" = 1 ]; then
  for tool in memcheck racecheck; do
    timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 $PT -x tests/test_cuda_flash.py \
      tests/test_cuda_bad_input.py -k "not decode" > $O/san_$tool.log 2>&1
    el "$tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $O/san_$tool.log | tail -1)"
    python3 -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; \
import test_cuda_score_accum as t; t.write_inputs(Path('/tmp/f16acc_in.npz'))"
    (cd tests && PYTHONPATH="$PWD/..:$PYTHONPATH" PASA_ONNX_CUDA_SCORE_ACCUM=half timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 \
      python3 cuda_score_accum_child.py /tmp/f16acc_in.npz /tmp/f16acc_out.npz) > $O/san_f16acc_$tool.log 2>&1
    el "$tool, fp16 sums: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $O/san_f16acc_$tool.log | tail -1)"
  done
fi
tar -C /tmp -czf "$OUT/cuda_checks.tgz" cuda_checks

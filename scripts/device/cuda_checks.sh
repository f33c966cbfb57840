#!/usr/bin/env bash
# On the lent GPU machine, after scripts/device/stage.sh's steps 1-5 copied the parts (see there):
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
  tests/test_cuda_conformance.py tests/test_cuda_flash.py > $O/t_conf.log 2>&1
el "conformance, flash, bad input, placement: $(tail -1 $O/t_conf.log)"
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
  done
fi
tar -C /tmp -czf "$OUT/cuda_checks.tgz" cuda_checks

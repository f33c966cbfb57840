#!/usr/bin/env bash
# On the lent GPU machine, after scripts/device/stage.sh's steps 1-6: where a case's time goes
# through onnxruntime. bench_cuda.py's wall time per run_with_iobinding, then Nsight Compute's
# duration of every kernel those runs launch (--clock-control none: the boost clock, as the
# benchmark runs), so wall minus the kernels is onnxruntime's and Python's share.
#
#   bash .dev/og/q4/assemble.sh && bash scripts/device/ort_kernel_times.sh 4096     # carry .dev/og/q4
#
# SEQ (default 4096): the prefill length of the cases (bench_cuda.py --seq). $OUT/ort_kernel_times.tgz.
set -u
seq=${1:-4096}
T=/tmp/tools
[ -d /tmp/pkg ] || { mkdir -p /tmp/pkgx && tar -C /tmp/pkgx -xJf $T/pkg.tar.xz && mv /tmp/pkgx/pkg /tmp/pkg; }
export PYTHONPATH=/tmp/ort-gpu PASA_ONNX_LIBRARY=/tmp/pkg/pasa_onnx/lib/libpasa_onnx_ops.so
O=/tmp/ort_kernel_times; rm -rf $O; mkdir -p $O
B="python3 benchmarks/bench_cuda.py --seq $seq --decode"  # --decode with no lengths: no decode cases
timeout 200 $B --variants pasa unfused attn23 mha --reps 30 --json $O/bench.json > $O/bench.txt 2>&1
echo "bench rc=$?"; cat $O/bench.txt
timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum $B --variants pasa unfused --reps 3 --warmup 1 \
  > $O/ncu.txt 2>&1
echo "ncu rc=$?"
# one line per kernel launch: name, grid, duration
awk '/Context [0-9]+, Stream/ { k = $0; sub(/^ +/, "", k) } /gpu__time_duration.sum/ { printf "%10s %s  %s\n", $NF, $(NF - 1), substr(k, 1, 120) }' \
  $O/ncu.txt > $O/kernels.txt
grep -c . $O/kernels.txt; tail -60 $O/kernels.txt
tar -C /tmp -czf "$OUT/ort_kernel_times.tgz" ort_kernel_times

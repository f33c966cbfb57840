#!/usr/bin/env bash
# On the lent GPU machine: A/B of flash selftest binaries (kernel variants built here, carried
# xz-compressed), all in one call so they share the machine's state: each binary's `check`
# (every case against float64 and the emulation) and `bench` (kernel times), then every bench
# line of the later binaries as a ratio to the first binary's (> 1: faster than the first).
#
#   bash scripts/device/selftest_ab.sh .dev/ab/b4c409b.xz .dev/ab/tree-4b532d7.xz   # carry .dev/ab
#
# scripts/device/build_selftest.sh builds the binaries here, named after their commits.
#
# BENCH="bench bench_normal" times the shapes on both inputs (default: bench, uniform(-1, 1);
# bench_normal: standard normal, bench_cuda.py's data), one ratio table per mode.
#
# About 30 s per binary and mode. Logs in $OUT/selftest_ab.tgz. The check logs print the errors per case:
# `diff` two of them to see whether a change moved any bits.
set -u
[ $# -ge 1 ] || { echo "usage: selftest_ab.sh BIN.xz [BIN.xz ...] (first: the baseline)" >&2; exit 2; }
O=/tmp/selftest_ab; rm -rf $O; mkdir -p $O
names=()
for xz in "$@"; do
  name=$(basename "$xz" .xz)
  # a binary named twice (a repeat, to see the noise) gets its own logs
  while [[ " ${names[*]} " == *" $name "* ]]; do name=$name+; done
  names+=("$name")
  bin=$O/$name; xz -dc "$xz" > "$bin" && chmod +x "$bin"
  timeout 120 "$bin" check > "$O/$name.check.txt" 2>&1
  echo "$name: check rc=$? $(grep -c ' ok ' "$O/$name.check.txt") ok, $(grep failures "$O/$name.check.txt")"
  for mode in ${BENCH:-bench}; do
    timeout 180 "$bin" "$mode" > "$O/$name.$mode.txt" 2>&1 || echo "$name: $mode rc=$?"
  done
done
base=${names[0]}
for name in "${names[@]:1}"; do
  cmp -s <(grep -v "us$" "$O/$base.check.txt") <(grep -v "us$" "$O/$name.check.txt") \
    && echo "$name: check output identical to $base's" || echo "$name: check output differs from $base's"
done
# bench lines: "<case> ... <t> us ..."; the case is the text before " split="
for mode in ${BENCH:-bench}; do
echo "== $mode"
awk -v names="${names[*]}" '
  FNR == 1 { f++ }
  / us / { c = $0; sub(/ +split=.*/, "", c); for (i = 1; i <= NF; i++) if ($i == "us") t = $(i - 1); T[f, c] = t; if (f == 1) order[++n] = c }
  END {
    split(names, nm, " "); printf "%-48s %12s", "case", nm[1] " us"
    for (j = 2; j <= f; j++) printf " %16s", nm[j]; printf "\n"
    for (k = 1; k <= n; k++) { c = order[k]; printf "%-48s %12s", c, T[1, c]
      for (j = 2; j <= f; j++) printf " %16s", (T[j, c] > 0 ? sprintf("%.3f", T[1, c] / T[j, c]) : "-"); printf "\n" }
  }' $(for n in "${names[@]}"; do echo "$O/$n.$mode.txt"; done) | tee "$O/ratios.$mode.txt"
done
rm -f "${names[@]/#/$O/}"
tar -C /tmp -czf "$OUT/selftest_ab.tgz" selftest_ab

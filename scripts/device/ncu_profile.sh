#!/usr/bin/env bash
# On the lent GPU machine: Nsight Compute over one program's kernels, exported as text that this
# machine can read without Nsight Compute (about a minute for the flash selftest's `prof` mode).
#
#   bash scripts/device/ncu_profile.sh NAME KERNEL_REGEX LAUNCHES -- PROGRAM [ARGS...]
#   e.g. bash scripts/device/ncu_profile.sh sm90 Sm90 2 -- /tmp/tools/flash_selftest prof
#
# $OUT/ncu_NAME.tgz holds details.csv (the report's details page: durations, throughputs,
# occupancy), raw.csv.xz (every metric), source.csv.xz (per-SASS-instruction samples and
# stall reasons: read it with `python benchmarks/ncu_summary.py source.csv`) and ncu.log.
# ncu locks the SM clock near base (about 1.35 GHz on the H200): durations are longer than a
# benchmark's, ratios between builds are what to compare.
set -u
name=${1:?usage: ncu_profile.sh NAME KERNEL_REGEX LAUNCHES -- PROGRAM [ARGS...]}
regex=${2:?kernel name regex}; count=${3:?number of launches}; shift 3
[ "${1:-}" = "--" ] && shift
O=/tmp/ncu_$name; rm -rf "$O"; mkdir -p "$O"
timeout 300 ncu --set full --import-source no -k "regex:$regex" -c "$count" -f -o "$O/rep" "$@" > "$O/ncu.log" 2>&1
echo "ncu rc=$?"; tail -2 "$O/ncu.log"
ncu --import "$O/rep.ncu-rep" --page details --csv > "$O/details.csv" 2>&1
ncu --import "$O/rep.ncu-rep" --page raw --csv > "$O/raw.csv" 2>&1
ncu --import "$O/rep.ncu-rep" --page source --csv --print-source sass > "$O/source.csv" 2>&1
echo "details $(wc -l < "$O/details.csv") lines, source $(wc -l < "$O/source.csv") lines"
xz -T4 -3 "$O/raw.csv" "$O/source.csv"
tar -C /tmp --exclude rep.ncu-rep -czf "$OUT/ncu_$name.tgz" "ncu_$name"

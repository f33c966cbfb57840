#!/usr/bin/env bash
# On the lent GPU machine: one flash selftest binary (built here, carried) through its checks in one
# call, about 2 minutes. A binary of another branch can be carried beside it (compare the prints).
#
#   bash scripts/device/selftest_checks.sh .dev/dev2/flash_selftest_sm90mask      # carry .dev/dev2
#
# quick (stops here if it hangs), racecheck and memcheck over quick, check (every case against
# float64 and the emulation; the kernel that ran is printed per case), bench, bench_mask. Logs in
# $OUT/selftest_checks_NAME.tgz, NAME the binary's file name (so several binaries can run in one
# call: for b in /tmp/tools/*_selftest; do bash scripts/device/selftest_checks.sh $b; done).
set -u
bin=${1:?usage: selftest_checks.sh FLASH_SELFTEST}
name=$(basename "$bin")
O=/tmp/selftest_checks_$name; rm -rf $O; mkdir -p $O
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
pack() { tar -C /tmp -czf "$OUT/selftest_checks_$name.tgz" "selftest_checks_$name"; }
timeout 30 "$bin" quick > $O/quick.txt 2>&1; rc=$?; el "quick rc=$rc $(grep -c ' ok ' $O/quick.txt) ok"
grep FAIL $O/quick.txt | cut -c1-200
[ $rc = 124 ] && { echo "quick timed out (a hang?): stop"; pack; exit 1; }
timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 "$bin" quick > $O/racecheck.txt 2>&1
el "racecheck rc=$? $(grep 'RACECHECK SUMMARY' $O/racecheck.txt)"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin" quick > $O/memcheck.txt 2>&1
el "memcheck rc=$? $(grep 'ERROR SUMMARY' $O/memcheck.txt)"
timeout 120 "$bin" check > $O/check.txt 2>&1; el "check rc=$? $(grep -c ' ok ' $O/check.txt) ok; $(grep failures $O/check.txt)"
grep FAIL $O/check.txt | cut -c1-220
timeout 90 "$bin" bench > $O/bench.txt 2>&1; el "bench rc=$?"; grep "H[0-9]" $O/bench.txt | cut -c1-100
timeout 90 "$bin" bench_mask > $O/bench_mask.txt 2>&1; el "bench_mask rc=$?"; grep " us " $O/bench_mask.txt | cut -c1-110
pack

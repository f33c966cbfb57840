#!/usr/bin/env bash
# Build the flash selftest of a commit (or of the working tree), xz-compressed, for
# selftest_ab.sh on the lent GPU machine (run here, from the project's root; about a minute).
#
#   bash scripts/device/build_selftest.sh b4c409b     # -> .dev/ab/b4c409b.xz
#   bash scripts/device/build_selftest.sh .           # the working tree -> .dev/ab/tree-<HEAD>[-dirty].xz
#   bash scripts/device/selftest_ab.sh .dev/ab/b4c409b.xz .dev/ab/tree-<HEAD>.xz   # there; carry .dev/ab
#
# A commit is checked out into a fresh temporary worktree, which is removed afterwards: an A/B
# against a worktree left over from an earlier session once measured the wrong baseline.
# The binary is named after the commit it was built from, so the A/B's columns say what they are.
set -euo pipefail
rev=${1:?usage: build_selftest.sh REV|.}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
cleanup() {
  [ -n "${tree:-}" ] && [ "$tree" != "$root" ] && git -C "$root" worktree remove --force "$tree" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ "$rev" = . ]; then
  tree=$root
  name=tree-$(git -C "$root" rev-parse --short HEAD)
  git -C "$root" diff --quiet HEAD -- custom_ops || name=$name-dirty  # edits beyond HEAD: say so
else
  sha=$(git -C "$root" rev-parse --short --verify "$rev^{commit}")
  tree=$tmp/tree
  git -C "$root" worktree add --detach -q "$tree" "$sha"
  name=$sha
fi
src=$tree/custom_ops/src
# as scripts/device/stage.sh: the Hopper kernel its own sm_90a object, the rest sm_80 + sm_90
nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -Xcompiler -ffp-contract=off \
  -I "$src" -c "$src/cuda/flash/flash_sm90.cu" -o "$tmp/flash_sm90.o"
nvcc -std=c++17 -O3 --threads 0 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Xcompiler -fopenmp,-ffp-contract=off "$src/cuda/flash/flash_selftest.cu" "$src/cuda/flash/flash_fwd.cu" \
  "$src/cuda/flash/flash_decode.cu" "$src/cuda/flash/flash_decode_reg.cu" "$tmp/flash_sm90.o" -I "$src" \
  -o "$tmp/flash_selftest"
mkdir -p "$root/.dev/ab"
xz -T2 -6 -c "$tmp/flash_selftest" > "$root/.dev/ab/$name.xz"
echo "$root/.dev/ab/$name.xz"

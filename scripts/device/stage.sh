#!/usr/bin/env bash
# Prepare a CUDA validation batch for the lent GPU machine (run here, from the project's root).
#
#   bash scripts/device/stage.sh            # after bash ../shared/device/stage-ort-gpu.sh
#
# Each device command carries at most 64 MiB, and the tracked tree alone is ~19 MB, so the
# onnxruntime-gpu bundle of ../shared/device/stage-ort-gpu.sh (four ~47 MB parts) is re-split into
# five ~39 MB parts, and the flash selftest rides along with part 1, the package on its own:
#   .dev/og/q0 .. q4   bundle parts (q4 also holds assemble.sh)
#   .dev/og/x1         flash_selftest.xz (sm_80 + sm_90, the Hopper kernel sm_90a)
#   .dev/og/x2         pkg.tar.xz: `pip install --no-deps --target .dev/pkg .` of this tree
# Then, back to back (the machine is released after 30 s idle, and /tmp with it):
#   1. mkdir -p /tmp/ortp /tmp/tools && cp .dev/og/q0/* /tmp/ortp/                carry .dev/og/q0
#   2. cp .dev/og/q1/* /tmp/ortp/ && xz -dc .dev/og/x1/flash_selftest.xz > /tmp/tools/flash_selftest &&
#      chmod +x /tmp/tools/flash_selftest                                         carry .dev/og/q1 .dev/og/x1
#   3. cp .dev/og/q2/* /tmp/ortp/                                                  carry .dev/og/q2
#   4. cp .dev/og/q3/* /tmp/ortp/                                                  carry .dev/og/q3
#   5. cp .dev/og/x2/* /tmp/tools/                                                 carry .dev/og/x2
#   6. bash .dev/og/q4/assemble.sh && bash scripts/device/cuda_checks.sh         carry .dev/og/q4
# (one bundle part per command: a part with the package beside the ~19 MB tree passes 64 MiB)
set -euo pipefail
src=.dev/ort-gpu
out=.dev/og
[ -f "$src/p4/assemble.sh" ] || { echo "run bash ../shared/device/stage-ort-gpu.sh first" >&2; exit 2; }
sum=$(grep -o '[0-9a-f]\{64\}' "$src/p4/assemble.sh" | head -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat "$src"/p1/part00 "$src"/p2/part01 "$src"/p3/part02 "$src"/p4/part03 > "$tmp/bundle.tar"
echo "$sum  $tmp/bundle.tar" | sha256sum -c --quiet
rm -rf "$out" && mkdir -p "$out"/q0 "$out"/q1 "$out"/q2 "$out"/q3 "$out"/q4 "$out"/x1 "$out"/x2
split -n 5 -d "$tmp/bundle.tar" "$tmp/part"
for i in 0 1 2 3 4; do mv "$tmp/part0$i" "$out/q$i/"; done
cat > "$out/q4/assemble.sh" <<ASM
#!/usr/bin/env bash
# On the GPU machine: join the parts in /tmp/ortp (+ part04 here), unpack onnxruntime-gpu into /tmp/ort-gpu.
set -euo pipefail
cp "\$(dirname "\$0")"/part04 /tmp/ortp/
cd /tmp/ortp
cat part00 part01 part02 part03 part04 > bundle.tar
echo "$sum  bundle.tar" | sha256sum -c --quiet
tar xf bundle.tar
mkdir -p /tmp/ort-gpu
tar xJf rest.tar.xz -C /tmp/ort-gpu
xz -dc cuda.so.xz > /tmp/ort-gpu/onnxruntime/capi/libonnxruntime_providers_cuda.so
rm -f part0* bundle.tar
PYTHONPATH=/tmp/ort-gpu python3 -c "import onnxruntime as o; o.preload_dlls(); assert 'CUDAExecutionProvider' in o.get_available_providers()"
ASM
chmod +x "$out/q4/assemble.sh"
# the selftest of the working tree (xz: beside a bundle part and the tree it would pass the 64 MiB
# a device command carries)
mv "$(bash scripts/device/build_selftest.sh .)" "$out/x1/flash_selftest.xz"
rm -rf .dev/pkg && pip install -q --no-deps --target .dev/pkg .
tar -C .dev -cJf "$out/x2/pkg.tar.xz" pkg
du -sh "$out"/*

# Sourced by the amx microbenchmarks' run.sh: amx_build SRC OUT [compiler args...] compiles one
# benchmark source with the amx path's flags (read from custom_ops/src/cpu/isa/isa_list.def).
amx_build() {
  local src=$1 out=$2 root flags
  shift 2
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  flags=$(sed -n 's/^PASA_ISA(amx, "\(.*\)")/\1/p' "$root/custom_ops/src/cpu/isa/isa_list.def" | sed 's/\([a-z0-9-]*\)/-m\1/g')
  # shellcheck disable=SC2086
  ${CXX:-g++} -std=c++17 -O3 -DNDEBUG -ffp-contract=off -Wall -Wextra -Wno-maybe-uninitialized $flags \
    -I "$root/custom_ops/src" "$@" "$src" -o "$out"
}

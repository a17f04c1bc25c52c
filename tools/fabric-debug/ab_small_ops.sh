#!/bin/sh
# Small-operation rows of fabric-debug and the engine's ceiling, for two trees in one
# call on one machine: an earlier commit (staged in .base/) against the working tree,
# alternated row by row, so a change's effect is read against the same machine's noise.
#   on the CPU machine:  sh tools/fabric-debug/ab_small_ops.sh stage COMMIT
#                        (git archive of COMMIT into .base/, ignored through .git/info/exclude)
#   then, anywhere:      sh tools/fabric-debug/ab_small_ops.sh run
#                        (GPU machine: carry [".deps", ".lf2", ".base"])
# env for run: OUT (default ./ab-out), REPS (default 3), LF117 / LF2 prefixes as in
# run_small_ops.sh, ROWS (default "ceiling 117-shm lf2-shm lf2-shm-safe 117-tcp lf2-tcp";
# *-safe rows only for the working tree: TENDRIL_FI_THREADING=safe), PACK=1 (also pack
# OUT into OUT.tgz: the device tool brings back only a few files per call).
set -u
case "${1:-}" in
stage)
    [ -n "${2:-}" ] || { echo "usage: $0 stage COMMIT" >&2; exit 2; }
    rm -rf .base && mkdir .base && git archive "$2" | tar -x -C .base || exit 1
    rm -rf .base/tests/fixtures .base/docs .base/bench/bench_all_to_all/results
    grep -qx '/.base/' .git/info/exclude 2>/dev/null || echo '/.base/' >>.git/info/exclude
    echo "staged $(git rev-parse --short "$2") in .base ($(du -sh .base | cut -f1))"
    exit 0 ;;
run) ;;
*) echo "usage: $0 stage COMMIT | run" >&2; exit 2 ;;
esac
[ -d .base ] || { echo "$0: no .base (run '$0 stage COMMIT' first)" >&2; exit 2; }
R=$PWD
O=${OUT:-$R/ab-out}
REPS=${REPS:-3}
LF117=${LF117:-$R/.deps/usr}
LF2=${LF2:-$R/.lf2}
ROWS=${ROWS:-ceiling 117-shm lf2-shm lf2-shm-safe 117-tcp lf2-tcp}
mkdir -p "$O"
J=$(nproc)
build() { # src dir prefix
    cmake -S "$1" -B "$2" -DTENDRIL_CUDA=OFF -DTENDRIL_TESTS=OFF -DCMAKE_PREFIX_PATH="$3" \
        >"$O/cfg-$(basename "$2").log" 2>&1 &&
        cmake --build "$2" -j"$J" --target fabric-debug engine_ceiling >"$O/build-$(basename "$2").log" 2>&1 ||
        echo "build of $1 against $3 failed: $O/build-$(basename "$2").log"
}
for t in base new; do
    src=.base
    [ $t = new ] && src=.
    build $src /tmp/ab-$t-117 "$LF117" &
    [ -d "$LF2" ] && build $src /tmp/ab-$t-lf2 "$LF2" &
done
wait
A="--only single,latency --sizes 4K,64K --reps $REPS"
row() { # name env...
    n=$1
    shift
    echo "== $n: $*" >"$O/$n.txt"
    env TENDRIL_LOG=warn "$@" >>"$O/$n.txt" 2>&1
}
{ nproc; lscpu | grep -E "Model name|MHz"; } >"$O/machine.txt" 2>&1
for r in $ROWS; do
    for t in base new; do
        lib=$LF117/lib/x86_64-linux-gnu b=/tmp/ab-$t-117/bin
        case $r in lf2-*) lib=$LF2/lib b=/tmp/ab-$t-lf2/bin ;; esac
        [ -x $b/fabric-debug ] || continue
        env=""
        case $r in *-safe) [ $t = base ] && continue; env="TENDRIL_FI_THREADING=safe" ;; esac
        prov=shm
        case $r in *tcp*) prov=tcp ;; esac
        if [ $r = ceiling ]; then
            row $t-$r LD_LIBRARY_PATH=$lib $b/engine_ceiling --reps 7
        else
            # shellcheck disable=SC2086
            row $t-$r LD_LIBRARY_PATH=$lib $env $b/fabric-debug local --provider $prov $A
        fi
    done
done
cat "$O/machine.txt"
for r in $ROWS; do
    for t in base new; do
        f=$O/$t-$r.txt
        [ -f "$f" ] || continue
        echo "=== $t-$r"
        grep -E "engine_ceiling|^single|engine  |raw provider|KiB  " "$f"
    done
done
if [ "${PACK:-0}" = 1 ]; then
    tar czf "$O.tgz" -C "$(dirname "$O")" "$(basename "$O")" && echo "packed: $O.tgz"
fi

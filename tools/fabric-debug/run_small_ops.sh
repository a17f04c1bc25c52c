#!/bin/sh
# The fabric-debug section of docs/performance.md on one machine: the full tables (shm,
# tcp, libfabric 1.17), the small-operation rows (4 KiB and 64 KiB single writes, one
# write in flight, immediate round trip) with busy polling and with libfabric 2.x, and
# the engine's own ceiling (bench/engine_ceiling). Engine against raw libfabric in the
# same run throughout. Builds without CUDA. Usage, from the repo root:
#   sh tools/fabric-debug/run_small_ops.sh
# Optional: LF117=prefix with libfabric 1.17 headers (default .deps/usr if present),
# LF2=prefix of libfabric 2.x (default .lf2, else ~/.cache/tendril/libfabric-2.1.0-cuda),
# REPS (default 5), OUT (default ./fd-out), FULL=0 to leave out the full tables (a
# short device call), BUSY=0 to leave out the busy-poll rows. The rows named *-safe ask
# the provider for FI_THREAD_SAFE (TENDRIL_FI_THREADING=safe, the engine's level before
# it asked for FI_THREAD_COMPLETION), beside the default rows. Logs and a summary under $OUT.
OUT=${OUT:-$PWD/fd-out}
REPS=${REPS:-5}
mkdir -p "$OUT"
J=$(nproc)
LF117=${LF117:-}
[ -z "$LF117" ] && [ -d "$PWD/.deps/usr" ] && LF117=$PWD/.deps/usr
LF2=${LF2:-}
[ -z "$LF2" ] && [ -d "$PWD/.lf2" ] && LF2=$PWD/.lf2
[ -z "$LF2" ] && [ -d "$HOME/.cache/tendril/libfabric-2.1.0-cuda" ] && LF2=$HOME/.cache/tendril/libfabric-2.1.0-cuda
[ -n "$LF117" ] && export LD_LIBRARY_PATH=$LF117/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH

build() { # dir prefix
    P=""; [ -n "$2" ] && P="-DCMAKE_PREFIX_PATH=$2"
    cmake -S . -B "$1" -DTENDRIL_CUDA=OFF -DTENDRIL_TESTS=OFF $P >"$OUT/cfg-$(basename "$1").log" 2>&1 &&
        cmake --build "$1" -j"$J" --target fabric-debug engine_ceiling >"$OUT/build-$(basename "$1").log" 2>&1
}
build /tmp/tendril-fd-117 "$LF117" || { echo "build with libfabric 1.17 failed: $OUT"; exit 1; }
HAVE2=0
[ -n "$LF2" ] && build /tmp/tendril-fd-lf2 "$LF2" && HAVE2=1

ARGS="--only single,latency --sizes 4K,64K --reps $REPS"
run() { # name env... -- binary provider
    name=$1; shift
    echo "== $name: $*" >"$OUT/$name.txt"
    env "$@" >>"$OUT/$name.txt" 2>&1
}
{ nproc; uname -r; lscpu | grep -E "Model name|^CPU\(s\)|MHz"; } >"$OUT/machine.txt" 2>&1
F117=/tmp/tendril-fd-117/bin/fabric-debug
run ceiling /tmp/tendril-fd-117/bin/engine_ceiling --reps 7
# the submitting thread and the worker on one CPU: what sharing lines across cores costs
command -v taskset >/dev/null && run ceiling-1cpu taskset -c 1 /tmp/tendril-fd-117/bin/engine_ceiling --reps 7
if [ "${FULL:-1}" != 0 ]; then
    run 117-shm-full TENDRIL_LOG=warn $F117 local --provider shm --reps 3
    run 117-tcp-full TENDRIL_LOG=warn $F117 local --provider tcp --reps 3
fi
run 117-shm TENDRIL_LOG=warn $F117 local --provider shm $ARGS
run 117-shm-safe TENDRIL_FI_THREADING=safe $F117 local --provider shm $ARGS
[ "${BUSY:-1}" != 0 ] && run 117-shm-busy TENDRIL_BUSY_POLL=1 $F117 local --provider shm $ARGS
run 117-tcp TENDRIL_LOG=warn $F117 local --provider tcp $ARGS
run 117-tcp-safe TENDRIL_FI_THREADING=safe $F117 local --provider tcp $ARGS
[ "${BUSY:-1}" != 0 ] && run 117-tcp-busy TENDRIL_BUSY_POLL=1 $F117 local --provider tcp $ARGS
if [ $HAVE2 = 1 ]; then
    F2=/tmp/tendril-fd-lf2/bin/fabric-debug
    run lf2-shm LD_LIBRARY_PATH=$LF2/lib $F2 local --provider shm $ARGS
    run lf2-shm-safe LD_LIBRARY_PATH=$LF2/lib TENDRIL_FI_THREADING=safe $F2 local --provider shm $ARGS
    [ "${BUSY:-1}" != 0 ] && run lf2-shm-busy LD_LIBRARY_PATH=$LF2/lib TENDRIL_BUSY_POLL=1 $F2 local --provider shm $ARGS
    run lf2-tcp LD_LIBRARY_PATH=$LF2/lib $F2 local --provider tcp $ARGS
    run lf2-tcp-safe LD_LIBRARY_PATH=$LF2/lib TENDRIL_FI_THREADING=safe $F2 local --provider tcp $ARGS
fi
for f in "$OUT"/machine.txt "$OUT"/ceiling*.txt "$OUT"/117-*.txt "$OUT"/lf2-*.txt; do
    [ -f "$f" ] || continue
    echo "=== $(basename "$f" .txt)"
    grep -E "^==|^single|^paged|engine  |raw provider|KiB  |engine_ceiling:|^[0-9]|Model" "$f"
done

#!/bin/bash
# The GPU half of issue 13 in one GPU-machine call: build against libfabric 2.x with CUDA
# (shm moves device memory through CUDA IPC), then run every GPU engine test, fabric-debug
# --gpu 0 engine vs raw (64 KiB, 1 MiB, 64 KiB pages), KV-cache streaming and RL weight
# transfer on the GPU, and print a summary table last. A failing step does not stop the
# others; each step has a timeout and the whole run stays under ~8.5 minutes.
#
# STEPS=a2a (or "engine a2a") runs the all-to-all across nodes on this one GPU instead
# (issue 14): the NVLink suite against the restructured kernels (a2a_nvlink), the RDMA
# suite over shm and tcp, every rank a process with its own engine (a2a_rdma), and
# fabric-debug's a2a write pattern with device buffers, engine against raw (a2a_fd);
# each of the three can be named alone. a2a_bench (named alone, not part of a2a): the
# benchmark at EP2 over shm with GPU buffers (A2A_BENCH_ARGS, default a short decode).
# a2a_mps (named alone): that benchmark without and with the CUDA MPS daemon, host and GPU
# buffers, and the GPU-buffer RDMA tests under MPS (two rank processes on one GPU are
# time-sliced without it). a2a_hybrid (named alone): the benchmark at 2 nodes x 2 ranks.
#
#   usage (repo root, on the GPU machine): bash scripts/gpu-check.sh
#   env:  STEPS        step groups: engine, a2a              (default engine)
#         LF2_PREFIX   libfabric 2.x + CUDA install prefix   (default $PWD/.lf2)
#         DEPS_PREFIX  libfabric 1.17 headers + cmocka       (default $PWD/.deps/usr)
#         OUT          where logs go                         (default $PWD/gpu-out)
#         RL_GIB       RL model size in GiB of bf16          (default 4)
#         SKIP         step names not to run, e.g. "fabric-debug.host kv_cache.host"
#         PACK         1: pack the logs into $OUT.tgz at the end (one file to fetch)
#         A2A_RDMA_PROVIDERS  providers of the a2a RDMA suite   (default "shm tcp")
#         A2A_RDMA_ARGS       extra pytest arguments for it, e.g. "-k gpu_buffers"
#         A2A_BENCH_ARGS      bench_all_to_all flags of a2a_bench (default: --modes decode --iters 50)
# Both prefixes are staged by scripts/stage-device.sh; GPU steps require GPU registration
# (TENDRIL_GPU_REQUIRE_HMEM=1): a provider without FI_HMEM is a failure here, not a skip.
set -u
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
LF2=${LF2_PREFIX:-$ROOT/.lf2}
DEPS=${DEPS_PREFIX:-$ROOT/.deps/usr}
B=${BUILD_DIR:-/tmp/tendril-gpu-check}
RL_GIB=${RL_GIB:-4}
STEPS=${STEPS:-engine}
want() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
want a2a && STEPS="$STEPS a2a_nvlink a2a_rdma a2a_fd"
BUDGET=${BUDGET_S:-510} # seconds for the whole run
mkdir -p "$OUT"
: >"$OUT/summary.tsv"

# libfabric 2.x first (its libfabric.so.1 wins over the system's 1.17), cmocka from DEPS,
# and the CUDA runtime that libfabric dlopens for FI_HMEM.
LDP="$LF2/lib:$DEPS/lib/x86_64-linux-gnu"
[ -d /usr/local/cuda/lib64 ] && LDP="$LDP:/usr/local/cuda/lib64"
export LD_LIBRARY_PATH="$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$ROOT/python:$B/python"
export PYTHONUNBUFFERED=1 TENDRIL_LOG=${TENDRIL_LOG:-warn}

left() { echo $((BUDGET - SECONDS)); }

# step NAME TIMEOUT CMD...: runs CMD with its output in $OUT/NAME.log; records status
# (ok, FAIL rc, SKIP, TIMEOUT), seconds and the most telling line.
step() {
    local name=$1 t=$2
    shift 2
    local l
    case " ${SKIP:-} " in *" $name "*)
        printf '%s\tskipped\t0\tSKIP names it\n' "$name" >>"$OUT/summary.tsv"
        return ;;
    esac
    l=$(left)
    [ "$t" -gt $((l - 10)) ] && t=$((l - 10))
    if [ "$t" -lt 5 ]; then
        printf '%s\tNOT RUN\t0\tno time left\n' "$name" >>"$OUT/summary.tsv"
        return
    fi
    local t0=$SECONDS rc
    timeout -k 5 "$t" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    local st="ok"
    case $rc in
    0) st=ok ;;
    77) st=SKIP ;;
    124 | 137) st="TIMEOUT(${t}s)" ;;
    *) st="FAIL rc=$rc" ;;
    esac
    local key
    key=$(grep -aE '^(RESULT|SKIP|FAIL)|VERIFY|per layer|check failed' "$OUT/$name.log" | tail -1 | cut -c1-150)
    # fabric-debug: engine/raw ratio of each row
    if grep -aqE '^(single|paged) ' "$OUT/$name.log" && ! grep -aq VERIFY "$OUT/$name.log"; then
        key="engine/raw GB/s ratio: $(awk '/^(single|paged) /{printf "%s%s %s%s x%s=%s", sep, $1, $2, $3, $4, $8; sep="; "}' "$OUT/$name.log")"
    fi
    [ -z "$key" ] && key=$(tail -1 "$OUT/$name.log" | cut -c1-150)
    printf '%s\t%s\t%s\t%s\n' "$name" "$st" $((SECONDS - t0)) "$key" >>"$OUT/summary.tsv"
    echo "[$(date -u +%T)] $name: $st ($((SECONDS - t0)) s)"
}

# The table of every step, last; the exit status says whether all were ok or skipped.
# PACK=1: the logs leave as one file, $OUT.tgz (the device tool returns a few files
# only), and the folder is removed.
summary() {
    echo "=== summary (logs in $OUT)"
    column -t -s "$(printf '\t')" "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
    local st=0
    grep -qv "	ok	\|	SKIP	\|	skipped	" "$OUT/summary.tsv" && st=1
    if [ "${PACK:-0}" = 1 ]; then
        tar czf "$OUT.tgz" -C "$(dirname "$OUT")" "$(basename "$OUT")" && rm -rf "$OUT" && echo "logs packed: $OUT.tgz"
    fi
    return $st
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    uname -r
    nproc
    echo "LF2_PREFIX=$LF2 DEPS_PREFIX=$DEPS"
    ls "$LF2/lib" 2>&1 | grep -a libfabric
    git -C "$ROOT" log --oneline -1 2>/dev/null
} >"$OUT/machine.log" 2>&1
if [ -x "$LF2/bin/fi_info" ]; then
    { "$LF2/bin/fi_info" --version; echo "--- shm with FI_HMEM"; "$LF2/bin/fi_info" -p shm -c FI_HMEM; } >"$OUT/fi_info.log" 2>&1
fi
[ -f "$LF2/include/rdma/fabric.h" ] || echo "WARNING: $LF2/include/rdma/fabric.h missing (set LF2_PREFIX)" | tee -a "$OUT/machine.log"

G=""
command -v ninja >/dev/null && G="-G Ninja"
step configure 120 cmake -S "$ROOT" -B "$B" $G -DTENDRIL_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$LF2;$DEPS" -DPython3_EXECUTABLE="$(command -v python3)"
grep -a "FABRIC_INCLUDE_DIR:\|FABRIC_LIBRARY:" "$B/CMakeCache.txt" >>"$OUT/machine.log" 2>/dev/null
step build 300 cmake --build "$B" -j16 --target gpu_fabric_hmem_probe gpu_registration gpu_imm_flag \
    gpu_ops fabric-debug kv_cache_streaming
# apart: without Python development files there is no _tendril target (RL then skips)
step build_python 120 cmake --build "$B" -j16 --target _tendril
X=$B/bin

A2A_ENV="PYTHONPATH=$ROOT/python:$B/python NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1"
want a2a_nvlink && step a2a.nvlink 240 env $A2A_ENV python3 "$ROOT/tests/gpu/run_gpu_tests.py"
if want a2a_rdma; then
    # shm with GPU buffers must work here (libfabric 2.x with CUDA); tcp has no FI_HMEM,
    # so its GPU-buffer tests skip with that reason
    for p in ${A2A_RDMA_PROVIDERS:-shm tcp}; do
        req=0
        [ "$p" = shm ] && req=1
        # shellcheck disable=SC2086 # A2A_RDMA_ARGS: extra pytest arguments (-k ...)
        step a2a_rdma.$p 300 env $A2A_ENV TENDRIL_TEST_PROVIDER=$p TENDRIL_GPU_REQUIRE_HMEM=$req \
            python3 "$ROOT/tests/gpu/run_gpu_tests.py" test_a2a_rdma.py ${A2A_RDMA_ARGS:-}
    done
fi
if want a2a_fd; then
    for m in decode prefill; do
        python3 "$ROOT/tools/a2a_model/a2a_model.py" --pattern $m --ep 8 --nvlink 1 --pattern-out "$OUT/$m-ep8-nvl1.txt"
        step fabric-debug.a2a.$m 90 "$X/fabric-debug" local --provider shm --gpu 0 --only a2a \
            --a2a-pattern "$OUT/$m-ep8-nvl1.txt" --reps 3 --verify --json "$OUT/fabric-debug.a2a.$m.json"
    done
fi
if want a2a_bench; then
    # bench_all_to_all, two ranks on this GPU, RDMA between them over shm with GPU buffers:
    # the per-iteration trace and proxy timing of issue 14 (A2A_BENCH_ARGS: other flags)
    # shellcheck disable=SC2086
    step a2a_bench 300 env $A2A_ENV TENDRIL_GPU_REQUIRE_HMEM=1 python3 "$ROOT/bench/bench_all_to_all/bench_all_to_all.py" \
        --world-size 2 --nvlink 1 --provider shm --rdma-buffers gpu \
        ${A2A_BENCH_ARGS:---modes decode --iters 50} --json "$OUT/a2a_bench.json"
fi
if want a2a_mps; then
    # The ~2 ms between a proxy's last write and the receiver seeing its flag, and the
    # GPU-buffer tests that time out over shm: both rank processes share this one GPU as
    # separate contexts, which the GPU time-slices (a spinning kernel of one rank holds the
    # GPU for its slice while the other's copies and kernels wait). MPS runs the contexts
    # side by side. The same bench without and with the MPS daemon, then the GPU-buffer
    # tests under it; the daemon is stopped again at the end (the machine stays as found).
    B_ARGS="--world-size 2 --nvlink 1 --provider shm --modes decode --iters 50 --no-nccl"
    # The GPU-buffer tests with each rank's kernels on its share of the SMs (as the tests
    # choose) and on a quarter of the SMs (TENDRIL_TEST_NUM_SMS): shm's copies into the
    # receiver may need SMs of their own while the receive kernels spin; under MPS also
    # with every module loaded at start (CUDA_MODULE_LOADING=EAGER: a lazily loaded copy
    # kernel can wait for the spinning receive kernel).
    GB="python3 $ROOT/tests/gpu/run_gpu_tests.py test_a2a_rdma.py -k gpu_buffers"
    GB_ENV="$A2A_ENV TENDRIL_TEST_PROVIDER=shm TENDRIL_GPU_REQUIRE_HMEM=1"
    # shellcheck disable=SC2086
    step a2a_rdma.shm.gpu_buffers.nomps 120 env $GB_ENV $GB
    # shellcheck disable=SC2086
    step a2a_rdma.shm.gpu_buffers.nomps.sms33 120 env $GB_ENV TENDRIL_TEST_NUM_SMS=33 $GB
    # shellcheck disable=SC2086
    step a2a_bench.gpu.nomps 150 env $A2A_ENV TENDRIL_GPU_REQUIRE_HMEM=1 python3 \
        "$ROOT/bench/bench_all_to_all/bench_all_to_all.py" $B_ARGS --rdma-buffers gpu --json "$OUT/a2a_bench.gpu.nomps.json"
    if command -v nvidia-cuda-mps-control >/dev/null; then
        export CUDA_MPS_PIPE_DIRECTORY=/tmp/tendril-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/tendril-mps/log
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        nvidia-cuda-mps-control -d >"$OUT/mps.log" 2>&1 && trap 'echo quit | nvidia-cuda-mps-control' EXIT
        # shellcheck disable=SC2086
        step a2a_bench.gpu.mps 150 env $A2A_ENV TENDRIL_GPU_REQUIRE_HMEM=1 python3 \
            "$ROOT/bench/bench_all_to_all/bench_all_to_all.py" $B_ARGS --rdma-buffers gpu --json "$OUT/a2a_bench.gpu.mps.json"
        # shellcheck disable=SC2086
        step a2a_bench.host.mps 150 env $A2A_ENV python3 \
            "$ROOT/bench/bench_all_to_all/bench_all_to_all.py" $B_ARGS --rdma-buffers host --json "$OUT/a2a_bench.host.mps.json"
        # shellcheck disable=SC2086
        step a2a_rdma.shm.gpu_buffers.mps 120 env $GB_ENV $GB
        # shellcheck disable=SC2086
        step a2a_rdma.shm.gpu_buffers.mps.sms33 120 env $GB_ENV TENDRIL_TEST_NUM_SMS=33 $GB
        # shellcheck disable=SC2086
        step a2a_rdma.shm.gpu_buffers.mps.eager 120 env $GB_ENV CUDA_MODULE_LOADING=EAGER $GB
        cp -r "$CUDA_MPS_LOG_DIRECTORY" "$OUT/mps-log" 2>/dev/null
        echo quit | nvidia-cuda-mps-control
        trap - EXIT
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    else
        printf 'mps\tSKIP\t0\tnvidia-cuda-mps-control not on PATH\n' >>"$OUT/summary.tsv"
    fi
    for f in "$OUT"/a2a_bench.*.log; do
        [ -f "$f" ] && { echo "=== $(basename "$f" .log)"; grep -a -iE "dispatch|combine|trace|doorbell|flag|p50" "$f" | head -30; }
    done
fi
if want a2a_hybrid; then
    # hybrid: 2 "nodes" of 2 ranks, NVLink (CUDA IPC) inside a node, RDMA over shm between
    # them, host RDMA buffers (auto on shm), decode and prefill
    # shellcheck disable=SC2086
    step a2a_bench.hybrid 200 env $A2A_ENV python3 "$ROOT/bench/bench_all_to_all/bench_all_to_all.py" \
        --world-size 4 --nvlink 2 --provider shm --modes decode,prefill --iters 50 --prefill-iters 10 \
        --no-nccl --json "$OUT/a2a_bench.hybrid.json"
fi
if ! want engine; then
    summary
    exit
fi

export TENDRIL_TEST_PROVIDER=shm
step hmem_probe 30 "$X/gpu_fabric_hmem_probe"
step gpu_registration.shm 60 "$X/gpu_registration"
step gpu_imm_flag.shm 60 "$X/gpu_imm_flag"
TENDRIL_GPU_REQUIRE_HMEM=1 step gpu_ops.shm 120 "$X/gpu_ops"
TENDRIL_TEST_PROVIDER=tcp step gpu_ops.tcp 60 "$X/gpu_ops"

FD="--provider shm --only single,paged --sizes 64K,1M --reps 5 --verify"
step fabric-debug.gpu 150 "$X/fabric-debug" local $FD --gpu 0 --json "$OUT/fabric-debug.gpu.json"
step fabric-debug.host 90 "$X/fabric-debug" local $FD --json "$OUT/fabric-debug.host.json"

KV="--provider shm --layers 32 --pages 64 --page-kb 64 --ctx-kb 16 --compute-us 1000 --requests 5"
TENDRIL_GPU_REQUIRE_HMEM=1 step kv_cache.gpu 90 "$X/kv_cache_streaming" $KV --gpu 0
step kv_cache.host 60 "$X/kv_cache_streaming" $KV

TENDRIL_GPU_REQUIRE_HMEM=1 step rl_weights.gpu 240 python3 "$ROOT/examples/rl_weight_transfer/torch_gpu.py" \
    --provider shm --size-gib "$RL_GIB" --steps 4

echo
echo "=== machine"; cat "$OUT/machine.log"
[ -f "$OUT/fi_info.log" ] && { echo "=== fi_info"; head -20 "$OUT/fi_info.log"; }
echo "=== registration"; grep -a "RESULT" "$OUT/gpu_registration.shm.log"
echo "=== gpu_ops.shm"; tail -22 "$OUT/gpu_ops.shm.log"
for f in fabric-debug.gpu fabric-debug.host; do echo "=== $f"; grep -a -A8 "^op " "$OUT/$f.log"; done
for f in kv_cache.gpu kv_cache.host; do echo "=== $f"; grep -a "^decoder\|^request" "$OUT/$f.log"; done
echo "=== rl_weights.gpu"; grep -a "^model\|^schedule\|^step\|RESULT\|FAIL\|SKIP" "$OUT/rl_weights.gpu.log"
for f in configure build build_python; do
    grep -q "^$f	ok" "$OUT/summary.tsv" || { echo "=== $f log (tail)"; tail -30 "$OUT/$f.log"; }
done
summary

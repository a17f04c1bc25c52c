#!/bin/bash
# Latency breakdown of the dispatch kernels on the GPU machine: builds a second tree
# (build-trace, -DTENDRIL_A2A_TRACE=ON), runs a short decode benchmark whose kernels print
# per-phase timestamps for three epochs, and summarises them (trace_summary.py).
#   bench/bench_all_to_all/device_trace.sh OUTDIR [bench args...]
set -o pipefail
out=${1:-/tmp/a2a-trace}; shift || true
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [ ! -f build-trace/build.ninja ]; then
  cmake -S . -B build-trace -G Ninja -DCMAKE_PREFIX_PATH=$PWD/.deps/usr -DTENDRIL_TESTS=OFF \
    -DTENDRIL_A2A_TRACE=ON >"$out/trace-configure.log" 2>&1 || { tail -30 "$out/trace-configure.log"; exit 1; }
fi
cmake --build build-trace --target _tendril -j16 >"$out/trace-build.log" 2>&1 \
  || { tail -40 "$out/trace-build.log"; exit 1; }
A2A_TRACE_OUT=$out/trace PYTHONPATH=$PWD/python:$PWD/build-trace/python timeout ${TRACE_TIMEOUT:-120} \
  python3 bench/bench_all_to_all/bench_all_to_all.py --modes decode --warmup 20 --iters 10 --profile-iters 0 "$@" \
  >"$out/trace.log" 2>&1
echo "trace bench rc=$?"
cat "$out"/trace.r* | python3 bench/bench_all_to_all/trace_summary.py >"$out/trace-summary.txt" 2>&1
cat "$out/trace-summary.txt"

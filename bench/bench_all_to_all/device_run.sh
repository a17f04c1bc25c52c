#!/bin/bash
# Build the a2a targets, run the GPU tests and the benchmark on the GPU machine.
#   [LF2_PREFIX=$PWD/.lf2] bench/bench_all_to_all/device_run.sh OUTDIR [tests|bench|all] [bench args...]
# Needs .deps (scripts/stage-device.sh) for the top-level configure. With LF2_PREFIX it
# builds (in build-lf2) and runs against libfabric 2.x with CUDA, whose shm registers GPU
# memory (P2PAllToAll rdma_buffers "gpu"); libfabric 1.17 cannot, so "auto" takes host memory.
set -o pipefail
# the all-to-all's Python module: its own target _a2a, or (since the host's RDMA work)
# a part of _tendril
py_targets() { if grep -q '^build _a2a:' "$1/build.ninja"; then echo "_a2a _tendril"; else echo _tendril; fi; }
out=${1:-/tmp/a2a-out}; what=${2:-all}; shift 2 || true
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
B=build PREFIX=$PWD/.deps/usr LDP=$PWD/.deps/usr/lib/x86_64-linux-gnu
if [ -n "${LF2_PREFIX:-}" ]; then
  B=build-lf2 PREFIX="$LF2_PREFIX;$PREFIX" LDP="$LF2_PREFIX/lib:$LDP"
  [ -d /usr/local/cuda/lib64 ] && LDP="$LDP:/usr/local/cuda/lib64"  # libfabric dlopens the CUDA runtime
fi
export LD_LIBRARY_PATH=$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$PWD/python:$PWD/$B/python
t0=$(date +%s)
if [ ! -f $B/build.ninja ]; then
  cmake -S . -B $B -G Ninja "-DCMAKE_PREFIX_PATH=$PREFIX" -DTENDRIL_TESTS=OFF >"$out/configure.log" 2>&1 \
    || { tail -30 "$out/configure.log"; exit 1; }
fi
cmake --build $B --target $(py_targets $B) -j16 >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "build ok in $(( $(date +%s) - t0 )) s"
if [ "$what" = all ] || [ "$what" = tests ]; then
  timeout ${TEST_TIMEOUT:-330} python3 tests/gpu/run_gpu_tests.py >"$out/tests.log" 2>&1
  echo "tests rc=$? ($(( $(date +%s) - t0 )) s)"; grep -E "^\[EP|passed|failed|Error|error|assert" "$out/tests.log" | tail -40
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  timeout ${BENCH_TIMEOUT:-200} python3 bench/bench_all_to_all/bench_all_to_all.py --json "$out/bench.json" "$@" >"$out/bench.log" 2>&1
  echo "bench rc=$? ($(( $(date +%s) - t0 )) s)"; tail -30 "$out/bench.log"
fi
if [ "$what" = ncu ]; then
  timeout ${NCU_TIMEOUT:-150} ncu --target-processes all --clock-control none -k regex:k_ --launch-skip 40 --launch-count 12 \
    --section SpeedOfLight --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis \
    python3 bench/bench_all_to_all/bench_all_to_all.py --warmup 3 --iters 6 --prefill-iters 2 "$@" >"$out/ncu.log" 2>&1
  echo "ncu rc=$? ($(( $(date +%s) - t0 )) s)"
  grep -E "^  k_|Duration|Memory Throughput|DRAM Throughput|Stall|Warp Cycles Per Issued|Registers|Achieved Occupancy" "$out/ncu.log" | head -120
fi

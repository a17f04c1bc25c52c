#!/bin/bash
# Build the a2a targets, run the GPU tests and the benchmark on the GPU machine.
#   bench/bench_all_to_all/device_run.sh OUTDIR [tests|bench|all] [bench args...]
# Needs .deps (../shared/device/prepare-deps.sh) for the top-level configure.
set -o pipefail
out=${1:-/tmp/a2a-out}; what=${2:-all}; shift 2 || true
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$PWD/python:$PWD/build/python
t0=$(date +%s)
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH=$PWD/.deps/usr -DTENDRIL_TESTS=OFF >"$out/configure.log" 2>&1 \
    || { tail -30 "$out/configure.log"; exit 1; }
fi
cmake --build build --target _tendril -j16 >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
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

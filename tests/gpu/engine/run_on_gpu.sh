#!/bin/sh
# One GPU-machine run of the engine's GPU work: build only these targets, run the
# probe, the tests and the watcher benchmark; logs under $OUT (or ./gpu-out), a short
# summary last. Usage (repo root): sh tests/gpu/engine/run_on_gpu.sh
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH
B=/tmp/tendril-gpu-engine
G=""; command -v ninja >/dev/null && G="-G Ninja"
cmake -S . -B $B $G -DTENDRIL_CUDA=ON -DCMAKE_PREFIX_PATH=$PWD/.deps/usr >"$OUT/cfg.log" 2>&1 || { tail -30 "$OUT/cfg.log"; exit 1; }
cmake --build $B -j16 --target unit_watcher integ_imm_flag gpu_fabric_hmem_probe gpu_registration \
  gpu_watcher gpu_imm_flag gpu_ops watcher_latency >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
X=$B/bin
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; uname -r; } >"$OUT/machine.log" 2>&1
{ command -v fi_info && fi_info --version && echo "--- fi_info -c FI_HMEM" && fi_info -c FI_HMEM; } >"$OUT/fi_info.log" 2>&1
run() { name=$1; shift; timeout 60 "$@" >"$OUT/$name.log" 2>&1; echo "$name rc=$?" >>"$OUT/summary.log"; }
: >"$OUT/summary.log"
run probe $X/gpu_fabric_hmem_probe
run unit_watcher $X/unit_watcher
for p in tcp shm; do TENDRIL_TEST_PROVIDER=$p run integ_imm_flag.$p $X/integ_imm_flag; done
TENDRIL_LOG=info run gpu_registration $X/gpu_registration
run gpu_watcher $X/gpu_watcher
for p in tcp shm; do TENDRIL_TEST_PROVIDER=$p run gpu_imm_flag.$p $X/gpu_imm_flag; done
TENDRIL_TEST_PROVIDER=shm run gpu_ops.shm $X/gpu_ops # skips on libfabric 1.17 (scripts/gpu-check.sh: 2.x)
run watcher_latency $X/watcher_latency --events 20000 --json "$OUT/watcher_latency.json"
echo "=== machine"; cat "$OUT/machine.log"
echo "=== fi_info"; head -40 "$OUT/fi_info.log"
echo "=== probe"; cat "$OUT/probe.log"
echo "=== registration"; grep -E "RESULT|rejected|ok$" "$OUT/gpu_registration.log"; tail -3 "$OUT/gpu_registration.log"
for f in gpu_watcher gpu_imm_flag.tcp gpu_imm_flag.shm gpu_ops.shm unit_watcher integ_imm_flag.tcp integ_imm_flag.shm; do echo "=== $f"; tail -4 "$OUT/$f.log"; done
echo "=== bench"; cat "$OUT/watcher_latency.log"
echo "=== summary"; cat "$OUT/summary.log"

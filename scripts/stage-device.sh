#!/bin/bash
# Stages, inside this checkout, what the GPU machine lacks for a build, in two folders
# git ignores (so the device tool carries them only when asked: carry [".deps", ".lf2"]):
#   .deps/  libfabric 1.17 headers + cmocka, from Debian's packages (the GPU machine has
#           libfabric 1.17's runtime, /lib/x86_64-linux-gnu/libfabric.so.1, but no headers
#           and no cmocka; .deps' libfabric.so points at that runtime)
#   .lf2/   a copy of the libfabric 2.x build with CUDA (scripts/libfabric2.sh)
# and prints how to configure and run with each there (docs/gpu-memory.md, "Building on
# the GPU machine", says the same).
#   usage: scripts/stage-device.sh        (from anywhere; stages into the checkout's root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { echo "stage-device: $*" >&2; }

stage_deps() {
  local dir=.deps work
  work=$(mktemp -d /tmp/tendril-deps.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  # The machine's own apt lists: these are bookworm's packages, the same 1.17 ABI as the
  # GPU machine's runtime (Ubuntu 24.04 ships libfabric 1.17 too).
  (cd "$work" && apt-get download -qq libfabric-dev libcmocka-dev libcmocka0 >/dev/null 2>&1) || {
    apt-get update -qq >/dev/null
    (cd "$work" && apt-get download -qq libfabric-dev libcmocka-dev libcmocka0 >/dev/null)
  }
  rm -rf "$dir"
  mkdir -p "$dir"
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$dir"; done
  # libfabric-dev's libfabric.so points at libfabric.so.1 beside it, which is not staged:
  # point it at the GPU machine's runtime instead.
  ln -sf /lib/x86_64-linux-gnu/libfabric.so.1 "$dir/usr/lib/x86_64-linux-gnu/libfabric.so"
  rm -f "$dir/usr/lib/x86_64-linux-gnu/libfabric.a" # never link a static copy by mistake
  [ -f "$dir/usr/include/rdma/fabric.h" ] && [ -f "$dir/usr/include/cmocka.h" ] ||
    { log ".deps lacks fabric.h or cmocka.h"; exit 1; }
  log ".deps: libfabric $(dpkg-deb -f "$work"/libfabric-dev_*.deb Version) headers, cmocka ($(du -sh "$dir" | cut -f1))"
}

stage_lf2() {
  scripts/libfabric2.sh "$root/.lf2" >/dev/null
  log ".lf2: $(grep -h '^Version' .lf2/lib/pkgconfig/libfabric.pc) with CUDA (dlopen) ($(du -sh .lf2 | cut -f1))"
}

stage_deps
stage_lf2

cat <<'MSG'
Staged .deps and .lf2. On the GPU machine (carry [".deps", ".lf2"]), from the repo root:

  # against the machine's libfabric 1.17 (no CUDA support: GPU registration is refused)
  cmake -S . -B build-gpu -DTENDRIL_CUDA=ON -DCMAKE_PREFIX_PATH=$PWD/.deps/usr
  cmake --build build-gpu -j16
  cd build-gpu && ctest -L gpu --output-on-failure

  # against libfabric 2.x with CUDA: .lf2 first, so its headers and library win; the
  # tests' RUNPATH points at .lf2/lib; LD_LIBRARY_PATH adds the CUDA toolkit's lib64
  # because libfabric dlopens the unversioned libcudart.so (and libcuda.so.1)
  cmake -S . -B build-gpu-lf2 -DTENDRIL_CUDA=ON "-DCMAKE_PREFIX_PATH=$PWD/.lf2;$PWD/.deps/usr"
  cmake --build build-gpu-lf2 -j16
  export LD_LIBRARY_PATH=$PWD/.lf2/lib:/usr/local/cuda/lib64
  .lf2/bin/fi_info -p shm -c FI_HMEM | head -3       # shm must list FI_HMEM
  cd build-gpu-lf2 && ctest -R 'unit.fabric_version|gpu.engine' --output-on-failure
MSG

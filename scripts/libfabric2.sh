#!/bin/bash
# Builds libfabric 2.x from Debian's source package, with CUDA support, into a cached
# prefix, and prints that prefix on its last line. Used by `make test` (the suites run
# against Debian's libfabric 1.17 and against this build) and by scripts/stage-device.sh
# (the GPU machine runs GPU memory through this build's shm provider).
#
#   usage: scripts/libfabric2.sh [DEST]
#     builds (once) into $TENDRIL_LF2_CACHE (default ~/.cache/tendril/libfabric-<ver>-cuda);
#     with DEST, also copies the finished prefix there (a relocatable copy: the providers
#     we use are built into libfabric.so, so nothing depends on the install path).
#
# Why from apt: bookworm carries 1.17; trixie's source index carries 2.1. A private
# sources list with only a deb-src line for trixie leaves the machine's apt setup alone,
# and apt checks the tarball against the signed index. Only the upstream .orig tarball
# is used (the Debian packaging is not needed, and its files are not always served).
#
# Why these configure options: --with-cuda + --enable-cuda-dlopen give shm/sm2 FI_HMEM
# (CUDA IPC) while loading CUDA only at run time, so the same build runs on the CPU
# machines (no driver) and on the GPU machine. At run time it dlopens libcuda.so.1 (the
# driver's) and libcudart.so (unversioned: the toolkit's lib64 must be on the loader
# path, see docs/gpu-memory.md); without either it simply offers no FI_HMEM. CUDA's configure check includes nvml.h,
# which the toolkit here lacks; PyPI's nvidia-nvml-dev ships it.
set -euo pipefail

LF2_VERSION=2.1.0
NVML_DEV="nvidia-nvml-dev==13.0.87"
cache=${TENDRIL_LF2_CACHE:-${HOME}/.cache/tendril/libfabric-${LF2_VERSION}-cuda}
cuda=${CUDA_HOME:-/usr/local/cuda}
stamp="$cache/.tendril-built"
want="version=$LF2_VERSION cuda=$cuda"

log() { echo "libfabric2: $*" >&2; }

build() {
  local work
  work=$(mktemp -d /tmp/tendril-lf2.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT

  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  local tools="autoconf automake libtool make gcc python3-pip"
  local missing=""
  for p in $tools; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    log "installing$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  fi

  log "fetching the source package (trixie) through apt"
  mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$work/apt/sources.list"
  local o=(-o "Dir::Etc::sourcelist=$work/apt/sources.list" -o "Dir::Etc::sourceparts=/nonexistent"
           -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
           -o "APT::Sandbox::User=root")
  apt-get "${o[@]}" -qq update
  # The .dsc and Debian tarball may be missing from the mirror (they 404 at times); the
  # .orig tarball is what we build, and apt has checked its hash against the index.
  (cd "$work/src" && apt-get "${o[@]}" -qq source --download-only libfabric >/dev/null 2>&1) || true
  local orig
  orig=$(ls "$work/src"/libfabric_"${LF2_VERSION}".orig.tar.* 2>/dev/null | head -1 || true)
  [ -n "$orig" ] || { log "apt did not deliver libfabric_${LF2_VERSION}.orig.tar.* (trixie's index may have moved on: update LF2_VERSION)"; exit 1; }
  tar -C "$work/src" -xf "$orig"

  log "fetching nvml.h ($NVML_DEV) from PyPI"
  python3 -m pip download -q --no-deps -d "$work/nvml" "$NVML_DEV"
  mkdir -p "$work/nvml/x"
  (cd "$work/nvml/x" && python3 -m zipfile -e "$work"/nvml/*.whl .)
  local nvml_inc
  nvml_inc=$(dirname "$(find "$work/nvml/x" -name nvml.h | head -1)")
  [ -f "$nvml_inc/nvml.h" ] || { log "nvml.h not found in $NVML_DEV"; exit 1; }

  log "configuring and building (about a minute on 2 cores)"
  cd "$work/src/libfabric-${LF2_VERSION}"
  [ -x configure ] || ./autogen.sh >/dev/null 2>&1
  rm -rf "$cache"
  # Only the providers that run without hardware or matter to users of this build:
  # shm/sm2 (CUDA IPC), tcp + rxm. Others are off to keep the build short.
  ./configure -q --prefix="$cache" --disable-static \
    --with-cuda="$cuda" --enable-cuda-dlopen CPPFLAGS="-I$nvml_inc" \
    --enable-shm --enable-sm2 --enable-tcp --enable-rxm --enable-rxd=no --enable-udp=no \
    --enable-efa=no --enable-verbs=no --enable-psm2=no --enable-psm3=no --enable-opx=no \
    --enable-usnic=no --enable-ucx=no --enable-lpp=no --enable-mrail=no --enable-sockets=no \
    --enable-hook_debug=no --enable-hook_hmem=no --enable-dmabuf_peer_mem=no \
    --enable-perf=no --enable-trace=no --enable-profile=no --enable-monitor=no \
    >"$work/configure.log" 2>&1 || { tail -40 "$work/configure.log" >&2; exit 1; }
  grep -q "#define HAVE_CUDA 1" config.h || { log "configure did not enable CUDA"; exit 1; }
  make -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -40 "$work/make.log" >&2; exit 1; }
  make install >/dev/null
  rm -rf "$cache/share/man" "$cache/share/doc"
  echo "$want" > "$stamp"
  log "installed in $cache ($(du -sh "$cache" | cut -f1))"
}

# One build at a time per cache (parallel make targets, several checkouts on one machine);
# stdout carries only the prefix, so callers can use $(scripts/libfabric2.sh): apt's and
# the build's chatter goes to stderr.
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock -w 1800 9 || { log "timed out waiting for another build of $cache"; exit 1; }
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  (build) >&2
fi

if [ $# -ge 1 ]; then
  dest=$1
  rm -rf "$dest"
  mkdir -p "$dest"
  cp -a "$cache/." "$dest/"
  cache=$(cd "$dest" && pwd)
fi
echo "$cache"

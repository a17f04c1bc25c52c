#!/bin/sh
# Installs the Debian packages the build and the tests need, only those missing.
# Used by `make run` and `make test`; safe to run repeatedly. Needs root (or sudo).
set -eu
pkgs="build-essential cmake pkg-config libfabric-dev libfabric-bin libcmocka-dev
      libibverbs-dev python3 python3-dev python3-pytest python3-numpy clang iproute2"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing

#!/bin/sh
# Installs the build in BUILD_DIR into a scratch prefix and builds a consumer program
# against it twice: with CMake's find_package(tendril) and with pkg-config. Runs both.
set -eu
build=$1
src=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/consumer" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/cm/consumer"
pc=$(find "$tmp/prefix" -name tendril.pc -printf '%h')
PKG_CONFIG_PATH="$pc" cc -o "$tmp/pc-consumer" "$src/consumer/main.c" \
  $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs tendril)
LD_LIBRARY_PATH="$tmp/prefix/lib:$tmp/prefix/lib64:${LD_LIBRARY_PATH:-}" "$tmp/pc-consumer"

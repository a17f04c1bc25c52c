#!/bin/sh
# The API boundary of the installed library: installs BUILD_DIR into a scratch prefix and
# compares `nm -D --defined-only` of its libtendril.so with the functions that the
# installed headers te.h and te_topo.h declare, in both directions. (a2a.h's functions
# belong to the all-to-all library, not to libtendril.)
set -eu
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
lib=$(find "$tmp/prefix" -name 'libtendril.so' | head -n 1)
[ -n "$lib" ] || { echo "FAIL: no libtendril.so installed"; exit 1; }
# Exported code and data; the version node itself is an absolute (A) symbol.
nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sed 's/@.*//' | sort -u >"$tmp/exported"
for h in te.h te_topo.h; do
  ${CC:-cc} -E -P -I"$tmp/prefix/include" "$tmp/prefix/include/tendril/$h"
done | grep -oE '\bte_[A-Za-z0-9_]+[[:space:]]*\(' | tr -d ' (' | sort -u >"$tmp/declared"
[ -s "$tmp/declared" ] || { echo "FAIL: found no declarations in the headers"; exit 1; }
extra=$(comm -23 "$tmp/exported" "$tmp/declared")
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
status=0
if [ -n "$extra" ]; then
  echo "FAIL: exported but not declared in include/tendril (internal symbols leak):"
  echo "$extra" | sed 's/^/  /'
  status=1
fi
if [ -n "$missing" ]; then
  echo "FAIL: declared in include/tendril but not exported (add to src/tendril.map):"
  echo "$missing" | sed 's/^/  /'
  status=1
fi
[ $status -eq 0 ] && echo "OK: libtendril.so exports exactly the $(wc -l <"$tmp/declared") functions of te.h and te_topo.h"
exit $status

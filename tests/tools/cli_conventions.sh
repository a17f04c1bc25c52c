#!/bin/sh
# Every tool, benchmark and example program follows the command-line conventions
# (tools/common/cli.h): --help prints usage on stdout and exits 0 without running
# anything, --version prints the project version and exits 0, and a bad option exits 2
# with a message naming it.
#   cli_conventions.sh VERSION TOOL...    (a TOOL ending in .py runs with python3)
set -u
version=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
run() { # run TOOL ARGS... (20 s at most: --help must not start a benchmark)
    t=$1
    shift
    case $t in
    *.py) timeout 20 python3 "$t" "$@" ;;
    *) timeout 20 "$t" "$@" ;;
    esac
}
for tool in "$@"; do
    name=$(basename "$tool")
    run "$tool" --help >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 0 ] || { cat "$tmp/out" "$tmp/err"; fail "$name --help exited $rc"; }
    head -1 "$tmp/out" | grep -q '^usage: ' || { cat "$tmp/out"; fail "$name --help: no usage on stdout"; }
    grep -q -- '--version' "$tmp/out" || fail "$name --help does not mention --version"

    run "$tool" --version >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 0 ] || { cat "$tmp/out" "$tmp/err"; fail "$name --version exited $rc"; }
    grep -q "(tendril $version)" "$tmp/out" || { cat "$tmp/out"; fail "$name --version does not say tendril $version"; }

    run "$tool" --no-such-option >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 2 ] || { cat "$tmp/out" "$tmp/err"; fail "$name --no-such-option exited $rc, not 2"; }
    grep -q -- '--no-such-option' "$tmp/err" || { cat "$tmp/err"; fail "$name: the error does not name the option"; }
    echo "ok: $name"
done
echo "PASS"

#!/bin/sh
# kv_cache_streaming's two-terminal mode as docs/applications.md shows it: a prefiller
# started on its own (here in the background, stdin closed, as under nohup or a service
# manager) keeps serving, a decoder started separately with its --peer address runs its
# requests against it, and SIGTERM stops the prefiller cleanly.
#   kv_two_terminal.sh KV_CACHE_STREAMING PROVIDER
set -u
kv=$1
prov=$2
tmp=$(mktemp -d)
pf=
trap '[ -n "$pf" ] && kill -9 "$pf" 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; cat "$tmp/pf.out" 2>/dev/null; exit 1; }
small="--provider $prov --layers 4 --pages 8 --page-kb 4 --compute-us 200 --requests 2"
# shellcheck disable=SC2086
"$kv" --role prefiller $small </dev/null >"$tmp/pf.out" 2>&1 &
pf=$!
for _ in $(seq 100); do
    grep -q 'prefiller ready' "$tmp/pf.out" && break
    sleep 0.1
done
peer=$(sed -n 's/^prefiller ready: \(--peer [0-9a-f]* --peer-nics [0-9]*\)$/\1/p' "$tmp/pf.out")
[ -n "$peer" ] || fail "the prefiller printed no address"
sleep 0.5
kill -0 "$pf" 2>/dev/null || fail "the prefiller exited with its stdin closed"
# shellcheck disable=SC2086
timeout 120 "$kv" --role decoder $small $peer >"$tmp/dec.out" 2>&1
rc=$?
cat "$tmp/dec.out"
[ $rc -eq 0 ] || fail "decoder exited $rc"
[ "$(grep -c '^request [0-9]*: TTFT-like .* 0 bad bytes' "$tmp/dec.out")" -eq 2 ] || fail "decoder requests"
kill -TERM "$pf"
for _ in $(seq 100); do
    kill -0 "$pf" 2>/dev/null || break
    sleep 0.1
done
wait "$pf"
rc=$?
pf=
[ $rc -eq 0 ] || fail "prefiller exited $rc after SIGTERM"
grep -q 'stopping' "$tmp/pf.out" || fail "prefiller did not report the signal"
echo "PASS"

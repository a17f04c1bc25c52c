#!/bin/sh
# fabric-debug end to end over one provider: a server process and a client, engine and
# raw runs alternated, --verify checks the bytes on the server, the JSON file is complete,
# and malformed options exit 2 with a message instead of running anything.
#   fabric_debug_smoke.sh FABRIC_DEBUG PROVIDER
set -u
fd=$1
prov=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$fd" local --provider "$prov" --quick --only single,paged --sizes 64K --reps 2 --verify \
    --json "$tmp/r.json" >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"
[ $rc -eq 0 ] || fail "fabric-debug exited $rc"
grep -Eq '^single +64 KiB +1 \|' "$tmp/out" || fail "no single-write row"
grep -Eq '^paged +64 KiB +16 \|' "$tmp/out" || fail "no paged row"
grep -q 'median of 2 alternated runs' "$tmp/out" || fail "--reps not reported"
grep -q 'imm round trip' "$tmp/out" && fail "--only ran the latency workloads"
python3 - "$tmp/r.json" <<'PY' || fail "bad JSON"
import json, sys
d = json.load(open(sys.argv[1]))
rows = [r for r in d["rows"] if r.get("workload") in ("single", "paged")]
assert d["reps"] == 2 and len(rows) == 3, d
for r in rows:
    assert r["bytes"] == 65536 and r["engine_gbps"] > 0 and r["raw_gbps"] > 0, r
PY

for bad in "--reps 0" "--reps 99" "--only nothing" "--sizes 1Q" "--sizes ," "--nics 9"; do
    # shellcheck disable=SC2086  # the options are meant to split
    "$fd" local --provider "$prov" $bad >"$tmp/bad" 2>&1
    rc=$?
    [ $rc -eq 2 ] || { cat "$tmp/bad"; fail "'$bad' exited $rc, not 2"; }
    grep -q 'fabric-debug' "$tmp/bad" || fail "'$bad' gave no message"
done
echo "PASS"

#!/bin/sh
# fabric-debug's a2a workload over one provider: a small write pattern from the model
# (EP4, RDMA only, decode: 3 peers, 15 writes per iteration) replayed through the engine
# and the raw provider, every write's bytes checked at the server (--verify), the server's
# immediate counts matched exactly (the run fails otherwise), the table and JSON complete,
# and malformed pattern files rejected with exit 2 and the file's line.
#   fabric_debug_a2a.sh FABRIC_DEBUG SOURCE_DIR PYTHON PROVIDER
set -u
fd=$1
src=$2
py=$3
prov=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$py" -c 'import tomllib' 2>/dev/null || { echo "SKIP: a2a_model needs Python >= 3.11 (tomllib)"; exit 77; }
"$py" "$src/tools/a2a_model/a2a_model.py" --pattern decode --ep 4 --nvlink 1 --rank 1 \
    --pattern-out "$tmp/p.txt" || fail "a2a_model --pattern failed"
# a zero-length write (an empty CMB, as the contract posts it) rides along
echo "cmb 3 0  # empty" >>"$tmp/p.txt"

"$fd" local --provider "$prov" --quick --only a2a --a2a-pattern "$tmp/p.txt" --a2a-iters 20 \
    --verify --json "$tmp/r.json" >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"
[ $rc -eq 0 ] || fail "fabric-debug exited $rc"
grep -q 'one server process standing in for every peer' "$tmp/out" || fail "no stand-in note"
grep -q 'per iteration 16 writes (dsp 9, wgt 3, cmb 4)' "$tmp/out" || fail "wrong write count"
for ph in dsp wgt cmb iter; do
    grep -Eq "^$ph +[0-9]+ +[0-9.]+ MB \|" "$tmp/out" || fail "no $ph row"
done
grep -q 'every write.s bytes verified at the server (engine and raw)' "$tmp/out" || fail "not verified"
"$py" - "$tmp/r.json" <<'PY' || fail "bad JSON"
import json, sys
d = json.load(open(sys.argv[1]))
rows = {r["phase"]: r for r in d["rows"] if r.get("workload") == "a2a"}
assert sorted(rows) == ["cmb", "dsp", "iter", "wgt"], rows
for r in rows.values():
    assert r["iterations"] == 20 and r["peers"] == 3, r
    assert r["engine_p50_us"] > 0 and r["raw_p50_us"] > 0 and r["engine_gbps"] > 0, r
assert rows["iter"]["bytes"] == sum(rows[p]["bytes"] for p in ("dsp", "wgt", "cmb"))
PY

printf 'dsp 1 10\nwgt 1 -4\n' >"$tmp/bad1"
printf 'dsp 1 10 7\n' >"$tmp/bad2"
printf 'dsp 2000 10\n' >"$tmp/bad3"
printf '# nothing\n' >"$tmp/bad4"
for bad in "--only a2a" "--only a2a --a2a-pattern $tmp/bad1" "--a2a-pattern $tmp/bad2" \
           "--a2a-pattern $tmp/bad3" "--a2a-pattern $tmp/bad4" "--a2a-pattern $tmp/missing"; do
    # shellcheck disable=SC2086  # the options are meant to split
    "$fd" local --provider "$prov" $bad >"$tmp/bad" 2>&1
    rc=$?
    [ $rc -eq 2 ] || { cat "$tmp/bad"; fail "'$bad' exited $rc, not 2"; }
    grep -q 'fabric-debug: .*a2a' "$tmp/bad" || { cat "$tmp/bad"; fail "'$bad' gave no message"; }
done
"$fd" local --provider "$prov" --a2a-pattern "$tmp/bad1" 2>&1 | grep -q 'bad1:2: expected' ||
    fail "the bad line is not named"
echo "PASS"

#!/bin/sh
# The configuration as a user meets it, through tendril-info:
#  - the one list: every TENDRIL_* variable the library's code reads (src/) is printed by
#    tendril-info --config and documented in docs/configuration.md, and nothing else is;
#  - a bad value is reported naming the variable and the accepted values (TENDRIL_LOG as
#    a warning, TENDRIL_BUSY_POLL as an error: no engine);
#  - an environment variable overriding an explicit --provider is reported naming both;
#  - the engine section names the provider the engine got.
#   config_info.sh TENDRIL_INFO SOURCE_DIR PROVIDER
set -u
info=$1
src=$2
prov=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Variables read in src/ (getenv or the checked readers of core/env.h), the tool's list,
# the document's list.
grep -rhoE '(getenv|tn_env_[a-z0-9_]+)\("TENDRIL_[A-Z0-9_]+"' "$src/src" |
    grep -oE 'TENDRIL_[A-Z0-9_]+' | sort -u >"$tmp/code"
grep -rhoE 'env_int\("TENDRIL_[A-Z0-9_]+"' "$src/src" | grep -oE 'TENDRIL_[A-Z0-9_]+' >>"$tmp/code"
sort -u -o "$tmp/code" "$tmp/code"
grep -q TENDRIL_LOG_FILE "$tmp/code" || fail "the scan of src/ misses TENDRIL_LOG_FILE"
"$info" --config >"$tmp/out" 2>&1 || { cat "$tmp/out"; fail "tendril-info --config failed"; }
grep -oE '^  TENDRIL_[A-Z0-9_]+' "$tmp/out" | tr -d ' ' | sort -u >"$tmp/tool"
grep -oE '^\| `TENDRIL_[A-Z0-9_]+`' "$src/docs/configuration.md" | grep -oE 'TENDRIL_[A-Z0-9_]+' |
    sort -u >"$tmp/doc"
diff "$tmp/code" "$tmp/tool" || fail "variables read in src/ (<) differ from tendril-info's list (>)"
diff "$tmp/code" "$tmp/doc" || fail "variables read in src/ (<) differ from docs/configuration.md (>)"
echo "ok: $(wc -l <"$tmp/code") variables, one list"

TENDRIL_LOG=verbose "$info" --engine --provider "$prov" >"$tmp/out" 2>"$tmp/err" ||
    { cat "$tmp/out" "$tmp/err"; fail "TENDRIL_LOG=verbose stopped the engine"; }
grep -q 'TENDRIL_LOG=verbose is not valid (accepted: error|warn|info|debug)' "$tmp/err" ||
    { cat "$tmp/err"; fail "TENDRIL_LOG=verbose was not reported"; }

TENDRIL_BUSY_POLL=yes "$info" --engine --provider "$prov" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || { cat "$tmp/out" "$tmp/err"; fail "TENDRIL_BUSY_POLL=yes: exit $rc, not 1"; }
grep -q 'TENDRIL_BUSY_POLL=yes is not valid (accepted: 0|1)' "$tmp/err" ||
    { cat "$tmp/err"; fail "TENDRIL_BUSY_POLL=yes was not reported"; }

other=shm
[ "$prov" = shm ] && other=tcp
TENDRIL_PROVIDER=$prov "$info" --engine --provider "$other" >"$tmp/out" 2>"$tmp/err" ||
    { cat "$tmp/out" "$tmp/err"; fail "engine with TENDRIL_PROVIDER=$prov failed"; }
grep -q "TENDRIL_PROVIDER=$prov overrides the provider \"$other\"" "$tmp/err" ||
    { cat "$tmp/err"; fail "the override of --provider $other was not reported"; }
grep -q "^  provider: .*$prov" "$tmp/out" || { cat "$tmp/out"; fail "engine did not use $prov"; }

# The line format of the library's messages (time, pid:tid, level).
grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{15}Z tendril\[[0-9]+:[0-9]+\] warn: ' "$tmp/err" ||
    { cat "$tmp/err"; fail "log line format"; }
echo "PASS"

#!/usr/bin/env bash
# Emulated multi-NIC cluster for Tendril tests: H network namespaces ("hosts"), each with
# K veth interfaces ("NICs"). NIC i of every host sits on subnet i (a Linux bridge per
# NIC index joins the hosts when H > 2; with H = 2 the veth pair is linked directly).
#
#   scripts/netns-topo.sh up   [-p PREFIX] [-H HOSTS] [-k NICS]   create (idempotent)
#   scripts/netns-topo.sh down [-p PREFIX]                        remove all it made
#   scripts/netns-topo.sh show [-p PREFIX]                        list what exists
#   scripts/netns-topo.sh run  [-p PREFIX] [-H HOSTS] [-k NICS] -- CMD...
#        up, run CMD with the topology's environment, always tear down (trap)
#
# Names (PREFIX default "td$$", max 8 chars so interface names fit in 15):
#   namespace   PREFIX-hH                   (host H = 0..HOSTS-1)
#   interface   PREFIX-hHnI  inside host H  (NIC I = 0..NICS-1), address 10.(200+I).x.(H+1)/24
#   bridge      PREFIX-bI    in namespace PREFIX-sw (only when HOSTS > 2)
# Printed on `up` (and exported for `run`): TOPO_PREFIX, TOPO_HOSTS, TOPO_NICS,
# TOPO_NS_<H> (namespace of host H) and TOPO_NICS_<H> ("if0,if1,..": TENDRIL_NICS for
# host H). Everything is torn down by prefix, so parallel runs with different prefixes
# do not collide. Needs root and iproute2.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
PREFIX=td$$ HOSTS=2 NICS=2
while [ $# -gt 0 ]; do
    case $1 in
        -p) PREFIX=$2; shift 2 ;;
        -H) HOSTS=$2; shift 2 ;;
        -k) NICS=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "netns-topo: unknown argument '$1'" >&2; usage ;;
    esac
done
[ ${#PREFIX} -le 8 ] || { echo "netns-topo: prefix '$PREFIX' longer than 8 characters" >&2; exit 2; }
[[ $PREFIX =~ ^[a-zA-Z0-9]+$ ]] || { echo "netns-topo: prefix must be alphanumeric" >&2; exit 2; }
[ "$HOSTS" -ge 2 ] && [ "$HOSTS" -le 16 ] || { echo "netns-topo: hosts must be 2..16" >&2; exit 2; }
[ "$NICS" -ge 1 ] && [ "$NICS" -le 8 ] || { echo "netns-topo: nics must be 1..8" >&2; exit 2; }

ns() { echo "$PREFIX-h$1"; }
ifn() { echo "$PREFIX-h$1n$2"; }
SW=$PREFIX-sw

have_ns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

down() {
    # Deleting a namespace deletes the interfaces inside it (and their veth peers).
    local n
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-(h[0-9]+|sw)\$" || true); do
        ip netns del "$n" 2>/dev/null || true
    done
    # Leftovers in the root namespace (an `up` interrupted between add and move).
    for n in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
               grep -E "^$PREFIX-(h[0-9]+n[0-9]+|x[0-9]+n[0-9]+|b[0-9]+)\$" || true); do
        ip link del "$n" 2>/dev/null || true
    done
}

env_lines() {
    echo "TOPO_PREFIX=$PREFIX"
    echo "TOPO_HOSTS=$HOSTS"
    echo "TOPO_NICS=$NICS"
    local h i l
    for ((h = 0; h < HOSTS; h++)); do
        l=""
        for ((i = 0; i < NICS; i++)); do l+="${l:+,}$(ifn $h $i)"; done
        echo "TOPO_NS_$h=$(ns $h)"
        echo "TOPO_NICS_$h=$l"
    done
}

up() {
    [ "$(id -u)" = 0 ] || { echo "netns-topo: needs root" >&2; exit 77; }
    command -v ip >/dev/null || { echo "netns-topo: iproute2 'ip' not found" >&2; exit 77; }
    # Idempotent: a complete topology of the same shape is left as is.
    local complete=1 h i
    for ((h = 0; h < HOSTS; h++)); do
        have_ns "$(ns $h)" || complete=0
        for ((i = 0; i < NICS; i++)); do
            [ $complete = 1 ] && ip -n "$(ns $h)" link show "$(ifn $h $i)" >/dev/null 2>&1 || complete=0
        done
    done
    if [ $complete = 1 ]; then env_lines; return 0; fi
    down
    trap 'down; exit 1' ERR INT TERM
    for ((h = 0; h < HOSTS; h++)); do
        ip netns add "$(ns $h)"
        ip -n "$(ns $h)" link set lo up
    done
    if [ "$HOSTS" -gt 2 ]; then
        ip netns add "$SW"
        for ((i = 0; i < NICS; i++)); do
            ip -n "$SW" link add "$PREFIX-b$i" type bridge
            ip -n "$SW" link set "$PREFIX-b$i" up
        done
    fi
    for ((i = 0; i < NICS; i++)); do
        if [ "$HOSTS" -eq 2 ]; then
            ip link add "$(ifn 0 $i)" netns "$(ns 0)" type veth peer name "$(ifn 1 $i)" netns "$(ns 1)"
        else
            for ((h = 0; h < HOSTS; h++)); do
                ip link add "$(ifn $h $i)" netns "$(ns $h)" type veth peer name "$PREFIX-x${h}n$i" netns "$SW"
                ip -n "$SW" link set "$PREFIX-x${h}n$i" master "$PREFIX-b$i" up
            done
        fi
        for ((h = 0; h < HOSTS; h++)); do
            ip -n "$(ns $h)" addr add "10.$((200 + i)).0.$((h + 1))/24" dev "$(ifn $h $i)"
            ip -n "$(ns $h)" link set "$(ifn $h $i)" up
        done
    done
    # Wait until every veth has carrier: libfabric's tcp provider lists only running
    # interfaces, so an engine started too early would not find its NIC.
    local tries
    for ((h = 0; h < HOSTS; h++)); do
        for ((i = 0; i < NICS; i++)); do
            for ((tries = 0; tries < 100; tries++)); do
                ip -n "$(ns $h)" link show "$(ifn $h $i)" | grep -q 'LOWER_UP' && break
                sleep 0.05
            done
        done
    done
    trap - ERR INT TERM
    env_lines
}

show() {
    local n
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-" || true); do
        echo "== $n"
        ip -n "$n" -br addr show 2>/dev/null | grep -v '^lo ' || true
    done
}

case $cmd in
    up) up ;;
    down) down ;;
    show) show ;;
    run)
        [ $# -gt 0 ] || { echo "netns-topo run: give a command after --" >&2; exit 2; }
        trap down EXIT
        trap 'exit 130' INT TERM
        eval "$(up | sed 's/^/export /')"
        "$@"
        ;;
    *) usage ;;
esac

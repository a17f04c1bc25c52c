#!/usr/bin/env python3
"""Summarise the per-phase timestamps printed by a2a kernels built with
-DTENDRIL_A2A_TRACE=ON (lines "TR <kernel> r<rank> e<epoch> b<block> q<point> g<ns> c<cycles>").

For every (kernel, rank, epoch): the time of each numbered point relative to the
earliest block start of that launch, as min / median / max over blocks (µs, from
%globaltimer), and the median per-block cycle count from the block's own start
converted with the clock rate the trace itself implies.

  python3 bench/bench_all_to_all/trace_summary.py bench.log
"""
import collections
import re
import statistics
import sys

LINE = re.compile(r"TR (\w+) r(\d+) e(\d+) b(\d+) q(\d+) g(\d+) c(-?\d+)")


def main(path):
    runs = collections.defaultdict(lambda: collections.defaultdict(dict))
    for line in open(path, errors="replace"):
        m = LINE.search(line)
        if not m:
            continue
        k, r, e, b, q, g, c = m.groups()
        runs[(k, int(r), int(e))][int(b)][int(q)] = (int(g), int(c))
    # cycles per ns: total cycles / total globaltimer ns over blocks with a long span
    ratios = []
    for blocks in runs.values():
        for pts in blocks.values():
            qs = sorted(pts)
            dg = pts[qs[-1]][0] - pts[qs[0]][0]
            if dg > 5000:
                ratios.append((pts[qs[-1]][1] - pts[qs[0]][1]) / dg)
    ghz = statistics.median(ratios) if ratios else 1.98
    print(f"clock: {ghz:.3f} cycles/ns (from the trace)")
    for (k, r, e) in sorted(runs, key=lambda x: (x[2], x[0], x[1])):
        blocks = runs[(k, r, e)]
        if not any(0 in pts for pts in blocks.values()):
            continue
        t0 = min(pts[0][0] for pts in blocks.values() if 0 in pts)
        nq = max(max(pts) for pts in blocks.values()) + 1
        print(f"\n{k} rank {r} epoch {e}: {len(blocks)} blocks")
        print(f"{'pt':>3}{'min us':>9}{'med us':>9}{'max us':>9}{'blk-cyc med us':>16}")
        for q in range(nq):
            ts = [(pts[q][0] - t0) / 1e3 for pts in blocks.values() if q in pts]
            cs = [pts[q][1] / ghz / 1e3 for pts in blocks.values() if q in pts]
            if not ts:
                continue
            print(f"{q:>3}{min(ts):>9.2f}{statistics.median(ts):>9.2f}{max(ts):>9.2f}"
                  f"{statistics.median(cs):>16.2f}")
    # cross-rank view: absolute globaltimer of each launch's first start and last end
    print("\nlaunch spans (globaltimer, µs from the first launch of the epoch):")
    byep = collections.defaultdict(list)
    for (k, r, e), blocks in runs.items():
        if not any(0 in pts for pts in blocks.values()):
            continue
        st = min(pts[0][0] for pts in blocks.values() if 0 in pts)
        en = max(pts[max(pts)][0] for pts in blocks.values())
        byep[e].append((st, en, k, r))
    for e in sorted(byep):
        base = min(x[0] for x in byep[e])
        for st, en, k, r in sorted(byep[e]):
            print(f"  e{e} {k:<6} r{r}: {(st - base) / 1e3:8.2f} .. {(en - base) / 1e3:8.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")

"""Aggregation and output of bench_all_to_all (pure Python: no torch, no GPU).

Inputs are per-rank lists of per-iteration samples in µs, one list per series, all
ranks having run the same iterations in the same order (so index i is iteration i on
every rank). Three reductions:
- pooled: every rank's samples together, then percentiles (pplx-garden's report);
- slowest rank: per iteration, the maximum over ranks of that iteration's total, then
  percentiles over iterations (the metric of AWS's EP backend comparison,
  field-update-2026-12.md §2: a layer waits for its slowest rank);
- GEMM check: a GEMM between dispatch send and dispatch recv against the same GEMM
  alone, as a ratio (the issue's "runs within 5 % of its time alone").
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Optional, Sequence

PHASES = ("dispatch_send", "dispatch_recv", "combine_send", "combine_recv")
TOTALS = {  # slowest-rank totals: name -> the series summed per rank and iteration
    "dispatch+combine": ("dispatch", "combine"),
    "four phases": PHASES,
    "nccl dispatch+combine": ("nccl_dispatch", "nccl_combine"),
}
GEMM_LIMIT = 1.05  # the bound on the GEMM's slowdown


def pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no samples."""
    s = sorted(xs)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[i]


def summary(xs: Sequence[float]) -> Dict[str, float]:
    return {"p50_us": pct(xs, 50), "p99_us": pct(xs, 99),
            "mean_us": statistics.mean(xs) if xs else float("nan"), "samples": len(xs)}


def rank_totals(per_rank: Sequence[Dict[str, Sequence[float]]], names: Sequence[str]) -> List[List[float]]:
    """Per rank, per iteration: the sum of the named series. Every rank must hold the
    same number of samples of each (they ran the same iterations)."""
    out = []
    for r, res in enumerate(per_rank):
        cols = [res[n] for n in names]
        n = len(cols[0])
        if any(len(c) != n for c in cols):
            raise ValueError(f"rank {r}: series {', '.join(names)} have different sample counts")
        out.append([sum(c[i] for c in cols) for i in range(n)])
    return out


def slowest_rank(totals: Sequence[Sequence[float]]) -> List[float]:
    """Per iteration, the largest total over ranks."""
    if not totals:
        return []
    n = len(totals[0])
    if any(len(t) != n for t in totals):
        raise ValueError("slowest_rank: the ranks ran different numbers of iterations "
                         f"({sorted({len(t) for t in totals})})")
    return [max(t[i] for t in totals) for i in range(n)]


def slowest_rank_section(per_rank: Sequence[Dict[str, Sequence[float]]]) -> Dict[str, Dict[str, float]]:
    """For each total that every rank measured: slowest-rank percentiles, and the pooled
    median of the same totals for contrast."""
    out = {}
    for name, series in TOTALS.items():
        if not per_rank or any(not res.get(s) for res in per_rank for s in series):
            continue
        tot = rank_totals(per_rank, series)
        row = summary(slowest_rank(tot))
        row["pooled_p50_us"] = pct([v for t in tot for v in t], 50)
        out[name] = row
    return out


def gemm_check(per_rank: Sequence[Dict[str, Sequence[float]]], between: str = "gemm_in_dispatch",
               alone: str = "gemm_alone") -> Optional[Dict[str, float]]:
    """The GEMM between dispatch send and recv against the same GEMM alone, all ranks
    pooled: ratio of medians, and the median of per-iteration ratios."""
    b = [v for res in per_rank for v in res.get(between, [])]
    a = [v for res in per_rank for v in res.get(alone, [])]
    if not a or not b:
        return None
    paired = [x / y for res in per_rank for x, y in zip(res.get(between, []), res.get(alone, [])) if y > 0]
    ratio = pct(b, 50) / pct(a, 50)
    # Faster between the phases than alone by more than the bound: the "alone" runs were
    # slowed by something else (other ranks' kernels on the same GPU, e.g. under MPS),
    # so the pair says nothing about the all-to-all: no verdict (within_5pct None).
    disturbed = ratio < 1 / GEMM_LIMIT
    return {"alone_p50_us": pct(a, 50), "between_p50_us": pct(b, 50), "ratio_p50": ratio,
            "paired_ratio_p50": pct(paired, 50), "paired_ratio_p99": pct(paired, 99),
            "within_5pct": None if disturbed else ratio <= GEMM_LIMIT, "samples": len(paired)}


def series_rows(names: Sequence[str], pooled: Dict[str, List[float]], kpooled: Dict[str, List[float]],
                logical: Dict[str, float], moved: Dict[str, float]) -> List[Dict[str, object]]:
    """One row per series with samples: pooled percentiles, GB/s and kernel durations.
    logical/moved: bytes per call, key "d" (dispatch) or "c" (combine)."""
    rows = []
    for n in names:
        xs = pooled.get(n) or []
        if not xs:
            continue
        kind = "c" if "combine" in n else "d"
        p50 = pct(xs, 50)
        gemm = n.startswith("gemm")
        ks = kpooled.get(n) or []
        rows.append({"series": n, "p50_us": p50, "p99_us": pct(xs, 99), "mean_us": statistics.mean(xs),
                     "gbps_logical": logical[kind] / p50 / 1e3 if not gemm and "nccl" not in n and p50 > 0 else None,
                     "gbps_moved": moved[kind] / p50 / 1e3 if not gemm and p50 > 0 else None,
                     "samples": len(xs),
                     "kernel_p50_us": pct(ks, 50) if ks else None, "kernel_p99_us": pct(ks, 99) if ks else None,
                     "kernel_mean_us": statistics.mean(ks) if ks else None, "kernel_samples": len(ks)})
    return rows


PROXY_SPANS = ("seen_first", "first_last", "last_done", "seen_done")


def proxy_summary(per_rank: Sequence[Optional[dict]]) -> Optional[Dict[str, dict]]:
    """The proxies' host timing (P2PAllToAll.proxy_timing, over the timed iterations) per
    phase: each span's p50 as the range over the ranks with an RDMA proxy, p99 and max as
    the largest, in us; doorbells timed summed. None where no rank has a proxy."""
    ranks = [p for p in per_rank if p]
    if not ranks:
        return None
    out = {}
    for ph in ("dispatch", "weights", "combine"):
        d = {"ranks": len(ranks), "doorbells": sum(p[ph]["count"] for p in ranks),
             "dropped": sum(p[ph]["dropped"] for p in ranks)}
        for sp in PROXY_SPANS:
            p50 = [p[ph][sp]["p50_ns"] / 1e3 for p in ranks]
            d[sp] = {"p50_us_min": min(p50), "p50_us_max": max(p50),
                     "p99_us": max(p[ph][sp]["p99_ns"] for p in ranks) / 1e3,
                     "max_us": max(p[ph][sp]["max_ns"] for p in ranks) / 1e3}
        out[ph] = d
    return out


# The per-iteration breakdown (P2PAllToAll.phase_trace; docs/a2a-internode.md, "Trace"):
# each stage of one phase from one sending rank, in order.
TRACE_STAGES = (
    ("kernel_to_proxy", "bell_ns", "seen_ns"),   # send kernel rang the doorbell -> proxy saw it
    ("proxy_to_first", "seen_ns", "first_ns"),   # -> first write posted
    ("first_to_last", "first_ns", "last_ns"),    # -> last write posted
    ("last_to_flag", "last_ns", "flag_ns"),      # -> the last receiver's recv kernel saw its flag
)


def trace_breakdown(per_rank: Sequence[Optional[List[Optional[dict]]]], dp: int = 1) -> Optional[Dict[str, dict]]:
    """Per phase, p50/p99 in us over (iteration, sending rank) of each TRACE_STAGES span
    and of the whole (bell -> last flag). per_rank[r]: rank r's phase_trace of each traced
    iteration (the same iterations on every rank), None for a rank without RDMA peers.
    The receivers of rank r's writes are the ranks of its slice (same r % dp) whose
    flag_ns holds r's slice rank (r // dp); the stage ends at the latest of them. A
    sample lacking any of its two times is left out (counted in 'missing')."""
    ranks = [r for r, t in enumerate(per_rank) if t]
    if not ranks:
        return None
    n_it = min(len(per_rank[r]) for r in ranks)
    out = {}
    for ph in ("dispatch", "weights", "combine"):
        spans = {name: [] for name, _, _ in TRACE_STAGES}
        spans["total"] = []
        missing = 0
        for i in range(n_it):
            for r in ranks:
                tr = (per_rank[r][i] or {}).get(ph)
                if not tr:
                    continue
                flags = [per_rank[j][i][ph]["flag_ns"].get(r // dp, 0)
                         for j in ranks if j != r and j % dp == r % dp
                         and per_rank[j][i] and per_rank[j][i].get(ph)]
                t = dict(tr, flag_ns=max(flags) if flags and all(flags) else 0)
                for name, a, b in TRACE_STAGES + (("total", "bell_ns", "flag_ns"),):
                    if t.get(a) and t.get(b):
                        spans[name].append((t[b] - t[a]) / 1e3)
                    else:
                        missing += 1
        if not any(spans.values()):
            continue
        out[ph] = {name: {"p50_us": pct(v, 50), "p99_us": pct(v, 99), "samples": len(v)}
                   for name, v in spans.items() if v}
        out[ph]["missing"] = missing
    return out or None


def pattern_summary(patterns: Sequence[Dict[str, Dict[str, List[int]]]]) -> Optional[Dict[str, Dict[str, float]]]:
    """The RDMA writes of the measured iterations (a2a_bytes.iteration_pattern of each),
    per phase: bytes and writes per sending rank (median and max over ranks and
    iterations) and write sizes. None when no pair of ranks talks over RDMA."""
    if not patterns or not any(sum(p["dsp"]["writes"]) for p in patterns):
        return None
    out = {}
    for ph in ("dsp", "wgt", "cmb"):
        per_rank = [b for p in patterns for b in p[ph]["bytes"]]
        writes = [w for p in patterns for w in p[ph]["writes"]]
        sizes = [s for p in patterns for s in p[ph]["sizes"]]
        out[ph] = {"bytes_per_rank_p50": pct(per_rank, 50), "bytes_per_rank_max": max(per_rank),
                   "writes_per_rank_p50": pct(writes, 50), "write_bytes_p50": pct(sizes, 50),
                   "write_bytes_max": max(sizes) if sizes else 0}
    return out


RAW_BASELINE_TODO = ("not measured in this run: fabric-debug --only a2a --a2a-pattern FILE replays one "
                     "rank's writes through the engine and raw libfabric (FILE from tools/a2a_model/"
                     "a2a_model.py --pattern); see docs/performance.md, MoE all-to-all across nodes")


def _f(v: Optional[float], fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_mode(r: Dict[str, object]) -> str:
    """The text report of one mode (decode or prefill) from run_mode's result."""
    lines = [f"\n{r['mode']}: EP{r['world']} T={r['tokens']}/rank H={r['hidden']} S={r['scales']} "
             f"E={r['experts']} top-{r['topk']} fp8->bf16, {r['partials']} partials, {r['num_sms']} SMs, "
             f"{r['rows_moved_per_rank']:.0f} rows moved/rank/direction"]
    topo = r.get("topology")
    if topo:
        lines.append(f"  {topo['describe']}; RDMA buffers: {r.get('rdma_buffer_kind') or '-'}")
    lines.append(f"{'series':<19}{'p50 us':>10}{'p99 us':>10}{'GB/s logical':>14}{'GB/s moved':>12}"
                 f"{'kernel p50':>12}{'kernel p99':>12}{'kernel mean':>13}")
    for s in r["series"]:
        lines.append(f"{s['series']:<19}{s['p50_us']:>10.1f}{s['p99_us']:>10.1f}"
                     f"{_f(s['gbps_logical'], '{:.0f}'):>14}{_f(s['gbps_moved'], '{:.0f}'):>12}"
                     f"{_f(s['kernel_p50_us']):>12}{_f(s['kernel_p99_us']):>12}{_f(s['kernel_mean_us']):>13}")
    sr = r.get("slowest_rank") or {}
    if sr:
        lines.append("slowest rank per iteration (max over ranks of the total, then over iterations):")
        lines.append(f"  {'total':<23}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'pooled p50':>12}{'iters':>7}")
        for name, v in sr.items():
            lines.append(f"  {name:<23}{v['p50_us']:>10.1f}{v['p99_us']:>10.1f}{v['mean_us']:>10.1f}"
                         f"{v['pooled_p50_us']:>12.1f}{v['samples']:>7}")
    g = r.get("gemm_check")
    if g:
        verdict = {True: "within 5 %", False: "NOT within 5 %",
                   None: "no verdict: faster than alone, so the runs alone were disturbed"}[g["within_5pct"]]
        lines.append(f"GEMM {r.get('gemm', '')} between dispatch send and recv: {g['between_p50_us']:.1f} us "
                     f"against {g['alone_p50_us']:.1f} us alone (p50), ratio {g['ratio_p50']:.3f} ({verdict}); "
                     f"per-iteration ratio p50 {g['paired_ratio_p50']:.3f}, p99 {g['paired_ratio_p99']:.3f}")
    pat = r.get("rdma_pattern")
    if pat:
        lines.append("RDMA writes per rank and iteration (p50): "
                     + "; ".join(f"{ph.upper()} {v['bytes_per_rank_p50'] / 1e6:.2f} MB in "
                                 f"{v['writes_per_rank_p50']:.0f} writes (largest {v['write_bytes_max'] / 1e3:.0f} KB)"
                                 for ph, v in pat.items()))
        lines.append(f"raw-provider baseline: {r.get('raw_baseline') or RAW_BASELINE_TODO}")
    px = r.get("proxy_timing")
    if px:
        lines.append("proxy host side per doorbell, us (p50 range over ranks / p99 / max): "
                     "doorbell seen -> first write posted -> last posted -> writes locally complete")
        for ph, v in px.items():
            cells = "; ".join(f"{sp} {v[sp]['p50_us_min']:.1f}-{v[sp]['p50_us_max']:.1f} / {v[sp]['p99_us']:.1f} / "
                              f"{v[sp]['max_us']:.1f}" for sp in PROXY_SPANS)
            lines.append(f"  {ph:<9}{v['doorbells']:>6} doorbells ({v['ranks']} ranks): {cells}")
    tb = r.get("trace")
    if tb:
        lines.append("per-iteration trace, us p50 / p99 (back-to-back iterations; GPU stamps mapped to the host "
                     f"clock +/- {r.get('clock_sync_us', float('nan')):.1f} us): send kernel rang -> proxy saw -> "
                     "first write posted -> last posted -> last receiver's recv kernel saw its flag")
        for ph, v in tb.items():
            cells = "; ".join(f"{name} {v[name]['p50_us']:.1f} / {v[name]['p99_us']:.1f}"
                              for name in [n for n, _, _ in TRACE_STAGES] + ["total"] if name in v)
            lines.append(f"  {ph:<9}{cells}" + (f" ({v['missing']} spans unrecorded)" if v.get("missing") else ""))
    return "\n".join(lines)

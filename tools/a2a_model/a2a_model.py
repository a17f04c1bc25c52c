#!/usr/bin/env python3
"""a2a_model: a performance MODEL (not a measurement) of Tendril's MoE all-to-all across
nodes: predicted dispatch and combine latency at EP8-EP64, decode and prefill, hybrid
(NVLink inside 8-GPU nodes) and RDMA-only, on ConnectX-7 and EFA, printed beside
pplx-garden's and DeepEP's published figures. docs/a2a-model.md explains the formulas,
the inputs (inputs.toml: each marked published, derived, measured or assumption) and
the limits.

  python3 tools/a2a_model/a2a_model.py [--inputs FILE] [--modes decode,prefill]
                                       [--nics cx7,efa] [--eps 8,16,32,64] [--json FILE]

With --pattern decode|prefill it instead writes one rank's RDMA writes of one iteration
(expected row counts for uniform random routing, rounded, by a2a_bytes' rules) as a
pattern file for fabric-debug's a2a workload (docs/a2a-model.md, "Write pattern"):

  python3 tools/a2a_model/a2a_model.py --pattern decode --ep 16 --nvlink 8 [--rank R]
                                       [--dp-size D] --pattern-out FILE
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from a2a_bytes import Shape, Topology, expected_rows, rank_bytes, rank_writes  # noqa: E402

KINDS = ("published", "derived", "measured", "assumption")
KERNELS = ("dispatch_send", "dispatch_recv", "combine_send", "combine_recv")
FIT_EP = 2  # the EP size of our measured kernel times


def project_version() -> str:
    import re
    try:
        with open(os.path.join(HERE, "..", "..", "CMakeLists.txt")) as f:
            m = re.search(r"project\(tendril VERSION ([0-9.]+)", f.read())
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


# ---- inputs -------------------------------------------------------------------------

def load_inputs(path: str) -> Dict[str, Any]:
    """Reads inputs.toml and checks that every figure says what kind it is and where it
    comes from. Raises ValueError naming the first entry that does not."""
    try:
        import tomllib
    except ImportError as e:  # Python < 3.11
        raise RuntimeError("a2a_model needs Python >= 3.11 (tomllib)") from e
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    for key, entry in walk_figures(doc):
        if entry.get("kind") not in KINDS:
            raise ValueError(f"{path}: {key}: kind must be one of {', '.join(KINDS)}")
        if not str(entry.get("source", "")).strip():
            raise ValueError(f"{path}: {key}: no source")
        if not isinstance(entry.get("value"), (int, float)):
            raise ValueError(f"{path}: {key}: value must be a number")
    return doc


def walk_figures(doc: Dict[str, Any], prefix: str = ""):
    """(dotted key, entry) for every figure: a table with a `value`."""
    for k, v in doc.items():
        if k == "published":
            continue  # the comparison tables, not model inputs
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if "value" in v:
                yield key, v
            else:
                yield from walk_figures(v, key + ".")


def val(doc: Dict[str, Any], dotted: str) -> float:
    node: Any = doc
    for part in dotted.split("."):
        node = node[part]
    return float(node["value"])


# ---- model --------------------------------------------------------------------------

@dataclasses.dataclass
class Nic:
    name: str
    gbs: float       # usable GB/s per GPU (line rate x efficiency)
    post_us: float   # per fabric write, posted one after another by the proxy
    one_way_us: float


def nic_from(doc: Dict[str, Any], key: str) -> Nic:
    n = doc["nic"][key]
    return Nic(name=n["name"], gbs=val(doc, f"nic.{key}.line_gbit") / 8 * val(doc, f"nic.{key}.efficiency"),
               post_us=val(doc, f"nic.{key}.post_us"), one_way_us=val(doc, f"nic.{key}.one_way_us"))


def shape_from(doc: Dict[str, Any], tokens: int) -> Shape:
    return Shape(tokens=tokens, hidden=int(val(doc, "shape.hidden")), scales=int(val(doc, "shape.scales")),
                 experts=int(val(doc, "shape.experts")), topk=int(val(doc, "shape.topk")),
                 in_bytes=int(val(doc, "shape.in_bytes")), partial_bytes=int(val(doc, "shape.partial_bytes")))


def kernel_bytes(shape: Shape, topo: Topology) -> Dict[str, float]:
    """The traffic each kernel of one rank handles, in bytes: the x of the fitted line.
    dispatch send stores every row it sends (+ metadata); dispatch recv reads the rows it
    received and writes one copy per (token, local expert); combine send reads one y row
    per (token, expert) and stores one partial per (token, rank); combine recv reads the
    partials of its tokens and writes the output. Received = sent by symmetry."""
    rb = rank_bytes(shape, topo)
    tk = shape.tokens * shape.topk  # (token, expert) pairs a rank receives on average
    part = shape.hidden * shape.partial_bytes
    y = shape.hidden * shape.partial_bytes  # expert output in out dtype (same as partials here)
    return {
        "dispatch_send": rb.rows_out * (shape.row_bytes + shape.meta_bytes),
        "dispatch_recv": rb.rows_out * shape.row_bytes + tk * shape.row_bytes,
        "combine_send": tk * y + rb.rows_out * part,
        "combine_recv": rb.rows_out * part + shape.tokens * shape.hidden * 2,
    }


@dataclasses.dataclass
class KernelLine:
    c_us: float       # fixed cost
    gbs: float        # bytes per us / 1e3


def fit_kernels(doc: Dict[str, Any]) -> Dict[str, KernelLine]:
    """t = c + bytes/rate through our two measured EP2 points (decode, prefill)."""
    topo = Topology(world=FIT_EP, nvlink=FIT_EP)
    bd = kernel_bytes(shape_from(doc, int(val(doc, "shape.decode_tokens"))), topo)
    bp = kernel_bytes(shape_from(doc, int(val(doc, "shape.prefill_tokens"))), topo)
    out = {}
    for k in KERNELS:
        td, tp = val(doc, f"kernel.decode_us.{k}"), val(doc, f"kernel.prefill_us.{k}")
        if tp <= td or bp[k] <= bd[k]:
            raise ValueError(f"kernel.{k}: the prefill point must be above the decode point")
        rate = (bp[k] - bd[k]) / (tp - td)  # bytes per us
        c = td - bd[k] / rate
        if c < 0:
            raise ValueError(f"kernel.{k}: the fitted fixed cost is negative ({c:.2f} us)")
        out[k] = KernelLine(c_us=c, gbs=rate / 1e3)
    return out


def rdma_phase_us(nbytes: float, writes: int, nic: Nic, doorbell_us: float, flag_us: float) -> float:
    """Doorbell, then the proxy posts `writes` writes while the NIC sends `nbytes`
    (whichever is longer), then the last write's flight and the flag to the kernel."""
    if writes == 0:
        return 0.0
    return doorbell_us + max(writes * nic.post_us, nbytes / (nic.gbs * 1e3)) + nic.one_way_us + flag_us


def predict(doc: Dict[str, Any], mode: str, ep: int, nvlink: int, nic: Nic,
            lines: Optional[Dict[str, KernelLine]] = None, nets: int = 1) -> Dict[str, Any]:
    """Predicted one-call latencies (us) of one rank without skew, with their parts."""
    lines = lines or fit_kernels(doc)
    shape = shape_from(doc, int(val(doc, f"shape.{mode}_tokens")))
    topo = Topology(world=ep, nvlink=min(nvlink, ep), nets=nets)
    rb = rank_bytes(shape, topo)
    kb = kernel_bytes(shape, topo)
    k = {n: lines[n].c_us + kb[n] / (lines[n].gbs * 1e3) for n in KERNELS}
    db, fl = val(doc, "gpu.doorbell_us"), val(doc, "gpu.flag_us")
    dsp = rdma_phase_us(rb.dsp_rdma_bytes, rb.rdma_writes["dsp"], nic, db, fl)
    wgt = rdma_phase_us(rb.wgt_rdma_bytes, rb.rdma_writes["wgt"], nic, db, fl)
    cmb = rdma_phase_us(rb.cmb_rdma_bytes, rb.rdma_writes["cmb"], nic, db, fl)
    # variant: the contract with the weights carried by the dispatch metadata (K fp32 per
    # row) instead of a WGT round trip
    extra_w = rb.rdma_peers * rb.rows_per_peer * shape.topk * 4
    dsp_v = rdma_phase_us(rb.dsp_rdma_bytes + extra_w, rb.rdma_writes["dsp"], nic, db, fl)
    # rejected: the contract's first CMB rule (rows by token id), everything else as contract
    cmb_x = rdma_phase_us(rb.cmb_rdma_rejected_bytes, rb.rdma_writes["cmb"], nic, db, fl)
    return {
        "mode": mode, "ep": ep, "nvlink": topo.nvlink, "nic": nic.name, "tokens": shape.tokens,
        "rdma_peers": rb.rdma_peers, "nvlink_peers": rb.nvlink_peers,
        "rows_per_peer": rb.rows_per_peer,
        "rdma_mb": {"dsp": rb.dsp_rdma_bytes / 1e6, "wgt": rb.wgt_rdma_bytes / 1e6,
                    "cmb": rb.cmb_rdma_bytes / 1e6, "cmb_rejected": rb.cmb_rdma_rejected_bytes / 1e6},
        "kernels_us": k, "rdma_us": {"dsp": dsp, "wgt": wgt, "cmb": cmb},
        "dispatch_us": k["dispatch_send"] + dsp + k["dispatch_recv"],
        "combine_us": wgt + k["combine_send"] + cmb + k["combine_recv"],
        "variant": {"dispatch_us": k["dispatch_send"] + dsp_v + k["dispatch_recv"],
                    "combine_us": k["combine_send"] + cmb + k["combine_recv"]},
        "rejected": {"combine_us": wgt + k["combine_send"] + cmb_x + k["combine_recv"]},
    }


# ---- report -------------------------------------------------------------------------

def published(doc: Dict[str, Any], mode: str, who: str, ep: int) -> str:
    cell = doc.get("published", {}).get(mode, {}).get(who, {}).get(str(ep))
    if not cell:
        return "-"
    return " / ".join(f"{v:.0f}" if isinstance(v, (int, float)) else "?" for v in cell)


def table(doc: Dict[str, Any], modes: List[str], nics: List[str], eps: List[int]) -> List[Dict[str, Any]]:
    lines = fit_kernels(doc)
    rows = []
    for mode in modes:
        for nk in nics:
            nic = nic_from(doc, nk)
            for nvl in (8, 1):
                for ep in eps:
                    r = predict(doc, mode, ep, nvl, nic, lines)
                    r["nic_key"] = nk
                    if nvl == 8:
                        r["published"] = {"pplx_" + nk: published(doc, mode, "pplx_" + nk, ep),
                                          "deepep_cx7": published(doc, mode, "deepep_cx7", ep) if nk == "cx7" else "-"}
                    rows.append(r)
    return rows


def format_table(rows: List[Dict[str, Any]]) -> str:
    out = ["MODEL, not a measurement (docs/a2a-model.md). Latency of one call, one rank, no skew, us.",
           "contract = the writes docs/a2a-internode.md specifies (CMB: compact rows packed at the",
           "partial dtype, bf16: H*2); variant = the contract with the weights sent with dispatch",
           "(no WGT round trip); rej comb = combine with the contract's first, rejected CMB rule",
           "(rows by token id at H*4, about T rows per peer). MB/rank: sent over RDMA per call.",
           "Published: median us, dispatch / combine; pplx-garden README (NVLink 8), '?' = omitted cell."]
    key = None
    for r in rows:
        k = (r["mode"], r["nic_key"], r["nvlink"] == 1)
        if k != key:
            key = k
            topo = "RDMA only (--nvlink 1)" if r["nvlink"] == 1 else "hybrid (--nvlink 8)"
            out.append(f"\n{r['mode']} ({r['tokens']} tokens/rank), {r['nic']}, {topo}")
            hdr = (f"{'EP':>4} {'RDMA':>5} {'MB/rank dsp':>11} {'cmb':>8} | {'dispatch':>9} "
                   f"{'combine':>9} | {'disp var':>9} {'comb var':>9} | {'rej comb':>9}")
            if r["nvlink"] != 1:
                hdr += f" | {'pplx-' + r['nic_key']:>17} {'DeepEP-cx7':>17}"
            out.append(hdr)
        m = r["rdma_mb"]
        line = (f"{r['ep']:>4} {r['rdma_peers']:>5} {m['dsp']:>11.2f} {m['cmb']:>8.2f} | "
                f"{r['dispatch_us']:>9.1f} {r['combine_us']:>9.1f} | {r['variant']['dispatch_us']:>9.1f} "
                f"{r['variant']['combine_us']:>9.1f} | {r['rejected']['combine_us']:>9.1f}")
        if "published" in r:
            p = r["published"]
            line += f" | {p['pplx_' + r['nic_key']]:>17} {p['deepep_cx7']:>17}"
        out.append(line)
    return "\n".join(out)


# ---- write pattern (fabric-debug --only a2a --a2a-pattern FILE) ------------------------

PATTERN_VERSION = 1


def format_pattern(doc: Dict[str, Any], mode: str, ep: int, nvlink: int, rank: int, dp: int = 1,
                   inputs: str = "inputs.toml") -> str:
    """The pattern file: '#' comments, then one line per write, `PHASE PEER BYTES`, in
    posting order (all DSP writes, then WGT, then CMB). Raises ValueError when the
    topology is invalid or the rank has no RDMA peer."""
    tokens = int(val(doc, f"shape.{mode}_tokens"))
    shape = shape_from(doc, tokens)
    topo = Topology(world=ep, nvlink=nvlink, dp=dp)
    writes = rank_writes(expected_rows(shape, topo), [tokens] * ep, shape, topo, rank)
    if not writes:
        raise ValueError(f"rank {rank} has no RDMA peer at EP{ep} with --nvlink {nvlink}: nothing to write")
    peers = sorted({q for _, q, _ in writes})
    total = {ph: sum(b for p, _, b in writes if p == ph) for ph in ("dsp", "wgt", "cmb")}
    lines = [f"# tendril a2a write pattern v{PATTERN_VERSION} (docs/a2a-model.md, Write pattern)",
             f"# MODEL (expected rows for uniform random routing, rounded), not a measured routing",
             f"# {mode}: {tokens} tokens/rank, EP{ep}, --nvlink {nvlink}, --dp-size {dp}, rank {rank}, "
             f"inputs {os.path.basename(inputs)}",
             f"# H={shape.hidden} S={shape.scales} E={shape.experts} K={shape.topk} row_bytes={shape.row_bytes}",
             f"# {len(peers)} RDMA peers: {' '.join(map(str, peers))}",
             "# bytes per phase: " + ", ".join(f"{ph} {b}" for ph, b in total.items()),
             "# PHASE PEER BYTES"]
    lines += [f"{ph} {q} {b}" for ph, q, b in writes]
    return "\n".join(lines) + "\n"


def pattern_main(a: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    if a.pattern not in ("decode", "prefill"):
        ap.error(f"--pattern: {a.pattern!r} is not decode or prefill")
    if not a.pattern_out:
        ap.error("--pattern needs --pattern-out FILE ('-' for standard output)")
    if a.ep is None:
        ap.error("--pattern needs --ep N (the world size)")
    doc = load_inputs(a.inputs)
    try:
        text = format_pattern(doc, a.pattern, a.ep, a.nvlink, a.rank, a.dp_size, a.inputs)
    except ValueError as e:
        ap.error(str(e))
    if a.pattern_out == "-":
        sys.stdout.write(text)
    else:
        with open(a.pattern_out, "w") as f:
            f.write(text)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", default=os.path.join(HERE, "inputs.toml"), help="model inputs (TOML)")
    ap.add_argument("--modes", default="decode,prefill")
    ap.add_argument("--nics", default="cx7,efa")
    ap.add_argument("--eps", default="8,16,32,64", help="EP sizes (world sizes)")
    ap.add_argument("--json", default="", help="also write the rows as JSON")
    ap.add_argument("--version", action="version", version=f"a2a_model (tendril {project_version()})")
    p = ap.add_argument_group("write pattern (instead of the table)")
    p.add_argument("--pattern", default="", metavar="MODE", help="decode or prefill: write a pattern file")
    p.add_argument("--ep", type=int, default=None, help="world size of the pattern")
    p.add_argument("--nvlink", type=int, default=8, help="ranks per NVLink domain (1 = RDMA only; default 8)")
    p.add_argument("--dp-size", type=int, default=1, help="TP replicas (default 1)")
    p.add_argument("--rank", type=int, default=0, help="the rank whose writes are listed (default 0)")
    p.add_argument("--pattern-out", default="", metavar="FILE", help="where the pattern goes ('-': stdout)")
    a = ap.parse_args(argv)
    if a.pattern:
        return pattern_main(a, ap)
    try:
        eps = [int(x) for x in a.eps.split(",") if x]
    except ValueError:
        ap.error(f"--eps {a.eps!r}: expected a comma list of integers")
    modes = [m for m in a.modes.split(",") if m]
    for m in modes:
        if m not in ("decode", "prefill"):
            ap.error(f"--modes: {m!r} is not decode or prefill")
    doc = load_inputs(a.inputs)
    nics = [n for n in a.nics.split(",") if n]
    for n in nics:
        if n not in doc.get("nic", {}):
            ap.error(f"--nics: {n!r} is not in {a.inputs} (have {', '.join(doc.get('nic', {}))})")
    for ep in eps:
        if ep < 1 or (ep > 8 and ep % 8):
            ap.error(f"--eps: {ep} must be at most 8 or a multiple of 8 (8-GPU nodes)")
    rows = table(doc, modes, nics, eps)
    print(format_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": True, "inputs": a.inputs, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

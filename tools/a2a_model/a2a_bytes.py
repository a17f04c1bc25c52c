"""Bytes the all-to-all moves, per rank and per phase: the one copy of these rules.

Two users: the performance model (a2a_model.py: expected bytes for uniform random
routing) and the benchmark (bench/bench_all_to_all: exact bytes of each measured
iteration, from the routing it drew). Nothing here needs torch or a GPU.

The rules follow the design (docs/a2a.md, docs/a2a-internode.md):
- dispatch sends each token once per destination *rank* (deduplicated: a token whose
  K experts sit on 3 ranks travels 3 times, not K times), as a staging row of
  `row_bytes = H*in + roundup(4*S, 16)` plus its metadata `(K+1)*4`;
- combine returns one partial row per (token, expert rank): the expert rank's weighted
  sum over its local experts;
- over RDMA every phase is a fixed set of writes per peer (contract, "Signals"):
  DSP = cnt slot, meta [0, n), rows [0, n) (3 writes); WGT = T*K fp32 weights (1 write);
  CMB = part rows [0, m) at row stride H*4, m = 1 + largest token id received from the
  peer (1 write). Each write is sharded over the NICs (s shards => s fabric writes).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence

CMB_ROW_STRIDE_ELEM = 4  # the part block's row stride is H*4 bytes whatever the partial dtype


def roundup(x: int, m: int) -> int:
    return (x + m - 1) // m * m


@dataclasses.dataclass(frozen=True)
class Shape:
    """One all-to-all configuration (per rank)."""
    tokens: int            # T: tokens per rank
    hidden: int = 7168     # H
    scales: int = 56       # S: fp32 scales per token (0: none)
    experts: int = 256     # E
    topk: int = 8          # K
    in_bytes: int = 1      # dispatch element size (fp8 = 1)
    partial_bytes: int = 2  # combine partial element size as it travels (bf16 = 2, fp32 = 4)

    def __post_init__(self) -> None:
        for f in ("tokens", "hidden", "experts", "topk", "in_bytes", "partial_bytes"):
            if getattr(self, f) < (0 if f == "tokens" else 1):
                raise ValueError(f"Shape.{f} = {getattr(self, f)} is out of range")
        if self.scales < 0:
            raise ValueError("Shape.scales must be >= 0")
        if self.topk > self.experts:
            raise ValueError(f"Shape.topk ({self.topk}) exceeds Shape.experts ({self.experts})")

    @property
    def row_bytes(self) -> int:
        """Dispatch staging row: payload, then fp32 scales padded to 16 bytes."""
        return self.hidden * self.in_bytes + roundup(4 * self.scales, 16)

    @property
    def meta_bytes(self) -> int:
        """Per dispatched row: token id, then one entry per k."""
        return 4 * (self.topk + 1)


@dataclasses.dataclass(frozen=True)
class Topology:
    """World W, ranks per NVLink domain N (1 = RDMA between every pair), TP replicas D,
    NICs per GPU (shards per write)."""
    world: int
    nvlink: int
    dp: int = 1
    nets: int = 1

    def __post_init__(self) -> None:
        check_topology(self.world, self.nvlink, self.dp)
        if self.nets < 1:
            raise ValueError("nets_per_gpu must be >= 1")

    @property
    def slice_world(self) -> int:
        return self.world // self.dp

    def node(self, rank: int) -> int:
        return rank // self.nvlink

    def slice_peers(self, rank: int) -> List[int]:
        """Physical ranks `rank` exchanges tokens with (its slice, itself included)."""
        d = rank % self.dp
        return [q * self.dp + d for q in range(self.slice_world)]

    def is_rdma(self, a: int, b: int) -> bool:
        return a != b and self.node(a) != self.node(b)


def check_topology(world: int, nvlink: int, dp: int) -> None:
    """Raises ValueError naming what is wrong (the contract's rules, docs/a2a-internode.md)."""
    if world < 1:
        raise ValueError(f"world size must be >= 1 (got {world})")
    if nvlink < 1 or world % nvlink:
        raise ValueError(f"--nvlink {nvlink}: the world size {world} must be a multiple of the "
                         "ranks per NVLink domain")
    if dp < 1 or world % dp:
        raise ValueError(f"--dp-size {dp}: the world size {world} must be a multiple of it")


def experts_per_rank(experts: int, slice_world: int) -> int:
    """L = ceil(E / Ws): slice rank q owns experts [q*L, min((q+1)*L, E))."""
    return -(-experts // slice_world)


def owned_experts(experts: int, slice_world: int, slice_rank: int) -> int:
    L = experts_per_rank(experts, slice_world)
    return max(0, min(L, experts - slice_rank * L))


def hit_probability(experts: int, topk: int, owned: int) -> float:
    """P(a token with K distinct experts drawn uniformly from E has >= 1 of `owned`)."""
    if owned <= 0:
        return 0.0
    if experts - owned < topk:
        return 1.0
    return 1.0 - math.comb(experts - owned, topk) / math.comb(experts, topk)


def expected_span(tokens: int, p: float) -> float:
    """E[m], m = 1 + the largest token id among T tokens each hit with probability p
    (0 if none): sum over j of P(m >= j) = T - sum_{i=1..T} (1-p)^i."""
    if tokens <= 0 or p <= 0.0:
        return 0.0
    q = 1.0 - p
    if q <= 0.0:
        return float(tokens)
    return tokens - q * (1.0 - q ** tokens) / p


# ---- the contract's writes (exact, for one peer and one phase) ----------------------

def dsp_writes(rows: int, local_experts: int, shape: Shape) -> List[int]:
    """Byte lengths of the 3 DSP writes to one RDMA peer: cnt slot, meta, rows."""
    return [(local_experts + 1) * 4, rows * shape.meta_bytes, rows * shape.row_bytes]


def wgt_writes(tokens: int, shape: Shape) -> List[int]:
    """The WGT write: this launch's T*K fp32 weights."""
    return [tokens * shape.topk * 4]


def cmb_writes(span: int, shape: Shape) -> List[int]:
    """The CMB write as the contract specifies: part rows [0, span) at stride H*4."""
    return [span * shape.hidden * CMB_ROW_STRIDE_ELEM]


def cmb_compact_bytes(rows: int, shape: Shape) -> int:
    """What combine must return at least: one partial row per (token, expert rank)."""
    return rows * shape.hidden * shape.partial_bytes


# ---- expected bytes per rank for uniform random routing (the model's input) ---------

@dataclasses.dataclass
class RankBytes:
    """Expected traffic of one rank, each direction (sent = received by symmetry)."""
    rdma_peers: int
    nvlink_peers: int
    rows_per_peer: float          # mean rows to one slice peer (n)
    rows_out: float               # rows sent, all destinations, self included
    rows_self: float
    dsp_rdma_bytes: float
    dsp_nvlink_bytes: float
    wgt_rdma_bytes: float
    cmb_rdma_bytes: float          # as the contract writes them (span rows at H*4)
    cmb_rdma_compact_bytes: float  # one partial per (token, rank) at the partial dtype
    cmb_nvlink_bytes: float
    rdma_writes: Dict[str, int]    # fabric writes posted per phase (shards included)
    per_peer_write_bytes: Dict[str, List[float]]  # mean length of each write of a phase

    @property
    def rdma_bytes(self) -> Dict[str, float]:
        return {"dsp": self.dsp_rdma_bytes, "wgt": self.wgt_rdma_bytes, "cmb": self.cmb_rdma_bytes}


def rank_bytes(shape: Shape, topo: Topology, rank: int = 0) -> RankBytes:
    """Expected bytes `rank` sends per phase, split into NVLink and RDMA."""
    s = topo.slice_world
    peers = topo.slice_peers(rank)
    L = experts_per_rank(shape.experts, s)  # every cnt slot holds L+1 counts
    rdma = nvl = 0
    rows_out = rows_self = 0.0
    dsp_r = dsp_n = cmb_r = cmb_c = cmb_n = 0.0
    n_sum = 0.0
    for q_slice, q in enumerate(peers):
        owned = owned_experts(shape.experts, s, q_slice)
        p = hit_probability(shape.experts, shape.topk, owned)
        n = shape.tokens * p
        rows_out += n
        if q == rank:
            rows_self = n
            continue
        n_sum += n
        if topo.is_rdma(rank, q):
            rdma += 1
            dsp_r += sum(dsp_writes(0, L, shape)) + n * (shape.meta_bytes + shape.row_bytes)
            # the peer's CMB to us covers our tokens routed to it: the same p
            cmb_r += expected_span(shape.tokens, p) * shape.hidden * CMB_ROW_STRIDE_ELEM
            cmb_c += cmb_compact_bytes(1, shape) * n
        else:
            nvl += 1
            dsp_n += n * (shape.meta_bytes + shape.row_bytes)
            cmb_n += cmb_compact_bytes(1, shape) * n
    others = max(1, len(peers) - 1)
    n_mean = n_sum / others if len(peers) > 1 else 0.0
    per_peer = {
        "dsp": [float((L + 1) * 4), n_mean * shape.meta_bytes, n_mean * shape.row_bytes],
        "wgt": [float(w) for w in wgt_writes(shape.tokens, shape)],
        "cmb": [cmb_r / rdma if rdma else 0.0],
    }
    writes = {ph: rdma * len(ws) * topo.nets for ph, ws in per_peer.items()}
    return RankBytes(rdma_peers=rdma, nvlink_peers=nvl, rows_per_peer=n_mean, rows_out=rows_out,
                     rows_self=rows_self, dsp_rdma_bytes=dsp_r, dsp_nvlink_bytes=dsp_n,
                     wgt_rdma_bytes=rdma * wgt_writes(shape.tokens, shape)[0],
                     cmb_rdma_bytes=cmb_r, cmb_rdma_compact_bytes=cmb_c, cmb_nvlink_bytes=cmb_n,
                     rdma_writes=writes, per_peer_write_bytes=per_peer)


# ---- exact pattern of one measured iteration (the benchmark's input) ----------------

def iteration_pattern(rows: Sequence[Sequence[int]], span: Sequence[Sequence[int]],
                      tokens: Sequence[int], shape: Shape, topo: Topology) -> Dict[str, Dict[str, List[int]]]:
    """RDMA writes of one iteration, per phase, from what every rank routed.

    rows[s][p]: rows rank s sent to rank p (0 where p is not in s's slice);
    span[s][p]: 1 + the largest token id s sent to p (0 if none) = the length in rows of
    p's CMB write back to s; tokens[s]: s's T of this launch (after bound_m).
    Returns {phase: {"bytes": [per sending rank], "writes": [per sending rank],
    "sizes": [every write's length]}}; writes count fabric writes (shards included)."""
    W = topo.world
    if len(rows) != W or len(span) != W or len(tokens) != W:
        raise ValueError(f"iteration_pattern: expected {W} rows of counts, got "
                         f"{len(rows)}/{len(span)}/{len(tokens)}")
    L = experts_per_rank(shape.experts, topo.slice_world)
    out = {ph: {"bytes": [0] * W, "writes": [0] * W, "sizes": []} for ph in ("dsp", "wgt", "cmb")}

    def post(ph: str, src: int, lengths: List[int]) -> None:
        for ln in lengths:
            out[ph]["bytes"][src] += ln
            out[ph]["writes"][src] += topo.nets
            out[ph]["sizes"].append(ln)

    for s in range(W):
        if len(rows[s]) != W or len(span[s]) != W:
            raise ValueError(f"iteration_pattern: rank {s} has {len(rows[s])} counts, expected {W}")
        for p in topo.slice_peers(s):
            if not topo.is_rdma(s, p):
                continue
            post("dsp", s, dsp_writes(int(rows[s][p]), L, shape))
            post("wgt", s, wgt_writes(int(tokens[s]), shape))
            # p's CMB to s: one write from p, whose length s's routing decides
            post("cmb", p, cmb_writes(int(span[s][p]), shape))
    return out

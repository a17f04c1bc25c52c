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
  CMB = the n rows the expert rank received from that source in dispatch, compact
  (part row j = the source's dispatch row j) and packed at the partial dtype's stride
  H*pb (1 write of n*H*pb bytes: pb = 2 for bf16/fp16 partials, 4 for fp32). Each write
  is sharded over the NICs (s shards => s fabric writes).

One other CMB rule is kept for comparison, by name: the *rejected* rule the contract
had first (part rows [0, m) by token id at the part block's row stride H*4, m = 1 +
largest token id sent to the peer: about T rows per peer).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence

PART_SLOT_ROW_ELEM = 4  # rows by token id (NVLink slots, the rejected rule) are H*4 bytes apart


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


def cmb_writes(rows: int, shape: Shape) -> List[int]:
    """The CMB write as the contract specifies: the `rows` rows the expert rank received
    from this source in dispatch, compact, packed at the partial dtype's stride H*pb (the
    proxy's layout.part_row_bytes): the least combine can return, one partial per
    (token, expert rank)."""
    return [rows * shape.hidden * shape.partial_bytes]


def cmb_rejected_bytes(span: int, shape: Shape) -> int:
    """The rule the contract had first (rejected): part rows [0, span) by token id at
    stride H*4, span = 1 + the largest token id the source sent to this expert rank."""
    return span * shape.hidden * PART_SLOT_ROW_ELEM


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
    cmb_rdma_bytes: float          # as the contract writes them (n compact rows at H*pb)
    cmb_rdma_rejected_bytes: float  # the first contract's rule (span rows by token id at H*4)
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
    dsp_r = dsp_n = cmb_r = cmb_x = cmb_n = 0.0
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
            # what q sends back = what we sent q (n rows); by symmetry the same as what we
            # send back to q
            cmb_r += cmb_writes(1, shape)[0] * n
            cmb_x += cmb_rejected_bytes(1, shape) * expected_span(shape.tokens, p)
        else:
            nvl += 1
            dsp_n += n * (shape.meta_bytes + shape.row_bytes)
            cmb_n += n * shape.hidden * shape.partial_bytes  # stores of the needed rows only
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
                     cmb_rdma_bytes=cmb_r, cmb_rdma_rejected_bytes=cmb_x,
                     cmb_nvlink_bytes=cmb_n,
                     rdma_writes=writes, per_peer_write_bytes=per_peer)


# ---- exact pattern of one measured iteration (the benchmark's input) ----------------

def iteration_pattern(rows: Sequence[Sequence[int]], tokens: Sequence[int], shape: Shape,
                      topo: Topology) -> Dict[str, Dict[str, List[int]]]:
    """RDMA writes of one iteration, per phase, from what every rank routed.

    rows[s][p]: rows rank s sent to rank p (0 where p is not in s's slice), which is
    also the length in rows of p's CMB write back to s; tokens[s]: s's T of this launch
    (after bound_m).
    Returns {phase: {"bytes": [per sending rank], "writes": [per sending rank],
    "sizes": [every write's length]}}; writes count fabric writes (shards included)."""
    W = topo.world
    if len(rows) != W or len(tokens) != W:
        raise ValueError(f"iteration_pattern: expected {W} rows of counts and {W} token counts, got "
                         f"{len(rows)}/{len(tokens)}")
    L = experts_per_rank(shape.experts, topo.slice_world)
    out = {ph: {"bytes": [0] * W, "writes": [0] * W, "sizes": []} for ph in ("dsp", "wgt", "cmb")}

    def post(ph: str, src: int, lengths: List[int]) -> None:
        for ln in lengths:
            out[ph]["bytes"][src] += ln
            out[ph]["writes"][src] += topo.nets
            out[ph]["sizes"].append(ln)

    for s in range(W):
        if len(rows[s]) != W:
            raise ValueError(f"iteration_pattern: rank {s} has {len(rows[s])} counts, expected {W}")
        for p in topo.slice_peers(s):
            if not topo.is_rdma(s, p):
                continue
            post("dsp", s, dsp_writes(int(rows[s][p]), L, shape))
            post("wgt", s, wgt_writes(int(tokens[s]), shape))
            # p's CMB to s: one write from p of the rows s sent it
            post("cmb", p, cmb_writes(int(rows[s][p]), shape))
    return out


# ---- one rank's writes of one iteration (fabric-debug's a2a replay) -------------------

PHASES = ("dsp", "wgt", "cmb")


def rank_writes(rows: Sequence[Sequence[int]], tokens: Sequence[int], shape: Shape, topo: Topology,
                rank: int) -> List[tuple]:
    """The writes `rank` posts in one iteration, in posting order: (phase, peer, bytes)
    per logical write (the engine shards each over its NICs), DSP of every RDMA peer,
    then WGT, then CMB. rows[s][p] and tokens as for iteration_pattern; the CMB write to
    q carries the rows q sent `rank` (rows[q][rank])."""
    W = topo.world
    if not 0 <= rank < W:
        raise ValueError(f"rank {rank} is not in the world of {W}")
    if len(rows) != W or len(tokens) != W or any(len(r) != W for r in rows):
        raise ValueError(f"rank_writes: expected {W}x{W} row counts and {W} token counts")
    L = experts_per_rank(shape.experts, topo.slice_world)
    peers = [q for q in topo.slice_peers(rank) if topo.is_rdma(rank, q)]
    out: List[tuple] = []
    for q in peers:
        out += [("dsp", q, ln) for ln in dsp_writes(int(rows[rank][q]), L, shape)]
    for q in peers:
        out += [("wgt", q, ln) for ln in wgt_writes(int(tokens[rank]), shape)]
    for q in peers:
        out += [("cmb", q, ln) for ln in cmb_writes(int(rows[q][rank]), shape)]
    return out


def expected_rows(shape: Shape, topo: Topology) -> List[List[int]]:
    """rows[s][p] for uniform random routing: the expected rows s sends p (T times the
    chance that a token hits one of p's experts), rounded; 0 outside s's slice and on
    the diagonal (a rank keeps its own rows)."""
    W, s_world = topo.world, topo.slice_world
    rows = [[0] * W for _ in range(W)]
    for s in range(W):
        for q_slice, q in enumerate(topo.slice_peers(s)):
            if q == s:
                continue
            p = hit_probability(shape.experts, shape.topk, owned_experts(shape.experts, s_world, q_slice))
            rows[s][q] = int(round(shape.tokens * p))
    return rows


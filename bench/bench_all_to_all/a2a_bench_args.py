"""Command line and launch plan of bench_all_to_all (pure Python: no torch, no GPU).

Flags that pplx-garden's benchmark also has keep its meaning: --world-size, --nvlink
(ranks per NVLink domain), --nets-per-gpu, --dp-size, --init-method, --node-rank, and
its shape flags as aliases. One default differs, on purpose: without --nvlink,
pplx-garden means RDMA between every pair (N = 1); here the ranks launched on one
machine form one NVLink domain (N = ranks per machine), which on one machine is the
NVLink all-to-all this benchmark has always measured. Pass --nvlink 1 for pplx-garden's
RDMA-only setting. The plan says which it used (`nvlink_from`).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import List, Tuple

MODES = ("decode", "prefill")


def build_parser(description: str, version: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("ranks and topology (pplx-garden's flags)")
    g.add_argument("--world-size", "--world", dest="world", type=int, default=0,
                   help="ranks in all (default: one per GPU of this machine)")
    g.add_argument("--nvlink", type=int, default=0,
                   help="ranks per NVLink domain (node); 1 = RDMA between every pair (pplx-garden's "
                        "default). Default here: the ranks launched on one machine")
    g.add_argument("--nets-per-gpu", type=int, default=1, help="NICs per GPU that each RDMA write is sharded over")
    g.add_argument("--dp-size", type=int, default=1,
                   help="TP replicas per DP group (pplx-garden PR #16 semantics); the world size must be a multiple")
    g.add_argument("--init-method", default="",
                   help="torch.distributed init method for several machines, e.g. tcp://MASTER:29500 "
                        "(default: a local port, one machine)")
    g.add_argument("--node-rank", type=int, default=0, help="index of this machine (with --init-method)")
    g.add_argument("--local-ranks", type=int, default=0,
                   help="ranks this invocation starts (default: every rank on one machine; with "
                        "--init-method one per GPU); more ranks than GPUs share GPUs and split the SMs")
    g.add_argument("--rdma-buffers", choices=("auto", "gpu", "host"), default="auto",
                   help="where RDMA data lands (P2PAllToAll rdma_buffers)")
    s = ap.add_argument_group("shape (DeepSeek-V3 by default)")
    s.add_argument("--modes", default="decode,prefill")
    s.add_argument("--decode-tokens", type=int, default=128)
    s.add_argument("--prefill-tokens", type=int, default=4096)
    s.add_argument("--hidden", "--hidden-dim", dest="hidden", type=int, default=7168)
    s.add_argument("--scales", "--hidden-dim-scale", dest="scales", type=int, default=56)
    s.add_argument("--experts", "--num-experts", dest="experts", type=int, default=256)
    s.add_argument("--topk", "--num-experts-per-token", dest="topk", type=int, default=8)
    s.add_argument("--partial-f32", action="store_true",
                   help="combine partial sums travel as fp32 (default: as bf16, the out dtype)")
    r = ap.add_argument_group("measurement")
    r.add_argument("--num-sms", type=int, default=0, help="blocks per kernel (0 = every SM, or the rank's share)")
    r.add_argument("--warmup", "--num-warmup", dest="warmup", type=int, default=20)
    r.add_argument("--iters", "--num-repeats", dest="iters", type=int, default=300, help="timed decode iterations")
    r.add_argument("--prefill-iters", type=int, default=50, help="timed prefill iterations")
    r.add_argument("--profile-iters", type=int, default=100,
                   help="decode iterations run again under torch.profiler for kernel durations "
                        "(prefill: a fifth of it; 0 = off)")
    r.add_argument("--pipe-len", type=int, default=30, help="calls per pipelined run (DeepEP's bench_kineto: 30)")
    r.add_argument("--pipe-rounds", type=int, default=10,
                   help="pipelined runs, each with fresh routing per call (prefill: a fifth; 0 = off)")
    r.add_argument("--gemm", default="",
                   help="the GEMM run between dispatch send and dispatch recv (and alone, for the ratio): "
                        "N (N x N x N) or MxKxN; default 2048 decode, 8192 prefill")
    r.add_argument("--gemm-dtype", choices=("fp32", "bf16"), default="fp32")
    r.add_argument("--no-nccl", action="store_true", help="skip the NCCL all_to_all_single baseline")
    r.add_argument("--seed", type=int, default=1, help="routing seed (replicas of a DP group draw the same)")
    o = ap.add_argument_group("output")
    o.add_argument("--json", default="", help="results as JSON (rank 0)")
    o.add_argument("--write-pattern", default="",
                   help="per-iteration routing counts (rows and combine span per rank pair) as JSON, "
                        "the input a raw-provider replay needs")
    o.add_argument("--version", action="version", version=version)
    return ap


@dataclasses.dataclass(frozen=True)
class Launch:
    world: int
    local_ranks: int     # ranks this invocation starts
    machines: int
    node_rank: int       # this machine
    first_rank: int      # global rank of local rank 0
    nvlink: int          # ranks per NVLink domain
    nvlink_from: str     # "--nvlink" or why the default was taken
    dp: int
    nets: int
    gpus: int            # GPUs of this machine
    ranks_per_gpu: int
    backend: str         # torch.distributed backend: nccl, or gloo when ranks share a GPU
    nccl_baseline: bool
    nccl_note: str       # why not, when not
    init_method: str     # "" = pick a local port
    modes: Tuple[str, ...]

    def device_of(self, local_rank: int) -> int:
        return local_rank % self.gpus

    def sms_per_rank(self, sms: int, requested: int) -> int:
        """Blocks per kernel: the request, else the rank's share of the GPU's SMs."""
        return requested if requested > 0 else max(1, sms // self.ranks_per_gpu)

    @property
    def rdma_pairs(self) -> bool:
        return self.nvlink < self.world


def plan_launch(a: argparse.Namespace, gpus: int) -> Launch:
    """Checks the flags against each other and this machine; ValueError says what is wrong."""
    if gpus < 1:
        raise ValueError("no CUDA device on this machine")
    modes = tuple(m for m in a.modes.split(",") if m)
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise ValueError(f"--modes {a.modes!r}: a comma list of {', '.join(MODES)}")
    for name in ("decode_tokens", "prefill_tokens", "hidden", "experts", "topk", "iters", "prefill_iters",
                 "nets_per_gpu", "dp_size", "pipe_len"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(a, name)})")
    for name in ("scales", "warmup", "profile_iters", "pipe_rounds", "node_rank", "local_ranks", "world",
                 "nvlink", "num_sms"):
        if getattr(a, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(a, name)})")
    if a.topk > a.experts:
        raise ValueError(f"--topk {a.topk} exceeds --experts {a.experts}")
    multi = bool(a.init_method)
    if multi and not a.world:
        raise ValueError("--init-method needs --world-size (ranks on all machines)")
    if not multi and a.node_rank:
        raise ValueError("--node-rank needs --init-method (the address every machine joins)")
    world = a.world or gpus
    local = a.local_ranks or (gpus if multi else world)
    if world % local:
        raise ValueError(f"--world-size {world} is not a multiple of the ranks per machine ({local})")
    machines = world // local
    if machines > 1 and not multi:
        raise ValueError(f"{machines} machines ({world} ranks, {local} here) need --init-method and --node-rank")
    if a.node_rank >= machines:
        raise ValueError(f"--node-rank {a.node_rank}: only {machines} machine(s) for {world} ranks of {local}")
    if a.nvlink:
        nvlink, src = a.nvlink, "--nvlink"
    else:
        nvlink, src = local, ("default: ranks per machine (pplx-garden's default is --nvlink 1, RDMA "
                              "between every pair)")
    if local % nvlink:
        raise ValueError(f"--nvlink {nvlink}: an NVLink domain must lie within one machine, and "
                         f"{local} ranks per machine is not a multiple of it")
    if world % a.dp_size:
        raise ValueError(f"--dp-size {a.dp_size}: the world size {world} must be a multiple of it")
    rpg = -(-local // gpus)
    backend, nccl, note = "nccl", not a.no_nccl, ("off (--no-nccl)" if a.no_nccl else "")
    if rpg > 1:
        # NCCL refuses two ranks of one communicator on one GPU
        backend, nccl, note = "gloo", False, f"off: {rpg} ranks share a GPU (NCCL needs one per GPU)"
    return Launch(world=world, local_ranks=local, machines=machines, node_rank=a.node_rank,
                  first_rank=a.node_rank * local, nvlink=nvlink, nvlink_from=src, dp=a.dp_size,
                  nets=a.nets_per_gpu, gpus=gpus, ranks_per_gpu=rpg, backend=backend, nccl_baseline=nccl,
                  nccl_note=note, init_method=a.init_method, modes=modes)


def node_groups(world: int, nvlink: int) -> List[List[int]]:
    """Ranks of each NVLink domain (node), node-major (docs/a2a-internode.md, Ranks)."""
    return [list(range(n * nvlink, (n + 1) * nvlink)) for n in range(world // nvlink)]


def dp_groups(world: int, dp: int) -> List[List[int]]:
    """Ranks of each DP group: the dp TP replicas [g*dp, (g+1)*dp)."""
    return [list(range(g * dp, (g + 1) * dp)) for g in range(world // dp)]


def parse_gemm(text: str, tokens: int) -> Tuple[int, int, int]:
    """--gemm: "" (the default for this token count), "N" or "MxKxN" -> (M, K, N)."""
    if not text:
        n = 2048 if tokens <= 128 else 8192
        return n, n, n
    parts = text.lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--gemm {text!r}: expected N or MxKxN") from None
    if len(dims) == 1:
        dims = dims * 3
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"--gemm {text!r}: expected N or MxKxN with positive sizes")
    return dims[0], dims[1], dims[2]


def describe(p: Launch) -> str:
    """One line for the log: how the ranks were laid out."""
    kind = "NVLink only" if not p.rdma_pairs else ("RDMA only" if p.nvlink == 1 else "hybrid")
    s = (f"EP{p.world} ({kind}): {p.machines} machine(s) x {p.local_ranks} ranks, NVLink domain "
         f"{p.nvlink} ranks ({p.nvlink_from}), dp {p.dp}, {p.nets} NIC(s)/GPU, {p.ranks_per_gpu} rank(s)/GPU, "
         f"backend {p.backend}")
    if not p.nccl_baseline:
        s += f"; NCCL baseline {p.nccl_note}"
    return s


#!/usr/bin/env python3
"""bench_all_to_all: MoE dispatch/combine (tendril.P2PAllToAll) against NCCL all-to-all
(torch.distributed.all_to_all_single) on the same data, in the same run: over NVLink
inside one domain, and across domains over RDMA (docs/a2a-internode.md).

Default shape: DeepSeek-V3 (hidden 7168, fp8 e4m3 payload + 56 fp32 scales per token,
bf16 combine, 256 experts, top-8), decode (128 tokens/rank) and prefill (4096 tokens/rank),
one process per rank. Every iteration draws fresh random routing (seeded; the TP replicas
of a DP group draw the same). Before each timed
region a GEMM is queued (so that launch overhead is not what is measured) and the ranks
are then aligned on the GPU (NCCL all-reduce).

Series (µs, samples of all ranks pooled): dispatch / combine back to back (send+recv in
one call), and split: send and recv halves timed separately with unrelated GPU work in
between (the recv half then mostly finds its data already there).
Pipelined series (pipe_*): DeepEP's method. After one alignment, --pipe-len calls of
dispatch then combine are queued back to back (fresh routing for each), so each call
starts when the previous collective released both ranks; the same for NCCL's two
all-to-alls. The first call of each run is not counted.
GB/s columns: "logical" = T*K rows (pplx-garden's definition: T*K*(H*in + S*4) for
dispatch, T*K*H*out for combine); "moved" = rows a rank actually sends, one per
(token, destination rank) (DeepEP's and the NCCL baseline's definition).
"kernel" columns: the same steps run again under torch.profiler, and each series' GPU
kernel duration is taken from the profiler's activity records: no launch or event
overhead, the way DeepEP's bench_kineto times its kernels (its published figures are
kernel durations), so these are the figures to compare with DeepEP's.

Slowest rank: per iteration the largest total over ranks (dispatch+combine back to back,
the four split phases, NCCL's two all-to-alls), then p50/p99 over iterations: the metric
of AWS's EP backend comparison. GEMM check: the GEMM between dispatch send and dispatch
recv against the same GEMM alone (ratio of medians; the issue asks for <= 1.05).
RDMA writes: the bytes and writes each rank's proxy posts per phase, computed from the
drawn routing by the contract's rules (tools/a2a_model/a2a_bytes.py); --write-pattern
saves the counts a raw-provider replay needs.

Ranks: one machine by default (--world-size ranks, as many per GPU as needed, each with
its share of the SMs; NCCL needs one rank per GPU, so with shared GPUs the baseline is
off and the ranks align on the host). Several machines as with pplx-garden:
  python3 bench/bench_all_to_all/bench_all_to_all.py --world-size $((NODES*8)) --nets-per-gpu 2 \
      --init-method tcp://$MASTER_IP:29500 --node-rank $NODE_RANK --nvlink 8
Without --nvlink the ranks of one machine form one NVLink domain (pplx-garden: --nvlink 1).
Without RDMA NICs, "nodes" on one machine (even on one GPU) talk through an engine on
libfabric's shm or tcp (a CUDA IPC or socket copy, not a NIC: exercises the protocol, not
RDMA performance):
  python3 bench/bench_all_to_all/bench_all_to_all.py --world-size 2 --nvlink 1 --provider shm

  python3 bench/bench_all_to_all/bench_all_to_all.py [--modes decode,prefill] [--json out.json]
"""
import contextlib
import dataclasses
import json
import os
import socket
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "a2a_model"))

from a2a_bench_args import build_parser, describe, dp_groups, node_groups, parse_gemm, plan_launch  # noqa: E402
from a2a_bench_report import (RAW_BASELINE_TODO, format_mode, gemm_check, pattern_summary,  # noqa: E402
                              proxy_summary, series_rows, slowest_rank_section, trace_breakdown)
from a2a_bytes import Shape, Topology, iteration_pattern  # noqa: E402

# torch is imported after the arguments are parsed (import_torch), so that --help and
# --version work on a machine without it; the spawned workers import it themselves.
torch = None
dist = None

VERSION_FILE = os.path.join(HERE, "..", "..", "CMakeLists.txt")


def import_torch():
    global torch, dist
    import torch as _torch
    import torch.distributed as _dist
    torch, dist = _torch, _dist


def project_version():
    """The project version from CMakeLists.txt (the one version source of the C tools)."""
    import re
    try:
        with open(VERSION_FILE) as f:
            m = re.search(r"project\(tendril VERSION ([0-9.]+)", f.read())
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


class Timer:
    """CUDA event pairs by series name; `with t("name"): ...` times what it queues."""

    def __init__(self, names):
        self.ev = {n: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                   for n in names}
        self.used = set()

    @contextlib.contextmanager
    def __call__(self, name):
        a, b = self.ev[name]
        a.record()
        yield
        b.record()
        self.used.add(name)

    def read(self):
        """µs of every pair recorded since the last read (call after a synchronize)."""
        out = {n: a.elapsed_time(b) * 1000.0 for n, (a, b) in self.ev.items() if n in self.used}
        self.used = set()
        return out


class Ctx:
    """What every series of one rank shares: topology, groups, routing generator."""

    def __init__(self, args, plan, rank, dev, num_sms):
        self.args, self.plan, self.rank, self.dev, self.num_sms = args, plan, rank, dev, num_sms
        self.world, self.dp = plan.world, plan.dp
        self.L = -(-args.experts // (plan.world // plan.dp))  # experts per slice rank
        # the replicas of a DP group (same rank // dp) draw the same routing
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(args.seed * 100003 + rank // plan.dp)
        self.nccl = plan.nccl_baseline
        self.engine = make_engine(plan, dev.index)

    def routing(self, T):
        """Fresh routing: (indices int32 [T,K], weights [T,K], rows per physical rank
        (int64 [W], self included: one per (token, destination rank)))."""
        E, K = self.args.experts, self.args.topk
        idx = torch.rand(T, E, device=self.dev, generator=self.gen).topk(K, dim=1).indices.to(torch.int32)
        w = torch.rand(T, K, device=self.dev, generator=self.gen)
        # a token of rank r whose expert is e goes to rank (e // L) * dp + r % dp
        dst = (idx // self.L).long() * self.dp + self.rank % self.dp
        dest = torch.zeros(T, self.world, dtype=torch.bool, device=self.dev)
        dest.scatter_(1, dst, True)
        return idx, w, dest.sum(0)


def make_engine(plan, device_index):
    """--provider: this rank's engine for its RDMA peers, one group on its GPU (NICs named
    by --nic-names, else the provider's first --nets-per-gpu); None otherwise, and when no
    peer is over RDMA."""
    if not plan.provider or not plan.rdma_pairs:
        return None
    from tendril import TransferEngine
    nics = list(plan.nic_names) if plan.nic_names else plan.nets
    return TransferEngine(provider=plan.provider, groups=[(device_index, nics, -1)])


SERIES = ["dispatch", "combine", "dispatch_send", "gemm_in_dispatch", "dispatch_recv", "combine_send",
          "gemm_in_combine", "combine_recv", "gemm_alone", "nccl_dispatch", "nccl_combine"]


def make_a2a(ctx, T, groups):
    """pplx-garden's constructor (docs/a2a-internode.md, Bootstrap): global_group is
    passed explicitly (P2PAllToAll takes node_group for the world when it is None),
    node_group sets the NVLink domain, dp_group the TP replicas. engine=: the worker's
    engine when --provider is given, else P2PAllToAll creates one from the GPU's
    topology group with nets_per_gpu NICs (pplx-garden's way)."""
    from tendril.p2p_all_to_all import P2PAllToAll
    args, plan = ctx.args, ctx.plan
    kw = dict(max_num_tokens=T, num_experts=args.experts, expert_padding=1, hidden_dim=args.hidden,
              hidden_dim_scale=args.scales, in_dtype=torch.float8_e4m3fn, out_dtype=torch.bfloat16,
              scale_dtype=torch.float32, num_experts_per_token=args.topk, device=ctx.dev,
              nets_per_gpu=plan.nets, global_group=dist.group.WORLD, node_group=groups["node"],
              dp_group=groups["dp"], num_sms=ctx.num_sms, timeout_ms=20000,
              combine_partial_dtype=torch.float32 if args.partial_f32 else None)
    if plan.rdma_pairs or args.rdma_buffers != "auto":
        # only when it matters, so that the NVLink-only P2PAllToAll (no rdma_buffers
        # argument) still runs this benchmark on one NVLink domain
        kw["rdma_buffers"] = args.rdma_buffers
    if ctx.engine is not None:
        kw["engine"] = ctx.engine
    return P2PAllToAll(**kw)


def run_mode(ctx, groups, T, mode):
    args, plan, dev, rank, world = ctx.args, ctx.plan, ctx.dev, ctx.rank, ctx.world
    H, S, E, K = args.hidden, args.scales, args.experts, args.topk
    a2a = make_a2a(ctx, T, groups)
    buffer_kind = getattr(a2a, "rdma_buffer_kind", None)
    cap = a2a.max_recv_tokens
    x = torch.randn(T, H, device=dev).to(torch.float8_e4m3fn)
    xs = torch.rand(T, S, device=dev)
    out_num = torch.empty(a2a.num_local_experts, dtype=torch.int32, device=dev)
    out_x = torch.empty(cap, H, dtype=torch.float8_e4m3fn, device=dev)
    out_s = torch.empty(cap, S, device=dev)
    y = torch.randn(cap, H, device=dev).to(torch.bfloat16)
    out = torch.empty(T, H, dtype=torch.bfloat16, device=dev)
    gsz = 2048 if T <= 128 else 8192
    ga = torch.randn(gsz, gsz, device=dev)
    gm, gk, gn = parse_gemm(args.gemm, T)
    gdt = torch.bfloat16 if args.gemm_dtype == "bf16" else torch.float32
    gA, gB = torch.randn(gm, gk, device=dev, dtype=gdt), torch.randn(gk, gn, device=dev, dtype=gdt)
    one = torch.ones(1, device=dev)
    drow = H + 4 * S  # dispatch row bytes (fp8 payload + scales)
    crow = 2 * H      # combine row bytes (bf16)
    nccl_bufs = None
    if ctx.nccl:
        nccl_bufs = tuple(torch.empty(T * world, n, dtype=torch.uint8, device=dev) for n in (drow, drow, crow, crow))

    def align():
        if ctx.nccl:
            # the GEMM first, so that the host has queued what follows before the GPUs get
            # there; the all-reduce last, so that the ranks leave it within one NVLink flag
            # latency of each other (with the GEMM last, any difference in its duration
            # between the two GPUs became skew in the timed call)
            torch.mm(ga, ga)
            dist.all_reduce(one)
        else:
            # ranks share GPUs (gloo): align on the host, then queue a GEMM so that the
            # timed call is queued before the GPU gets to it
            torch.cuda.synchronize()
            dist.barrier()
            torch.mm(ga, ga)

    def gemm():
        torch.mm(gA, gB)

    t = Timer(SERIES)

    def step():
        """One iteration: fresh routing, every series once, each between two events."""
        idx, w, send_counts = ctx.routing(T)
        sc = send_counts.tolist()
        rc = None
        if ctx.nccl:
            recv_counts = torch.empty_like(send_counts)
            dist.all_to_all_single(recv_counts, send_counts)
            rc = recv_counts.tolist()
        # --- back to back
        align()
        with t("dispatch"):
            a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w)
        align()
        with t("combine"):
            a2a.combine(out, idx, w, y)
        # --- split; the GEMM between dispatch send and recv is the SM-free check
        align()
        with t("dispatch_send"):
            a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w, do_recv=False)
        with t("gemm_in_dispatch"):
            gemm()
        with t("dispatch_recv"):
            a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w, do_send=False)
        align()
        with t("combine_send"):
            a2a.combine(out, idx, w, y, do_recv=False)
        with t("gemm_in_combine"):
            gemm()
        with t("combine_recv"):
            a2a.combine(out, idx, w, y, do_send=False)
        # --- the same GEMM with nothing in flight
        align()
        with t("gemm_alone"):
            gemm()
        # --- NCCL all-to-all of the same rows
        if ctx.nccl:
            nin_d, nout_d, nin_c, nout_c = nccl_bufs
            align()
            with t("nccl_dispatch"):
                dist.all_to_all_single(nout_d[:sum(rc)], nin_d[:sum(sc)], rc, sc)
            align()
            with t("nccl_combine"):
                dist.all_to_all_single(nout_c[:sum(sc)], nin_c[:sum(rc)], sc, rc)
        torch.cuda.synchronize()
        a2a.poll_error()
        return sc

    res = {n: [] for n in SERIES}
    moved, pattern = [], []
    iters = args.warmup + (args.iters if T <= 128 else args.prefill_iters)
    proxy = None  # this rank's proxy timing over the timed iterations (None: no RDMA peer)
    traces, clock_err = [], None  # phase_trace of each timed step's back-to-back iteration
    has_trace = hasattr(a2a, "phase_trace")
    for it in range(iters):
        if it == args.warmup:
            a2a.proxy_timing(reset=True)
            if has_trace:
                clock_err = a2a.clock_sync()
        sc = step()
        times = t.read()
        if it < args.warmup:
            continue
        if has_trace:
            # a step is two iterations: back to back (the one traced), then split with the
            # GEMM between send and recv (its recv starts late by design)
            newest = a2a.trace_newest_epoch()
            traces.append(a2a.phase_trace(newest - 1) if newest > 1 else None)
        moved.append(sum(sc))
        pattern.append(sc)
        for n, v in times.items():
            res[n].append(v)
    proxy = a2a.proxy_timing()
    # Kernel durations as the profiler records them (CUPTI activity records: the time the
    # kernel ran on the GPU, without the launch and event overhead that the event pairs
    # include). This is how DeepEP's benchmarks time their kernels (bench_kineto), so these
    # are the figures to put next to DeepEP's.
    names = list(SERIES)
    kern = {n: [] for n in names}
    nprof = args.profile_iters if T <= 128 else max(1, args.profile_iters // 5)
    if args.profile_iters > 0:
        try:
            kern = profile_kernels(step, nprof, names, ctx.nccl)
        except Exception as e:  # the event-timed figures above stay valid
            print(f"bench_all_to_all: kernel profiling failed on rank {rank}: {e!r}", file=sys.stderr)
        t.read()
    # --- pipelined: DeepEP's method (its bench_kineto): one alignment, then a run of
    # dispatch, combine, dispatch, combine... with no alignment in between, so that each
    # call starts when the previous collective released both ranks (no host-made skew).
    # Fresh routing for every call of the run; NCCL's all-to-alls get their own run.
    rounds = args.pipe_rounds if T <= 128 else max(1, args.pipe_rounds // 5) if args.pipe_rounds else 0
    if rounds > 0:
        pres = pipelined(ctx, a2a, args.pipe_len, rounds, T, align, (out_num, out_x, out_s, x, xs, y, out),
                         nccl_bufs)
        for n, v in pres["events"].items():
            res[n] = v
            names.append(n)
        for n, v in pres["kernels"].items():
            kern[n] = v
        moved.extend(pres["moved"])
    a2a.destroy()
    gathered = [None] * world
    dist.all_gather_object(gathered, {"res": res, "moved": moved, "kern": kern, "pattern": pattern,
                                      "buffer_kind": buffer_kind, "proxy": proxy,
                                      "trace": traces if any(traces) else None, "clock_err": clock_err})
    if rank != 0:
        return None, None
    per_rank = [g["res"] for g in gathered]
    pooled = {n: [v for r in per_rank for v in r.get(n, [])] for n in names}
    kpooled = {n: [v for g in gathered for v in g["kern"].get(n, [])] for n in names}
    mv = statistics.mean(v for g in gathered for v in g["moved"])
    logical = {"d": T * K * (H + 4 * S), "c": T * K * crow}
    moved_b = {"d": mv * drow, "c": mv * crow}
    shape = Shape(tokens=T, hidden=H, scales=S, experts=E, topk=K, in_bytes=1,
                  partial_bytes=4 if args.partial_f32 else 2)
    topo = Topology(world=world, nvlink=plan.nvlink, dp=plan.dp, nets=plan.nets)
    iters_pat = [iteration_pattern([g["pattern"][i] for g in gathered], [T] * world, shape, topo)
                 for i in range(min(len(g["pattern"]) for g in gathered))]
    kinds = sorted({str(g["buffer_kind"]) for g in gathered if g["buffer_kind"] is not None})
    result = {"mode": mode, "tokens": T, "world": world, "hidden": H, "scales": S, "experts": E, "topk": K,
              "num_sms": ctx.num_sms or torch.cuda.get_device_properties(dev).multi_processor_count,
              "partials": "fp32" if args.partial_f32 else "bf16", "rows_moved_per_rank": mv,
              "series": series_rows(names, pooled, kpooled, logical, moved_b),
              "topology": {"world": world, "nvlink": plan.nvlink, "nvlink_from": plan.nvlink_from,
                           "dp": plan.dp, "nets_per_gpu": plan.nets, "machines": plan.machines,
                           "ranks_per_gpu": plan.ranks_per_gpu, "backend": plan.backend,
                           "nccl_baseline": plan.nccl_baseline, "describe": describe(plan)},
              "rdma_buffer_kind": ",".join(kinds) or None,
              "gemm": f"{gm}x{gk}x{gn} {args.gemm_dtype}",
              "slowest_rank": slowest_rank_section(per_rank),
              "gemm_check": gemm_check(per_rank),
              "rdma_pattern": pattern_summary(iters_pat),
              "proxy_timing": proxy_summary([g["proxy"] for g in gathered]),
              "trace": trace_breakdown([g["trace"] for g in gathered], plan.dp),
              "clock_sync_us": max((g["clock_err"] or 0) for g in gathered) / 1e3,
              "raw_baseline": None}
    if result["rdma_pattern"]:
        result["raw_baseline_note"] = RAW_BASELINE_TODO
    counts = {"mode": mode, "tokens": T, "world": world, "nvlink": plan.nvlink, "dp": plan.dp,
              "nets_per_gpu": plan.nets, "shape": {"hidden": H, "scales": S, "experts": E, "topk": K,
                                                   "row_bytes": shape.row_bytes},
              "iterations": [{"rows": [g["pattern"][i] for g in gathered]} for i in range(len(iters_pat))]}
    return result, counts


PIPE_NAMES = ["pipe_dispatch", "pipe_combine", "pipe_nccl_dispatch", "pipe_nccl_combine"]


def pipelined(ctx, a2a, n, rounds, T, align, bufs, nccl_bufs):
    """Series pipe_*: `rounds` runs of n (dispatch, combine) pairs queued back to back
    after one alignment, then the same for NCCL (when it runs). Event times per call, and
    kernel durations from one more profiled run. Returns {"events", "kernels", "moved"}."""
    out_num, out_x, out_s, x, xs, y, out = bufs
    world = ctx.world
    ev = [[torch.cuda.Event(enable_timing=True) for _ in range(6)] for _ in range(n)]
    names = PIPE_NAMES if ctx.nccl else PIPE_NAMES[:2]

    def routes():
        """n fresh routings, and the NCCL row counts of each (one all-gather for all)."""
        rs = []
        sends = torch.zeros(n, world, dtype=torch.int64, device=ctx.dev)
        for i in range(n):
            idx, w, sends[i] = ctx.routing(T)
            rs.append((idx, w))
        sc = sends.tolist()
        rc = None
        if ctx.nccl:
            allsend = [torch.empty_like(sends) for _ in range(world)]
            dist.all_gather(allsend, sends)
            rc = torch.stack([a[:, ctx.rank] for a in allsend], 1).tolist()
        return rs, sc, rc

    def run(rs, sc, rc):
        align()
        for i, (idx, w) in enumerate(rs):
            ev[i][0].record()
            a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w)
            ev[i][1].record()
            a2a.combine(out, idx, w, y)
            ev[i][2].record()
        if ctx.nccl:
            nin_d, nout_d, nin_c, nout_c = nccl_bufs
            align()
            for i in range(n):
                ev[i][3].record()
                dist.all_to_all_single(nout_d[:sum(rc[i])], nin_d[:sum(sc[i])], rc[i], sc[i])
                ev[i][4].record()
                dist.all_to_all_single(nout_c[:sum(sc[i])], nin_c[:sum(rc[i])], sc[i], rc[i])
                ev[i][5].record()
        torch.cuda.synchronize()
        a2a.poll_error()

    evs = {k: [] for k in names}
    moved = []
    for _ in range(rounds):
        rs, sc, rc = routes()
        run(rs, sc, rc)
        # the first call of a run starts from the alignment, not from a previous call
        for i in range(1, n):
            for k, (a, b) in zip(names, ((0, 1), (1, 2), (3, 4), (4, 5))):
                evs[k].append(ev[i][a].elapsed_time(ev[i][b]) * 1000.0)
            moved.append(sum(sc[i]))
    kerns = {k: [] for k in names}
    try:
        from torch.profiler import ProfilerActivity, profile
        rs, sc, rc = routes()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(rs, sc, rc)
        nccl = []
        for _, dur, name in kernel_records(prof):
            if "k_dispatch_both" in name:
                kerns["pipe_dispatch"].append(dur / 1e3)
            elif "k_combine_both" in name:
                kerns["pipe_combine"].append(dur / 1e3)
            elif "nccl" in name.lower() and "allreduce" not in name.lower() and "allgather" not in name.lower():
                nccl.append(dur / 1e3)
        if ctx.nccl and len(nccl) == 2 * n:
            kerns["pipe_nccl_dispatch"] = nccl[0::2]
            kerns["pipe_nccl_combine"] = nccl[1::2]
        for k in kerns:  # drop the first call of the run, as for the events
            kerns[k] = kerns[k][1:]
    except Exception as e:  # the event-timed figures stay valid
        print(f"bench_all_to_all: pipelined kernel profiling failed: {e!r}", file=sys.stderr)
    return {"events": evs, "kernels": kerns, "moved": moved}


# kernel name (as the profiler reports it) -> series; NCCL's kernels are told apart by order
KERNEL_SERIES = [("k_dispatch_both", "dispatch"), ("k_combine_both", "combine"),
                 ("k_dispatch_send", "dispatch_send"), ("k_dispatch_recv", "dispatch_recv"),
                 ("k_combine_send", "combine_send"), ("k_combine_recv", "combine_recv")]


def kernel_records(prof):
    """(start_ns, duration_ns, name) of every GPU kernel the profiler recorded, in start order."""
    out = []
    try:
        for e in prof.profiler.kineto_results.events():
            if e.device_type() == torch.autograd.DeviceType.CUDA:
                out.append((e.start_ns(), e.duration_ns(), e.name()))
    except AttributeError:
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                out.append((e.time_range.start * 1e3, e.time_range.elapsed_us() * 1e3, e.name))
    out.sort()
    return out


def profile_kernels(step, n, names, nccl_runs):
    """Runs `step` n times under torch.profiler and returns {series: [kernel µs]}."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
    kern = {k: [] for k in names}
    nccl = []
    for _, dur, name in kernel_records(prof):
        for key, series in KERNEL_SERIES:
            if key in name:
                kern[series].append(dur / 1e3)
                break
        else:
            if "nccl" in name.lower() and "allreduce" not in name.lower():
                nccl.append(dur / 1e3)
    # per step, NCCL runs three all-to-alls besides the alignment all-reduces: the count
    # exchange, then the dispatch rows, then the combine rows
    if nccl_runs and len(nccl) == 3 * n:
        kern["nccl_dispatch"] = nccl[1::3]
        kern["nccl_combine"] = nccl[2::3]
    return kern


def make_groups(plan, rank):
    """This rank's NVLink-domain group and DP group (every rank creates every group, in
    the same order, as torch.distributed requires). None where the group is the world
    or a single rank."""
    mine = {"node": None, "dp": None}
    if plan.nvlink < plan.world:
        for ranks in node_groups(plan.world, plan.nvlink):
            g = dist.new_group(ranks)
            if rank in ranks:
                mine["node"] = g
    else:
        mine["node"] = dist.group.WORLD
    if plan.dp > 1:
        for ranks in dp_groups(plan.world, plan.dp):
            g = dist.new_group(ranks)
            if rank in ranks:
                mine["dp"] = g
    return mine


def worker(local_rank, plan, args):
    import_torch()
    rank = plan.first_rank + local_rank
    if os.environ.get("A2A_TRACE_OUT"):
        # kernels built with TENDRIL_A2A_TRACE print from the GPU to fd 1: one file per
        # rank keeps the processes' lines apart (device_trace.sh)
        fd = os.open(f"{os.environ['A2A_TRACE_OUT']}.r{rank}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.close(fd)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    devi = plan.device_of(local_rank)
    torch.cuda.set_device(devi)
    dev = torch.device("cuda", devi)
    kw = {"init_method": plan.init_method, "rank": rank, "world_size": plan.world}
    if plan.backend == "nccl":
        kw["device_id"] = dev
    dist.init_process_group(plan.backend, **kw)
    ctx = Ctx(args, plan, rank, dev,
              plan.sms_per_rank(torch.cuda.get_device_properties(dev).multi_processor_count, args.num_sms))
    groups = make_groups(plan, rank)
    if rank == 0:
        print(describe(plan), flush=True)
    out, counts = [], []
    # A side stream, as frameworks run their layers: with GPU RDMA buffers over shm the
    # receiving process's cudaMemcpy (legacy default stream) must not queue behind the
    # all-to-all's kernels (P2PAllToAll refuses the default stream there)
    with torch.cuda.stream(torch.cuda.Stream(dev)):
        for m in plan.modes:
            T = {"decode": args.decode_tokens, "prefill": args.prefill_tokens}[m]
            r, c = run_mode(ctx, groups, T, m)
            if rank == 0:
                out.append(r)
                counts.append(c)
                print(format_mode(r), flush=True)
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if rank == 0 and args.write_pattern:
        with open(args.write_pattern, "w") as f:
            json.dump(counts, f)
    if ctx.engine is not None:
        ctx.engine.stop()  # after every P2PAllToAll of it was destroyed (run_mode)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    ap = build_parser(__doc__, f"bench_all_to_all (tendril {project_version()})")
    args = ap.parse_args(argv)
    try:
        import_torch()
    except ImportError as e:
        print(f"bench_all_to_all: needs PyTorch with CUDA ({e})", file=sys.stderr)
        return 1
    gpus = torch.cuda.device_count()
    if gpus < 1:
        print("bench_all_to_all: no CUDA device")
        return 77
    try:
        plan = plan_launch(args, gpus)
    except ValueError as e:
        ap.error(str(e))
    if not plan.init_method:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        plan = dataclasses.replace(plan, init_method=f"tcp://127.0.0.1:{port}")
    torch.multiprocessing.spawn(worker, args=(plan, args), nprocs=plan.local_ranks, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Multi-process driver of the all-to-all GPU tests (one process per EP rank).

Every process regenerates every rank's inputs from seeds (on the CPU, so all processes
agree bit for bit) and checks its own outputs against a PyTorch reference:
  dispatch: per local expert, the multiset of received rows (payload bytes + scales)
            equals the rows every source routed there; counts are exact; padding rows
            are left untouched.
  combine:  out[t] = base + sum_k w[t,k] * y(t,k), computed in float64, where the expert
            rank produced y = (x.float() * (1 + 0.01 * e)).to(out_dtype).
"""
from __future__ import annotations

import dataclasses
import contextlib
import math
import os
import signal
import time
import traceback
from typing import Callable, List, Optional, Union

import torch
import torch.distributed as dist

SENTINEL = 0x5A  # byte written into outputs before each call
# Extra P2PAllToAll keywords of this process (node_group, dp_group, engine, rdma_buffers),
# set by worker() from args["topo"] (test_a2a_rdma.py); empty: one NVLink domain.
TOPO_KW: dict = {}


@dataclasses.dataclass
class Cfg:
    name: str
    H: int = 256
    S: int = 0
    E: int = 16
    K: int = 4
    T: int = 32
    pad: int = 1
    in_dtype: torch.dtype = torch.bfloat16
    out_dtype: torch.dtype = torch.bfloat16
    routing: str = "random"  # random | one_expert | one_rank | dropped
    tokens: Optional[Callable[[int, int], int]] = None  # (rank, it) -> T of that rank
    bound: Optional[Callable[[int, int], int]] = None   # (rank, it) -> bound_m (device)
    iters: int = 2
    split: Union[bool, Callable[[int, int], bool]] = False  # or (rank, it) -> split this time
    accumulate: bool = False
    seed: int = 1
    partial_f32: bool = False
    sms: int = 0  # blocks per kernel if below the rank's share (T > blocks: chunked routing)


def tok(cfg: Cfg, r: int, it: int) -> int:
    return cfg.T if cfg.tokens is None else cfg.tokens(r, it)


def inputs(cfg: Cfg, r: int, it: int):
    """Inputs of rank r at iteration it (CPU tensors)."""
    g = torch.Generator().manual_seed(cfg.seed * 1000003 + it * 101 + r)
    T = tok(cfg, r, it)
    x = torch.randn(T, cfg.H, generator=g)
    if cfg.in_dtype == torch.float8_e4m3fn:
        x = (x * 4).clamp(-400, 400)
    x = x.to(cfg.in_dtype)
    s = torch.rand(T, cfg.S, generator=g) + 0.5 if cfg.S else None
    if cfg.routing == "one_expert":
        idx = torch.zeros(T, cfg.K, dtype=torch.int64)
        idx += torch.arange(cfg.K)  # experts 0..K-1, all tokens
        if cfg.K == 1:
            idx.zero_()
    elif cfg.routing == "one_rank":
        idx = torch.arange(cfg.K).repeat(T, 1)
    else:
        idx = torch.rand(T, cfg.E, generator=g).topk(cfg.K, dim=1).indices
        if cfg.routing == "dropped":
            drop = torch.rand(T, cfg.K, generator=g) < 0.2
            idx = torch.where(drop, torch.full_like(idx, -1), idx)
    w = torch.rand(T, cfg.K, generator=g) + 0.1
    w = w / w.sum(1, keepdim=True)
    b = tok(cfg, r, it) if cfg.bound is None else max(0, min(cfg.bound(r, it), T))
    return x, s, idx.to(torch.int32), w, b


def row_bytes(x: torch.Tensor, s: Optional[torch.Tensor]) -> torch.Tensor:
    b = x.contiguous().view(torch.uint8).reshape(x.shape[0], x.shape[1] * x.element_size())
    if s is not None:
        b = torch.cat([b, s.contiguous().view(torch.uint8).reshape(s.shape[0], s.shape[1] * 4)], 1)
    return b


def canon(rows: torch.Tensor, experts: torch.Tensor):
    """Sort rows by (expert, content) for multiset comparison."""
    if rows.shape[0] == 0:
        return rows, experts
    g = torch.Generator().manual_seed(7)
    proj = torch.rand(rows.shape[1], generator=g, dtype=torch.float64)
    key = rows.to(torch.float64) @ proj
    o1 = torch.sort(key, stable=True).indices
    o2 = torch.sort(experts[o1], stable=True).indices
    o = o1[o2]
    return rows[o], experts[o]


def y_of(out_x: torch.Tensor, counts: torch.Tensor, pad: int, first: int, out_dtype) -> torch.Tensor:
    """Expert output computed on the expert rank, graph-capturable."""
    padded = (counts + pad - 1) // pad * pad
    ends = torch.cumsum(padded, 0)
    rows = torch.arange(out_x.shape[0], device=out_x.device)
    le = torch.searchsorted(ends, rows, right=True)
    c = 1.0 + 0.01 * (le + first).to(torch.float32)
    return (out_x.to(torch.float32) * c[:, None]).to(out_dtype)


def check_dispatch(cfg: Cfg, a2a, it: int, out_num, out_x, out_s, world: int):
    me = a2a.rank
    D = getattr(a2a, "dp_size", 1)
    first, nloc = a2a.first_expert, a2a.num_local_experts
    exp_rows, exp_e = [], []
    for s in range(me % D, world, D):  # the ranks of this rank's slice send to it
        x, sc, idx, _, b = inputs(cfg, s, it)
        x, idx = x[:b], idx[:b].to(torch.int64)
        sc = sc[:b] if sc is not None else None
        el = idx - first
        valid = (idx >= 0) & (idx < cfg.E) & (el >= 0) & (el < nloc)
        t_i, k_i = valid.nonzero(as_tuple=True)
        exp_rows.append(row_bytes(x, sc)[t_i])
        exp_e.append(el[t_i, k_i])
    exp_rows = torch.cat(exp_rows) if exp_rows else torch.empty(0)
    exp_e = torch.cat(exp_e)
    counts = out_num.cpu().to(torch.int64)
    want = torch.bincount(exp_e, minlength=nloc)[:nloc]
    assert torch.equal(counts, want), f"{cfg.name} it{it} rank{me}: counts {counts.tolist()} != {want.tolist()}"
    ox = out_x.cpu()
    os_ = out_s.cpu() if out_s is not None else None
    padded = (counts + cfg.pad - 1) // cfg.pad * cfg.pad
    offs = torch.cumsum(padded, 0) - padded
    used = torch.zeros(ox.shape[0], dtype=torch.bool)
    act_rows, act_e = [], []
    for l in range(nloc):
        o, c = int(offs[l]), int(counts[l])
        used[o:o + c] = True
        act_rows.append(row_bytes(ox[o:o + c], os_[o:o + c] if os_ is not None else None))
        act_e.append(torch.full((c,), l, dtype=torch.int64))
    act_rows = torch.cat(act_rows) if act_rows else torch.empty(0, exp_rows.shape[1], dtype=torch.uint8)
    act_e = torch.cat(act_e) if act_e else torch.empty(0, dtype=torch.int64)
    a_r, a_e = canon(act_rows, act_e)
    e_r, e_e = canon(exp_rows, exp_e)
    assert torch.equal(a_e, e_e), f"{cfg.name} it{it} rank{me}: expert assignment differs"
    assert torch.equal(a_r, e_r), f"{cfg.name} it{it} rank{me}: dispatched rows differ"
    untouched = ox.view(torch.uint8).reshape(ox.shape[0], -1)[~used]
    assert bool((untouched == SENTINEL).all()), f"{cfg.name} it{it} rank{me}: padding rows were written"
    return counts


def check_combine(cfg: Cfg, a2a, it: int, out: torch.Tensor, base: torch.Tensor):
    x, _, idx, w, b = inputs(cfg, a2a.rank, it)
    idx64 = idx.to(torch.int64)
    valid = (idx64 >= 0) & (idx64 < cfg.E)
    c = 1.0 + 0.01 * idx64.clamp(0, cfg.E).to(torch.float32)  # fp32, as the expert rank
    y = (x.to(torch.float32)[:, None, :] * c[:, :, None]).to(cfg.out_dtype).to(torch.float64)
    ref = (w.to(torch.float64)[:, :, None] * y * valid[:, :, None]).sum(1)
    if cfg.accumulate:
        ref = ref + base.cpu().to(torch.float64)
    got = out.cpu()
    tol = {torch.bfloat16: 1.6e-2, torch.float16: 5e-3, torch.float32: 1e-5}[cfg.out_dtype]
    torch.testing.assert_close(got[:b].to(torch.float64), ref[:b], atol=tol, rtol=tol,
                               msg=lambda m: f"{cfg.name} it{it} rank{a2a.rank}: combine: {m}")
    if b < got.shape[0]:
        rest = got[b:].view(torch.uint8)
        assert bool((rest == base.cpu()[b:].view(torch.uint8)).all()), \
            f"{cfg.name} it{it} rank{a2a.rank}: rows past bound_m were written"


def make(cfg: Cfg, world: int, num_sms: int, timeout_ms: int = 20000):
    from tendril.p2p_all_to_all import P2PAllToAll
    tmax = max(cfg.T, max((tok(cfg, r, i) for r in range(world) for i in range(cfg.iters)), default=1))
    return P2PAllToAll(
        max_num_tokens=max(tmax, 1), num_experts=cfg.E, expert_padding=cfg.pad, hidden_dim=cfg.H,
        hidden_dim_scale=cfg.S or None, in_dtype=cfg.in_dtype, out_dtype=cfg.out_dtype,
        scale_dtype=torch.float32 if cfg.S else None, num_experts_per_token=cfg.K,
        device=torch.device("cuda", torch.cuda.current_device()),
        num_sms=min(num_sms, cfg.sms) if cfg.sms else num_sms,
        timeout_ms=timeout_ms, combine_partial_dtype=torch.float32 if cfg.partial_f32 else None,
        **TOPO_KW), tmax


def check_topology(a2a, world: int) -> None:
    """The context's view of the topology (TOPO_KW runs): RDMA peers and buffer kind."""
    r, D, N = a2a.rank, a2a.dp_size, a2a.ranks_per_node
    want = sum(1 for q in range(r % D, world, D) if q // N != r // N)
    assert a2a.num_rdma_peers == want, f"rank {r}: {a2a.num_rdma_peers} RDMA peers, expected {want}"
    kind = TOPO_KW.get("rdma_buffers", "auto") if want else "none"
    assert kind == "auto" or a2a.rdma_buffer_kind == kind, f"rank {r}: buffers {a2a.rdma_buffer_kind} != {kind}"


def run_cfg(cfg: Cfg, world: int, num_sms: int):
    dev = torch.device("cuda", torch.cuda.current_device())
    a2a, tmax = make(cfg, world, num_sms)
    if TOPO_KW:
        check_topology(a2a, world)
    cap = a2a.max_recv_tokens
    mm = torch.randn(512, 512, device=dev)
    for it in range(cfg.iters):
        x, s, idx, w, b = inputs(cfg, a2a.rank, it)
        x, idx, w = x.to(dev), idx.to(dev), w.to(dev)
        s = s.to(dev) if s is not None else None
        bound = torch.tensor([b], dtype=torch.int32, device=dev) if cfg.bound is not None else None
        out_num = torch.full((a2a.num_local_experts,), -1, dtype=torch.int32, device=dev)
        out_x = torch.empty(cap, cfg.H, dtype=cfg.in_dtype, device=dev)
        out_x.view(torch.uint8).fill_(SENTINEL)
        out_s = torch.full((cap, cfg.S), -1.0, device=dev) if cfg.S else None
        split = cfg.split(a2a.rank, it) if callable(cfg.split) else cfg.split
        if split:
            a2a.dispatch(out_num, out_x, out_s, x, s, idx, w, bound_m=bound, do_recv=False)
            _ = mm @ mm  # unrelated work between the halves
            a2a.dispatch(out_num, out_x, out_s, x, s, idx, w, bound_m=bound, do_send=False)
        else:
            a2a.dispatch(out_num, out_x, out_s, x, s, idx, w, bound_m=bound)
        torch.cuda.synchronize()
        a2a.poll_error()
        counts = check_dispatch(cfg, a2a, it, out_num, out_x, out_s, world)
        y = y_of(out_x, counts.to(dev).to(torch.int32), cfg.pad, a2a.first_expert, cfg.out_dtype)
        T = x.shape[0]
        if cfg.accumulate:
            out = torch.randn(T, cfg.H, device=dev).to(cfg.out_dtype)
        else:
            out = torch.empty(T, cfg.H, dtype=cfg.out_dtype, device=dev)
            out.view(torch.uint8).fill_(SENTINEL)
        base = out.clone()
        if split:
            a2a.combine(out, idx, w, y, bound_m=bound, do_recv=False, accumulate=cfg.accumulate)
            _ = mm @ mm
            a2a.combine(out, idx, w, y, bound_m=bound, do_send=False, accumulate=cfg.accumulate)
        else:
            a2a.combine(out, idx, w, y, bound_m=bound, accumulate=cfg.accumulate)
        torch.cuda.synchronize()
        a2a.poll_error()
        check_combine(cfg, a2a, it, out, base)
    check_proxy_timing(a2a, cfg.iters)
    check_trace(a2a)
    a2a.destroy()


def check_proxy_timing(a2a, iters: int) -> None:
    """Every iteration rang each phase's doorbell once; the proxy timed them (all writes
    completed by the time the iteration's flags were seen). No RDMA peer: no proxy."""
    pt = a2a.proxy_timing()
    if a2a.num_rdma_peers == 0:
        assert pt is None, pt
        return
    for ph in ("dispatch", "weights", "combine"):
        c = pt[ph]["count"] + pt[ph]["dropped"]
        assert 1 <= c <= iters, f"rank {a2a.rank} {ph}: {pt[ph]} after {iters} iterations"
        sd = pt[ph]["seen_done"]
        assert 0 < sd["p50_ns"] <= sd["p99_ns"] <= sd["max_ns"], f"{ph}: {sd}"


def check_trace(a2a) -> None:
    """The last iteration's trace (synchronized before): every phase has the kernel's
    doorbell stamp, the proxy's four times in order, and a flag stamp from each RDMA
    source; the doorbell precedes the proxy seeing it (within the clock sync's
    uncertainty). No RDMA peer: no trace."""
    newest = a2a.trace_newest_epoch()
    if a2a.num_rdma_peers == 0:
        assert newest == 0 and a2a.phase_trace(1) is None and a2a.clock_sync() is None
        return
    err = a2a.clock_sync()
    assert err is not None and 0 <= err < 1_000_000, f"clock sync uncertainty {err} ns"
    assert newest >= 1
    tr = a2a.phase_trace(newest)
    assert tr is not None, f"rank {a2a.rank}: nothing traced for epoch {newest}"
    for ph in ("dispatch", "weights", "combine"):
        t = tr.get(ph)
        assert t, f"rank {a2a.rank} epoch {newest}: no {ph} trace: {tr}"
        assert 0 < t["seen_ns"] <= t["first_ns"] <= t["last_ns"] <= t["done_ns"], f"{ph}: {t}"
        assert t["bell_ns"] > 0 and t["bell_ns"] <= t["seen_ns"] + err + 2000, f"{ph}: {t} (+/- {err} ns)"
        assert len(t["flag_ns"]) == a2a.num_rdma_peers and all(v > 0 for v in t["flag_ns"].values()), \
            f"{ph}: flags {t['flag_ns']} for {a2a.num_rdma_peers} RDMA peers"
    assert a2a.phase_trace(newest + 1) is None


def run_graph(cfg: Cfg, world: int, num_sms: int, replays: int = 6):
    """Capture dispatch -> expert -> combine once, replay with new routing and bound_m."""
    dev = torch.device("cuda", torch.cuda.current_device())
    a2a, tmax = make(cfg, world, num_sms)
    cap, T = a2a.max_recv_tokens, cfg.T
    sx = torch.zeros(T, cfg.H, dtype=cfg.in_dtype, device=dev)
    ss = torch.ones(T, cfg.S, device=dev) if cfg.S else None
    sidx = torch.zeros(T, cfg.K, dtype=torch.int32, device=dev)
    sidx += torch.arange(cfg.K, dtype=torch.int32, device=dev)
    sw = torch.full((T, cfg.K), 1.0 / cfg.K, device=dev)
    sb = torch.tensor([T], dtype=torch.int32, device=dev)
    out_num = torch.zeros(a2a.num_local_experts, dtype=torch.int32, device=dev)
    out_x = torch.zeros(cap, cfg.H, dtype=cfg.in_dtype, device=dev)
    out_s = torch.zeros(cap, cfg.S, device=dev) if cfg.S else None
    out = torch.zeros(T, cfg.H, dtype=cfg.out_dtype, device=dev)

    def step():
        a2a.dispatch(out_num, out_x, out_s, sx, ss, sidx, sw, bound_m=sb)
        y = y_of(out_x, out_num, cfg.pad, a2a.first_expert, cfg.out_dtype)
        a2a.combine(out, sidx, sw, y, bound_m=sb)

    s = torch.cuda.Stream(dev)
    s.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(s):
        step()  # eager warm-up iteration (all ranks)
    torch.cuda.current_stream(dev).wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    for it in range(replays):
        x, sc, idx, w, b = inputs(cfg, a2a.rank, it)
        sx.copy_(x)
        if sc is not None:
            ss.copy_(sc)
        sidx.copy_(idx)
        sw.copy_(w)
        sb.fill_(b)
        out_x.view(torch.uint8).fill_(SENTINEL)
        out.view(torch.uint8).fill_(SENTINEL)
        base = out.clone()
        g.replay()
        torch.cuda.synchronize()
        a2a.poll_error()
        counts = check_dispatch(cfg, a2a, it, out_num, out_x, out_s, world)
        del counts
        check_combine(cfg, a2a, it, out, base)
    del g
    a2a.destroy()


def run_timeout(cfg: Cfg, world: int, num_sms: int):
    """Rank 0 runs a dispatch that nobody answers: the kernel must give up and report.
    cfg.T tokens: at 8 the wait is the recv half's; at 300 (more than the blocks, context
    above 256 tokens) the fused launch takes the direct path and waits mid-send for the
    silent peer's counts (CNT)."""
    from tendril.p2p_all_to_all import P2PAllToAll
    dev = torch.device("cuda", torch.cuda.current_device())
    T = cfg.T
    a2a = P2PAllToAll(max_num_tokens=T, num_experts=4, expert_padding=1, hidden_dim=64,
                      hidden_dim_scale=None, in_dtype=torch.bfloat16, out_dtype=torch.bfloat16,
                      scale_dtype=None, num_experts_per_token=1, device=dev, num_sms=num_sms,
                      timeout_ms=300, **TOPO_KW)
    if a2a.rank == 0:
        x = torch.randn(T, 64, device=dev).bfloat16()
        idx = torch.zeros(T, 1, dtype=torch.int32, device=dev)
        w = torch.ones(T, 1, device=dev)
        out_num = torch.zeros(a2a.num_local_experts, dtype=torch.int32, device=dev)
        out_x = torch.zeros(a2a.max_recv_tokens, 64, dtype=torch.bfloat16, device=dev)
        a2a.dispatch(out_num, out_x, None, x, None, idx, w)
        torch.cuda.synchronize()
        try:
            a2a.poll_error()
        except TimeoutError as e:
            assert "did not answer" in str(e), str(e)
        else:
            raise AssertionError("expected a TimeoutError")
        # the context refuses further work
        try:
            a2a.combine(torch.zeros(T, 64, dtype=torch.bfloat16, device=dev), idx, w, out_x)
        except TimeoutError:
            pass
        else:
            raise AssertionError("expected a TimeoutError from the next call")
        # bad input is rejected with a message
        try:
            a2a.dispatch(out_num, out_x, None, x, None, idx[:, :0], w)
        except ValueError as e:
            assert "indices" in str(e)
        else:
            raise AssertionError("expected ValueError")
    dist.barrier()
    a2a.destroy()


def run_legacy_stream(cfg: Cfg, world: int, num_sms: int):
    """GPU RDMA buffers over shm: dispatch on the default stream must raise at once (its
    receive kernel would block the target's cudaMemcpy for good); then the same call on a
    side stream works, so the refusal lost nothing."""
    dev = torch.device("cuda", torch.cuda.current_device())
    a2a, _ = make(cfg, world, num_sms)
    prov = getattr(TOPO_KW.get("engine"), "provider", "")
    x, s, idx, w, _ = inputs(cfg, a2a.rank, 0)
    x, idx, w = x.to(dev), idx.to(dev), w.to(dev)
    out_num = torch.zeros(a2a.num_local_experts, dtype=torch.int32, device=dev)
    out_x = torch.empty(a2a.max_recv_tokens, cfg.H, dtype=cfg.in_dtype, device=dev)
    out_x.view(torch.uint8).fill_(SENTINEL)  # check_dispatch: padding rows stay untouched
    if a2a.rdma_buffer_kind == "gpu" and prov.split(";")[0] in ("shm", "sm2"):
        with torch.cuda.stream(torch.cuda.default_stream(dev)):
            try:
                a2a.dispatch(out_num, out_x, None, x, None, idx, w)
                raise AssertionError("dispatch on the default stream was accepted")
            except RuntimeError as ex:
                assert "non-default stream" in str(ex), ex
    a2a.dispatch(out_num, out_x, None, x, None, idx, w)
    torch.cuda.synchronize()
    a2a.poll_error()
    check_dispatch(cfg, a2a, 0, out_num, out_x, None, world)
    a2a.destroy()


def run_overflow(cfg: Cfg, world: int, num_sms: int):
    """Every rank passes an output of one row for many received rows: the kernels must
    store nothing past it and report EOVERFLOW, and the context must refuse further work.
    cfg.T = 300 takes the fused launch's direct path (own rows stored during the send)."""
    from tendril.p2p_all_to_all import P2PAllToAll
    dev = torch.device("cuda", torch.cuda.current_device())
    T, E, H = cfg.T, 2 * world, 64
    a2a = P2PAllToAll(max_num_tokens=T, num_experts=E, expert_padding=1, hidden_dim=H,
                      hidden_dim_scale=None, in_dtype=torch.bfloat16, out_dtype=torch.bfloat16,
                      scale_dtype=None, num_experts_per_token=1, device=dev, num_sms=num_sms,
                      timeout_ms=5000, **TOPO_KW)
    x = torch.randn(T, H, device=dev).bfloat16()
    idx = (torch.arange(T, device=dev) % E).to(torch.int32).view(T, 1)  # every rank gets T/world rows
    w = torch.ones(T, 1, device=dev)
    out_num = torch.zeros(a2a.num_local_experts, dtype=torch.int32, device=dev)
    # one row of capacity, with a guard row after it that must stay untouched
    buf = torch.full((2, H), 7.0, dtype=torch.bfloat16, device=dev)
    a2a.dispatch(out_num, buf[:1], None, x, None, idx, w)
    torch.cuda.synchronize()
    try:
        a2a.poll_error()
    except RuntimeError as e:
        assert "exceed the output capacity" in str(e), str(e)
    else:
        raise AssertionError("expected a RuntimeError for the overflow")
    assert torch.all(buf[1] == 7.0), "a row past the output capacity was written"
    try:
        a2a.combine(torch.zeros(T, H, dtype=torch.bfloat16, device=dev), idx, w, buf[:1])
    except RuntimeError:
        pass
    else:
        raise AssertionError("expected the failed context to refuse combine")
    dist.barrier()
    a2a.destroy()


def run_killed(world: int, num_sms: int):
    """A rank dies (SIGKILL) after a good iteration: every survivor's next iterations
    must fail with an error (the engine's peer-gone report through the proxy over RDMA,
    the in-kernel timeout over NVLink) within seconds, never hang, and destroy(barrier=
    False) must free the context without the dead rank."""
    from tendril.p2p_all_to_all import P2PAllToAll
    dev = torch.device("cuda", torch.cuda.current_device())
    rank, victim = dist.get_rank(), world - 1
    T, E, H, K = 16, 2 * world, 64, 2
    a2a = P2PAllToAll(max_num_tokens=T, num_experts=E, expert_padding=1, hidden_dim=H,
                      hidden_dim_scale=None, in_dtype=torch.bfloat16, out_dtype=torch.bfloat16,
                      scale_dtype=None, num_experts_per_token=K, device=dev, num_sms=num_sms,
                      timeout_ms=3000, **TOPO_KW)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(T, H, generator=g).bfloat16().to(dev)
    idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)]).to(torch.int32).to(dev)
    w = torch.ones(T, K, device=dev)
    out_num = torch.zeros(a2a.num_local_experts, dtype=torch.int32, device=dev)
    out_x = torch.zeros(a2a.max_recv_tokens, H, dtype=torch.bfloat16, device=dev)
    out = torch.zeros(T, H, dtype=torch.bfloat16, device=dev)

    def iteration():
        a2a.dispatch(out_num, out_x, None, x, None, idx, w)
        a2a.combine(out, idx, w, out_x)
        torch.cuda.synchronize()
        a2a.poll_error()

    iteration()  # all alive: must succeed
    dist.barrier()
    if rank == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    try:
        for _ in range(3):
            iteration()
    except (RuntimeError, TimeoutError, ConnectionError, OSError) as e:
        took = time.monotonic() - t0
        print(f"[rank {rank}] rank {victim} killed: {type(e).__name__} after {took:.2f} s: {e}", flush=True)
        assert took < 30, f"the error took {took:.1f} s"
    else:
        raise AssertionError(f"rank {rank}: no error after rank {victim} was killed")
    # the failed context refuses work at once
    try:
        a2a.dispatch(out_num, out_x, None, x, None, idx, w)
    except (RuntimeError, TimeoutError, ConnectionError, OSError):
        pass
    else:
        raise AssertionError("the failed context accepted a dispatch")
    a2a.destroy(barrier=False)


def worker(rank: int, world: int, port: int, job: str, args: dict):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    ngpu = torch.cuda.device_count()
    torch.cuda.set_device(rank % ngpu)
    per_gpu = math.ceil(world / ngpu)
    sms = torch.cuda.get_device_properties(rank % ngpu).multi_processor_count
    # TENDRIL_TEST_NUM_SMS: the kernels' SM count (default: this rank's share of the GPU)
    num_sms = int(os.environ.get("TENDRIL_TEST_NUM_SMS", "0")) or max(1, sms // per_gpu)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    engine = None
    try:
        if args.get("topo"):
            engine = set_topology(rank, world, args["topo"])
        from a2a_cases import CASES  # noqa: E402 (same directory)
        # GPU RDMA buffers over shm: the receiving process's cudaMemcpy (legacy default
        # stream) must not queue behind the all-to-all's kernels: a non-blocking stream
        # (P2PAllToAll refuses the default one there; the legacy_stream case checks it)
        gpu_rdma = TOPO_KW.get("rdma_buffers") == "gpu"
        with torch.cuda.stream(torch.cuda.Stream()) if gpu_rdma else contextlib.nullcontext():
            for cfg_name in args["cases"]:
                kind, cfg = CASES[cfg_name]
                if rank == 0:
                    print(f"[EP{world}] {cfg_name}", flush=True)
                if kind == "run":
                    run_cfg(cfg, world, num_sms)
                elif kind == "graph":
                    run_graph(cfg, world, num_sms)
                elif kind == "timeout":
                    run_timeout(cfg, world, num_sms)
                elif kind == "overflow":
                    run_overflow(cfg, world, num_sms)
                elif kind == "legacy_stream":
                    run_legacy_stream(cfg, world, num_sms)
                elif kind == "killed":
                    run_killed(world, num_sms)
                    return  # a rank is dead: no barrier
        dist.barrier()
    except Exception:
        traceback.print_exc()
        raise
    finally:
        TOPO_KW.clear()
        if engine is not None:
            engine.stop()
        dist.destroy_process_group()


def set_topology(rank: int, world: int, topo: dict):
    """Fills TOPO_KW for a run across "nodes" on one machine: ranks_per_node (node_group
    size; 1 = every peer over RDMA), dp_size (dp_group size), and an engine of this
    process on `provider`: a host-memory group for rdma_buffers "host" (any libfabric),
    a group of this rank's GPU for "gpu" (needs a provider that registers CUDA memory:
    shm of libfabric 2.x built with CUDA). Returns the engine."""
    import tendril
    rpn, D = topo.get("ranks_per_node", 1), topo.get("dp_size", 1)
    node_group = dp_group = None
    for n in range(world // rpn):  # every rank creates every group, in one order
        g = dist.new_group(list(range(n * rpn, (n + 1) * rpn)))
        if rank // rpn == n:
            node_group = g
    for n in range(world // D):
        g = dist.new_group(list(range(n * D, (n + 1) * D)))
        if rank // D == n:
            dp_group = g
    p = topo.get("provider", "tcp")
    gpus = [torch.cuda.current_device()] if topo.get("rdma_buffers") == "gpu" else []
    engine = tendril.TransferEngine(nets_per_gpu=1, cuda_devices=gpus, provider=p,
                                    nics=["lo"] if "tcp" in p else None)
    TOPO_KW.update(node_group=node_group, dp_group=dp_group, engine=engine,
                   rdma_buffers=topo.get("rdma_buffers", "host"))
    return engine

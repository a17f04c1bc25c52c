#!/usr/bin/env python3
"""bench_all_to_all: MoE dispatch/combine over NVLink (tendril.P2PAllToAll) against NCCL
all-to-all (torch.distributed.all_to_all_single) on the same data, in the same run.

Default shape: DeepSeek-V3 (hidden 7168, fp8 e4m3 payload + 56 fp32 scales per token,
bf16 combine, 256 experts, top-8), decode (128 tokens/rank) and prefill (4096 tokens/rank),
one process per GPU. Every iteration draws fresh random routing. Before each timed
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

  python3 bench/bench_all_to_all/bench_all_to_all.py [--modes decode,prefill] [--json out.json]
"""
import argparse
import json
import os
import socket
import statistics
import sys

# torch is imported after the arguments are parsed (import_torch), so that --help and
# --version work on a machine without it; the spawned workers import it themselves.
torch = None
dist = None

VERSION_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "CMakeLists.txt")


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


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[i]


def run_mode(args, rank, world, dev, T):
    from tendril.p2p_all_to_all import P2PAllToAll
    H, S, E, K = args.hidden, args.scales, args.experts, args.topk
    a2a = P2PAllToAll(max_num_tokens=T, num_experts=E, expert_padding=1, hidden_dim=H,
                      hidden_dim_scale=S, in_dtype=torch.float8_e4m3fn, out_dtype=torch.bfloat16,
                      scale_dtype=torch.float32, num_experts_per_token=K, device=dev,
                      num_sms=args.num_sms, timeout_ms=20000,
                      combine_partial_dtype=torch.float32 if args.partial_f32 else None)
    cap = a2a.max_recv_tokens
    L = (E + world - 1) // world
    x = torch.randn(T, H, device=dev).to(torch.float8_e4m3fn)
    xs = torch.rand(T, S, device=dev)
    out_num = torch.empty(a2a.num_local_experts, dtype=torch.int32, device=dev)
    out_x = torch.empty(cap, H, dtype=torch.float8_e4m3fn, device=dev)
    out_s = torch.empty(cap, S, device=dev)
    y = torch.randn(cap, H, device=dev).to(torch.bfloat16)
    out = torch.empty(T, H, dtype=torch.bfloat16, device=dev)
    gsz = 2048 if T <= 128 else 8192
    ga = torch.randn(gsz, gsz, device=dev)
    one = torch.ones(1, device=dev)
    drow = H + 4 * S  # dispatch row bytes (fp8 payload + scales)
    crow = 2 * H      # combine row bytes (bf16)
    nccl_in_d = torch.empty(T * world, drow, dtype=torch.uint8, device=dev)
    nccl_out_d = torch.empty(T * world, drow, dtype=torch.uint8, device=dev)
    nccl_in_c = torch.empty(T * world, crow, dtype=torch.uint8, device=dev)
    nccl_out_c = torch.empty(T * world, crow, dtype=torch.uint8, device=dev)

    def align():
        # the GEMM first, so that the host has queued what follows before the GPUs get
        # there; the all-reduce last, so that the ranks leave it within one NVLink flag
        # latency of each other (with the GEMM last, any difference in its duration
        # between the two GPUs became skew in the timed call)
        torch.mm(ga, ga)
        dist.all_reduce(one)

    names = ["dispatch", "combine", "dispatch_send", "dispatch_recv", "combine_send", "combine_recv",
             "nccl_dispatch", "nccl_combine"]
    res = {n: [] for n in names}
    moved = []
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(16)]

    def step():
        """One iteration: fresh routing, every series once, each between two events."""
        idx = torch.rand(T, E, device=dev).topk(K, dim=1).indices.to(torch.int32)
        w = torch.rand(T, K, device=dev)
        # NCCL baseline inputs: one row per (token, destination rank)
        dest = torch.zeros(T, world, dtype=torch.bool, device=dev)
        dest.scatter_(1, (idx // L).long(), True)
        send_counts = dest.sum(0)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts)
        sc, rc = send_counts.tolist(), recv_counts.tolist()
        # --- back to back
        align()
        ev[0].record()
        a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w)
        ev[1].record()
        align()
        ev[2].record()
        a2a.combine(out, idx, w, y)
        ev[3].record()
        # --- split, unrelated work between the halves
        align()
        ev[4].record()
        a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w, do_recv=False)
        ev[5].record()
        torch.mm(ga, ga)
        ev[6].record()
        a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w, do_send=False)
        ev[7].record()
        align()
        ev[8].record()
        a2a.combine(out, idx, w, y, do_recv=False)
        ev[9].record()
        torch.mm(ga, ga)
        ev[10].record()
        a2a.combine(out, idx, w, y, do_send=False)
        ev[11].record()
        # --- NCCL all-to-all of the same rows
        align()
        ev[12].record()
        dist.all_to_all_single(nccl_out_d[:sum(rc)], nccl_in_d[:sum(sc)], rc, sc)
        ev[13].record()
        align()
        ev[14].record()
        dist.all_to_all_single(nccl_out_c[:sum(sc)], nccl_in_c[:sum(rc)], sc, rc)
        ev[15].record()
        torch.cuda.synchronize()
        a2a.poll_error()
        return sum(sc)

    iters = args.warmup + (args.iters if T <= 128 else args.prefill_iters)
    for it in range(iters):
        mv_it = step()
        if it < args.warmup:
            continue
        moved.append(mv_it)
        pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15)]
        for n, (a, b) in zip(names, pairs):
            res[n].append(ev[a].elapsed_time(ev[b]) * 1000.0)
    # Kernel durations as the profiler records them (CUPTI activity records: the time the
    # kernel ran on the GPU, without the launch and event overhead that the event pairs
    # include). This is how DeepEP's benchmarks time their kernels (bench_kineto), so these
    # are the figures to put next to DeepEP's.
    kern = {n: [] for n in names}
    nprof = args.profile_iters if T <= 128 else max(1, args.profile_iters // 5)
    if nprof > 0:
        try:
            kern = profile_kernels(step, nprof, names)
        except Exception as e:  # the event-timed figures above stay valid
            print(f"bench_all_to_all: kernel profiling failed on rank {rank}: {e!r}", file=sys.stderr)
    # --- pipelined: DeepEP's method (its bench_kineto): one alignment, then a run of
    # dispatch, combine, dispatch, combine... with no alignment in between, so that each
    # call starts when the previous collective released both ranks (no host-made skew).
    # Fresh routing for every call of the run; NCCL's all-to-alls get their own run.
    rounds = args.pipe_rounds if T <= 128 else max(1, args.pipe_rounds // 5)
    if rounds > 0:
        pres = pipelined(a2a, args.pipe_len, rounds, T, E, K, L, world, dev, align,
                         (out_num, out_x, out_s, x, xs, y, out), (nccl_in_d, nccl_out_d, nccl_in_c, nccl_out_c))
        for n, v in pres["events"].items():
            res[n] = v
            names.append(n)
        for n, v in pres["kernels"].items():
            kern[n] = v
        moved.extend(pres["moved"])
    a2a.destroy()
    gathered = [None] * world
    dist.all_gather_object(gathered, {"res": res, "moved": moved, "kern": kern})
    if rank != 0:
        return None
    pooled = {n: [v for g in gathered for v in g["res"][n]] for n in names}
    kpooled = {n: [v for g in gathered for v in g["kern"][n]] for n in names}
    mv = statistics.mean(v for g in gathered for v in g["moved"])
    logical = {"d": T * K * (H + 4 * S), "c": T * K * crow}
    moved_b = {"d": mv * drow, "c": mv * crow}
    rows = []
    for n in names:
        kind = "c" if "combine" in n else "d"
        p50, p99 = pct(pooled[n], 50), pct(pooled[n], 99)
        rows.append({"series": n, "p50_us": p50, "p99_us": p99, "mean_us": statistics.mean(pooled[n]),
                     "gbps_logical": logical[kind] / p50 / 1e3 if "nccl" not in n else None,
                     "gbps_moved": moved_b[kind] / p50 / 1e3, "samples": len(pooled[n]),
                     "kernel_p50_us": pct(kpooled[n], 50) if kpooled[n] else None,
                     "kernel_p99_us": pct(kpooled[n], 99) if kpooled[n] else None,
                     "kernel_mean_us": statistics.mean(kpooled[n]) if kpooled[n] else None,
                     "kernel_samples": len(kpooled[n])})
    return {"tokens": T, "world": world, "hidden": H, "scales": S, "experts": E, "topk": K,
            "num_sms": args.num_sms or torch.cuda.get_device_properties(dev).multi_processor_count,
            "partials": "fp32" if args.partial_f32 else "bf16", "rows_moved_per_rank": mv, "series": rows}


PIPE_NAMES = ["pipe_dispatch", "pipe_combine", "pipe_nccl_dispatch", "pipe_nccl_combine"]


def pipelined(a2a, n, rounds, T, E, K, L, world, dev, align, bufs, nccl_bufs):
    """Series pipe_*: `rounds` runs of n (dispatch, combine) pairs queued back to back
    after one alignment, then the same for NCCL. Event times per call, and kernel
    durations from one more profiled run. Returns {"events", "kernels", "moved"}."""
    out_num, out_x, out_s, x, xs, y, out = bufs
    nin_d, nout_d, nin_c, nout_c = nccl_bufs
    ev = [[torch.cuda.Event(enable_timing=True) for _ in range(6)] for _ in range(n)]

    def routes():
        """n fresh routings, and the NCCL row counts of each (one all-gather for all)."""
        rs = []
        sends = torch.zeros(n, world, dtype=torch.int64, device=dev)
        for i in range(n):
            idx = torch.rand(T, E, device=dev).topk(K, dim=1).indices.to(torch.int32)
            rs.append((idx, torch.rand(T, K, device=dev)))
            dest = torch.zeros(T, world, dtype=torch.bool, device=dev)
            dest.scatter_(1, (idx // L).long(), True)
            sends[i] = dest.sum(0)
        allsend = [torch.empty_like(sends) for _ in range(world)]
        dist.all_gather(allsend, sends)
        me = dist.get_rank()
        sc = sends.tolist()
        rc = torch.stack([a[:, me] for a in allsend], 1).tolist()
        return rs, sc, rc

    def run(rs, sc, rc):
        align()
        for i, (idx, w) in enumerate(rs):
            ev[i][0].record()
            a2a.dispatch(out_num, out_x, out_s, x, xs, idx, w)
            ev[i][1].record()
            a2a.combine(out, idx, w, y)
            ev[i][2].record()
        align()
        for i in range(n):
            ev[i][3].record()
            dist.all_to_all_single(nout_d[:sum(rc[i])], nin_d[:sum(sc[i])], rc[i], sc[i])
            ev[i][4].record()
            dist.all_to_all_single(nout_c[:sum(sc[i])], nin_c[:sum(rc[i])], sc[i], rc[i])
            ev[i][5].record()
        torch.cuda.synchronize()
        a2a.poll_error()

    evs = {k: [] for k in PIPE_NAMES}
    moved = []
    for _ in range(rounds):
        rs, sc, rc = routes()
        run(rs, sc, rc)
        # the first call of a run starts from the alignment, not from a previous call
        for i in range(1, n):
            for k, (a, b) in zip(PIPE_NAMES, ((0, 1), (1, 2), (3, 4), (4, 5))):
                evs[k].append(ev[i][a].elapsed_time(ev[i][b]) * 1000.0)
            moved.append(sum(sc[i]))
    kerns = {k: [] for k in PIPE_NAMES}
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
        if len(nccl) == 2 * n:
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


def profile_kernels(step, n, names):
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
    if len(nccl) == 3 * n:
        kern["nccl_dispatch"] = nccl[1::3]
        kern["nccl_combine"] = nccl[2::3]
    return kern


def worker(rank, world, port, args):
    import_torch()
    if os.environ.get("A2A_TRACE_OUT"):
        # kernels built with TENDRIL_A2A_TRACE print from the GPU to fd 1: one file per
        # rank keeps the two processes' lines apart (device_trace.sh)
        fd = os.open(f"{os.environ['A2A_TRACE_OUT']}.r{rank}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.close(fd)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            device_id=dev)
    out = []
    for m in args.modes.split(","):
        T = {"decode": args.decode_tokens, "prefill": args.prefill_tokens}[m]
        r = run_mode(args, rank, world, dev, T)
        if rank == 0:
            r["mode"] = m
            out.append(r)
            print_table(r)
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()


def print_table(r):
    print(f"\n{r['mode']}: EP{r['world']} T={r['tokens']}/rank H={r['hidden']} S={r['scales']} "
          f"E={r['experts']} top-{r['topk']} fp8->bf16, {r['partials']} partials, {r['num_sms']} SMs, "
          f"{r['rows_moved_per_rank']:.0f} rows moved/rank/direction")
    print(f"{'series':<19}{'p50 us':>10}{'p99 us':>10}{'GB/s logical':>14}{'GB/s moved':>12}"
          f"{'kernel p50':>12}{'kernel p99':>12}{'kernel mean':>13}")
    for s in r["series"]:
        gl = f"{s['gbps_logical']:.0f}" if s["gbps_logical"] is not None else "-"
        k50 = f"{s['kernel_p50_us']:.1f}" if s["kernel_p50_us"] is not None else "-"
        k99 = f"{s['kernel_p99_us']:.1f}" if s["kernel_p99_us"] is not None else "-"
        kmn = f"{s['kernel_mean_us']:.1f}" if s["kernel_mean_us"] is not None else "-"
        print(f"{s['series']:<19}{s['p50_us']:>10.1f}{s['p99_us']:>10.1f}{gl:>14}{s['gbps_moved']:>12.0f}"
              f"{k50:>12}{k99:>12}{kmn:>13}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=0, help="ranks (default: one per GPU)")
    ap.add_argument("--modes", default="decode,prefill")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--scales", type=int, default=56)
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--num-sms", type=int, default=0, help="blocks per kernel (0 = every SM)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=300, help="timed decode iterations")
    ap.add_argument("--prefill-iters", type=int, default=50, help="timed prefill iterations")
    ap.add_argument("--profile-iters", type=int, default=100,
                    help="decode iterations run again under torch.profiler for kernel durations "
                         "(prefill: a fifth of it; 0 = off)")
    ap.add_argument("--pipe-len", type=int, default=30,
                    help="calls per pipelined run (DeepEP's bench_kineto: 30)")
    ap.add_argument("--pipe-rounds", type=int, default=10,
                    help="pipelined runs, each with fresh routing per call (prefill: a fifth; 0 = off)")
    ap.add_argument("--partial-f32", action="store_true",
                    help="combine partial sums travel as fp32 (default: as bf16, the out dtype)")
    ap.add_argument("--json", default="")
    ap.add_argument("--version", action="version",
                    version=f"bench_all_to_all (tendril {project_version()})")
    args = ap.parse_args()
    try:
        import_torch()
    except ImportError as e:
        print(f"bench_all_to_all: needs PyTorch with CUDA ({e})", file=sys.stderr)
        return 1
    world = args.world or torch.cuda.device_count()
    if world < 1:
        print("bench_all_to_all: no CUDA device")
        return 77
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(worker, args=(world, port, args), nprocs=world, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench_all_to_all's pure logic (bench/bench_all_to_all/a2a_bench_args.py and
a2a_bench_report.py): flag checks and launch plan, slowest-rank reduction, GEMM ratio,
RDMA write summary, text report. No torch, no GPU."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BENCH = os.path.join(ROOT, "bench", "bench_all_to_all")
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(ROOT, "tools", "a2a_model"))

import a2a_bench_args as A  # noqa: E402
import a2a_bench_report as R  # noqa: E402
import a2a_bytes as B  # noqa: E402


def plan(argv, gpus=8):
    a = A.build_parser("t", "v").parse_args(argv)
    return A.plan_launch(a, gpus)


# ---- launch plan ----------------------------------------------------------------------

def test_default_is_one_nvlink_domain_of_every_gpu():
    p = plan([])
    assert (p.world, p.local_ranks, p.machines, p.nvlink, p.dp, p.nets) == (8, 8, 1, 8, 1, 1)
    assert not p.rdma_pairs and p.backend == "nccl" and p.nccl_baseline
    assert "pplx-garden's default is --nvlink 1" in p.nvlink_from
    assert p.init_method == ""


def test_pplx_garden_multi_machine_command():
    # python3 -m benchmarks.bench_all_to_all --world-size 32 --nets-per-gpu 2
    #   --init-method=tcp://10.0.0.1:29500 --node-rank=2 --nvlink=8
    p = plan(["--world-size", "32", "--nets-per-gpu", "2", "--init-method=tcp://10.0.0.1:29500",
              "--node-rank=2", "--nvlink=8"])
    assert (p.world, p.machines, p.local_ranks, p.first_rank, p.nvlink, p.nets) == (32, 4, 8, 16, 8, 2)
    assert p.nvlink_from == "--nvlink" and p.rdma_pairs
    assert p.init_method == "tcp://10.0.0.1:29500"
    # without --nvlink: one domain per machine (hybrid), not pplx-garden's RDMA-only
    q = plan(["--world-size", "16", "--init-method=tcp://h:1", "--node-rank", "1"])
    assert q.nvlink == 8 and q.first_rank == 8
    assert plan(["--world-size", "16", "--init-method=tcp://h:1", "--nvlink", "1"]).nvlink == 1


def test_rdma_between_ranks_of_one_machine():
    p = plan(["--world-size", "8", "--nvlink", "4"])  # two emulated nodes on one box
    assert p.machines == 1 and p.rdma_pairs and p.nvlink == 4
    assert A.node_groups(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_several_ranks_per_gpu():
    p = plan(["--world-size", "8"], gpus=2)
    assert p.ranks_per_gpu == 4 and p.backend == "gloo" and not p.nccl_baseline
    assert "share a GPU" in p.nccl_note
    assert [p.device_of(i) for i in range(8)] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert p.sms_per_rank(132, 0) == 33 and p.sms_per_rank(132, 20) == 20
    assert plan([], gpus=2).ranks_per_gpu == 1
    # more ranks than GPUs on one machine: shared GPUs, not a second machine
    assert plan(["--world-size", "16"]).machines == 1


def test_engine_flags():
    p = plan(["--world-size", "4", "--nvlink", "1", "--provider", "tcp", "--nic-names", "lo"], gpus=1)
    assert (p.provider, p.nic_names, p.ranks_per_gpu, p.nccl_baseline) == ("tcp", ("lo",), 4, False)
    assert "engine: provider tcp (lo)" in A.describe(p)
    q = plan(["--world-size", "2", "--nvlink", "1", "--provider", "shm"], gpus=1)
    assert q.provider == "shm" and q.nic_names == () and "engine: provider shm" in A.describe(q)
    assert "P2PAllToAll's own" in A.describe(plan(["--world-size", "16", "--init-method", "tcp://h:1"]))
    assert "engine" not in A.describe(plan([]))  # one NVLink domain: no RDMA peer, no engine


def test_dp_groups():
    p = plan(["--world-size", "8", "--dp-size", "2"])
    assert p.dp == 2
    assert A.dp_groups(8, 2) == [[0, 1], [2, 3], [4, 5], [6, 7]]


@pytest.mark.parametrize("argv, message", [
    (["--world-size", "8", "--nvlink", "3"], "NVLink domain must lie within one machine"),
    (["--world-size", "16", "--init-method", "tcp://h:1", "--nvlink", "16"], "within one machine"),
    (["--world-size", "16", "--local-ranks", "8"], "need --init-method"),
    (["--init-method", "tcp://h:1"], "needs --world-size"),
    (["--node-rank", "1"], "needs --init-method"),
    (["--world-size", "16", "--init-method", "tcp://h:1", "--node-rank", "2"], "only 2 machine"),
    (["--world-size", "8", "--dp-size", "3"], "--dp-size 3"),
    (["--world-size", "12", "--init-method", "tcp://h:1"], "not a multiple of the ranks per machine"),
    (["--modes", "decode,train"], "--modes"),
    (["--topk", "9", "--experts", "8"], "exceeds"),
    (["--nets-per-gpu", "0"], "--nets-per-gpu must be >= 1"),
    (["--iters", "0"], "--iters must be >= 1"),
    (["--nic-names", "lo"], "--nic-names needs --provider"),
    (["--provider", "tcp", "--nic-names", "lo,lo", "--nets-per-gpu", "1"], "lists 2 NIC"),
])
def test_bad_combinations(argv, message):
    with pytest.raises(ValueError, match=message):
        plan(argv)


def test_no_gpu():
    with pytest.raises(ValueError, match="no CUDA device"):
        plan([], gpus=0)


def test_gemm_sizes():
    assert A.parse_gemm("", 128) == (2048, 2048, 2048)
    assert A.parse_gemm("", 4096) == (8192, 8192, 8192)
    assert A.parse_gemm("4096", 128) == (4096, 4096, 4096)
    assert A.parse_gemm("128x7168x2048", 128) == (128, 7168, 2048)
    for bad in ("x", "1x2", "0", "4kx1x1"):
        with pytest.raises(ValueError, match="--gemm"):
            A.parse_gemm(bad, 128)


def test_pplx_garden_aliases():
    a = A.build_parser("t", "v").parse_args(["--num-experts", "128", "--hidden-dim", "4096", "--hidden-dim-scale", "32",
                                             "--num-experts-per-token", "4", "--num-warmup", "3", "--num-repeats", "7",
                                             "--world", "4"])
    assert (a.experts, a.hidden, a.scales, a.topk, a.warmup, a.iters, a.world) == (128, 4096, 32, 4, 3, 7, 4)


# ---- aggregation ----------------------------------------------------------------------

def test_pct_nearest_rank():
    assert R.pct([5, 1, 3], 50) == 3
    assert R.pct(list(range(101)), 99) == 99
    assert R.pct([], 50) != R.pct([], 50)  # NaN


def test_slowest_rank_is_max_of_each_iterations_total():
    per_rank = [
        {"dispatch": [10, 10, 10], "combine": [5, 5, 50]},
        {"dispatch": [20, 11, 10], "combine": [1, 1, 1]},
    ]
    tot = R.rank_totals(per_rank, ("dispatch", "combine"))
    assert tot == [[15, 15, 60], [21, 12, 11]]
    assert R.slowest_rank(tot) == [21, 15, 60]
    sec = R.slowest_rank_section(per_rank)
    assert set(sec) == {"dispatch+combine"}  # the other totals have no samples
    assert sec["dispatch+combine"]["p50_us"] == 21 and sec["dispatch+combine"]["samples"] == 3
    assert sec["dispatch+combine"]["pooled_p50_us"] == 15
    # the slowest-rank median is never below the pooled median of the same totals
    assert sec["dispatch+combine"]["p50_us"] >= sec["dispatch+combine"]["pooled_p50_us"]


def test_slowest_rank_four_phases_and_nccl():
    r = {n: [1.0, 2.0] for n in R.PHASES + ("nccl_dispatch", "nccl_combine", "dispatch", "combine")}
    sec = R.slowest_rank_section([r, r])
    assert sec["four phases"]["p50_us"] == 4.0 and sec["four phases"]["p99_us"] == 8.0
    assert sec["nccl dispatch+combine"]["samples"] == 2


def test_slowest_rank_refuses_ragged_ranks():
    with pytest.raises(ValueError, match="different numbers of iterations"):
        R.slowest_rank([[1, 2], [1]])
    with pytest.raises(ValueError, match="different sample counts"):
        R.rank_totals([{"a": [1, 2], "b": [1]}], ("a", "b"))


def test_gemm_check():
    per_rank = [{"gemm_alone": [100, 100, 100], "gemm_in_dispatch": [103, 104, 200]},
                {"gemm_alone": [100, 101, 99], "gemm_in_dispatch": [102, 103, 104]}]
    g = R.gemm_check(per_rank)
    assert g["alone_p50_us"] == 100 and g["between_p50_us"] == 103
    assert g["ratio_p50"] == pytest.approx(1.03) and g["within_5pct"]
    assert g["paired_ratio_p99"] == pytest.approx(2.0) and g["samples"] == 6
    slow = R.gemm_check([{"gemm_alone": [100], "gemm_in_dispatch": [120]}])
    assert slow["within_5pct"] is False
    # faster between the phases than alone beyond the bound: the baseline was disturbed
    # (another rank's GEMM on the same GPU under MPS measured 0.81): no verdict either way
    fast = R.gemm_check([{"gemm_alone": [675], "gemm_in_dispatch": [549]}])
    assert fast["within_5pct"] is None
    head = {"mode": "decode", "world": 2, "tokens": 128, "hidden": 7168, "scales": 56, "experts": 256,
            "topk": 8, "partials": "bf16", "num_sms": 66, "rows_moved_per_rank": 255, "series": []}
    assert "no verdict" in R.format_mode({**head, "gemm": "2048x2048x2048 fp32", "gemm_check": fast})
    assert "(within 5 %)" in R.format_mode({**head, "gemm_check": g})
    assert R.gemm_check([{"gemm_alone": [100], "gemm_in_dispatch": [96]}])["within_5pct"] is True
    assert R.gemm_check([{"gemm_alone": [], "gemm_in_dispatch": [1]}]) is None


def test_series_rows_bandwidth_definitions():
    rows = R.series_rows(["dispatch", "nccl_combine", "gemm_alone", "missing"],
                         {"dispatch": [10.0, 20.0, 30.0], "nccl_combine": [5.0], "gemm_alone": [100.0]},
                         {"dispatch": [8.0]}, {"d": 1e6, "c": 2e6}, {"d": 5e5, "c": 1e6})
    by = {r["series"]: r for r in rows}
    assert set(by) == {"dispatch", "nccl_combine", "gemm_alone"}
    assert by["dispatch"]["gbps_logical"] == pytest.approx(1e6 / 20 / 1e3)
    assert by["dispatch"]["gbps_moved"] == pytest.approx(5e5 / 20 / 1e3)
    assert by["dispatch"]["kernel_p50_us"] == 8.0
    assert by["nccl_combine"]["gbps_logical"] is None and by["nccl_combine"]["gbps_moved"] == pytest.approx(200.0)
    assert by["gemm_alone"]["gbps_moved"] is None


def test_pattern_summary():
    shape = B.Shape(tokens=4, hidden=16, scales=0, experts=4, topk=2)
    topo = B.Topology(world=2, nvlink=1, nets=2)
    pats = [B.iteration_pattern([[1, 3], [2, 1]], [4, 4], shape, topo)] * 3
    s = R.pattern_summary(pats)
    assert s["dsp"]["writes_per_rank_p50"] == 6
    # rank 1 returns the 3 rows rank 0 sent it: compact rows packed at H*2 (bf16)
    assert s["cmb"]["write_bytes_max"] == 3 * 16 * 2
    assert s["cmb"]["writes_per_rank_p50"] == 2  # one write, 2 shards
    assert s["wgt"]["bytes_per_rank_p50"] == 4 * 2 * 4
    one_domain = B.Topology(world=2, nvlink=2)
    assert R.pattern_summary([B.iteration_pattern([[1, 3], [2, 1]], [4, 4], shape, one_domain)]) is None


def test_format_mode_has_every_section():
    r = {"mode": "decode", "world": 16, "tokens": 128, "hidden": 7168, "scales": 56, "experts": 256, "topk": 8,
         "partials": "bf16", "num_sms": 132, "rows_moved_per_rank": 835.0,
         "topology": {"describe": "EP16 (hybrid): ..."}, "rdma_buffer_kind": "gpu", "gemm": "2048x2048x2048 fp32",
         "series": R.series_rows(["dispatch"], {"dispatch": [10.0]}, {}, {"d": 1.0, "c": 1.0}, {"d": 1.0, "c": 1.0}),
         "slowest_rank": R.slowest_rank_section([{"dispatch": [10.0], "combine": [12.0]}]),
         "gemm_check": R.gemm_check([{"gemm_alone": [100.0], "gemm_in_dispatch": [101.0]}]),
         "rdma_pattern": {"dsp": {"bytes_per_rank_p50": 3.1e6, "writes_per_rank_p50": 48, "write_bytes_max": 5e5,
                                  "bytes_per_rank_max": 0, "write_bytes_p50": 0}},
         "raw_baseline": None,
         "proxy_timing": R.proxy_summary([_proxy(2000, 9000), None, _proxy(4000, 12000)])}
    text = R.format_mode(r)
    for needle in ("decode: EP16", "RDMA buffers: gpu", "dispatch", "slowest rank per iteration",
                   "dispatch+combine", "ratio 1.010 (within 5 %)", "DSP 3.10 MB in 48 writes",
                   "raw-provider baseline: not measured", "proxy host side per doorbell",
                   "combine      60 doorbells (2 ranks): seen_first 2.0-4.0 / 12.0 / 24.0"):
        assert needle in text, needle


def _proxy(p50_ns, p99_ns):
    """One rank's P2PAllToAll.proxy_timing(): every phase 30 doorbells, every span alike."""
    span = {"p50_ns": p50_ns, "p99_ns": p99_ns, "max_ns": 2 * p99_ns}
    return {ph: {"count": 30, "window": 30, "dropped": 0, **{sp: dict(span) for sp in R.PROXY_SPANS}}
            for ph in ("dispatch", "weights", "combine")}


def test_proxy_summary():
    s = R.proxy_summary([_proxy(1000, 5000), _proxy(3000, 4000), None])
    d = s["dispatch"]
    assert d["ranks"] == 2 and d["doorbells"] == 60 and d["dropped"] == 0
    assert d["seen_done"] == {"p50_us_min": 1.0, "p50_us_max": 3.0, "p99_us": 5.0, "max_us": 10.0}
    # no rank with an RDMA proxy (one NVLink domain): no section
    assert R.proxy_summary([None, None]) is None


# ---- the program without torch ------------------------------------------------------

def run_bench(*argv):
    return subprocess.run([sys.executable, os.path.join(BENCH, "bench_all_to_all.py"), *argv],
                          capture_output=True, text=True, timeout=60)


def test_help_lists_pplx_garden_flags():
    p = run_bench("--help")
    assert p.returncode == 0
    for flag in ("--world-size", "--nvlink", "--nets-per-gpu", "--dp-size", "--init-method", "--node-rank",
                 "--gemm", "--write-pattern", "--rdma-buffers", "--provider", "--nic-names"):
        assert flag in p.stdout, flag


def _trace(bell, seen, first, last, flags):
    """One phase of one rank's phase_trace (ns)."""
    return {"bell_ns": bell, "seen_ns": seen, "first_ns": first, "last_ns": last, "done_ns": last + 5,
            "flag_ns": flags}


def test_trace_breakdown():
    # two ranks, RDMA between them, two traced iterations; rank 1's dispatch is 1 us later
    it = lambda k: [
        {"dispatch": _trace(1000 + k, 3000 + k, 4000 + k, 6000 + k, {1: 9000 + k})},
        {"dispatch": _trace(2000 + k, 4000 + k, 5000 + k, 8000 + k, {0: 10000 + k})},
    ]
    per_rank = [[it(0)[0], it(1)[0]], [it(0)[1], it(1)[1]]]
    b = R.trace_breakdown(per_rank)
    d = b["dispatch"]
    assert d["kernel_to_proxy"]["samples"] == 4 and d["kernel_to_proxy"]["p50_us"] == 2.0
    assert d["first_to_last"]["p99_us"] == 3.0  # rank 1: 5000 -> 8000
    # rank 0's writes land at rank 1 (flag of source 0 at 10000: 4 us after its last post)
    # and rank 1's at rank 0 1 us after (9000): p50 of [1, 1, 4, 4] by nearest rank
    assert d["last_to_flag"]["samples"] == 4 and d["last_to_flag"]["p50_us"] == 4.0
    assert d["total"]["p99_us"] == 9.0 and d["missing"] == 0
    # phases nobody traced are left out; a rank without RDMA peers is None
    assert "combine" not in b
    assert R.trace_breakdown([None, None]) is None
    # a receiver that has not stamped the flag leaves that span (and the total) out
    per_rank[1][0] = {"dispatch": _trace(2000, 4000, 5000, 8000, {})}
    d = R.trace_breakdown(per_rank)["dispatch"]
    assert d["last_to_flag"]["samples"] == 3 and d["missing"] == 2


def test_trace_breakdown_dp():
    # dp 2: ranks 0 and 2 form slice 0 (slice ranks 0, 1), 1 and 3 slice 1
    tr = lambda base, src: {"dispatch": _trace(base, base + 1000, base + 2000, base + 3000, {src: base + 7000})}
    per_rank = [[tr(0, 1)], [tr(0, 1)], [tr(0, 0)], [tr(0, 0)]]
    d = R.trace_breakdown(per_rank, dp=2)["dispatch"]
    assert d["last_to_flag"]["samples"] == 4 and d["last_to_flag"]["p50_us"] == 4.0

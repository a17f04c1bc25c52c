"""The all-to-all byte rules (tools/a2a_model/a2a_bytes.py) and the performance model
(tools/a2a_model/a2a_model.py): hand-computed cases, agreement between the expected
(model) and the exact (benchmark) byte counts, monotonicity, the inputs file's
bookkeeping. Pure Python, no GPU."""
import itertools
import json
import math
import os
import random
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tools", "a2a_model"))

import a2a_bytes as B  # noqa: E402
import a2a_model as M  # noqa: E402

INPUTS = os.path.join(ROOT, "tools", "a2a_model", "inputs.toml")
SMALL = B.Shape(tokens=3, hidden=16, scales=0, experts=4, topk=2, in_bytes=1, partial_bytes=2)


# ---- byte rules -----------------------------------------------------------------------

def test_row_bytes_deepseek():
    s = B.Shape(tokens=128)
    assert s.row_bytes == 7168 + 224  # fp8 payload + 56 fp32 scales (already 16-aligned)
    assert s.meta_bytes == 36
    assert B.Shape(tokens=1, hidden=16, scales=3).row_bytes == 16 + 16  # 12 B of scales padded


def test_contract_writes_exact():
    assert B.dsp_writes(3, 2, SMALL) == [12, 36, 48]  # cnt (L+1)*4, meta n*(K+1)*4, rows n*16
    assert B.wgt_writes(5, SMALL) == [40]              # T*K fp32
    assert B.cmb_writes(3, SMALL) == [3 * 16 * 2]      # the 3 rows received, compact, packed bf16
    assert B.cmb_writes(0, SMALL) == [0]               # posted even when empty
    f32 = B.Shape(tokens=3, hidden=16, scales=0, experts=4, topk=2, in_bytes=1, partial_bytes=4)
    assert B.cmb_writes(3, f32) == [3 * 16 * 4]        # fp32 partials: H*4 per row
    assert B.cmb_rejected_bytes(4, SMALL) == 4 * 16 * 4  # first rule: rows [0, span) by token id


def test_hit_probability_hand_case():
    # 2 distinct experts of 4: 6 pairs; a rank owning experts {2, 3} misses only with {0, 1}
    assert B.hit_probability(4, 2, 2) == pytest.approx(5 / 6)
    assert B.hit_probability(4, 2, 0) == 0.0
    assert B.hit_probability(4, 2, 3) == 1.0  # cannot avoid 3 of 4 with 2 picks
    # brute force over every top-k set for a larger case
    E, K, own = 8, 3, 3
    sets = list(itertools.combinations(range(E), K))
    exact = sum(any(e < own for e in c) for c in sets) / len(sets)
    assert B.hit_probability(E, K, own) == pytest.approx(exact)


def test_expected_span_hand_and_brute_force():
    assert B.expected_span(1, 0.3) == pytest.approx(0.3)
    assert B.expected_span(2, 0.5) == pytest.approx(2 - (0.5 + 0.25))
    assert B.expected_span(7, 1.0) == 7
    assert B.expected_span(5, 0.0) == 0.0
    T, p = 4, 0.35
    exact = 0.0
    for hits in itertools.product((0, 1), repeat=T):
        prob = math.prod(p if h else 1 - p for h in hits)
        exact += prob * (1 + max([t for t in range(T) if hits[t]], default=-1))
    assert B.expected_span(T, p) == pytest.approx(exact)


def test_rank_bytes_hand_case_rdma_only():
    # W=2, one rank per node: rank 0's only peer is RDMA; L = 2, p = 5/6, n = 2.5 rows
    rb = B.rank_bytes(SMALL, B.Topology(world=2, nvlink=1, nets=2))
    assert (rb.rdma_peers, rb.nvlink_peers) == (1, 0)
    assert rb.rows_per_peer == pytest.approx(2.5)
    assert rb.rows_out == pytest.approx(5.0)  # 2.5 to the peer, 2.5 to itself
    assert rb.dsp_rdma_bytes == pytest.approx(12 + 2.5 * (12 + 16))
    assert rb.wgt_rdma_bytes == 3 * 2 * 4
    assert rb.cmb_rdma_bytes == pytest.approx(2.5 * 16 * 2)  # n rows packed at H*pb (bf16)
    span = 3 - sum((1 / 6) ** i for i in (1, 2, 3))
    assert rb.cmb_rdma_rejected_bytes == pytest.approx(span * 16 * 4)
    assert rb.rdma_writes == {"dsp": 6, "wgt": 2, "cmb": 2}  # 3/1/1 writes x 2 shards


def test_rank_bytes_hand_case_one_nvlink_domain():
    rb = B.rank_bytes(SMALL, B.Topology(world=2, nvlink=2))
    assert (rb.rdma_peers, rb.nvlink_peers) == (0, 1)
    assert rb.dsp_rdma_bytes == rb.wgt_rdma_bytes == rb.cmb_rdma_bytes == rb.cmb_rdma_rejected_bytes == 0
    assert rb.dsp_nvlink_bytes == pytest.approx(2.5 * (12 + 16))
    assert rb.rdma_writes == {"dsp": 0, "wgt": 0, "cmb": 0}


def test_topology_slices_and_errors():
    t = B.Topology(world=8, nvlink=4, dp=2)
    assert t.slice_world == 4
    assert t.slice_peers(1) == [1, 3, 5, 7]
    assert not t.is_rdma(1, 3) and t.is_rdma(1, 5) and not t.is_rdma(5, 5)
    for w, n, d in ((8, 3, 1), (8, 4, 3), (0, 1, 1)):
        with pytest.raises(ValueError):
            B.Topology(world=w, nvlink=n, dp=d)


def test_dp_replicas_talk_only_to_their_slice():
    rb = B.rank_bytes(SMALL, B.Topology(world=4, nvlink=1, dp=2))
    assert rb.rdma_peers == 1  # slice {0, 2}: one peer
    assert rb.rows_per_peer == pytest.approx(2.5)  # L = ceil(4 / 2) = 2, as with W = 2


def test_monotonic():
    d = B.Shape(tokens=128)
    prev = None
    for w in (8, 16, 32, 64):
        hy = B.rank_bytes(d, B.Topology(world=w, nvlink=8))
        ro = B.rank_bytes(d, B.Topology(world=w, nvlink=1))
        # RDMA-only moves at least what hybrid moves over RDMA; rows are the same
        assert ro.dsp_rdma_bytes >= hy.dsp_rdma_bytes
        assert ro.rows_out == pytest.approx(hy.rows_out)
        # contract (packed bf16) = half the same rows at H*4 <= by token id at H*4 (span >= rows)
        assert 2 * hy.cmb_rdma_bytes <= hy.cmb_rdma_rejected_bytes
        # per peer, RDMA returns what NVLink stores: exactly the needed partials (E/W even)
        if hy.rdma_peers:
            assert hy.cmb_rdma_bytes / hy.rdma_peers == pytest.approx(hy.cmb_nvlink_bytes / hy.nvlink_peers)
        if prev is not None:
            assert ro.rows_out > prev.rows_out          # more ranks, more distinct destinations
            assert ro.dsp_rdma_bytes > prev.dsp_rdma_bytes
            assert ro.rows_per_peer < prev.rows_per_peer
        prev = ro
    small = B.rank_bytes(B.Shape(tokens=128), B.Topology(world=16, nvlink=8))
    big = B.rank_bytes(B.Shape(tokens=4096), B.Topology(world=16, nvlink=8))
    assert big.dsp_rdma_bytes > small.dsp_rdma_bytes and big.cmb_rdma_bytes > small.cmb_rdma_bytes


def routed(shape, topo, rng):
    """One iteration of uniform random routing: rows[s][p] and span[s][p]."""
    W = topo.world
    L = B.experts_per_rank(shape.experts, topo.slice_world)
    rows = [[0] * W for _ in range(W)]
    span = [[0] * W for _ in range(W)]
    for s in range(W):
        for t in range(shape.tokens):
            for p in {(e // L) * topo.dp + s % topo.dp for e in rng.sample(range(shape.experts), shape.topk)}:
                rows[s][p] += 1
                span[s][p] = t + 1
    return rows, span


def test_iteration_pattern_exact():
    topo = B.Topology(world=2, nvlink=1)
    pat = B.iteration_pattern([[0, 3], [2, 0]], [4, 5], SMALL, topo)
    assert pat["dsp"]["bytes"] == [12 + 36 + 48, 12 + 24 + 32]
    assert pat["dsp"]["writes"] == [3, 3]
    assert pat["wgt"]["bytes"] == [4 * 2 * 4, 5 * 2 * 4]
    # rank 1 returns the 3 rows rank 0 sent it, rank 0 the 2 rows rank 1 sent it
    assert pat["cmb"]["bytes"] == [2 * 16 * 2, 3 * 16 * 2]  # packed bf16 rows
    assert pat["cmb"]["writes"] == [1, 1]
    assert sorted(pat["cmb"]["sizes"]) == [64, 96]
    with pytest.raises(ValueError):
        B.iteration_pattern([[0, 1]], [1], SMALL, topo)
    with pytest.raises(ValueError):
        B.iteration_pattern([[0, 1], [1]], [1, 1], SMALL, topo)


def test_iteration_pattern_nvlink_pairs_post_nothing():
    topo = B.Topology(world=4, nvlink=2)
    rows, _ = routed(SMALL, topo, random.Random(3))
    pat = B.iteration_pattern(rows, [SMALL.tokens] * 4, SMALL, topo)
    for s in range(4):
        assert pat["dsp"]["writes"][s] == 3 * 2  # 2 peers on the other node
        assert pat["cmb"]["writes"][s] == 2
    # what s sends over CMB is what its RDMA peers sent it in dispatch, packed at H*pb
    for s in range(4):
        got = sum(rows[p][s] for p in range(4) if topo.is_rdma(s, p))
        assert pat["cmb"]["bytes"][s] == got * SMALL.hidden * SMALL.partial_bytes
    topo1 = B.Topology(world=4, nvlink=4)
    assert sum(B.iteration_pattern(rows, [3] * 4, SMALL, topo1)["dsp"]["writes"]) == 0


def test_expected_bytes_match_sampled_iterations():
    """The model's expectation and the benchmark's exact counts follow the same rules:
    the mean over many random iterations converges to rank_bytes (seeded, so exact)."""
    shape = B.Shape(tokens=64, hidden=32, scales=4, experts=16, topk=4)
    topo = B.Topology(world=4, nvlink=2, nets=1)
    rng = random.Random(7)
    n = 400
    tot = {"dsp": 0.0, "wgt": 0.0, "cmb": 0.0}
    rejected = 0.0
    for _ in range(n):
        rows, span = routed(shape, topo, rng)
        pat = B.iteration_pattern(rows, [shape.tokens] * 4, shape, topo)
        for ph in tot:
            tot[ph] += sum(pat[ph]["bytes"]) / 4 / n
        rejected += sum(B.cmb_rejected_bytes(span[s][p], shape) for s in range(4) for p in range(4)
                        if topo.is_rdma(s, p)) / 4 / n
    rb = B.rank_bytes(shape, topo)
    assert tot["wgt"] == pytest.approx(rb.wgt_rdma_bytes)
    assert tot["dsp"] == pytest.approx(rb.dsp_rdma_bytes, rel=0.02)
    assert tot["cmb"] == pytest.approx(rb.cmb_rdma_bytes, rel=0.02)
    assert rejected == pytest.approx(rb.cmb_rdma_rejected_bytes, rel=0.02)


# ---- the model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def doc():
    return M.load_inputs(INPUTS)


def test_inputs_every_figure_has_kind_and_source(doc):
    figures = list(M.walk_figures(doc))
    assert len(figures) > 20
    kinds = {e["kind"] for _, e in figures}
    assert {"published", "measured", "assumption"} <= kinds


def test_inputs_without_source_rejected(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[gpu]\ndoorbell_us = { value = 1.0, kind = "measured" }\n')
    with pytest.raises(ValueError, match="doorbell_us: no source"):
        M.load_inputs(str(bad))
    bad.write_text('[gpu]\ndoorbell_us = { value = 1.0, kind = "guess", source = "x" }\n')
    with pytest.raises(ValueError, match="kind must be"):
        M.load_inputs(str(bad))


def test_kernel_fit_reproduces_measured_points(doc):
    lines = M.fit_kernels(doc)
    topo = B.Topology(world=M.FIT_EP, nvlink=M.FIT_EP)
    for mode in ("decode", "prefill"):
        kb = M.kernel_bytes(M.shape_from(doc, int(M.val(doc, f"shape.{mode}_tokens"))), topo)
        for k, line in lines.items():
            assert line.c_us > 0 and line.gbs > 0
            assert line.c_us + kb[k] / (line.gbs * 1e3) == pytest.approx(M.val(doc, f"kernel.{mode}_us.{k}"))


def test_predictions(doc):
    cx7 = M.nic_from(doc, "cx7")
    one_node = M.predict(doc, "decode", 8, 8, cx7)
    assert one_node["rdma_peers"] == 0 and all(v == 0 for v in one_node["rdma_us"].values())
    for mode in ("decode", "prefill"):
        prev = None
        for ep in (16, 32, 64):
            hy = M.predict(doc, mode, ep, 8, cx7)
            ro = M.predict(doc, mode, ep, 1, cx7)
            assert ro["dispatch_us"] >= hy["dispatch_us"]
            if mode == "decode":
                assert hy["dispatch_us"] > one_node["dispatch_us"]
            assert hy["variant"]["combine_us"] <= hy["combine_us"] <= hy["rejected"]["combine_us"]
            # the variant only drops the WGT phase (and carries the weights in DSP)
            assert hy["combine_us"] - hy["variant"]["combine_us"] == pytest.approx(hy["rdma_us"]["wgt"])
            assert hy["variant"]["dispatch_us"] >= hy["dispatch_us"]
            if prev is not None:
                assert ro["dispatch_us"] > prev["dispatch_us"]
            prev = ro


def test_cli_prints_model_table_and_json(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert M.main(["--inputs", INPUTS, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("MODEL, not a measurement")
    assert "pplx-cx7" in text and "DeepEP-cx7" in text
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 2 * 2 * 4  # modes x NICs x (hybrid, RDMA only) x EP8..64
    assert {r["ep"] for r in rows} == {8, 16, 32, 64}
    hy64 = [r for r in rows if r["ep"] == 64 and r["nvlink"] == 8 and r["mode"] == "decode" and r["nic_key"] == "cx7"]
    assert hy64[0]["published"]["pplx_cx7"] == "188 / 309"
    assert "rej comb" in text and "rejected" in hy64[0] and "cmb_rejected" in hy64[0]["rdma_mb"]
    assert "cmb var" not in text and "cmb_variant" not in hy64[0]["rdma_mb"]  # CMB is packed: no variant


def test_cli_rejects_bad_arguments(capsys):
    for argv in (["--eps", "12"], ["--modes", "train"], ["--nics", "ib"], ["--eps", "x"]):
        with pytest.raises(SystemExit) as e:
            M.main(["--inputs", INPUTS] + argv)
        assert e.value.code == 2

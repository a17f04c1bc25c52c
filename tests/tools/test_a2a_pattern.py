"""The write pattern of one rank (a2a_bytes.rank_writes, expected_rows) and the pattern
file a2a_model.py writes for fabric-debug's a2a workload: exact writes from hand-made
counts, the file's grammar (the one fabric-debug parses), agreement of the file's bytes
with the model's per-rank bytes, and errors. Pure Python, no GPU."""
import os
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tools", "a2a_model"))

import a2a_bytes as B  # noqa: E402
import a2a_model as M  # noqa: E402

INPUTS = os.path.join(ROOT, "tools", "a2a_model", "inputs.toml")
SMALL = B.Shape(tokens=3, hidden=16, scales=0, experts=4, topk=2, in_bytes=1, partial_bytes=2)


def parse(text):
    """The grammar fabric-debug reads: '#' to end of line is a comment, blank lines are
    skipped, every other line is `PHASE PEER BYTES`."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ph, peer, n = line.split()
            assert ph in B.PHASES
            out.append((ph, int(peer), int(n)))
    return out


def test_rank_writes_exact_rdma_only():
    topo = B.Topology(world=3, nvlink=1)
    rows = [[0, 2, 1], [3, 0, 0], [1, 4, 0]]  # rows[s][p]: s sent p
    w = B.rank_writes(rows, [3, 3, 2], SMALL, topo, rank=0)
    L = B.experts_per_rank(4, 3)  # 2 experts per rank, cnt slot (L+1)*4
    assert w == [("dsp", 1, (L + 1) * 4), ("dsp", 1, 2 * 12), ("dsp", 1, 2 * 16),
                 ("dsp", 2, (L + 1) * 4), ("dsp", 2, 1 * 12), ("dsp", 2, 1 * 16),
                 ("wgt", 1, 3 * 2 * 4), ("wgt", 2, 3 * 2 * 4),
                 # CMB to q: the rows q sent rank 0, compact, packed at H*2 (bf16)
                 ("cmb", 1, 3 * 16 * 2), ("cmb", 2, 1 * 16 * 2)]


def test_rank_writes_match_iteration_pattern():
    topo = B.Topology(world=4, nvlink=2)
    rows = [[0, 1, 2, 3], [2, 0, 1, 0], [3, 3, 0, 1], [1, 0, 2, 0]]
    tokens = [3, 2, 3, 1]
    it = B.iteration_pattern(rows, tokens, SMALL, topo)
    for r in range(4):
        w = B.rank_writes(rows, tokens, SMALL, topo, r)
        for ph in B.PHASES:
            assert sum(b for p, _, b in w if p == ph) == it[ph]["bytes"][r]
        assert all(topo.is_rdma(r, q) for _, q, _ in w)  # NVLink peers post nothing


def test_expected_rows_against_hit_probability():
    shape = B.Shape(tokens=128)
    topo = B.Topology(world=16, nvlink=8)
    rows = B.expected_rows(shape, topo)
    p = B.hit_probability(256, 8, 16)
    assert rows[0][9] == round(128 * p) and rows[0][0] == 0
    assert all(rows[s][s] == 0 for s in range(16))


@pytest.mark.parametrize("mode,ep,nvl", [("decode", 16, 8), ("prefill", 16, 8), ("decode", 8, 1),
                                         ("prefill", 8, 1)])
def test_pattern_file_matches_model_bytes(mode, ep, nvl):
    doc = M.load_inputs(INPUTS)
    text = M.format_pattern(doc, mode, ep, nvl, rank=0)
    assert text.startswith("# tendril a2a write pattern v1")
    w = parse(text)
    rb = B.rank_bytes(M.shape_from(doc, int(M.val(doc, f"shape.{mode}_tokens"))), B.Topology(ep, nvl))
    peers = sorted({q for _, q, _ in w})
    assert len(peers) == rb.rdma_peers
    # 3 DSP writes, 1 WGT, 1 CMB per RDMA peer, in phase order
    assert [p for p, _, _ in w] == ["dsp"] * 3 * len(peers) + ["wgt"] * len(peers) + ["cmb"] * len(peers)
    for ph in B.PHASES:
        got = sum(b for p, _, b in w if p == ph)
        # rows are rounded per peer: at most half a row off per peer and write
        tol = len(peers) * (0.5 * 36100 + 1)
        assert got == pytest.approx(rb.rdma_bytes[ph], abs=tol)


def test_cli_writes_pattern_file(tmp_path):
    out = tmp_path / "p.txt"
    assert M.main(["--pattern", "decode", "--ep", "8", "--nvlink", "1", "--rank", "3",
                   "--pattern-out", str(out)]) == 0
    w = parse(out.read_text())
    assert sorted({q for _, q, _ in w}) == [0, 1, 2, 4, 5, 6, 7]


@pytest.mark.parametrize("args", [
    ["--pattern", "train", "--ep", "8", "--pattern-out", "-"],
    ["--pattern", "decode", "--pattern-out", "-"],                      # no --ep
    ["--pattern", "decode", "--ep", "8"],                               # no --pattern-out
    ["--pattern", "decode", "--ep", "8", "--nvlink", "8", "--pattern-out", "-"],  # no RDMA peer
    ["--pattern", "decode", "--ep", "12", "--nvlink", "8", "--pattern-out", "-"],  # 12 % 8
    ["--pattern", "decode", "--ep", "8", "--nvlink", "1", "--rank", "8", "--pattern-out", "-"],
])
def test_cli_pattern_errors(args, capsys):
    with pytest.raises(SystemExit) as e:
        M.main(args)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err

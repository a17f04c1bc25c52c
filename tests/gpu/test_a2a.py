"""GPU tests of the NVLink all-to-all (tendril.P2PAllToAll), one process per EP rank.

EP2 runs one rank per GPU when two GPUs exist; EP4 and EP8 put several ranks (processes)
on each GPU, each with a share of the SMs, so that the multi-peer logic runs on two GPUs.
"""
import os
import socket
import sys

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: GPU tests skipped")
if torch.cuda.device_count() == 0:
    pytest.skip("no CUDA device: GPU tests skipped", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import a2a_worker  # noqa: E402
from a2a_cases import EP2, EPN  # noqa: E402


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world, cases):
    torch.multiprocessing.spawn(a2a_worker.worker, args=(world, _port(), "a2a", {"cases": cases}),
                                nprocs=world, join=True)


def test_ep2_all_cases():
    _launch(2, EP2)


@pytest.mark.parametrize("world", [4, 8])
def test_ep_multi_peer(world):
    _launch(world, EPN)


def test_ep1_single_rank():
    # one rank: everything goes to self
    _launch(1, ["dtype_fp8_bf16", "zero_tokens", "graph_fp8"])

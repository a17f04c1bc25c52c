"""GPU tests of the all-to-all across nodes (docs/a2a-internode.md), on ONE machine and
one GPU: every rank is a process with its own TransferEngine on a libfabric provider
(TENDRIL_TEST_PROVIDER, default tcp on lo; shm works too), and ranks_per_node (the
node_group size) makes the ranks "nodes", so peers are reached through the engine, the
proxy and the arrival flags instead of NVLink. RDMA buffers are in pinned host memory
(rdma_buffers="host", any libfabric) or, in the *_gpu_buffers tests, in device memory
(needs a provider that registers CUDA memory: shm of libfabric 2.x built with CUDA,
scripts/libfabric2.sh; elsewhere they skip with the provider's reason, or fail where
TENDRIL_GPU_REQUIRE_HMEM=1 says the machine must). The bootstrap is the real one:
torch.distributed's all_gather_object on the default (gloo) group.

Checked exactly as the NVLink tests (a2a_worker.py: dispatched rows, counts, padding,
combine against a float64 reference), plus the context's count of RDMA peers and its
buffer kind. Cases: EP2 and EP4 with every peer over RDMA, EP4 with two "nodes" of two
and EP8 with two "nodes" of four (NVLink and RDMA peers mixed), EP4 with dp_size 2 (two
slices of two); a silent peer (RDMA_CASES' "timeout": rank 0 dispatches, nobody
answers); a killed rank (SIGKILL mid-run: survivors get errors, not a hang).
"""
import os
import signal
import socket
import sys
import time

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: GPU tests skipped")
if torch.cuda.device_count() == 0:
    pytest.skip("no CUDA device: GPU tests skipped", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import a2a_worker  # noqa: E402

PROVIDER = os.environ.get("TENDRIL_TEST_PROVIDER", "tcp")

# A subset of a2a_cases.CASES that covers every phase and form over RDMA: fused and split
# launches, chunked sends, empty ranks and bound_m, scales, fp32 partials, accumulate,
# one receiving rank, dropped routes, CUDA graphs, a silent peer (timeout).
RDMA_CASES = ["dtype_fp8_bf16", "h2048_bf16_f16_pad16", "dsv3_fp8_bf16_partial_f32", "zero_tokens", "bound_m",
              "one_rank_receives_all", "dropped_routes", "accumulate_f32_split", "chunked_fp8",
              "mixed_fused_split", "many_iters_split", "graph_fp8", "timeout"]
EPN_CASES = ["ep_fp8_random", "ep_zero_and_bound", "ep_one_rank", "ep_mixed_fused_split", "ep_graph"]


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world, cases, **topo):
    topo.setdefault("provider", PROVIDER)
    topo.setdefault("rdma_buffers", "host")
    torch.multiprocessing.spawn(a2a_worker.worker, args=(world, _port(), "a2a", {"cases": cases, "topo": topo}),
                                nprocs=world, join=True)


def _gpu_buffers_or_skip():
    """Skips (with the provider's reason) where the engine cannot register CUDA memory on
    PROVIDER; TENDRIL_GPU_REQUIRE_HMEM=1 turns that into a failure."""
    import tendril
    e = tendril.TransferEngine(nets_per_gpu=1, cuda_devices=[0], provider=PROVIDER,
                               nics=["lo"] if "tcp" in PROVIDER else None)
    try:
        e.register_tensor(torch.empty(1 << 16, dtype=torch.uint8, device="cuda:0"))
    except Exception as ex:  # the engine's error: EOPNOTSUPP with the provider's reason
        if os.environ.get("TENDRIL_GPU_REQUIRE_HMEM") == "1":
            raise
        pytest.skip(f"{PROVIDER} cannot register GPU memory here: {ex}")
    finally:
        e.stop()


def test_ep2_every_peer_over_rdma():
    _launch(2, RDMA_CASES, ranks_per_node=1)


def test_ep4_every_peer_over_rdma():
    _launch(4, EPN_CASES, ranks_per_node=1)


def test_ep4_two_nodes_of_two():
    # ranks 0,1 on "node" 0, 2,3 on "node" 1: each rank has one NVLink and two RDMA peers
    _launch(4, EPN_CASES, ranks_per_node=2)


def test_ep4_dp2_two_slices():
    # dp_size 2: slices {0, 2} and {1, 3}, every rank one RDMA peer
    _launch(4, ["ep_fp8_random", "ep_zero_and_bound", "ep_graph"], ranks_per_node=1, dp_size=2)


def test_ep8_two_nodes_of_four():
    # ranks 0-3 on "node" 0, 4-7 on "node" 1: three NVLink and four RDMA peers each
    _launch(8, ["ep_fp8_random", "ep_zero_and_bound", "ep_graph"], ranks_per_node=4)


def test_ep2_gpu_buffers():
    _gpu_buffers_or_skip()
    _launch(2, ["legacy_stream", "dtype_fp8_bf16", "dsv3_fp8_bf16_partial_f32", "zero_tokens", "chunked_fp8",
                "graph_fp8"], ranks_per_node=1, rdma_buffers="gpu")


def test_ep4_two_nodes_gpu_buffers():
    _gpu_buffers_or_skip()
    _launch(4, ["ep_fp8_random", "ep_zero_and_bound", "ep_graph"], ranks_per_node=2, rdma_buffers="gpu")


@pytest.mark.parametrize("per_node", [1, 2])
def test_ep4_killed_rank(per_node):
    """Rank 3 SIGKILLs itself after a good iteration; the survivors must report errors
    (run_killed) and exit 0. Started by hand: spawn's join treats any death as failure."""
    world = 4
    ctx = torch.multiprocessing.start_processes(
        a2a_worker.worker, args=(world, _port(), "a2a", {"cases": ["killed"], "topo": {
            "provider": PROVIDER, "rdma_buffers": "host", "ranks_per_node": per_node}}),
        nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    for p in ctx.processes:
        p.join(max(1.0, deadline - time.monotonic()))
    codes = [p.exitcode for p in ctx.processes]
    for p in ctx.processes:
        if p.exitcode is None:
            p.kill()
    assert codes[world - 1] == -signal.SIGKILL, f"the victim's exit: {codes}"
    assert codes[:world - 1] == [0] * (world - 1), f"survivors must exit 0 (errors reported, no hang): {codes}"

"""CPU checks of the all-to-all's binding (python/ext/py_a2a.c, tendril.p2p_all_to_all):
what holds without a GPU. The GPU runs are tests/gpu/ (test_a2a.py, test_a2a_rdma.py)."""
import pytest

import tendril
from tendril import _tendril
from tendril.p2p_all_to_all import _Group, _has_rdma_peers

a2a = getattr(_tendril, "_a2a", None)
needs_a2a = pytest.mark.skipif(a2a is None, reason="extension built without CUDA: no _a2a")


def test_slice_peers_on_other_nodes():
    # 2 nodes of 2, no TP: rank 0's slice is every rank, 2 and 3 are on node 1
    assert _has_rdma_peers(0, 4, 2, 1)
    # one node: never
    assert not _has_rdma_peers(3, 4, 4, 1)
    # dp_size 2, 2 ranks per node: the slice of rank 0 is {0, 2}, rank 2 on node 1
    assert _has_rdma_peers(0, 4, 2, 2)
    # dp_size 2, 4 ranks per node, 8 ranks: slice {1, 3, 5, 7} spans both nodes
    assert _has_rdma_peers(1, 8, 4, 2)
    # dp_size 2, 2 ranks per node, 2 ranks: slice {r} alone
    assert not _has_rdma_peers(1, 2, 2, 2)


def test_all_gather_of_a_pplx_group():
    class ParallelGroupLike:  # pplx_garden.distributed.ParallelGroup's part in use
        rank, size = 0, 2

        def broadcast_object(self, obj, root):
            return obj

        def barrier(self):
            pass

        def all_gather_object(self, obj):
            return [obj, b"other"]

    g = _Group(ParallelGroupLike())
    assert g.can_all_gather
    assert g.all_gather(b"mine") == [b"mine", b"other"]

    class NoAllGather:
        rank, size = 0, 2

        def broadcast_object(self, obj, root):
            return obj

    assert not _Group(NoAllGather()).can_all_gather


@needs_a2a
def test_constants():
    assert (a2a.RDMA_AUTO, a2a.RDMA_GPU, a2a.RDMA_HOST) == (0, 1, 2)
    assert a2a.MAX_RANKS == 64


def _create(**over):
    kw = dict(rank=0, world_size=4, device=0, max_num_tokens=16, num_experts=8, experts_per_token=2,
              expert_padding=1, hidden_dim=128, hidden_dim_scale=0, in_elem_size=2, out_dtype=a2a.DTYPE_BF16,
              num_sms=0, timeout_ms=1000, rendezvous="unit-a2a-py")
    kw.update(over)
    return a2a.create(**kw)


@needs_a2a
@pytest.mark.parametrize("over, what", [
    (dict(ranks_per_node=3), "ranks_per_node"),
    (dict(dp_size=3), "dp_size"),
    (dict(rdma_buffers=7), "rdma_buffers"),
    (dict(ranks_per_node=2), "cfg->engine is NULL"),
    (dict(ranks_per_node=2, imm_base=0xFFFFFFF0), "imm_base"),
])
def test_config_errors_name_the_field(over, what):
    """Checked before any GPU use: the same message with or without a GPU."""
    with pytest.raises(ValueError, match=what):
        _create(**over)


@needs_a2a
def test_argument_types():
    with pytest.raises(TypeError, match="allgather"):
        _create(allgather=42)
    with pytest.raises(TypeError, match="TransferEngine"):
        _create(ranks_per_node=2, engine=object())
    with pytest.raises(OverflowError):
        _create(imm_base=-1)


def test_p2p_all_to_all_keywords():
    import inspect
    init = inspect.signature(tendril.P2PAllToAll.__init__).parameters
    for name in ("engine", "rdma_buffers", "imm_base", "nets_per_gpu", "dp_group", "node_group"):
        assert init[name].kind == inspect.Parameter.KEYWORD_ONLY, name


def test_immediate_ranges_per_engine():
    """Contexts sharing an engine get consecutive, disjoint ranges of 192 immediates."""
    from tendril.p2p_all_to_all import _IMM_SPAN, _take_imm_range

    class Eng:  # weak-referenceable
        pass

    a, b = Eng(), Eng()
    first = _take_imm_range(a)
    assert _take_imm_range(a) == first + _IMM_SPAN
    assert _take_imm_range(b) == first  # another engine starts over
    assert _IMM_SPAN == 3 * 64
    slotted = object()  # no weak references: keyed by id
    s0 = _take_imm_range(slotted)
    assert _take_imm_range(slotted) == s0 + _IMM_SPAN


@needs_a2a
def test_engine_keeps_its_peer_callback():
    """An all-to-all on an engine makes the binding's peer trampoline permanent (it
    forwards to the contexts' proxies, app_forwards_peer_events): the application's own
    set_peer_callback still gets every event."""
    import threading

    import numpy as np
    from conftest import TMO, Recorder, wait_until
    from tendril_peer import Peer, make_engine

    e = make_engine(op_timeout_ms=15000)
    try:
        ctx = _create(world_size=2, ranks_per_node=1, engine=e, allgather=lambda b: [b, b])
    except Exception as exc:  # no GPU here: a2a_create stops at the CUDA device
        print("a2a_create without a GPU:", exc)
    else:
        a2a.destroy(ctx)
    e.set_peer_callback(None)  # the trampoline stays for the contexts: no error
    peer = Peer()
    got_down = threading.Event()
    e.set_peer_callback(lambda addr, state: got_down.set() if state == "down" else None)
    data = np.ones(1 << 12, dtype=np.uint8)
    hs, _ = e.register_memory(data, remote=False)
    rec = Recorder()
    e.submit_write(hs, 0, len(data), None, peer.desc, 0, rec.done(0), rec.error(0))
    wait_until(lambda: rec.count() == 1, TMO, "first write")
    peer.proc.kill()
    peer.proc.join(TMO)
    peer.remove_shm_leftovers()
    for k in range(1, 5):
        e.submit_write(hs, 0, len(data), None, peer.desc, 0, rec.done(k), rec.error(k))
    assert got_down.wait(TMO), "the application's peer callback got no 'down'"
    wait_until(lambda: rec.count() == 5, TMO, "writes to the dead peer")
    e.set_peer_callback(None)
    e.stop()


@needs_a2a
def test_proxy_timing_needs_a_context():
    # the accessor exists on the module and on the class, and refuses what is not a context
    with pytest.raises((TypeError, ValueError)):
        a2a.proxy_timing(object())
    with pytest.raises(TypeError):
        a2a.proxy_timing()
    # so do the trace accessors
    for fn, args in ((a2a.phase_trace, (object(), 1)), (a2a.trace_newest_epoch, (object(),)),
                     (a2a.clock_sync, (object(),))):
        with pytest.raises((TypeError, ValueError)):
            fn(*args)
    with pytest.raises(TypeError):
        a2a.phase_trace(object())  # epoch missing
    import inspect
    assert "epoch" in inspect.signature(tendril.P2PAllToAll.phase_trace).parameters
    assert "reset" in inspect.signature(tendril.P2PAllToAll.proxy_timing).parameters
    assert inspect.signature(tendril.P2PAllToAll.destroy).parameters["barrier"].default is True


def test_default_stream_refused_only_where_it_would_hang():
    """GPU RDMA buffers over shm: the receiving process's cudaMemcpy (legacy default
    stream) would wait for the receive kernel, so CUDA's default streams are refused with
    the reason; elsewhere, and on any other stream, the handle is used as given."""
    from tendril._engine import shared_memory_provider
    from tendril.p2p_all_to_all import _usable_stream
    for h in (0, 2):  # legacy, per-thread default stream
        with pytest.raises(RuntimeError, match="non-default stream"):
            _usable_stream(h, True)
        assert _usable_stream(h, False) == h
    assert _usable_stream(0x7F00DEAD, True) == 0x7F00DEAD
    assert shared_memory_provider("shm") and shared_memory_provider("sm2")
    assert not shared_memory_provider("tcp;ofi_rxm") and not shared_memory_provider("efa")
    assert not shared_memory_provider(None) and not shared_memory_provider("")

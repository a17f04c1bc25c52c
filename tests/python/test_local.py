"""One engine: properties, registration of every kind of memory, argument errors."""
import errno
import gc
import mmap
import threading

import numpy as np
import pytest

import tendril
from conftest import TMO
from tendril import (
    Counter,
    EngineStoppedError,
    PageIndices,
    TendrilError,
    TendrilValueError,
    TransferEngine,
)
from tendril_peer import make_engine


def test_properties(engine, prov):
    assert engine.num_domains == 1 and engine.nets_per_gpu == 1 and engine.num_groups == 1
    assert isinstance(engine.aggregated_link_speed, int)
    assert prov.split(";")[0] in engine.provider
    assert engine.nic_address(0, 0) == engine.main_address
    assert engine.callback_errors == 0 and not engine.stopped
    assert set(engine.nic_stats()) >= {"write_ops", "imms_received", "errors"}
    with pytest.raises(TendrilValueError):
        engine.nic_address(0, 5)
    assert "TransferEngine(" in repr(engine)


def test_builder_and_topology(prov):
    assert isinstance(TransferEngine.detect_topology(), list)
    nic = "lo" if "tcp" in prov else None
    e = TransferEngine.builder().provider(prov).add_host_domains([nic]).op_timeout_ms(5000).build()
    assert e.num_domains == 1
    e.stop()
    assert e.stopped
    with pytest.raises(ValueError, match="at least one group"):
        TransferEngine.builder().build()
    with pytest.raises(ValueError, match="twice"):
        TransferEngine.builder().add_host_domains().add_host_domains()
    with pytest.raises(ValueError, match="nets_per_gpu"):
        TransferEngine(nets_per_gpu=0)


def test_bad_config():
    with pytest.raises(TendrilError):
        TransferEngine(provider="no-such-provider")
    with pytest.raises(ValueError, match="nets_per_gpu=2 but 1"):
        TransferEngine(nets_per_gpu=2, nics=["lo"])


def test_register_buffer_kinds(engine):
    mm = mmap.mmap(-1, 8192)
    arr = np.zeros((64, 64), dtype=np.float32)
    ba = bytearray(4097)
    for obj, n in [(mm, 8192), (arr, arr.nbytes), (ba, 4097), (memoryview(ba)[1:], 4096)]:
        h, d = engine.register_memory(obj)
        assert h.registered and h.len == n and d.len == n and h.device == -1
        engine.unregister_memory(h)
        assert not h.registered
    # Fortran-ordered arrays are contiguous too; strided views are not
    h, _ = engine.register_memory(np.asfortranarray(np.zeros((8, 8))))
    engine.unregister_memory(h.ptr)
    with pytest.raises((BufferError, ValueError), match="contiguous"):
        engine.register_memory(arr[:, ::2])
    # read-only memory can be a source only
    h, d = engine.register_memory(b"read only bytes", remote=False)
    assert d is None and h.descriptor is None
    with pytest.raises(BufferError):
        engine.register_memory(b"read only bytes")
    mm.close()  # the export was released at unregister


def test_registration_keeps_owner_alive(engine):
    ba = bytearray(4096)
    h, _ = engine.register_memory(ba)
    with pytest.raises(BufferError):
        ba.extend(b"x")  # the export pins it while registered
    engine.unregister_memory(h.ptr)
    ba.extend(b"x")
    # raw pointer + owner: the owner stays referenced while registered
    arr = np.ones(4096, dtype=np.uint8)
    ptr = arr.ctypes.data
    h, d = engine.register_memory(ptr, 4096, None, owner=arr)
    import sys
    before = sys.getrefcount(arr)
    engine.unregister_memory(h)
    assert sys.getrefcount(arr) == before - 1


def test_register_errors(engine):
    with pytest.raises(TypeError, match="len is required"):
        engine.register_memory(12345)
    with pytest.raises(TypeError, match="buffer-protocol"):
        engine.register_memory(object())
    with pytest.raises(TendrilValueError, match="len is 0"):
        engine.register_memory(bytearray(0))
    with pytest.raises(TendrilValueError, match="exceeds"):
        engine.register_memory(bytearray(10), 11)
    # CUDA memory needs a group for that GPU: a clear error on a host-only engine
    with pytest.raises(TendrilError, match="CUDA device 0") as ei:
        engine.register_memory(0x10000, 4096, "cuda:0")
    assert ei.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match="unsupported device"):
        engine.register_memory(0x10000, 4096, "tpu:0")
    with pytest.raises(TendrilValueError, match="no region registered"):
        engine.unregister_memory(0xDEAD000)
    with pytest.raises(TypeError):
        engine.unregister_memory("x")


def test_submit_argument_errors(engine):
    src = bytearray(4096)
    hs, ds = engine.register_memory(src)
    pages = PageIndices([0])
    with pytest.raises(TendrilValueError, match="outside the registered region") as ei:
        engine.submit_write(hs, 1, 4096, None, ds, 0, None, None)
    assert ei.value.errno == errno.ERANGE
    with pytest.raises(TendrilValueError, match="outside the remote region"):
        engine.submit_write(hs, 0, 10, 1, ds, 4090, None, None)
    with pytest.raises(TendrilValueError, match="2 shards requested"):
        engine.submit_write(hs, 0, 10, 1, ds, 0, None, None, num_shards=2)
    with pytest.raises(ValueError, match="num_shards must be >= 1"):
        engine.submit_write(hs, 0, 10, 1, ds, 0, None, None, 0)
    with pytest.raises(TypeError, match="src_mr must be a MemoryRegionHandle"):
        engine.submit_write(ds, 0, 10, 1, ds, 0, None, None)
    with pytest.raises(TypeError, match="dst_mr must be a MemoryRegionDescriptor"):
        engine.submit_write(hs, 0, 10, 1, hs, 0, None, None)
    with pytest.raises(TypeError, match="on_done must be callable"):
        engine.submit_write(hs, 0, 10, 1, ds, 0, 5, None)
    with pytest.raises(TypeError, match="counter must be a tendril.Counter"):
        engine.submit_imm(1, ds, counter=object())
    with pytest.raises(OverflowError):
        engine.submit_write(hs, -1, 10, 1, ds, 0, None, None)
    with pytest.raises(OverflowError):
        engine.submit_imm(2**32, ds)
    with pytest.raises(TendrilValueError, match="1 source pages but 2 destination"):
        engine.submit_paged_writes(8, hs, pages, 8, 0, ds, PageIndices([0, 1]), 8, 0, None, None, None)
    with pytest.raises(TendrilValueError, match="source page"):
        engine.submit_paged_writes(8, hs, PageIndices([1000]), 8, 0, ds, pages, 8, 0, None, None, None)
    with pytest.raises(TypeError, match="src_page_indices must be a PageIndices"):
        engine.submit_paged_writes(8, hs, [0], 8, 0, ds, pages, 8, 0, None, None, None)
    with pytest.raises(TendrilValueError, match="pinned NIC index"):
        engine.submit_imm(1, ds, nic=3)
    # submit_send has no cap by default (pplx-garden has none); an explicit one holds
    capped = make_engine(max_msg_size=4096)
    try:
        with pytest.raises(TendrilValueError, match="exceed max_msg_size"):
            capped.submit_send(capped.main_address, bytes(4097))
    finally:
        capped.stop()
    with pytest.raises(TypeError, match="addr must be a DomainAddress"):
        engine.submit_send(str(engine.main_address), b"x")
    with pytest.raises(TendrilValueError, match="expected must be"):
        engine.set_imm_count_expected(1, 0, lambda: None)
    with pytest.raises(TypeError, match="on_reached must be callable"):
        engine.set_imm_count_expected(1, 1, None)
    with pytest.raises(TendrilValueError, match="msg_size and count"):
        engine.submit_bouncing_recvs(0, 64, lambda b: None)
    assert engine.remove_imm_count(12345) is None
    engine.unregister_memory(hs)
    with pytest.raises(TendrilValueError, match="not registered"):
        engine.submit_write(hs, 0, 10, 1, ds, 0, None, None)
    # an accepted operation was never submitted by a failed call: counters stay untouched
    c = Counter()
    with pytest.raises(TypeError):
        engine.submit_imm(1, None, counter=c)
    assert c.submitted == 0


def test_loopback_write_and_imm_callbacks(engine):
    """The engine writes into its own region (same process): data, callbacks, imms."""
    dst = bytearray(1 << 16)
    src = np.arange(1 << 16, dtype=np.uint32).view(np.uint8)[: 1 << 16].copy()
    hd, dd = engine.register_memory(dst)
    hs, _ = engine.register_memory(src, remote=False)
    got = []
    ev = threading.Event()
    engine.set_imm_callback(lambda imm: (got.append(imm), ev.set()))
    done = threading.Event()
    engine.submit_write(hs, 0, len(src), 77, dd, 0, done.set, lambda m: pytest.fail(m))
    assert done.wait(TMO) and ev.wait(TMO)
    assert bytes(dst) == src.tobytes() and got == [77]
    engine.set_imm_callback(None)


def test_watcher(engine):
    seen = []
    ev = threading.Event()

    def cb(old, new):
        seen.append((old, new))
        ev.set()
        return new < 10

    w = engine.alloc_scalar_watcher(cb)
    assert w.active and w.ptr != 0 and w.value == 0
    w.set(5)
    assert ev.wait(TMO)
    ev.clear()
    w.set(11)  # callback returns False: released
    assert ev.wait(TMO)
    tendril_wait = __import__("conftest").wait_until
    tendril_wait(lambda: not w.active, what="watcher release")
    assert seen == [(0, 5), (5, 11)]
    with pytest.raises(TendrilValueError, match="released"):
        w.set(1)
    w2 = engine.alloc_scalar_watcher(lambda o, n: True)
    w2.free()
    w2.free()  # idempotent
    assert not w2.active
    # an exception releases the watcher and is counted, not swallowed
    import sys
    old, caught = sys.unraisablehook, []
    sys.unraisablehook = lambda u: caught.append(u.exc_type)
    try:
        w3 = engine.alloc_scalar_watcher(lambda o, n: 1 / 0)
        w3.set(1)
        tendril_wait(lambda: not w3.active, what="watcher release after exception")
    finally:
        sys.unraisablehook = old
    assert engine.callback_errors == 1 and caught == [ZeroDivisionError]


def test_stopped_engine_errors():
    e = make_engine()
    h, d = e.register_memory(bytearray(4096))
    e.stop()
    e.stop()  # idempotent
    for call in [lambda: e.submit_imm(1, d), lambda: e.set_imm_count_expected(1, 1, lambda: None),
                 lambda: e.register_memory(bytearray(64)), lambda: e.imm_counter(3)]:
        with pytest.raises(EngineStoppedError) as ei:
            call()
        assert ei.value.errno == errno.ESHUTDOWN
    assert e.stopped
    del e
    gc.collect()
    assert not h.registered  # engine teardown detached the handle


def test_gpu_groups_from_topology(monkeypatch):
    """TransferEngine(nets_per_gpu, cuda_devices) picks each GPU's topology NICs, except
    on shm/sm2, whose one domain is no NIC: there every NIC is the provider's own domain
    (a GPU machine's nearest NIC, e.g. eth0, made shm refuse the engine)."""
    from tendril import _engine
    from tendril.topology import DomainInfo, TopologyGroup
    topo = [TopologyGroup(cuda_device=0, numa=0, cpus=[3, 4],
                          domains=[DomainInfo("mlx5_0", 0, kind="verbs", netdev="eth0"),
                                   DomainInfo("mlx5_1", 0, kind="verbs", netdev="eth1")])]
    monkeypatch.setattr(_engine, "detect_topology", lambda: topo)
    monkeypatch.delenv("TENDRIL_PROVIDER", raising=False)
    assert _engine._groups_for(2, [0], "verbs", None, True) == [(0, ["mlx5_0", "mlx5_1"], 3)]
    assert _engine._groups_for(1, [0], "tcp", None, False) == [(0, ["eth0"], -1)]
    assert _engine._groups_for(2, [0], "shm", None, True) == [(0, [None, None], 3)]
    # the engine's provider override counts, as it does in the engine
    monkeypatch.setenv("TENDRIL_PROVIDER", "shm")
    assert _engine._groups_for(1, [0], "verbs", None, True) == [(0, [None], 3)]
    monkeypatch.delenv("TENDRIL_PROVIDER")
    with pytest.raises(ValueError, match="has 2 NICs, nets_per_gpu=3"):
        _engine._groups_for(3, [0], "verbs", None, True)
    with pytest.raises(ValueError, match="not in the detected topology"):
        _engine._groups_for(1, [1], "shm", None, True)

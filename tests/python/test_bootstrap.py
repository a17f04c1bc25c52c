"""tendril.bootstrap: two real processes find each other through a store (a socket store
here; torch's TCPStore when torch is installed), then one writes into the other."""
import time

import pytest

from bootstrap_ranks import run_ranks as _run_ranks
from socket_store import SocketStore, StoreServer
from tendril import bootstrap


def test_two_processes_bootstrap_through_a_socket_store():
    srv = StoreServer()
    try:
        results = _run_ranks("socket", srv.port)
    finally:
        srv.close()
    assert results == {0: ("ok", results[0][1]), 1: ("ok", results[1][1])}, results


def test_torch_tcpstore_bootstrap():
    torch = pytest.importorskip("torch", reason="torch is not installed: the TCPStore variant needs it")
    import datetime

    import torch.distributed as dist

    master = dist.TCPStore("127.0.0.1", 0, 3, is_master=True, timeout=datetime.timedelta(seconds=30))
    results = _run_ranks("torch", master.port)
    assert all(v[0] == "ok" for v in results.values()), results
    del torch


def test_missing_rank_is_a_timeout_naming_it():
    srv = StoreServer()
    try:
        store = SocketStore(srv.port)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=r"ranks \[1, 2\] of 3 did not publish"):
            bootstrap.store_all_gather(store, 0, 3, "lonely", b"x", timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        srv.close()


def test_bad_arguments():
    srv = StoreServer()
    try:
        store = SocketStore(srv.port)
        with pytest.raises(ValueError, match="rank must be in 0..1"):
            bootstrap.store_all_gather(store, 2, 2, "x", b"")
        with pytest.raises(ValueError, match="world_size"):
            bootstrap.store_all_gather(store, 0, 0, "x", b"")
        with pytest.raises(TypeError, match="descriptors\\[0\\]"):
            bootstrap.exchange_descriptors(store, 0, 1, ["not a descriptor"])
    finally:
        srv.close()


def test_pack_round_trip_and_truncation(engine):
    descs = [engine.register_memory(bytearray(4096))[1], engine.register_memory(bytearray(8192))[1]]
    packed = bootstrap._pack(descs)
    assert bootstrap._unpack(packed) == descs
    with pytest.raises(ValueError, match="truncated"):
        bootstrap._unpack(packed[:-3])

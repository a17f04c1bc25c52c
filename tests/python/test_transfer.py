"""Two processes exchanging data through every method (tcp on 'lo', or shm)."""
import errno
import os
import sys
import threading

import numpy as np
import pytest

from conftest import TMO, Recorder, wait_until
from tendril import Counter, PageIndices, TendrilTimeoutError
from tendril_peer import REGION


@pytest.fixture
def src(engine):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=REGION, dtype=np.uint8)
    h, _ = engine.register_memory(data, remote=False)
    return data, h


def peer_bytes(peer, off, n):
    return peer.ask("read", off, n)


def test_peer_descriptor_arrived_pickled(peer):
    assert peer.desc.len == REGION
    [(addr, _)] = peer.desc.addr_rkey_list
    assert addr == peer.addr


def test_single_writes_with_callbacks(engine, peer, src):
    data, hs = src
    imm = 101
    peer.ask("counter", imm)
    rec = Recorder()
    cases = [(0, 0, 10), (17, 5000, 1), (8192 * 2 + 1, 300000, 4096), (1 << 20, 1 << 21, 123457),
             (REGION - 1000, REGION - 1000, 1000), (0, 42, 0)]
    for k, (soff, doff, n) in enumerate(cases):
        engine.submit_write(hs, soff, n, imm, peer.desc, doff, rec.done(k), rec.error(k))
    wait_until(lambda: rec.count() == len(cases), what="write callbacks")
    assert sorted(rec.events) == sorted(("done", k) for k in range(len(cases)))
    assert peer.ask("wait", imm, len(cases), TMO) == "ok"  # one imm per write (1 NIC: 1 shard)
    assert peer.ask("value", imm) == 0
    mirror = {}
    for soff, doff, n in cases:
        mirror[(doff, n)] = data[soff : soff + n].tobytes()
    for (doff, n), want in mirror.items():
        assert peer_bytes(peer, doff, n) == want


def test_writes_with_counter_only(engine, peer, src):
    data, hs = src
    imm = 102
    peer.ask("counter", imm)
    c = Counter()
    n = 50
    for k in range(n):
        engine.submit_write(hs, k * 1000, 1000, imm if k % 2 else None, peer.desc, k * 1000, counter=c)
    c.wait(timeout=TMO)
    assert (c.done, c.errors, c.submitted) == (n, 0, n)
    assert peer.ask("wait", imm, n // 2, TMO) == "ok"
    assert peer_bytes(peer, 0, n * 1000) == data[: n * 1000].tobytes()
    assert engine.callback_errors == 0


def test_paged_writes(engine, peer, src):
    data, hs = src
    imm = 103
    peer.ask("counter", imm)
    peer.ask("zero")
    page, P = 1000, 37
    rng = np.random.default_rng(2)
    si = rng.integers(0, 3000, size=P).astype(np.uint32)
    di = rng.permutation(3000)[:P].astype(np.uint32)
    c = Counter()
    engine.submit_paged_writes(page, hs, PageIndices(si), 1200, 64, peer.desc, PageIndices(di.tolist()),
                               1100, 128, imm, None, None, counter=c)
    c.wait(timeout=TMO)
    assert c.errors == 0
    assert peer.ask("wait", imm, P, TMO) == "ok"  # one imm per page
    got = np.frombuffer(peer_bytes(peer, 0, 128 + 1100 * 3000 + page), dtype=np.uint8)
    for s, d in zip(si, di):
        assert got[128 + 1100 * d : 128 + 1100 * d + page].tobytes() == data[64 + 1200 * s : 64 + 1200 * s + page].tobytes()
    # zero-length pages still carry their immediates
    rec = Recorder()
    engine.submit_paged_writes(0, hs, PageIndices([0] * 5), 0, 0, peer.desc, PageIndices([0] * 5), 0, 0, imm,
                               rec.done(), rec.error())
    wait_until(lambda: rec.count() == 1)
    assert rec.events == [("done", None)]
    assert peer.ask("wait", imm, 5, TMO) == "ok"


def test_imm_and_barrier(engine, peer):
    imm = 104
    peer.ask("counter", imm)
    c = Counter()
    for _ in range(3):
        engine.submit_imm(imm, peer.desc, counter=c)
    engine.submit_barrier(imm, [peer.desc, peer.desc], counter=c)
    c.wait(timeout=TMO)
    assert c.errors == 0
    assert peer.ask("wait", imm, 5, TMO) == "ok"
    assert peer.ask("value", imm) == 0


def test_expected_count_one_shot_with_surplus(engine, peer):
    imm = 105
    peer.ask("clear")
    assert peer.ask("expect", imm, 3) is None
    c = Counter()
    for _ in range(5):
        engine.submit_imm(imm, peer.desc, counter=c)
    c.wait(timeout=TMO)
    # reached once; the 2 surplus immediates go to the plain imm callback, none lost
    wait_until(lambda: (s := peer.ask("state"))["reached"] == [imm] and s["plain"].count(imm) == 2,
               what="one reach and 2 surplus imms")
    assert peer.ask("remove", imm) is None  # one-shot: already gone


def test_imms_before_expectation_are_plain(engine, peer):
    imm = 106
    peer.ask("clear")
    c = Counter()
    for _ in range(2):
        engine.submit_imm(imm, peer.desc, counter=c)
    c.wait(timeout=TMO)
    wait_until(lambda: peer.ask("state")["plain"].count(imm) == 2, what="plain imms")
    assert peer.ask("expect", imm, 2) is None  # counting starts at 0
    for _ in range(2):
        engine.submit_imm(imm, peer.desc, counter=c)
    c.wait(timeout=TMO)
    wait_until(lambda: peer.ask("state")["reached"] == [imm], what="reach")
    assert peer.ask("state")["plain"].count(imm) == 2


def test_expected_count_previous_and_remove(engine, peer):
    imm = 107
    assert peer.ask("expect", imm, 10) is None
    before = peer.ask("imms_received")
    c = Counter()
    for _ in range(3):
        engine.submit_imm(imm, peer.desc, counter=c)
    c.wait(timeout=TMO)
    # the worker bumps the NIC statistic after counting: seeing it means counted
    wait_until(lambda: peer.ask("imms_received") >= before + 3, what="3 imms at the peer")
    assert peer.ask("expect", imm, 10) == (3, 10)  # re-arming returns (count, expected), resets
    assert peer.ask("remove", imm) == (0, 10)
    assert peer.ask("remove", imm) is None
    # a counter replaces an expectation as well
    peer.ask("expect", imm, 10)
    peer.ask("counter", imm)
    assert peer.ask("remove", imm) == (0, None)


def test_send_and_bouncing_recvs(engine, peer):
    peer.ask("clear")
    peer.ask("recvs", 4, 256)
    msgs = [os.urandom(n) for n in (1, 100, 256, 17, 0, 200)]
    c = Counter()
    for m in msgs:
        engine.submit_send(peer.addr, m, None, None, counter=c)
    c.wait(timeout=TMO)
    assert c.errors == 0
    wait_until(lambda: len(peer.ask("state")["msgs"]) == len(msgs), what="messages at the peer")
    assert sorted(peer.ask("state")["msgs"]) == sorted(msgs)
    # and back: the peer sends to our main address
    got = []
    ev = threading.Event()
    engine.submit_bouncing_recvs(2, 128, lambda b: (got.append(b), ev.set()), None)
    assert peer.ask("send", engine.main_address, b"hello from the peer") == ("sent", 0, [])
    assert ev.wait(TMO) and got == [b"hello from the peer"]


def test_oversized_message_is_reported(engine, peer):
    peer.ask("clear")
    peer.ask("recvs", 2, 64)  # two pools at the peer now: 256 and 64 bytes
    rec = Recorder()
    # 300 bytes fit no buffer: the receiver reports truncation (or the send fails)
    engine.submit_send(peer.addr, bytes(300), rec.done(), rec.error())
    wait_until(lambda: rec.count() == 1, what="send completion")
    if rec.events[0][0] == "done":
        wait_until(lambda: peer.ask("state")["recv_errors"], what="receiver truncation error")


def test_callback_exception_is_reported_not_swallowed(engine, peer, src):
    _, hs = src
    seen = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(u.exc_type)
    try:
        ok = threading.Event()

        def boom():
            raise KeyError("from a callback")

        engine.submit_write(hs, 0, 8, None, peer.desc, 0, boom, None)
        wait_until(lambda: engine.callback_errors == 1, what="callback error count")
        engine.submit_write(hs, 0, 8, None, peer.desc, 0, ok.set, None)  # engine still works
        assert ok.wait(TMO)
        # errors of on_error and of the imm callback are reported too
        engine.set_imm_callback(lambda imm: 1 / 0)
        engine.submit_write(hs, 0, 8, 9, engine.register_memory(bytearray(64))[1], 0, None, None)
        wait_until(lambda: engine.callback_errors == 2, what="imm callback error")
    finally:
        sys.unraisablehook = old
    assert seen == [KeyError, ZeroDivisionError]


def test_imm_counter_timeout_and_surplus(engine, peer):
    imm = 108
    peer.ask("counter", imm)
    with pytest.raises(AssertionError, match="TendrilTimeoutError: ImmCounter.wait: 0 of 1 immediates 108"):
        peer.ask("wait", imm, 1, 0.05, timeout=10)
    c = Counter()
    for _ in range(3):
        engine.submit_imm(imm, peer.desc, counter=c)
    c.wait(timeout=TMO)
    assert peer.ask("wait", imm, 2, TMO) == "ok"
    assert peer.ask("wait", imm, 1, TMO) == "ok"  # the surplus carried over


def test_local_imm_counter_timeout(engine):
    ic = engine.imm_counter(5)
    with pytest.raises(TendrilTimeoutError, match="0 of 2 immediates 5") as ei:
        ic.wait(2, timeout=0.05)
    assert ei.value.errno == errno.ETIMEDOUT
    ic.close()
    with pytest.raises(ValueError, match="closed"):
        ic.wait(1, timeout=0)

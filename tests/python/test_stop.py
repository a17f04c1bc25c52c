"""Engine shutdown: pending operations complete exactly once, teardown from callbacks."""
import gc
import threading
import time

import numpy as np
import pytest

from conftest import TMO, Recorder, wait_until
from tendril import EngineStoppedError
from tendril_peer import REGION, Peer, make_engine


@pytest.fixture
def peer():
    """A fresh peer per test: these tests tear engines down with writes in flight, which
    the libfabric 1.17 shm provider does not always survive on the receiving side (a
    crash in fi_cq_read of the peer; see docs/python.md, "Known issues")."""
    p = Peer()
    yield p
    p.close()


def test_stop_with_pending_operations(peer):
    e = make_engine()
    data = np.ones(REGION, dtype=np.uint8)
    hs, _ = e.register_memory(data, remote=False)
    rec = Recorder()
    n = 400
    for k in range(n):
        e.submit_write(hs, 0, REGION, 1, peer.desc, 0, rec.done(k), rec.error(k))
    e.stop()  # returns after every callback ran
    assert rec.count() == n
    tags = sorted(ev[1] for ev in rec.events)
    assert tags == list(range(n)), "every operation completes exactly once"
    errors = [ev for ev in rec.events if ev[0] == "error"]
    assert all("[ECANCELED]" in ev[2] for ev in errors), errors[:3]
    print(f"{len(errors)} of {n} writes canceled by stop")
    time.sleep(0.1)
    assert rec.count() == n  # and nothing arrives later
    with pytest.raises(EngineStoppedError):
        e.submit_imm(1, peer.desc)


def test_dealloc_stops_engine_with_pending_callbacks(peer):
    e = make_engine()
    data = np.ones(1 << 20, dtype=np.uint8)
    hs, _ = e.register_memory(data, remote=False)
    rec = Recorder()
    for k in range(100):
        e.submit_write(hs, 0, 1 << 20, None, peer.desc, 0, rec.done(k), rec.error(k))
    del e, hs
    gc.collect()
    assert rec.count() == 100


def test_engine_dropped_inside_its_own_callback(peer):
    holder = [make_engine()]
    done = threading.Event()

    def cb():
        holder.clear()  # the last reference: torn down from a helper thread
        done.set()

    holder[0].submit_imm(1, peer.desc, cb, None)
    assert done.wait(TMO)
    # the process carries on, and other engines work
    e = make_engine()
    ev = threading.Event()
    e.submit_imm(1, peer.desc, ev.set, None)
    assert ev.wait(TMO)
    e.stop()


def test_stop_from_callback_is_refused(peer):
    e = make_engine()
    out = []
    ev = threading.Event()

    def cb():
        try:
            e.stop()
        except RuntimeError as ex:
            out.append(str(ex))
        ev.set()

    e.submit_imm(1, peer.desc, cb, None)
    assert ev.wait(TMO)
    assert out and "callback" in out[0]
    e.stop()


def test_peer_death_fails_operations(prov):
    p = Peer()
    desc = p.desc
    p.proc.kill()
    p.proc.join(10)
    p.remove_shm_leftovers()
    e = make_engine(op_timeout_ms=2000)
    hs, _ = e.register_memory(np.ones(4096, dtype=np.uint8), remote=False)
    rec = Recorder()
    for k in range(5):
        e.submit_write(hs, 0, 4096, 1, desc, 0, rec.done(k), rec.error(k))
    wait_until(lambda: rec.count() == 5, timeout=TMO, what="completions after peer death")
    assert sorted(ev[1] for ev in rec.events) == list(range(5))
    assert all(ev[0] == "error" for ev in rec.events), rec.events
    e.stop()

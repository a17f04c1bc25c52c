"""Peer state: a peer that dies is reported (callback and peer_state) and operations to
it fail, instead of waiting for the operation timeout."""
import threading
import time

import numpy as np

from conftest import TMO, Recorder, wait_until
from tendril_peer import Peer, make_engine


def test_dead_peer_reported():
    e = make_engine(op_timeout_ms=15000)
    peer = Peer()
    seen = []
    got_down = threading.Event()

    def on_peer(addr, state):
        seen.append((addr, state))
        if state == "down":
            got_down.set()

    e.set_peer_callback(on_peer)
    data = np.ones(1 << 16, dtype=np.uint8)
    hs, _ = e.register_memory(data, remote=False)
    assert e.peer_state(peer.addr) == "unknown"
    rec = Recorder()
    e.submit_write(hs, 0, len(data), None, peer.desc, 0, rec.done(0), rec.error(0))
    wait_until(lambda: rec.count() == 1, TMO, "first write")
    assert e.peer_state(peer.addr) == "up"
    peer.proc.kill()
    peer.proc.join(TMO)
    peer.remove_shm_leftovers()
    # Traffic to the dead peer: the transport reports it gone, long before the 15 s
    # operation timeout.
    t0 = time.monotonic()
    for k in range(1, 9):
        e.submit_write(hs, 0, len(data), None, peer.desc, 0, rec.done(k), rec.error(k))
    assert got_down.wait(TMO), f"no 'down' reported; seen {seen}"
    wait_until(lambda: rec.count() == 9, TMO, "writes to the dead peer")
    took = time.monotonic() - t0
    assert took < 5.0, f"dead peer noticed only after {took:.1f} s"
    assert e.peer_state(peer.addr) == "down"
    assert any(a == peer.addr and s == "down" for a, s in seen)
    assert any(ev[0] == "error" for ev in rec.events)
    e.set_peer_callback(None)
    e.stop()

import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from tendril_peer import Peer, make_engine, provider  # noqa: E402

TMO = 20.0


@pytest.fixture(scope="session")
def prov() -> str:
    return provider()


@pytest.fixture
def engine():
    e = make_engine()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def peer():
    p = Peer()
    yield p
    p.close()


def wait_until(pred, timeout: float = TMO, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class Recorder:
    """Thread-safe record of callback invocations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list = []

    def done(self, tag=None):
        def f() -> None:
            with self.lock:
                self.events.append(("done", tag))

        return f

    def error(self, tag=None):
        def f(msg: str) -> None:
            with self.lock:
                self.events.append(("error", tag, msg))

        return f

    def count(self) -> int:
        with self.lock:
            return len(self.events)

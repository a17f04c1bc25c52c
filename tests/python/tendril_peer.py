"""The remote end of the Python tests: a second process with its own engine.

Started with multiprocessing (spawn). Speaks over a Pipe: every object crossing it is
pickled, so the DomainAddress and MemoryRegionDescriptor it hands out also test
pickling between processes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import traceback
from typing import Any

REGION = 4 << 20


def provider() -> str:
    return os.environ.get("TENDRIL_TEST_PROVIDER", "tcp")


def make_engine(**kw: Any):
    import tendril

    p = provider()
    nics = ["lo"] if "tcp" in p else None
    return tendril.TransferEngine(nets_per_gpu=1, cuda_devices=[], provider=p, nics=nics, **kw)


def _peer_main(conn) -> None:
    import tendril

    e = make_engine()
    buf = bytearray(REGION)
    _, desc = e.register_memory(buf)
    lock = threading.Lock()
    st: dict = {"plain": [], "reached": [], "msgs": [], "recv_errors": []}

    def on_imm(imm: int) -> None:
        with lock:
            st["plain"].append(imm)

    e.set_imm_callback(on_imm)
    counters: dict = {}
    conn.send(("ready", e.main_address, desc))
    while True:
        cmd = conn.recv()
        op, args = cmd[0], cmd[1:]
        try:
            if op == "quit":
                e.stop()
                conn.send("bye")
                return
            elif op == "read":
                off, n = args
                reply: Any = bytes(buf[off : off + n])
            elif op == "zero":
                buf[:] = bytes(REGION)
                reply = "ok"
            elif op == "counter":
                (imm,) = args
                counters[imm] = e.imm_counter(imm)
                reply = "ok"
            elif op == "wait":
                imm, n, timeout = args
                counters[imm].wait(n, timeout=timeout)
                reply = "ok"
            elif op == "value":
                (imm,) = args
                reply = counters[imm].value
            elif op == "expect":
                imm, count = args

                def reached(imm: int = imm) -> None:
                    with lock:
                        st["reached"].append(imm)

                reply = e.set_imm_count_expected(imm, count, reached)
            elif op == "remove":
                (imm,) = args
                reply = e.remove_imm_count(imm)
            elif op == "imms_received":
                reply = e.nic_stats()["imms_received"]
            elif op == "state":
                with lock:
                    reply = {k: list(v) for k, v in st.items()}
            elif op == "clear":
                with lock:
                    for v in st.values():
                        v.clear()
                reply = "ok"
            elif op == "recvs":
                count, length = args

                def on_recv(data: bytes) -> None:
                    with lock:
                        st["msgs"].append(data)

                def on_err(msg: str) -> None:
                    with lock:
                        st["recv_errors"].append(msg)

                e.submit_bouncing_recvs(count, length, on_recv, on_err)
                reply = "ok"
            elif op == "send":
                addr, data = args
                errs: list = []
                c = tendril.Counter()
                e.submit_send(addr, data, None, errs.append, counter=c)
                c.wait(timeout=20)
                reply = ("sent", c.errors, errs)
            else:
                reply = ("error", "ValueError", f"unknown command {op}")
        except Exception as ex:  # reported to the test, which fails with it
            reply = ("error", type(ex).__name__, f"{ex}\n{traceback.format_exc()}")
        conn.send(reply)


class Peer:
    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_peer_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        ready = self._recv(60)
        assert ready[0] == "ready", ready
        _, self.addr, self.desc = ready

    def _recv(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"peer did not answer within {timeout} s")
        return self.conn.recv()

    def ask(self, *cmd: Any, timeout: float = 30) -> Any:
        self.conn.send(cmd)
        reply = self._recv(timeout)
        if isinstance(reply, tuple) and reply and reply[0] == "error":
            raise AssertionError(f"peer {cmd[0]} failed: {reply[1]}: {reply[2]}")
        return reply

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.ask("quit", timeout=30)
        except (OSError, EOFError, TimeoutError):
            pass  # the peer died: reported by the test that needed it
        finally:
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(10)
            self.remove_shm_leftovers()

    def remove_shm_leftovers(self) -> None:
        """A peer killed by a signal cannot close its shm endpoint; its region (named
        tendril-<pid>-... by the engine) would stay in /dev/shm."""
        if self.proc.exitcode not in (None, 0):
            import glob

            for path in glob.glob(f"/dev/shm/tendril-{self.proc.pid}-*"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

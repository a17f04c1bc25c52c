"""A minimal key-value store over TCP with torch.distributed.Store's calling convention
(set / get / wait(keys, timedelta) / check), for bootstrap tests on machines without torch.

The server runs in a thread of the test process; clients (in other processes) talk to
it over a real socket, as TCPStore clients do. get() of a missing key fails at once
(it does not block like TCPStore's get); wait() blocks until the keys exist or the
timeout passes, then raises TimeoutError.
"""
from __future__ import annotations

import datetime
import pickle
import socket
import socketserver
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Tuple


def _send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj)
    sock.sendall(struct.pack("<I", len(data)) + data)


def _recv(sock: socket.socket) -> Any:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("store connection closed")
        head += chunk
    n = struct.unpack("<I", head)[0]
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("store connection closed")
        buf += chunk
    return pickle.loads(bytes(buf))


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        srv: "StoreServer" = self.server.owner  # type: ignore[attr-defined]
        while True:
            try:
                op, args = _recv(self.request)
            except (ConnectionError, OSError):
                return
            with srv.cond:
                if op == "set":
                    srv.data[args[0]] = args[1]
                    srv.cond.notify_all()
                    reply: Tuple[str, Any] = ("ok", None)
                elif op == "get":
                    reply = ("ok", srv.data[args[0]]) if args[0] in srv.data else ("missing", args[0])
                elif op == "check":
                    reply = ("ok", all(k in srv.data for k in args[0]))
                elif op == "wait":
                    keys, secs = args
                    deadline = time.monotonic() + secs
                    while not all(k in srv.data for k in keys):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        srv.cond.wait(left)
                    ok = all(k in srv.data for k in keys)
                    reply = ("ok", None) if ok else ("timeout", [k for k in keys if k not in srv.data])
                else:
                    reply = ("error", op)
            _send(self.request, reply)


class StoreServer:
    """Serves a dict on 127.0.0.1:<port> from a daemon thread."""

    def __init__(self) -> None:
        self.data: Dict[str, bytes] = {}
        self.cond = threading.Condition()
        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self.srv.daemon_threads = True
        self.srv.owner = self  # type: ignore[attr-defined]
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


class SocketStore:
    """Client: the subset of torch.distributed.Store that tendril.bootstrap uses."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=120)
        self.lock = threading.Lock()

    def _call(self, op: str, *args: Any) -> Any:
        with self.lock:
            _send(self.sock, (op, args))
            status, val = _recv(self.sock)
        if status == "missing":
            raise KeyError(val)
        if status == "timeout":
            raise TimeoutError(f"store wait timed out; missing {val}")
        return val

    def set(self, key: str, value: bytes) -> None:
        self._call("set", key, bytes(value))

    def get(self, key: str) -> bytes:
        return self._call("get", key)

    def check(self, keys: List[str]) -> bool:
        return self._call("check", list(keys))

    def wait(self, keys: List[str], timeout: Optional[datetime.timedelta] = None) -> None:
        secs = timeout.total_seconds() if timeout is not None else 300.0
        self._call("wait", list(keys), secs)

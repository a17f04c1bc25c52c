"""Peers finding each other: exchange of addresses and memory descriptors over what a
job already has.

- A key-value store: any object with ``set(key, value)``, ``get(key)`` and
  ``wait(keys, timeout)`` (``torch.distributed.TCPStore``, ``FileStore``,
  ``HashStore``, ``PrefixStore``, or your own). Every rank publishes its value under
  ``<prefix>/<name>/<rank>`` and reads everyone else's.
- A ``torch.distributed`` process group (``all_gather_object``), or a pplx-garden
  ``ParallelGroup`` (an object with ``all_gather_object``).

Every call takes a timeout and raises ``TimeoutError`` naming the ranks that did not
publish, so a peer that never starts is an error, not a hang.
"""
from __future__ import annotations

import datetime
import time
from typing import Any, List, Optional, Sequence

from ._tendril import DomainAddress, MemoryRegionDescriptor

DEFAULT_TIMEOUT = 60.0
DEFAULT_PREFIX = "tendril"


def _check_ranks(rank: int, world_size: int) -> None:
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank!r}")


def _key(prefix: str, name: str, rank: int) -> str:
    return f"{prefix}/{name}/{rank}"


def _wait(store: Any, keys: List[str], timeout: float) -> None:
    """store.wait(keys, timeout) with torch's timedelta, or by polling ``check`` /
    ``get`` for stores that have no wait."""
    if hasattr(store, "wait"):
        try:
            store.wait(keys, datetime.timedelta(seconds=timeout))
            return
        except TypeError:
            pass  # a wait(keys) without a timeout argument: poll below instead
    deadline = time.monotonic() + timeout
    pending = list(keys)
    while pending:
        if hasattr(store, "check"):
            if store.check(pending):
                return
        else:
            still = []
            for k in pending:
                try:
                    store.get(k)
                except Exception:  # noqa: BLE001 - "missing" is store-specific
                    still.append(k)
            pending = still
            if not pending:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s")
        time.sleep(0.01)


def store_all_gather(
    store: Any,
    rank: int,
    world_size: int,
    name: str,
    value: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    prefix: str = DEFAULT_PREFIX,
) -> List[bytes]:
    """Publishes ``value`` under ``<prefix>/<name>/<rank>`` and returns every rank's value
    (index = rank). ``name`` must be unique per exchange within the job (a store keeps
    its keys). TimeoutError names the ranks missing after ``timeout`` seconds."""
    _check_ranks(rank, world_size)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"value must be bytes, got {type(value).__name__}")
    store.set(_key(prefix, name, rank), bytes(value))
    keys = [_key(prefix, name, r) for r in range(world_size)]
    try:
        _wait(store, keys, timeout)
    except Exception as e:
        missing = [r for r in range(world_size) if not _has(store, keys[r])]
        if isinstance(e, TimeoutError) or "imeout" in str(e) or "imed out" in str(e):
            raise TimeoutError(
                f"tendril.bootstrap: {name!r}: ranks {missing} of {world_size} did not publish within "
                f"{timeout} s (store {type(store).__name__})"
            ) from e
        raise
    return [bytes(store.get(k)) for k in keys]


def _has(store: Any, key: str) -> bool:
    try:
        if hasattr(store, "check"):
            return bool(store.check([key]))
        store.get(key)
        return True
    except Exception:  # noqa: BLE001
        return False


def exchange_addresses(
    store: Any,
    rank: int,
    world_size: int,
    engine: Any,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    name: str = "addresses",
    prefix: str = DEFAULT_PREFIX,
) -> List[DomainAddress]:
    """Every rank's ``engine.main_address`` (index = rank), through a store."""
    vals = store_all_gather(
        store, rank, world_size, name, engine.main_address.as_bytes(), timeout=timeout, prefix=prefix
    )
    return [DomainAddress.from_bytes(v) for v in vals]


def exchange_descriptors(
    store: Any,
    rank: int,
    world_size: int,
    descriptors: Sequence[MemoryRegionDescriptor],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    name: str = "descriptors",
    prefix: str = DEFAULT_PREFIX,
) -> List[List[MemoryRegionDescriptor]]:
    """Every rank's list of descriptors (index = rank), through a store. Ranks may
    publish different numbers of descriptors."""
    descs = list(descriptors)
    for i, d in enumerate(descs):
        if not isinstance(d, MemoryRegionDescriptor):
            raise TypeError(f"descriptors[{i}] must be a MemoryRegionDescriptor, got {type(d).__name__}")
    vals = store_all_gather(store, rank, world_size, name, _pack(descs), timeout=timeout, prefix=prefix)
    return [_unpack(v) for v in vals]


def _pack(descs: List[MemoryRegionDescriptor]) -> bytes:
    # u32 count, then per descriptor u32 length + wire form (docs/wire-format.md)
    out = bytearray(len(descs).to_bytes(4, "little"))
    for d in descs:
        b = d.as_bytes()
        out += len(b).to_bytes(4, "little") + b
    return bytes(out)


def _unpack(data: bytes) -> List[MemoryRegionDescriptor]:
    if len(data) < 4:
        raise ValueError("tendril.bootstrap: truncated descriptor list")
    n, pos, out = int.from_bytes(data[:4], "little"), 4, []
    for _ in range(n):
        if pos + 4 > len(data):
            raise ValueError("tendril.bootstrap: truncated descriptor list")
        ln = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        if pos + ln > len(data):
            raise ValueError("tendril.bootstrap: truncated descriptor list")
        out.append(MemoryRegionDescriptor.from_bytes(data[pos:pos + ln]))
        pos += ln
    return out


def group_exchange_addresses(engine: Any, group: Optional[Any] = None) -> List[DomainAddress]:
    """Every rank's ``engine.main_address`` through a process group's
    ``all_gather_object`` (torch.distributed; ``group=None`` is the default group), or a
    pplx-garden ParallelGroup. The group's own timeout applies."""
    return [DomainAddress.from_bytes(b) for b in _group_gather(engine.main_address.as_bytes(), group)]


def group_exchange_descriptors(
    descriptors: Sequence[MemoryRegionDescriptor], group: Optional[Any] = None
) -> List[List[MemoryRegionDescriptor]]:
    """Every rank's descriptors through a process group (see group_exchange_addresses)."""
    return [_unpack(b) for b in _group_gather(_pack(list(descriptors)), group)]


def _group_gather(value: bytes, group: Optional[Any]) -> List[bytes]:
    if group is not None and hasattr(group, "all_gather_object") and not _is_torch_group(group):
        return list(group.all_gather_object(value))  # pplx-garden ParallelGroup
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("tendril.bootstrap: torch.distributed is not initialized (init_process_group first)")
    out: List[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, value, group=group)
    return out


def _is_torch_group(group: Any) -> bool:
    return type(group).__module__.startswith("torch")

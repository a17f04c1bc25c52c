"""TransferEngine with pplx-garden's constructor, builder and tensor helpers.

The data path (submit_*, immediates, counters) is implemented in C (_tendril); this
module adds what is convenient in Python: choosing NICs from the topology, device
normalisation (torch.device / "cuda:1" / ordinal) and register_tensor.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _tendril
from ._tendril import MemoryRegionDescriptor, MemoryRegionHandle
from .topology import DomainInfo, TopologyGroup, detect_topology

DeviceLike = Union[None, int, str, Any]  # Any: torch.device
NicName = Union[str, DomainInfo, None]


def _device_ordinal(device: DeviceLike) -> int:
    """-1 for host memory, else the CUDA ordinal."""
    if device is None:
        return -1
    if isinstance(device, bool):
        raise TypeError("device must be None, an int, a str or a torch.device")
    if isinstance(device, int):
        return device  # range-checked by the extension (OverflowError / ValueError)
    if isinstance(device, str):
        kind, _, index = device.partition(":")
        idx: Optional[int] = int(index) if index else None
    elif hasattr(device, "type"):  # torch.device
        kind, idx = device.type, device.index
    else:
        raise TypeError(f"device must be None, an int, a str or a torch.device, got {type(device).__name__}")
    if kind == "cpu":
        return -1
    if kind == "cuda":
        if idx is None:
            import torch  # only reached for a bare "cuda" device

            idx = torch.cuda.current_device()
        return int(idx)
    raise ValueError(f"unsupported device {device!r} (use 'cpu', 'cuda:N' or an ordinal)")


def shared_memory_provider(name: Optional[str]) -> bool:
    """shm or sm2 (a provider string as the engine reports it, e.g. "shm"): one domain
    that is no NIC, and the target process copies every incoming write itself."""
    return (name or "").split(";")[0] in ("shm", "sm2")


def _shared_memory(provider: Optional[str]) -> bool:
    """The provider asked for, as TENDRIL_PROVIDER overrides it (as the engine does), is
    shm/sm2: a GPU's topology NICs name nothing there."""
    return shared_memory_provider(os.environ.get("TENDRIL_PROVIDER") or provider)


def _nic_name(d: NicName, provider: Optional[str]) -> Optional[str]:
    if d is None or isinstance(d, str):
        return d
    # tcp addresses interfaces: an RDMA NIC's interface is its netdev
    if provider and "tcp" in provider and d.kind != "net" and d.netdev:
        return d.netdev
    return d.name


class TransferEngine(_tendril.TransferEngine):
    """One engine per process (docs/python.md).

    ``TransferEngine(nets_per_gpu, cuda_devices)`` as in pplx-garden: for each CUDA
    device, the first ``nets_per_gpu`` NICs of its topology group, worker pinned to the
    group's first CPU. With no CUDA devices (``cuda_devices=[]``, the default) the engine
    has one host-memory group of ``nets_per_gpu`` NICs, named by ``nics`` (e.g.
    ``["lo"]`` for tcp) or chosen by the provider / ``TENDRIL_NICS``.

    Keywords beyond pplx: ``provider`` ("auto", "tcp", "shm", "efa", "verbs", any
    libfabric name; ``TENDRIL_PROVIDER`` overrides), ``nics`` (list of names for the host
    group, or ``{cuda_device: [names]}``), ``op_timeout_ms`` (per-operation deadline,
    default 30 s), ``max_msg_size`` (largest submit_send; default None: no cap beyond the
    receiver's buffers, as in pplx-garden), ``busy_poll``.
    """

    def __init__(
        self,
        nets_per_gpu: int = 1,
        cuda_devices: Optional[Sequence[int]] = None,
        *,
        provider: Optional[str] = None,
        nics: Union[None, Sequence[NicName], Dict[int, Sequence[NicName]]] = None,
        op_timeout_ms: int = 0,
        max_msg_size: Optional[int] = None,
        busy_poll: bool = False,
        pin_worker_cpus: bool = True,
        groups: Optional[Sequence[Tuple[int, Any, int]]] = None,
    ) -> None:
        if groups is None:
            groups = _groups_for(nets_per_gpu, cuda_devices, provider, nics, pin_worker_cpus)
        super().__init__(
            provider=provider,
            groups=list(groups),
            op_timeout_ms=op_timeout_ms,
            max_msg_size=max_msg_size,
            busy_poll=busy_poll,
        )

    # -------------------------------------------------------------- pplx API ----

    @staticmethod
    def builder() -> "TransferEngineBuilder":
        return TransferEngineBuilder()

    @staticmethod
    def detect_topology() -> List[TopologyGroup]:
        return detect_topology()

    @property
    def fabric_engine(self) -> "FabricEngine":
        """pplx-garden hands this to its native all-to-all; here an opaque handle on the
        same engine (``FabricEngine.engine``)."""
        return FabricEngine(self)

    def register_memory(  # type: ignore[override]
        self,
        ptr: Any,
        len: Optional[int] = None,  # noqa: A002 - pplx-garden's keyword name
        device: DeviceLike = None,
        *,
        remote: bool = True,
        owner: Any = None,
    ) -> Tuple[MemoryRegionHandle, Optional[MemoryRegionDescriptor]]:
        """Registers memory; returns ``(handle, descriptor)`` (descriptor None if
        ``remote=False``). pplx-garden's form: ``ptr`` an int pointer with ``len`` and
        ``device`` (pass ``owner`` to keep the memory's owner alive). Tendril also takes a
        buffer-protocol object as ``ptr`` (bytearray, numpy array, mmap: host memory,
        kept alive and un-resizable while registered; ``len`` then registers a prefix).
        Unlike pplx, sizes need not be multiples of 4096."""
        return super().register_memory(ptr, len, _device_ordinal(device), remote=remote, owner=owner)

    def register_tensor(self, tensor: Any, *, remote: bool = True) -> Tuple[MemoryRegionHandle, Optional[MemoryRegionDescriptor]]:
        """Registers a contiguous torch tensor (CPU or CUDA); the tensor stays alive
        while registered. CUDA tensors need an engine group for that device."""
        if not tensor.is_contiguous():
            raise ValueError("register_tensor: tensor must be contiguous")
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes == 0:
            raise ValueError("register_tensor: tensor is empty")
        return super().register_memory(
            tensor.data_ptr(), nbytes, _device_ordinal(tensor.device), remote=remote, owner=tensor
        )

    # ----------------------------------------------------------- extras ----

    def __enter__(self) -> "TransferEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self.stopped:
            return "TransferEngine(stopped)"
        return (
            f"TransferEngine(provider={self.provider!r}, nics={self.nic_names!r}, "
            f"main_address={str(self.main_address)!r})"
        )


def _groups_for(
    nets_per_gpu: int,
    cuda_devices: Optional[Sequence[int]],
    provider: Optional[str],
    nics: Any,
    pin: bool,
) -> List[Tuple[int, Any, int]]:
    if not isinstance(nets_per_gpu, int) or not 1 <= nets_per_gpu <= _tendril.MAX_NICS:
        raise ValueError(f"nets_per_gpu must be 1..{_tendril.MAX_NICS}, got {nets_per_gpu!r}")
    if not cuda_devices:
        if isinstance(nics, dict):
            raise TypeError("nics: a dict needs cuda_devices; for the host group give a list of names")
        if nics is None:
            return [(-1, nets_per_gpu, -1)]
        names = [_nic_name(n, provider) for n in ([nics] if isinstance(nics, str) else nics)]
        if nets_per_gpu not in (1, len(names)):
            raise ValueError(f"nets_per_gpu={nets_per_gpu} but {len(names)} NIC names given")
        return [(-1, names, -1)]
    if len(set(cuda_devices)) != len(cuda_devices):
        raise ValueError(f"duplicate CUDA device in {list(cuda_devices)}")
    topo: Optional[List[TopologyGroup]] = None
    groups = []
    for dev in cuda_devices:
        if isinstance(nics, dict) and dev in nics:
            names = [_nic_name(n, provider) for n in nics[dev]]
            groups.append((int(dev), names, -1))
            continue
        if topo is None:
            topo = detect_topology()
        match = [g for g in topo if g.cuda_device == dev]
        if not match:
            raise ValueError(f"CUDA device {dev} is not in the detected topology ({len(topo)} GPU groups)")
        g = match[0]
        if _shared_memory(provider):  # no NICs to pick: nets_per_gpu domains of the provider
            groups.append((int(dev), [None] * nets_per_gpu, g.cpus[0] if pin and g.cpus else -1))
            continue
        if len(g.domains) < nets_per_gpu:
            raise ValueError(
                f"CUDA device {dev}: its topology group has {len(g.domains)} NICs, nets_per_gpu={nets_per_gpu}"
            )
        names = [_nic_name(d, provider) for d in g.domains[:nets_per_gpu]]
        cpu = g.cpus[0] if pin and g.cpus else -1
        groups.append((int(dev), names, cpu))
    return groups


class FabricEngine:
    """pplx-garden's opaque ``TransferEngine.fabric_engine``: wraps the engine it came from."""

    __slots__ = ("engine",)

    def __init__(self, engine: TransferEngine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"FabricEngine({self.engine!r})"


class TransferEngineBuilder:
    """pplx-garden's builder: ``add_gpu_domains(...)`` per GPU, then ``build()``."""

    def __init__(self) -> None:
        self._groups: List[Tuple[int, List[Optional[str]], int]] = []
        self._provider: Optional[str] = None
        self._kw: Dict[str, Any] = {}

    def add_gpu_domains(
        self,
        cuda_device: int,
        domains: Sequence[NicName],
        pin_worker_cpu: int = -1,
        pin_uvm_cpu: int = -1,
    ) -> "TransferEngineBuilder":
        """Adds a GPU group. ``pin_uvm_cpu`` is accepted for compatibility; tendril's
        watcher thread is per engine and not pinned."""
        self._add(int(cuda_device), domains, pin_worker_cpu)
        return self

    def add_host_domains(self, domains: Sequence[NicName] = (None,), pin_worker_cpu: int = -1) -> "TransferEngineBuilder":
        """Adds a host-memory group (tendril extension)."""
        self._add(-1, domains, pin_worker_cpu)
        return self

    def _add(self, device: int, domains: Sequence[NicName], cpu: int) -> None:
        if any(g[0] == device for g in self._groups):
            raise ValueError(f"device {device} added twice")
        names = [_nic_name(d, self._provider) for d in domains]
        named = [n for n in names if n is not None]
        if len(set(named)) != len(named):
            raise ValueError(f"duplicate domain name in {names}")
        if not 1 <= len(names) <= _tendril.MAX_NICS:
            raise ValueError(f"1..{_tendril.MAX_NICS} domains per group, got {len(names)}")
        self._groups.append((device, names, cpu))

    def provider(self, name: str) -> "TransferEngineBuilder":
        self._provider = name
        return self

    def op_timeout_ms(self, ms: int) -> "TransferEngineBuilder":
        self._kw["op_timeout_ms"] = ms
        return self

    def max_msg_size(self, n: int) -> "TransferEngineBuilder":
        self._kw["max_msg_size"] = n
        return self

    def busy_poll(self, on: bool = True) -> "TransferEngineBuilder":
        self._kw["busy_poll"] = on
        return self

    def build(self) -> TransferEngine:
        if not self._groups:
            raise ValueError("TransferEngineBuilder: add at least one group (add_gpu_domains / add_host_domains)")
        return TransferEngine(provider=self._provider, groups=self._groups, **self._kw)

"""Topology detection (GPU <-> NIC <-> NUMA <-> CPU) with pplx-garden's names.

Wraps te_topo_detect (include/tendril/te_topo.h, docs/topology.md): everything is read
from sysfs, so it works without CUDA or RDMA libraries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from . import _tendril


@dataclass(frozen=True)
class DomainInfo:
    """One NIC: ``name`` is what the provider wants (RDMA device for efa/verbs, interface
    for tcp); ``link_speed`` in bits/s (0 if unknown)."""

    name: str
    link_speed: int
    kind: str = "net"  # "efa", "verbs" or "net"
    netdev: str = ""   # RDMA NIC: the interface on the same PCI function, if any
    pci: str = ""
    numa: int = -1


@dataclass(frozen=True)
class TopologyGroup:
    """A GPU with its nearby NICs and CPUs (pplx: ``cuda_device, numa, domains, cpus``).
    ``cuda_device`` is -1 for a GPU hidden by CUDA_VISIBLE_DEVICES."""

    cuda_device: int
    numa: int
    domains: List[DomainInfo] = field(default_factory=list)
    cpus: List[int] = field(default_factory=list)
    gpu_pci: str = ""


def detect_topology(
    sysfs_root: Optional[str] = None,
    cpuset: Optional[str] = None,
    cuda_visible_devices: Optional[str] = None,
) -> List[TopologyGroup]:
    """One TopologyGroup per GPU, in PCI order. Empty on a machine without GPUs."""
    raw = _tendril.detect_topology(sysfs_root, cpuset, cuda_visible_devices)
    nics = [
        DomainInfo(
            name=n["name"],
            link_speed=n["link_speed"],
            kind=n["kind"],
            netdev=n["netdev"],
            pci=n["pci"],
            numa=n["numa"],
        )
        for n in raw["nics"]
    ]
    return [
        TopologyGroup(
            cuda_device=g["cuda_device"],
            numa=g["numa"],
            domains=[nics[i] for i in g["nics"]],
            cpus=list(g["cpus"]),
            gpu_pci=g["gpu_pci"],
        )
        for g in raw["groups"]
    ]

"""Drop-in for ``pplx_garden.fabric_lib``: ``from tendril.fabric_lib import TransferEngine``."""
from . import (  # noqa: F401
    DomainAddress,
    DomainInfo,
    FabricEngine,
    MemoryRegionDescriptor,
    MemoryRegionHandle,
    PageIndices,
    TopologyGroup,
    TransferEngine,
    TransferEngineBuilder,
    UvmWatcher,
)

__all__ = [
    "DomainAddress",
    "DomainInfo",
    "FabricEngine",
    "MemoryRegionDescriptor",
    "MemoryRegionHandle",
    "PageIndices",
    "TopologyGroup",
    "TransferEngine",
    "TransferEngineBuilder",
    "UvmWatcher",
]

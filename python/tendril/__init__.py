"""Tendril: RDMA point-to-point communication for LLM systems (Python API).

The names follow pplx-garden's ``pplx_garden.fabric_lib`` so that switching is a change
of import (``tendril.fabric_lib`` re-exports the same names). See docs/python.md.
"""
import atexit as _atexit
import pkgutil as _pkgutil

# The package spans python/ (pure Python) and <build>/python/ (compiled extensions).
__path__ = _pkgutil.extend_path(__path__, __name__)

try:
    from . import _tendril
except ImportError as _e:  # pragma: no cover - depends on the build
    raise ImportError(
        "tendril: the compiled extension _tendril was not found. Build it with CMake "
        "(cmake -S . -B build && cmake --build build) and put build/python on PYTHONPATH "
        "next to python/, or run `pip install .`"
    ) from _e

from ._tendril import (  # noqa: E402
    Counter,
    DomainAddress,
    EngineStoppedError,
    ImmCounter,
    MemoryRegionDescriptor,
    MemoryRegionHandle,
    PageIndices,
    TendrilError,
    TendrilTimeoutError,
    TendrilValueError,
    UvmWatcher,
    strerror,
)
from ._engine import TransferEngine, TransferEngineBuilder  # noqa: E402
from .topology import DomainInfo, TopologyGroup, detect_topology  # noqa: E402

# Stop every engine before the interpreter finalizes: callback threads must not ask for
# the GIL of a dying interpreter.
_atexit.register(_tendril._stop_all)

__all__ = [
    "Counter",
    "DomainAddress",
    "DomainInfo",
    "EngineStoppedError",
    "ImmCounter",
    "MemoryRegionDescriptor",
    "MemoryRegionHandle",
    "PageIndices",
    "TendrilError",
    "TendrilTimeoutError",
    "TendrilValueError",
    "TopologyGroup",
    "TransferEngine",
    "TransferEngineBuilder",
    "UvmWatcher",
    "detect_topology",
    "strerror",
]


def __getattr__(name: str):
    # P2PAllToAll (MoE all-to-all) needs torch and the _a2a extension: imported on first
    # use so that `import tendril` stays light and works without them.
    if name == "P2PAllToAll":
        from .p2p_all_to_all import P2PAllToAll

        return P2PAllToAll
    raise AttributeError(f"module 'tendril' has no attribute {name!r}")

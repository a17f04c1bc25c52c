"""Tendril: RDMA point-to-point communication for LLM systems (Python API).

The names follow pplx-garden's ``pplx_garden.fabric_lib`` so that switching is a change
of import (``tendril.fabric_lib`` re-exports the same names). See docs/python.md.
"""
import atexit as _atexit
import logging as _logging
import pkgutil as _pkgutil

# The package spans python/ (pure Python) and <build>/python/ (compiled extensions).
__path__ = _pkgutil.extend_path(__path__, __name__)

from . import _native  # noqa: E402

_tendril = _native.load()

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
from ._engine import FabricEngine, TransferEngine, TransferEngineBuilder  # noqa: E402
from .p2p_all_to_all import P2PAllToAll  # noqa: E402
from .topology import DomainInfo, TopologyGroup, detect_topology  # noqa: E402
from . import bootstrap  # noqa: E402

# One version source: project(VERSION) in CMakeLists.txt, compiled into the extension
# and read by pyproject.toml for the wheel's metadata.
__version__: str = _tendril.__version__

# Stop every engine before the interpreter finalizes: callback threads must not ask for
# the GIL of a dying interpreter.
_atexit.register(_tendril._stop_all)
# The library's log messages go to Python's logging, logger "tendril" (unless
# TENDRIL_LOG_FILE names a file); at exit the bridge delivers what is queued and goes.
if _tendril._set_log_bridge(_logging.getLogger("tendril")):
    _atexit.register(_tendril._set_log_bridge, None)

__all__ = [
    "Counter",
    "DomainAddress",
    "DomainInfo",
    "EngineStoppedError",
    "FabricEngine",
    "ImmCounter",
    "MemoryRegionDescriptor",
    "MemoryRegionHandle",
    "P2PAllToAll",
    "PageIndices",
    "TendrilError",
    "TendrilTimeoutError",
    "TendrilValueError",
    "TopologyGroup",
    "TransferEngine",
    "TransferEngineBuilder",
    "UvmWatcher",
    "__version__",
    "bootstrap",
    "detect_topology",
    "strerror",
]

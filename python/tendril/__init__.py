"""Tendril: RDMA point-to-point communication for LLM systems (Python API)."""
import pkgutil as _pkgutil

# The package spans python/ (pure Python) and build/python/ (compiled extensions).
__path__ = _pkgutil.extend_path(__path__, __name__)

try:  # needs torch and the compiled extension
    from .p2p_all_to_all import P2PAllToAll  # noqa: F401
except ImportError:
    pass

"""Loads the compiled extension _tendril, turning a missing shared library into an
ImportError that says which package to install."""
from __future__ import annotations

import re
from types import ModuleType

# Shared libraries the extension links to -> what provides them.
_PROVIDERS = {
    "libfabric": "libfabric's runtime library: apt-get install libfabric1 (Debian/Ubuntu), "
                 "dnf install libfabric (Fedora/RHEL), or add its lib directory to LD_LIBRARY_PATH",
    "libibverbs": "the rdma-core verbs library: apt-get install libibverbs1 (Debian/Ubuntu), "
                  "dnf install libibverbs (Fedora/RHEL)",
}


def explain(err: ImportError) -> str:
    text = str(err)
    missing = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", text)
    if missing:
        lib = missing.group(1)
        for prefix, what in _PROVIDERS.items():
            if lib.startswith(prefix):
                return f"tendril: the extension needs {lib}, which is not installed. Install {what}."
        return f"tendril: the extension needs {lib}, which the dynamic loader cannot find ({text})."
    return (
        "tendril: the compiled extension _tendril could not be loaded "
        f"({text}). Build it with CMake (cmake -S . -B build && cmake --build build) and put "
        "build/python on PYTHONPATH next to python/, or run `pip install .`"
    )


def load() -> ModuleType:
    try:
        from . import _tendril
    except ImportError as e:
        raise ImportError(explain(e)) from e
    return _tendril

"""What a user sees when the runtime library is missing, and the package's metadata."""
import os
import shutil
import subprocess
import sys

import tendril
from tendril import _tendril


def test_version_is_the_project_version():
    here = os.path.dirname(os.path.abspath(__file__))
    cmake = open(os.path.join(here, "..", "..", "CMakeLists.txt")).read()
    assert f"project(tendril VERSION {tendril.__version__} " in cmake


def test_p2p_all_to_all_resolves_without_torch_or_cuda():
    assert tendril.P2PAllToAll.__name__ == "P2PAllToAll"


def test_missing_libfabric_names_the_package(tmp_path):
    """A copy of the installed package whose extension needs a libfabric soname that does
    not exist: the real dynamic loader fails, and the ImportError says what to install."""
    pkg = tmp_path / "tendril"
    src = os.path.dirname(tendril.__file__)
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    ext = os.path.basename(_tendril.__file__)
    if not (pkg / ext).exists():  # build tree: the extension lives beside, not in, python/tendril
        shutil.copy(_tendril.__file__, pkg / ext)
    data = (pkg / ext).read_bytes()
    needed = b"libfabric.so.1\x00"
    assert needed in data, "the extension links libfabric.so.1"
    (pkg / ext).write_bytes(data.replace(needed, b"libfabric.so.9\x00", 1))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", "import tendril"], env=env, capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode != 0
    assert "libfabric.so.9, which is not installed" in r.stderr, r.stderr[-2000:]
    assert "apt-get install libfabric1" in r.stderr

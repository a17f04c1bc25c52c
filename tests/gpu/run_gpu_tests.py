#!/usr/bin/env python3
"""ctest entry of the GPU tests (run_gpu_tests.py [test_file.py] [pytest args]): exits 77
(ctest SKIP) with the reason when this machine cannot run them (no PyTorch, no CUDA
device, extension not built), else runs pytest on the file (default test_a2a.py)."""
import os
import sys


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def main():
    try:
        import torch
    except ImportError:
        skip("PyTorch is not installed")
    if torch.cuda.device_count() == 0:
        skip("no CUDA device")
    try:
        import pytest  # noqa: F401
    except ImportError:
        skip("pytest is not installed")
    try:
        from tendril import _tendril
    except ImportError as e:
        skip(f"tendril._tendril is not importable ({e}); build with Python headers")
    if not hasattr(_tendril, "_a2a"):
        skip("tendril._tendril has no all-to-all (_a2a): build with CUDA")
    here = os.path.dirname(os.path.abspath(__file__))
    # first argument: the test file (default test_a2a.py); the rest go to pytest
    args = sys.argv[1:]
    test = args.pop(0) if args and args[0].endswith(".py") else "test_a2a.py"
    sys.exit(pytest.main(["-q", "-x", "-s", os.path.join(here, test)] + args))


if __name__ == "__main__":  # spawned test workers re-import this module
    main()

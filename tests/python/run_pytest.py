"""ctest entry point: runs pytest on this directory, or skips (exit 77) without pytest."""
import sys

try:
    import pytest
except ImportError:
    print(f"SKIP: pytest is not installed for {sys.executable} "
          "(apt-get install python3-pytest, or pip install pytest)")
    sys.exit(77)

sys.exit(pytest.main(sys.argv[1:]))

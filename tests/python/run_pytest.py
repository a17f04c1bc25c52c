"""ctest entry point: runs pytest on this directory, or skips (exit 77) without pytest."""
import sys

if __name__ == "__main__":  # multiprocessing's spawn re-imports this module in children
    try:
        import pytest
    except ImportError:
        print(f"SKIP: pytest is not installed for {sys.executable} "
              "(apt-get install python3-pytest, or pip install pytest)")
        sys.exit(77)
    sys.exit(pytest.main(sys.argv[1:]))

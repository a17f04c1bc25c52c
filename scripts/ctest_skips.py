#!/usr/bin/env python3
"""Prints why each skipped test was skipped, from ctest's JUnit file.

ctest shows a skipped test's output only with -V, so `make test` would list the GPU,
Python and netns tests as "Not Run" without their reasons. Every such test prints its
reason before it exits 77; this prints the last lines of that output per skipped test.

    ctest --output-junit FILE ...; scripts/ctest_skips.py FILE
"""
import sys
import xml.etree.ElementTree as ET


def main(path: str) -> int:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"ctest_skips: cannot read {path}: {e}", file=sys.stderr)
        return 0  # the test run's own status is what counts
    skipped = [tc for tc in root.iter("testcase") if tc.find("skipped") is not None]
    if not skipped:
        return 0
    print(f"\nSkipped tests ({len(skipped)}), with the reason each printed:")
    for tc in skipped:
        out = (tc.findtext("system-out") or "").strip().splitlines()
        reason = " / ".join(line.strip() for line in out[-3:] if line.strip()) or "(no output)"
        print(f"  {tc.get('name')}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

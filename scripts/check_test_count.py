"""Check that a parallel pytest run ran every test that a plain collection finds.

    .venv/bin/python scripts/check_test_count.py COLLECTED JUNIT_XML

COLLECTED: the output of ``pytest --collect-only -q`` (one test id per line), without
pytest-xdist. JUNIT_XML: the ``--junitxml`` report of the run with ``-n N``. Every test has one
<testcase> there, passed, failed, skipped or xfailed alike, so the counts must be equal: a
test that the workers do not collect, or that no worker ran, makes them differ. Exits 1 with
both numbers when they do (scripts/test.sh runs it after pytest).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def collected(text: str) -> int:
    """Number of test ids in ``pytest --collect-only -q`` output."""
    return sum(1 for line in text.splitlines() if "::" in line and not line.startswith(" "))


def reported(junit: str | Path) -> int:
    """Number of <testcase> elements in a junit xml report."""
    return len(list(ET.parse(junit).getroot().iter("testcase")))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    want = collected(Path(argv[0]).read_text())
    if not Path(argv[1]).is_file():
        print(f"[tests] FAILED: {want} tests collected, and the parallel run wrote no report {argv[1]}",
              file=sys.stderr)
        return 1
    got = reported(argv[1])
    if want == 0 or got != want:
        print(f"[tests] FAILED: {want} tests collected, {got} reported by the parallel run", file=sys.stderr)
        return 1
    print(f"[tests] {got} tests run, as many as collected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

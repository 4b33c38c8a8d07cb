"""Benchmarks that print tables (`make bench`). They measure; they never assert."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table with right-aligned columns."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def run_in_fresh_process(module: str, *args: object) -> dict:
    """Run ``python -m module args...`` in a new interpreter and parse its stdout, one JSON object.

    A measurement made alone in its own process has that process's peak resident set size to itself.
    """
    command = [sys.executable, "-m", module, *map(str, args)]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def peak_rss_mib() -> float:
    """This process's own peak resident set size so far, in MiB.

    On Linux, VmHWM from /proc/self/status rather than ``ru_maxrss``: the kernel carries a parent's
    peak across fork and exec into the child's ``ru_maxrss``, so a child of a large process would
    report that process's footprint and hide any measurement below it. Elsewhere, ``ru_maxrss``
    (bytes on macOS, KiB on the BSDs).
    """
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # "VmHWM:   123456 kB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024

"""Time each stage of `make test`, in one checkout or side by side in several.

    python -m benchmarks test_time                 # this checkout
    python -m benchmarks test_time OLD_DIR NEW_DIR # e.g. two clones of different commits, one after the other

The stages are read from each checkout's own Makefile (``make -n test``), so an old checkout is timed with
the commands it had. A checkout whose ``.venv`` is missing or stale first has its install timed as the stage
"install". A
machine's speed swings between days; the ratio between checkouts measured in one run is what carries over.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from . import print_table

ROOT = Path(__file__).resolve().parent.parent
STAMP = ".venv/.installed"


def stage_commands(checkout: Path) -> list[str]:
    """The shell commands ``make test`` would run in ``checkout`` (its install already done)."""
    listing = subprocess.run(["make", "-n", "test"], cwd=checkout, capture_output=True, text=True, check=True)
    return [command for command in listing.stdout.replace("\\\n", " ").splitlines() if command.strip()]


def stage_name(command: str) -> str:
    """A short label: the program and its first argument (``pytest --maintainer``, ``ruff format``)."""
    match = re.search(r"\.venv/bin/(\S+)\s+(\S+)", command)
    return f"{match.group(1)} {match.group(2)}" if match else command.split()[0]


def time_checkout(checkout: Path) -> dict[str, float]:
    """Seconds per stage; a stage that fails is reported and ends the checkout's run."""
    timings: dict[str, float] = {}
    installed = subprocess.run(["make", "-q", STAMP], cwd=checkout, capture_output=True).returncode == 0
    if not installed and not _timed(checkout, "install", f"make {STAMP}", timings):
        return timings
    for command in stage_commands(checkout):  # read once installed: until then `make -n` lists the install
        if not _timed(checkout, stage_name(command), command, timings):
            break
    return timings


def _timed(checkout: Path, name: str, command: str, timings: dict[str, float]) -> bool:
    print(f"[{checkout.name}] {name} …", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(["bash", "-c", command], cwd=checkout, capture_output=True, text=True)
    timings[name] = time.perf_counter() - start
    if done.returncode:
        print(f"[{checkout.name}] {name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> None:
    """Time ``make test`` in each checkout of ``argv`` (default: this one) and print the stages side by side."""
    checkouts = [Path(p).resolve() for p in argv or []] or [ROOT]
    results = [time_checkout(checkout) for checkout in checkouts]
    stages = list(dict.fromkeys(name for result in results for name in result))
    header = ["stage", *(f"{c.name} s" for c in checkouts)]
    if len(checkouts) == 2:
        header.append(f"{checkouts[1].name}/{checkouts[0].name}")
    rows = []
    for name in [*stages, "total"]:
        values = [sum(r.values()) if name == "total" else r.get(name) for r in results]
        row = [name, *("—" if v is None else f"{v:.1f}" for v in values)]
        if len(checkouts) == 2:
            row.append(f"{values[1] / values[0]:.2f}×" if None not in values and values[0] else "—")
        rows.append(row)
    print_table("make test, stage by stage (wall seconds)", header, rows)

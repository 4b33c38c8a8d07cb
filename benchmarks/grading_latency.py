"""Wall time of `python -m xmodal_ref.grade <solution notebook> --only ID`, per exercise, warm disk."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from xmodal_ref.grading.authoring import ROOT
from xmodal_ref.grading.registry import EXERCISES

from . import print_table

REPEATS = 3


def wall_time(notebook: str, exercise_id: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "xmodal_ref.grade", f"solutions/{notebook}", "--only", exercise_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{exercise_id}: {result.stdout}{result.stderr}")
    return elapsed


def main() -> None:
    wall_time("03_contrastive.ipynb", "contrastive.clip_loss")  # warm the disk cache
    rows = []
    for exercise in EXERCISES.values():
        times = [wall_time(exercise.notebook, exercise.id) for _ in range(REPEATS)]
        rows.append((exercise.id, f"{statistics.median(times):.2f}", f"{max(times):.2f}"))
    print_table(
        f"Grading one exercise from the CLI (wall seconds, {REPEATS} runs; target ≤ 3 s)",
        ("exercise", "median", "max"),
        rows,
    )

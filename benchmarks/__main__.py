"""Run every benchmark: `python -m benchmarks [grading|losses|mini_clip|sentiment ...]`."""

from __future__ import annotations

import sys

from . import grading_latency, losses, mini_clip, sentiment

BENCHMARKS = {
    "grading": grading_latency.main,
    "losses": losses.main,
    "mini_clip": mini_clip.main,
    "sentiment": sentiment.main,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHMARKS:
        BENCHMARKS[name]()

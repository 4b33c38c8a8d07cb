"""Run every benchmark, or the named ones: `python -m benchmarks [NAME ...]`, NAME a key of BENCHMARKS."""

from __future__ import annotations

import sys

from . import (
    adversarial_alignment,
    bank_figures,
    cgan,
    cross_attention,
    fusion,
    grading_latency,
    losses,
    mini_clip,
    sentiment,
)

BENCHMARKS = {
    "adversarial": adversarial_alignment.main,
    "bank_figures": bank_figures.main,
    "cgan": cgan.main,
    "cross_attention": cross_attention.main,
    "fusion": fusion.main,
    "grading": grading_latency.main,
    "losses": losses.main,
    "mini_clip": mini_clip.main,
    "sentiment": sentiment.main,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHMARKS:
        BENCHMARKS[name]()

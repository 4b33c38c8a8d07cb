"""Run every benchmark, or the named ones: `python -m benchmarks [NAME ...]`, NAME a key of BENCHMARKS.

`python -m benchmarks test_time [CHECKOUT ...]` times the stages of `make test` (in this checkout, or side by
side in several); it runs the whole test suite, so `make bench` leaves it out.
"""

from __future__ import annotations

import sys

from . import (
    adversarial_alignment,
    bank_figures,
    captioning,
    cgan,
    cross_attention,
    diffusion,
    fusion,
    grading_latency,
    imbalance,
    losses,
    mini_clip,
    mllm,
    scaling,
    sentiment,
    test_time,
    video,
)

BENCHMARKS = {
    "adversarial": adversarial_alignment.main,
    "bank_figures": bank_figures.main,
    "captioning": captioning.main,
    "cgan": cgan.main,
    "cross_attention": cross_attention.main,
    "diffusion": diffusion.main,
    "fusion": fusion.main,
    "grading": grading_latency.main,
    "imbalance": imbalance.main,
    "losses": losses.main,
    "mini_clip": mini_clip.main,
    "mllm": mllm.main,
    "scaling": scaling.main,
    "sentiment": sentiment.main,
    "video": video.main,
}

if __name__ == "__main__":
    if sys.argv[1:2] == ["test_time"]:
        test_time.main(sys.argv[2:])
    else:
        for name in sys.argv[1:] or BENCHMARKS:
            BENCHMARKS[name]()

"""Chapter 10 recipes: two gloo ranks against one process on the full batch (float32 and float64), and the
peak memory of the full and the chunked CLIP loss as N grows. Each part is timed."""

from __future__ import annotations

import time

import torch

from xmodal_ref.scaling.equivalence import run_equivalence
from xmodal_ref.scaling.memory_wall import run_memory_wall

from . import print_table

TARGETS = {"(local, grad)": "< 1e-5", "(global, grad)": "< 1e-5", "(local, no-grad)": "> 1e-2"}


def main() -> None:
    runs = {}
    for dtype in (torch.float32, torch.float64):
        began = time.perf_counter()
        runs[dtype] = run_equivalence(dtype=dtype)
        runs[dtype]["wall"] = time.perf_counter() - began
    single, double = runs[torch.float32], runs[torch.float64]
    rows = [
        (
            name,
            f"{result['max_delta']:.2g}",
            f"{double['configs'][name]['max_delta']:.2g}",
            TARGETS.get(name, ""),
            f"{double['configs'][name]['encoder_delta']:.2g}",
            f"{double['configs'][name]['encoder_delta_over_w']:.2g}",
            f"{double['configs'][name]['scale_ratio']:.3f}",
        )
        for name, result in single["configs"].items()
    ]
    print_table(
        f"Recipe A · two ranks are one big batch: {single['world_size']} gloo ranks × b = 64 against one process on "
        f"the batch of 128, {single['steps']} SGD steps; max|θ_ranks − θ_single| after the last step (float32, "
        "float64); at step 0 (float64), after averaging over the ranks: the encoders' max|g − g_full| and "
        "max|g − g_full/W|, and the logit scale's gradient over the full one. Seconds: "
        f"float32 {single['wall']:.2f} (ranks {single['rank_seconds']:.2f}), float64 {double['wall']:.2f}",
        ("configuration", "max|Δθ| f32", "max|Δθ| f64", "target", "g − full", "g − full/W", "scale ratio"),
        rows,
    )

    began = time.perf_counter()
    wall = run_memory_wall(progress=False)
    seconds = time.perf_counter() - began
    rows = [
        (n, f"{full:.1f}", f"{chunked:.1f}", f"{chunked / full:.3f}")
        for n, full, chunked in zip(wall["sizes"], wall["full_mib"], wall["chunked_mib"], strict=True)
    ]
    rows.append(("slope", f"{wall['slopes']['full']:.2f}", f"{wall['slopes']['chunked']:.2f}", ""))
    print_table(
        f"Recipe B · the N² wall: peak live memory of forward + backward (PeakMemory), D = {wall['dim']}, chunk "
        f"{wall['chunk_size']}, one thread (targets: slopes in [1.9, 2.1] and [0.9, 1.1], ratio < 0.15 at "
        f"N = {wall['sizes'][-1]}). Seconds: {seconds:.1f} in all (full loss {wall['full_seconds']:.1f}, chunked "
        f"{wall['chunked_seconds']:.1f}, warm-up the rest)",
        ("N", "full MiB", "chunked MiB", "ratio"),
        rows,
    )

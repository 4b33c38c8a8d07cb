"""Chapter 10 recipe B: the N² wall. Peak memory of the CLIP loss, full against chunked, as the batch grows.

For N = 1024, 2048, 4096 and 8192 unit-norm pairs of dimension D = 32 (random, seeded) and a logit scale 1/0.07
that requires grad, ``PeakMemory`` (``xmodal_ref.scaling.memory``) records the peak of the live bytes that the
loss's forward and ``backward()`` create together (the inputs made before do not count; the gradients do). The full
loss is chapter 03's ``clip_loss``: its logits, two log-softmaxes and a gradient are each N × N, so the peak is
≈ 4·N²·4 bytes (16.3 MiB at N = 1024, 1026 MiB at 8192), a slope of 2 on log–log axes. The chunked loss
(``chunked_clip_loss``, blocks of 512 rows) holds O(chunk·N) at a time: a slope of 1, ≈ 10 % of the full loss at
N = 8192. Everything runs on one thread; the first call of a full loss pays a ~2 s warm-up, so both losses run
once on N = 512 first, unmeasured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from xmodal_ref.common.device import one_thread
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.contrastive.reference import clip_loss

from .memory import peak_bytes
from .reference import chunked_clip_loss

FullLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # clip_loss(image, text, scale)
ChunkedLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]  # (…, chunk_size)

SIZES: tuple[int, ...] = (1024, 2048, 4096, 8192)
WARMUP_SIZE = 512
DIM = 32
CHUNK_SIZE = 512
MIB = 2**20


def unit_pairs(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (n, dim), text (n, dim), logit_scale 1/0.07): random unit rows and a 0-dim scale, all leaves that
    require grad, drawn from a generator seeded ``seed`` (the global RNG untouched)."""
    g = torch.Generator().manual_seed(seed)
    image, text = (F.normalize(torch.randn(n, dim, generator=g), dim=-1).requires_grad_() for _ in range(2))
    return image, text, torch.tensor(1 / 0.07, requires_grad=True)


def loss_peak_bytes(loss: Callable[..., torch.Tensor], n: int, dim: int = DIM, seed: int = 0) -> int:
    """Peak live bytes that ``loss(image, text, logit_scale).backward()`` creates on ``unit_pairs(n, dim, seed)``."""
    image, text, scale = unit_pairs(n, dim, seed)
    return peak_bytes(lambda: loss(image, text, scale).backward())


def log_log_slope(sizes: Sequence[int], values: Sequence[float]) -> float:
    """The least-squares slope of log(values) against log(sizes): the exponent k of values ∝ sizes^k."""
    return float(np.polyfit(np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(values, dtype=float)), 1)[0])


@memoised
def run_memory_wall(
    loss_fn: FullLoss | None = None,
    chunked_fn: ChunkedLoss | None = None,
    *,
    sizes: Sequence[int] = SIZES,
    dim: int = DIM,
    chunk_size: int = CHUNK_SIZE,
    warmup_size: int = WARMUP_SIZE,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Peak memory of forward + backward of the full and the chunked CLIP loss for each N in ``sizes``.

    ``loss_fn``: ``clip_loss``'s contract (None: chapter 03's reference); ``chunked_fn``: ``chunked_clip_loss``'s,
    called as ``chunked_fn(image, text, logit_scale, chunk_size)`` (None: the reference). Both first run once on
    ``warmup_size`` pairs, unmeasured; then each N is measured on ``unit_pairs(N, dim, seed)``, on one thread.

    Returns {"sizes", "full_mib", "chunked_mib" (per size), "ratio" (chunked / full at the largest N), "slopes"
    ({"full", "chunked"}: log–log least-squares slopes over ``sizes``), "chunk_size", "dim", "full_seconds",
    "chunked_seconds" (the measured calls of each loss), "seconds" (the whole call, warm-up included)}.
    """
    start = time.perf_counter()
    losses = {
        "full": clip_loss if loss_fn is None else loss_fn,
        "chunked": lambda image, text, scale: (chunked_clip_loss if chunked_fn is None else chunked_fn)(
            image, text, scale, chunk_size
        ),
    }
    mib: dict[str, list[float]] = {name: [] for name in losses}
    seconds = dict.fromkeys(losses, 0.0)
    with one_thread():
        for loss in losses.values():
            loss_peak_bytes(loss, warmup_size, dim, seed)
        for n in tqdm(sizes, disable=not progress, desc="peak memory (per N)"):
            for name, loss in losses.items():
                began = time.perf_counter()
                mib[name].append(loss_peak_bytes(loss, n, dim, seed) / MIB)
                seconds[name] += time.perf_counter() - began
    return {
        "sizes": list(sizes),
        "full_mib": mib["full"],
        "chunked_mib": mib["chunked"],
        "ratio": mib["chunked"][-1] / mib["full"][-1],
        "slopes": {name: log_log_slope(sizes, values) for name, values in mib.items()},
        "chunk_size": chunk_size,
        "dim": dim,
        "full_seconds": seconds["full"],
        "chunked_seconds": seconds["chunked"],
        "seconds": time.perf_counter() - start,
    }


def _size_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def plot_memory_wall(result: dict) -> Figure:
    """Peak memory against N on log–log axes (base 2), the full and the chunked loss, slopes in the legend.

    A dotted line marks one float32 N × N matrix, for scale; an arrow gives the chunked/full ratio at the largest N.
    """
    sizes = result["sizes"]
    fig, ax = closed_subplots(figsize=(6.4, 4.4))
    curves = (
        ("full", "full clip_loss", "o-", "tab:red"),
        ("chunked", f"chunked, {result['chunk_size']} rows per block", "s-", "tab:blue"),
    )
    for key, label, style, colour in curves:
        slope = result["slopes"][key]
        ax.plot(sizes, result[f"{key}_mib"], style, color=colour, linewidth=2, label=f"{label} (slope {slope:.2f})")
    one_matrix = [n * n * 4 / MIB for n in sizes]
    ax.plot(sizes, one_matrix, ":", color="grey", label="one float32 N×N matrix")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(sizes, [_size_label(n) for n in sizes])
    ax.minorticks_off()
    top = max(result["full_mib"])
    ax.set_yticks(
        [2.0**k for k in range(math.floor(math.log2(min(result["chunked_mib"]))), math.ceil(math.log2(top)) + 1, 2)]
    )
    ax.yaxis.set_major_formatter(lambda value, _: f"{value:g}")
    ax.annotate(
        f"chunked / full = {result['ratio']:.3f}",
        xy=(sizes[-1], result["chunked_mib"][-1]),
        xytext=(0.97, 0.12),
        textcoords="axes fraction",
        ha="right",
        color="tab:blue",
        arrowprops={"arrowstyle": "->", "color": "tab:blue"},
    )
    ax.set(
        xlabel="batch size N (pairs)",
        ylabel="peak live memory, forward + backward (MiB)",
        title=f"The N² wall: CLIP loss memory (D = {result['dim']})",
    )
    ax.legend(loc="upper left", fontsize=9)
    return fig

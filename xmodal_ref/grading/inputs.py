"""Seeded inputs that the chapters' checks share."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_rows(n: int, d: int, seed: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, d) Gaussian rows with varied norms, seeded."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 3 + 0.2
    return (torch.randn(n, d, generator=generator, dtype=torch.float64) * scales).to(dtype)


def unit_rows(n: int, d: int, seed: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, d) rows of unit L2 norm, seeded."""
    return F.normalize(random_rows(n, d, seed, dtype=torch.float64), dim=-1).to(dtype)


#: The likely cause when a result turns NaN or inf on :func:`poison_padding` inputs.
PADDING_LEAK = (
    "the padding leaks into the result: here it holds NaN, +inf and −inf, and multiplying by a 0/1 mask lets"
    " them through (0 · NaN = NaN, 0 · inf = NaN); select the real entries with `masked_fill` or `torch.where`"
)


def poison_padding(x: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` whose padded entries hold NaN, +inf and −inf in turn.

    ``padded`` is a bool tensor broadcastable to ``x`` (True = padding). A contract that says padding
    never affects the result, "whatever it holds", is checked on such inputs.
    """
    padded = padded.expand_as(x)
    garbage = torch.tensor([math.nan, math.inf, -math.inf], dtype=x.dtype)
    poisoned = x.detach().clone()
    poisoned[padded] = garbage.repeat(int(padded.sum()) // 3 + 1)[: int(padded.sum())]
    return poisoned.requires_grad_(x.requires_grad)

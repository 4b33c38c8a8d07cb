"""One module of checks per chapter: ``check_<name>(learner, reference)`` for each exercise."""

from __future__ import annotations

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

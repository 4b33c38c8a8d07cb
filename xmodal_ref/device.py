"""Device and seeding helpers shared by every chapter's demos and training recipes."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def default_device() -> torch.device:
    """CUDA when present, otherwise the CPU. Override with ``XMODAL_DEVICE=cpu``."""
    requested = os.environ.get("XMODAL_DEVICE")
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)

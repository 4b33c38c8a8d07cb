"""Device and seeding helpers shared by every chapter's demos and training recipes."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, then restore the thread count.

    The recipes' models are too small to gain from intra-op parallelism, and its threads stall
    when another process holds a core: on 2 cores the sentiment recipe took 30 s on one thread and
    32 s on two when the machine was otherwise idle, but over 4× longer on two while another
    process was busy. Results also no longer depend on the machine's core count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

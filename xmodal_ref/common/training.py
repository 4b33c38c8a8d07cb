"""The training loop the shapes recipes share: AdamW with a one-cycle schedule over shuffled mini-batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm


def train_one_cycle(
    parameters: Iterable[nn.Parameter],
    n_items: int,
    loss_of_batch: Callable[[torch.Tensor, float], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    max_lr: float = 3e-3,
    description: str = "training",
    progress: bool = True,
) -> list[float]:
    """Minimise ``loss_of_batch(batch, done)`` for ``epochs`` shuffled passes; return every step's loss.

    Each epoch draws one permutation of range(``n_items``) from ``generator`` and cuts it into
    ⌊n_items / batch_size⌋ batches of indices, (B,) int64 on the CPU; the ragged last batch is
    dropped. ``done`` is the fraction of all steps taken before this one, step / total steps, in
    [0, 1): what a schedule such as a loss weight's ramp reads. The optimiser is AdamW (weight decay 1e-4) under
    ``OneCycleLR`` (warm-up, then cosine decay to near zero), which sets the learning rate at every
    step. ``loss_of_batch`` may consume ``generator`` too: its draws come after the epoch's permutation.
    """
    steps_per_epoch = n_items // batch_size
    total_steps = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(parameters, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)
    losses: list[float] = []
    with tqdm(total=total_steps, disable=not progress, desc=description) as bar:
        for epoch in range(epochs):
            order = torch.randperm(n_items, generator=generator)  # (n_items,)
            for step in range(steps_per_epoch):
                batch = order[step * batch_size : (step + 1) * batch_size]  # (B,)
                loss = loss_of_batch(batch, (epoch * steps_per_epoch + step) / total_steps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
                bar.update()
    return losses

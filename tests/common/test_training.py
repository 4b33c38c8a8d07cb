"""The shared one-cycle training loop: batching, the fraction of training done, the optimisation itself."""

from __future__ import annotations

import torch
from torch import nn

from xmodal_ref.common.training import train_one_cycle


def test_each_epoch_is_one_permutation_cut_into_full_batches() -> None:
    parameter = nn.Parameter(torch.zeros(()))
    seen: list[tuple[torch.Tensor, float]] = []

    def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
        seen.append((batch.clone(), done))
        return parameter**2

    losses = train_one_cycle(
        [parameter],
        10,
        loss_of_batch,
        epochs=2,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert [done for _, done in seen] == [0.0, 0.25, 0.5, 0.75]  # ⌊10 / 4⌋ = 2 steps per epoch, 4 in all
    assert len(losses) == 4
    assert all(batch.shape == (4,) and batch.dtype == torch.int64 for batch, _ in seen)
    for epoch in range(2):
        indices = torch.cat([seen[2 * epoch][0], seen[2 * epoch + 1][0]])
        assert len(set(indices.tolist())) == 8 and indices.max() < 10  # no repeats within an epoch
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:4]
    assert torch.equal(seen[0][0], expected)  # the epoch's permutation is the generator's first draw


def test_it_fits_a_least_squares_problem_and_is_deterministic() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.01 * torch.randn(256, generator=g)

    def fit() -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)

        def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
            return (model(x[batch]).squeeze(-1) - y[batch]).pow(2).mean()

        losses = train_one_cycle(
            model.parameters(),
            len(x),
            loss_of_batch,
            epochs=30,
            batch_size=32,
            generator=torch.Generator().manual_seed(1),
            max_lr=0.05,
            progress=False,
        )
        return losses, model.weight.detach().squeeze(0)

    losses, weight = fit()
    assert losses[-1] < 0.01 * losses[0]
    assert torch.allclose(weight, torch.tensor([1.0, -2.0, 0.5]), atol=0.05)
    assert fit()[0] == losses

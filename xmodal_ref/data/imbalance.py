"""Seeded two-modality classification data with a dominant, partly missing modality and a slow one (chapter 06).

Eight classes (``N_CLASSES``). Each modality hides an ``SIGNAL_DIM`` = 8-d class signal in a ``DIM`` = 64-d
input: before mixing, coordinates 0–7 hold the class mean plus Gaussian signal noise and coordinates 8–63 are
nuisance, Gaussian with standard deviation ``NUISANCE_STD`` = 3; a fixed random rotation then mixes all 64
coordinates, so an encoder must *learn* where the signal lies. The class means are the vertices of a regular
simplex centred at the origin (every two classes equally far apart), scaled to the modality's norm. The two
modalities draw their noise independently, so given the class each adds information the other lacks.

* A ("audio", strong and dominant): class means of norm ``A_MEAN_NORM`` = 4, signal noise ``A_SIGNAL_STD`` = 1,
  input scale 1, but present on only ``A_PRESENT`` = 70 % of the samples (exactly round(0.7 · n), at random
  positions; ``a_present``). A missing A is what a dead sensor records: no class signal (its coordinates 0–7
  are zero) but the nuisance as usual, so it looks like a present A (its mean squared norm is only 4.5 %
  lower) and a model cannot tell the two apart without having learnt where A's signal lies.
* V ("visual", weak, slow but complementary): class means of norm ``V_MEAN_NORM`` = 3, signal noise
  ``V_SIGNAL_STD`` = 1.5, present on every sample, the whole input multiplied by ``V_SCALE`` = 0.1: plain SGD
  moves a first-layer weight in proportion to its input, and a weight's effect on the features is
  proportional to it again, so V's encoder learns ≈ 100× more slowly than it would at scale 1.

The "world" (``ImbalanceWorld``: class means and rotations) is shared by every split: the means are the
simplex, the rotations come from ``world_seed`` (default ``WORLD_SEED``). The samples (labels, which A are
missing, the noise) come from the sample seed. Labels are balanced (n / 8 of each class when 8 divides n).
Everything is drawn from ``torch.Generator``s: the global RNG is untouched, and a split of thousands of
samples is built in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

N_CLASSES = 8
DIM = 64
SIGNAL_DIM = 8
NUISANCE_STD = 3.0
A_MEAN_NORM = 4.0
V_MEAN_NORM = 3.0
A_SIGNAL_STD = 1.0
V_SIGNAL_STD = 1.5
A_PRESENT = 0.7
V_SCALE = 0.1
WORLD_SEED = 0


@dataclass(frozen=True)
class ImbalanceWorld:
    """What every split shares: each modality's class means and its fixed rotation."""

    means_a: torch.Tensor  # (N_CLASSES, SIGNAL_DIM) float32: simplex_means(A_MEAN_NORM)
    means_v: torch.Tensor  # (N_CLASSES, SIGNAL_DIM) float32: simplex_means(V_MEAN_NORM)
    rotation_a: torch.Tensor  # (DIM, DIM) float32, orthogonal: input = latent @ rotation
    rotation_v: torch.Tensor  # (DIM, DIM) float32, orthogonal


@dataclass(frozen=True)
class TwoModalitySet:
    """N samples; row i of every tensor belongs to sample i."""

    a: torch.Tensor  # (N, DIM) float32; where A is missing, nuisance only (no class signal)
    v: torch.Tensor  # (N, DIM) float32, scaled by V_SCALE
    labels: torch.Tensor  # (N,) int64 in [0, N_CLASSES)
    a_present: torch.Tensor  # (N,) bool: True where A carries its class signal

    def __len__(self) -> int:
        return self.labels.shape[0]


def simplex_means(norm: float) -> torch.Tensor:
    """(N_CLASSES, SIGNAL_DIM): the centred one-hot vectors e_c − 1/N_CLASSES, scaled to ``norm``: the vertices
    of a regular simplex centred at the origin, so every two class means are equally far apart.
    """
    vertices = torch.eye(N_CLASSES, SIGNAL_DIM) - 1.0 / N_CLASSES  # (N_CLASSES, SIGNAL_DIM)
    return norm * vertices / vertices.norm(dim=1, keepdim=True)


def _rotation(g: torch.Generator) -> torch.Tensor:
    """(DIM, DIM): a Haar-random orthogonal matrix (QR of a Gaussian matrix, signs fixed by R's diagonal)."""
    q, r = torch.linalg.qr(torch.randn(DIM, DIM, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def make_world(world_seed: int = WORLD_SEED) -> ImbalanceWorld:
    """Both modalities' class means and their rotations, drawn from a generator seeded with ``world_seed`` only."""
    g = torch.Generator().manual_seed(world_seed)
    return ImbalanceWorld(
        means_a=simplex_means(A_MEAN_NORM),
        means_v=simplex_means(V_MEAN_NORM),
        rotation_a=_rotation(g),
        rotation_v=_rotation(g),
    )


def _modality(
    labels: torch.Tensor,
    means: torch.Tensor,
    signal_std: float,
    rotation: torch.Tensor,
    present: torch.Tensor,
    g: torch.Generator,
) -> torch.Tensor:
    """(n, DIM): [class mean + N(0, signal_std²) | N(0, NUISANCE_STD²) nuisance] @ rotation, the signal part
    zeroed where ``present`` (n,) is False.
    """
    n = labels.shape[0]
    signal = means[labels] + signal_std * torch.randn(n, SIGNAL_DIM, generator=g)  # (n, SIGNAL_DIM)
    signal = torch.where(present[:, None], signal, 0.0)
    nuisance = NUISANCE_STD * torch.randn(n, DIM - SIGNAL_DIM, generator=g)  # (n, DIM - SIGNAL_DIM)
    return torch.cat([signal, nuisance], dim=1) @ rotation


def make_two_modality_set(n: int, seed: int, world: ImbalanceWorld | None = None) -> TwoModalitySet:
    """Build ``n`` seeded samples of ``world`` (None: ``make_world()``); only a generator seeded with ``seed``
    draws the labels, which A are missing and the noise.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    world = make_world() if world is None else world
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % N_CLASSES)[torch.randperm(n, generator=g)]  # (n,) balanced
    a_present = torch.zeros(n, dtype=torch.bool)
    a_present[torch.randperm(n, generator=g)[: round(A_PRESENT * n)]] = True
    a = _modality(labels, world.means_a, A_SIGNAL_STD, world.rotation_a, a_present, g)  # (n, DIM)
    everywhere = torch.ones(n, dtype=torch.bool)
    v = V_SCALE * _modality(labels, world.means_v, V_SIGNAL_STD, world.rotation_v, everywhere, g)  # (n, DIM)
    return TwoModalitySet(a=a, v=v, labels=labels, a_present=a_present)


def imbalance_splits(
    seed: int = 0, n_train: int = 3000, n_test: int = 2000, world_seed: int = WORLD_SEED
) -> dict[str, TwoModalitySet]:
    """ "train" and "test" samples of one world, drawn with seeds 2·seed and 2·seed + 1."""
    world = make_world(world_seed)
    return {
        "train": make_two_modality_set(n_train, 2 * seed, world),
        "test": make_two_modality_set(n_test, 2 * seed + 1, world),
    }

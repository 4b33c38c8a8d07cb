"""Seeded synthetic pairs of two modalities that share an 8-d latent: the contrastive data of chapter 10.

Each pair i draws a latent z_i ~ N(0, I) of ``LATENT_DIM`` = 8 dimensions. Its "image" is z_i mapped linearly into
``DIM`` = 32 dimensions plus Gaussian noise, and so is its "text", through a different map and independent noise:

    image_i = z_i @ image_map + NOISE_STD · ε_i,      text_i = z_i @ text_map + NOISE_STD · ε'_i

The two maps (``LatentMaps``, each (8, 32) with N(0, 1/8) entries, so a coordinate's signal has variance ≈ 1)
are the "world" every split shares; they come from ``world_seed`` (default ``WORLD_SEED``). The latents and the
noise come from the sample seed. Only the latent links an image to its text, so a dual encoder learns to match
pairs by recovering it from both sides. Everything is drawn from ``torch.Generator``s: the global RNG is
untouched, and thousands of pairs take a millisecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LATENT_DIM = 8
DIM = 32
NOISE_STD = 0.5
WORLD_SEED = 0


@dataclass(frozen=True)
class LatentMaps:
    """The linear maps from the shared latent to each modality: input = latent @ map."""

    image_map: torch.Tensor  # (LATENT_DIM, DIM) float32
    text_map: torch.Tensor  # (LATENT_DIM, DIM) float32


@dataclass(frozen=True)
class LatentPairs:
    """N pairs; row i of every tensor belongs to pair i."""

    images: torch.Tensor  # (N, DIM) float32
    texts: torch.Tensor  # (N, DIM) float32
    latent: torch.Tensor  # (N, LATENT_DIM) float32: what the two rows share

    def __len__(self) -> int:
        return self.latent.shape[0]


def latent_maps(world_seed: int = WORLD_SEED) -> LatentMaps:
    """The two (LATENT_DIM, DIM) maps of the world ``world_seed``: entries N(0, 1/LATENT_DIM), drawn image first."""
    g = torch.Generator().manual_seed(world_seed)
    image_map, text_map = torch.randn(2, LATENT_DIM, DIM, generator=g) / math.sqrt(LATENT_DIM)
    return LatentMaps(image_map, text_map)


def make_latent_pairs(n: int, seed: int, *, noise_std: float = NOISE_STD, world_seed: int = WORLD_SEED) -> LatentPairs:
    """``n`` pairs sharing a latent (see the module docstring), deterministic under ``seed`` and ``world_seed``.

    The sample generator draws the latents (n, LATENT_DIM), then the image noise (n, DIM), then the text noise.
    """
    maps = latent_maps(world_seed)
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, LATENT_DIM, generator=g)  # (N, LATENT_DIM)
    images = latent @ maps.image_map + noise_std * torch.randn(n, DIM, generator=g)  # (N, DIM)
    texts = latent @ maps.text_map + noise_std * torch.randn(n, DIM, generator=g)  # (N, DIM)
    return LatentPairs(images, texts, latent)

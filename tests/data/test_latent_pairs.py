"""The latent-pair data of chapter 10: sizes, seeding, the shared world, and that the latent is what links a pair."""

from __future__ import annotations

import dataclasses

import torch

from xmodal_ref.data import latent_pairs as L


def r_squared(x: torch.Tensor, target: torch.Tensor) -> float:
    """The share of target's variance that an affine least-squares fit from x explains."""
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)  # (N, DIM + 1)
    target = target.double()
    residual = target - design @ torch.linalg.lstsq(design, target).solution
    return 1 - (residual.var(dim=0).sum() / target.var(dim=0).sum()).item()


def test_pairs_have_the_documented_sizes_and_dtypes() -> None:
    data = L.make_latent_pairs(100, seed=0)
    assert len(data) == 100
    assert data.images.shape == data.texts.shape == (100, L.DIM) == (100, 32)
    assert data.latent.shape == (100, L.LATENT_DIM) == (100, 8)
    for x in (data.images, data.texts, data.latent):
        assert x.dtype == torch.float32 and x.isfinite().all()


def test_pairs_are_deterministic_under_their_seed_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, second, other = (L.make_latent_pairs(64, seed) for seed in (5, 5, 6))
    assert torch.equal(torch.random.get_rng_state(), state)
    for field in dataclasses.fields(first):
        assert torch.equal(getattr(first, field.name), getattr(second, field.name))
        assert not torch.equal(getattr(first, field.name), getattr(other, field.name))


def test_every_seed_shares_the_world_maps_and_the_noise_is_as_documented() -> None:
    maps = L.latent_maps()
    assert maps.image_map.shape == maps.text_map.shape == (L.LATENT_DIM, L.DIM)
    assert not torch.equal(maps.image_map, maps.text_map)
    assert not torch.equal(L.latent_maps(1).image_map, maps.image_map)
    for seed in (0, 3):
        data = L.make_latent_pairs(4000, seed)
        image_noise = data.images - data.latent @ maps.image_map  # (N, DIM)
        text_noise = data.texts - data.latent @ maps.text_map
        for noise in (image_noise, text_noise):
            assert abs(noise.std().item() - L.NOISE_STD) < 0.01
        # the two modalities' noises are independent: their cross-correlations are only sampling noise
        correlation = (image_noise - image_noise.mean(0)).T @ (text_noise - text_noise.mean(0)) / (4000 * 0.25)
        assert correlation.abs().max().item() < 0.08
    shifted = L.make_latent_pairs(50, 0, world_seed=1)
    assert torch.equal(shifted.latent, L.make_latent_pairs(50, 0).latent)


def test_the_noise_level_is_a_parameter() -> None:
    clean = L.make_latent_pairs(20, seed=2, noise_std=0.0)
    maps = L.latent_maps()
    torch.testing.assert_close(clean.images, clean.latent @ maps.image_map)
    torch.testing.assert_close(clean.texts, clean.latent @ maps.text_map)


def test_each_modality_recovers_most_of_the_shared_latent_and_only_the_latent_links_a_pair() -> None:
    data = L.make_latent_pairs(4000, seed=1)
    for x in (data.images, data.texts):
        assert r_squared(x, data.latent) > 0.85  # measured 0.91 (images) and 0.93 (texts)
    # a linear map from images to texts explains much of the texts; shuffled pairs explain nothing
    assert r_squared(data.images, data.texts) > 0.7  # measured 0.75
    shuffled = data.texts[torch.randperm(4000, generator=torch.Generator().manual_seed(0))]
    assert r_squared(data.images, shuffled) < 0.02

"""The synthetic two-modality set of chapter 06: sizes, seeding, the simplex world, missing A, and the statistics."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from xmodal_ref.data import imbalance as I

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def splits() -> dict[str, I.TwoModalitySet]:
    return I.imbalance_splits(seed=0)


def latent(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Undo the world's rotation (input = latent @ rotation): (N, DIM) with the signal in columns 0–7."""
    return x.double() @ rotation.double().T


def test_splits_have_the_contract_sizes_shapes_and_dtypes(splits: dict[str, I.TwoModalitySet]) -> None:
    for split, n in (("train", 3000), ("test", 2000)):
        data = splits[split]
        assert len(data) == n
        for x in (data.a, data.v):
            assert x.shape == (n, 64) and x.dtype == torch.float32 and x.isfinite().all()
        assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
        assert data.a_present.shape == (n,) and data.a_present.dtype == torch.bool
        assert data.a_present.sum().item() == round(0.7 * n)


def test_labels_are_balanced(splits: dict[str, I.TwoModalitySet]) -> None:
    assert torch.bincount(I.make_two_modality_set(800, seed=3).labels).tolist() == [100] * 8
    for data in splits.values():
        counts = torch.bincount(data.labels, minlength=8)
        assert counts.max() - counts.min() <= 1


def test_sets_are_deterministic_under_their_seed_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, second, other = (I.make_two_modality_set(64, seed) for seed in (5, 5, 6))
    assert torch.equal(torch.random.get_rng_state(), state)
    for field in dataclasses.fields(first):
        assert torch.equal(getattr(first, field.name), getattr(second, field.name))
    for name in ("a", "v", "labels", "a_present"):
        assert not torch.equal(getattr(first, name), getattr(other, name))


def test_splits_come_from_seeds_2s_and_2s_plus_1_of_one_world() -> None:
    splits = I.imbalance_splits(seed=1, n_train=24, n_test=16)
    assert torch.equal(splits["train"].a, I.make_two_modality_set(24, seed=2).a)
    assert torch.equal(splits["test"].v, I.make_two_modality_set(16, seed=3).v)
    other_world = I.imbalance_splits(seed=1, n_train=24, n_test=16, world_seed=1)["train"]
    assert torch.equal(other_world.labels, splits["train"].labels)  # the same samples' labels …
    assert not torch.allclose(other_world.a, splits["train"].a)  # … seen through other rotations


def test_the_world_is_a_regular_simplex_behind_random_rotations() -> None:
    world = I.make_world()
    for means, norm in ((world.means_a, 4.0), (world.means_v, 3.0)):
        assert means.shape == (8, 8)
        torch.testing.assert_close(means.norm(dim=1), torch.full((8,), norm))
        torch.testing.assert_close(means.sum(dim=0), torch.zeros(8), atol=1e-5, rtol=0)
        distances = torch.cdist(means, means)[~torch.eye(8, dtype=torch.bool)]  # every pair equally far apart
        torch.testing.assert_close(distances, torch.full_like(distances, norm * (16 / 7) ** 0.5))
    for rotation in (world.rotation_a, world.rotation_v):
        torch.testing.assert_close(rotation @ rotation.T, torch.eye(64), atol=1e-5, rtol=0)
    assert not torch.allclose(world.rotation_a, world.rotation_v, atol=0.1)
    assert torch.equal(I.make_world(0).rotation_a, world.rotation_a)
    assert not torch.allclose(I.make_world(1).rotation_a, world.rotation_a, atol=0.1)


def test_each_modality_hides_its_class_means_among_nuisance(splits: dict[str, I.TwoModalitySet]) -> None:
    data, world = splits["train"], I.make_world()
    present = data.a_present
    for name, z, keep, means, signal_std in (
        ("A", latent(data.a, world.rotation_a), present, world.means_a, 1.0),
        ("V", latent(data.v / 0.1, world.rotation_v), torch.ones_like(present), world.means_v, 1.5),
    ):
        signal, labels = z[keep, :8], data.labels[keep]
        class_means = torch.stack([signal[labels == c].mean(dim=0) for c in range(8)])  # (8, 8)
        torch.testing.assert_close(class_means, means.double(), atol=0.3, rtol=0, msg=name)
        residual = signal - means.double()[labels]
        assert residual.std().item() == pytest.approx(signal_std, rel=0.03), name
        assert z[:, 8:].std().item() == pytest.approx(3.0, rel=0.02), name
        assert z[:, 8:].mean().abs().item() < 0.05, name


def test_a_missing_a_has_no_class_signal_but_the_usual_nuisance(splits: dict[str, I.TwoModalitySet]) -> None:
    data = splits["train"]
    z = latent(data.a, I.make_world().rotation_a)
    missing = ~data.a_present
    torch.testing.assert_close(z[missing, :8], torch.zeros_like(z[missing, :8]), atol=1e-5, rtol=0)
    assert z[missing, 8:].std().item() == pytest.approx(3.0, rel=0.02)
    # Seen from outside, a missing A is about as large as a present one (504 vs 528 expected squared norm).
    ratio = data.a[missing].square().sum(dim=1).mean() / data.a[data.a_present].square().sum(dim=1).mean()
    assert ratio.item() == pytest.approx(504 / 528, rel=0.02)


def test_v_is_the_small_input(splits: dict[str, I.TwoModalitySet]) -> None:
    data = splits["train"]
    assert data.v.std().item() == pytest.approx(0.1 * data.a[data.a_present].std().item(), rel=0.05)


def test_an_empty_set_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        I.make_two_modality_set(0, seed=0)

"""The chapter 04 adversarial alignment recipe: the reversed gradient, the probes, the control run, the lesson."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from xmodal_ref.alignment import adversarial as aa
from xmodal_ref.contrastive.mini_clip import train_mini_clip

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py

EPOCHS = 1  # 64 steps: enough for the GRL to act, a few seconds per run


@pytest.fixture(scope="module")
def runs() -> dict[bool, dict]:
    """One short run of seed 0 with the adversarial term (True) and one without (False)."""
    return {
        adversarial: aa.train_adversarial_alignment(0, adversarial, epochs=EPOCHS, progress=False)
        for adversarial in (True, False)
    }


def test_ganin_lambda_rises_from_zero_towards_one() -> None:
    lambdas = [aa.ganin_lambda(step / 10) for step in range(11)]
    assert lambdas[0] == 0
    assert all(a < b for a, b in itertools.pairwise(lambdas))
    for step, lambd in enumerate(lambdas):  # 2 / (1 + exp(−x)) − 1 = tanh(x / 2)
        assert lambd == pytest.approx(math.tanh(5 * step / 10))
    assert 0.9999 < lambdas[-1] < 1


def test_discriminate_trains_the_discriminator_and_reverses_the_embeddings_gradient() -> None:
    torch.manual_seed(0)
    discriminator = aa.ModalityDiscriminator(embed_dim=8, hidden=16)
    images, texts = torch.randn(5, 8), torch.randn(3, 8)

    def gradients(lambd: float) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        x, y = images.clone().requires_grad_(), texts.clone().requires_grad_()
        logits, labels = aa.discriminate(discriminator, x, y, lambd)
        assert logits.shape == labels.shape == (8,)
        assert labels.tolist() == [1.0] * 5 + [0.0] * 3
        discriminator.zero_grad()
        F.binary_cross_entropy_with_logits(logits, labels).backward()
        return x.grad, y.grad, [p.grad.clone() for p in discriminator.parameters()]

    # Without the GRL in the way, the BCE gradient that the embeddings would get.
    x, y = images.clone().requires_grad_(), texts.clone().requires_grad_()
    plain_logits = discriminator(torch.cat([x, y]))
    F.binary_cross_entropy_with_logits(plain_logits, torch.tensor([1.0] * 5 + [0.0] * 3)).backward()

    x_grad, y_grad, parameter_grads = gradients(0.5)
    torch.testing.assert_close(x_grad, -0.5 * x.grad)
    torch.testing.assert_close(y_grad, -0.5 * y.grad)
    x_grad, y_grad, passive_parameter_grads = gradients(0.0)
    assert not x_grad.any() and not y_grad.any()  # λ = 0: the discriminator only watches
    for reversed_grad, passive_grad in zip(parameter_grads, passive_parameter_grads, strict=True):
        torch.testing.assert_close(reversed_grad, passive_grad)  # the discriminator learns the same either way


def test_accuracy_counts_logits_on_the_labelled_side_of_zero() -> None:
    assert aa.accuracy(torch.tensor([2.0, -1.0, 0.5, -3.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])) == 0.75


def test_probes_find_separable_modalities_and_only_those() -> None:
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    separable = aa.probe_accuracy(lambda: aa.ModalityDiscriminator(8), images, texts + 2.0, steps=100)
    identical = aa.probe_accuracy(lambda: aa.ModalityDiscriminator(8), images, texts, steps=100)
    assert separable > 0.97  # the Bayes-optimal accuracy is Φ(√8) ≈ 0.998
    assert abs(identical - 0.5) < 0.1


def test_result_shapes_and_schedules(runs: dict[bool, dict]) -> None:
    steps = EPOCHS * (8192 // aa.BATCH_SIZE)
    for adversarial, result in runs.items():
        assert result["adversarial"] is adversarial
        for key in ("image_embeddings", "text_embeddings", "initial_image_embeddings", "initial_text_embeddings"):
            assert result[key].shape == (1024, aa.EMBED_DIM) and result[key].device.type == "cpu", key
        assert {name: len(values) for name, values in result["history"].items()} == dict.fromkeys(
            ("clip_loss", "discriminator_loss", "discriminator_accuracy", "lambda"), steps
        )
        for key in ("discriminator_accuracy", "probe_accuracy", "linear_probe_accuracy", "r1_i2t", "r1_t2i"):
            assert 0 <= result[key] <= 1, key
    assert runs[False]["history"]["lambda"] == [0.0] * steps
    assert runs[True]["history"]["lambda"] == [aa.ganin_lambda(step / steps) for step in range(steps)]
    # Both runs start from the same weights, so they differ only by the adversarial term.
    torch.testing.assert_close(runs[True]["initial_image_embeddings"], runs[False]["initial_image_embeddings"])


def test_deterministic_under_the_seed(runs: dict[bool, dict]) -> None:
    again = aa.train_adversarial_alignment(0, True, epochs=EPOCHS, progress=False)
    assert again["history"] == runs[True]["history"]
    torch.testing.assert_close(again["image_embeddings"], runs[True]["image_embeddings"], rtol=0, atol=0)
    for key in ("discriminator_accuracy", "probe_accuracy", "linear_probe_accuracy", "r1_i2t", "r1_t2i"):
        assert again[key] == runs[True][key], key


def test_the_control_run_trains_exactly_the_mini_clip_recipe(runs: dict[bool, dict]) -> None:
    """With λ = 0 the discriminator is passive: the encoders follow train_mini_clip step for step."""
    mini_clip = train_mini_clip(seed=0, epochs=EPOCHS, progress=False)
    torch.testing.assert_close(runs[False]["history"]["clip_loss"], mini_clip["losses"])
    torch.testing.assert_close(runs[False]["image_embeddings"], mini_clip["image_embeddings"])
    torch.testing.assert_close(runs[False]["text_embeddings"], mini_clip["text_embeddings"])


def test_the_adversary_fools_its_discriminator_but_not_a_fresh_probe(runs: dict[bool, dict]) -> None:
    with_grl, without = runs[True], runs[False]
    assert without["discriminator_accuracy"] > 0.55  # the passive discriminator tells the modalities apart
    assert with_grl["discriminator_accuracy"] < without["discriminator_accuracy"]  # the encoders fool it
    assert with_grl["probe_accuracy"] > 0.95  # yet a fresh probe still separates them
    assert with_grl["linear_probe_accuracy"] >= without["linear_probe_accuracy"]
    assert with_grl["modality_gap"] > 0.5 * without["modality_gap"]  # and the gap does not close
    for key in ("r1_i2t", "r1_t2i"):  # retrieval comes from the contrastive loss, not from the adversary
        assert with_grl[key] == pytest.approx(without[key], abs=0.05), key


def test_table_and_plots(runs: dict[bool, dict]) -> None:
    table = aa.format_adversarial_table(runs[True], runs[False])
    lines = table.splitlines()
    assert len(lines) == 9 and all(line.startswith("|") and line.count("|") == 4 for line in lines)
    assert f"{100 * runs[True]['discriminator_accuracy']:.1f} %" in lines[2]
    assert f"{runs[False]['r1_i2t']:.3f}" in table

    figure = aa.plot_modalities(runs[True], runs[False])
    assert isinstance(figure, Figure) and len(figure.axes) == 3
    assert isinstance(aa.plot_discriminator_game(runs[True], runs[False]), Figure)
    with pytest.raises(ValueError, match="seeds"):
        aa.plot_modalities({**runs[True], "seed": 1}, runs[False])

"""The chapter 06 recipe: its model, its training loop's use of OGM-GE, its determinism, and the targets on seed 0."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.imbalance import recipe as R
from xmodal_ref.imbalance.reference import ogm_ge_coefficients, ogm_ge_modulate

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py

STEPS_PER_EPOCH = 3000 // R.BATCH_SIZE


@pytest.fixture(scope="module")
def result() -> dict:
    """The full recipe on seed 0 (≈ 3 s on one thread): trained once for the whole module."""
    return R.train_imbalance_models(0, progress=False)


def test_the_unimodal_logits_are_halves_of_the_fused_head() -> None:
    torch.manual_seed(0)
    model = R.ConcatFusion()
    a, v = torch.randn(5, 64), torch.randn(5, 64)
    features_a, features_v = model.features(a, v)
    assert features_a.shape == features_v.shape == (5, R.FEATURES)
    logits_a, logits_v = model.unimodal_logits(features_a, features_v)
    assert logits_a.shape == logits_v.shape == (5, 8)
    torch.testing.assert_close(logits_a + logits_v, model(a, v))
    # logits_a ignores V entirely: OGM-GE's score of a modality reads that modality's encoder only.
    torch.testing.assert_close(model.unimodal_logits(*model.features(a, torch.zeros_like(v)))[0], logits_a)


def test_the_recipe_is_deterministic_under_its_seed() -> None:
    first, second = (R.train_imbalance_models(1, epochs=1, modulation_epochs=1, progress=False) for _ in range(2))
    for model_id in R.MODELS:
        a, b = first["models"][model_id], second["models"][model_id]
        assert a["losses"] == b["losses"]
        assert a["history"] == b["history"]


def test_without_modulation_ogm_ge_trains_exactly_like_naive() -> None:
    """k = 1 and no noise leave the gradients alone: the two joint runs then coincide step for step."""

    def no_imbalance(logits_a, logits_v, labels, alpha):  # learner-style stand-ins, untyped
        return 1.0, 1.0

    def unchanged(grads, coeff, enhance=True, generator=None):
        return [g * coeff for g in grads]

    result = R.train_imbalance_models(
        2, coefficients=no_imbalance, modulate=unchanged, epochs=1, modulation_epochs=1, progress=False
    )
    naive, ogm_ge = result["models"]["naive"], result["models"]["ogm_ge"]
    assert naive["losses"] == ogm_ge["losses"]
    assert naive["fused_accuracy"] == ogm_ge["fused_accuracy"]
    assert ogm_ge["history"]["k_a"] == ogm_ge["history"]["k_v"] == [1.0]


def test_the_learners_functions_drive_ogm_ge() -> None:
    coefficient_calls: list[tuple[bool, float]] = []
    modulate_calls: list[tuple[int, float, bool, bool]] = []

    def coefficients(logits_a, logits_v, labels, alpha):
        coefficient_calls.append((logits_a.requires_grad or logits_v.requires_grad, alpha))
        return ogm_ge_coefficients(logits_a, logits_v, labels, alpha)

    def modulate(grads, coeff, enhance=True, generator=None):
        modulate_calls.append((len(grads), coeff, enhance, isinstance(generator, torch.Generator)))
        return ogm_ge_modulate(grads, coeff, enhance, generator)

    R.train_imbalance_models(
        3, coefficients=coefficients, modulate=modulate, epochs=2, modulation_epochs=1, progress=False
    )
    # Both joint runs call the coefficients on every batch (naive records what OGM-GE would apply) …
    assert len(coefficient_calls) == 2 * 2 * STEPS_PER_EPOCH
    assert coefficient_calls[0] == (False, R.ALPHA) and len(set(coefficient_calls)) == 1
    # … and only the OGM-GE run modulates, both encoders (4 tensors each), in the modulated epoch only.
    assert len(modulate_calls) == 2 * STEPS_PER_EPOCH
    assert all(n == 4 and enhance and has_generator for n, _, enhance, has_generator in modulate_calls)
    assert any(coeff < 1 for _, coeff, _, _ in modulate_calls)


def test_the_result_reports_every_run(result: dict) -> None:
    assert list(result["models"]) == list(R.MODELS)
    assert (result["seed"], result["epochs"], result["modulation_epochs"]) == (0, R.EPOCHS, R.MODULATION_EPOCHS)
    for model_id, scores in result["models"].items():
        assert scores["name"] == R.MODELS[model_id]
        assert len(scores["losses"]) == R.EPOCHS * STEPS_PER_EPOCH
        history = scores["history"]
        assert len(history["probe_a"]) == len(history["probe_v"]) == R.EPOCHS + 1
        assert (history["probe_a"][-1], history["probe_v"][-1]) == (scores["probe_a"], scores["probe_v"])
        assert len(history["k_a"]) == len(history["k_v"]) == (R.EPOCHS if model_id in R.JOINT else 0)
        assert all(0 <= k <= 1 for k in history["k_a"] + history["k_v"])
        assert scores["seconds"] > 0
    for model_id in R.JOINT:
        scores = result["models"][model_id]
        table = scores["subset_accuracies"]
        assert table.shape == (4,) and table.dtype == torch.float64
        assert table[3].item() == scores["fused_accuracy"]  # A and V present: the intact test set
        assert table[2].item() == scores["accuracy_without_a"]
        assert scores["shapley_a"] + scores["shapley_v"] == pytest.approx((table[3] - table[0]).item(), abs=1e-12)
    v_only = result["models"]["v_only"]
    assert v_only["accuracy_without_a"] == v_only["fused_accuracy"] and v_only["shapley_v"] is None


def test_the_lesson_holds_on_seed_0(result: dict) -> None:
    """Joint training under-trains V; OGM-GE slows A while it dominates, and V's encoder and the fused model gain."""
    naive, ogm_ge, v_only = (result["models"][model_id] for model_id in ("naive", "ogm_ge", "v_only"))
    assert naive["probe_v"] <= v_only["probe_v"] - 0.08
    assert ogm_ge["probe_v"] >= naive["probe_v"] + 0.03
    assert ogm_ge["fused_accuracy"] >= naive["fused_accuracy"] + 0.02
    assert min(naive["fused_accuracy"], ogm_ge["fused_accuracy"]) > v_only["fused_accuracy"]  # A helps
    assert ogm_ge["accuracy_without_a"] >= naive["accuracy_without_a"] + 0.1  # … and so does V, when A is gone
    assert ogm_ge["perceptual_v"] > naive["perceptual_v"] and ogm_ge["shapley_v"] > naive["shapley_v"]
    assert naive["perceptual_a"] > naive["perceptual_v"] and naive["shapley_a"] > naive["shapley_v"]
    assert v_only["probe_a"] < 0.35 < naive["probe_a"]  # an untrained encoder probes poorly
    # A dominates: OGM-GE damps A (k_A < 1) and leaves V alone (k_V ≈ 1) while it modulates.
    modulated = slice(0, R.MODULATION_EPOCHS)
    assert max(ogm_ge["history"]["k_a"][modulated]) < 0.7
    assert min(ogm_ge["history"]["k_v"][modulated]) > 0.85


def test_the_table_and_the_figures(result: dict) -> None:
    table = R.format_imbalance_table({0: result})
    lines = table.splitlines()
    assert len(lines) == 2 + len(R.MODELS) and all(title in lines[0] for _, title in R.METRICS)
    assert lines[3].startswith("| 0 | OGM-GE | ") and f"{result['models']['ogm_ge']['fused_accuracy']:.3f}" in lines[3]
    assert lines[4].count("—") == 4  # V only has no perceptual scores or Shapley values
    dynamics, bars = R.plot_training_dynamics(result), R.plot_imbalance_table({0: result, 1: result})
    assert isinstance(dynamics, Figure) and isinstance(bars, Figure)
    assert len(dynamics.axes) == 3 and len(bars.axes) == 1

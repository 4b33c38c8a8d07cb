"""Chapter 06's diagnosis references against scikit-learn's permutation_importance and RidgeClassifier and captum's
ShapleyValues; their properties; and the checks' verdicts on the mutants."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodal_ref.imbalance.checks import DiagnosisMLP, _diagnosis_batch, _probe_case
from xmodal_ref.imbalance.reference import (
    perceptual_score,
    ridge_probe_accuracy,
    shapley_values,
    subset_accuracies,
)

SKLEARN = "the peers are scikit-learn's permutation_importance and RidgeClassifier (pip install scikit-learn)"
CAPTUM = "the peer is captum's ShapleyValues (pip install --no-deps captum into an environment with torch)"


def permutations(count: int, batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(batch, generator=generator) for _ in range(count)])  # (P, B)


def random_table(players: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(2**players, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 0.5


def banzhaf(values: torch.Tensor) -> torch.Tensor:
    players = values.numel().bit_length() - 1
    return torch.stack(
        [
            sum(values[s | 1 << m] - values[s] for s in range(values.numel()) if not s >> m & 1) / 2 ** (players - 1)
            for m in range(players)
        ]
    )


# --- perceptual_score ---------------------------------------------------------------------------


@pytest.mark.parametrize(("shapes", "count", "seed"), [(((6,), (2, 3)), 5, 0), (((4,), (5,), (3,)), 8, 1)])
def test_perceptual_score_equals_sklearn_permutation_importance_over_accuracy(shapes, count: int, seed: int) -> None:
    """Each column of X holds sample indices into one modality, so sklearn's column shuffle (a gather,
    X[:, m] = X[shuffle, m]) permutes a whole modality; importances_mean[m] / baseline is then our score on the
    very permutations sklearn drew (read back from the estimator's inputs)."""
    pytest.importorskip("sklearn", reason=SKLEARN)
    import numpy as np
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.inspection import permutation_importance

    model = DiagnosisMLP(shapes, classes=4, seed=seed)
    inputs, labels = _diagnosis_batch(model, 150, seed=seed + 10)
    seen: list[torch.Tensor] = []

    class ModalityIndexClassifier(ClassifierMixin, BaseEstimator):
        def fit(self, x, y):
            self.classes_ = np.arange(4)
            return self

        def predict(self, x):
            index = torch.tensor(np.asarray(x), dtype=torch.long)  # (B, M), a copy: sklearn shuffles x in place
            seen.append(index)
            with torch.no_grad():
                return model(*[t[index[:, m]] for m, t in enumerate(inputs)]).argmax(-1).numpy()

    columns = np.tile(np.arange(150)[:, None], (1, len(shapes)))
    estimator = ModalityIndexClassifier().fit(columns, labels.numpy())
    result = permutation_importance(
        estimator, columns, labels.numpy(), scoring="accuracy", n_repeats=count, random_state=seed
    )
    baseline = (model(*inputs).argmax(-1) == labels).double().mean().item()
    identity = torch.arange(150)
    drawn: dict[int, list[torch.Tensor]] = {m: [] for m in range(len(shapes))}
    for index in seen:
        moved = [m for m in range(len(shapes)) if not torch.equal(index[:, m], identity)]
        if moved:
            assert len(moved) == 1
            drawn[moved[0]].append(index[:, moved[0]])
    for m in range(len(shapes)):
        assert len(drawn[m]) == count
        ours = perceptual_score(model, inputs, labels, m, torch.stack(drawn[m]))
        assert ours == pytest.approx(result.importances_mean[m] / baseline, abs=1e-12)  # measured: ≤ 1.2e-16


def test_perceptual_score_of_an_ignored_modality_or_identity_permutations_is_zero() -> None:
    model = DiagnosisMLP(((4,), (3,)), classes=3, seed=3)
    inputs, labels = _diagnosis_batch(model, 80, seed=4)
    assert perceptual_score(model, inputs, labels, 1, torch.arange(80).repeat(3, 1)) == pytest.approx(0, abs=1e-15)

    def first_only(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return model(a, torch.zeros_like(b))

    assert perceptual_score(first_only, inputs, labels, 1, permutations(4, 80, 5)) == pytest.approx(0, abs=1e-15)


def test_perceptual_score_is_the_expected_drop_over_the_given_permutations() -> None:
    """One permutation at a time, averaged by hand, equals passing all of them at once."""
    model = DiagnosisMLP(((5,), (2, 2), (3,)), classes=4, seed=6)
    inputs, labels = _diagnosis_batch(model, 100, seed=7)
    rows = permutations(6, 100, 8)
    acc = (model(*inputs).argmax(-1) == labels).double().mean().item()
    one_by_one = [1 - perceptual_score(model, inputs, labels, 2, row[None]) for row in rows]  # acc_p / acc each
    assert perceptual_score(model, inputs, labels, 2, rows) == pytest.approx(1 - sum(one_by_one) / 6, abs=1e-12)
    assert 0 < acc < 1


# --- subset_accuracies --------------------------------------------------------------------------


def test_subset_accuracies_ends_are_the_full_and_the_all_fill_accuracy() -> None:
    model = DiagnosisMLP(((4,), (2, 3), (5,)), classes=3, seed=0)
    inputs, labels = _diagnosis_batch(model, 120, seed=1)
    fill = [torch.full(x.shape[1:], 0.3) for x in inputs]
    table = subset_accuracies(model, inputs, labels, fill)
    assert table.dtype == torch.float64 and table.shape == (8,)
    assert table[7].item() == (model(*inputs).argmax(-1) == labels).double().mean().item()
    batch_fill = [f.expand_as(x) for f, x in zip(fill, inputs, strict=True)]
    assert table[0].item() == (model(*batch_fill).argmax(-1) == labels).double().mean().item()
    only_1 = [batch_fill[0], inputs[1], batch_fill[2]]  # pattern 0b010: modality 1 present
    assert table[2].item() == (model(*only_1).argmax(-1) == labels).double().mean().item()


def test_subset_accuracies_of_a_model_that_ignores_a_modality_do_not_depend_on_its_bit() -> None:
    model = DiagnosisMLP(((3,), (4,), (2,)), classes=3, seed=2)
    inputs, labels = _diagnosis_batch(model, 90, seed=3)

    def without_middle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return model(a, torch.zeros_like(b), c)

    table = subset_accuracies(without_middle, inputs, labels, [torch.randn(3), torch.randn(4), torch.randn(2)])
    assert all(table[s] == table[s | 0b010] for s in range(8))
    assert shapley_values(table)[1].abs().item() < 1e-15


# --- shapley_values -----------------------------------------------------------------------------


@pytest.mark.parametrize("players", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapley_values_equal_captum(players: int, dtype: torch.dtype) -> None:
    """captum perturbs ones(1, M) towards the baseline zeros(1, M) one feature group at a time over all M! orders;
    the forward reads the coalition off the 0/1 input and looks its value up in the table."""
    pytest.importorskip("captum", reason=CAPTUM)
    from captum.attr import ShapleyValues

    table = random_table(players, seed=players, dtype=dtype)
    powers = 2 ** torch.arange(players)

    def lookup(x: torch.Tensor) -> torch.Tensor:
        return table[(x.round().long() * powers).sum(dim=1)]  # (n,)

    theirs = ShapleyValues(lookup).attribute(
        torch.ones(1, players, dtype=dtype),
        baselines=torch.zeros(1, players, dtype=dtype),
        feature_mask=torch.arange(players)[None],
    )[0]
    ours = shapley_values(table)
    assert ours.dtype == dtype
    # captum sums the marginals in float32 (dtype=torch.float) even for a float64 table: measured max |Δφ| 6.0e-8
    # (float32) and 1.2e-7 (float64 table) for M ≤ 4
    assert torch.allclose(ours, theirs.to(dtype), atol=3e-7, rtol=0)


def brute_force_shapley(values: list[float]) -> list[float]:
    """The mean marginal contribution of each player over every order of arrival."""
    players = len(values).bit_length() - 1
    totals = [0.0] * players
    for order in itertools.permutations(range(players)):
        coalition = 0
        for player in order:
            totals[player] += values[coalition | 1 << player] - values[coalition]
            coalition |= 1 << player
    return [t / math.factorial(players) for t in totals]


@settings(max_examples=40, deadline=None)
@given(players=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_shapley_values_are_efficient_and_equal_the_mean_over_orders(players: int, seed: int) -> None:
    table = random_table(players, seed)
    phi = shapley_values(table)
    assert phi.sum().item() == pytest.approx((table[-1] - table[0]).item(), abs=1e-12)  # efficiency
    assert phi.tolist() == pytest.approx(brute_force_shapley(table.tolist()), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_shapley_values_symmetry_linearity_and_banzhaf(seed: int) -> None:
    a, b = random_table(3, seed), random_table(3, seed + 1)
    assert torch.allclose(shapley_values(2 * a - b), 2 * shapley_values(a) - shapley_values(b), atol=1e-12)
    swap = [(s & 0b100) | (s & 1) << 1 | (s >> 1) & 1 for s in range(8)]  # bits 0 and 1 exchanged
    assert torch.allclose(shapley_values(a[swap]), shapley_values(a)[[1, 0, 2]], atol=1e-12)  # players 0 ↔ 1
    pair = random_table(2, seed)
    assert torch.allclose(shapley_values(pair), banzhaf(pair), atol=1e-12)  # M = 2: the two coincide
    assert not torch.allclose(shapley_values(a), banzhaf(a), atol=1e-6)  # M = 3: they differ


# --- ridge_probe_accuracy -----------------------------------------------------------------------


def graded_probe_cases() -> list:
    skewed = [0.6, 0.25, 0.1, 0.05]
    return [
        _probe_case("offset", 0, offset=1000.0),
        _probe_case("skewed", 1, priors=skewed),
        *(_probe_case("tiny", 2 + i, priors=skewed, scale=0.1, l2=l2) for i, l2 in enumerate((10.0, 30.0, 300.0))),
        _probe_case("binary", 5, classes=2, priors=[0.7, 0.3], l2=5.0),
        _probe_case("many classes", 6, classes=7, dims=12, l2=3.0),
    ]


@pytest.mark.parametrize("case", graded_probe_cases(), ids=lambda case: case.label)
def test_ridge_probe_equals_sklearn_ridge_classifier(case) -> None:
    pytest.importorskip("sklearn", reason=SKLEARN)
    from sklearn.linear_model import RidgeClassifier

    x_train, y_train, x_test, y_test, classes = case.args
    l2 = case.kwargs["l2"]
    peer = RidgeClassifier(alpha=l2, fit_intercept=True).fit(x_train.double().numpy(), y_train.numpy())
    theirs = float((torch.as_tensor(peer.predict(x_test.double().numpy())) == y_test).double().mean())
    assert ridge_probe_accuracy(x_train, y_train, x_test, y_test, classes, l2=l2) == theirs  # measured: Δacc = 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), l2=st.sampled_from([0.1, 1.0, 10.0]), shift=st.floats(-50, 50))
def test_ridge_probe_equals_the_augmented_system_and_ignores_a_common_shift(seed: int, l2: float, shift: float) -> None:
    x_train, y_train, x_test, y_test, classes = _probe_case("random", seed, classes=3, dims=4, l2=l2).args
    ones = torch.ones(len(x_train), 1, dtype=torch.float64)
    augmented = torch.cat([x_train.double(), ones], 1)  # the intercept as a last column, left out of the penalty
    penalty = torch.diag(torch.tensor([l2] * 4 + [0.0], dtype=torch.float64))
    target = F.one_hot(y_train, classes).double()
    weight = torch.linalg.solve(augmented.T @ augmented + penalty, augmented.T @ target)
    scores = torch.cat([x_test.double(), torch.ones(len(x_test), 1, dtype=torch.float64)], 1) @ weight
    expected = (scores.argmax(1) == y_test).double().mean().item()
    assert ridge_probe_accuracy(x_train, y_train, x_test, y_test, classes, l2=l2) == expected
    shifted = ridge_probe_accuracy(x_train.double() + shift, y_train, x_test.double() + shift, y_test, classes, l2=l2)
    assert shifted == expected


def test_a_huge_penalty_predicts_the_training_majority() -> None:
    x_train, y_train, x_test, y_test, classes = _probe_case("skewed", 1, priors=[0.6, 0.25, 0.1, 0.05]).args
    majority = torch.bincount(y_train, minlength=classes).argmax()
    got = ridge_probe_accuracy(x_train, y_train, x_test, y_test, classes, l2=1e12)
    assert got == (y_test == majority).double().mean().item()

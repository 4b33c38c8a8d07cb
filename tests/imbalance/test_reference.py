"""Chapter 06 references (OGM-GE, Gradient-Blending) against their de-facto code, properties, and the checks.

The peers have no package: ``official_*`` and ``multibench_*`` below are transliterations of the authors' code,
kept here only as agreement oracles (they are not part of the package).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from xmodal_ref.imbalance import checks
from xmodal_ref.imbalance.reference import gradient_blending_weights, ogm_ge_coefficients, ogm_ge_modulate

from .mutants import CORRECT, MUTANTS

OURS = ("ogm_ge_coefficients", "ogm_ge_modulate", "gradient_blending_weights")


def logits_pair(batch: int, classes: int, margins: tuple[float, float], seed: int, dtype=torch.float32):
    """Unimodal logits whose true class is lifted by each modality's margin, and the labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (batch,), generator=generator)
    onehot = nn.functional.one_hot(labels, classes).to(dtype)
    a, v = (torch.randn(batch, classes, generator=generator, dtype=dtype) + m * onehot for m in margins)
    return a, v, labels


# --- oracle: GeWu-Lab/OGM-GE_CVPR2022, main.py, train_epoch (transliterated; the `OGM_GE` branch) ------------


def official_main_py_coefficients(out_a, out_v, label, alpha):
    """Transliteration of the official score / ratio / coefficient lines (a tie goes to the else branch)."""
    softmax, relu, tanh = nn.Softmax(dim=1), nn.ReLU(inplace=True), nn.Tanh()
    score_v = sum([softmax(out_v)[i][label[i]] for i in range(out_v.size(0))])
    score_a = sum([softmax(out_a)[i][label[i]] for i in range(out_a.size(0))])
    ratio_v = score_v / score_a
    ratio_a = 1 / ratio_v
    if ratio_v > 1:
        coeff_v = 1 - tanh(alpha * relu(ratio_v))
        coeff_a = 1
    else:
        coeff_a = 1 - tanh(alpha * relu(ratio_a))
        coeff_v = 1
    return float(coeff_a), float(coeff_v)


def official_main_py_ge(grads, coeff):
    """The official OGM_GE line on a list of gradients, in place on copies, with the global RNG."""
    grads = [g.clone() for g in grads]
    for i, grad in enumerate(grads):
        grads[i] = grad * coeff + torch.zeros_like(grad).normal_(0, grad.std().item() + 1e-8)
    return grads


# --- oracle: GeWu-Lab/BalanceBenchmark, balancemm/trainer/OGM_trainer.py (commit 4122a58, two modalities) --------


def balance_benchmark_coefficients(out_a, out_v, label, alpha):
    softmax, relu, tanh = nn.Softmax(dim=1), nn.ReLU(inplace=True), nn.Tanh()
    scores = {
        m: sum([softmax(out)[i][label[i]] for i in range(out.size(0))]) for m, out in (("a", out_a), ("v", out_v))
    }
    ratios = {"a": scores["a"] / (scores["v"] + 1e-5), "v": scores["v"] / (scores["a"] + 1e-5)}
    coeffs = {m: max(1 - tanh(alpha * relu(r.clone())), 0) if r > 1 else 1 for m, r in ratios.items()}
    return float(coeffs["a"]), float(coeffs["v"])


# --- oracle: pliang279/MultiBench, training_structures/gradient_blend.py with `delta = True` ---------------------


def multibench_weights(train_start, val_start, train_end, val_end):
    """train_unimodal / train_multimodal's estimate per head, then gb_estimate's normalisation."""
    weights = []
    for ltN, lvN, ltNn, lvNn in zip(train_start, val_start, train_end, val_end, strict=True):
        oNn = lvNn - ltNn
        oN = lvN - ltN
        oi = oNn - oN
        g = lvNn - lvN
        weights.append(abs(g / (oi * oi)))
    z = sum(weights)
    return [(w / z).item() for w in weights]


# ----------------------------------------------------------------------------- ogm_ge_coefficients

NON_TIE_INPUTS = [
    (16, 5, (3.0, 0.8), 0, 0.5),
    (10, 3, (0.5, 2.5), 1, 1.0),
    (24, 4, (1.55, 1.5), 2, 0.8),
    (12, 6, (1.0, 4.0), 3, 0.3),
    (64, 8, (2.0, 1.0), 4, 0.1),
    (64, 31, (0.0, 0.3), 5, 3.0),
]


@pytest.mark.parametrize(("batch", "classes", "margins", "seed", "alpha"), NON_TIE_INPUTS)
def test_coefficients_agree_with_the_official_main_py(batch, classes, margins, seed, alpha) -> None:
    a, v, labels = logits_pair(batch, classes, margins, seed)
    ours = ogm_ge_coefficients(a, v, labels, alpha)
    assert all(isinstance(k, float) for k in ours)
    official = official_main_py_coefficients(a, v, labels, alpha)
    assert max(abs(x - y) for x, y in zip(ours, official, strict=True)) < 5e-7  # float32 sums vs ours in float64
    benchmark = balance_benchmark_coefficients(a, v, labels, alpha)
    assert max(abs(x - y) for x, y in zip(ours, benchmark, strict=True)) < 5e-6  # their ε = 1e-5


def test_a_tie_gives_one_one_where_the_official_code_modulates_a() -> None:
    a, _, labels = logits_pair(16, 5, (1.0, 1.0), 0)
    assert ogm_ge_coefficients(a, a.clone(), labels, 0.5) == (1.0, 1.0)
    assert official_main_py_coefficients(a, a.clone(), labels, 0.5)[0] == pytest.approx(1 - math.tanh(0.5))


@given(
    st.integers(1, 20),
    st.integers(2, 7),
    st.floats(0.0, 3.0),
    st.floats(0.0, 3.0),
    st.floats(0.0, 4.0),
    st.integers(0, 10_000),
)
def test_coefficients_modulate_only_the_dominant_modality(batch, classes, margin_a, margin_v, alpha, seed) -> None:
    a, v, labels = logits_pair(batch, classes, (margin_a, margin_v), seed, dtype=torch.float64)
    k_a, k_v = ogm_ge_coefficients(a, v, labels, alpha)
    assert 0.0 <= k_a <= 1.0 and 0.0 <= k_v <= 1.0  # 1 − tanh(α·ρ) rounds to 0 for a large α·ρ
    assert k_a == 1.0 or k_v == 1.0  # at most one modality is slowed down
    assert ogm_ge_coefficients(v, a, labels, alpha) == (k_v, k_a)  # the roles are symmetric
    score_a = a.softmax(-1).gather(1, labels[:, None]).sum().item()
    score_v = v.softmax(-1).gather(1, labels[:, None]).sum().item()
    rho = max(score_a, score_v) / min(score_a, score_v)
    if score_a != score_v:
        assert min(k_a, k_v) == pytest.approx(1 - math.tanh(alpha * rho), abs=1e-12)
    # A batch mean gives the same ratios: repeating the batch changes nothing.
    repeated = ogm_ge_coefficients(a.repeat(3, 1), v.repeat(3, 1), labels.repeat(3), alpha)
    assert repeated == pytest.approx((k_a, k_v), abs=1e-12)


def test_coefficients_leave_the_inputs_and_autograd_alone() -> None:
    a, v, labels = logits_pair(8, 4, (2.0, 0.0), 4)
    a.requires_grad_()
    before = a.detach().clone()
    k_a, k_v = ogm_ge_coefficients(a, v, labels, 1.0)
    assert k_v == 1.0 and 0 < k_a < 1 and a.grad is None and torch.equal(a.detach(), before)
    assert ogm_ge_coefficients(a, v, labels, 0.0) == (1.0, 1.0)


# ----------------------------------------------------------------------------- ogm_ge_modulate


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modulate_is_bitwise_the_official_line(seed) -> None:
    generator = torch.Generator().manual_seed(100 + seed)
    grads = [torch.randn(64, 3, 7, 7, generator=generator) * 0.01, torch.randn(200, generator=generator) * 3 + 0.5]
    for coeff in (0.3, 1.0):
        torch.manual_seed(seed)
        official = official_main_py_ge(grads, coeff)
        ours = ogm_ge_modulate(grads, coeff, generator=torch.Generator().manual_seed(seed))
        assert all(torch.equal(x, y) for x, y in zip(ours, official, strict=True))


@given(st.lists(st.integers(2, 300), min_size=1, max_size=4), st.floats(0.0, 1.0), st.integers(0, 10_000))
def test_modulate_without_noise_scales_and_with_noise_is_reproducible(sizes, coeff, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    grads = [torch.randn(n, generator=generator, dtype=torch.float64) for n in sizes]
    before = [g.clone() for g in grads]
    plain = ogm_ge_modulate(grads, coeff, enhance=False)
    assert all(torch.equal(p, coeff * g) for p, g in zip(plain, grads, strict=True))
    first = ogm_ge_modulate(grads, coeff, generator=torch.Generator().manual_seed(seed))
    second = ogm_ge_modulate(grads, coeff, generator=torch.Generator().manual_seed(seed))
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    assert all(x.dtype == g.dtype and x.shape == g.shape for x, g in zip(first, grads, strict=True))
    assert all(torch.equal(g, b) for g, b in zip(grads, before, strict=True))


def test_modulate_noise_has_the_unscaled_gradients_spread() -> None:
    g = torch.randn(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.02 + 1.0
    (out,) = ogm_ge_modulate([g], 0.1, generator=torch.Generator().manual_seed(1))
    noise = out - 0.1 * g
    assert abs(noise.mean().item()) < 5 * 0.02 / math.sqrt(g.numel())
    assert noise.std().item() == pytest.approx(g.std().item(), rel=0.01)


# ----------------------------------------------------------------------------- gradient_blending_weights


@pytest.mark.parametrize(
    ("heads", "seed", "dtype", "shrinking"),
    [
        (3, 0, torch.float32, False),
        (2, 1, torch.float64, False),
        (4, 2, torch.float32, False),
        (3, 3, torch.float64, True),
    ],
)
def test_blending_weights_agree_with_multibench(heads, seed, dtype, shrinking) -> None:
    losses = checks._losses(heads, seed, dtype, shrinking=shrinking)  # the graded inputs
    ours = gradient_blending_weights(*losses)
    assert ours.dtype == dtype
    theirs = torch.tensor(multibench_weights(*losses), dtype=torch.float64)
    assert (ours.double() - theirs).abs().max().item() < 1e-7


loss_lists = st.lists(
    st.tuples(st.floats(0.5, 3.0), st.floats(0.0, 1.0), st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.booleans()),
    min_size=2,
    max_size=5,
)


def build_losses(heads):
    """(train_start, val_start, train_end, val_end) in float64 from (L_train,N, O_N, ΔG, |ΔO|, ΔO < 0) per head."""
    rows = []
    for train_start, gap, gain, change, shrinks in heads:
        val_start = train_start + gap
        val_end = val_start - gain
        delta_o = -change if shrinks else change
        rows.append((train_start, val_start, val_end - (gap + delta_o), val_end))
    return tuple(torch.tensor(column, dtype=torch.float64) for column in zip(*rows, strict=True))


@given(loss_lists, st.floats(0.1, 10.0), st.permutations(range(5)))
def test_blending_weights_are_a_distribution_invariant_to_loss_scale_and_head_order(heads, scale, order) -> None:
    losses = build_losses(heads)
    weights = gradient_blending_weights(*losses)
    assert bool((weights > 0).all()) and weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(gradient_blending_weights(*(x * scale for x in losses)), weights)
    shifted = [x + torch.arange(len(heads), dtype=torch.float64) for x in losses]  # a per-head offset cancels
    torch.testing.assert_close(gradient_blending_weights(*shifted), weights)
    perm = torch.tensor([i for i in order if i < len(heads)])
    torch.testing.assert_close(gradient_blending_weights(*(x[perm] for x in losses)), weights[perm])


def test_blending_weights_favour_the_head_that_generalises_without_overfitting() -> None:
    #                 train_N  val_N  train_N+n  val_N+n
    steady = (2.0, 2.1, 1.5, 1.7)  # ΔG = 0.4, ΔO = 0.1
    overfits = (2.0, 2.1, 0.9, 1.9)  # ΔG = 0.2, ΔO = 0.9
    losses = [torch.tensor(column, dtype=torch.float64) for column in zip(steady, overfits, strict=True)]
    weights = gradient_blending_weights(*losses)
    expected = torch.tensor([0.4 / 0.01, 0.2 / 0.81], dtype=torch.float64)
    torch.testing.assert_close(weights, expected / expected.sum())


def test_every_imbalance_exercise_has_five_mutants_and_two_other_styles() -> None:
    """The chapter asks for more than the general three (tests/test_mutants.py proves each one)."""
    assert len(MUTANTS) == len(CORRECT) == 7
    for exercise_id in MUTANTS:
        assert len(MUTANTS[exercise_id]) >= 5 and len(CORRECT[exercise_id]) >= 2, exercise_id

"""Properties of the chapter 03 references, on inputs hypothesis draws (ties included)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from xmodal_ref import contrastive


@st.composite
def retrieval_problems(draw):
    """Integer scores (so ties are common), a positive mask with ≥ 1 True per row, and k."""
    q, g = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    scores = draw(st.lists(st.integers(0, 3), min_size=q * g, max_size=q * g))
    mask = draw(st.lists(st.booleans(), min_size=q * g, max_size=q * g))
    positives = torch.tensor(mask).reshape(q, g)
    positives[torch.arange(q), draw(st.integers(0, g - 1))] = True
    return torch.tensor(scores, dtype=torch.float32).reshape(q, g), positives, draw(st.integers(1, g + 1))


@given(retrieval_problems())
def test_recall_at_k_matches_the_definition(problem) -> None:
    similarity, positives, k = problem
    hits = 0
    for q in range(similarity.shape[0]):
        ranks = [int((similarity[q] > similarity[q, g]).sum()) for g in range(similarity.shape[1]) if positives[q, g]]
        hits += min(ranks) < k
    assert contrastive.recall_at_k(similarity, positives, k) == hits / similarity.shape[0]


@given(retrieval_problems())
def test_recall_at_k_grows_with_k(problem) -> None:
    similarity, positives, k = problem
    assert contrastive.recall_at_k(similarity, positives, k) <= contrastive.recall_at_k(similarity, positives, k + 1)


@given(st.integers(1, 12), st.integers(2, 16), st.integers(0, 10_000))
def test_clip_loss_ignores_the_order_of_pairs_and_the_direction_of_modalities(n, d, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    order = torch.randperm(n, generator=generator)
    loss = contrastive.clip_loss(image, text, 14.0)
    assert torch.allclose(loss, contrastive.clip_loss(image[order], text[order], 14.0))
    assert torch.allclose(loss, contrastive.clip_loss(text, image, 14.0))
    assert loss >= 0


@given(st.integers(1, 64), st.integers(0, 10_000))
def test_siglip_loss_at_init_is_about_ten_for_any_batch(n, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, 256, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, 256, generator=generator, dtype=torch.float64), dim=-1)
    # Each positive costs softplus(10 − 10·s_ii) ≈ 10·(1 − s_ii) and each negative ≈ e^(10·s_ij − 10) ≈ 0, so the
    # loss is 10 minus ten times the mean positive cosine (which, for one pair, can reach ±0.25 by chance).
    positive_cosine = (image * text).sum(dim=-1).mean().item()
    loss = contrastive.siglip_loss(image, text, 10.0, -10.0).item()
    assert abs(loss - 10.0 * (1.0 - positive_cosine)) < 0.02


@given(st.integers(1, 20), st.integers(1, 20), st.integers(2, 8), st.integers(0, 10_000))
def test_modality_gap_is_a_distance_between_points_in_the_unit_ball(n, m, d, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randn(m, d, generator=generator, dtype=torch.float64)
    gap = contrastive.modality_gap(x, y).item()
    assert 0.0 <= gap <= 2.0 + 1e-12
    assert math.isclose(gap, contrastive.modality_gap(y, x).item())
    assert contrastive.modality_gap(x, x).item() < 1e-12


def test_learnable_logit_scale_starts_at_clip_init_and_caps_at_max() -> None:
    module = contrastive.LearnableLogitScale()
    assert math.isclose(module().item(), 1 / 0.07, rel_tol=1e-6)
    with torch.no_grad():
        module.log_scale.fill_(10.0)
    assert math.isclose(module().item(), 100.0, rel_tol=1e-6)

"""Chapter 04 references against independent implementations: PyTorch's CTC, brute force and invariances."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodal_ref.alignment import cca, ctc_loss, dtw, gradient_reversal, vsepp_loss


def log_probs(frames: int, classes: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, classes, generator=g, dtype=dtype).log_softmax(dim=-1)  # (T, C)


def torch_ctc(lp: torch.Tensor, targets: torch.Tensor, blank: int = 0) -> torch.Tensor:
    return F.ctc_loss(lp[:, None], targets[None], (lp.shape[0],), (targets.numel(),), blank=blank, reduction="none")[0]


# --- ctc_loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "classes", "targets", "blank"),
    [
        (12, 6, [2, 5, 5, 1, 3], 0),
        (9, 4, [3, 3, 3], 0),  # needs 5 frames
        (7, 5, [], 0),  # empty target: all blanks
        (10, 5, [0, 1, 3], 4),  # blank is the last class, label 0 is a real label
        (300, 30, list(range(1, 30)) * 3, 0),  # long: a product of probabilities would underflow
    ],
)
def test_ctc_loss_equals_torch(frames: int, classes: int, targets: list[int], blank: int) -> None:
    lp = log_probs(frames, classes, seed=frames)
    target = torch.tensor(targets, dtype=torch.long)
    ours, theirs = ctc_loss(lp, target, blank), torch_ctc(lp, target, blank)
    assert ours.shape == () and torch.isfinite(ours)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    frames=st.integers(1, 9),
    targets=st.lists(st.integers(1, 3), max_size=5),
    seed=st.integers(0, 10_000),
)
def test_ctc_loss_equals_torch_or_is_inf_exactly_when_infeasible(frames: int, targets: list[int], seed: int) -> None:
    lp = log_probs(frames, 4, seed)
    target = torch.tensor(targets, dtype=torch.long)
    repeats = sum(a == b for a, b in itertools.pairwise(targets))
    ours = ctc_loss(lp, target)
    if frames < len(targets) + repeats:
        assert ours.item() == math.inf
    else:
        assert torch.allclose(ours, torch_ctc(lp, target), rtol=1e-9, atol=1e-9)


def test_ctc_loss_equals_brute_force_enumeration() -> None:
    lp = log_probs(5, 3, seed=1)
    target = [1, 1, 2]

    def collapse(path: tuple[int, ...]) -> list[int]:
        merged = [c for i, c in enumerate(path) if i == 0 or c != path[i - 1]]
        return [c for c in merged if c != 0]

    total = sum(
        lp[torch.arange(5), torch.tensor(path)].sum().exp()
        for path in itertools.product(range(3), repeat=5)
        if collapse(path) == target
    )
    assert torch.allclose(ctc_loss(lp, torch.tensor(target)), -torch.log(total), atol=1e-12)


def test_ctc_gradient_through_log_softmax_equals_torch() -> None:
    logits = torch.randn(20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([2, 5, 5, 1, 3])
    grads = []
    for loss_fn in (ctc_loss, torch_ctc):
        x = logits.clone().requires_grad_()
        loss_fn(x.log_softmax(-1), target).backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-10)


# --- dtw --------------------------------------------------------------------------------------


def brute_force_dtw(x: torch.Tensor, y: torch.Tensor) -> float:
    """The cheapest monotone path by enumerating every path through the grid."""
    costs = torch.cdist(x, y).tolist()
    n, m = len(costs), len(costs[0])
    best = math.inf

    def walk(i: int, j: int, total: float) -> None:
        nonlocal best
        total += costs[i][j]
        if (i, j) == (n - 1, m - 1):
            best = min(best, total)
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                walk(i + di, j + dj, total)

    walk(0, 0, 0.0)
    return best


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), m=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_dtw_is_the_cheapest_monotone_path(n: int, m: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randn(m, 2, generator=g, dtype=torch.float64)
    cost, path = dtw(x, y)
    assert cost.item() == pytest.approx(brute_force_dtw(x, y), abs=1e-12)
    assert path[0] == (0, 0) and path[-1] == (n - 1, m - 1)
    assert all((i2 - i1, j2 - j1) in {(1, 0), (0, 1), (1, 1)} for (i1, j1), (i2, j2) in itertools.pairwise(path))
    assert cost.item() == pytest.approx(sum(torch.dist(x[i], y[j]).item() for i, j in path), abs=1e-12)


def test_dtw_of_a_time_stretched_copy_is_zero() -> None:
    y = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    x = y.repeat_interleave(torch.tensor([1, 4, 2, 1, 3, 1, 2]), dim=0)
    cost, path = dtw(x, y)
    assert cost.item() == 0.0
    assert [j for _, j in path] == sorted(j for _, j in path)


# --- cca --------------------------------------------------------------------------------------


def test_cca_projections_have_unit_variance_and_the_returned_correlations() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    x = z @ torch.randn(2, 5, generator=g, dtype=torch.float64) + torch.randn(2000, 5, generator=g, dtype=torch.float64)
    y = z @ torch.randn(2, 4, generator=g, dtype=torch.float64) + torch.randn(2000, 4, generator=g, dtype=torch.float64)
    rho, w_x, w_y = cca(x, y, k=3)
    u, v = (x - x.mean(0)) @ w_x, (y - y.mean(0)) @ w_y  # (N, 3) each
    assert torch.allclose(u.var(0), torch.ones(3, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(v.var(0), torch.ones(3, dtype=torch.float64), atol=1e-4)
    cross = torch.corrcoef(torch.cat([u, v], dim=1).T)[:3, 3:]  # (3, 3): diagonal ρ, off-diagonal 0
    assert torch.allclose(cross, torch.diag(rho), atol=1e-4)
    assert torch.all(rho[:-1] >= rho[1:]) and rho[0] <= 1


def test_cca_correlations_are_invariant_to_invertible_linear_maps_of_each_view() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(500, 4, generator=g, dtype=torch.float64), torch.randn(500, 3, generator=g, dtype=torch.float64)
    y = y + x[:, :3]
    a, b = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)
    shifted = cca(x @ a + 5.0, y @ b - 2.0, k=3, eps=0.0)[0]
    assert torch.allclose(cca(x, y, k=3, eps=0.0)[0], shifted, atol=1e-8)


# --- gradient_reversal and vsepp_loss ---------------------------------------------------------


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    upstream = torch.randn(3, 4)
    out = gradient_reversal(x, 0.7)
    assert torch.equal(out, x)
    out.backward(upstream)
    assert torch.allclose(x.grad, -0.7 * upstream)


def brute_force_vsepp(images: torch.Tensor, texts: torch.Tensor, margin: float, max_violation: bool) -> float:
    n = len(images)
    s = images @ texts.T
    total = 0.0
    for i in range(n):
        caption_hinges = [max(0.0, margin - s[i, i].item() + s[i, j].item()) for j in range(n) if j != i]
        image_hinges = [max(0.0, margin - s[i, i].item() + s[j, i].item()) for j in range(n) if j != i]
        reduce = max if max_violation else sum
        total += reduce(caption_hinges) + reduce(image_hinges)
    return total


@pytest.mark.parametrize("max_violation", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_vsepp_loss_equals_a_loop_over_pairs(max_violation: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(9, 5, generator=g, dtype=torch.float64), dim=-1)
    texts = F.normalize(images + 0.8 * torch.randn(9, 5, generator=g, dtype=torch.float64), dim=-1)
    ours = vsepp_loss(images, texts, 0.2, max_violation).item()
    assert ours == pytest.approx(brute_force_vsepp(images, texts, 0.2, max_violation), abs=1e-12)


def test_vsepp_loss_is_zero_when_every_positive_wins_by_the_margin() -> None:
    images = torch.eye(4, dtype=torch.float64)
    assert vsepp_loss(images, images, margin=0.5).item() == 0.0
    assert vsepp_loss(images, images, margin=1.5).item() == pytest.approx(2 * 4 * 0.5)

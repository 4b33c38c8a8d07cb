"""Chapter 04 · alignment: DTW, CTC, CCA, gradient reversal and the VSE++ hinge loss.

Every public function here is the reference for one graded exercise. Each is self-contained
(it needs only ``math``, ``torch``, ``torch.nn`` and ``torch.nn.functional``), because its source
is copied verbatim into the worked-solution notebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dtw(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Dynamic time warping (Sakoe & Chiba 1978) between two sequences of frames.

    x: (n, d); y: (m, d). The frame cost c(i, j) is the Euclidean distance ‖x_i − y_j‖, and
    D(i, j) = c(i, j) + min(D(i−1, j), D(i, j−1), D(i−1, j−1)), with D(0, 0) = c(0, 0).
    Returns ``cost``, a 0-dim tensor equal to D(n−1, m−1) (differentiable: the sum of c along the
    path), and ``path``, the optimal warping path as a list of (i, j) pairs from (0, 0) to
    (n−1, m−1), each step (+1, 0), (0, +1) or (+1, +1). A time-stretched copy costs 0.
    """
    costs = torch.cdist(x[None], y[None])[0]  # (n, m)
    n, m = costs.shape
    c = costs.detach().tolist()
    total = [[math.inf] * (m + 1) for _ in range(n + 1)]  # total[i + 1][j + 1] = D(i, j); a border of inf
    total[0][0] = 0.0
    for i in range(n):
        for j in range(m):
            total[i + 1][j + 1] = c[i][j] + min(total[i][j + 1], total[i + 1][j], total[i][j])
    path, i, j = [(n - 1, m - 1)], n - 1, m - 1
    while (i, j) != (0, 0):  # walk back through the cheapest predecessor
        i, j = min((i - 1, j - 1), (i - 1, j), (i, j - 1), key=lambda ij: total[ij[0] + 1][ij[1] + 1])
        path.append((i, j))
    path.reverse()
    rows, cols = zip(*path, strict=True)
    return costs[list(rows), list(cols)].sum(), path


def ctc_loss(log_probs: torch.Tensor, targets: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Connectionist temporal classification loss of one sequence (Graves et al. 2006).

    log_probs: (T, C), already log-softmaxed over the C classes. targets: (L,) long, L ≥ 0, no
    blanks; labels may repeat. Returns the 0-dim negative log-likelihood −log Σ_π p(π) over every
    frame labelling π that collapses to the targets (merge repeats, then drop blanks), computed
    with the α recursion in log space over the extended labels [∅, l_1, ∅, …, l_L, ∅]. It is
    ``inf`` when no labelling fits (T < L + the number of adjacent repeats), and equals
    ``F.ctc_loss(..., reduction='none')`` otherwise. Its gradient is the true derivative: it equals
    PyTorch's through ``log_softmax`` (with respect to the logits), but not with respect to raw
    ``log_probs``, where PyTorch's CTC backward assumes normalised inputs and differs by exp(log_probs).
    """
    length = targets.numel()
    repeats = int((targets[1:] == targets[:-1]).sum())
    if log_probs.shape[0] < length + repeats:  # each repeat needs a blank between its copies
        return torch.full((), math.inf, dtype=log_probs.dtype, device=log_probs.device)
    extended = targets.new_full((2 * length + 1,), blank)
    extended[1::2] = targets  # (S,) with S = 2L + 1
    # A skip from s − 2 to s is allowed onto a label that differs from the label two states back.
    can_skip = torch.zeros_like(extended, dtype=torch.bool)
    can_skip[2:] = (extended[2:] != blank) & (extended[2:] != extended[:-2])
    emissions = log_probs[:, extended]  # (T, S)
    # Unreachable states hold a huge finite negative rather than −inf: logsumexp over a column of
    # −inf has a NaN gradient, which would poison the whole backward pass.
    never = torch.finfo(log_probs.dtype).min
    states = extended.numel()
    alpha = F.pad(emissions[0, :2], (0, states - min(states, 2)), value=never)  # start in ∅ or in l_1
    for emission in emissions[1:]:
        step = F.pad(alpha, (1, 0), value=never)[:states]  # from s − 1
        skip = F.pad(alpha, (2, 0), value=never)[:states].masked_fill(~can_skip, never)  # from s − 2
        alpha = torch.logsumexp(torch.stack([alpha, step, skip]), dim=0) + emission
    return -torch.logsumexp(alpha[-2:], dim=0)  # end in l_L or in the final ∅


def cca(x: torch.Tensor, y: torch.Tensor, k: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear canonical correlation analysis in closed form (Hotelling 1936).

    x: (N, p); y: (N, q). Both are centred; the covariances use the unbiased 1/(N − 1), and
    Σxx, Σyy are regularised with eps·I. With the SVD Σxx^(−½) Σxy Σyy^(−½) = U S Vᵀ, returns
    the top-k canonical correlations S[:k] (descending), and the projections
    w_x = Σxx^(−½) U[:, :k] (p, k) and w_y = Σyy^(−½) V[:, :k] (q, k). The projected training data
    (x − x̄) w_x and (y − ȳ) w_y then has unit variance, uncorrelated columns, and column i of the
    two correlates by S[i]. Each pair (w_x[:, i], w_y[:, i]) is unique up to a shared sign.
    """

    def inverse_sqrt(cov: torch.Tensor) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(cov + eps * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device))
        return vectors @ torch.diag(values.rsqrt()) @ vectors.T

    xc, yc = x - x.mean(dim=0), y - y.mean(dim=0)
    n = x.shape[0]
    whiten_x, whiten_y = inverse_sqrt(xc.T @ xc / (n - 1)), inverse_sqrt(yc.T @ yc / (n - 1))  # (p, p), (q, q)
    u, s, vh = torch.linalg.svd(whiten_x @ (xc.T @ yc / (n - 1)) @ whiten_y)
    return s[:k], whiten_x @ u[:, :k], whiten_y @ vh[:k].T


def gradient_reversal(x: torch.Tensor, lambd: float) -> torch.Tensor:
    """The gradient reversal layer of Ganin & Lempitsky 2015 (arXiv:1409.7495).

    Forward: the identity (a new tensor equal to x). Backward: the incoming gradient times −lambd.
    Placed between a feature extractor and a domain (here: modality) discriminator, it lets one
    backward pass train the discriminator to tell the modalities apart while pushing the features
    to make them indistinguishable. Implemented as a custom ``torch.autograd.Function``.
    """

    class GradientReversal(torch.autograd.Function):
        @staticmethod
        def forward(ctx, features: torch.Tensor, scale: float) -> torch.Tensor:
            ctx.scale = scale
            return features.view_as(features)

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            return -ctx.scale * grad, None  # no gradient for the scale

    return GradientReversal.apply(x, lambd)


def vsepp_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, margin: float = 0.2, max_violation: bool = True
) -> torch.Tensor:
    """The bidirectional hinge (triplet) loss of VSE++ (Faghri et al. 2018, arXiv:1707.05612).

    image_features, text_features: (N, D), L2-normalised; row i of each is a matching pair and
    s(i, j) is their dot product. For every positive (i, i) and negative j ≠ i, the hinges are
    [margin − s(i, i) + s(i, j)]₊ (image i against caption j) and [margin − s(i, i) + s(j, i)]₊
    (caption i against image j). With ``max_violation`` only the hardest negative of each positive
    counts in each direction (VSE++); otherwise every negative counts (VSE0). Returns the 0-dim sum
    over the batch and both directions, as the paper's code does.
    """
    scores = image_features @ text_features.T  # (N, N): row = image, column = caption
    positive = scores.diagonal()  # (N,)
    caption_cost = (margin + scores - positive[:, None]).clamp(min=0)  # image i vs caption j
    image_cost = (margin + scores - positive[None, :]).clamp(min=0)  # caption j vs image i
    negatives = ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    caption_cost, image_cost = caption_cost * negatives, image_cost * negatives
    if max_violation:
        return caption_cost.amax(dim=1).sum() + image_cost.amax(dim=0).sum()
    return caption_cost.sum() + image_cost.sum()

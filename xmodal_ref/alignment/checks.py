"""Checks for chapter 04 · alignment."""

from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F

from ..grading.harness import (
    Case,
    Mistake,
    check_cases,
    check_gradients,
    describe,
    describe_case,
    expect_close,
    expect_tensor,
    expect_tuple,
    invoke,
    run_case,
)
from ..grading.inputs import random_rows, unit_rows
from ..grading.verdict import CheckFailure

# ----------------------------------------------------------------------------- dtw


def _stretched(n: int, d: int, repeats: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = random_rows(n, d, seed)
    return x, x.repeat_interleave(torch.tensor(repeats), dim=0)


def _dtw_table(costs: list[list[float]], moves: tuple[tuple[int, int], ...], border: float) -> float:
    """D(n−1, m−1) with the given moves; ``border`` fills row and column −1 (inf, or 0 for an unaccumulated edge)."""
    n, m = len(costs), len(costs[0])
    total = [[border] * (m + 1) for _ in range(n + 1)]
    for i in range(n):
        for j in range(m):
            before = 0.0 if i == j == 0 else min(total[i + 1 - di][j + 1 - dj] for di, dj in moves)
            total[i + 1][j + 1] = costs[i][j] + before
    return total[n][m]


def _dtw_variant(x, y, *, squared=False, moves=((1, 0), (0, 1), (1, 1)), border=math.inf):
    costs = torch.cdist(x[None].double(), y[None].double())[0]
    return torch.tensor(_dtw_table((costs**2 if squared else costs).tolist(), moves, border))


def check_dtw(learner, reference) -> None:
    cases = [
        Case("a time-stretched copy (repeats [1, 3, 1, 2]): cost 0", _stretched(4, 3, [1, 3, 1, 2], 0)),
        Case("random sequences of lengths 6 and 9 in 2-D", (random_rows(6, 2, 1), random_rows(9, 2, 2))),
        Case("lengths 1 and 4", (random_rows(1, 3, 3), random_rows(4, 3, 4))),
        Case(
            "float64, lengths 7 and 5",
            (random_rows(7, 4, 5, dtype=torch.float64), random_rows(5, 4, 6, dtype=torch.float64)),
        ),
    ]
    mistakes = [
        Mistake(
            "the squared Euclidean distance is used as the frame cost; the contract is ‖x_i − y_j‖",
            functools.partial(_dtw_variant, squared=True),
        ),
        Mistake(
            "the diagonal move (i−1, j−1) is missing from the recursion",
            functools.partial(_dtw_variant, moves=((1, 0), (0, 1))),
        ),
        Mistake(
            "only diagonal and one-sided moves: D(i, j−1) is missing",
            functools.partial(_dtw_variant, moves=((1, 0), (1, 1))),
        ),
        Mistake(
            "the first row and column are not accumulated: D(0, j) must be c(0, j) + D(0, j−1), not c(0, j)"
            " (start from a border of inf, not of zeros)",
            functools.partial(_dtw_variant, border=0.0),
        ),
    ]
    for case in cases:
        context = "dtw: " + case.label
        x, y = case.args
        result = expect_tuple(invoke(learner, x.clone(), y.clone(), context=context), ("cost", "path"), context)
        expected_cost, _ = reference(x, y)
        cost = result[0]
        if isinstance(cost, torch.Tensor) and cost.dtype != expected_cost.dtype:
            cost = cost.to(expected_cost.dtype)
        expect_close(cost, expected_cost, context + "; the cost", args=case.args, mistakes=mistakes, atol=1e-4)
        _check_path(result[1], x, y, float(expected_cost), context)
    # the cost's dtype is left open above (a float64 table is fine), so it is here too
    check_gradients(
        lambda x, y: learner(x, y)[0].to(x.dtype), lambda x, y: reference(x, y)[0], cases[1], wrt=["x", "y"]
    )


def _check_path(path, x: torch.Tensor, y: torch.Tensor, cost: float, context: str) -> None:
    n, m = x.shape[0], y.shape[0]
    try:
        pairs = [(int(i), int(j)) for i, j in path]
    except (TypeError, ValueError):
        raise CheckFailure("the path must be a list of (i, j) pairs", case=context, got=describe(path)) from None
    if not pairs or pairs[0] != (0, 0) or pairs[-1] != (n - 1, m - 1):
        raise CheckFailure(
            f"the path must run from (0, 0) to ({n - 1}, {m - 1})",
            case=context,
            got=f"{pairs[:3]} … {pairs[-3:]}" if pairs else "an empty path",
            cause="backtrack from the last cell to (0, 0), then reverse the list",
        )
    for a, b in itertools.pairwise(pairs):
        if (b[0] - a[0], b[1] - a[1]) not in {(1, 0), (0, 1), (1, 1)}:
            raise CheckFailure(
                f"the path jumps from {a} to {b}: each step must be (+1, 0), (0, +1) or (+1, +1)",
                case=context,
                cause="while backtracking, step to the cheapest of the three predecessors",
            )
    along = torch.cdist(x[None].double(), y[None].double())[0][[i for i, _ in pairs], [j for _, j in pairs]].sum()
    if not math.isclose(float(along), cost, rel_tol=1e-4, abs_tol=1e-4):
        raise CheckFailure(
            "the path is not optimal: the frame costs along it do not sum to the DTW cost",
            case=context,
            expected=f"{cost:.6g}",
            got=f"{float(along):.6g} along the returned path",
            cause="a backtracking step that does not follow the minimum of D(i−1, j), D(i, j−1), D(i−1, j−1)",
        )


# ----------------------------------------------------------------------------- ctc_loss


def _log_probs(t: int, c: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    return random_rows(t, c, seed, dtype=dtype).log_softmax(dim=-1)


def _torch_ctc(log_probs, targets, blank=0, *, reduction="none"):
    return F.ctc_loss(
        log_probs[:, None],
        targets[None],
        torch.tensor([log_probs.shape[0]]),
        torch.tensor([targets.numel()]),
        blank=blank,
        reduction=reduction,
        zero_infinity=False,
    )[0 if reduction == "none" else ...]


def _ctc_variant(log_probs, targets, blank=0, *, skip="contract", end="both"):
    """The α recursion with switches for the usual mistakes (float64, log space)."""
    lp = log_probs.double()
    extended = targets.new_full((2 * targets.numel() + 1,), blank)
    extended[1::2] = targets
    s = extended.numel()
    allowed = torch.zeros(s, dtype=torch.bool)
    if skip == "contract":
        allowed[2:] = (extended[2:] != blank) & (extended[2:] != extended[:-2])
    elif skip == "always":
        allowed[2:] = extended[2:] != blank
    alpha = torch.full((s,), -math.inf, dtype=torch.float64)
    alpha[: min(s, 2)] = lp[0, extended[: min(s, 2)]]
    for t in range(1, lp.shape[0]):
        step = torch.cat([alpha.new_full((1,), -math.inf), alpha[:-1]])
        jump = torch.cat([alpha.new_full((2,), -math.inf), alpha[:-2]])[:s].masked_fill(~allowed, -math.inf)
        alpha = torch.logsumexp(torch.stack([alpha, step, jump]), dim=0) + lp[t, extended]
    final = alpha[-1:] if end == "blank" else alpha[-2:]
    return -torch.logsumexp(final, dim=0).to(log_probs.dtype)


def check_ctc_loss(learner, reference) -> None:
    long = torch.tensor
    cases = [
        Case("T=12, C=5, targets [1, 2, 3]", (_log_probs(12, 5, 0), long([1, 2, 3]))),
        Case("a repeated label: targets [1, 2, 2, 3], T=10", (_log_probs(10, 5, 1), long([1, 2, 2, 3]))),
        Case("the empty target: only blanks", (_log_probs(6, 4, 2), long([], dtype=torch.long))),
        Case("[1, 1] in exactly T=3 frames (1, ∅, 1)", (_log_probs(3, 3, 3), long([1, 1]))),
        Case("blank=4 (the last class), targets [0, 1, 1]", (_log_probs(9, 5, 5), long([0, 1, 1])), {"blank": 4}),
        Case("T=1, a single label", (_log_probs(1, 4, 6), long([3]))),
        Case(
            "float64, T=300, C=20, targets of length 20: the likelihood (about e^−1000) underflows as a probability",
            (_log_probs(300, 20, 7, torch.float64), long([1, 2, 3, 4, 5] * 4)),
        ),
    ]
    mistakes = [
        Mistake(
            "skips allowed between equal labels: a skip from s−2 to s needs l'_s ≠ ∅ and l'_s ≠ l'_(s−2), or a"
            " repeated label would be merged into one",
            functools.partial(_ctc_variant, skip="always"),
        ),
        Mistake(
            "no skip transitions at all: from a label you must be able to jump over the blank to a different label",
            functools.partial(_ctc_variant, skip="never"),
        ),
        Mistake(
            "the path may end only in the final blank; it may also end on the last label (α_T(S) + α_T(S−1))",
            functools.partial(_ctc_variant, end="blank"),
        ),
        Mistake(
            "divided by the target length: that is F.ctc_loss's reduction='mean', the contract is one sequence's NLL",
            lambda lp, t, blank=0: _torch_ctc(lp, t, blank) / max(t.numel(), 1),
        ),
        Mistake("the log-likelihood, not its negative", lambda lp, t, blank=0: -_torch_ctc(lp, t, blank)),
        Mistake(
            "the blank argument is ignored (class 0 is always the blank)",
            lambda lp, t, blank=0: _ctc_variant(lp, t, 0),
        ),
    ]
    check_cases(
        learner,
        reference,
        cases,
        mistakes=mistakes,
        atol=1e-4,
        rtol=1e-5,
        unstable_hint="products of probabilities underflow over many frames: run the recursion on log-probabilities"
        " with logsumexp",
    )
    _check_infeasible(
        learner,
        reference,
        Case("infeasible: [1, 1, 2] needs 4 frames, T=3 → inf", (_log_probs(3, 3, 4), long([1, 1, 2]))),
    )
    _check_finite_gradient(learner, cases[1])
    for case in cases[:2]:  # gradients through log_softmax, where F.ctc_loss's gradient is exact
        logits = random_rows(case.args[0].shape[0], case.args[0].shape[1], 11)
        check_gradients(
            lambda logits, targets, fn=learner: fn(logits.log_softmax(-1), targets),
            lambda logits, targets: reference(logits.log_softmax(-1), targets),
            Case(case.label + ", through log_softmax", (logits, case.args[1])),
            wrt=["logits"],
            atol=1e-4,
        )


def _check_infeasible(learner, reference, case: Case) -> None:
    """No labelling of the frames fits the targets: the likelihood is 0, so the loss is inf."""
    got, expected = run_case(learner, reference, case)
    context = describe_case(case, reference)
    value = float(expect_tensor(got, expected, context))
    if value == math.inf:
        return
    cause = None
    if value == 0:
        cause = "0 is what F.ctc_loss(..., zero_infinity=True) gives; the contract keeps inf: the targets cannot fit"
    elif value == -math.inf:
        cause = "the log-likelihood, not its negative"
    elif value > 1e10:
        cause = (
            "the finite stand-in for −inf reached the end: check feasibility first (T ≥ L + the number of adjacent"
            " repeats) and return inf when it fails"
        )
    elif math.isfinite(value):
        cause = "a labelling that does not collapse to the targets is counted: check the skip rule"
    raise CheckFailure(
        "wrong value: no labelling of the frames collapses to the targets, so the loss is inf",
        case=context,
        expected="inf",
        got=describe(got),
        cause=cause,
    )


def _check_finite_gradient(learner, case: Case) -> None:
    logits = random_rows(case.args[0].shape[0], case.args[0].shape[1], 12).requires_grad_(True)
    context = f"ctc_loss: {case.label}, gradient through log_softmax"
    loss = invoke(learner, logits.log_softmax(-1), case.args[1].clone(), context=context)
    expect_tensor(loss, torch.zeros(()), context)
    loss.backward()
    if not bool(logits.grad.isfinite().all()):
        raise CheckFailure(
            "the gradient contains NaN",
            case=context,
            cause="logsumexp over states that are all −inf has a NaN gradient: give unreachable states a huge"
            " finite negative (torch.finfo(dtype).min) instead of −inf",
        )


# ----------------------------------------------------------------------------- cca


def _views(n: int, p: int, q: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views sharing a 2-D latent (correlations well apart), with different scales and offsets."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 0.6], dtype=torch.float64)
    mix_x = torch.randn(2, p, generator=generator, dtype=torch.float64)
    mix_y = torch.randn(2, q, generator=generator, dtype=torch.float64)
    x = latent @ mix_x + 0.5 * torch.randn(n, p, generator=generator, dtype=torch.float64) + 3.0
    y = (latent @ mix_y + 0.5 * torch.randn(n, q, generator=generator, dtype=torch.float64)) * 4.0 - 1.0
    return x.to(dtype), y.to(dtype)


def _cca_variant(x, y, k, eps=1e-6, *, centre=True, whiten=True, squared=False, ascending="", ddof=1):
    xc, yc = (x - x.mean(0), y - y.mean(0)) if centre else (x, y)
    n = x.shape[0] - ddof

    def inv_sqrt(c):
        values, vectors = torch.linalg.eigh(c + eps * torch.eye(c.shape[0], dtype=c.dtype))
        return vectors @ torch.diag(values.rsqrt()) @ vectors.T

    wx = inv_sqrt(xc.T @ xc / n) if whiten else torch.eye(x.shape[1], dtype=x.dtype)
    wy = inv_sqrt(yc.T @ yc / n) if whiten else torch.eye(y.shape[1], dtype=y.dtype)
    m = wx @ (xc.T @ yc / n) @ wy
    if ascending:  # eigh's order, on M Mᵀ (the x side: p values, zeros first when p > q) or on Mᵀ M
        return torch.linalg.eigvalsh(m @ m.T if ascending == "x" else m.T @ m).clamp(min=0).sqrt()[:k]
    s = torch.linalg.svdvals(m)
    return s[:k] ** 2 if squared else s[:k]


def check_cca(learner, reference) -> None:
    cases = [
        Case("N=400, p=4, q=3, k=2: views sharing a 2-D latent, offset and scaled", (*_views(400, 4, 3, 0), 2)),
        Case("N=300, p=3, q=5, k=3", (*_views(300, 3, 5, 1), 3)),
        Case("float32, N=500, p=2, q=2, k=1", (*_views(500, 2, 2, 2, torch.float32), 1)),
    ]
    mistakes = [
        Mistake("the data is not centred first", functools.partial(_cca_variant, centre=False)),
        Mistake(
            "the SVD of Σxy itself: whiten with Σxx^(−½) and Σyy^(−½) first, or the values are covariances,"
            " not correlations",
            functools.partial(_cca_variant, whiten=False),
        ),
        Mistake(
            "squared correlations: the eigenvalues of Σxx⁻¹ Σxy Σyy⁻¹ Σyx are ρ², take their square roots",
            functools.partial(_cca_variant, squared=True),
        ),
        Mistake("the correlations come in ascending order", functools.partial(_cca_variant, ascending="x")),
        Mistake("the correlations come in ascending order", functools.partial(_cca_variant, ascending="y")),
    ]
    for case in cases:
        x, y, k = case.args
        context = "cca: " + case.label
        got = expect_tuple(
            invoke(learner, x.clone(), y.clone(), k, context=context), ("correlations", "w_x", "w_y"), context
        )
        correlations, w_x, w_y = reference(x, y, k)
        tolerance = 1e-6 if x.dtype == torch.float64 else 1e-3
        expect_close(
            got[0], correlations, context + "; the correlations", args=case.args, mistakes=mistakes, atol=tolerance
        )
        for name, value, expected in (("w_x", got[1], w_x), ("w_y", got[2], w_y)):
            expect_tensor(value, expected, f"{context}; {name}")
        _check_projections(got[1], got[2], x, y, correlations, context, tolerance)


def _check_projections(w_x, w_y, x, y, correlations, context: str, tolerance: float) -> None:
    """The canonical variates: unit variance, uncorrelated, and pairwise correlations as returned."""
    px, py = (x - x.mean(0)) @ w_x.detach(), (y - y.mean(0)) @ w_y.detach()  # (N, k)
    n, k = px.shape
    cov_x, cov_y, cross = px.T @ px / (n - 1), py.T @ py / (n - 1), px.T @ py / (n - 1)
    eye = torch.eye(k, dtype=px.dtype)
    for name, cov in (("x", cov_x), ("y", cov_y)):
        if not torch.allclose(cov, eye, atol=10 * tolerance):
            diagonal = ", ".join(f"{v:.4g}" for v in cov.diagonal().tolist())
            raise CheckFailure(
                f"the projected {name} (centred {name} @ w_{name}) lacks unit variance and uncorrelated columns",
                case=context,
                expected="the identity covariance (unbiased, 1/(N − 1))",
                got=f"variances [{diagonal}]",
                cause=f"w_{name} must be Σ{name}{name}^(−½) times the singular vectors, not the singular vectors"
                " alone; a 1/N covariance is off by N/(N − 1)",
            )
    if not torch.allclose(cross.diagonal(), correlations.to(cross.dtype), atol=10 * tolerance):
        raise CheckFailure(
            "column i of the two projections does not correlate by correlations[i]",
            case=context,
            expected=describe(correlations),
            got=describe(cross.diagonal()),
            cause="w_y's columns must pair with w_x's: take both from the same SVD (U[:, :k] and V[:, :k];"
            " torch.linalg.svd returns Vᵀ, so V[:, :k] is vh[:k].T), and flip a pair's signs together",
        )


# ----------------------------------------------------------------------------- gradient_reversal


def check_gradient_reversal(learner, reference) -> None:
    cases = [
        Case("λ = 0.5 on a (4, 3) feature batch", (random_rows(4, 3, 0), 0.5)),
        Case("λ = 1", (random_rows(2, 5, 1), 1.0)),
        Case("λ = 0: no gradient reaches the features", (random_rows(3, 2, 2), 0.0)),
        Case("λ = 2.5, float64, (6,)", (random_rows(1, 6, 3, dtype=torch.float64)[0], 2.5)),
    ]
    forward_mistakes = [
        Mistake("the forward pass is multiplied by −λ; it must be the identity", lambda x, lambd: -lambd * x),
        Mistake("the forward pass is negated; it must be the identity", lambda x, lambd: -x),
    ]
    check_cases(learner, reference, cases, mistakes=forward_mistakes, atol=0, rtol=0)
    for case in cases:
        x, lambd = case.args
        context = "gradient_reversal: " + case.label + " (gradient check)"
        leaf = x.clone().requires_grad_(True)
        out = invoke(learner, leaf, lambd, context=context)
        expect_tensor(out, x, context)
        upstream = random_rows(1, x.numel(), 9, dtype=x.dtype).view_as(x)
        direct = random_rows(1, x.numel(), 10, dtype=x.dtype).view_as(x)  # x is also used outside the layer
        if not out.requires_grad:
            raise CheckFailure(
                "the result is not connected to the autograd graph",
                case=context,
                cause="return `GradientReversal.apply(x, lambd)`; do not detach in forward()",
            )
        loss = (out * upstream).sum() + (leaf * direct).sum()
        invoke(loss.backward, context=context)
        through_layer = leaf.grad - direct
        if not torch.allclose(through_layer, -lambd * upstream, atol=1e-6, rtol=1e-6):
            ratio = float((through_layer * upstream).sum() / (upstream * upstream).sum())
            every_use = torch.allclose(leaf.grad, -lambd * (upstream + direct), atol=1e-6, rtol=1e-6)
            raise CheckFailure(
                "wrong gradient: the upstream gradient times −λ must reach the input through the layer",
                case=context,
                expected=f"−λ·upstream = {-lambd:g}·upstream, plus the gradient of x's other use unchanged",
                got=f"about {ratio:.4g}·upstream through the layer",
                cause=_reversal_cause(ratio, lambd, every_use),
            )


def _reversal_cause(ratio: float, lambd: float, every_use: bool) -> str:
    if every_use:
        return (
            "every gradient that reaches x is reversed, also the one from its use outside the layer: a hook"
            " registered on x itself? Register it on a copy (`x.clone()`), or use a torch.autograd.Function"
        )
    if math.isclose(ratio, 0.0, abs_tol=1e-5):
        return "no gradient came back through the layer: forward() detached the input or backward() returned None"
    if math.isclose(ratio, lambd, abs_tol=1e-5):
        return "the gradient is scaled by +λ: reverse it (−λ)"
    if math.isclose(ratio, 1.0, abs_tol=1e-5):
        return "the gradient passes through unchanged: backward() must return −λ·grad_output"
    if math.isclose(ratio, -1.0, abs_tol=1e-5):
        return "the gradient is negated but not scaled by λ"
    return "backward() must return −λ·grad_output for x (and None for λ)"


# ----------------------------------------------------------------------------- vsepp_loss


def _vsepp(
    image,
    text,
    margin=0.2,
    max_violation=True,
    *,
    directions="both",
    mask_positives=True,
    reduce="sum",
    axes=(1, 0),
    image_positive_for_captions=False,
):
    scores = image @ text.T
    positive = scores.diagonal()
    cost_caption = (margin + scores - positive[:, None]).clamp(min=0)
    caption_positive = positive[:, None] if image_positive_for_captions else positive[None, :]
    cost_image = (margin + scores - caption_positive).clamp(min=0)
    if mask_positives:
        keep = ~torch.eye(len(scores), dtype=torch.bool)
        cost_caption, cost_image = cost_caption * keep, cost_image * keep
    if max_violation:
        cost_caption, cost_image = cost_caption.amax(dim=axes[0]), cost_image.amax(dim=axes[1])
    total = {"both": cost_caption.sum() + cost_image.sum(), "i2t": cost_caption.sum(), "t2i": cost_image.sum()}
    value = total[directions]
    return value / len(scores) if reduce == "mean" else value


def check_vsepp_loss(learner, reference) -> None:
    image, text = unit_rows(8, 6, 0), unit_rows(8, 6, 1)
    close = F.normalize(image + 0.4 * random_rows(8, 6, 2), dim=-1)
    cases = [
        Case("N=8 random pairs, hardest negatives", (image, text)),
        Case("N=8 near pairs, every negative (max_violation=False)", (image, close), {"max_violation": False}),
        Case("N=8 near pairs, margin 0.5, hardest negatives", (image, close), {"margin": 0.5}),
        Case("N=1: no negative, so the loss is 0", (image[:1], text[:1])),
        Case("float64, N=5", (unit_rows(5, 4, 3, dtype=torch.float64), unit_rows(5, 4, 4, dtype=torch.float64))),
    ]
    mistakes = [
        Mistake("only the image→caption direction", functools.partial(_vsepp, directions="i2t")),
        Mistake("only the caption→image direction", functools.partial(_vsepp, directions="t2i")),
        Mistake(
            "the positive pair is not excluded: its own hinge [margin − s(i,i) + s(i,i)]₊ = margin is counted",
            functools.partial(_vsepp, mask_positives=False),
        ),
        Mistake(
            "a mean over the batch; the contract (and the paper's code) sums", functools.partial(_vsepp, reduce="mean")
        ),
        Mistake(
            "max_violation is ignored: the sum over every negative is returned",
            lambda i, t, margin=0.2, max_violation=True: _vsepp(i, t, margin, False),
        ),
        Mistake(
            "the hardest negative is taken over the wrong axis: for image i it is the max over captions j (along"
            " row i), for caption i the max over images j (along column i)",
            functools.partial(_vsepp, axes=(0, 1)),
        ),
        Mistake(
            "the caption→image hinge subtracts the image's positive: for caption j against image i it is"
            " [margin − s(j, j) + s(i, j)]₊, not [margin − s(i, i) + s(i, j)]₊",
            functools.partial(_vsepp, image_positive_for_captions=True),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes)
    check_gradients(learner, reference, cases[2], wrt=["image_features", "text_features"])

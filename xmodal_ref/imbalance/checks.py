"""Checks for chapter 06 · imbalance."""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..grading.harness import (
    Case,
    Mistake,
    check_cases,
    describe,
    describe_case,
    expect_close,
    expect_python_number,
    expect_tensor,
    expect_tuple,
    invoke,
    run_case,
)
from ..grading.verdict import CheckFailure


def _unimodal_logits(
    batch: int, classes: int, margins: tuple[float, float], seed: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of A and V whose true class is lifted by ``margins`` (a larger margin = a more confident modality)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (batch,), generator=generator)
    onehot = F.one_hot(labels, classes).to(torch.float64)
    a, v = (torch.randn(batch, classes, generator=generator, dtype=torch.float64) + m * onehot for m in margins)
    return a.to(dtype), v.to(dtype), labels


def _ogm_score(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> float:
    """A modality's batch score: the contract's summed true-class probability, or a mistaken variant."""
    logits = logits.detach().double()
    true_class = labels[:, None]  # (B, 1)
    per_sample = {
        "probability": lambda: logits.softmax(-1).gather(1, true_class),
        "logit": lambda: logits.gather(1, true_class),
        "accuracy": lambda: (logits.argmax(-1) == labels).double(),
        "max probability": lambda: logits.softmax(-1).amax(-1),
        "batch softmax": lambda: logits.softmax(0).gather(1, true_class),
    }[kind]()
    return per_sample.sum().item()


def _ogm_variant(
    logits_a, logits_v, labels, alpha, *, score="probability", ratio="own", form="tanh", modulate="dominant"
) -> tuple[float, float]:
    """(k_a, k_v) computed with one convention changed; the defaults give the contract."""
    score_a, score_v = (_ogm_score(logits, labels, score) for logits in (logits_a, logits_v))
    rho = {"a": score_a / score_v, "v": score_v / score_a}
    if ratio == "other":  # the dominant modality reads the other modality's ratio (< 1)
        rho = {"a": rho["v"], "v": rho["a"]}
    coefficient = {
        "tanh": lambda r: 1.0 - math.tanh(alpha * r),
        "rho - 1": lambda r: 1.0 - math.tanh(alpha * (r - 1.0)),
        "no alpha": lambda r: 1.0 - math.tanh(r),
    }[form]
    dominant = "a" if score_a > score_v else "v"
    k = {"a": 1.0, "v": 1.0}
    if modulate == "both":
        k = {u: coefficient(rho[u]) for u in k}
    elif modulate == "weak":
        k["v" if dominant == "a" else "a"] = coefficient(rho[dominant])
    elif modulate == "tie to a":  # the official main.py: `if ratio_v > 1: … else: coeff_a = …`
        k["v" if score_v > score_a else "a"] = coefficient(rho["v" if score_v > score_a else "a"])
    elif score_a != score_v:
        k[dominant] = coefficient(rho[dominant])
    return k["a"], k["v"]


def check_ogm_ge_coefficients(learner, reference) -> None:
    a_leads = _unimodal_logits(16, 5, (3.0, 0.8), 0)
    *model_logits, model_labels = _unimodal_logits(8, 4, (2.0, 0.0), 4)
    cases = [
        Case("A leads (16 samples, 5 classes), alpha = 0.5", (*a_leads, 0.5)),
        Case("V leads (10 samples, 3 classes), alpha = 1.0", (*_unimodal_logits(10, 3, (0.5, 2.5), 1), 1.0)),
        Case("near-equal scores, A slightly ahead, alpha = 0.8", (*_unimodal_logits(24, 4, (1.55, 1.5), 2), 0.8)),
        Case(
            "float64, V leads, alpha = 0.3",
            (*_unimodal_logits(12, 6, (1.0, 4.0), 3, dtype=torch.float64), 0.3),
        ),
        Case(
            "logits that require grad (as a model returns them), alpha = 2.0",
            (*(x.requires_grad_() for x in model_logits), model_labels, 2.0),
        ),
        Case("an exact tie (logits_a == logits_v): nobody dominates", (a_leads[0], a_leads[0], a_leads[2], 0.5)),
        Case("alpha = 0: no modulation", (*a_leads, 0.0)),
    ]
    mistakes = [
        Mistake(
            "an exact tie goes to an else branch that modulates A (as the official main.py does); the contract"
            " gives (1.0, 1.0) when s_a == s_v",
            functools.partial(_ogm_variant, modulate="tie to a"),
        ),
        Mistake(
            "the ratio is inverted: the dominant modality's ρ_u = s_u / s_other is > 1 (you used s_other / s_u)",
            functools.partial(_ogm_variant, ratio="other"),
        ),
        Mistake(
            "the coefficient is applied to the weak modality; only the dominant one (ratio > 1) is slowed down",
            functools.partial(_ogm_variant, modulate="weak"),
        ),
        Mistake(
            "both modalities are modulated; the weaker one keeps k = 1.0",
            functools.partial(_ogm_variant, modulate="both"),
        ),
        Mistake("α is missing from the tanh: k_u = 1 − tanh(α·ρ_u)", functools.partial(_ogm_variant, form="no alpha")),
        Mistake(
            "the coefficient uses ρ − 1; Eq. 10 uses ρ itself: k_u = 1 − tanh(α·ρ_u)",
            functools.partial(_ogm_variant, form="rho - 1"),
        ),
        Mistake(
            "the scores sum the raw logits of the true class; use softmax probabilities of the true class",
            functools.partial(_ogm_variant, score="logit"),
        ),
        Mistake(
            "the scores count correct predictions (accuracy); use the softmax probability of the true class",
            functools.partial(_ogm_variant, score="accuracy"),
        ),
        Mistake(
            "the scores take the maximum probability of each row; use the probability of the true class labels[i]",
            functools.partial(_ogm_variant, score="max probability"),
        ),
        Mistake(
            "the softmax runs over the batch axis; take it over the classes (the last axis)",
            functools.partial(_ogm_variant, score="batch softmax"),
        ),
    ]
    for case in cases:  # the contract returns Python floats: a 0-dim tensor or an int 1 is not one
        got, _ = run_case(learner, reference, case)
        context = describe_case(case, reference)
        for name, value in zip(("k_a", "k_v"), expect_tuple(got, ("k_a", "k_v"), context), strict=True):
            if not isinstance(value, float):
                raise CheckFailure(
                    f"`{name}` is a {type(value).__name__}, not a Python float",
                    case=context,
                    got=describe(value),
                    cause="convert with float(...) or .item(), and write 1.0 for an unmodulated modality",
                )
    check_cases(learner, reference, cases, mistakes=mistakes, outputs=("k_a", "k_v"))


def _gradient(shape: tuple[int, ...], scale: float, seed: int, *, mean: float = 0.0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale + mean).to(dtype)


def _call_modulate(learner, grads, coeff, context, **kwargs) -> list[torch.Tensor]:
    """The learner's result for copies of ``grads``: a list of tensors like them; the inputs unchanged."""
    copies = [g.clone() for g in grads]
    out = invoke(learner, copies, coeff, context=context, **kwargs)
    if not isinstance(out, (list, tuple)) or len(out) != len(grads):
        raise CheckFailure(
            f"expected a list of {len(grads)} tensors, one per gradient",
            case=context,
            got=describe(out) if not isinstance(out, (list, tuple)) else f"{len(out)} values",
        )
    for i, (before, after) in enumerate(zip(grads, copies, strict=True)):
        if not torch.equal(before, after):
            raise CheckFailure(
                f"modified its input grads[{i}] in place",
                case=context,
                cause="`g.mul_(coeff)` or `g.add_(noise)` changes the caller's tensor (the official code assigns"
                " .grad in place; this exercise is functional): build new tensors",
            )
    return [expect_tensor(o, g, context) for o, g in zip(out, grads, strict=True)]


def _check_without_noise(learner, reference) -> None:
    grads = [_gradient((4, 3), 0.5, 0), _gradient((10,), 2.0, 1), _gradient((2, 5), 0.1, 2, dtype=torch.float64)]
    coeff = 0.3
    context = f"ogm_ge_modulate(grads, coeff={coeff}, enhance=False): {describe(grads)}"
    got = _call_modulate(learner, grads, coeff, context, enhance=False)
    expected = reference(grads, coeff, enhance=False)
    for i, (g, o, e) in enumerate(zip(grads, got, expected, strict=True)):
        x, y = g.double().flatten(), o.double().flatten()
        unexplained = y - (x @ y) / (x @ x) * x  # what no multiple of the gradient explains
        if unexplained.std().item() > 1e-3 * y.std().item():
            raise CheckFailure(
                f"grads[{i}] is not a multiple of the gradient",
                case=context,
                cause="noise is added although enhance is False: add GE noise only when enhance is True",
            )
        mistakes = [
            Mistake("coeff is not applied: g̃ = coeff · g", lambda g=g: g),
            Mistake("the gradient is divided by coeff; multiply it: g̃ = coeff · g", lambda g=g: g / coeff),
            Mistake(
                "the gradient is scaled by 1 − coeff; the coefficient itself multiplies it", lambda g=g: (1 - coeff) * g
            ),
        ]
        expect_close(o, e, f"{context}; output [{i}]", mistakes=mistakes, atol=1e-6, rtol=1e-6)


def _check_generator(learner) -> None:
    grads = [_gradient((30, 20), 0.2, 3), _gradient((500,), 1.5, 4)]
    context = f"ogm_ge_modulate(grads, coeff=0.5, enhance=True, generator=…): {describe(grads)}"

    def run(global_seed: int, generator_seed: int | None) -> list[torch.Tensor]:
        torch.manual_seed(global_seed)
        generator = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)
        return _call_modulate(learner, grads, 0.5, context, enhance=True, generator=generator)

    def same(x: list[torch.Tensor], y: list[torch.Tensor]) -> bool:
        return all(torch.equal(a, b) for a, b in zip(x, y, strict=True))

    with torch.random.fork_rng():
        if not same(run(1, 7), run(2, 7)):
            raise CheckFailure(
                "two calls with identically seeded generators returned different tensors",
                case=context,
                cause="the noise ignores `generator`: pass it to the sampler (`.normal_(0, σ, generator=generator)`"
                " or `torch.randn(…, generator=generator)`)",
            )
        if same(run(1, 7), run(1, 8)):
            raise CheckFailure(
                "generators seeded 7 and 8 gave identical tensors",
                case=context,
                cause="no noise is drawn from `generator` (a fixed seed, or no noise at all with enhance=True)",
            )
        if same(run(1, None), run(2, None)):
            raise CheckFailure(
                "with generator=None, global seeds 1 and 2 gave identical tensors",
                case=context,
                cause="without a generator the noise must come from the global RNG (torch.manual_seed)",
            )


def _noise_cause(residual: torch.Tensor, sigma: float, coeff: float, pooled: float) -> str:
    """Name what the residual r = g̃ − coeff·g (the noise, if the rest is right) points to."""
    spread = residual.std().item()
    if not bool(residual.any()):
        if coeff == 1.0:
            return (
                "no noise when coeff = 1: the official code adds GE noise to both modalities, the unmodulated"
                " one included"
            )
        return "no noise although enhance is True"
    if spread < 1e-3 * sigma:
        return "one noise value for the whole tensor: draw ε i.i.d. per element (zeros_like(g).normal_(…))"
    if math.isclose(spread, coeff * sigma, rel_tol=0.05):
        return (
            "the noise's scale is coeff · σ: take σ from the unscaled gradient g (not from coeff·g), and do not"
            " scale the noise by coeff"
        )
    if math.isclose(spread, sigma**2, rel_tol=0.05):
        return "the noise's standard deviation is σ², the variance: normal_(0, std) takes a standard deviation"
    if math.isclose(spread, 1.0, rel_tol=0.05):
        return "unit-variance noise: scale it by σ = g.std() + 1e-8"
    if math.isclose(spread, pooled, rel_tol=0.05):
        return "σ is pooled over every tensor; compute it per tensor"
    return "the noise's scale is not σ = g.std() + 1e-8 of the unscaled gradient, per tensor"


def _check_noise_statistics(learner) -> None:
    grads = [
        _gradient((200, 150), 0.01, 5),
        _gradient((40_000,), 3.0, 6, mean=0.5),
        _gradient((64, 3, 7, 7), 0.2, 7, dtype=torch.float64),
    ]
    pooled = torch.cat([g.double().flatten() for g in grads]).std().item()
    for seed, coeff in enumerate((0.3, 1.0, 0.05)):
        context = f"ogm_ge_modulate(grads, coeff={coeff}, enhance=True, generator=seed {seed}): {describe(grads)}"
        got = _call_modulate(
            learner, grads, coeff, context, enhance=True, generator=torch.Generator().manual_seed(seed)
        )
        for i, (g, o) in enumerate(zip(grads, got, strict=True)):
            n, sigma = g.numel(), g.double().std().item() + 1e-8
            residual = (o - g * coeff).double()  # the noise ε, if the rest is right
            mean, spread = residual.mean().item(), residual.std().item()
            if abs(mean) > 5 * sigma / math.sqrt(n):
                centred = math.isclose(mean, g.double().mean().item(), rel_tol=0.1)
                raise CheckFailure(
                    f"grads[{i}]: the noise g̃ − coeff·g has mean {mean:.4g}",
                    case=context,
                    expected=f"≈ 0 (|mean| ≤ {5 * sigma / math.sqrt(n):.3g})",
                    cause="the noise is centred on the gradient's mean; GE noise is N(0, σ²)"
                    if centred
                    else _noise_cause(residual, sigma, coeff, pooled),
                )
            if abs(spread / sigma - 1) > 6 / math.sqrt(2 * n) + 1e-3:
                raise CheckFailure(
                    f"grads[{i}]: the noise g̃ − coeff·g has standard deviation {spread:.4g}",
                    case=context,
                    expected=f"σ = g.std() + 1e-8 = {sigma:.4g} (within {6 / math.sqrt(2 * n) + 1e-3:.1%})",
                    cause=_noise_cause(residual, sigma, coeff, pooled),
                )


def check_ogm_ge_modulate(learner, reference) -> None:
    _check_without_noise(learner, reference)
    _check_generator(learner)
    _check_noise_statistics(learner)


def _losses(heads: int, seed: int, dtype: torch.dtype, *, shrinking: bool = False) -> tuple[torch.Tensor, ...]:
    """Train / validation losses at N and N + n with ΔG > 0 and ΔO ≠ 0, all multiples of 1/64 (exact in float32).

    The gap O = L_val − L_train grows (ΔO > 0), or shrinks for every head when ``shrinking``.
    """
    generator = torch.Generator().manual_seed(seed)

    def steps(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (heads,), generator=generator, dtype=torch.float64) / 64

    train_start = steps(96, 160)  # 1.5 … 2.5
    val_start = train_start + steps(4, 32)  # a gap of 0.06 … 0.5
    val_end = val_start - steps(8, 40)  # ΔG ∈ [0.125, 0.6]
    change = -steps(2, 8) if shrinking else steps(6, 40)  # ΔO = (train loss fall) − ΔG
    train_fall = val_start - val_end + change  # > 0: the train loss falls too
    train_end = train_start - train_fall
    return tuple(t.to(dtype) for t in (train_start, val_start, train_end, val_end))


def _blend_variant(
    train_start, val_start, train_end, val_end, *, overfit="delta gap", gain="val", power=2, invert=False, norm="sum"
) -> torch.Tensor:
    """G-Blend weights with one convention changed; the defaults give the contract."""
    t0, v0, t1, v1 = (x.double() for x in (train_start, val_start, train_end, val_end))
    overfitting = {"delta gap": (v1 - t1) - (v0 - t0), "end gap": v1 - t1, "train loss": t1 - t0}[overfit]
    generalisation = v0 - v1 if gain == "val" else t0 - t1
    raw = overfitting**power / generalisation if invert else generalisation / overfitting**power
    weights = {"sum": raw / raw.sum(), "softmax": raw.softmax(-1), "none": raw}[norm]
    return weights.to(train_start.dtype)


def check_gradient_blending_weights(learner, reference) -> None:
    cases = [
        Case("K = 3 heads (A, V, fused), float32", _losses(3, 0, torch.float32)),
        Case("K = 2, float64", _losses(2, 1, torch.float64)),
        Case("K = 4, float32", _losses(4, 2, torch.float32)),
        Case("K = 3, float64, every gap shrinks (ΔO < 0)", _losses(3, 3, torch.float64, shrinking=True)),
    ]
    mistakes = [
        Mistake(
            "the weights are not normalised: divide ΔG/ΔO² by its sum over the heads",
            functools.partial(_blend_variant, norm="none"),
        ),
        Mistake(
            "normalised with a softmax; the contract divides by the sum",
            functools.partial(_blend_variant, norm="softmax"),
        ),
        Mistake(
            "the ratio is inverted: w ∝ ΔG / ΔO² (generalisation over squared overfitting), not ΔO² / ΔG",
            functools.partial(_blend_variant, invert=True),
        ),
        Mistake(
            "ΔO is not squared: w ∝ ΔG / ΔO²",
            functools.partial(_blend_variant, power=1),
        ),
        Mistake(
            "overfitting is measured as the change of the train loss; O is the gap L_val − L_train",
            functools.partial(_blend_variant, overfit="train loss"),
        ),
        Mistake(
            "ΔO is the gap at N + n only (MultiBench's default shortcut); the contract uses its change from N to N + n",
            functools.partial(_blend_variant, overfit="end gap"),
        ),
        Mistake(
            "ΔG comes from the train loss; it is the drop of the validation loss (it stands for the true loss)",
            functools.partial(_blend_variant, gain="train"),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes, atol=1e-6, rtol=1e-5)


class DiagnosisMLP(nn.Module):
    """A fixed random MLP over M modalities: the flattened inputs, concatenated, → tanh hidden layer → C logits."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], classes: int, seed: int, hidden: int = 24) -> None:
        super().__init__()
        self.shapes = [tuple(shape) for shape in shapes]
        with torch.random.fork_rng():  # seeded weights, the caller's global RNG untouched
            torch.manual_seed(seed)
            self.hidden = nn.Linear(sum(math.prod(shape) for shape in self.shapes), hidden)
            self.out = nn.Linear(hidden, classes)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([x.flatten(1).float() for x in inputs], dim=1)  # (B, Σ prod(S_m))
        return self.out(torch.tanh(3 * self.hidden(joint)))  # (B, C)

    def __repr__(self) -> str:
        shapes = ", ".join(str(shape) for shape in self.shapes)
        return f"a fixed random MLP over modalities of sample shapes {shapes} → {self.out.out_features} logits"


def _diagnosis_batch(
    model: DiagnosisMLP, batch: int, seed: int, flip: float = 0.3
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Seeded inputs for ``model`` and labels equal to its own predictions, a fraction ``flip`` of them changed."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(batch, *shape, generator=generator) for shape in model.shapes]
    with torch.no_grad():
        labels = model(*inputs).argmax(dim=-1)
    classes = model.out.out_features
    flipped = torch.rand(batch, generator=generator) < flip
    shift = torch.randint(1, classes, (batch,), generator=generator)
    return inputs, torch.where(flipped, (labels + shift) % classes, labels)


def _diagnosis_accuracy(model, inputs: list[torch.Tensor], labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(*inputs).argmax(dim=-1) == labels).double().mean().item()


def _check_diagnosis_scores(
    learner, reference, cases: Sequence[Case], mistakes: Sequence[Mistake], *, atol: float, rtol: float = 0.0
) -> None:
    """Compare Python-float results case by case, naming a mistake only when it explains every case.

    An accuracy takes few values, so one wrong solution can match another mistake on a single case by
    chance; a mistake that reproduces the learner's results on all cases is the likely one.
    """
    results = [(case, *run_case(learner, reference, case)) for case in cases]
    for case, got, expected in results:
        expect_python_number(got, describe_case(case, reference), describe(expected))

    def explains(mistake: Mistake) -> bool:
        for case, got, _ in results:
            try:
                value = mistake.compute(*case.args, **case.kwargs)
            except Exception:
                return False
            if not math.isclose(float(value), float(got), rel_tol=rtol, abs_tol=atol):
                return False
        return True

    for case, got, expected in results:
        if not math.isclose(float(got), expected, rel_tol=rtol, abs_tol=atol):
            context = describe_case(case, reference)
            named = [m for m in mistakes if explains(m)]
            expect_close(
                got,
                expected,
                context,
                args=case.args,
                kwargs=case.kwargs,
                mistakes=named or mistakes,
                atol=atol,
                rtol=rtol,
            )


def _expect_zero_not_nan(learner, reference, case: Case, cause: str) -> None:
    """A case whose correct result is 0.0 by a rule of the contract; a 0/0 must not leak out as NaN or an error."""
    context = describe_case(case, reference)
    try:
        got, expected = run_case(learner, reference, case)
    except CheckFailure as failure:
        if "ZeroDivisionError" not in failure.problem:
            raise
        raise CheckFailure(failure.problem, case=context, cause=cause) from None
    expect_python_number(got, context, describe(expected))
    if isinstance(got, float) and math.isnan(got):
        raise CheckFailure("returned NaN", case=context, expected=describe(expected), got="nan", cause=cause)
    expect_close(got, expected, context, atol=1e-12, rtol=0.0)


def _perceptual_variant(
    model,
    inputs,
    labels,
    modality,
    permutations,
    *,
    normalise: str = "accuracy",
    moved: Callable[[int, int], list[int]] = lambda modality, count: [modality],
    scatter: bool = False,
    permute_labels: bool = False,
    first_only: bool = False,
    confidence: bool = False,
) -> float:
    """The perceptual score with switches for the usual mistakes."""

    def measure(xs: list[torch.Tensor], ys: torch.Tensor) -> float:
        if not confidence:
            return _diagnosis_accuracy(model, xs, ys)
        with torch.no_grad():
            return model(*xs).softmax(dim=-1).gather(1, ys[:, None]).double().mean().item()

    intact = measure(inputs, labels)
    rows = permutations[:1] if first_only else permutations
    targets = moved(modality, len(inputs))
    scores = []
    for order in rows:
        index = order.argsort() if scatter else order
        shuffled = [x[index] if m in targets else x for m, x in enumerate(inputs)]
        scores.append(measure(shuffled, labels[index] if permute_labels else labels))
    permuted = sum(scores) / len(scores)
    if normalise == "none":
        return intact - permuted
    if normalise == "kept":
        return permuted / intact
    return (intact - permuted) / intact if intact else 0.0


def _perceptual_permutations(count: int, batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(batch, generator=generator) for _ in range(count)])  # (P, B)


class AlwaysClassZero(nn.Module):
    """Predicts class 0 for every sample, whatever the inputs."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(inputs[0].shape[0], 3)
        logits[:, 0] = 1.0 + inputs[0].flatten(1)[:, 0].abs()
        return logits

    def __repr__(self) -> str:
        return "a model that always predicts class 0"


def check_perceptual_score(learner, reference) -> None:
    cases = []
    for shapes, batch, modality, count, seed in (
        (((6,), (2, 3)), 150, 0, 5, 0),
        (((6,), (2, 3)), 150, 1, 4, 0),
        (((4,), (5,), (3,)), 120, 2, 6, 1),
        (((4,), (5,), (3,)), 120, 1, 1, 1),
        (((4,), (5,), (3,)), 120, 0, 5, 2),
    ):
        model = DiagnosisMLP(shapes, classes=4, seed=seed)
        inputs, labels = _diagnosis_batch(model, batch, seed=seed + 10)
        label = f"M = {len(shapes)}, B = {batch}, permuting modality {modality}, P = {count}"
        cases.append(Case(label, (model, inputs, labels, modality, _perceptual_permutations(count, batch, seed + 20))))
    others = functools.partial(
        _perceptual_variant, moved=lambda modality, count: [m for m in range(count) if m != modality]
    )
    mistakes = [
        Mistake(
            "the drop acc − mean acc_p is not divided by the intact accuracy acc",
            functools.partial(_perceptual_variant, normalise="none"),
        ),
        Mistake(
            "mean acc_p / acc, the fraction of the accuracy that survives; the score is 1 minus that",
            functools.partial(_perceptual_variant, normalise="kept"),
        ),
        *(
            Mistake(
                "another modality is permuted instead of inputs[modality]",
                functools.partial(_perceptual_variant, moved=lambda modality, count, k=k: [(modality + k) % count]),
            )
            for k in (1, -1)  # the next or the previous one
        ),
        Mistake("every modality except inputs[modality] is permuted", others),
        Mistake(
            "a scatter (x_new[p] = x: sample p[i] receives sample i's features); the contract gathers x[p],"
            " so sample i receives sample p[i]'s features",
            functools.partial(_perceptual_variant, scatter=True),
        ),
        Mistake(
            "the labels are permuted together with the modality; only the modality's features move",
            functools.partial(_perceptual_variant, permute_labels=True),
        ),
        Mistake(
            "only the first permutation is used; average acc_p over all P rows of `permutations`",
            functools.partial(_perceptual_variant, first_only=True),
        ),
        Mistake(
            "the mean probability of the true class stands in for accuracy; count argmax predictions that are right",
            functools.partial(_perceptual_variant, confidence=True),
        ),
    ]
    _expect_perceptual_deterministic(learner, reference, cases[0])
    _check_diagnosis_scores(learner, reference, cases, mistakes, atol=1e-6)
    zero_model = AlwaysClassZero()
    inputs, _ = _diagnosis_batch(DiagnosisMLP(((3,), (2,)), classes=3, seed=5), 40, seed=15)
    wrong = 1 + torch.arange(40) % 2  # labels 1 and 2: the model is never right
    _expect_zero_not_nan(
        learner,
        reference,
        Case(
            "a model that is always wrong (acc = 0) → 0.0",
            (zero_model, inputs, wrong, 0, _perceptual_permutations(3, 40, 9)),
        ),
        cause="with acc = 0 the normalised score is 0/0: the contract returns 0.0 when acc == 0",
    )


def _expect_perceptual_deterministic(learner, reference, case: Case) -> None:
    """Two calls on the same arguments under different global seeds must agree: the permutations are given."""
    context = describe_case(case, reference)
    results = []
    for seed in (101, 202):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            results.append(run_case(learner, reference, case)[0])
    if isinstance(results[0], numbers.Real) and isinstance(results[1], numbers.Real) and results[0] != results[1]:
        raise CheckFailure(
            "two calls with the same arguments returned different scores",
            case=context,
            got=f"{describe(results[0])}, then {describe(results[1])}",
            cause="the given permutations are not used: the function draws its own (torch.randperm from the global"
            " RNG); permute with the rows of `permutations`",
        )


def _subset_variant(
    model,
    inputs,
    labels,
    fill,
    *,
    order: str = "bits",
    stand_in: str = "fill",
    empty_is_zero: bool = False,
) -> torch.Tensor:
    """Accuracies over every pattern of present modalities, with switches for the usual mistakes.

    order: "bits" (the contract), "msb" (modality 0 = the most significant bit), "missing" (a set bit = missing),
    "size" (subsets by size, as itertools.combinations lists them). stand_in: "fill", "zeros", "mean", "added".
    """
    count = len(inputs)
    if order == "size":
        patterns = [
            sum(1 << m for m in subset) for k in range(count + 1) for subset in itertools.combinations(range(count), k)
        ]
    else:
        patterns = list(range(2**count))
    values = []
    for pattern in patterns:
        present = [(pattern >> m) & 1 for m in range(count)]
        if order == "msb":
            present.reverse()
        elif order == "missing":
            present = [1 - bit for bit in present]
        shown = []
        for bit, x, f in zip(present, inputs, fill, strict=True):
            replacement = {"fill": f.expand_as(x), "zeros": torch.zeros_like(x), "mean": x.mean(0).expand_as(x)}
            replacement["added"] = x + f
            shown.append(x if bit else replacement[stand_in])
        values.append(0.0 if empty_is_zero and not any(present) else _diagnosis_accuracy(model, shown, labels))
    return torch.tensor(values, dtype=torch.float64)


def _subset_case(shapes: Sequence[tuple[int, ...]], batch: int, seed: int) -> Case:
    model = DiagnosisMLP(shapes, classes=3, seed=seed)
    inputs, labels = _diagnosis_batch(model, batch, seed=seed + 10)
    generator = torch.Generator().manual_seed(seed + 20)
    fill = [torch.randn(*shape, generator=generator) + 0.7 for shape in shapes]  # neither zeros nor the batch mean
    sizes = ", ".join(str(shape) for shape in shapes)
    return Case(f"M = {len(shapes)} modalities of sample shapes {sizes}, B = {batch}", (model, inputs, labels, fill))


def check_subset_accuracies(learner, reference) -> None:
    cases = [
        _subset_case(((4,), (2, 3), (5,)), 200, 0),
        _subset_case(((3,), (4,)), 150, 1),
        _subset_case(((2,), (3,), (2, 2), (4,)), 160, 2),
        _subset_case(((5,),), 100, 3),
    ]
    mistakes = [
        Mistake(
            "the bit order is reversed: modality 0 must be the least-significant bit ((s >> m) & 1)",
            functools.partial(_subset_variant, order="msb"),
        ),
        Mistake(
            "a set bit is read as missing; in the contract bit m set means modality m is present",
            functools.partial(_subset_variant, order="missing"),
        ),
        Mistake(
            "the subsets come in order of size (as itertools.combinations lists them); entry s must be the pattern"
            " whose bits are those of s",
            functools.partial(_subset_variant, order="size"),
        ),
        Mistake(
            "missing modalities are zeroed; replace them by the given fill",
            functools.partial(_subset_variant, stand_in="zeros"),
        ),
        Mistake(
            "missing modalities are replaced by the batch mean; replace them by the given fill",
            functools.partial(_subset_variant, stand_in="mean"),
        ),
        Mistake(
            "the fill is added to a missing modality; it must replace it",
            functools.partial(_subset_variant, stand_in="added"),
        ),
        Mistake(
            "entry 0 (every modality missing) is set to 0; the model must be evaluated on the all-fill input too",
            functools.partial(_subset_variant, empty_is_zero=True),
        ),
    ]
    for case in cases:
        got, expected = run_case(learner, reference, case)
        context = describe_case(case, reference)
        if isinstance(got, torch.Tensor) and got.shape != expected.shape:
            short = got.dim() == 1 and got.numel() == expected.numel() - 1
            raise CheckFailure(
                f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}",
                case=context,
                cause="one pattern is missing: the empty set (entry 0) and the full set (entry 2**M − 1) both belong"
                if short
                else "one entry per pattern of present modalities: 2**M entries",
            )
        if isinstance(got, torch.Tensor) and got.dtype != torch.float64:
            raise CheckFailure(
                f"wrong dtype: expected torch.float64, got {got.dtype}",
                case=context,
                cause="the contract returns float64 accuracies, whatever the inputs' dtype",
            )
        expect_close(got, expected, context, args=case.args, mistakes=mistakes, atol=1e-6, rtol=0.0)  # k/B, B ≤ 200


def _shapley_variant(
    subset_values: torch.Tensor,
    *,
    weighting: str = "shapley",
    skip_empty: bool = False,
    reverse: bool = False,
    empty_is_zero: bool = False,
    msb: bool = False,
    normalise: bool = False,
) -> torch.Tensor:
    """φ computed in float64 with switches for the usual mistakes; the result has the input's dtype.

    weighting: "shapley", "banzhaf" (1/2^(M−1)), "unscaled" (no division by M!), "shifted" (|S|!(M−|S|)!/M!),
    "leave_one_out" (v(N) − v(N∖{m})).
    """
    v = subset_values.double().tolist()
    if empty_is_zero:
        v[0] = 0.0
    count = len(v).bit_length() - 1
    phi = []
    for m in range(count):
        bit = 1 << (count - 1 - m if msb else m)
        total = 0.0
        for s in range(len(v)):
            size = bin(s).count("1")
            if s & bit or (skip_empty and s == 0):
                continue
            weight = {
                "shapley": math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count),
                "banzhaf": 1 / 2 ** (count - 1),
                "unscaled": math.factorial(size) * math.factorial(count - size - 1),
                "shifted": math.factorial(size) * math.factorial(count - size) / math.factorial(count),
                "leave_one_out": float(s | bit == len(v) - 1),
            }[weighting]
            total += weight * ((v[s] - v[s | bit]) if reverse else (v[s | bit] - v[s]))
        phi.append(total)
    result = torch.tensor(phi, dtype=torch.float64)
    return (result / result.sum() if normalise else result).to(subset_values.dtype)


def check_shapley_values(learner, reference) -> None:
    generator = torch.Generator().manual_seed(0)
    table = functools.partial(torch.rand, generator=generator, dtype=torch.float64)
    accuracy_like = torch.tensor([0.25, 0.61, 0.40, 0.78, 0.30, 0.66, 0.52, 0.83], dtype=torch.float64)
    cases = [
        Case("M = 3, a random table with v(∅) ≠ 0", (table(8),)),
        Case("M = 3, an accuracy-like table (v(∅) = 0.25, chance level)", (accuracy_like,)),
        Case("M = 4, float32", ((table(16) * 2 - 0.5).float(),)),
        Case("M = 4, float64, negative values too", (table(16) * 3 - 1,)),
        Case("M = 2", (table(4),)),
        Case("M = 1: φ_0 = v({0}) − v(∅)", (table(2),)),
        Case("M = 3, float32, accuracy-like", (accuracy_like.float(),)),
    ]
    mistakes = [
        Mistake(
            "every coalition gets the same weight 1/2^(M−1) (the Banzhaf value); the Shapley weight of a coalition"
            " S is |S|!(M − |S| − 1)!/M!",
            functools.partial(_shapley_variant, weighting="banzhaf"),
        ),
        Mistake(
            "the empty coalition S = ∅ is skipped; its marginal v({m}) − v(∅) counts with weight (M − 1)!/M! = 1/M",
            functools.partial(_shapley_variant, skip_empty=True),
        ),
        Mistake(
            "the marginals are reversed: v(S) − v(S ∪ {m}) instead of v(S ∪ {m}) − v(S)",
            functools.partial(_shapley_variant, reverse=True),
        ),
        Mistake(
            "v(∅) is treated as 0; the contract uses whatever the table holds at index 0",
            functools.partial(_shapley_variant, empty_is_zero=True),
        ),
        Mistake(
            "the weights |S|!(M − |S| − 1)! are not divided by M!",
            functools.partial(_shapley_variant, weighting="unscaled"),
        ),
        Mistake(
            "the weight |S|!(M − |S|)!/M! is off by one: it is |S|!(M − |S| − 1)!/M!",
            functools.partial(_shapley_variant, weighting="shifted"),
        ),
        Mistake(
            "leave-one-out, v(N) − v(N∖{m}), not the Shapley value",
            functools.partial(_shapley_variant, weighting="leave_one_out"),
        ),
        Mistake(
            "the bit order is reversed: bit m of the index (LSB = modality 0) says whether player m is in S",
            functools.partial(_shapley_variant, msb=True),
        ),
        Mistake(
            "φ is normalised to sum to 1; the contract returns it as it is",
            functools.partial(_shapley_variant, normalise=True),
        ),
    ]
    for case in cases:
        got, expected = run_case(learner, reference, case)
        expect_close(
            got, expected, describe_case(case, reference), args=case.args, mistakes=mistakes, atol=1e-6, rtol=1e-5
        )


def _ridge_variant(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes,
    l2=1.0,
    *,
    intercept: str = "centred",
    penalty: str = "sum",
    standardise: bool = False,
    targets: str = "one_hot",
    evaluate: str = "test",
    dtype: torch.dtype = torch.float64,
) -> float:
    """The ridge probe with switches for the usual mistakes.

    intercept: "centred" (the contract), "penalised" (a column of ones, shrunk with W), "none" (no centring, no
    bias), "joint" (fitted on train and test together). penalty: "sum", "mean" (l2·N), "none".
    targets: "one_hot" or "index" (one regression on the class index, rounded).
    """
    x, labels = train_features.to(dtype), train_labels
    if intercept == "joint":
        x, labels = torch.cat([x, test_features.to(dtype)]), torch.cat([train_labels, test_labels])
    if evaluate == "train":
        test_features, test_labels = train_features, train_labels
    y = F.one_hot(labels, num_classes).to(dtype) if targets == "one_hot" else labels.to(dtype)[:, None]
    test = test_features.to(dtype)
    if standardise:
        spread = x.std(dim=0)
        x, test = x / spread, test / spread
    if intercept == "penalised":
        x, test = F.pad(x, (0, 1), value=1.0), F.pad(test, (0, 1), value=1.0)
    mean_x, mean_y = (x.mean(0), y.mean(0)) if intercept in ("centred", "joint") else (0 * x[0], 0 * y[0])
    xc, yc = x - mean_x, y - mean_y
    scale = {"sum": l2, "mean": l2 * x.shape[0], "none": 0.0}[penalty]
    weight = torch.linalg.solve(xc.T @ xc + scale * torch.eye(x.shape[1], dtype=dtype), xc.T @ yc)
    scores = (test - mean_x) @ weight + mean_y
    index = scores[:, 0].round().clamp(0, num_classes - 1).long()  # used with targets == "index"
    predictions = index if targets == "index" else scores.argmax(dim=-1)
    return (predictions == test_labels).double().mean().item()


def _probe_case(
    label: str,
    seed: int,
    *,
    classes: int = 4,
    dims: int = 6,
    priors: Sequence[float] | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    l2: float = 1.0,
    train: int = 240,
    test: int = 400,
) -> Case:
    """Class means plus noise with different scales per feature, then scaled and shifted as a whole."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dims, generator=generator, dtype=torch.float64)
    spreads = torch.rand(dims, generator=generator, dtype=torch.float64) * 2.5 + 0.3
    weights = torch.tensor(priors or [1.0] * classes, dtype=torch.float64)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, dims, generator=generator, dtype=torch.float64) * 1.3
        return ((means[labels] + noise) * spreads * scale + offset).float(), labels

    (x_train, y_train), (x_test, y_test) = split(train), split(test)
    return Case(label, (x_train, y_train, x_test, y_test, classes), {"l2": l2})


def check_ridge_probe_accuracy(learner, reference) -> None:
    skewed = [0.6, 0.25, 0.1, 0.05]
    cases = [
        _probe_case("features with a large common offset (+1000)", 0, offset=1000.0),
        _probe_case("zero-mean features, skewed class priors (60/25/10/5 %)", 1, priors=skewed),
        *(
            _probe_case(
                f"tiny features (scale 0.1), skewed priors, l2 = {l2:g}", 2 + i, priors=skewed, scale=0.1, l2=l2
            )
            for i, l2 in enumerate((10.0, 30.0, 300.0))
        ),
        _probe_case("binary (C = 2), priors 70/30 %, l2 = 5", 5, classes=2, priors=[0.7, 0.3], l2=5.0),
    ]
    mistakes = [
        Mistake(
            "the intercept is penalised (a column of ones shrunk with W); centre X and Y so the bias stays unpenalised",
            functools.partial(_ridge_variant, intercept="penalised"),
        ),
        Mistake(
            "no intercept: X and Y are not centred and no bias b = μ_y − μ_x W is added",
            functools.partial(_ridge_variant, intercept="none"),
        ),
        Mistake(
            "the penalty is scaled by N (l2 on the mean of squared errors); the contract adds l2·I to X_cᵀX_c",
            functools.partial(_ridge_variant, penalty="mean"),
        ),
        Mistake("no penalty: l2 is ignored", functools.partial(_ridge_variant, penalty="none")),
        Mistake(
            "the features are standardised (divided by their standard deviation); the contract only centres them",
            functools.partial(_ridge_variant, standardise=True),
        ),
        Mistake(
            "one regression on the class index; the targets must be one-hot rows, one output per class",
            functools.partial(_ridge_variant, targets="index"),
        ),
        Mistake(
            "the accuracy on the training split; score the test split",
            functools.partial(_ridge_variant, evaluate="train"),
        ),
        Mistake(
            "the probe is fitted on train and test together: the test split leaks into the fit",
            functools.partial(_ridge_variant, intercept="joint"),
        ),
        Mistake(
            "float32 arithmetic on uncentred features (a column of ones for the bias, shrunk with W): under a large"
            " offset XᵀX is ill-conditioned; centre first and compute in float64",
            functools.partial(_ridge_variant, intercept="penalised", dtype=torch.float32),
        ),
    ]
    _check_diagnosis_scores(learner, reference, cases, mistakes, atol=1e-6)  # k/400 apart; float32 counting passes

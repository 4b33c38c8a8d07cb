"""Checks for chapter 03 · contrastive."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..grading.harness import (
    Case,
    Mistake,
    check_cases,
    check_gradients,
    describe,
    expect_close,
    invoke,
)
from ..grading.inputs import random_rows, unit_rows
from ..grading.verdict import CheckFailure

CLIP_INIT_SCALE = 1 / 0.07
FEATURES = ("image_features", "text_features")
UNSTABLE_SOFTMAX = (
    "exp() of large logits overflows: use F.cross_entropy / log_softmax / logsumexp,"
    " which subtract the row maximum first"
)


# ----------------------------------------------------------------------------- clip_loss


def _clip_directions(image, text, scale):
    logits = scale * image @ text.T  # (N, N)
    targets = torch.arange(logits.shape[0])
    return F.cross_entropy(logits, targets), F.cross_entropy(logits.T, targets)


def _near_duplicates(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs that nearly coincide, in a low dimension where negatives are close too."""
    image = unit_rows(n, d, seed)
    text = F.normalize(image + 0.05 * random_rows(n, d, seed + 1), dim=-1)
    return image, text


def check_clip_loss(learner, reference) -> None:
    cases = [
        Case("N=6 random pairs", (unit_rows(6, 16, 0), unit_rows(6, 16, 1), CLIP_INIT_SCALE)),
        Case("a batch of one pair: the loss is 0", (unit_rows(1, 8, 2), unit_rows(1, 8, 3), 14.0)),
        Case("N=32 matched pairs, scale as a 0-dim tensor", (*_near_duplicates(32, 64, 4), torch.tensor(20.0))),
        Case("N=16 in 3-D at CLIP's maximum scale 100 (logits up to ±100)", (*_near_duplicates(16, 3, 5), 100.0)),
        Case(
            "float64 features", (unit_rows(5, 8, 6, dtype=torch.float64), unit_rows(5, 8, 7, dtype=torch.float64), 7.5)
        ),
    ]
    mistakes = [
        Mistake(
            "only the image→text direction: add text→image and average the two",
            lambda i, t, s: _clip_directions(i, t, s)[0],
        ),
        Mistake(
            "only the text→image direction: add image→text and average the two",
            lambda i, t, s: _clip_directions(i, t, s)[1],
        ),
        Mistake("the two directions are summed, not averaged", lambda i, t, s: sum(_clip_directions(i, t, s))),
        Mistake(
            "divided the similarities by the scale instead of multiplying",
            lambda i, t, s: sum(_clip_directions(i, t, 1 / s)) / 2,
        ),
        Mistake(
            "logit_scale is ignored (the logits are raw cosine similarities)",
            lambda i, t, s: sum(_clip_directions(i, t, 1.0)) / 2,
        ),
        Mistake(
            "exp() applied to logit_scale, which is already the multiplier exp(t)",
            lambda i, t, s: sum(_clip_directions(i, t, torch.as_tensor(s).exp())) / 2,
        ),
        Mistake(
            "the cross-entropies are summed over the batch instead of averaged",
            lambda i, t, s: sum(_clip_directions(i, t, s)) / 2 * i.shape[0],
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes, unstable_hint=UNSTABLE_SOFTMAX)
    for case in (cases[0], cases[2]):
        check_gradients(learner, reference, case, wrt=[*FEATURES, "logit_scale"], on_sphere=FEATURES)


# ----------------------------------------------------------------------------- siglip_loss


def _siglip(image, text, scale, bias, *, signs=None, bias_inside=False, reduce_by=None):
    similarity = image @ text.T  # (N, N)
    logits = scale * (similarity + bias) if bias_inside else scale * similarity + bias
    n = logits.shape[0]
    if signs is None:
        signs = 2 * torch.eye(n, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / (reduce_by or n)


def check_siglip_loss(learner, reference) -> None:
    anti = unit_rows(12, 4, 9)
    cases = [
        Case(
            "N=8 random pairs at SigLIP's init (scale 10, bias −10)",
            (unit_rows(8, 16, 0), unit_rows(8, 16, 1), 10.0, -10.0),
        ),
        Case("a batch of one pair", (unit_rows(1, 8, 2), unit_rows(1, 8, 3), 10.0, -10.0)),
        Case(
            "N=24 matched pairs, scale and bias as 0-dim tensors",
            (*_near_duplicates(24, 32, 4), torch.tensor(5.0), torch.tensor(1.5)),
        ),
        Case(
            "N=12 in 4-D with anti-aligned positives at scale 100 (logits down to −110)",
            (anti, -anti, 100.0, -10.0),
        ),
        Case(
            "float64 features",
            (unit_rows(5, 8, 6, dtype=torch.float64), unit_rows(5, 8, 7, dtype=torch.float64), 3.0, -2.0),
        ),
    ]
    mistakes = [
        Mistake(
            "averaged over all N² pairs: the contract divides the sum by N",
            lambda i, t, s, b: _siglip(i, t, s, b, reduce_by=i.shape[0] ** 2),
        ),
        Mistake("logit_bias is left out", lambda i, t, s, b: _siglip(i, t, s, 0.0)),
        Mistake(
            "the bias is added before scaling: scale·(x·y + b), not scale·x·y + b",
            lambda i, t, s, b: _siglip(i, t, s, b, bias_inside=True),
        ),
        Mistake(
            "the labels are inverted: z must be +1 on the diagonal (matching pairs) and −1 elsewhere",
            lambda i, t, s, b: _siglip(i, t, s, b, signs=1 - 2 * torch.eye(i.shape[0], dtype=i.dtype)),
        ),
        Mistake(
            "only the matching pairs (the diagonal) are used: the N²−N negatives are missing",
            lambda i, t, s, b: -F.logsigmoid(torch.diagonal(s * i @ t.T + b)).sum() / i.shape[0],
        ),
        Mistake(
            "divided the similarities by the scale instead of multiplying",
            lambda i, t, s, b: _siglip(i, t, 1 / torch.as_tensor(s), b),
        ),
    ]
    check_cases(
        learner,
        reference,
        cases,
        mistakes=mistakes,
        unstable_hint="log(sigmoid(x)) underflows to log(0) = −inf for very negative x:"
        " use F.logsigmoid, −F.softplus(−x) or F.binary_cross_entropy_with_logits",
    )
    for case in (cases[0], cases[2]):
        check_gradients(learner, reference, case, wrt=[*FEATURES, "logit_scale", "logit_bias"], on_sphere=FEATURES)


# ----------------------------------------------------------------------------- recall_at_k


def _recall_from_ranks(ranks: torch.Tensor, positives: torch.Tensor, k: int, *, inclusive=False) -> float:
    """ranks: (Q, G) rank of every item; a hit when the best positive rank is < k (≤ k if inclusive)."""
    best = ranks.masked_fill(~positives, ranks.shape[1] + 1).min(dim=1).values
    hits = best <= k if inclusive else best < k
    return hits.double().mean().item()


def _strict_ranks(similarity):
    return (similarity.unsqueeze(1) > similarity.unsqueeze(2)).sum(dim=2)  # (Q, G)


def _positional_ranks(similarity):
    """Ranks from a (stable) descending sort: ties are broken by gallery position."""
    order = similarity.argsort(dim=1, descending=True, stable=True)
    return order.argsort(dim=1)


def _first_positive_only(similarity, positives, k):
    first = positives.float().argmax(dim=1)  # (Q,)
    only_first = torch.zeros_like(positives)
    only_first[torch.arange(len(first)), first] = True
    return _recall_from_ranks(_strict_ranks(similarity), only_first, k)


def _per_positive(similarity, positives, k):
    found = (_strict_ranks(similarity) < k) & positives
    return (found.sum() / positives.sum()).item()


def _multi_caption_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 images × 3 captions each (COCO-style): image→caption similarity (4, 12), positives (4, 12)."""
    similarity = random_rows(4, 12, seed)
    positives = torch.zeros(4, 12, dtype=torch.bool)
    for image in range(4):
        positives[image, image * 3 : image * 3 + 3] = True
    similarity[0, 0] = similarity.max() + 1  # image 0's first caption leads, image 1's third does
    similarity[1, 5] = similarity[1].max() + 1
    return similarity, positives


def check_recall_at_k(learner, reference) -> None:
    diagonal = torch.eye(6, dtype=torch.bool)
    ties = torch.zeros(5, 5)
    tied_top = random_rows(6, 6, 3)
    tied_top[diagonal] = 9.0
    tied_top[torch.arange(6), (torch.arange(6) + 1) % 6] = 9.0  # each positive ties with a negative
    many = random_rows(40, 60, 4)
    many_positives = torch.rand(40, 60, generator=torch.Generator().manual_seed(5)) < 0.05
    many_positives[torch.arange(40), torch.arange(40)] = True
    cases = [
        Case("6 queries, one positive each, k=1", (random_rows(6, 6, 0), diagonal, 1)),
        Case("6 queries, one positive each, k=3", (random_rows(6, 6, 0), diagonal, 3)),
        Case("all scores tied: every item has rank 0", (ties, torch.eye(5, dtype=torch.bool), 1)),
        Case("each positive ties with one negative at the top score", (tied_top, diagonal, 1)),
        Case("4 images × 3 captions each, image→text, k=1", (*_multi_caption_case(6), 1)),
        Case("4 images × 3 captions each, image→text, k=2", (*_multi_caption_case(7), 2)),
        Case("k larger than the gallery", (random_rows(3, 4, 8), torch.eye(3, 4, dtype=torch.bool), 10)),
        Case("40 queries × 60 items, several positives, k=5", (many, many_positives, 5)),
    ]
    mistakes = [
        Mistake(
            "a hit is counted at rank ≤ k: ranks start at 0, so the top k are ranks 0…k−1",
            lambda s, p, k: _recall_from_ranks(_strict_ranks(s), p, k, inclusive=True),
        ),
        Mistake(
            "ties are broken by position (argsort/topk): the contract ranks an item by how many"
            " items score strictly higher, so tied items share the better rank",
            lambda s, p, k: _recall_from_ranks(_positional_ranks(s), p, k),
        ),
        Mistake(
            "ties are counted against the positive (≥ instead of >): tied items share the better rank",
            lambda s, p, k: _recall_from_ranks((s.unsqueeze(1) >= s.unsqueeze(2)).sum(dim=2) - 1, p, k),
        ),
        Mistake(
            "only the first positive of each query counts: use the best-ranked of all its positives",
            _first_positive_only,
        ),
        Mistake(
            "the fraction of positives retrieved, not the fraction of queries with a hit",
            _per_positive,
        ),
        Mistake("a percentage: return a fraction in [0, 1]", lambda s, p, k: 100 * reference(s, p, k)),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- LearnableLogitScale


def check_LearnableLogitScale(learner, reference) -> None:
    close = functools.partial(expect_close, any_float_dtype=True)  # the parameter's precision is free
    context = "LearnableLogitScale() with the default arguments"
    module = invoke(learner, context=context)
    if not isinstance(module, nn.Module):
        raise CheckFailure(
            f"LearnableLogitScale() built a {type(module).__name__}, not an nn.Module",
            case=context,
            cause="subclass torch.nn.Module and call super().__init__() first",
        )
    parameters = dict(module.named_parameters())
    if list(parameters) != ["log_scale"]:
        raise CheckFailure(
            "the module must hold exactly one parameter, named `log_scale`",
            case=context,
            expected="['log_scale']",
            got=str(list(parameters)),
            cause="store log(init_scale) in `self.log_scale = nn.Parameter(...)`; the maximum is"
            " a constant, not a parameter"
            if parameters
            else "a plain tensor attribute is not a"
            " parameter, so the optimiser would never update it: wrap it in nn.Parameter",
        )
    log_scale = parameters["log_scale"]
    close(
        log_scale,
        torch.tensor(math.log(CLIP_INIT_SCALE)),
        context + ", the value of `log_scale`",
        mistakes=[
            Mistake("log_scale holds the scale itself; store its logarithm", lambda: torch.tensor(CLIP_INIT_SCALE)),
            Mistake(
                "initialised to log(0.07): CLIP's scale is 1/τ = 1/0.07 ≈ 14.29", lambda: torch.tensor(math.log(0.07))
            ),
        ],
    )
    scale = invoke(module, context=context)
    close(
        scale,
        torch.tensor(CLIP_INIT_SCALE),
        context + ", the value of forward()",
        mistakes=[
            Mistake("forward() returns log_scale: return its exp()", lambda: torch.tensor(math.log(CLIP_INIT_SCALE)))
        ],
    )
    scale.backward()
    close(
        log_scale.grad,
        torch.tensor(CLIP_INIT_SCALE),
        context + ", d forward() / d log_scale (it equals the scale, since the scale is exp(log_scale))",
    )

    custom_context = "LearnableLogitScale(init_scale=2.0, max_scale=50.0)"
    custom = invoke(learner, init_scale=2.0, max_scale=50.0, context=custom_context)
    close(invoke(custom, context=custom_context), torch.tensor(2.0), custom_context + ", forward()")
    for log_value, label in ((math.log(1000.0), "log(1000)"), (10.0, "10.0")):
        clamped_context = f"{custom_context} after setting log_scale to {label}"
        with torch.no_grad():
            custom.log_scale.fill_(log_value)
        stored = custom.log_scale.item()
        clamped = invoke(custom, context=clamped_context)
        close(
            clamped,
            torch.tensor(50.0),
            clamped_context + ", forward()",
            mistakes=[
                Mistake("no clamp: the scale must not exceed max_scale", lambda v=log_value: torch.tensor(math.exp(v))),
                Mistake(
                    "log_scale is clamped at max_scale instead of at log(max_scale)",
                    lambda v=log_value: torch.tensor(math.exp(min(v, 50.0))),
                ),
                Mistake(
                    "the default maximum 100 is used instead of the max_scale argument", lambda: torch.tensor(100.0)
                ),
            ],
        )
        if custom.log_scale.item() != stored:
            raise CheckFailure(
                "forward() changed the parameter",
                case=clamped_context,
                expected=f"log_scale still {describe(stored)}",
                got=describe(custom.log_scale.detach()),
                cause="an in-place clamp (e.g. `.data.clamp_()`) inside forward(); clamp out of place,"
                " as in `self.log_scale.clamp(max=...)`",
            )
        clamped.backward()
        grad = custom.log_scale.grad
        if grad is not None and grad.abs().item() > 1e-6:
            raise CheckFailure(
                "a gradient flows through the clamp",
                case=clamped_context,
                expected="a zero (or no) gradient for log_scale while the clamp is active",
                got=f"gradient {describe(grad)}",
                cause="the clamp must be part of the computation (clamp or minimum), not a detached copy",
            )
        custom.log_scale.grad = None


# ----------------------------------------------------------------------------- zero_shot_logits


def _zero_shot(images, prompts, scale, *, normalise_prompts=True, renormalise=True, normalise_images=True):
    if normalise_images:
        images = F.normalize(images, dim=-1)
    if normalise_prompts:
        prompts = F.normalize(prompts, dim=-1)
    classes = prompts.mean(dim=1)
    if renormalise:
        classes = F.normalize(classes, dim=-1)
    return scale * images @ classes.T


def _prompts(c: int, p: int, d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    return random_rows(c * p, d, seed, dtype=dtype).reshape(c, p, d)


def check_zero_shot_logits(learner, reference) -> None:
    cases = [
        Case("5 images, 3 classes × 4 prompts", (random_rows(5, 8, 0), _prompts(3, 4, 8, 1)), {"logit_scale": 50.0}),
        Case("the default logit_scale (100)", (random_rows(4, 6, 2), _prompts(7, 2, 6, 3))),
        Case("one prompt per class", (random_rows(3, 5, 4), _prompts(4, 1, 5, 5)), {"logit_scale": 10.0}),
        Case(
            "float64, 6 images, 2 classes × 5 prompts",
            (random_rows(6, 12, 6, dtype=torch.float64), _prompts(2, 5, 12, 7, dtype=torch.float64)),
            {"logit_scale": 20.0},
        ),
    ]
    mistakes = [
        Mistake(
            "the prompt embeddings are averaged before each is L2-normalised, so long ones dominate",
            lambda i, p, logit_scale=100.0: _zero_shot(i, p, logit_scale, normalise_prompts=False),
        ),
        Mistake(
            "the averaged class vector is not renormalised (averaging per-prompt logits gives the same)",
            lambda i, p, logit_scale=100.0: _zero_shot(i, p, logit_scale, renormalise=False),
        ),
        Mistake(
            "the image features are not L2-normalised",
            lambda i, p, logit_scale=100.0: _zero_shot(i, p, logit_scale, normalise_images=False),
        ),
        Mistake("logit_scale is ignored", lambda i, p, logit_scale=100.0: _zero_shot(i, p, 1.0)),
        Mistake(
            "averaged over the classes (dim 0) instead of the prompts (dim 1)",
            lambda i, p, logit_scale=100.0: (
                logit_scale * F.normalize(i, dim=-1) @ F.normalize(F.normalize(p, dim=-1).mean(0), dim=-1).T
            ),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes, atol=1e-4)
    check_gradients(learner, reference, cases[0], wrt=["image_features", "prompt_embeddings"], atol=1e-4)


# ----------------------------------------------------------------------------- modality_gap


def _centroid_gap(x, y, *, normalise=True, renormalise_centroids=False, squared=False):
    if normalise:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    cx, cy = x.mean(0), y.mean(0)
    if renormalise_centroids:
        cx, cy = F.normalize(cx, dim=0), F.normalize(cy, dim=0)
    gap = (cx - cy).pow(2).sum()
    return gap if squared else gap.sqrt()


def check_modality_gap(learner, reference) -> None:
    shifted = random_rows(20, 8, 0)
    cases = [
        Case("20 image and 20 text embeddings, text shifted", (shifted, shifted + 2.0)),
        Case("10 image vs 30 text embeddings (unpaired)", (random_rows(10, 5, 1), random_rows(30, 5, 2) + 1.0)),
        Case("the same embeddings twice: the gap is 0", (random_rows(6, 4, 3), random_rows(6, 4, 3))),
        Case(
            "float64, 16 pairs in 32-D",
            (random_rows(16, 32, 4, dtype=torch.float64), random_rows(16, 32, 5, dtype=torch.float64) - 0.5),
        ),
    ]
    mistakes = [
        Mistake(
            "the embeddings are not L2-normalised before averaging", lambda x, y: _centroid_gap(x, y, normalise=False)
        ),
        Mistake("the squared distance: take its square root", lambda x, y: _centroid_gap(x, y, squared=True)),
        Mistake(
            "the centroids are renormalised to unit length: the gap uses the raw means of unit vectors",
            lambda x, y: _centroid_gap(x, y, renormalise_centroids=True),
        ),
        Mistake(
            "the mean distance between paired embeddings, not the distance between the centroids",
            lambda x, y: (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).norm(dim=-1).mean(),
        ),
        Mistake(
            "the gap vector: return its L2 norm",
            lambda x, y: F.normalize(x, dim=-1).mean(0) - F.normalize(y, dim=-1).mean(0),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes)

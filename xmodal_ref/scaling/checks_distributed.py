"""Checks for chapter 10 · scaling, the distributed exercises: all_gather_with_grad and distributed_clip_loss.

Both run on forked gloo ranks (:func:`~xmodal_ref.scaling.ranks.on_ranks`). In every launch each rank holds inputs of
its own and runs the reference, then the known wrong variants (distributed_clip_loss), then the learner's function,
and sends the values and gradients back; the parent compares the learner with the reference rank by rank. A failure
names the case and the rank, and the known mistake whose result, on the same ranks and inputs, equals the learner's.
Each rank backpropagates a weight of its own, so a gradient that is not summed over ranks cannot pass by symmetry.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..grading.harness import Case, Mistake, check_cases, check_gradients, describe, expect_close, explain_errors
from ..grading.verdict import CheckFailure, NotAttempted
from .ranks import RankError, on_ranks, require_fork
from .reference import all_gather_with_grad as _sum_gather

# ----------------------------------------------------------------------------- running learner code in ranks


class LearnerError(Exception):
    """The learner's code raised inside a rank: "<case> ¦ <error type>: <first line>"."""


_SEPARATOR = " ¦ "

_COLLECTIVE_ORDER = (
    "a collective that only some ranks call, or ranks that call collectives in a different order (a collective under"
    " `if rank == 0:`, say): every rank must call the same collectives in the same order"
)
_MIXED_DTYPES = "mixed dtypes: make buffers with the input's dtype (torch.empty_like, x.new_empty, zeros_like)"
_SHAPES = "a shape mismatch: every rank passes (b, …), the gathered result is (world_size·b, …); print the shapes"

#: Likely causes of errors raised inside ranks, looked up by a fragment of the error text.
_ERROR_CAUSES = (
    (
        "has no attribute 'nn'",
        "`import torch.distributed` does not bind torch.distributed.nn: add `import torch.distributed.nn`",
    ),
    (
        "invalid gradient",
        "backward must return a gradient of the input's shape (b, …): rows rank·b:(rank+1)·b of the output"
        " gradient summed over ranks",
    ),
    (
        "created in no_grad mode",
        "a plain collective (dist.all_gather_single, dist.all_gather) was called on a tensor that requires grad: the"
        " plain collectives have no autograd support; call them inside a torch.autograd.Function's forward",
    ),
    ("Timed out", _COLLECTIVE_ORDER),
    ("not done after", _COLLECTIVE_ORDER),
    (
        "found no partner",
        "another rank failed or finished without calling this collective: every rank must call the same"
        " collectives in the same order",
    ),
    ("died", "the rank process crashed (a segmentation fault or os._exit in the learner's code)"),
    ("dtype", _MIXED_DTYPES),
    ("scalar type", _MIXED_DTYPES),
    ("size", _SHAPES),
    ("shape", _SHAPES),
)


def _call(fn: Callable[..., Any], *args: Any, case: str, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` inside a rank; an error becomes :class:`LearnerError` naming ``case``.

    The original traceback is kept, so the rank's report points at the line that raised.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        lines = str(err).strip().splitlines()
        text = f"{case}{_SEPARATOR}{type(err).__name__}: {lines[0] if lines else '(no message)'}"
        raise LearnerError(text).with_traceback(err.__traceback__) from None


def _launch(fn: Callable[..., Any], world_size: int, *args: Any, launch: str) -> list[Any]:
    """``on_ranks(fn, world_size, *args)``; a failing rank becomes a CheckFailure (or NotAttempted)."""
    try:
        return on_ranks(fn, world_size, *args)
    except RankError as err:
        raise _rank_failure(str(err), launch) from None


def _rank_failure(message: str, launch: str) -> Exception:
    match = re.match(r"rank (\d+): (?:LearnerError: )?(.*)", message, flags=re.DOTALL)
    rank, text = (match.group(1), match.group(2)) if match else (None, message)
    case, _, error = text.rpartition(_SEPARATOR)
    if error.startswith("NotImplementedError"):
        return NotAttempted(re.sub(r" \([^()]*:\d+\)$", "", error.split(": ", 1)[-1]))
    cause = next((c for fragment, c in _ERROR_CAUSES if fragment in error), None)
    where = f" on rank {rank}" if rank is not None and case else ""
    problem = f"raised {error}{where}" if case else message
    return CheckFailure(problem, case=case or launch, cause=cause)


def _seeded(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def _rows(t: torch.Tensor, rank: int, b: int) -> torch.Tensor:
    return t[rank * b : (rank + 1) * b]


def _expect_gradient(got: torch.Tensor, expected: torch.Tensor, name: str, context: str, **kwargs: Any) -> None:
    """``expect_close`` on a gradient, reported as a wrong gradient of ``name``."""
    try:
        expect_close(got, expected, context, **kwargs)
    except CheckFailure as failure:
        if failure.problem != "wrong value":
            raise
        raise CheckFailure(
            f"wrong gradient with respect to `{name}`",
            case=failure.case,
            expected=failure.expected,
            got=failure.got,
            cause=failure.cause,
        ) from None


# ----------------------------------------------------------------------------- all_gather_with_grad

#: (world_size, cases): one launch each; a case is (shape on every rank, dtype).
GATHER_LAUNCHES: tuple[tuple[int, tuple[tuple[tuple[int, ...], torch.dtype], ...]], ...] = (
    (2, (((3, 4), torch.float32), ((2, 3, 2), torch.float32))),
    (3, (((2, 5), torch.float64),)),
    (1, (((3, 4), torch.float32),)),  # the contract's identity
)

GATHER_NO_GRADIENT = (
    "a gather with no gradient: dist.all_gather and dist.all_gather_single copy values and cut the autograd graph;"
    " wrap the collective in a torch.autograd.Function whose backward sums the output gradient over ranks"
    " (reduce-scatter with SUM)"
)
GATHER_WORLD_OF_ONE = (
    "the world-size-1 path: with world_size 1 the gather is the identity, so return `tensor` itself (not a detached"
    " copy, nor one made under torch.no_grad)"
)


def _gather_label(world_size: int, shape: tuple[int, ...], dtype: torch.dtype) -> str:
    tensor = f"shape {shape}, {str(dtype).replace('torch.', '')}"
    if world_size == 1:
        return f"1 rank (world_size 1) passing a random tensor, {tensor}; it backpropagates Σ out ⊙ w with a random w"
    return (
        f"{world_size} ranks, each passing a random tensor of its own, {tensor}; rank r backpropagates Σ out ⊙ w_r"
        " with a random weight w_r of its own"
    )


def _gather_and_backward(fn: Callable[..., Any], x: torch.Tensor, w: torch.Tensor) -> dict[str, Any]:
    leaf = x.clone().requires_grad_(True)
    out = fn(leaf)
    modified = not torch.equal(leaf.detach(), x)
    if isinstance(out, torch.Tensor) and out.requires_grad and out.shape == w.shape:
        (out * w).sum().backward()
    return {"out": out.detach() if isinstance(out, torch.Tensor) else out, "grad": leaf.grad, "modified": modified}


def _gather_in_ranks(learner: Callable[..., Any], reference: Callable[..., Any], cases: tuple) -> list[dict]:
    """Runs in every rank: for each case, the reference, then the learner, on this rank's input and weight."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = []
    for index, (shape, dtype) in enumerate(cases):
        x = _seeded(shape, 100 * index + rank, dtype)  # (b, *rest)
        w = _seeded((world_size * shape[0], *shape[1:]), 1000 + 100 * index + rank, dtype)  # (W·b, *rest)
        expected = _gather_and_backward(reference, x, w)
        got = _call(_gather_and_backward, learner, x, w, case=_gather_label(world_size, shape, dtype))
        results.append({"x": x, "w": w, "expected": expected, "got": got})
    return results


def _gather_value_mistakes(xs: list[torch.Tensor], rank: int) -> list[Mistake]:
    own_first = [xs[rank], *(x for r, x in enumerate(xs) if r != rank)]
    return [
        Mistake(
            "torch.stack instead of torch.cat: the ranks' tensors are stacked into (world_size, b, …);"
            " concatenate them along dim 0",
            lambda: torch.stack(xs),
        ),
        Mistake("only this rank's own tensor is returned: nothing was gathered", lambda: xs[rank]),
        Mistake("the ranks' tensors are added (an all_reduce) instead of concatenated", lambda: sum(xs)),
        Mistake(
            "the gathered rows are not in rank order (this rank's own tensor first): rank 0's rows come first",
            lambda: torch.cat(own_first),
        ),
        Mistake(
            "the gathered rows are not in rank order (the last rank first): rank 0's rows come first",
            lambda: torch.cat(xs[::-1]),
        ),
        Mistake(
            "the gathered rows are not in rank order (the ranks' rows are interleaved): concatenate whole blocks,"
            " rank 0's rows first",
            lambda: torch.stack(xs, dim=1).flatten(0, 1),
        ),
    ]


def _gather_grad_mistakes(ws: list[torch.Tensor], rank: int) -> list[Mistake]:
    b = ws[0].shape[0] // len(ws)
    return [
        Mistake(
            "the backward returns only this rank's slice of its own output gradient, without summing over ranks:"
            " the SimCLR GatherLayer bug. Every rank's output feeds that rank's loss, so rows rank·b:(rank+1)·b"
            " must collect the gradient of every rank's output: a reduce-scatter with SUM, or all_reduce then slice",
            lambda: _rows(ws[rank], rank, b),
        ),
        Mistake(
            "the gradient is divided by the world size (a mean over ranks instead of a sum): sum it; DDP's 1/W"
            " averaging of the parameter gradients comes later and is the caller's business",
            lambda: sum(_rows(w, rank, b) for w in ws) / len(ws),
        ),
        Mistake(
            "each rank all-reduced only its own slot grads[rank] (the first 'fix' of the GatherLayer bug), which adds"
            " different rows of different ranks: all-reduce the whole output gradient, then take rows"
            " rank·b:(rank+1)·b (or reduce-scatter it)",
            lambda: sum(_rows(w, r, b) for r, w in enumerate(ws)),
        ),
    ]


def _judge_gather(result: dict[str, Any], xs: list[torch.Tensor], ws: list[torch.Tensor], rank: int, case: str):
    got, expected = result["got"], result["expected"]
    context = f"{case} — rank {rank}'s result"
    if got["modified"]:
        raise CheckFailure(
            "modified its input `tensor` in place",
            case=context,
            cause="an in-place op on `tensor`; gather into a new buffer (torch.empty_like, new_empty)",
        )
    if isinstance(got["out"], (list, tuple)):
        raise CheckFailure(
            f"returned a {type(got['out']).__name__}, not a torch.Tensor",
            case=context,
            expected=describe(expected["out"]),
            got=describe(got["out"]),
            cause="torch.distributed.nn.functional.all_gather and dist.all_gather give one tensor per rank:"
            " concatenate them, torch.cat(tensors, dim=0)",
        )
    expect_close(got["out"], expected["out"], context, mistakes=_gather_value_mistakes(xs, rank), atol=1e-6, rtol=0)
    if got["grad"] is None:
        raise CheckFailure(
            "no gradient reached `tensor`",
            case=context,
            cause=GATHER_WORLD_OF_ONE if len(xs) == 1 else GATHER_NO_GRADIENT,
        )
    _expect_gradient(
        got["grad"],
        expected["grad"],
        "tensor",
        context + " (gradient)",
        mistakes=_gather_grad_mistakes(ws, rank),
        atol=1e-5,
        rtol=0,
    )


def check_all_gather_with_grad(learner, reference) -> None:
    require_fork("scaling.all_gather_with_grad")
    for world_size, cases in GATHER_LAUNCHES:
        labels = [_gather_label(world_size, shape, dtype) for shape, dtype in cases]
        per_rank = _launch(_gather_in_ranks, world_size, learner, reference, cases, launch="; ".join(labels))
        for index, label in enumerate(labels):
            xs = [results[index]["x"] for results in per_rank]
            ws = [results[index]["w"] for results in per_rank]
            for rank, results in enumerate(per_rank):
                _judge_gather(results[index], xs, ws, rank, label)


# ----------------------------------------------------------------------------- distributed_clip_loss

CLIP_WORLDS = (2, 3)
CLIP_BATCH, CLIP_DIM, CLIP_SCALE, CLIP_NOISE = 4, 8, 7.5, 0.6
#: (local_loss, gather_with_grad), in the order they are judged. (True, True) comes before (False, True): with the
#: global loss every rank's loss is the same function, so a gather that does not sum over ranks (the GatherLayer bug,
#: a mean, no gradient) only scales the gradient by 1/W there, and the three cannot be told apart.
CLIP_CONFIGS = ((False, False), (True, True), (False, True), (True, False))
CLIP_GRADIENTS = ("image_features", "text_features", "logit_scale")


class _GatherLayer(torch.autograd.Function):
    """SimCLR's GatherLayer: the backward keeps only this rank's slice of its own output gradient."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        gathered = local.new_empty((dist.get_world_size() * local.shape[0], *local.shape[1:]))  # (W·b, *rest)
        dist.all_gather_single(gathered, local.contiguous())
        return gathered

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        b = grad_output.shape[0] // dist.get_world_size()
        return _rows(grad_output, dist.get_rank(), b).clone()


class _GatherMean(_GatherLayer):
    """A gather whose backward averages the output gradients over ranks instead of summing them."""

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.clone()
        dist.all_reduce(grad)
        world_size = dist.get_world_size()
        return _rows(grad, dist.get_rank(), grad.shape[0] // world_size) / world_size


def _gather_values(own: torch.Tensor, reinsert: bool) -> torch.Tensor:
    slots = [torch.zeros_like(own) for _ in range(dist.get_world_size())]
    dist.all_gather(slots, own)
    if reinsert:
        slots[dist.get_rank()] = own
    return torch.cat(slots)  # (N, D)


def _clip_variant(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    local_loss: bool,
    gather_with_grad: bool,
    *,
    offset: bool = True,
    own_first: bool = False,
    reinsert_when_local: bool = False,
    gather: str = "sum",
    honour_local: bool = True,
) -> torch.Tensor:
    """distributed_clip_loss with one deliberate deviation, selected by the keyword options."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    b = image.shape[0]
    local = local_loss and honour_local
    gathers = {"sum": _sum_gather, "own-slice": _GatherLayer.apply, "mean": _GatherMean.apply}
    if gather_with_grad and gather in gathers:
        all_image, all_text = gathers[gather](image), gathers[gather](text)
    else:
        all_image, all_text = (_gather_values(t, not local or reinsert_when_local) for t in (image, text))
    if own_first:
        order = [rank, *(r for r in range(world_size) if r != rank)]
        rows = torch.cat([torch.arange(r * b, (r + 1) * b) for r in order])  # (N,)
        all_image, all_text = all_image[rows], all_text[rows]
    if local:
        logits_per_image = scale * image @ all_text.T  # (b, N)
        logits_per_text = scale * text @ all_image.T  # (b, N)
        labels = torch.arange(b) + (rank * b if offset else 0)
    else:
        logits_per_image = scale * all_image @ all_text.T  # (N, N)
        logits_per_text = logits_per_image.T
        labels = torch.arange(world_size * b)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


#: (cause, options of _clip_variant): the known mistakes, each computed in the same ranks as the learner's code.
CLIP_VARIANTS = (
    (
        "the labels lack the rank·b offset: with local_loss=True this rank's pairs are rows rank·b … rank·b+b−1 of"
        " the gathered features, so labels = arange(b) + rank·b",
        {"offset": False},
    ),
    (
        "the gathered rows are not in rank order (this rank's own rows first): concatenate rank 0's rows first, so"
        " that arange(b) + rank·b points at this rank's pairs",
        {"own_first": True},
    ),
    (
        "this rank's own features were re-inserted into the gathered copies although local_loss=True: the contract"
        " (OpenCLIP) re-inserts only when local_loss=False, so with (local_loss=True, gather_with_grad=False) only"
        " the direct image_features/text_features terms carry gradient; that biased gradient is what this"
        " configuration exposes",
        {"reinsert_when_local": True},
    ),
    (
        "the gather's backward returns only this rank's slice of its own output gradient, without summing over ranks"
        " (the SimCLR GatherLayer bug), so only this rank's own loss terms reach its features: sum the gradient"
        " over ranks (a reduce-scatter with SUM, or all_reduce then slice), as all_gather_with_grad does",
        {"gather": "own-slice"},
    ),
    (
        "gather_with_grad=True is ignored: the gather has no gradient (dist.all_gather), so the terms in which this"
        " rank's rows are another rank's negatives never reach its features; use an autograd-aware gather"
        " (all_gather_with_grad)",
        {"gather": "none"},
    ),
    (
        "the gather's backward averages over ranks (the gradient is divided by the world size) instead of summing:"
        " sum; DDP's 1/W averaging comes later",
        {"gather": "mean"},
    ),
    (
        "local_loss is ignored: the global N×N loss was computed; with local_loss=True the logits are this rank's b"
        " rows against all N (s · image_features @ all_text.T) and the loss averages over those b rows",
        {"honour_local": False},
    ),
)


def _clip_pairs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's (b, D) image and text features: unit rows, near pairs (noise 0.6), distinct on every rank."""
    image = F.normalize(_seeded((CLIP_BATCH, CLIP_DIM), 10 + 2 * rank), dim=-1)
    text = F.normalize(image + CLIP_NOISE * _seeded((CLIP_BATCH, CLIP_DIM), 11 + 2 * rank), dim=-1)
    return image, text


def _clip_label(world_size: int, local_loss: bool, gather_with_grad: bool) -> str:
    return (
        f"{world_size} ranks, local_loss={local_loss}, gather_with_grad={gather_with_grad}: b={CLIP_BATCH} pairs of"
        f" its own on every rank, D={CLIP_DIM}, float32, logit_scale = 0-dim tensor {CLIP_SCALE} with requires_grad"
    )


def _loss_and_grads(
    fn: Callable[..., Any], image: torch.Tensor, text: torch.Tensor, local_loss: bool, gather_with_grad: bool
) -> dict[str, Any]:
    leaves = {
        "image_features": image.clone().requires_grad_(True),
        "text_features": text.clone().requires_grad_(True),
        "logit_scale": torch.tensor(CLIP_SCALE, requires_grad=True),
    }
    loss = fn(*leaves.values(), local_loss=local_loss, gather_with_grad=gather_with_grad)
    if isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.requires_grad:
        loss.backward()
    return {"loss": loss.detach() if isinstance(loss, torch.Tensor) else loss} | {
        name: leaf.grad for name, leaf in leaves.items()
    }


def _clip_in_ranks(learner: Callable[..., Any], reference: Callable[..., Any]) -> list[dict[str, Any]]:
    """Runs in every rank: for each configuration, the reference, the known mistakes, then the learner."""
    image, text = _clip_pairs(dist.get_rank())
    results = []
    for local_loss, gather_with_grad in CLIP_CONFIGS:
        flags = (local_loss, gather_with_grad)
        case = _clip_label(dist.get_world_size(), *flags)
        expected = _loss_and_grads(reference, image, text, *flags)
        variants = [
            _loss_and_grads(functools.partial(_clip_variant, **options), image, text, *flags)
            for _, options in CLIP_VARIANTS
        ]
        got = _call(_loss_and_grads, learner, image, text, *flags, case=case)
        results.append({"expected": expected, "variants": variants, "got": got})
    return results


def _no_feature_gradient(local_loss: bool, gather_with_grad: bool) -> str:
    if gather_with_grad:
        return (
            "the gather has no gradient: dist.all_gather copies values and cuts the graph; with gather_with_grad=True"
            " use an autograd-aware gather (all_gather_with_grad)"
        )
    if local_loss:
        return (
            "with local_loss=True the logits use this rank's own features directly:"
            " s · image_features @ all_text.T and s · text_features @ all_image.T"
        )
    return (
        "dist.all_gather copies values without autograd history, so after it put this rank's own image_features and"
        " text_features back into slot `rank` (OpenCLIP's re-insertion); without it no gradient reaches them"
    )


def _coinciding(candidates: list[tuple[str, Any]], expected: torch.Tensor) -> list[Mistake]:
    """One Mistake per distinct wrong value; causes that give the same value on this rank are named together."""
    groups: list[tuple[torch.Tensor, list[str]]] = []
    for cause, value in candidates:
        if not isinstance(value, torch.Tensor) or value.shape != expected.shape:
            continue
        if torch.allclose(value, expected, atol=1e-7, rtol=0):
            continue
        for known, causes in groups:
            if torch.allclose(known, value, atol=1e-7, rtol=0):
                causes.append(cause)
                break
        else:
            groups.append((value, [cause]))
    return [Mistake("; or, giving the same result here: ".join(causes), lambda v=v: v) for v, causes in groups]


def _judge_clip(per_rank: list[dict[str, Any]], world_size: int, local_loss: bool, gather_with_grad: bool) -> None:
    """Compare one configuration on every rank: first the losses, then each gradient."""
    label = _clip_label(world_size, local_loss, gather_with_grad)
    for quantity in ("loss", *CLIP_GRADIENTS):
        no_gradient = (
            "logit_scale was used through float(...) or .item(), or the loss was detached"
            if quantity == "logit_scale"
            else _no_feature_gradient(local_loss, gather_with_grad)
        )
        for rank, result in enumerate(per_rank):
            got, expected = result["got"][quantity], result["expected"][quantity]
            context = f"{label} — rank {rank}'s result"
            variants = zip(CLIP_VARIANTS, result["variants"], strict=True)
            candidates = [(cause, variant[quantity]) for (cause, _), variant in variants]
            if quantity == "loss":
                mistakes = _coinciding(candidates, expected)
                expect_close(got, expected, context, mistakes=mistakes, atol=1e-5, rtol=0)
                continue
            if got is None:
                raise CheckFailure(f"no gradient reached `{quantity}`", case=context, cause=no_gradient)
            mistakes = _coinciding([*candidates, (no_gradient, torch.zeros_like(expected))], expected)
            _expect_gradient(
                got, expected, quantity, f"{context} (gradient check)", mistakes=mistakes, atol=1e-5, rtol=0
            )


SINGLE_PROCESS_ERROR = (
    "the world-size-1 path: torch.distributed is not initialised here, so check `dist.is_available() and"
    " dist.is_initialized()` before asking for the rank or the world size, and return chapter 03's clip_loss"
)


def _check_single_process(learner, reference) -> None:
    """No process group: the loss and its gradients equal chapter 03's clip_loss (the reference's fallback)."""
    image, text = _clip_pairs(0)
    scale = torch.tensor(CLIP_SCALE)
    label = "one process, no process group: chapter 03's clip_loss"
    cases = [
        Case(label, (image, text, scale)),
        Case(label, (image, text, scale), {"local_loss": True, "gather_with_grad": True}),
    ]
    with explain_errors(lambda problem: SINGLE_PROCESS_ERROR):
        check_cases(learner, reference, cases, atol=1e-5, rtol=0)
        for case in cases:
            check_gradients(learner, reference, case, wrt=CLIP_GRADIENTS, atol=1e-5, rtol=0)


def check_distributed_clip_loss(learner, reference) -> None:
    if not (dist.is_available() and dist.is_initialized()):  # the grading process itself has no group
        _check_single_process(learner, reference)
    require_fork("scaling.distributed_clip_loss")
    for world_size in CLIP_WORLDS:
        launch = f"{world_size} ranks, all four (local_loss, gather_with_grad) configurations"
        per_rank = _launch(_clip_in_ranks, world_size, learner, reference, launch=launch)
        for index, flags in enumerate(CLIP_CONFIGS):
            _judge_clip([results[index] for results in per_rank], world_size, *flags)

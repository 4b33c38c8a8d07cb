"""Checks for chapter 10 · scaling: chunked_clip_loss and grad_cache_step, the two memory-bounded exercises.

Results are compared with the contract's definitions computed directly (chapter 03's reference ``clip_loss``), never
with a memory-saving implementation: clip_loss in float64 for chunked_clip_loss, full-batch backprop of it for
grad_cache_step. Memory is measured with :class:`~xmodal_ref.scaling.memory.PeakMemory`, which counts every storage
the learner's code creates in forward, backward and recomputation alike; the bounds are the contract's
(½·N²·4 bytes; ½ × full-batch backprop).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..contrastive.reference import clip_loss
from ..grading.harness import Case, Mistake, check_cases, check_gradients, describe, expect_close, expect_tensor, invoke
from ..grading.inputs import random_rows, unit_rows
from ..grading.verdict import CheckFailure
from .memory import PeakMemory

CLIP_INIT_SCALE = 1 / 0.07
FEATURES = ("image_features", "text_features")
MIB = 2**20


# ----------------------------------------------------------------------------- chunked_clip_loss

OVERFLOW = (
    "an overflow: exp() of a logit beyond ±88 is inf in float32 (here logit_scale = 100); subtract the maximum first"
    " — torch.logsumexp per block, torch.logaddexp (or a running max) to merge blocks, exp(l − lse) in backward"
)


def _float64(logit_scale: Any) -> Any:
    return logit_scale.double() if isinstance(logit_scale, torch.Tensor) else logit_scale


def _clip_truth(image_features, text_features, logit_scale, chunk_size):
    """The graded truth: chapter 03's clip_loss on float64 copies, returned in the features' dtype."""
    loss = clip_loss(image_features.double(), text_features.double(), _float64(logit_scale))
    return loss.to(image_features.dtype)


def _directions(image, text, scale, positives_of=None):
    """The two cross-entropies per row (float64); ``positives_of(N)`` gives each row's positive column."""
    logits = _float64(scale) * image.double() @ text.double().T  # (N, N)
    targets = torch.arange(logits.shape[0]) if positives_of is None else positives_of(logits.shape[0])
    image_to_text = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    text_to_image = F.cross_entropy(logits.T, targets, reduction="none")  # (N,)
    return image_to_text, text_to_image


def _block_means(per_row: torch.Tensor, chunk_size: int) -> torch.Tensor:
    return torch.stack([block.mean() for block in per_row.split(chunk_size)])  # (number of blocks,)


CHUNKED_MISTAKES = [
    Mistake(
        "only the image→text direction: the text→image cross-entropy needs each column's log-sum-exp, merged across"
        " the row blocks; average the two directions",
        lambda i, t, s, c: _directions(i, t, s)[0].mean(),
    ),
    Mistake(
        "only the text→image direction: add the image→text cross-entropy (each row's log-sum-exp) and average",
        lambda i, t, s, c: _directions(i, t, s)[1].mean(),
    ),
    Mistake(
        "the labels (the diagonal) are off by the block offset: in the block of rows start … start + c − 1 the"
        " targets are start + arange(c), the global column indices, not arange(c)",
        lambda i, t, s, c: (
            sum(d.mean() for d in _directions(i, t, s, lambda n: torch.arange(n) - torch.arange(n) // c * c)) / 2
        ),
    ),
    Mistake(
        "each block's mean cross-entropy was added up: a mean over a chunk instead of over N (divide the summed"
        " per-row losses by N once)",
        lambda i, t, s, c: sum(_block_means(d, c).sum() for d in _directions(i, t, s)) / 2,
    ),
    Mistake(
        "the mean of the blocks' means: a mean over each chunk instead of over N (the short last chunk's rows"
        " weigh more); divide the summed per-row losses by N once",
        lambda i, t, s, c: sum(_block_means(d, c).mean() for d in _directions(i, t, s)) / 2,
    ),
]


def _chunked_case(label, n, d, scale, chunk, seed, dtype=torch.float32) -> Case:
    return Case(label, (unit_rows(n, d, seed, dtype=dtype), unit_rows(n, d, seed + 1, dtype=dtype), scale, chunk))


def _tolerance(case: Case) -> float:
    """float32 logits carry about 1e-7·scale of rounding: atol = max(1e-5, 1e-6·scale); float64: 1e-9."""
    if case.args[0].dtype == torch.float64:
        return 1e-9
    return max(1e-5, 1e-6 * float(case.args[2]))


@contextlib.contextmanager
def _overflow_named(case: Case) -> Iterator[None]:
    """At scale 100, a NaN or inf anywhere (value or gradient) is named as the overflow it is."""
    try:
        yield
    except CheckFailure as failure:
        got = (failure.got or "").lower()
        if float(case.args[2]) < 88 or not ("nan" in got or "inf" in got):
            raise
        raise CheckFailure(
            failure.problem, case=failure.case, expected=failure.expected, got=failure.got, cause=OVERFLOW
        ) from None


def _chunked_memory(learner) -> None:
    """N = 1024, D = 16, chunk 16: forward + backward must peak at ≤ ½·N²·4 bytes of live storage."""
    n, d, chunk = 1024, 16, 16
    image, text = unit_rows(n, d, 40).requires_grad_(True), unit_rows(n, d, 41).requires_grad_(True)
    scale = torch.tensor(CLIP_INIT_SCALE, requires_grad=True)
    matrix = n * n * 4  # bytes of one float32 N×N matrix
    context = (
        f"memory: N = {n}, D = {d}, chunk_size = {chunk}, float32, logit_scale a 0-dim tensor requiring grad;"
        " loss.backward() included"
    )
    with PeakMemory() as meter:
        loss = invoke(learner, image, text, scale, chunk, context=context)
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            raise CheckFailure(
                "the result is not connected to the autograd graph, so no gradient can flow",
                case=context,
                got=describe(loss),
                cause="a .item(), .detach() or torch.no_grad() around the loss; a custom autograd.Function must be"
                " called through .apply",
            )
        invoke(loss.backward, context=context + " (in backward)")
    if meter.peak <= matrix / 2:
        return
    if meter.largest >= matrix / 2:
        cause = (
            f"an N×N matrix: one tensor of {meter.largest / MIB:.2f} MiB was created (N² logits, their softmax or their"
            f" gradient); work on blocks of at most chunk_size × N = {chunk * n} entries in forward and backward"
        )
    else:
        cause = (
            "every block's graph kept for backward (chunking the forward alone saves nothing): autograd saves each"
            " block's logits and softmax until backward; recompute the blocks in backward with a custom"
            " torch.autograd.Function, or torch.utils.checkpoint each block once the row and column log-sum-exps"
            " are known"
        )
    raise CheckFailure(
        f"too much memory: forward + backward peaked at {meter.peak / MIB:.2f} MiB of live tensors,"
        f" {meter.peak / matrix:.3f} × one float32 N×N matrix",
        case=context,
        expected=f"≤ ½·N²·4 bytes = {matrix / 2e6:.2f} MB = {matrix / 2 / MIB:.2f} MiB (O(chunk_size·N + N·D))",
        got=f"{meter.peak / MIB:.2f} MiB; the largest single tensor {meter.largest / MIB:.2f} MiB",
        cause=cause,
    )


def check_chunked_clip_loss(learner, reference) -> None:
    """Values and gradients against the float64 full loss, then the peak-memory bound (``reference`` is not used:
    the truth is chapter 03's clip_loss in float64)."""
    tensor_scale = torch.tensor(CLIP_INIT_SCALE)
    cases = [
        _chunked_case("N=8, chunk_size=3", 8, 16, tensor_scale, 3, 0),
        _chunked_case("N=50, chunk_size=16 (a short last chunk)", 50, 16, torch.tensor(20.0), 16, 2),
        _chunked_case(
            "N=33 in 3-D at CLIP's maximum scale 100 (logits beyond ±88), chunk_size=8",
            *(33, 3, torch.tensor(100.0), 8, 4),
        ),
        _chunked_case("float64 features, N=5, chunk_size=2", 5, 8, torch.tensor(7.5), 2, 6, torch.float64),
        _chunked_case("chunk_size=64 > N=12: one block", 12, 16, tensor_scale, 64, 8),
        _chunked_case("a batch of one pair: the loss is 0", 1, 8, tensor_scale, 4, 10),
        _chunked_case("logit_scale as a Python float, N=10, chunk_size=4", 10, 16, 14.0, 4, 12),
    ]
    for case in cases:
        atol = _tolerance(case)
        with _overflow_named(case):
            check_cases(
                learner, _clip_truth, [case], mistakes=CHUNKED_MISTAKES, atol=atol, rtol=1e-4, unstable_hint=OVERFLOW
            )
    for case in cases:
        wrt = [*FEATURES] if isinstance(case.args[2], float) else [*FEATURES, "logit_scale"]
        atol = _tolerance(case)
        with _overflow_named(case):
            check_gradients(learner, _clip_truth, case, wrt=wrt, on_sphere=FEATURES, atol=atol, rtol=1e-4)
    _chunked_memory(learner)


# ----------------------------------------------------------------------------- grad_cache_step

#: Pre-filled into every .grad before the step, which must add to it.
PREFILL = 0.5
GRAD_TOL = 1e-9


class Encoder(nn.Module):
    """Flatten → Linear → GELU → Linear → L2-normalise: deterministic, as the contract requires."""

    def __init__(self, in_features: int, width: int, out_features: int, dtype: torch.dtype) -> None:
        super().__init__()
        first, second = nn.Linear(in_features, width, dtype=dtype), nn.Linear(width, out_features, dtype=dtype)
        self.net = nn.Sequential(nn.Flatten(), first, nn.GELU(), second)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class Recorder(nn.Module):
    """Wraps an encoder and logs (rows, autograd enabled) for every call."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((int(x.shape[0]), torch.is_grad_enabled()))
        return self.encoder(x)


def _setup(n: int, width: int, dtype: torch.dtype, seed: int):
    """Two encoders ((N, 4, 4) images, (N, 16) texts → 8-d unit features) and their inputs."""
    torch.manual_seed(seed)
    encoders = (Encoder(16, width, 8, dtype), Encoder(16, width, 8, dtype))
    images = random_rows(n, 16, seed, dtype=dtype).view(n, 4, 4)
    texts = random_rows(n, 16, seed + 1, dtype=dtype)
    return encoders, images, texts


def _scale_leaf(logit_scale: Any, dtype: torch.dtype) -> Any:
    if not isinstance(logit_scale, torch.Tensor):
        return logit_scale
    return logit_scale.detach().to(dtype).requires_grad_(True)


def _named_grads(encoders, scale) -> dict[str, torch.Tensor | None]:
    grads = {
        f"{side}_encoder.{name}": p.grad
        for side, encoder in zip(("image", "text"), encoders, strict=True)
        for name, p in encoder.named_parameters()
    }
    if isinstance(scale, torch.Tensor):
        grads["logit_scale"] = scale.grad
    return grads


def _backprop(encoders, images, texts, logit_scale, micro_batch_size=None):
    """The increments of every .grad from clip_loss(...).backward() on copies of the encoders, and the loss.

    With ``micro_batch_size``, one loss per micro-batch (no negatives across micro-batches), each backpropagated.
    """
    encoders = tuple(copy.deepcopy(e) for e in encoders)
    scale = _scale_leaf(logit_scale, images.dtype)
    step = micro_batch_size or images.shape[0]
    total = 0.0
    for x, y in zip(images.split(step), texts.split(step), strict=True):
        loss = clip_loss(encoders[0](x), encoders[1](y), scale)
        loss.backward()
        total += loss.detach()
    return _named_grads(encoders, scale), total


def _same(a: dict, b: dict, names) -> bool:
    return all(torch.allclose(a[k], b[k], atol=GRAD_TOL, rtol=GRAD_TOL) for k in names)


def _flat(grads: dict, names) -> torch.Tensor:
    return torch.cat([grads[k].flatten() for k in names])


def _gradient_cause(got: dict, truth: dict, accumulated: dict) -> str:
    """Name the mistake behind wrong .grad values from the increments the step added to the pre-filled ones."""
    names = list(truth)
    if any(g is None for g in got.values()):
        return (
            "a .grad was reset to None: the step ran zero_grad() (set_to_none) or assigned .grad = None; it must add"
            " to the .grad already there (gradient accumulation is the caller's business)"
        )
    if any(torch.allclose(got[k], truth[k], atol=GRAD_TOL, rtol=GRAD_TOL) for k in names):
        return (
            "the .grad already there before the call was discarded (zero_grad(), .grad.zero_() or .grad = …): the step"
            " must add to it, as loss.backward() does"
        )
    increment = {k: got[k] - PREFILL for k in names}
    encoder_names = [k for k in names if k != "logit_scale"]
    g, a = _flat(increment, names), _flat(accumulated, names)
    factor = float(g @ a / (a @ a))
    if factor > 0 and torch.allclose(g, factor * a, atol=GRAD_TOL, rtol=1e-6):
        return (
            "the gradient of a loss per micro-batch (gradient accumulation): no cross-micro-batch negatives, so each"
            " sample is contrasted only with its own micro-batch; GradCache computes ONE loss on all N representations"
            " (embedded without grad) and caches its gradient with respect to them"
        )
    if _same(increment, {k: 2 * truth[k] for k in names}, encoder_names):
        return (
            "the encoders received their gradient twice: the first pass's loss.backward() already reached the encoders"
            " (the representations were computed with grad, not detached), and the second pass added it again; embed"
            " under torch.no_grad() and compute the cache on detached leaf copies (.detach().requires_grad_())"
        )
    if _same(increment, {k: -truth[k] for k in names}, encoder_names):
        return (
            "the encoders' gradient has the wrong sign: the surrogate is +dot(reps, cache) (or reps.backward(cache)),"
            " since the cache is already ∂loss/∂reps"
        )
    if _same(increment, truth, encoder_names) and "logit_scale" in names:
        return (
            "logit_scale's gradient was lost: it entered the loss as a Python number (.item(), float()) or detached;"
            " use the tensor itself in the cache's loss, whose backward adds ∂loss/∂logit_scale"
        )
    if all(bool((increment[k] == 0).all()) for k in encoder_names):
        return (
            "nothing reached the encoders' parameters: the second pass must re-encode each micro-batch with grad and"
            " backprop the cached gradient through it"
        )
    return (
        "the cache must be ∂loss/∂reps of the full-batch loss on all N detached representations, split into the same"
        " consecutive micro-batches that are re-encoded"
    )


def _worst_entry(grad: torch.Tensor | None, expected: torch.Tensor) -> tuple[tuple[int, ...], str]:
    """The index where ``grad`` differs most from ``expected`` (or the first one), and how to name it."""
    if expected.dim() == 0:
        return (), ""
    flat = 0 if grad is None else int((grad - expected).abs().nan_to_num(nan=float("inf")).flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), expected.shape))
    return index, f" at index {list(index)} of a {tuple(expected.shape)} tensor"


def _recorded(recorder: Recorder, side: str, n: int, m: int, context: str) -> None:
    """No grad-enabled call above m rows, and at least N rows re-encoded with grad."""
    with_grad = [rows for rows, enabled in recorder.calls if enabled]
    too_big = [rows for rows in with_grad if rows > m]
    if too_big:
        raise CheckFailure(
            f"the {side} encoder was called with autograd enabled on {too_big[0]} rows; micro_batch_size is {m}",
            case=context,
            expected=f"every call with autograd enabled sees ≤ {m} rows",
            got=f"calls (rows, grad enabled): {recorder.calls}",
            cause="the batch was encoded with a graph in one call: embed under torch.no_grad() first, then re-encode"
            " one micro-batch at a time with grad",
        )
    if sum(with_grad) < n:
        raise CheckFailure(
            f"only {sum(with_grad)} of the {n} rows went through the {side} encoder with autograd enabled",
            case=context,
            expected=f"the second pass re-encodes all {n} rows with grad, in micro-batches of ≤ {m}",
            got=f"calls (rows, grad enabled): {recorder.calls}",
            cause="the second pass is missing or incomplete: re-encode each micro-batch with grad and backprop"
            " dot(reps, cached gradient) through it",
        )


def _grad_cache_case(learner, n: int, m: int, logit_scale: Any, seed: int) -> None:
    encoders, images, texts = _setup(n, 32, torch.float64, seed)
    kind = "a 0-dim tensor requiring grad" if isinstance(logit_scale, torch.Tensor) else "a Python float"
    context = (
        f"N = {n}, micro_batch_size = {m}, logit_scale = {float(logit_scale):g} ({kind}); float64 encoders"
        f" Linear(16, 32)–GELU–Linear(32, 8)–normalise; every .grad pre-filled with {PREFILL}"
    )
    truth, loss = _backprop(encoders, images, texts, logit_scale)
    accumulated, _ = _backprop(encoders, images, texts, logit_scale, m)

    recorders = tuple(Recorder(copy.deepcopy(e)) for e in encoders)
    scale = _scale_leaf(logit_scale, torch.float64)
    leaves = [*recorders[0].parameters(), *recorders[1].parameters()]
    for leaf in [*leaves, scale] if isinstance(scale, torch.Tensor) else leaves:
        leaf.grad = torch.full_like(leaf, PREFILL)
    got = invoke(learner, *recorders, images.clone(), texts.clone(), scale, m, context=context)
    expect_tensor(got, loss, context)
    for recorder, side in zip(recorders, ("image", "text"), strict=True):
        _recorded(recorder, side, n, m, context)

    grads = _named_grads(tuple(r.encoder for r in recorders), scale)
    for name, increment in truth.items():
        grad, expected = grads[name], increment + PREFILL
        if grad is None or not torch.allclose(grad, expected, atol=GRAD_TOL, rtol=GRAD_TOL):
            where, shown = _worst_entry(grad, expected)
            raise CheckFailure(
                f"wrong .grad of `{name}` after the step",
                case=context,
                expected=f"the pre-filled {PREFILL} plus the full-batch gradient: {expected[where].item():.6g}{shown}",
                got="None" if grad is None else f"{grad[where].item():.6g}{shown}",
                cause=_gradient_cause(grads, truth, accumulated),
            )
    expect_close(got, loss, context + "; the returned loss", atol=GRAD_TOL, rtol=GRAD_TOL)
    if got.requires_grad:
        raise CheckFailure(
            "the returned loss is still attached to the autograd graph",
            case=context,
            cause="return loss.detach(): the caller only logs it, and an attached loss keeps the cache's graph alive",
        )


def _grad_cache_memory(learner) -> None:
    """N = 128, m = 16, inner width 1024, float32: peak ≤ ½ × the peak of full-batch backprop on the same model."""
    n, m = 128, 16
    encoders, images, texts = _setup(n, 1024, torch.float32, 50)
    context = (
        f"memory: N = {n}, micro_batch_size = {m}, float32 encoders Linear(16, 1024)–GELU–Linear(1024, 8)–normalise,"
        " logit_scale a 0-dim tensor requiring grad"
    )
    runs = []
    for _ in range(2):  # full-batch backprop, then the learner's step, each on fresh copies without .grad
        copies = tuple(copy.deepcopy(e) for e in encoders)
        scale = torch.tensor(CLIP_INIT_SCALE, requires_grad=True)
        runs.append(PeakMemory())
        with runs[-1]:
            if len(runs) == 1:
                clip_loss(copies[0](images), copies[1](texts), scale).backward()
            else:
                invoke(learner, *copies, images, texts, scale, m, context=context)
    full, meter = runs
    if meter.peak <= full.peak / 2:
        return
    raise CheckFailure(
        f"too much memory: the step peaked at {meter.peak / MIB:.2f} MiB of live tensors,"
        f" {meter.peak / full.peak:.2f} × the {full.peak / MIB:.2f} MiB of full-batch backprop",
        case=context,
        expected=f"≤ ½ × full-batch backprop = {full.peak / 2 / MIB:.2f} MiB",
        got=f"{meter.peak / MIB:.2f} MiB",
        cause="more than one micro-batch's autograd graph was alive at a time: after the cache is built, re-encode"
        " one micro-batch and backprop its surrogate before encoding the next (collecting the reps with grad and"
        " backpropagating once keeps every micro-batch's activations)",
    )


def check_grad_cache_step(learner, reference) -> None:
    """The call log, .grad of every parameter and of logit_scale, the returned loss, then the memory bound
    (``reference`` is not used: the truth is full-batch backprop of chapter 03's clip_loss)."""
    shapes = ((24, 8, torch.tensor(10.0)), (20, 6, 10.0), (16, 16, torch.tensor(5.0)), (12, 5, 20.0))
    for seed, (n, m, scale) in enumerate(shapes):
        _grad_cache_case(learner, n, m, scale, seed)
    _grad_cache_memory(learner)

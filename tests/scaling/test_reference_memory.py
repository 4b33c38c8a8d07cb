"""Chapter 10's memory-bounded references against their peers (chapter 03's clip_loss for chunked_clip_loss, luyug's
GradCache for grad_cache_step), their properties, and the direct proof that each check rejects its mutants and
accepts other-style solutions.

No peer of chunked_clip_loss runs on CPU (PyPI `inf-cl` is Triton/CUDA and computes one direction per call), so its
agreement is with the full loss. GradCache is on PyPI as `gradcache` 0.0.1 (luyug's package: its grad_cache.py
imports itself under its GitHub name `grad_cache`, so the test aliases that name); it is an optional peer, skipped
without it.
"""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from xmodal_ref.contrastive.reference import clip_loss
from xmodal_ref.grading.inputs import unit_rows
from xmodal_ref.scaling import checks_memory as checks
from xmodal_ref.scaling.memory import PeakMemory
from xmodal_ref.scaling.reference import chunked_clip_loss, grad_cache_step

GRADCACHE = "gradcache (PyPI 0.0.1, luyug/GradCache) is an optional peer for grad_cache_step (pip install gradcache)"


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def loss_and_grads(loss_fn, image, text, scale, *extra):
    image, text, scale = leaves(image, text, scale)
    loss = loss_fn(image, text, scale, *extra)
    loss.backward()
    return loss.detach(), image.grad, text.grad, scale.grad


# --- chunked_clip_loss -------------------------------------------------------------------------


def test_chunked_clip_loss_equals_the_full_clip_loss_at_n_3000_in_float64() -> None:
    """Measured: the loss within 1.8e-15 (the contract reports 7e-16), the feature gradients 2.8e-17, the scale 0."""
    image, text = unit_rows(3000, 32, 0, dtype=torch.float64), unit_rows(3000, 32, 1, dtype=torch.float64)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    ours = loss_and_grads(chunked_clip_loss, image, text, scale, 256)
    full = loss_and_grads(clip_loss, image, text, scale)
    deltas = [(a - b).abs().max().item() for a, b in zip(ours, full, strict=True)]
    assert deltas[0] <= 4e-15 and max(deltas[1:3]) <= 1e-16 and deltas[3] <= 1e-14, deltas


@given(
    n=st.integers(1, 40),
    d=st.integers(1, 8),
    chunk_size=st.integers(1, 50),
    scale=st.floats(0.5, 100.0),
    seed=st.integers(0, 10_000),
)
def test_chunked_clip_loss_has_clip_loss_value_and_gradients_for_any_chunking(
    n: int, d: int, chunk_size: int, scale: float, seed: int
) -> None:
    image, text = unit_rows(n, d, seed, dtype=torch.float64), unit_rows(n, d, seed + 1, dtype=torch.float64)
    scale_tensor = torch.tensor(scale, dtype=torch.float64)
    ours = loss_and_grads(chunked_clip_loss, image, text, scale_tensor, chunk_size)
    full = loss_and_grads(clip_loss, image, text, scale_tensor)
    for a, b in zip(ours, full, strict=True):
        torch.testing.assert_close(a, b, atol=1e-11 * scale, rtol=1e-10)


def test_chunked_clip_loss_of_one_pair_is_zero_with_zero_gradients() -> None:
    loss, *grads = loss_and_grads(chunked_clip_loss, unit_rows(1, 4, 0), unit_rows(1, 4, 1), torch.tensor(50.0), 3)
    assert loss.item() == 0.0
    assert all(bool((g == 0).all()) for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_clip_loss_keeps_the_dtype_and_takes_a_float_scale(dtype: torch.dtype) -> None:
    image, text = leaves(unit_rows(9, 4, 2, dtype=dtype), unit_rows(9, 4, 3, dtype=dtype))
    loss = chunked_clip_loss(image, text, 12.5, 4)
    loss.backward()
    assert loss.dtype == image.grad.dtype == text.grad.dtype == dtype and loss.dim() == 0
    torch.testing.assert_close(loss, clip_loss(image.detach(), text.detach(), 12.5))


def test_chunked_clip_loss_is_finite_in_float32_where_logits_pass_88() -> None:
    """At scale 100 in 2-D, near-duplicate pairs give logits of ±100: a naive exp overflows, the reference does not."""
    image = unit_rows(64, 2, 4)
    text = torch.nn.functional.normalize(image + 0.01 * unit_rows(64, 2, 5), dim=-1)
    loss, *grads = loss_and_grads(chunked_clip_loss, image, text, torch.tensor(100.0), 8)
    assert torch.exp(100.0 * image @ text.T).isinf().any()
    assert loss.isfinite() and all(bool(g.isfinite().all()) for g in grads)
    truth = clip_loss(image.double(), text.double(), 100.0)
    assert abs(loss.item() - truth.item()) < 1e-4


def test_chunked_clip_loss_memory_leaves_a_margin_under_the_graded_bound() -> None:
    """Measured: 0.143 of one float32 N×N matrix at N = 1024, chunk 16 (the bound is 0.5; the contract's prototype
    reported 0.158)."""
    n = 1024
    image, text, scale = leaves(unit_rows(n, 16, 40), unit_rows(n, 16, 41), torch.tensor(1 / 0.07))
    with PeakMemory() as meter:
        chunked_clip_loss(image, text, scale, 16).backward()
    assert meter.peak / (n * n * 4) < 0.2


# --- grad_cache_step ---------------------------------------------------------------------------


def full_batch_grads(encoders, images, texts, scale) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    encoders = tuple(copy.deepcopy(e) for e in encoders)
    scale = scale.detach().clone().requires_grad_(True)
    loss = clip_loss(encoders[0](images), encoders[1](texts), scale)
    loss.backward()
    return checks._named_grads(encoders, scale), loss.detach()


def grad_cache_grads(step, encoders, images, texts, scale, m) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    encoders = tuple(copy.deepcopy(e) for e in encoders)
    scale = scale.detach().clone().requires_grad_(True)
    loss = step(*encoders, images, texts, scale, m)
    return checks._named_grads(encoders, scale), loss


@given(n=st.integers(1, 20), m=st.integers(1, 25), seed=st.integers(0, 10_000))
def test_grad_cache_step_adds_the_full_batch_gradient(n: int, m: int, seed: int) -> None:
    encoders, images, texts = checks._setup(n, 8, torch.float64, seed)
    scale = torch.tensor(7.0, dtype=torch.float64)
    expected, expected_loss = full_batch_grads(encoders, images, texts, scale)
    got, loss = grad_cache_grads(grad_cache_step, encoders, images, texts, scale, m)
    assert not loss.requires_grad and loss.dim() == 0
    torch.testing.assert_close(loss, expected_loss, atol=1e-13, rtol=0)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-12, rtol=1e-10)


def test_grad_cache_step_adds_to_existing_gradients_and_accepts_a_float_scale() -> None:
    (image_encoder, text_encoder), images, texts = checks._setup(10, 8, torch.float64, 3)
    expected = copy.deepcopy((image_encoder, text_encoder))
    clip_loss(expected[0](images), expected[1](texts), 4.0).backward()
    for p in [*image_encoder.parameters(), *text_encoder.parameters()]:
        p.grad = torch.ones_like(p)
    grad_cache_step(image_encoder, text_encoder, images, texts, 4.0, 3)
    got = [*image_encoder.parameters(), *text_encoder.parameters()]
    for p, q in zip(got, [*expected[0].parameters(), *expected[1].parameters()], strict=True):
        torch.testing.assert_close(p.grad, q.grad + 1, atol=1e-12, rtol=0)


def test_grad_cache_step_memory_leaves_a_margin_under_the_graded_bound() -> None:
    """Measured: 0.255 of full-batch backprop (N = 128, m = 16, width 1024); the contract reports 0.26."""
    encoders, images, texts = checks._setup(128, 1024, torch.float32, 50)
    peaks = []
    for step in (lambda a, b, x, y, s, m: clip_loss(a(x), b(y), s).backward(), grad_cache_step):
        copies = tuple(copy.deepcopy(e) for e in encoders)
        with PeakMemory() as meter:
            step(*copies, images, texts, torch.tensor(1 / 0.07, requires_grad=True), 16)
        peaks.append(meter.peak)
    assert peaks[1] / peaks[0] < 0.3


def import_gradcache():
    """luyug's GradCache from PyPI `gradcache` 0.0.1, whose module imports `grad_cache.context_managers`."""
    package = pytest.importorskip("gradcache", reason=GRADCACHE)
    sys.modules.setdefault("grad_cache", package)
    return importlib.import_module("gradcache.grad_cache").GradCache


@pytest.mark.parametrize(("n", "m"), [(24, 8), (20, 6), (16, 16), (12, 5)])
@pytest.mark.parametrize("scale", [torch.tensor(10.0, dtype=torch.float64), 10.0])
def test_grad_cache_step_equals_luyug_gradcache(n: int, m: int, scale) -> None:
    """Measured in a throwaway install (gradcache 0.0.1, torch 2.13): every .grad and the loss identical, Δ = 0.0."""
    GradCache = import_gradcache()
    encoders, images, texts = checks._setup(n, 32, torch.float64, n)

    def run(step):
        copies = tuple(copy.deepcopy(e) for e in encoders)
        s = scale.detach().clone().requires_grad_(True) if isinstance(scale, torch.Tensor) else scale
        loss = step(copies, s)
        return checks._named_grads(copies, s), loss

    ours, our_loss = run(lambda e, s: grad_cache_step(*e, images, texts, s, m))
    peer = lambda e, s: GradCache(models=list(e), chunk_sizes=m, loss_fn=clip_loss)(images, texts, logit_scale=s)  # noqa: E731
    theirs, their_loss = run(peer)
    assert torch.equal(our_loss, their_loss)
    for name, grad in theirs.items():
        assert torch.equal(ours[name], grad), name

"""Chapter 10's distributed references (all_gather_with_grad, distributed_clip_loss) against their peer, OpenCLIP's
ClipLoss, and torch's built-in autograd gathers; their properties (the closed-form gather, equivalence with one
process on the full batch); and the direct proof that each check rejects its mutants and accepts other-style
solutions.

OpenCLIP is an optional peer and is never imported as a package: only its ``loss.py`` (which needs nothing but torch)
is loaded by path, from ``$XMODAL_OPENCLIP_LOSS`` or from an installed ``open_clip``; without either those tests are
skipped. Every test here forks gloo ranks (``xmodal_ref.scaling.ranks``), so all are skipped where fork is missing.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xmodal_ref.contrastive.reference import clip_loss
from xmodal_ref.scaling.ranks import can_fork, on_ranks
from xmodal_ref.scaling.reference import all_gather_with_grad, distributed_clip_loss

pytestmark = pytest.mark.skipif(not can_fork(), reason="the distributed checks fork gloo ranks")

CONFIGS = [(False, False), (False, True), (True, False), (True, True)]  # (local_loss, gather_with_grad)
OPENCLIP = (
    "OpenCLIP's loss.py is an optional peer: set XMODAL_OPENCLIP_LOSS to it (e.g. unzip the open-clip-torch 3.3.0"
    " wheel) or pip install open-clip-torch"
)


def gaussian(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def pairs(rank: int, b: int = 4, d: int = 8, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    image = F.normalize(gaussian(b, d, seed=2 * rank), dim=-1)
    return image.to(dtype), F.normalize(image + 0.6 * gaussian(b, d, seed=2 * rank + 1), dim=-1).to(dtype)


def loss_and_grads(fn, image, text, scale: float, **flags) -> list[torch.Tensor]:
    leaves = [image.clone().requires_grad_(), text.clone().requires_grad_(), torch.tensor(scale, dtype=image.dtype)]
    leaves[2].requires_grad_()
    loss = fn(*leaves, **flags)
    loss.backward()
    return [loss.detach(), *(leaf.grad for leaf in leaves)]


def every_config(image: torch.Tensor, text: torch.Tensor) -> list[list[torch.Tensor]]:
    """distributed_clip_loss's loss and gradients in each of CONFIGS."""
    return [
        loss_and_grads(distributed_clip_loss, image, text, 7.5, local_loss=local_loss, gather_with_grad=with_grad)
        for local_loss, with_grad in CONFIGS
    ]


# --- the peer: OpenCLIP's ClipLoss --------------------------------------------------------------


def openclip_loss_module() -> ModuleType:
    path = os.environ.get("XMODAL_OPENCLIP_LOSS")
    if path is None:
        spec = importlib.util.find_spec("open_clip")
        if spec is None or spec.origin is None:
            pytest.skip(OPENCLIP)
        path = str(Path(spec.origin).parent / "loss.py")
    if not Path(path).is_file():
        pytest.skip(f"{path} does not exist. {OPENCLIP}")
    spec = importlib.util.spec_from_file_location("openclip_loss_peer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distributed_clip_loss_equals_openclip_clip_loss(world_size: int, dtype: torch.dtype) -> None:
    """The losses agree exactly. The gradients agree exactly but for one rounding step in (local, grad) with 3 ranks:
    OpenCLIP's gather (torch.distributed.nn) adds the ranks' gradients after an all_to_all, ours in a reduce-scatter.
    """
    peer = openclip_loss_module()

    def agreement() -> torch.Tensor:
        rank = dist.get_rank()
        image, text = pairs(rank, dtype=dtype)
        gaps = []  # per configuration: |Δ loss|, max |Δ gradient|
        for local_loss, gather_with_grad in CONFIGS:
            flags = {"local_loss": local_loss, "gather_with_grad": gather_with_grad}
            ours = loss_and_grads(distributed_clip_loss, image, text, 7.5, **flags)
            openclip = peer.ClipLoss(**flags, rank=rank, world_size=world_size)
            with warnings.catch_warnings():  # OpenCLIP gathers with torch.distributed.nn.all_gather, deprecated in 2.13
                warnings.simplefilter("ignore", FutureWarning)
                theirs = loss_and_grads(openclip, image, text, 7.5)
            differences = [(a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True)]
            gaps.append([differences[0], max(differences[1:])])
        return torch.tensor(gaps, dtype=torch.float64)

    gaps = torch.stack(on_ranks(agreement, world_size)).amax(dim=0)  # (configurations, 2), the worst rank
    table = {config: gap for config, gap in zip(CONFIGS, gaps.tolist(), strict=True)}
    print(f"W={world_size} {dtype}: (local_loss, gather_with_grad) → [|Δ loss|, max |Δ grad|] {table}")
    assert gaps[:, 0].max().item() == 0.0
    assert gaps[:, 1].max().item() <= 2 * torch.finfo(dtype).eps


# --- all_gather_with_grad: the closed form, the built-in peers ----------------------------------


def gather_closed_form(fn, shape: tuple[int, ...]):
    """Runs in every rank: fn's output and gradient, with the inputs and weights of every rank for the closed form."""

    def scenario() -> dict[str, object]:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        x = gaussian(*shape, seed=rank).requires_grad_()
        weights = [gaussian(world_size * shape[0], *shape[1:], seed=100 + r) for r in range(world_size)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the reference uses no deprecated API
            out = fn(x)
            (out * weights[rank]).sum().backward()
        b = shape[0]
        return {
            "out": out.detach(),
            "grad": x.grad,
            "expected_out": torch.cat([gaussian(*shape, seed=r) for r in range(world_size)]),
            "expected_grad": sum(w[rank * b : (rank + 1) * b] for w in weights),
        }

    return scenario


@settings(max_examples=8, deadline=None)
@given(
    world_size=st.integers(1, 4),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
)
def test_all_gather_with_grad_is_the_concatenation_and_sums_the_gradient_over_ranks(world_size, shape) -> None:
    for result in on_ranks(gather_closed_form(all_gather_with_grad, shape), world_size):
        assert torch.equal(result["out"], result["expected_out"])
        torch.testing.assert_close(result["grad"], result["expected_grad"], atol=1e-12, rtol=0)


def builtin_cat(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed.nn

    return torch.cat(torch.distributed.nn.functional.all_gather(tensor))


def functional_collectives(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed._functional_collectives as funcol

    return funcol.all_gather_single_autograd(tensor, 0, dist.group.WORLD)


@pytest.mark.parametrize("builtin", [builtin_cat, functional_collectives])
def test_torch_builtin_autograd_gathers_agree_and_the_first_is_deprecated(builtin) -> None:
    def both() -> dict[str, object]:
        x = gaussian(3, 2, seed=dist.get_rank())
        weight = gaussian(3 * dist.get_world_size(), 2, seed=10 + dist.get_rank())
        results = {}
        for name, fn in (("ours", all_gather_with_grad), ("builtin", builtin)):
            leaf = x.clone().requires_grad_()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = fn(leaf)
            (out * weight).sum().backward()
            results[name] = (out.detach(), leaf.grad)
            results[name + " warnings"] = [w.category.__name__ for w in caught]
        return results

    for result in on_ranks(both, 3):
        for ours, theirs in zip(result["ours"], result["builtin"], strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
        assert result["ours warnings"] == []
        assert ("FutureWarning" in result["builtin warnings"]) == (builtin is builtin_cat)


def test_all_gather_with_grad_without_a_group_is_the_identity() -> None:
    x = gaussian(2, 3, seed=0).requires_grad_()
    assert not dist.is_initialized() and all_gather_with_grad(x) is x


# --- distributed_clip_loss: one big batch --------------------------------------------------------


def full_batch(world_size: int) -> list[torch.Tensor]:
    """clip_loss on the concatenation of every rank's pairs, and its gradients."""
    image = torch.cat([pairs(r)[0] for r in range(world_size)])
    text = torch.cat([pairs(r)[1] for r in range(world_size)])
    return loss_and_grads(clip_loss, image, text, 7.5)


@pytest.mark.parametrize("world_size", [2, 3])
def test_gradients_match_one_process_on_the_full_batch_as_the_facts_say(world_size: int) -> None:
    """After DDP's 1/W average, (local, grad) and (global, grad) are full-batch training; (global, no-grad) gives the
    features their full-batch gradient (1/W after averaging) and the scale its full one; (local, no-grad) is biased.
    """

    results = on_ranks(lambda: every_config(*pairs(dist.get_rank())), world_size)
    loss, image_grad, text_grad, scale_grad = full_batch(world_size)

    def averaged(config: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What DDP would see: the mean loss and scale gradient, each rank's features' gradient divided by W."""
        runs = [r[config] for r in results]
        return (
            torch.stack([run[0] for run in runs]).mean(),
            torch.cat([run[1] for run in runs]) / world_size,
            torch.cat([run[2] for run in runs]) / world_size,
            torch.stack([run[3] for run in runs]).mean(),
        )

    for exact in (CONFIGS.index((True, True)), CONFIGS.index((False, True))):
        for ours, full in zip(averaged(exact), (loss, image_grad, text_grad, scale_grad), strict=True):
            torch.testing.assert_close(ours, full, atol=1e-14, rtol=0)
    global_no_grad = averaged(CONFIGS.index((False, False)))
    torch.testing.assert_close(global_no_grad[1] * world_size, image_grad, atol=1e-14, rtol=0)
    torch.testing.assert_close(global_no_grad[3], scale_grad, atol=1e-14, rtol=0)
    biased = averaged(CONFIGS.index((True, False)))[1]
    assert (biased - image_grad).abs().max() > 1e-2
    for config in (CONFIGS.index((False, False)), CONFIGS.index((False, True))):  # the global loss is the full one
        for run in results:
            torch.testing.assert_close(run[config][0], loss, atol=1e-14, rtol=0)


def test_without_a_group_and_with_world_size_one_it_is_chapter_03s_clip_loss() -> None:
    image, text = pairs(0)
    expected = loss_and_grads(clip_loss, image, text, 7.5)
    for flags in ({}, {"local_loss": True, "gather_with_grad": True}):
        for ours, theirs in zip(
            loss_and_grads(distributed_clip_loss, image, text, 7.5, **flags), expected, strict=True
        ):
            assert torch.equal(ours, theirs)

    for run in on_ranks(every_config, 1, image, text)[0]:
        for ours, theirs in zip(run, expected, strict=True):
            assert torch.equal(ours, theirs)

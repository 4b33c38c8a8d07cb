"""Chapter 10 recipe A: two ranks are one big batch (when the gather carries the gradient).

A small dual encoder (``DualEncoder``: two [32 → 64 → GELU → 16] MLPs whose outputs are L2-normalised, and CLIP's
learnable temperature stored as ``log_scale`` = log(1/0.07)) trains on pairs that share an 8-d latent
(``xmodal_ref.data.make_latent_pairs``) with plain SGD: 30 steps, learning rate 0.5, a fresh batch of 128 pairs
per step. Data-parallel training splits each batch over W ranks (rank r takes rows r·b:(r+1)·b, b = 128 / W),
computes ``distributed_clip_loss`` on its rows, and averages the gradients over the ranks with
``dist.all_reduce(p.grad) / W``, which is what ``DistributedDataParallel`` does (DDP itself would import
``torch._dynamo`` in every rank). The truth is one process training on the whole batch with chapter 03's
``clip_loss``, from the same initial weights.

``run_equivalence`` trains all four (local_loss, gather_with_grad) configurations in one launch of two gloo ranks
(``xmodal_ref.scaling.ranks.on_ranks``) and compares. Measured, float32: (local, grad) and (global, grad) end within
1e-6 of the single process (float64: 5e-16), while both no-grad configurations end about 0.5 away. At step 0,
(global, no-grad) gives the encoders exactly the full-batch gradient divided by W, but the replicated logit scale
its full gradient.
``data_parallel_sgd`` is the training loop itself; the torchrun launcher ``xmodal_ref.scaling.train`` runs it too.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from xmodal_ref.common.device import one_thread
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.contrastive.reference import clip_loss
from xmodal_ref.data.latent_pairs import DIM, make_latent_pairs

from .ranks import on_ranks
from .reference import distributed_clip_loss

# loss_fn(image_features, text_features, logit_scale) → 0-dim loss, with the configuration already bound
PairLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepHook = Callable[[int, float], None]  # on_step(step, this rank's loss)

HIDDEN, EMBED_DIM = 64, 16
INIT_SCALE = 1 / 0.07
STEPS, LR, GLOBAL_BATCH, WORLD_SIZE = 30, 0.5, 128, 2
#: (local_loss, gather_with_grad), in the order the ranks train them.
CONFIGS: tuple[tuple[bool, bool], ...] = ((True, True), (False, True), (False, False), (True, False))
#: Seconds the two ranks may take for all four configurations (forked: ~1 s; spawned ranks import torch first).
RANK_DEADLINE = 120.0


def config_name(local_loss: bool, gather_with_grad: bool) -> str:
    """ "(local, grad)", "(global, no-grad)", …: the configuration as the chapter's tables name it."""
    return f"({'local' if local_loss else 'global'}, {'grad' if gather_with_grad else 'no-grad'})"


def _encoder() -> nn.Sequential:
    return nn.Sequential(nn.Linear(DIM, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, EMBED_DIM))


class DualEncoder(nn.Module):
    """Two [32 → 64 → GELU → 16] MLPs, features L2-normalised, and a learnable ``log_scale`` = log(1/0.07).

    forward(images (B, 32), texts (B, 32)) → (image features (B, 16), text features (B, 16), exp(log_scale)),
    the three arguments of a CLIP loss. ``parameters()`` yields ``log_scale`` first (a module's own parameters come
    before its children's), then the image encoder's and the text encoder's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = _encoder()
        self.text_encoder = _encoder()
        self.log_scale = nn.Parameter(torch.tensor(math.log(INIT_SCALE)))

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.image_encoder(images), dim=-1)  # (B, EMBED_DIM)
        text_features = F.normalize(self.text_encoder(texts), dim=-1)  # (B, EMBED_DIM)
        return image_features, text_features, self.log_scale.exp()


def make_dual_encoder(seed: int, dtype: torch.dtype = torch.float32) -> DualEncoder:
    """A ``DualEncoder`` initialised from ``seed`` (the same weights in every process), the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DualEncoder().to(dtype)


def data_parallel_sgd(
    loss_fn: PairLoss,
    *,
    rank: int = 0,
    world_size: int = 1,
    steps: int = STEPS,
    lr: float = LR,
    global_batch: int = GLOBAL_BATCH,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    on_step: StepHook | None = None,
) -> dict:
    """This rank's share of data-parallel SGD on the latent pairs; with world_size 1, plain full-batch training.

    Step t uses pairs t·global_batch … (t+1)·global_batch − 1 of ``make_latent_pairs(steps · global_batch, seed)``;
    this rank takes its b = global_batch / world_size consecutive rows of them, calls ``loss_fn`` on the model's
    outputs, backpropagates and, when world_size > 1, replaces every gradient by its mean over the ranks
    (``dist.all_reduce`` on the default group, then / world_size). Then θ ← θ − lr·∇θ.
    Returns {"params": every parameter flattened into one vector (log_scale first, on the CPU), "encoder_grad"
    (the averaged step-0 gradient of both encoders, flattened), "scale_grad" (that of log_scale, 0-dim), "losses"
    (this rank's loss at every step)}.
    """
    if global_batch % world_size:
        raise ValueError(f"global_batch {global_batch} is not a multiple of world_size {world_size}")
    b = global_batch // world_size
    data = make_latent_pairs(steps * global_batch, seed)
    images, texts = (x.to(device=device, dtype=dtype) for x in (data.images, data.texts))
    model = make_dual_encoder(seed, dtype).to(device)
    params = list(model.parameters())
    losses: list[float] = []
    first_grad: torch.Tensor | None = None
    for step in range(steps):
        rows = slice(step * global_batch + rank * b, step * global_batch + (rank + 1) * b)
        model.zero_grad(set_to_none=True)
        loss = loss_fn(*model(images[rows], texts[rows]))
        loss.backward()
        with torch.no_grad():
            for p in params:
                if world_size > 1:
                    dist.all_reduce(p.grad)  # a SUM over the ranks
                    p.grad /= world_size
            if step == 0:
                first_grad = torch.cat([p.grad.flatten() for p in params]).cpu()
            for p in params:
                p -= lr * p.grad
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    assert first_grad is not None, "steps must be at least 1"
    return {
        "params": torch.cat([p.detach().flatten() for p in params]).cpu(),
        "encoder_grad": first_grad[1:],
        "scale_grad": first_grad[0],
        "losses": losses,
    }


def _train_configurations(
    loss_fn: Callable[..., torch.Tensor], steps: int, lr: float, global_batch: int, seed: int, dtype: torch.dtype
) -> list[dict]:
    """The rank worker: ``data_parallel_sgd`` for every entry of CONFIGS in turn, on this rank of the group."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    return [
        data_parallel_sgd(
            functools.partial(loss_fn, local_loss=local_loss, gather_with_grad=gather_with_grad),
            rank=rank,
            world_size=world_size,
            steps=steps,
            lr=lr,
            global_batch=global_batch,
            seed=seed,
            dtype=dtype,
        )
        for local_loss, gather_with_grad in CONFIGS
    ]


def _max_abs(x: torch.Tensor) -> float:
    return x.abs().max().item()


@memoised
def run_equivalence(
    loss_fn: Callable[..., torch.Tensor] | None = None,
    *,
    world_size: int = WORLD_SIZE,
    steps: int = STEPS,
    lr: float = LR,
    global_batch: int = GLOBAL_BATCH,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    start_method: str | None = None,
) -> dict:
    """Train the four (local_loss, gather_with_grad) configurations on ``world_size`` gloo ranks and compare each
    with one process training on the whole batch.

    ``loss_fn``: ``distributed_clip_loss``'s contract (None: the reference), called by every rank as
    ``loss_fn(image_features, text_features, logit_scale, local_loss=…, gather_with_grad=…)``. The ranks are forked
    where the platform can fork and spawned otherwise (``start_method`` forces one; a spawned rank needs an
    importable ``loss_fn``). The single process uses chapter 03's ``clip_loss`` on one thread.

    Returns {"configs": {config_name: {"local_loss", "gather_with_grad", "max_delta" (max|θ_rank0 − θ_single|
    after the last step), "rank_spread" (max|θ_rank0 − θ_rank r| over the ranks: 0 when every rank applied the
    same averaged gradient), "encoder_delta" (max|g − g_full| of the encoders' averaged step-0 gradient),
    "encoder_delta_over_w" (max|g − g_full / W|), "scale_ratio" (the logit scale's step-0 gradient over the full
    one), "losses" (rank 0's per step)}}, "single_losses", "world_size", "steps", "dtype" (its name), "seconds",
    "rank_seconds" (the launch), "single_seconds"}.
    """
    loss_fn = distributed_clip_loss if loss_fn is None else loss_fn
    start = time.perf_counter()
    ranks = on_ranks(
        _train_configurations,
        world_size,
        loss_fn,
        steps,
        lr,
        global_batch,
        seed,
        dtype,
        deadline=RANK_DEADLINE,
        start_method=start_method,
    )
    rank_seconds = time.perf_counter() - start
    with one_thread():
        single = data_parallel_sgd(clip_loss, steps=steps, lr=lr, global_batch=global_batch, seed=seed, dtype=dtype)
    single_seconds = time.perf_counter() - start - rank_seconds
    configs = {}
    for index, (local_loss, gather_with_grad) in enumerate(CONFIGS):
        first = ranks[0][index]
        configs[config_name(local_loss, gather_with_grad)] = {
            "local_loss": local_loss,
            "gather_with_grad": gather_with_grad,
            "max_delta": _max_abs(first["params"] - single["params"]),
            "rank_spread": max(_max_abs(first["params"] - other[index]["params"]) for other in ranks),
            "encoder_delta": _max_abs(first["encoder_grad"] - single["encoder_grad"]),
            "encoder_delta_over_w": _max_abs(first["encoder_grad"] - single["encoder_grad"] / world_size),
            "scale_ratio": (first["scale_grad"] / single["scale_grad"]).item(),
            "losses": first["losses"],
        }
    return {
        "configs": configs,
        "single_losses": single["losses"],
        "world_size": world_size,
        "steps": steps,
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": time.perf_counter() - start,
        "rank_seconds": rank_seconds,
        "single_seconds": single_seconds,
    }

"""Chapter 10 · scaling: contrastive training across processes and beyond one device's memory.

Every public function or class here is the reference for one graded exercise. Each is self-contained (it needs only
``torch``, ``torch.distributed``, ``torch.nn`` and ``torch.nn.functional``), because its source is copied verbatim
into the worked-solution notebook: custom autograd Functions are therefore defined inside the function that uses
them, and ``grad_cache_step`` writes out chapter 03's clip loss instead of importing it. ``distributed_clip_loss``
calls ``all_gather_with_grad``, the previous exercise, which the notebook defines in the cell before.

Why the gather is an autograd.Function written by hand (torch 2.13's deprecations) is in its docstring.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 that autograd can differentiate (OpenCLIP's gather_with_grad=True path).

    Call it on every rank of the default process group (torch.distributed initialised). Every rank
    passes a tensor of the same shape (b, *rest) and the same floating dtype. Returns a tensor of shape
    (world_size·b, *rest): the ranks' tensors concatenated in rank order (rank 0's rows first). It is
    identical on every rank and has the input's dtype.

    Backward: the gradient that reaches rank r's `tensor` is the SUM, over all ranks, of the gradient
    flowing into rows r·b:(r+1)·b of that rank's output (a reduce-scatter with SUM). With world_size 1
    it is the identity. `tensor` is not modified.

    Why a hand-written autograd.Function: torch 2.13 deprecates both autograd gathers torch.distributed
    offers (torch.distributed.nn.functional.all_gather, and _functional_collectives.all_gather_tensor_autograd,
    which OpenCLIP prefers). Their successor, _functional_collectives.all_gather_single_autograd, is a private
    module whose first call imports torch._dynamo (seconds per process). So this gathers with the public
    dist.all_gather_single and reduces with dist.reduce_scatter_single (all_gather_into_tensor and
    reduce_scatter_tensor are deprecated too).
    """
    # A process without a group is treated as a world of one rank: the identity, as for world_size 1.
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor

    class AllGatherSumBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, local: torch.Tensor) -> torch.Tensor:
            world_size = dist.get_world_size()
            gathered = local.new_empty((world_size * local.shape[0], *local.shape[1:]))  # (W·b, *rest)
            dist.all_gather_single(gathered, local.contiguous())
            return gathered

        @staticmethod
        def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
            world_size = dist.get_world_size()
            grad = grad_output.new_empty((grad_output.shape[0] // world_size, *grad_output.shape[1:]))  # (b, *rest)
            # Rank r receives Σ over ranks of their output gradient's rows r·b:(r+1)·b.
            dist.reduce_scatter_single(grad, grad_output.contiguous(), op=dist.ReduceOp.SUM)
            return grad

    return AllGatherSumBackward.apply(tensor)


def distributed_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    local_loss: bool = False,
    gather_with_grad: bool = False,
) -> torch.Tensor:
    """This rank's CLIP loss in data-parallel training: OpenCLIP ClipLoss.forward with world_size > 1.

    image_features, text_features: (b, D), L2-normalised; row i of each is a pair; b is the same on
    every rank. logit_scale: a float or a 0-dim tensor (the multiplier exp(t), replicated on all ranks).
    rank and world_size come from torch.distributed's default group. If torch.distributed is not
    initialised, or world_size == 1, return chapter 03's clip_loss(image, text, logit_scale).

    Gathering (N = world_size·b rows, in rank order):
      gather_with_grad=True:  an autograd-aware all-gather (E1 semantics) of both modalities;
      gather_with_grad=False: dist.all_gather of the values (no autograd history). When
        local_loss=False, this rank's slot is then replaced by its own image_features/text_features,
        so they carry gradient. When local_loss=True, nothing is replaced.
    Logits and labels:
      local_loss=True:  logits_per_image = s · image_features @ all_text.T  (b, N)
                        logits_per_text  = s · text_features  @ all_image.T (b, N)
                        labels = arange(b) + rank·b
      local_loss=False: logits_per_image = s · all_image @ all_text.T (N, N); logits_per_text = its
                        transpose; labels = arange(N)
    Returns ½·[CE(logits_per_image, labels) + CE(logits_per_text, labels)], each a mean over rows:
    a 0-dim tensor in the features' dtype.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        # chapter 03's clip_loss, inlined: a reference is copied into its exercise cell alone
        logits_per_image = logit_scale * image_features @ text_features.T  # (b, b)
        labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)  # (b,)
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2

    rank, world_size = dist.get_rank(), dist.get_world_size()
    b = image_features.shape[0]
    if gather_with_grad:
        # the previous exercise's reference (the cell before in the notebook, the same reference.py)
        all_image = all_gather_with_grad(image_features)  # (N, D)
        all_text = all_gather_with_grad(text_features)  # (N, D)
    else:
        gathered = []
        for own in (image_features, text_features):
            slots = [torch.zeros_like(own) for _ in range(world_size)]  # W × (b, D)
            dist.all_gather(slots, own)  # values only: no autograd history
            if not local_loss:
                slots[rank] = own  # this rank's own rows carry its gradient
            gathered.append(torch.cat(slots))  # (N, D)
        all_image, all_text = gathered

    if local_loss:
        logits_per_image = logit_scale * image_features @ all_text.T  # (b, N)
        logits_per_text = logit_scale * text_features @ all_image.T  # (b, N)
        labels = torch.arange(b, device=image_features.device) + rank * b  # (b,)
    else:
        logits_per_image = logit_scale * all_image @ all_text.T  # (N, N)
        logits_per_text = logits_per_image.T  # (N, N)
        labels = torch.arange(world_size * b, device=image_features.device)  # (N,)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def chunked_clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Chapter 03's clip_loss, computed without ever holding an N×N matrix (Inf-CL, arXiv:2410.17243).

    image_features, text_features: (N, D), L2-normalised, row i of each a pair; logit_scale: a float or
    a 0-dim tensor that may require grad; chunk_size >= 1: work on blocks of at most chunk_size × N
    logits (row blocks, column blocks or tiles), the last block may be smaller.
    Returns the same 0-dim tensor as clip_loss(image, text, logit_scale) = ½[CE(s·I·Tᵀ, arange N) +
    CE(s·T·Iᵀ, arange N)], in the features' dtype, and the same gradients w.r.t. both features and a
    tensor logit_scale. N = 1 gives 0; chunk_size >= N is one block.
    Memory: in forward and backward together, the live tensors it creates stay O(chunk_size·N + N·D).
    No N×N matrix, and no per-block graph kept for backward: recompute blocks in backward (custom
    autograd.Function) or checkpoint them. Numerically stable at logit_scale = 100 in float32 (logits
    beyond ±88 must not overflow exp).
    """

    class ChunkedClipLoss(torch.autograd.Function):
        """Forward streams the row and column log-sum-exps; backward recomputes each block of logits."""

        @staticmethod
        def forward(ctx, image, text, scale):
            n = image.shape[0]
            row_lse = image.new_empty(n)  # (N,): a row block holds whole rows, so each r_i is final at once
            col_lse = image.new_full((n,), float("-inf"))  # (N,): merged across row blocks
            positives = image.new_empty(n)  # (N,): the diagonal l_ii
            for start in range(0, n, chunk_size):
                block = scale * image[start : start + chunk_size] @ text.T  # (c, N)
                rows = torch.arange(block.shape[0], device=block.device)
                positives[start : start + chunk_size] = block[rows, rows + start]
                row_lse[start : start + chunk_size] = torch.logsumexp(block, dim=1)
                col_lse = torch.logaddexp(col_lse, torch.logsumexp(block, dim=0))  # stable: max-subtracted merge
            ctx.save_for_backward(image, text, scale, row_lse, col_lse)
            return ((row_lse - positives).sum() + (col_lse - positives).sum()) / (2 * n)

        @staticmethod
        def backward(ctx, grad_loss):
            image, text, scale, row_lse, col_lse = ctx.saved_tensors
            n = image.shape[0]
            grad_image, grad_text = torch.zeros_like(image), torch.zeros_like(text)  # (N, D) each
            grad_scale = torch.zeros_like(scale)
            for start in range(0, n, chunk_size):
                rows = image[start : start + chunk_size]  # (c, D)
                similarity = rows @ text.T  # (c, N)
                logits = scale * similarity
                # ∂L/∂l_ij = (e^{l_ij − r_i} + e^{l_ij − c_j}) / 2N − δ_ij / N; every exponent is ≤ 0
                grad_logits = (logits - row_lse[start : start + chunk_size, None]).exp()
                grad_logits += (logits - col_lse[None, :]).exp()
                grad_logits /= 2 * n
                diagonal = torch.arange(rows.shape[0], device=image.device)
                grad_logits[diagonal, diagonal + start] -= 1 / n
                grad_scale += (grad_logits * similarity).sum()
                grad_logits *= scale
                grad_image[start : start + chunk_size] = grad_logits @ text
                grad_text += grad_logits.T @ rows
            return grad_loss * grad_image, grad_loss * grad_text, grad_loss * grad_scale

    dtype = image_features.dtype
    scale = torch.as_tensor(logit_scale, device=image_features.device).to(dtype)  # autograd casts its gradient back
    return ChunkedClipLoss.apply(image_features, text_features, scale)


def grad_cache_step(
    image_encoder: nn.Module,
    text_encoder: nn.Module,
    images: torch.Tensor,
    texts: torch.Tensor,
    logit_scale: float | torch.Tensor,
    micro_batch_size: int,
) -> torch.Tensor:
    """One gradient-cache step (GradCache, Gao et al. 2021, arXiv:2101.06983) for the CLIP loss.

    image_encoder / text_encoder map (m, ...) -> (m, D) features that are already L2-normalised; they
    are deterministic (no dropout), so the RNG-state replay of GradCache's RandContext is not needed.
    images: (N, ...), texts: (N, ...); micro-batches are consecutive slices of micro_batch_size rows along
    dim 0 (the last may be shorter). logit_scale: a float or a 0-dim tensor that may require grad.
    Effect: adds to .grad of every parameter of both encoders, and of logit_scale when it is a tensor
    requiring grad, exactly what clip_loss(image_encoder(images), text_encoder(texts),
    logit_scale).backward() would add (chapter 03's clip_loss), while
      * no encoder call made with autograd enabled sees more than micro_batch_size rows, and
      * at most one micro-batch's autograd graph is alive at a time.
    Returns the loss value as a detached 0-dim tensor. Does not zero or step anything.
    """
    image_batches = images.split(micro_batch_size)
    text_batches = texts.split(micro_batch_size)

    # Pass 1: embed every micro-batch without a graph, then the loss on leaf copies of the representations.
    with torch.no_grad():
        image_reps = torch.cat([image_encoder(x) for x in image_batches])  # (N, D)
        text_reps = torch.cat([text_encoder(y) for y in text_batches])  # (N, D)
    image_reps.requires_grad_(True)
    text_reps.requires_grad_(True)
    logits = logit_scale * image_reps @ text_reps.T  # (N, N)
    targets = torch.arange(logits.shape[0], device=logits.device)  # (N,)
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    loss.backward()  # fills the cache ∂L/∂reps, and adds ∂L/∂logit_scale to logit_scale.grad

    # Pass 2: re-encode one micro-batch at a time with a graph; backprop the cached gradient through it.
    for encoder, batches, cache in (
        (image_encoder, image_batches, image_reps.grad),
        (text_encoder, text_batches, text_reps.grad),
    ):
        for x, cached in zip(batches, cache.split(micro_batch_size), strict=True):
            reps = encoder(x)  # (m, D)
            torch.dot(reps.flatten(), cached.flatten()).backward()  # ∂/∂θ of Σ reps·cache = cacheᵀ ∂reps/∂θ
    return loss.detach()


def zero_memory_bytes(num_params, stage: int, world_size: int, optimizer_multiplier: float = 12) -> float:
    """Per-device bytes of model states under ZeRO-DP with mixed-precision Adam
    (Rajbhandari et al., arXiv:1910.02054, §3.1 and §5.1).

    Ψ = num_params, K = optimizer_multiplier (12 = fp32 master weights + momentum + variance),
    N_d = world_size. fp16 parameters 2Ψ, fp16 gradients 2Ψ, optimizer states KΨ.
      stage 0 (plain DP):      2Ψ + 2Ψ + KΨ            (16Ψ for K = 12)
      stage 1 (P_os):          2Ψ + 2Ψ + KΨ/N_d
      stage 2 (P_os+g):        2Ψ + (2 + K)Ψ/N_d
      stage 3 (P_os+g+p):      (2 + 2 + K)Ψ/N_d
    Returns bytes as a Python float (an int is accepted). No GB conversion, no rounding. Raises
    ValueError when stage is not 0–3 or world_size < 1.
    """
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size!r}")
    psi = float(num_params)
    parameters = 2 * psi / (world_size if stage >= 3 else 1)  # fp16 weights, partitioned by P_p
    gradients = 2 * psi / (world_size if stage >= 2 else 1)  # fp16 gradients, partitioned by P_g
    optimizer_states = optimizer_multiplier * psi / (world_size if stage >= 1 else 1)  # partitioned by P_os
    return float(parameters + gradients + optimizer_states)


class DynamicLossScaler:
    """Dynamic loss scaling for fp16 training (Micikevicius et al., arXiv:1710.03740) with the update rule
    of torch.amp.GradScaler.

    __init__(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000)
    Public attributes (read by the grader): scale (float), growth_tracker (int, the number of consecutive
    overflow-free steps since the scale last changed). Initially scale = init_scale, growth_tracker = 0.
    scale_loss(loss) -> loss * scale (differentiable; the caller calls .backward() on it).
    step(optimizer) -> bool:
      1. unscale: divide every existing p.grad of optimizer.param_groups by scale, in place;
      2. if any unscaled gradient contains inf or NaN, skip optimizer.step() and return False;
         otherwise call optimizer.step() and return True;
      3. update: after an overflow, scale *= backoff_factor and growth_tracker = 0; otherwise
         growth_tracker += 1, and when it reaches growth_interval, scale *= growth_factor and
         growth_tracker = 0.
    (GradScaler's step() + update() in one call.)
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        self.scale = float(init_scale)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.growth_tracker = 0

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        found_inf = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    param.grad.div_(self.scale)
                    found_inf = found_inf or not bool(torch.isfinite(param.grad).all())
        if found_inf:
            self.scale *= self.backoff_factor
            self.growth_tracker = 0
            return False
        optimizer.step()
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            self.scale *= self.growth_factor
            self.growth_tracker = 0
        return True

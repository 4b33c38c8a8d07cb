"""Mutants and other-style correct solutions for chapter 10's distributed exercises: all_gather_with_grad and
distributed_clip_loss.

Each is written the way a learner would write it, independently of the checks' own models of known mistakes;
the GatherLayer mutants follow the SimCLR code that was copied into many repositories (and lightly's first "fix").
"""

import warnings

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.distributed.nn  # binds torch.distributed.nn (import torch.distributed alone does not)
import torch.nn.functional as F

from xmodal_ref.scaling.reference import all_gather_with_grad


def _single_process(image_features, text_features, logit_scale):
    """Whether there is nothing to gather, and chapter 03's clip_loss for that case."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return None
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _builtin_gather(tensor):
    """torch.distributed.nn's autograd all_gather (one tensor per rank), without its 2.13 FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.distributed.nn.functional.all_gather(tensor)


# ----------------------------------------------------------------------------- all_gather_with_grad: mutants


class GatherLayer(torch.autograd.Function):
    """Gather tensors from all process, supporting backward propagation (SimCLR's layer, copied widely)."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        output = [torch.zeros_like(input) for _ in range(dist.get_world_size())]
        dist.all_gather(output, input)
        return tuple(output)

    @staticmethod
    def backward(ctx, *grads):
        (input,) = ctx.saved_tensors
        grad_out = torch.zeros_like(input)
        grad_out[:] = grads[dist.get_rank()]
        return grad_out


class GatherLayerReduceOwnSlot(GatherLayer):
    """The first attempt to fix it: all-reduce this rank's gradient slot before returning it."""

    @staticmethod
    def backward(ctx, *grads):
        grad_out = grads[dist.get_rank()].clone()
        dist.all_reduce(grad_out)
        return grad_out


def gather_simclr_gather_layer(tensor):
    return torch.cat(GatherLayer.apply(tensor), dim=0)


def gather_all_reduce_own_slot(tensor):
    return torch.cat(GatherLayerReduceOwnSlot.apply(tensor), dim=0)


class AllGatherAveraged(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.clone()
        dist.all_reduce(grad)
        grad = grad / dist.get_world_size()  # average the gradient like DDP does
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_mean_backward(tensor):
    return AllGatherAveraged.apply(tensor)


def gather_without_autograd(tensor):
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


def gather_returns_the_list(tensor):
    return _builtin_gather(tensor)


def gather_interleaved(tensor):
    return torch.stack(_builtin_gather(tensor), dim=1).flatten(0, 1)  # row i of every rank, then row i + 1, …


def gather_stacked(tensor):
    return torch.stack(_builtin_gather(tensor))


def gather_detached_when_alone(tensor):
    if dist.get_world_size() == 1:
        return tensor.detach()  # nothing to gather
    return all_gather_with_grad(tensor)


class AllReduceGatherDefaultDtype(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        world_size, rank, b = dist.get_world_size(), dist.get_rank(), tensor.shape[0]
        buffer = torch.zeros(world_size * b, *tensor.shape[1:])
        buffer[rank * b : (rank + 1) * b] = tensor
        dist.all_reduce(buffer)
        return buffer

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_buffer_default_dtype(tensor):
    return AllReduceGatherDefaultDtype.apply(tensor)


# ----------------------------------------------------------------------------- all_gather_with_grad: correct styles


class AllReduceGather(torch.autograd.Function):
    """Forward: all_reduce of a zero-padded buffer. Backward: all_reduce of the gradient, then this rank's rows."""

    @staticmethod
    def forward(ctx, tensor):
        world_size, rank, b = dist.get_world_size(), dist.get_rank(), tensor.shape[0]
        buffer = tensor.new_zeros((world_size * b, *tensor.shape[1:]))
        buffer[rank * b : (rank + 1) * b] = tensor
        dist.all_reduce(buffer)
        return buffer

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.clone()
        dist.all_reduce(grad)
        b = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * b : (dist.get_rank() + 1) * b]


def gather_all_reduce_padded(tensor):
    return AllReduceGather.apply(tensor)


def gather_builtin_cat(tensor):
    return torch.cat(_builtin_gather(tensor), dim=0)


def gather_functional_collectives(tensor):
    return funcol.all_gather_single_autograd(tensor, 0, dist.group.WORLD)


class GatherReduceLoop(torch.autograd.Function):
    """Backward: W reduces, each summing one rank's rows onto that rank."""

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_output):
        mine = None
        for owner, rows in enumerate(grad_output.chunk(dist.get_world_size())):
            rows = rows.clone()
            dist.reduce(rows, dst=owner)
            if owner == dist.get_rank():
                mine = rows
        return mine


def gather_reduce_loop(tensor):
    return GatherReduceLoop.apply(tensor)


# ----------------------------------------------------------------------------- distributed_clip_loss: mutants


def _gathered(image_features, text_features, local_loss, gather_with_grad, gather=all_gather_with_grad):
    """The contract's gathering, with `gather` as the autograd-aware all-gather."""
    if gather_with_grad:
        return gather(image_features), gather(text_features)
    out = []
    for features in (image_features, text_features):
        parts = [torch.zeros_like(features) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, features)
        if not local_loss:
            parts[dist.get_rank()] = features
        out.append(torch.cat(parts))
    return out


def _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset):
    if local_loss:
        logits_per_image = logit_scale * image_features @ all_text.T
        logits_per_text = logit_scale * text_features @ all_image.T
        labels = torch.arange(image_features.shape[0]) + offset
    else:
        logits_per_image = logit_scale * all_image @ all_text.T
        logits_per_text = logits_per_image.T
        labels = torch.arange(all_image.shape[0])
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def clip_no_label_offset(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    all_image, all_text = _gathered(image_features, text_features, local_loss, gather_with_grad)
    return _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset=0)


def clip_reinserts_for_local_loss(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    # "improvement": always keep this rank's own rows differentiable
    all_image, all_text = _gathered(image_features, text_features, False, gather_with_grad)
    offset = dist.get_rank() * image_features.shape[0]
    return _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset)


def clip_no_reinsertion(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    all_image, all_text = _gathered(image_features, text_features, True, gather_with_grad)  # never re-inserts
    offset = dist.get_rank() * image_features.shape[0]
    return _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset)


def clip_gather_layer(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    all_image, all_text = _gathered(
        image_features, text_features, local_loss, gather_with_grad, gather=gather_simclr_gather_layer
    )
    offset = dist.get_rank() * image_features.shape[0]
    return _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset)


def clip_mean_gather(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    all_image, all_text = _gathered(
        image_features, text_features, local_loss, gather_with_grad, gather=gather_mean_backward
    )
    offset = dist.get_rank() * image_features.shape[0]
    return _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset)


def clip_ignores_gather_with_grad(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    all_image, all_text = _gathered(image_features, text_features, local_loss, False)
    offset = dist.get_rank() * image_features.shape[0]
    return _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset)


def clip_own_rows_first(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    rank, b = dist.get_rank(), image_features.shape[0]
    gathered = []
    for features in _gathered(image_features, text_features, local_loss, gather_with_grad):
        blocks = list(features.split(b))
        gathered.append(torch.cat([blocks[rank], *blocks[:rank], *blocks[rank + 1 :]]))  # positives first
    return _loss(image_features, text_features, *gathered, logit_scale, local_loss, rank * b)


def clip_ignores_local_loss(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    all_image, all_text = _gathered(image_features, text_features, False, gather_with_grad)
    return _loss(image_features, text_features, all_image, all_text, logit_scale, False, 0)


def clip_asks_the_group_first(image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False):
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size == 1:
        return _single_process(image_features, text_features, logit_scale)
    all_image, all_text = _gathered(image_features, text_features, local_loss, gather_with_grad)
    offset = rank * image_features.shape[0]
    return _loss(image_features, text_features, all_image, all_text, logit_scale, local_loss, offset)


# ----------------------------------------------------------------------------- distributed_clip_loss: correct styles


class GatherLayerFixed(torch.autograd.Function):
    """lightly's fix of the GatherLayer: stack the slot gradients, all-reduce them, keep this rank's slot."""

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads):
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def clip_einsum_fixed_gather_layer(
    image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False
):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        logits = torch.einsum("id,jd->ij", image_features, text_features) * logit_scale
        labels = torch.arange(logits.shape[0])
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    rank, world_size, b = dist.get_rank(), dist.get_world_size(), image_features.shape[0]
    if gather_with_grad:
        all_image = torch.cat(GatherLayerFixed.apply(image_features))
        all_text = torch.cat(GatherLayerFixed.apply(text_features))
    else:
        all_image = torch.cat(GatherLayerFixed.apply(image_features)).detach()
        all_text = torch.cat(GatherLayerFixed.apply(text_features)).detach()
        if not local_loss:
            mine = torch.zeros(world_size * b, 1)
            mine[rank * b : (rank + 1) * b] = 1
            all_image = torch.where(mine.bool(), image_features.repeat(world_size, 1), all_image)
            all_text = torch.where(mine.bool(), text_features.repeat(world_size, 1), all_text)
    if local_loss:
        per_image = torch.einsum("id,jd->ij", image_features, all_text) * logit_scale
        per_text = torch.einsum("id,jd->ij", text_features, all_image) * logit_scale
        labels = torch.arange(rank * b, (rank + 1) * b)
    else:
        per_image = torch.einsum("id,jd->ij", all_image, all_text) * logit_scale
        per_text = per_image.t()
        labels = torch.arange(world_size * b)
    return 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))


def clip_builtin_gather_log_softmax(
    image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False
):
    def ce(logits, labels):
        return -logits.log_softmax(dim=1)[torch.arange(len(labels)), labels].mean()

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        logits = logit_scale * image_features @ text_features.T
        labels = torch.arange(len(logits))
        return (ce(logits, labels) + ce(logits.T, labels)) / 2
    rank, b = dist.get_rank(), len(image_features)
    if gather_with_grad:
        all_image, all_text = torch.cat(_builtin_gather(image_features)), torch.cat(_builtin_gather(text_features))
    else:
        with torch.no_grad():
            image_parts = list(_builtin_gather(image_features))
            text_parts = list(_builtin_gather(text_features))
        if not local_loss:
            image_parts[rank], text_parts[rank] = image_features, text_features
        all_image, all_text = torch.cat(image_parts), torch.cat(text_parts)
    if local_loss:
        labels = rank * b + torch.arange(b)
        return (
            ce(logit_scale * image_features @ all_text.T, labels)
            + ce(logit_scale * text_features @ all_image.T, labels)
        ) / 2
    logits = logit_scale * all_image @ all_text.T
    labels = torch.arange(len(logits))
    return (ce(logits, labels) + ce(logits.T, labels)) / 2


def clip_rows_of_the_global_logits(
    image_features, text_features, logit_scale, local_loss=False, gather_with_grad=False
):
    single = _single_process(image_features, text_features, logit_scale)
    if single is not None:
        return single
    rank, b = dist.get_rank(), image_features.shape[0]
    if gather_with_grad:
        rows_image = cols_image = all_gather_with_grad(image_features)
        rows_text = cols_text = all_gather_with_grad(text_features)
    else:  # the rows that are kept carry this rank's own (differentiable) features; the columns follow the contract
        rows_image, rows_text = _gathered(image_features, text_features, False, False)
        cols_image, cols_text = _gathered(image_features, text_features, local_loss, False)
    per_image = logit_scale * rows_image @ cols_text.T  # (N, N)
    per_text = logit_scale * rows_text @ cols_image.T  # (N, N)
    labels = torch.arange(per_image.shape[0])
    if local_loss:  # this rank's rows of the global loss
        keep = slice(rank * b, (rank + 1) * b)
        per_image, per_text, labels = per_image[keep], per_text[keep], labels[keep]
    return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


MUTANTS = {
    "scaling.all_gather_with_grad": [
        (gather_simclr_gather_layer, "SimCLR GatherLayer bug"),
        (gather_all_reduce_own_slot, "all-reduced only its own slot grads[rank]"),
        (gather_mean_backward, "divided by the world size"),
        (gather_without_autograd, "a gather with no gradient"),
        (gather_returns_the_list, "returned a tuple, not a torch.Tensor"),
        (gather_interleaved, "not in rank order (the ranks' rows are interleaved)"),
        (gather_stacked, "torch.stack instead of torch.cat"),
        (gather_detached_when_alone, "the world-size-1 path"),
        (gather_buffer_default_dtype, "wrong dtype"),
    ],
    "scaling.distributed_clip_loss": [
        (clip_no_label_offset, "the labels lack the rank·b offset"),
        (clip_reinserts_for_local_loss, "re-inserted into the gathered copies although local_loss=True"),
        (clip_no_reinsertion, "OpenCLIP's re-insertion"),
        (clip_gather_layer, "the SimCLR GatherLayer bug"),
        (clip_mean_gather, "divided by the world size"),
        (clip_ignores_gather_with_grad, "gather_with_grad=True is ignored"),
        (clip_own_rows_first, "not in rank order"),
        (clip_ignores_local_loss, "local_loss is ignored"),
        (clip_asks_the_group_first, "the world-size-1 path"),
    ],
}

CORRECT = {
    "scaling.all_gather_with_grad": [
        gather_all_reduce_padded,
        gather_builtin_cat,
        gather_functional_collectives,
        gather_reduce_loop,
    ],
    "scaling.distributed_clip_loss": [
        clip_einsum_fixed_gather_layer,
        clip_builtin_gather_log_softmax,
        clip_rows_of_the_global_logits,
    ],
}

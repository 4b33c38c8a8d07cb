"""Mutants and other-style correct solutions for chapter 10's memory-bounded exercises: chunked_clip_loss and
grad_cache_step.

Each is written the way a learner would write it, independently of the checks' own models of known mistakes.
"""

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# --- chunked_clip_loss: mutants -------------------------------------------------------------------


def chunked_forward_only(image_features, text_features, logit_scale, chunk_size):
    """Row blocks with streaming log-sum-exps, but autograd differentiates the loop: every block is saved."""
    n = image_features.shape[0]
    row_lse, col_lse = [], None
    for start in range(0, n, chunk_size):
        block = logit_scale * image_features[start : start + chunk_size] @ text_features.T
        row_lse.append(torch.logsumexp(block, dim=1))
        block_col = torch.logsumexp(block, dim=0)
        col_lse = block_col if col_lse is None else torch.logaddexp(col_lse, block_col)
    positives = logit_scale * (image_features * text_features).sum(dim=1)
    return ((torch.cat(row_lse) - positives).mean() + (col_lse - positives).mean()) / 2


def chunked_full_matrix(image_features, text_features, logit_scale, chunk_size):
    logits = logit_scale * image_features @ text_features.T  # chunk_size ignored
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def chunked_one_direction(image_features, text_features, logit_scale, chunk_size):
    n = image_features.shape[0]
    total = 0
    for start in range(0, n, chunk_size):
        block = logit_scale * image_features[start : start + chunk_size] @ text_features.T
        targets = torch.arange(start, start + block.shape[0])
        total = total + F.cross_entropy(block, targets, reduction="sum")
    return total / n


def chunked_unstable_lse(image_features, text_features, logit_scale, chunk_size):
    n = image_features.shape[0]
    row_lse, col_sum = [], 0
    for start in range(0, n, chunk_size):
        block = torch.exp(logit_scale * image_features[start : start + chunk_size] @ text_features.T)
        row_lse.append(torch.log(block.sum(dim=1)))
        col_sum = col_sum + block.sum(dim=0)
    positives = logit_scale * (image_features * text_features).sum(dim=1)
    return ((torch.cat(row_lse) - positives).mean() + (torch.log(col_sum) - positives).mean()) / 2


def chunked_labels_without_offset(image_features, text_features, logit_scale, chunk_size):
    n = image_features.shape[0]
    total = 0
    for queries, keys in ((image_features, text_features), (text_features, image_features)):
        for start in range(0, n, chunk_size):
            block = logit_scale * queries[start : start + chunk_size] @ keys.T
            targets = torch.arange(block.shape[0])  # forgot + start
            total = total + F.cross_entropy(block, targets, reduction="sum")
    return total / (2 * n)


def chunked_mean_per_chunk(image_features, text_features, logit_scale, chunk_size):
    n = image_features.shape[0]
    total = 0
    for queries, keys in ((image_features, text_features), (text_features, image_features)):
        for start in range(0, n, chunk_size):
            block = logit_scale * queries[start : start + chunk_size] @ keys.T
            total = total + F.cross_entropy(block, torch.arange(start, start + block.shape[0]))
    return total / 2


def chunked_scale_as_number(image_features, text_features, logit_scale, chunk_size):
    """An Inf-CL-style Function whose logit scale is a Python number: no gradient for it."""
    s = float(logit_scale)

    class Loss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            n = x.shape[0]
            rows = torch.cat([torch.logsumexp(s * x[i : i + chunk_size] @ y.T, 1) for i in range(0, n, chunk_size)])
            cols = torch.cat([torch.logsumexp(s * y[j : j + chunk_size] @ x.T, 1) for j in range(0, n, chunk_size)])
            ctx.save_for_backward(x, y, rows, cols)
            return ((rows + cols).sum() - 2 * s * (x * y).sum()) / (2 * n)

        @staticmethod
        def backward(ctx, grad):
            x, y, rows, cols = ctx.saved_tensors
            n = x.shape[0]
            gx, gy = torch.zeros_like(x), torch.zeros_like(y)
            for i in range(0, n, chunk_size):
                logits = s * x[i : i + chunk_size] @ y.T
                p = (torch.exp(logits - rows[i : i + chunk_size, None]) + torch.exp(logits - cols[None, :])) / (2 * n)
                p[range(p.shape[0]), range(i, i + p.shape[0])] -= 1 / n
                gx[i : i + chunk_size] = s * p @ y
                gy += s * p.T @ x[i : i + chunk_size]
            return grad * gx, grad * gy

    return Loss.apply(image_features, text_features)


# --- chunked_clip_loss: other correct styles --------------------------------------------------------


def chunked_checkpoint_two_pass(image_features, text_features, logit_scale, chunk_size):
    """Pass 1 (no grad): the column log-sum-exps. Pass 2: each row block under torch.utils.checkpoint.

    The column term's gradient e^{l_ij − c_j} comes from Σ exp(l − c) − (its detached value), which is 0.
    """
    n = image_features.shape[0]
    with torch.no_grad():
        col_lse = torch.full((n,), -math.inf, dtype=image_features.dtype)
        for start in range(0, n, chunk_size):
            block = logit_scale * image_features[start : start + chunk_size] @ text_features.T
            col_lse = torch.logaddexp(col_lse, block.logsumexp(dim=0))

    def block_loss(rows, text, scale, start):
        logits = scale * rows @ text.T
        positives = logits[torch.arange(len(rows)), torch.arange(start, start + len(rows))]
        col_part = torch.exp(logits - col_lse).sum()
        return logits.logsumexp(dim=1).sum() - 2 * positives.sum() + col_part - col_part.detach()

    scale = torch.as_tensor(logit_scale, dtype=image_features.dtype)
    total = col_lse.sum()
    for start in range(0, n, chunk_size):
        rows = image_features[start : start + chunk_size]
        total = total + checkpoint(block_loss, rows, text_features, scale, start, use_reentrant=False)
    return total / (2 * n)


def chunked_square_tiles(image_features, text_features, logit_scale, chunk_size):
    """A custom Function over square tiles of side ⌊√(chunk_size·N)⌋, with online max/sum merges both ways."""

    class TiledLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, s):
            n = x.shape[0]
            side = max(1, math.isqrt(chunk_size * n))
            row_max = torch.full((n,), -math.inf, dtype=x.dtype)
            row_sum = torch.zeros(n, dtype=x.dtype)
            col_max, col_sum = row_max.clone(), row_sum.clone()
            for i in range(0, n, side):
                for j in range(0, n, side):
                    tile = s * x[i : i + side] @ y[j : j + side].T
                    for mx, sm, sl, values in (
                        (row_max, row_sum, slice(i, i + side), tile),
                        (col_max, col_sum, slice(j, j + side), tile.T),
                    ):
                        new_max = torch.maximum(mx[sl], values.max(dim=1).values)
                        sm[sl] = sm[sl] * torch.exp(mx[sl] - new_max) + torch.exp(values - new_max[:, None]).sum(1)
                        mx[sl] = new_max
            row_lse, col_lse = row_max + row_sum.log(), col_max + col_sum.log()
            ctx.side = side
            ctx.save_for_backward(x, y, s, row_lse, col_lse)
            diagonal = s * torch.einsum("nd,nd->n", x, y)
            return (row_lse.sum() + col_lse.sum() - 2 * diagonal.sum()) / (2 * n)

        @staticmethod
        def backward(ctx, grad):
            x, y, s, row_lse, col_lse = ctx.saved_tensors
            n, side = x.shape[0], ctx.side
            gx, gy, gs = torch.zeros_like(x), torch.zeros_like(y), torch.zeros_like(s)
            for i in range(0, n, side):
                for j in range(0, n, side):
                    sim = x[i : i + side] @ y[j : j + side].T
                    logits = s * sim
                    p = torch.exp(logits - row_lse[i : i + side, None]) + torch.exp(
                        logits - col_lse[None, j : j + side]
                    )
                    p = p / (2 * n)
                    rows = torch.arange(i, i + sim.shape[0])[:, None]
                    cols = torch.arange(j, j + sim.shape[1])[None, :]
                    p = p - (rows == cols).to(p.dtype) / n
                    gs += (p * sim).sum()
                    gx[i : i + side] += s * p @ y[j : j + side]
                    gy[j : j + side] += s * p.T @ x[i : i + side]
            return grad * gx, grad * gy, grad * gs

    s = logit_scale if torch.is_tensor(logit_scale) else torch.tensor(float(logit_scale))
    return TiledLoss.apply(image_features, text_features, s.to(image_features.dtype))


def chunked_column_blocks_float64(image_features, text_features, logit_scale, chunk_size):
    """Column blocks, computed in float64 inside the Function and cast back."""

    class ColumnLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, s):
            x64, y64, s64 = x.double(), y.double(), s.double()
            n = x.shape[0]
            row_lse = torch.full((n,), -math.inf, dtype=torch.float64)
            col_lse = torch.empty(n, dtype=torch.float64)
            for j in range(0, n, chunk_size):
                block = s64 * x64 @ y64[j : j + chunk_size].T  # (N, c): all rows, some columns
                col_lse[j : j + chunk_size] = block.logsumexp(dim=0)
                row_lse = torch.logaddexp(row_lse, block.logsumexp(dim=1))
            ctx.save_for_backward(x, y, s, row_lse, col_lse)
            loss = (row_lse.sum() + col_lse.sum() - 2 * s64 * (x64 * y64).sum()) / (2 * n)
            return loss.to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            x, y, s, row_lse, col_lse = ctx.saved_tensors
            x64, y64, s64 = x.double(), y.double(), s.double()
            n = x.shape[0]
            gx, gy, gs = torch.zeros_like(x64), torch.zeros_like(y64), torch.zeros((), dtype=torch.float64)
            for j in range(0, n, chunk_size):
                sim = x64 @ y64[j : j + chunk_size].T
                w = torch.exp(s64 * sim - row_lse[:, None]) + torch.exp(s64 * sim - col_lse[None, j : j + chunk_size])
                w = w / (2 * n)
                w[torch.arange(j, j + sim.shape[1]), torch.arange(sim.shape[1])] -= 1 / n
                gs += (w * sim).sum()
                gx += s64 * w @ y64[j : j + chunk_size]
                gy[j : j + chunk_size] = s64 * w.T @ x64
            g = grad.double()
            return (g * gx).to(x.dtype), (g * gy).to(y.dtype), (g * gs).to(s.dtype)

    s = torch.as_tensor(logit_scale).to(image_features.dtype)
    return ColumnLoss.apply(image_features, text_features, s)


# --- grad_cache_step: shared pieces of the learners' code ---------------------------------------


def _clip(image_reps, text_reps, logit_scale):
    logits = logit_scale * image_reps @ text_reps.T
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _embed_no_grad(encoder, inputs, m):
    with torch.no_grad():
        return torch.cat([encoder(x) for x in inputs.split(m)])


def _second_pass(encoder, inputs, cache, m, sign=1.0):
    for x, g in zip(inputs.split(m), cache.split(m), strict=True):
        reps = encoder(x)
        (sign * torch.dot(reps.flatten(), g.flatten())).backward()


# --- grad_cache_step: mutants ---------------------------------------------------------------------


def gc_keeps_every_graph(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    """Micro-batched calls, but all their graphs stay alive until one backward."""
    image_reps = torch.cat([image_encoder(x) for x in images.split(micro_batch_size)])
    text_reps = torch.cat([text_encoder(y) for y in texts.split(micro_batch_size)])
    loss = _clip(image_reps, text_reps, logit_scale)
    loss.backward()
    return loss.detach()


def gc_second_pass_full_batch(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    image_reps = _embed_no_grad(image_encoder, images, micro_batch_size).requires_grad_()
    text_reps = _embed_no_grad(text_encoder, texts, micro_batch_size).requires_grad_()
    loss = _clip(image_reps, text_reps, logit_scale)
    loss.backward()
    torch.dot(image_encoder(images).flatten(), image_reps.grad.flatten()).backward()  # the whole batch at once
    torch.dot(text_encoder(texts).flatten(), text_reps.grad.flatten()).backward()
    return loss.detach()


def gc_loss_per_micro_batch(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    """Plain gradient accumulation: each micro-batch's own CLIP loss."""
    pairs = list(zip(images.split(micro_batch_size), texts.split(micro_batch_size), strict=True))
    total = 0.0
    for x, y in pairs:
        loss = _clip(image_encoder(x), text_encoder(y), logit_scale) / len(pairs)
        loss.backward()
        total += loss.item()
    return torch.tensor(total, dtype=images.dtype)


def gc_scale_as_number(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    image_reps = _embed_no_grad(image_encoder, images, micro_batch_size).requires_grad_()
    text_reps = _embed_no_grad(text_encoder, texts, micro_batch_size).requires_grad_()
    loss = _clip(image_reps, text_reps, float(logit_scale))
    loss.backward()
    _second_pass(image_encoder, images, image_reps.grad, micro_batch_size)
    _second_pass(text_encoder, texts, text_reps.grad, micro_batch_size)
    return loss.detach()


def gc_zeroes_grads(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    image_encoder.zero_grad()
    text_encoder.zero_grad()
    image_reps = _embed_no_grad(image_encoder, images, micro_batch_size).requires_grad_()
    text_reps = _embed_no_grad(text_encoder, texts, micro_batch_size).requires_grad_()
    loss = _clip(image_reps, text_reps, logit_scale)
    loss.backward()
    _second_pass(image_encoder, images, image_reps.grad, micro_batch_size)
    _second_pass(text_encoder, texts, text_reps.grad, micro_batch_size)
    return loss.detach()


def gc_cache_not_detached(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    """The first pass keeps its graph and reads the cache with retain_grad()."""
    image_reps = torch.cat([image_encoder(x) for x in images.split(micro_batch_size)])
    text_reps = torch.cat([text_encoder(y) for y in texts.split(micro_batch_size)])
    image_reps.retain_grad()
    text_reps.retain_grad()
    loss = _clip(image_reps, text_reps, logit_scale)
    loss.backward()
    _second_pass(image_encoder, images, image_reps.grad, micro_batch_size)
    _second_pass(text_encoder, texts, text_reps.grad, micro_batch_size)
    return loss.detach()


def gc_surrogate_negated(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    image_reps = _embed_no_grad(image_encoder, images, micro_batch_size).requires_grad_()
    text_reps = _embed_no_grad(text_encoder, texts, micro_batch_size).requires_grad_()
    loss = _clip(image_reps, text_reps, logit_scale)
    loss.backward()
    _second_pass(image_encoder, images, image_reps.grad, micro_batch_size, sign=-1.0)  # "descend"
    _second_pass(text_encoder, texts, text_reps.grad, micro_batch_size, sign=-1.0)
    return loss.detach()


def gc_returns_attached_loss(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    image_reps = _embed_no_grad(image_encoder, images, micro_batch_size).requires_grad_()
    text_reps = _embed_no_grad(text_encoder, texts, micro_batch_size).requires_grad_()
    loss = _clip(image_reps, text_reps, logit_scale)
    loss.backward()
    _second_pass(image_encoder, images, image_reps.grad, micro_batch_size)
    _second_pass(text_encoder, texts, text_reps.grad, micro_batch_size)
    return loss


# --- grad_cache_step: other correct styles ----------------------------------------------------------


def _add_grad(tensor, grad):
    tensor.grad = grad.detach().clone() if tensor.grad is None else tensor.grad + grad


def gc_autograd_backward(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    """The cache from torch.autograd.grad, the second pass with torch.autograd.backward(grad_tensors=…)."""
    m = micro_batch_size
    image_reps = _embed_no_grad(image_encoder, images, m).requires_grad_()
    text_reps = _embed_no_grad(text_encoder, texts, m).requires_grad_()
    learn_scale = torch.is_tensor(logit_scale) and logit_scale.requires_grad
    inputs = [image_reps, text_reps] + ([logit_scale] if learn_scale else [])
    loss = _clip(image_reps, text_reps, logit_scale)
    grads = torch.autograd.grad(loss, inputs)
    if learn_scale:
        _add_grad(logit_scale, grads[2])
    for encoder, batch, cache in ((image_encoder, images, grads[0]), (text_encoder, texts, grads[1])):
        for x, g in zip(batch.split(m), cache.split(m), strict=True):
            torch.autograd.backward(encoder(x), grad_tensors=g)
    return loss.detach()


def gc_torch_func(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    """torch.func.grad_and_value of a log-softmax loss over the concatenated features; reps.backward(gradient)."""
    m = micro_batch_size
    feats = [_embed_no_grad(enc, batch, m) for enc, batch in ((image_encoder, images), (text_encoder, texts))]
    learn_scale = torch.is_tensor(logit_scale) and logit_scale.requires_grad

    def loss_fn(both, scale):
        image_reps, text_reps = both.chunk(2)
        logits = scale * torch.einsum("id,jd->ij", image_reps, text_reps)
        return -(logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2

    scale = logit_scale.detach() if learn_scale else logit_scale
    argnums = (0, 1) if learn_scale else 0
    grads, loss = torch.func.grad_and_value(loss_fn, argnums=argnums)(torch.cat(feats), scale)
    cache = grads[0] if learn_scale else grads
    if learn_scale:
        _add_grad(logit_scale, grads[1])
    for encoder, batch, part in (
        (image_encoder, images, cache[: len(images)]),
        (text_encoder, texts, cache[len(images) :]),
    ):
        for x, g in zip(batch.split(m), part.split(m), strict=True):
            encoder(x).backward(gradient=g)
    return loss


def gc_paired_micro_batches(image_encoder, text_encoder, images, texts, logit_scale, micro_batch_size):
    """Re-encode the image and the text micro-batch k together; one backward of both surrogates."""
    m = micro_batch_size
    image_reps = _embed_no_grad(image_encoder, images, m).requires_grad_()
    text_reps = _embed_no_grad(text_encoder, texts, m).requires_grad_()
    loss = _clip(image_reps, text_reps, logit_scale)
    loss.backward()
    chunks = zip(images.split(m), texts.split(m), image_reps.grad.split(m), text_reps.grad.split(m), strict=True)
    for x, y, gx, gy in chunks:
        ((image_encoder(x) * gx).sum() + (text_encoder(y) * gy).sum()).backward()
    return loss.detach()


MUTANTS = {
    "scaling.chunked_clip_loss": [
        (chunked_forward_only, "every block's graph kept for backward (chunking the forward alone saves nothing)"),
        (chunked_full_matrix, "an N×N matrix"),
        (chunked_one_direction, "only the image→text direction"),
        (chunked_unstable_lse, "an overflow"),
        (chunked_labels_without_offset, "the labels (the diagonal) are off by the block offset"),
        (chunked_mean_per_chunk, "a mean over a chunk instead of over N"),
        (chunked_scale_as_number, "no gradient reached `logit_scale`"),
    ],
    "scaling.grad_cache_step": [
        (gc_keeps_every_graph, "more than one micro-batch's autograd graph was alive at a time"),
        (gc_second_pass_full_batch, "called with autograd enabled on 24 rows"),
        (gc_loss_per_micro_batch, "no cross-micro-batch negatives"),
        (gc_scale_as_number, "logit_scale's gradient was lost"),
        (gc_zeroes_grads, "was discarded"),
        (gc_cache_not_detached, "the encoders received their gradient twice"),
        (gc_surrogate_negated, "the wrong sign"),
        (gc_returns_attached_loss, "still attached to the autograd graph"),
    ],
}

CORRECT = {
    "scaling.chunked_clip_loss": [chunked_checkpoint_two_pass, chunked_square_tiles, chunked_column_blocks_float64],
    "scaling.grad_cache_step": [gc_autograd_backward, gc_torch_func, gc_paired_micro_batches],
}

"""Checks for chapter 02 · attention."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..grading.harness import Case, Mistake, build_twin, check_cases, check_gradients
from ..grading.inputs import poison_padding, random_rows
from ..grading.verdict import CheckFailure

ATTENTION_OUTPUTS = ("out", "weights")
FULLY_PADDED = (
    "a sample whose keys are all padded: softmax over a row of −inf is NaN. Fill masked scores with a"
    " large finite negative (or handle that row), then set its weights to 0"
)


PADDING_LEAK = (
    "a padded key or value leaks into the result: here they hold NaN, +inf and −inf. A zero weight times NaN"
    " is still NaN, and so is NaN − inf: zero the padded keys and values (`masked_fill`) before the products"
)


def _sequence(batch: int, length: int, dim: int, seed: int) -> torch.Tensor:
    return random_rows(batch * length, dim, seed).view(batch, length, dim)


def _heads(batch: int, heads: int, length: int, dim: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    return random_rows(batch * heads * length, dim, seed, dtype=dtype).view(batch, heads, length, dim)


def _padding(lengths: list[int], total: int) -> torch.Tensor:
    """(B, total) bool, True at positions ≥ each sample's length."""
    return torch.arange(total)[None, :] >= torch.tensor(lengths)[:, None]


def _poisoned_steps(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` (B, L, D) with NaN, +inf and −inf in the steps ``mask`` (B, L) marks as padding."""
    return poison_padding(x, mask[..., None])


# ----------------------------------------------------------------------------- scaled_dot_product_attention


def _attention(q, k, v, mask=None, *, scale=None, after_softmax=False, invert=False, axis=-1, fully_padded="zeros"):
    """Attention with switches for the usual mistakes (``scale`` defaults to √d); returns (out, weights)."""
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale is None else scale)
    padded = None
    if mask is not None:
        padded = (~mask if invert else mask)[:, None, None, :]
        if not after_softmax:
            scores = scores.masked_fill(padded, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=axis)
    if padded is not None:
        if after_softmax:
            weights = weights.masked_fill(padded, 0.0)
        if fully_padded == "zeros":
            weights = weights.masked_fill(padded.all(dim=-1, keepdim=True), 0.0)
    return weights @ v, weights


def check_scaled_dot_product_attention(learner, reference) -> None:
    q, k, v = _heads(2, 3, 4, 8, 0), _heads(2, 3, 5, 8, 1), _heads(2, 3, 5, 8, 2)
    cases = [
        Case("B=2, H=3, Lq=4, Lk=5, d=8, no mask", (q, k, v)),
        Case("sample 0 has 3 real keys of 5, sample 1 has 5", (q, k, v, _padding([3, 5], 5))),
        Case("sample 1's keys are all padded: its out and weights are zeros", (q, k, v, _padding([2, 0], 5))),
        Case(
            "float64, one query, keys 0–1 real of 6, d=16",
            (
                _heads(1, 2, 1, 16, 3, torch.float64),
                _heads(1, 2, 6, 16, 4, torch.float64),
                _heads(1, 2, 6, 16, 5, torch.float64),
                _padding([2], 6),
            ),
        ),
    ]
    mistakes = [
        Mistake(
            "the scores are divided by d, not √d",
            lambda q, k, v, mask=None: _attention(q, k, v, mask, scale=q.shape[-1]),
        ),
        Mistake("the scores are not scaled by 1/√d", functools.partial(_attention, scale=1.0)),
        Mistake(
            "the mask is applied after the softmax (weights zeroed, not renormalised): fill the scores with −inf"
            " (or a large negative) before the softmax",
            functools.partial(_attention, after_softmax=True),
        ),
        Mistake(
            "the mask is inverted: in this contract True marks a padded key to ignore (nn.MultiheadAttention's"
            " convention; F.scaled_dot_product_attention's bool mask means the opposite)",
            functools.partial(_attention, invert=True),
        ),
        Mistake(
            "the softmax runs over the queries (dim −2); it must run over the keys (dim −1)",
            functools.partial(_attention, axis=-2),
        ),
        Mistake(
            "a sample with every key padded gets uniform weights; the contract gives it zeros",
            functools.partial(_attention, fully_padded="uniform"),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes, outputs=ATTENTION_OUTPUTS, unstable_hint=FULLY_PADDED)
    check_gradients(learner, reference, cases[2], wrt=["q", "k", "v"], outputs=ATTENTION_OUTPUTS)
    mask = _padding([3, 0], 5)
    poisoned = Case(
        "key lengths [3, 0], NaN, +inf and −inf in the padded keys and values",
        (q, poison_padding(k, mask[:, None, :, None]), poison_padding(v, mask[:, None, :, None]), mask),
    )
    check_cases(learner, reference, [poisoned], outputs=ATTENTION_OUTPUTS, unstable_hint=PADDING_LEAK)


# ----------------------------------------------------------------------------- MultiHeadCrossAttention


def _torch_attention(module: nn.Module, num_heads: int) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention`` in eval mode holding the weights of a module with q/k/v/out_proj."""
    embed_dim = module.q_proj.in_features
    torch_mha = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([module.q_proj.weight, module.k_proj.weight, module.v_proj.weight]))
        torch_mha.in_proj_bias.copy_(torch.cat([module.q_proj.bias, module.k_proj.bias, module.v_proj.bias]))
        torch_mha.out_proj.weight.copy_(module.out_proj.weight)
        torch_mha.out_proj.bias.copy_(module.out_proj.bias)
    return torch_mha


def _multi_head(
    twin, x_q, x_kv, key_padding_mask=None, *, scale_by="head", split="transpose", out_proj=True, average=False
):
    """Multi-head cross-attention with switches for the usual mistakes; returns (out, weights)."""
    heads = twin.num_heads
    batch, embed = x_q.shape[0], x_q.shape[-1]

    def split_heads(x):
        if split == "transpose":
            return x.unflatten(-1, (heads, -1)).transpose(1, 2)
        return x.reshape(batch, heads, x.shape[1], embed // heads)  # the heads cut across positions

    q, k, v = split_heads(twin.q_proj(x_q)), split_heads(twin.k_proj(x_kv)), split_heads(twin.v_proj(x_kv))
    scale = math.sqrt(embed) if scale_by == "embed" else None
    out, weights = _attention(q, k, v, key_padding_mask, scale=scale)
    merged = out.transpose(1, 2).flatten(2) if split == "transpose" else out.reshape(batch, -1, embed)
    return (twin.out_proj(merged) if out_proj else merged), (weights.mean(dim=1) if average else weights)


def check_MultiHeadCrossAttention(learner, reference) -> None:
    for embed_dim, num_heads, seed in ((16, 4, 0), (12, 3, 1)):
        module, twin = build_twin(learner, reference, embed_dim, num_heads)
        torch_mha = _torch_attention(module, num_heads)

        def torch_reference(x_q, x_kv, key_padding_mask=None, torch_mha=torch_mha):
            """nn.MultiheadAttention with the learner's weights: the contract's ground truth."""
            return torch_mha(x_q, x_kv, x_kv, key_padding_mask=key_padding_mask, average_attn_weights=False)

        x_q, x_kv = _sequence(2, 3, embed_dim, seed), _sequence(2, 5, embed_dim, seed + 1)
        cases = [
            Case(f"E={embed_dim}, {num_heads} heads, B=2, Lq=3, Lk=5, no mask", (x_q, x_kv)),
            Case("key lengths [5, 2]", (x_q, x_kv, _padding([5, 2], 5))),
            Case(
                "one query over 7 keys, 4 real", (x_q[:1, :1], _sequence(1, 7, embed_dim, seed + 2), _padding([4], 7))
            ),
        ]
        mistakes = [
            Mistake(
                "the scores are scaled by 1/√E (the model width); scale by 1/√(E / num_heads), the head width",
                functools.partial(_multi_head, twin, scale_by="embed"),
            ),
            Mistake(
                "the heads were split with .view(B, H, L, E/H), which cuts across positions: use"
                " .view(B, L, H, E/H).transpose(1, 2)",
                functools.partial(_multi_head, twin, split="view"),
            ),
            Mistake(
                "out_proj is not applied to the merged heads", functools.partial(_multi_head, twin, out_proj=False)
            ),
            Mistake(
                "the weights are averaged over the heads (nn.MultiheadAttention's default); return one map per"
                " head, (B, num_heads, Lq, Lk)",
                functools.partial(_multi_head, twin, average=True),
            ),
            Mistake(
                "the key padding mask is ignored",
                lambda x_q, x_kv, key_padding_mask=None: _multi_head(twin, x_q, x_kv),  # noqa: B023 (used at once)
            ),
        ]
        check_cases(module, torch_reference, cases, mistakes=mistakes, outputs=ATTENTION_OUTPUTS, atol=1e-5)
        fully_padded = Case("key lengths [5, 0]: sample 1 has no real key", (x_q, x_kv, _padding([5, 0], 5)))
        check_cases(module, twin, [fully_padded], outputs=ATTENTION_OUTPUTS, unstable_hint=FULLY_PADDED)
        mask = _padding([5, 2], 5)
        poisoned = Case(
            "key lengths [5, 2], NaN, +inf and −inf in the padded rows of x_kv",
            (x_q, _poisoned_steps(x_kv, mask), mask),
        )
        check_cases(module, twin, [poisoned], outputs=ATTENTION_OUTPUTS, unstable_hint=PADDING_LEAK)
        check_gradients(module, twin, cases[1], wrt=["x_q", "x_kv"], outputs=ATTENTION_OUTPUTS, parameters=True)


# ----------------------------------------------------------------------------- CrossModalBlock


def _block(
    twin,
    target,
    source,
    mask=None,
    *,
    layout="pre",
    attn_residual=True,
    source_norm="norm_kv",
    norm_ff=True,
    relu=False,
):
    """A cross-modal block with switches for the usual mistakes (``source_norm``: "norm_kv", "norm_q" or None)."""
    ff = (lambda h: twin.ff[2](F.relu(twin.ff[0](h)))) if relu else twin.ff
    if layout == "post":
        x = twin.norm_q(target + twin.attn(target, source, mask)[0])
        return twin.norm_ff(x + ff(x))
    source = getattr(twin, source_norm)(source) if source_norm else source
    update = twin.attn(twin.norm_q(target), source, mask)[0]
    x = target + update if attn_residual else update
    return x + ff(twin.norm_ff(x) if norm_ff else x)


def _unaligned(batch: int, target_length: int, source_lengths: list[int], total: int, dim: int, seed: int):
    """(target, source, source_padding_mask), with large garbage in the padded source steps."""
    source = _sequence(batch, total, dim, seed + 1)
    mask = _padding(source_lengths, total)
    source = source.masked_fill(mask[..., None], 50.0)
    return _sequence(batch, target_length, dim, seed), source, mask


def check_CrossModalBlock(learner, reference) -> None:
    module, twin = build_twin(learner, reference, 8, 2)
    _randomise_norms(module, twin)
    target, source, mask = _unaligned(2, 4, [6, 3], 6, 8, seed=0)
    cases = [
        Case("unaligned: target (2, 4, 8) queries source (2, 3, 8), no mask", (target, source[:, :3])),
        Case("source lengths [6, 3], garbage in the padded steps", (target, source, mask)),
        Case("one target step over 9 source steps, 5 real", _unaligned(1, 1, [5], 9, 8, seed=2)),
    ]
    block = functools.partial(_block, twin)
    mistakes = [
        Mistake(
            "the source queries the target: the queries must come from the target (the modality being updated)",
            lambda target, source, mask=None: block(source, target),
        ),
        Mistake(
            "post-LN (normalise after each residual add); the contract is pre-LN",
            functools.partial(block, layout="post"),
        ),
        Mistake("no residual connection around the attention", functools.partial(block, attn_residual=False)),
        Mistake(
            "the source is not normalised (norm_kv) before the attention", functools.partial(block, source_norm=None)
        ),
        Mistake(
            "the source is normalised with norm_q; it has its own LayerNorm, norm_kv",
            functools.partial(block, source_norm="norm_q"),
        ),
        Mistake("the feed-forward reads x without norm_ff", functools.partial(block, norm_ff=False)),
        Mistake("the source padding mask is ignored", lambda target, source, mask=None: block(target, source)),
        Mistake(
            "the feed-forward uses ReLU (as MulT's code does); the contract's ff is Linear → GELU → Linear",
            functools.partial(block, relu=True),
        ),
    ]
    check_cases(module, twin, cases, mistakes=mistakes)
    check_gradients(module, twin, cases[1], wrt=["target", "source"], parameters=True)
    poisoned = Case(
        "source lengths [6, 3], NaN, +inf and −inf in the padded steps", (target, _poisoned_steps(source, mask), mask)
    )
    check_cases(module, twin, [poisoned], unstable_hint=PADDING_LEAK)


def _randomise_norms(module: nn.Module, twin: nn.Module) -> None:
    """Give every LayerNorm a random affine map (not the identity at init), in both modules."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    twin.load_state_dict(module.state_dict())


# ----------------------------------------------------------------------------- LearnedQueryResampler


def _resample(twin, x, mask=None, *, attend_to_latents=True, final_norm=True, stale_keys=False):
    batch, length, _ = x.shape
    latents = twin.queries.expand(batch, -1, -1)
    initial = latents
    mask = torch.zeros(batch, length, dtype=torch.bool) if mask is None else mask
    for layer in twin.layers:
        if attend_to_latents:
            keys = torch.cat([x, initial if stale_keys else latents], dim=1)
            latents = layer(latents, keys, F.pad(mask, (0, latents.shape[1]), value=False))
        else:
            latents = layer(latents, x, mask)
    return twin.norm(latents) if final_norm else latents


def check_LearnedQueryResampler(learner, reference) -> None:
    module, twin = build_twin(learner, reference, 3, 8, 2, 2)
    _check_query_init(module.queries.detach())
    _randomise_norms(module, twin)
    with torch.no_grad():  # learned queries are not tiny after training
        module.queries.mul_(30.0)
    twin.load_state_dict(module.state_dict())
    x, _, _ = _unaligned(2, 9, [9], 9, 8, seed=0)
    _, padded, mask = _unaligned(2, 1, [5, 2], 5, 8, seed=1)
    cases = [
        Case("3 queries, dim 8, depth 2; input (2, 9, 8)", (x,)),
        Case("input (2, 5, 8), lengths [5, 2], garbage in the padding", (padded, mask)),
        Case("a long input (1, 40, 8)", (_sequence(1, 40, 8, 3),)),
    ]
    resample = functools.partial(_resample, twin)
    mistakes = [
        Mistake(
            "the queries attend to the input only; in the Perceiver Resampler the keys and values are"
            " [x ; latents], so the queries also see each other",
            functools.partial(resample, attend_to_latents=False),
        ),
        Mistake(
            "the keys and values hold the initial queries in every layer; use the current latents"
            " (build [x ; latents] inside the loop)",
            functools.partial(resample, stale_keys=True),
        ),
        Mistake("the final LayerNorm (norm) is not applied", functools.partial(resample, final_norm=False)),
        Mistake("the key padding mask is ignored", lambda x, mask=None: resample(x)),
    ]
    check_cases(module, twin, cases, mistakes=mistakes)
    check_gradients(module, twin, cases[1], wrt=["x"], parameters=True)
    poisoned = Case(
        "input (2, 5, 8), lengths [5, 2], NaN, +inf and −inf in the padding", (_poisoned_steps(padded, mask), mask)
    )
    check_cases(module, twin, [poisoned], unstable_hint=PADDING_LEAK)


def _check_query_init(queries: torch.Tensor) -> None:
    """The queries start small, random and distinct: N(0, 0.02²)."""
    std = queries.std().item()
    if not 0.005 <= std <= 0.05:  # 24 draws give a sample std of 0.02 ± 0.003: these bounds are far outside
        raise CheckFailure(
            f"`queries` starts with standard deviation {std:.3g}, not about 0.02",
            case="LearnedQueryResampler(3, 8, 2, 2) at initialisation",
            expected="queries drawn from N(0, 0.02²)",
            cause="identical (e.g. zero) queries get identical updates, so they never learn to differ: draw them"
            " with torch.randn(num_queries, dim) * 0.02"
            if std == 0
            else "scale the draw: torch.randn(num_queries, dim) * 0.02",
        )


# ----------------------------------------------------------------------------- GatedCrossAttentionBlock


def _gated(twin, x, media, mask=None, *, gate=torch.tanh, gate_ff=True, gate_residual=False, norm_ff=True):
    update = twin.attn(twin.norm_x(x), media, mask)[0]
    x = gate(twin.attn_gate) * (x + update) if gate_residual else x + gate(twin.attn_gate) * update
    ff = twin.ff(twin.norm_ff(x) if norm_ff else x)
    return x + (gate(twin.ff_gate) if gate_ff else 1.0) * ff


def check_GatedCrossAttentionBlock(learner, reference) -> None:
    module, twin = build_twin(learner, reference, 8, 2)
    _randomise_norms(module, twin)
    text, media, mask = _unaligned(2, 5, [4, 2], 4, 8, seed=0)
    gated = functools.partial(_gated, twin)
    init_mistakes = [
        Mistake(
            "sigmoid gates: sigmoid(0) = ½, so the block is not the identity at init; use tanh",
            functools.partial(gated, gate=torch.sigmoid),
        ),
        Mistake(
            "the gate scales the residual too (tanh(α)·(x + attn)); only the update is gated",
            functools.partial(gated, gate_residual=True),
        ),
        Mistake(
            "the feed-forward is not gated (its own ff_gate, also 0 at init)", functools.partial(gated, gate_ff=False)
        ),
    ]
    for name in ("attn_gate", "ff_gate"):
        value = dict(module.named_parameters())[name]
        if value.dim() != 0 or value.item() != 0.0:
            raise CheckFailure(
                f"`{name}` must be a 0-dim parameter initialised to 0",
                case="GatedCrossAttentionBlock(8, 2) at initialisation",
                got=f"shape {tuple(value.shape)}, values {value.detach().flatten()[:4].tolist()}",
                cause="nn.Parameter(torch.zeros(())): tanh(0) = 0 makes the block start as the identity",
            )

    def identity(x, media, media_padding_mask=None):
        """At initialisation the block must return its input unchanged."""
        return x.clone()

    at_init = Case(
        "at initialisation (both gates 0), text (2, 5, 8), media (2, 4, 8), lengths [4, 2]", (text, media, mask)
    )
    check_cases(module, identity, [at_init], mistakes=init_mistakes, atol=1e-6, rtol=0)

    with torch.no_grad():
        module.attn_gate.fill_(0.8)
        module.ff_gate.fill_(-0.6)
    twin.load_state_dict(module.state_dict())
    cases = [
        Case("gates set to attn_gate=0.8, ff_gate=−0.6; media lengths [4, 2]", (text, media, mask)),
        Case("no mask, one text step", (text[:1, :1], media[:1])),
    ]
    mistakes = [
        Mistake("the gates are used raw (α, not tanh(α))", functools.partial(gated, gate=lambda a: a)),
        *init_mistakes,
        Mistake("the feed-forward reads x without norm_ff", functools.partial(gated, norm_ff=False)),
    ]
    check_cases(module, twin, cases, mistakes=mistakes)
    check_gradients(module, twin, cases[0], wrt=["x", "media"], parameters=True)
    poisoned = Case(
        "gates 0.8 and −0.6; media lengths [4, 2], NaN, +inf and −inf in the padded steps",
        (text, _poisoned_steps(media, mask), mask),
    )
    check_cases(module, twin, [poisoned], unstable_hint=PADDING_LEAK)

    with torch.no_grad():  # back to 0: the gates must still receive their gradient there
        module.attn_gate.zero_()
        module.ff_gate.zero_()
    twin.load_state_dict(module.state_dict())
    check_gradients(module, twin, at_init, wrt=["x", "media"], parameters=True)

"""Mutants and other-style correct solutions for chapter 02.

Module exercises may use the reference pieces of earlier exercises (``xmodal_ref.attention``),
as a learner's notebook does with its own earlier exercise cells.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from xmodal_ref.attention import CrossModalBlock as ReferenceBlock
from xmodal_ref.attention import MultiHeadCrossAttention as ReferenceAttention
from xmodal_ref.attention import scaled_dot_product_attention as reference_attention

# ----------------------------------------------------------------------------- scaled_dot_product_attention


def _scores(q, k, scale):
    return q @ k.transpose(-2, -1) / scale


def _finite_fill(scores, key_padding_mask):
    return scores.masked_fill(key_padding_mask[:, None, None, :], -1e9)


def sdpa_divides_by_d(q, k, v, key_padding_mask=None):
    scores = _scores(q, k, q.shape[-1])
    if key_padding_mask is not None:
        scores = _finite_fill(scores, key_padding_mask)
    weights = scores.softmax(-1)
    if key_padding_mask is not None:
        weights = weights * (~key_padding_mask.all(-1)).to(weights.dtype)[:, None, None, None]
    return weights @ v, weights


def sdpa_unscaled(q, k, v, key_padding_mask=None):
    scores = q @ k.transpose(-2, -1)
    if key_padding_mask is not None:
        scores = _finite_fill(scores, key_padding_mask)
    weights = scores.softmax(-1)
    if key_padding_mask is not None:
        weights = weights * (~key_padding_mask.all(-1)).to(weights.dtype)[:, None, None, None]
    return weights @ v, weights


def sdpa_mask_after_softmax(q, k, v, key_padding_mask=None):
    weights = _scores(q, k, math.sqrt(q.shape[-1])).softmax(-1)
    if key_padding_mask is not None:
        weights = weights.masked_fill(key_padding_mask[:, None, None, :], 0.0)
    return weights @ v, weights


def sdpa_inverted_mask(q, k, v, key_padding_mask=None):
    scores = _scores(q, k, math.sqrt(q.shape[-1]))
    if key_padding_mask is not None:
        keep = key_padding_mask[:, None, None, :]  # read as True = attend
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1).masked_fill(~keep.any(-1, keepdim=True), 0.0)
    else:
        weights = scores.softmax(-1)
    return weights @ v, weights


def sdpa_softmax_over_queries(q, k, v, key_padding_mask=None):
    scores = _scores(q, k, math.sqrt(q.shape[-1]))
    if key_padding_mask is not None:
        scores = _finite_fill(scores, key_padding_mask)
    weights = scores.softmax(dim=-2)
    if key_padding_mask is not None:
        weights = weights.masked_fill(key_padding_mask.all(-1)[:, None, None, None], 0.0)
    return weights @ v, weights


def sdpa_minus_inf(q, k, v, key_padding_mask=None):
    scores = _scores(q, k, math.sqrt(q.shape[-1]))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def sdpa_uniform_when_all_padded(q, k, v, key_padding_mask=None):
    scores = _scores(q, k, math.sqrt(q.shape[-1]))
    if key_padding_mask is not None:
        scores = _finite_fill(scores, key_padding_mask)
    weights = scores.softmax(-1)
    return weights @ v, weights


def sdpa_torch_mask_passed_as_is(q, k, v, key_padding_mask=None):
    """F.scaled_dot_product_attention for `out`, given the padding mask unchanged (True there = attend)."""
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    out = torch.nan_to_num(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))  # older torch: NaN rows
    scores = _scores(q, k, math.sqrt(q.shape[-1]))
    if key_padding_mask is not None:
        scores = _finite_fill(scores, key_padding_mask)
    weights = scores.softmax(-1)
    if key_padding_mask is not None:
        weights = weights.masked_fill(key_padding_mask.all(-1)[:, None, None, None], 0.0)
    return out, weights


def sdpa_padded_values_leak(q, k, v, key_padding_mask=None):
    """−inf fill, then the NaN rows of fully padded samples are turned into zeros; padded values still used."""
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.nan_to_num(F.softmax(scores, dim=-1), nan=0.0)
    return torch.einsum("bhqk,bhkd->bhqd", weights, v), weights


def sdpa_nan_to_num(q, k, v, key_padding_mask=None):
    """−inf fill, the NaN rows of fully padded samples turned into zeros, padded values replaced by zeros."""
    if key_padding_mask is not None:
        padded = key_padding_mask[:, None, :, None]
        k, v = torch.where(padded, 0.0, k), torch.where(padded, 0.0, v)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.nan_to_num(F.softmax(scores, dim=-1), nan=0.0)
    return torch.einsum("bhqk,bhkd->bhqd", weights, v), weights


def sdpa_torch_plus_weights(q, k, v, key_padding_mask=None):
    """F.scaled_dot_product_attention for `out` (its bool mask: True = attend); weights alongside."""
    scale = 1 / math.sqrt(q.shape[-1])
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v), (torch.matmul(q, k.transpose(-1, -2)) * scale).softmax(-1)
    attend = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
    real_rows = attend.transpose(-2, -1)  # (B, 1, Lk, 1)
    k, v = torch.where(real_rows, k, torch.zeros_like(k)), torch.where(real_rows, v, torch.zeros_like(v))
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    any_real = attend.any(-1, keepdim=True)
    weights = torch.where(attend, scores, torch.full_like(scores, -1e30)).softmax(-1)
    weights = torch.where(any_real, weights, torch.zeros_like(weights))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend | ~any_real)  # no row fully masked
    return torch.where(any_real, out, torch.zeros_like(out)), weights


def sdpa_loop_stable(q, k, v, key_padding_mask=None):
    """Loops over batch and heads, reading only the real keys; a softmax that subtracts the row maximum."""
    batch, heads, _, d = q.shape
    lk = k.shape[2]
    real = torch.ones(batch, lk, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask
    outs, all_weights = [], []
    for b in range(batch):
        head_outs, head_weights = [], []
        for h in range(heads):
            w = q.new_zeros(q.shape[2], lk)  # (Lq, Lk): padded keys keep weight 0
            keys = real[b].nonzero()[:, 0]  # only the real keys and values are ever read
            if len(keys):
                s = q[b, h] @ k[b, h, keys].T / math.sqrt(d)  # (Lq, n_real)
                e = torch.exp(s - s.amax(-1, keepdim=True))
                w = w.index_copy(1, keys, e / e.sum(-1, keepdim=True))
            head_outs.append(w[:, keys] @ v[b, h, keys])
            head_weights.append(w)
        outs.append(torch.stack(head_outs))
        all_weights.append(torch.stack(head_weights))
    return torch.stack(outs), torch.stack(all_weights)


# ----------------------------------------------------------------------------- MultiHeadCrossAttention


class _Projections(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def split(self, x):
        batch, length, embed = x.shape
        return x.view(batch, length, self.num_heads, embed // self.num_heads).transpose(1, 2)

    def merge(self, x):
        batch, heads, length, width = x.shape
        return x.transpose(1, 2).reshape(batch, length, heads * width)


class MhaScaledByEmbed(_Projections):
    def forward(self, x_q, x_kv, key_padding_mask=None):
        q, k, v = self.split(self.q_proj(x_q)), self.split(self.k_proj(x_kv)), self.split(self.v_proj(x_kv))
        scores = q @ k.transpose(-2, -1) / math.sqrt(x_q.shape[-1])
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -1e9)
        weights = scores.softmax(-1)
        if key_padding_mask is not None:
            weights = weights.masked_fill(key_padding_mask.all(-1)[:, None, None, None], 0.0)
        return self.out_proj(self.merge(weights @ v)), weights


class MhaViewSplit(_Projections):
    def forward(self, x_q, x_kv, key_padding_mask=None):
        batch, embed = x_q.shape[0], x_q.shape[-1]
        heads = self.num_heads

        def split(x):
            return x.reshape(batch, heads, x.shape[1], embed // heads)

        out, weights = reference_attention(
            split(self.q_proj(x_q)), split(self.k_proj(x_kv)), split(self.v_proj(x_kv)), key_padding_mask
        )
        return self.out_proj(out.reshape(batch, -1, embed)), weights


class MhaNoOutProj(_Projections):
    def forward(self, x_q, x_kv, key_padding_mask=None):
        q, k, v = self.split(self.q_proj(x_q)), self.split(self.k_proj(x_kv)), self.split(self.v_proj(x_kv))
        out, weights = reference_attention(q, k, v, key_padding_mask)
        return self.merge(out), weights


class MhaIgnoresMask(_Projections):
    def forward(self, x_q, x_kv, key_padding_mask=None):
        q, k, v = self.split(self.q_proj(x_q)), self.split(self.k_proj(x_kv)), self.split(self.v_proj(x_kv))
        out, weights = reference_attention(q, k, v)
        return self.out_proj(self.merge(out)), weights


class MhaNanWhenAllPadded(_Projections):
    def forward(self, x_q, x_kv, key_padding_mask=None):
        q, k, v = self.split(self.q_proj(x_q)), self.split(self.k_proj(x_kv)), self.split(self.v_proj(x_kv))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(-1)
        return self.out_proj(self.merge(weights @ v)), weights


class MhaAveragedWeights(_Projections):
    """Averages the weights over the heads, as nn.MultiheadAttention does by default."""

    def forward(self, x_q, x_kv, key_padding_mask=None):
        q, k, v = self.split(self.q_proj(x_q)), self.split(self.k_proj(x_kv)), self.split(self.v_proj(x_kv))
        out, weights = reference_attention(q, k, v, key_padding_mask)
        return self.out_proj(self.merge(out)), weights.mean(dim=1)


class MhaWrapsTorch(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

    def forward(self, x_q, x_kv, key_padding_mask=None):
        return self.mha(x_q, x_kv, x_kv, key_padding_mask=key_padding_mask, average_attn_weights=False)


class MhaHeadLoop(_Projections):
    """One head at a time, on column slices of the projections; padded rows of x_kv zeroed first."""

    def forward(self, x_q, x_kv, key_padding_mask=None):
        if key_padding_mask is not None:
            x_kv = torch.where(key_padding_mask[..., None], torch.zeros_like(x_kv), x_kv)
        q, k, v = self.q_proj(x_q), self.k_proj(x_kv), self.v_proj(x_kv)
        width = q.shape[-1] // self.num_heads
        outs, all_weights = [], []
        for h in range(self.num_heads):
            cols = slice(h * width, (h + 1) * width)
            scores = torch.bmm(q[..., cols], k[..., cols].transpose(1, 2)) / width**0.5  # (B, Lq, Lk)
            if key_padding_mask is not None:
                scores = scores.masked_fill(key_padding_mask[:, None, :], torch.finfo(scores.dtype).min)
            w = torch.softmax(scores, dim=-1)
            if key_padding_mask is not None:
                w = w * (~key_padding_mask).any(-1).to(w.dtype)[:, None, None]
            outs.append(torch.bmm(w, v[..., cols]))
            all_weights.append(w)
        return self.out_proj(torch.cat(outs, dim=-1)), torch.stack(all_weights, dim=1)


class MhaEinsumReferenceCore(_Projections):
    """Heads split with reshape and permute; the attention core from exercise 1; out_proj by einsum."""

    def forward(self, x_q, x_kv, key_padding_mask=None):
        heads = self.num_heads

        def split(x):
            return x.reshape(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)

        out, weights = reference_attention(
            split(self.q_proj(x_q)), split(self.k_proj(x_kv)), split(self.v_proj(x_kv)), key_padding_mask
        )
        merged = out.permute(0, 2, 1, 3).flatten(-2)
        return torch.einsum("ble,fe->blf", merged, self.out_proj.weight) + self.out_proj.bias, weights


class MhaTorchKernelLeaks(_Projections):
    """F.scaled_dot_product_attention for the heads, fed whatever the padded rows of x_kv hold."""

    def forward(self, x_q, x_kv, key_padding_mask=None):
        return _torch_kernel_heads(self, x_q, x_kv, key_padding_mask)


class MhaTorchKernel(_Projections):
    """F.scaled_dot_product_attention for the heads, padded keys and values zeroed; the weights alongside."""

    def forward(self, x_q, x_kv, key_padding_mask=None):
        return _torch_kernel_heads(self, x_q, x_kv, key_padding_mask, zero_padded=True)


def _torch_kernel_heads(self, x_q, x_kv, key_padding_mask, zero_padded=False):
    q, k, v = self.split(self.q_proj(x_q)), self.split(self.k_proj(x_kv)), self.split(self.v_proj(x_kv))
    if key_padding_mask is not None and zero_padded:
        k = k.masked_fill(key_padding_mask[:, None, :, None], 0.0)
        v = v.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_padding_mask is None:
        return self.out_proj(self.merge(F.scaled_dot_product_attention(q, k, v))), scores.softmax(-1)
    attend = ~key_padding_mask[:, None, None, :]
    any_real = attend.any(-1, keepdim=True)
    weights = scores.masked_fill(~attend, -1e9).softmax(-1) * any_real
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend | ~any_real) * any_real
    return self.out_proj(self.merge(out)), weights


# ----------------------------------------------------------------------------- CrossModalBlock


class _BlockBase(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = ReferenceAttention(dim, num_heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class BlockSourceQueries(_BlockBase):
    def forward(self, target, source, source_padding_mask=None):
        x = source + self.attn(self.norm_q(source), self.norm_kv(target))[0]
        return x + self.ff(self.norm_ff(x))


class BlockPostLN(_BlockBase):
    def forward(self, target, source, source_padding_mask=None):
        x = self.norm_q(target + self.attn(target, source, source_padding_mask)[0])
        return self.norm_ff(x + self.ff(x))


class BlockNoAttnResidual(_BlockBase):
    def forward(self, target, source, source_padding_mask=None):
        x = self.attn(self.norm_q(target), self.norm_kv(source), source_padding_mask)[0]
        return x + self.ff(self.norm_ff(x))


class BlockRawSource(_BlockBase):
    def forward(self, target, source, source_padding_mask=None):
        x = target + self.attn(self.norm_q(target), source, source_padding_mask)[0]
        return x + self.ff(self.norm_ff(x))


class BlockSharedNorm(_BlockBase):
    """One LayerNorm for both sequences, as in a self-attention block."""

    def forward(self, target, source, source_padding_mask=None):
        x = target + self.attn(self.norm_q(target), self.norm_q(source), source_padding_mask)[0]
        return x + self.ff(self.norm_ff(x))


class BlockFFWithoutNorm(_BlockBase):
    def forward(self, target, source, source_padding_mask=None):
        x = target + self.attn(self.norm_q(target), self.norm_kv(source), source_padding_mask)[0]
        return x + self.ff(x)


class BlockIgnoresMask(_BlockBase):
    def forward(self, target, source, source_padding_mask=None):
        x = target + self.attn(self.norm_q(target), self.norm_kv(source))[0]
        return x + self.ff(self.norm_ff(x))


class BlockReLU(_BlockBase):
    """MulT's original code uses ReLU in the feed-forward; this contract uses GELU."""

    def __init__(self, dim, num_heads):
        super().__init__(dim, num_heads)
        self.ff[1] = nn.ReLU()

    def forward(self, target, source, source_padding_mask=None):
        x = target + self.attn(self.norm_q(target), self.norm_kv(source), source_padding_mask)[0]
        return x + self.ff(self.norm_ff(x))


class BlockTorchAttention(_BlockBase):
    """nn.MultiheadAttention in place of the earlier exercise's module."""

    def __init__(self, dim, num_heads):
        super().__init__(dim, num_heads)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(self, target, source, source_padding_mask=None):
        memory = self.norm_kv(source)
        x = target + self.attn(self.norm_q(target), memory, memory, key_padding_mask=source_padding_mask)[0]
        return x + self.ff(self.norm_ff(x))


class BlockStepByStep(_BlockBase):
    """The earlier exercise's attention; every step named."""

    def forward(self, target, source, source_padding_mask=None):
        queries = self.norm_q(target)
        memory = self.norm_kv(source)
        attended, _ = self.attn(queries, memory, key_padding_mask=source_padding_mask)
        hidden = target + attended
        update = self.ff[2](self.ff[1](self.ff[0](self.norm_ff(hidden))))
        return hidden + update


class TorchKernelAttention(nn.Module):
    """Same parameters as MultiHeadCrossAttention; F.scaled_dot_product_attention inside, no weights needed.

    With ``zero_padded`` the padded rows of x_kv are zeroed first; without, NaN there reaches the output.
    """

    def __init__(self, embed_dim, num_heads, zero_padded=True):
        super().__init__()
        self.zero_padded = zero_padded
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x_q, x_kv, key_padding_mask=None):
        def heads(x):
            return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

        attend = None
        if key_padding_mask is not None:
            attend = ~key_padding_mask[:, None, None, :]
            if self.zero_padded:
                x_kv = x_kv.masked_fill(key_padding_mask[..., None], 0.0)
        out = F.scaled_dot_product_attention(
            heads(self.q_proj(x_q)), heads(self.k_proj(x_kv)), heads(self.v_proj(x_kv)), attn_mask=attend
        )
        return self.out_proj(out.transpose(1, 2).flatten(2)), None


def _layer_norm(norm, x):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class BlockFunctional(nn.Module):
    def __init__(self, dim, num_heads, zero_padded=True):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = TorchKernelAttention(dim, num_heads, zero_padded)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, target, source, source_padding_mask=None):
        x = (
            target
            + self.attn(_layer_norm(self.norm_q, target), _layer_norm(self.norm_kv, source), source_padding_mask)[0]
        )
        first, last = self.ff[0], self.ff[2]
        return x + F.linear(
            F.gelu(F.linear(_layer_norm(self.norm_ff, x), first.weight, first.bias)), last.weight, last.bias
        )


class BlockTorchFunctionalAttention(_BlockBase):
    """The attention through F.multi_head_attention_forward, fed the q/k/v/out_proj weights (sequence-first)."""

    zero_padded = True

    def forward(self, target, source, source_padding_mask=None):
        attn = self.attn
        source = self.norm_kv(source)
        if source_padding_mask is not None and self.zero_padded:
            source = source.masked_fill(source_padding_mask[..., None], 0.0)
        query, memory = self.norm_q(target).transpose(0, 1), source.transpose(0, 1)  # (L, B, D)
        attended, _ = F.multi_head_attention_forward(
            query,
            memory,
            memory,
            query.shape[-1],
            attn.num_heads,
            in_proj_weight=None,
            in_proj_bias=torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=attn.out_proj.weight,
            out_proj_bias=attn.out_proj.bias,
            training=False,
            key_padding_mask=source_padding_mask,
            need_weights=False,
            use_separate_proj_weight=True,
            q_proj_weight=attn.q_proj.weight,
            k_proj_weight=attn.k_proj.weight,
            v_proj_weight=attn.v_proj.weight,
        )
        x = target + attended.transpose(0, 1)
        return x + self.ff(self.norm_ff(x))


class BlockTorchFunctionalLeaks(BlockTorchFunctionalAttention):
    """PyTorch's attention as it is: NaN in a padded source step reaches every output."""

    zero_padded = False


# ----------------------------------------------------------------------------- LearnedQueryResampler


class _ResamplerBase(nn.Module):
    def __init__(self, num_queries, dim, num_heads, depth):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.layers = nn.ModuleList([ReferenceBlock(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def run(self, x, key_padding_mask, latents, *, attend_to_latents=True, pad_value=False, final_norm=True):
        batch, length, _ = x.shape
        mask = torch.zeros(batch, length, dtype=torch.bool) if key_padding_mask is None else key_padding_mask
        for layer in self.layers:
            if attend_to_latents:
                latents = layer(
                    latents, torch.cat([x, latents], 1), F.pad(mask, (0, latents.shape[1]), value=pad_value)
                )
            else:
                latents = layer(latents, x, mask)
        return self.norm(latents) if final_norm else latents


class ResamplerInputOnly(_ResamplerBase):
    def forward(self, x, key_padding_mask=None):
        return self.run(x, key_padding_mask, self.queries.expand(len(x), -1, -1), attend_to_latents=False)


class ResamplerLatentsMasked(_ResamplerBase):
    """Pads the mask with True: the latents are hidden from themselves."""

    def forward(self, x, key_padding_mask=None):
        return self.run(x, key_padding_mask, self.queries.expand(len(x), -1, -1), pad_value=True)


class ResamplerNoFinalNorm(_ResamplerBase):
    def forward(self, x, key_padding_mask=None):
        return self.run(x, key_padding_mask, self.queries.expand(len(x), -1, -1), final_norm=False)


class ResamplerIgnoresMask(_ResamplerBase):
    def forward(self, x, key_padding_mask=None):
        return self.run(x, None, self.queries.expand(len(x), -1, -1))


class ResamplerStaleKeys(_ResamplerBase):
    """Builds [x ; queries] once, before the loop: later layers see the initial queries."""

    def forward(self, x, key_padding_mask=None):
        latents = self.queries.expand(len(x), -1, -1)
        keys = torch.cat([x, latents], dim=1)
        mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, latents.shape[1]))
        for layer in self.layers:
            latents = layer(latents, keys, mask)
        return self.norm(latents)


class ResamplerDetachedQueries(_ResamplerBase):
    def forward(self, x, key_padding_mask=None):
        return self.run(x, key_padding_mask, self.queries.detach().expand(len(x), -1, -1))


class ResamplerBufferQueries(_ResamplerBase):
    def __init__(self, num_queries, dim, num_heads, depth):
        super().__init__(num_queries, dim, num_heads, depth)
        del self.queries
        self.register_buffer("queries", torch.randn(num_queries, dim) * 0.02)

    def forward(self, x, key_padding_mask=None):
        return self.run(x, key_padding_mask, self.queries.expand(len(x), -1, -1))


class ResamplerZeroQueries(_ResamplerBase):
    def __init__(self, num_queries, dim, num_heads, depth):
        super().__init__(num_queries, dim, num_heads, depth)
        self.queries = nn.Parameter(torch.zeros(num_queries, dim))

    def forward(self, x, key_padding_mask=None):
        return self.run(x, key_padding_mask, self.queries.expand(len(x), -1, -1))


class ResamplerUnitQueries(_ResamplerBase):
    def __init__(self, num_queries, dim, num_heads, depth):
        super().__init__(num_queries, dim, num_heads, depth)
        self.queries = nn.Parameter(torch.randn(num_queries, dim))

    def forward(self, x, key_padding_mask=None):
        return self.run(x, key_padding_mask, self.queries.expand(len(x), -1, -1))


class ResamplerLatentsFirst(nn.Module):
    """Keys [latents ; x] (attention does not care about the order), mask padded on the left."""

    def __init__(self, num_queries, dim, num_heads, depth):
        super().__init__()
        self.queries = nn.Parameter(torch.empty(num_queries, dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(ReferenceBlock(dim, num_heads))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, key_padding_mask=None):
        latents = self.queries.unsqueeze(0).repeat(x.shape[0], 1, 1)
        mask = None
        if key_padding_mask is not None:
            mask = torch.cat([key_padding_mask.new_zeros(x.shape[0], latents.shape[1]), key_padding_mask], dim=1)
        for layer in self.layers:
            latents = layer(latents, torch.cat([latents, x], dim=1), mask)
        return self.norm(latents)


class ResamplerFunctionalBlocks(nn.Module):
    """Its own blocks (F.scaled_dot_product_attention inside); no mask built when none is given."""

    zero_padded = True

    def __init__(self, num_queries, dim, num_heads, depth):
        super().__init__()
        self.queries = nn.Parameter(0.02 * torch.randn(num_queries, dim))
        self.layers = nn.ModuleList(BlockFunctional(dim, num_heads, self.zero_padded) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, key_padding_mask=None):
        num_queries = self.queries.shape[0]
        latents = torch.broadcast_to(self.queries, (x.shape[0], *self.queries.shape))
        mask = key_padding_mask
        if mask is not None:
            mask = torch.cat([mask, torch.zeros(mask.shape[0], num_queries, dtype=torch.bool)], dim=1)
        for block in self.layers:
            latents = block(latents, torch.cat((x, latents), dim=1), mask)
        return _layer_norm(self.norm, latents)


class ResamplerTorchKernelLeaks(ResamplerFunctionalBlocks):
    """Blocks on F.scaled_dot_product_attention fed the padded input steps as they are."""

    zero_padded = False


# ----------------------------------------------------------------------------- GatedCrossAttentionBlock


class _GatedBase(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.attn = ReferenceAttention(dim, num_heads)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ff_gate = nn.Parameter(torch.zeros(()))

    def attend(self, x, media, mask):
        return self.attn(self.norm_x(x), media, mask)[0]


class GatedSigmoid(_GatedBase):
    def forward(self, x, media, media_padding_mask=None):
        x = x + torch.sigmoid(self.attn_gate) * self.attend(x, media, media_padding_mask)
        return x + torch.sigmoid(self.ff_gate) * self.ff(self.norm_ff(x))


class GatedInitialisedToOne(_GatedBase):
    def __init__(self, dim, num_heads):
        super().__init__(dim, num_heads)
        self.attn_gate = nn.Parameter(torch.ones(()))
        self.ff_gate = nn.Parameter(torch.ones(()))

    def forward(self, x, media, media_padding_mask=None):
        x = x + torch.tanh(self.attn_gate) * self.attend(x, media, media_padding_mask)
        return x + torch.tanh(self.ff_gate) * self.ff(self.norm_ff(x))


class GatedRaw(_GatedBase):
    def forward(self, x, media, media_padding_mask=None):
        x = x + self.attn_gate * self.attend(x, media, media_padding_mask)
        return x + self.ff_gate * self.ff(self.norm_ff(x))


class GatedResidualToo(_GatedBase):
    def forward(self, x, media, media_padding_mask=None):
        x = torch.tanh(self.attn_gate) * (x + self.attend(x, media, media_padding_mask))
        return x + torch.tanh(self.ff_gate) * self.ff(self.norm_ff(x))


class GatedFFUngated(_GatedBase):
    def forward(self, x, media, media_padding_mask=None):
        x = x + torch.tanh(self.attn_gate) * self.attend(x, media, media_padding_mask)
        return x + self.ff(self.norm_ff(x))


class GatedFFWithoutNorm(_GatedBase):
    def forward(self, x, media, media_padding_mask=None):
        x = x + torch.tanh(self.attn_gate) * self.attend(x, media, media_padding_mask)
        return x + torch.tanh(self.ff_gate) * self.ff(x)


class GatedBufferGates(_GatedBase):
    def __init__(self, dim, num_heads):
        super().__init__(dim, num_heads)
        del self.attn_gate, self.ff_gate
        self.register_buffer("attn_gate", torch.zeros(()))
        self.register_buffer("ff_gate", torch.zeros(()))

    def forward(self, x, media, media_padding_mask=None):
        x = x + torch.tanh(self.attn_gate) * self.attend(x, media, media_padding_mask)
        return x + torch.tanh(self.ff_gate) * self.ff(self.norm_ff(x))


class GatedPerChannel(_GatedBase):
    def __init__(self, dim, num_heads):
        super().__init__(dim, num_heads)
        self.attn_gate = nn.Parameter(torch.zeros(dim))
        self.ff_gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x, media, media_padding_mask=None):
        x = x + torch.tanh(self.attn_gate) * self.attend(x, media, media_padding_mask)
        return x + torch.tanh(self.ff_gate) * self.ff(self.norm_ff(x))


class GatedMethodStyle(_GatedBase):
    def forward(self, x, media, media_padding_mask=None):
        attended, _ = self.attn(self.norm_x(x), media, key_padding_mask=media_padding_mask)
        x = x + self.attn_gate.tanh() * attended
        return torch.addcmul(x, self.ff_gate.tanh().expand_as(x), self.ff(self.norm_ff(x)))


class GatedSigmoidIdentity(nn.Module):
    """tanh(α) written as 2·sigmoid(2α) − 1; its own attention module and functional pieces."""

    zero_padded = True

    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.attn = TorchKernelAttention(dim, num_heads, self.zero_padded)
        self.attn_gate = nn.Parameter(torch.tensor(0.0))
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ff_gate = nn.Parameter(torch.tensor(0.0))

    def forward(self, x, media, media_padding_mask=None):
        def gate(alpha):
            return 2 * torch.sigmoid(2 * alpha) - 1

        x = x + gate(self.attn_gate) * self.attn(_layer_norm(self.norm_x, x), media, media_padding_mask)[0]
        return x + gate(self.ff_gate) * self.ff(_layer_norm(self.norm_ff, x))


class GatedTorchKernelLeaks(GatedSigmoidIdentity):
    """Its attention feeds the padded media steps to F.scaled_dot_product_attention as they are."""

    zero_padded = False


MUTANTS = {
    "attention.scaled_dot_product_attention": [
        (sdpa_divides_by_d, "divided by d, not √d"),
        (sdpa_unscaled, "not scaled by 1/√d"),
        (sdpa_mask_after_softmax, "the mask is applied after the softmax"),
        (sdpa_inverted_mask, "the mask is inverted"),
        (sdpa_softmax_over_queries, "the softmax runs over the queries"),
        (sdpa_minus_inf, "softmax over a row of −inf is NaN"),
        (sdpa_uniform_when_all_padded, "gets uniform weights"),
        (sdpa_torch_mask_passed_as_is, "the mask is inverted"),
        (sdpa_padded_values_leak, "a padded key or value leaks into the result"),
    ],
    "attention.MultiHeadCrossAttention": [
        (MhaScaledByEmbed, "scaled by 1/√E (the model width)"),
        (MhaViewSplit, "cuts across positions"),
        (MhaNoOutProj, "out_proj is not applied"),
        (MhaIgnoresMask, "the key padding mask is ignored"),
        (MhaNanWhenAllPadded, "softmax over a row of −inf is NaN"),
        (MhaAveragedWeights, "the weights are averaged over the heads"),
        (MhaWrapsTorch, "missing: q_proj.weight"),
        (MhaTorchKernelLeaks, "a padded key or value leaks into the result"),
    ],
    "attention.CrossModalBlock": [
        (BlockSourceQueries, "the source queries the target"),
        (BlockPostLN, "post-LN"),
        (BlockNoAttnResidual, "no residual connection around the attention"),
        (BlockRawSource, "the source is not normalised (norm_kv)"),
        (BlockSharedNorm, "normalised with norm_q"),
        (BlockFFWithoutNorm, "the feed-forward reads x without norm_ff"),
        (BlockIgnoresMask, "the source padding mask is ignored"),
        (BlockReLU, "ReLU"),
        (BlockTorchAttention, "missing: attn.q_proj.weight"),
        (BlockTorchFunctionalLeaks, "a padded key or value leaks into the result"),
    ],
    "attention.LearnedQueryResampler": [
        (ResamplerInputOnly, "the queries attend to the input only"),
        (ResamplerLatentsMasked, "the queries attend to the input only"),
        (ResamplerNoFinalNorm, "the final LayerNorm (norm) is not applied"),
        (ResamplerIgnoresMask, "the key padding mask is ignored"),
        (ResamplerStaleKeys, "the initial queries"),
        (ResamplerDetachedQueries, "no gradient reached `parameter queries`"),
        (ResamplerBufferQueries, "not buffers or plain tensors: queries"),
        (ResamplerZeroQueries, "identical"),
        (ResamplerUnitQueries, "0.02"),
        (ResamplerTorchKernelLeaks, "a padded key or value leaks into the result"),
    ],
    "attention.GatedCrossAttentionBlock": [
        (GatedSigmoid, "sigmoid gates"),
        (GatedInitialisedToOne, "must be a 0-dim parameter initialised to 0"),
        (GatedRaw, "the gates are used raw"),
        (GatedResidualToo, "the gate scales the residual too"),
        (GatedFFUngated, "the feed-forward is not gated"),
        (GatedFFWithoutNorm, "the feed-forward reads x without norm_ff"),
        (GatedBufferGates, "not buffers or plain tensors: attn_gate, ff_gate"),
        (GatedPerChannel, "wrong shape: attn_gate"),
        (GatedTorchKernelLeaks, "a padded key or value leaks into the result"),
    ],
}

CORRECT = {
    "attention.scaled_dot_product_attention": [sdpa_nan_to_num, sdpa_torch_plus_weights, sdpa_loop_stable],
    "attention.MultiHeadCrossAttention": [MhaHeadLoop, MhaEinsumReferenceCore, MhaTorchKernel],
    "attention.CrossModalBlock": [BlockStepByStep, BlockFunctional, BlockTorchFunctionalAttention],
    "attention.LearnedQueryResampler": [ResamplerLatentsFirst, ResamplerFunctionalBlocks],
    "attention.GatedCrossAttentionBlock": [GatedMethodStyle, GatedSigmoidIdentity],
}

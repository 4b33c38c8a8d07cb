"""Chapter 02 · attention: masked attention, multi-head cross-attention and cross-modal blocks.

Every public function or class here is the reference for one graded exercise. Each is
self-contained up to the exercises before it in this file (it needs only ``math``, ``torch``,
``torch.nn``, ``torch.nn.functional`` and earlier exercises), because its source is copied
verbatim into the worked-solution notebook, where the earlier exercise cells define those names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q·kᵀ / √d)·v, with padded keys ignored.

    q: (B, H, Lq, d); k, v: (B, H, Lk, d). key_padding_mask: (B, Lk) bool, True = a padded key
    to ignore (the ``nn.MultiheadAttention`` convention; ``F.scaled_dot_product_attention``'s
    bool mask means the opposite). Returns out (B, H, Lq, d) and weights (B, H, Lq, Lk).
    Padded keys and values never affect the result, whatever they hold (NaN and ±inf included).
    A sample whose keys are all padded gets zeros in both ``out`` and ``weights``, never NaN.
    """
    if key_padding_mask is not None:
        padded_rows = key_padding_mask[:, None, :, None]  # (B, 1, Lk, 1)
        # Zero them first: a zero weight times NaN or inf is still NaN.
        k, v = k.masked_fill(padded_rows, 0.0), v.masked_fill(padded_rows, 0.0)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
    if key_padding_mask is not None:
        padded = key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        # A finite fill keeps fully padded rows finite (uniform); they are zeroed just below.
        scores = scores.masked_fill(padded, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    if key_padding_mask is not None:
        weights = weights.masked_fill(padded.all(dim=-1, keepdim=True), 0.0)
    return weights @ v, weights


class MultiHeadCrossAttention(nn.Module):
    """Multi-head attention of queries from one sequence over keys and values from another.

    Submodules: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, each ``nn.Linear(embed_dim,
    embed_dim)`` with bias. forward(x_q (B, Lq, E), x_kv (B, Lk, E), key_padding_mask (B, Lk)
    bool or None, True = pad) returns out (B, Lq, E) and the per-head weights (B, num_heads, Lq, Lk).
    With the same weights it matches ``nn.MultiheadAttention(E, num_heads, batch_first=True)``
    called with ``average_attn_weights=False`` in eval mode, except that a sample whose keys are
    all padded gets zero weights and out = out_proj's bias instead of NaN, and padded rows of x_kv
    never affect the result, whatever they hold (PyTorch's returns NaN when they hold NaN or inf).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.q_proj(x_q).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, Lq, E/H)
        k = self.k_proj(x_kv).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, Lk, E/H)
        v = self.v_proj(x_kv).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, H, Lk, E/H)
        heads, weights = scaled_dot_product_attention(q, k, v, key_padding_mask)  # (B, H, Lq, E/H)
        merged = heads.transpose(1, 2).flatten(2)  # (B, Lq, E)
        return self.out_proj(merged), weights


class CrossModalBlock(nn.Module):
    """A pre-LayerNorm cross-modal transformer block, as in MulT (Tsai et al. 2019, arXiv:1906.00295).

    The target sequence (B, Lt, D) queries the source sequence (B, Ls, D); Lt and Ls may differ
    (unaligned modalities). Submodules: ``norm_q``, ``norm_kv``, ``norm_ff`` (``nn.LayerNorm(dim)``),
    ``attn = MultiHeadCrossAttention(dim, num_heads)`` and
    ``ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))``.
    forward(target, source, source_padding_mask=None) returns (B, Lt, D):
      x = target + attn(norm_q(target), norm_kv(source), source_padding_mask)[0]
      out = x + ff(norm_ff(x))
    Padded source steps never affect the result, whatever they hold (NaN and ±inf included).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = MultiHeadCrossAttention(dim, num_heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, source_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = target + self.attn(self.norm_q(target), self.norm_kv(source), source_padding_mask)[0]  # (B, Lt, D)
        return x + self.ff(self.norm_ff(x))


class LearnedQueryResampler(nn.Module):
    """Learned queries that summarise a variable-length input into a fixed number of tokens.

    In the style of Flamingo's Perceiver Resampler (Alayrac et al. 2022, arXiv:2204.14198) and
    BLIP-2's Q-Former queries (Li et al. 2023, arXiv:2301.12597). Parameters and submodules:
    ``queries`` (num_queries, dim), initialised N(0, 0.02²); ``layers``, a ModuleList of ``depth``
    ``CrossModalBlock(dim, num_heads)``; ``norm = nn.LayerNorm(dim)``.
    forward(x (B, L, dim), key_padding_mask (B, L) bool or None, True = pad) returns
    (B, num_queries, dim) whatever L is. As in the Perceiver Resampler, each layer's queries
    attend to the input and to themselves: the keys and values are [x ; latents], and the
    latents are never masked. The result is norm(latents) after the last layer. Padded input
    steps never affect it, whatever they hold (NaN and ±inf included).
    """

    def __init__(self, num_queries: int, dim: int, num_heads: int, depth: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.layers = nn.ModuleList(CrossModalBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        latents = self.queries.expand(batch, -1, -1)  # (B, Q, D)
        if key_padding_mask is None:
            key_padding_mask = torch.zeros(batch, length, dtype=torch.bool, device=x.device)
        mask = F.pad(key_padding_mask, (0, latents.shape[1]), value=False)  # (B, L + Q)
        for layer in self.layers:
            latents = layer(latents, torch.cat([x, latents], dim=1), mask)  # (B, Q, D)
        return self.norm(latents)


class GatedCrossAttentionBlock(nn.Module):
    """Flamingo's tanh-gated cross-attention block (Alayrac et al. 2022, arXiv:2204.14198).

    Submodules and parameters: ``norm_x`` and ``norm_ff`` (``nn.LayerNorm(dim)``),
    ``attn = MultiHeadCrossAttention(dim, num_heads)``,
    ``ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))``, and two
    0-dim gates ``attn_gate`` and ``ff_gate``, both initialised to 0.
    forward(x (B, L, dim), media (B, M, dim), media_padding_mask=None) returns (B, L, dim):
      x = x + tanh(attn_gate) · attn(norm_x(x), media, media_padding_mask)[0]
      out = x + tanh(ff_gate) · ff(norm_ff(x))
    At initialisation tanh(0) = 0, so the block is exactly the identity: a frozen language model
    it is inserted into starts out unchanged, and d tanh/dα = 1 at 0, so the gates still learn.
    Padded media steps never affect the result, whatever they hold (NaN and ±inf included).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.attn = MultiHeadCrossAttention(dim, num_heads)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ff_gate = nn.Parameter(torch.zeros(()))

    def forward(
        self, x: torch.Tensor, media: torch.Tensor, media_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + torch.tanh(self.attn_gate) * self.attn(self.norm_x(x), media, media_padding_mask)[0]  # (B, L, D)
        return x + torch.tanh(self.ff_gate) * self.ff(self.norm_ff(x))

"""Chapter 09 · mllm: LLaVA's projector, token splice and answer-only labels, the causal LM loss, BLIP-2's
Q-Former masks, rotary position embedding, causal self-attention with a KV cache, and pixel-shuffle token reduction.

Every public function or class here is the reference for one graded exercise. Each is self-contained (it needs
only ``math``, ``torch``, ``torch.nn`` and ``torch.nn.functional``), because its source is copied verbatim into the
worked-solution notebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MlpProjector(nn.Module):
    """LLaVA-1.5's vision→language connector (mlp2x_gelu), with its feature selection.

    __init__(vision_dim: int, text_dim: int, vision_feature_layer: int = -2);
    forward(hidden_states) -> (B, N, text_dim).
    * Attributes, exactly (HF LlavaMultiModalProjector's names, so a twin can load_state_dict(strict=True) from this
      module or from HF's): linear_1 = nn.Linear(vision_dim, text_dim) (bias), act = nn.GELU() (exact erf GELU,
      approximate="none"; HF projector_hidden_act="gelu"), linear_2 = nn.Linear(text_dim, text_dim) (bias),
      vision_feature_layer (the int). state_dict() keys are exactly
      {linear_1.weight, linear_1.bias, linear_2.weight, linear_2.bias}.
    * hidden_states: a tuple or list of K ≥ 1 float tensors, each (B, 1 + N, vision_dim): what a ViT returns with
      output_hidden_states=True — entry 0 is the embedding output, entry i the output of encoder layer i, and
      position 0 of every entry is the CLS token.
    * Returns (B, N, text_dim): x = hidden_states[vision_feature_layer] (Python indexing, so −2 is the penultimate
      entry = output of the second-to-last layer), x = x[:, 1:] (CLS dropped, LLaVA's mm_vision_select_feature="patch"
      / HF vision_feature_select_strategy="default"), then linear_2(act(linear_1(x))). Output dtype = parameter
      dtype. N = 0 gives (B, 0, text_dim).
    * Must not modify hidden_states. Gradients flow to the selected entry of hidden_states and to all four
      parameters.
    """

    def __init__(self, vision_dim: int, text_dim: int, vision_feature_layer: int = -2) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(text_dim, text_dim)
        self.vision_feature_layer = vision_feature_layer

    def forward(self, hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
        patches = hidden_states[self.vision_feature_layer][:, 1:]  # (B, N, vision_dim), CLS dropped
        patches = patches.to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(patches)))  # (B, N, text_dim)


def merge_image_features(
    input_ids: torch.Tensor,
    image_features: torch.Tensor,
    token_embedding: nn.Embedding,
    image_token_id: int,
    answer_start: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splice projected image features into the token sequence and build the answer-only labels (LLaVA).

    input_ids (B, L) int64; image_features (M, N, D) float: M images in reading order, N tokens each;
    token_embedding an nn.Embedding (V, D); answer_start (B,) int64, each in [0, L]; attention_mask (B, L) bool
    or 0/1 int, True/1 = real token (None: every position is real).
    Returns (inputs_embeds (B, L, D), labels (B, L) int64).
    * Convention (current HF LLaVA, transformers 5.x, where the processor expands `<image>`): the prompt already
      holds N placeholder ids per image (input_ids == image_token_id), so the sequence length does not change.
    * inputs_embeds[b, p] = token_embedding(input_ids[b, p]) at text positions. Placeholder positions are filled in
      row-major order (row 0 left to right, then row 1, …) with the rows of image_features.reshape(M*N, D), exactly
      inputs_embeds.masked_scatter(mask[..., None], feats). So image m fills placeholders m·N … m·N + N − 1 counted
      across the whole batch; a row may hold 0, 1 or several images. Image features are cast to the embedding
      dtype.
    * image_token_id need not be a row of the table (LLaVA's IMAGE_TOKEN_INDEX = −200; also V or larger):
      placeholder ids are never looked up.
    * Gradients flow to image_features and to token_embedding.weight (placeholder positions contribute nothing to
      any embedding row).
    * labels[b, p] = input_ids[b, p] iff p ≥ answer_start[b] and the position is real (attention_mask true, or no
      mask given) and input_ids[b, p] != image_token_id; otherwise ignore_index. Labels are not shifted
      (causal_lm_loss shifts). answer_start[b] = L supervises nothing. Padding may be on either side.
    * Raises ValueError when the number of placeholders ≠ M·N (HF raises "Image features and image tokens do not
      match"; masked_scatter alone would silently use a prefix of the features).
    * Must not modify any input (in particular not input_ids).
    """
    num_images, tokens_per_image, dim = image_features.shape
    is_image = input_ids == image_token_id  # (B, L)
    placeholders = int(is_image.sum())
    if placeholders != num_images * tokens_per_image:
        raise ValueError(
            f"Image features and image tokens do not match: {placeholders} placeholders,"
            f" {num_images} images of {tokens_per_image} tokens"
        )
    text_ids = input_ids.masked_fill(is_image, 0)  # (B, L) any valid row: placeholder ids are never looked up
    text_embeds = token_embedding(text_ids)  # (B, L, D)
    features = image_features.reshape(num_images * tokens_per_image, dim).to(text_embeds.dtype)  # (M*N, D)
    inputs_embeds = text_embeds.masked_scatter(is_image[..., None], features)  # (B, L, D)

    positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
    supervised = (positions[None, :] >= answer_start[:, None]) & ~is_image  # (B, L)
    if attention_mask is not None:
        supervised = supervised & attention_mask.bool()
    labels = input_ids.masked_fill(~supervised, ignore_index)  # (B, L)
    return inputs_embeds, labels


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy with ignored positions (HF's ForCausalLMLoss).

    logits (B, L, V) float32/float64; labels (B, L) int64, unshifted (as merge_image_features returns them).
    * Pairs (b, t) for t = 0 … L−2: logits[b, t] is scored against labels[b, t + 1]; pairs whose target equals
      ignore_index are skipped. labels[:, 0] is never a target; the last position predicts nothing.
    * Returns a 0-dim tensor in the logits' dtype: Σ −log softmax(logits[b, t])[labels[b, t+1]] divided by the
      number of supervised pairs in the whole batch (a token-level mean, not a mean of per-sequence means). If
      num_items_in_batch is given (int or 0-dim tensor), divide the sum by it instead (HF's gradient-accumulation
      normalisation). No label smoothing.
    * No supervised pair (all ignored, or L = 1) and num_items_in_batch=None → NaN (0/0), exactly what
      F.cross_entropy(reduction="mean") and HF return (pytorch/pytorch#70348: intentional since 1.11).
    * Differentiable w.r.t. logits. Must not modify its inputs.
    """
    vocab = logits.shape[-1]
    predictions = logits[:, :-1].reshape(-1, vocab)  # (B*(L-1), V): position t predicts token t + 1
    targets = labels[:, 1:].reshape(-1)  # (B*(L-1),)
    total = F.cross_entropy(predictions, targets, ignore_index=ignore_index, reduction="sum")
    count = (targets != ignore_index).sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, dtype=total.dtype, device=total.device)


def qformer_attention_mask(num_queries: int, text_len: int, objective: str) -> torch.Tensor:
    """BLIP-2 Q-Former self-attention mask for one pre-training objective (ITC, ITM or ITG).

    Returns a torch.bool tensor (Q+T, Q+T) with Q = num_queries, T = text_len: True = the row position may attend to
    the column position (the F.scaled_dot_product_attention bool convention and LAVIS's 1 = attend; the opposite of
    nn.MultiheadAttention's attn_mask and of chapter 02's key_padding_mask, where True = blocked/pad).
    Order: the Q learned queries first, then the T text tokens (LAVIS concatenates [query_atts, text_atts]).
    * 'itc' (uni-modal): queries↔queries True, text↔text True (bidirectional), every query↔text cell False.
    * 'itm' (bi-directional): all True.
    * 'itg' (multimodal causal, UniLM-style): queries see all queries and no text; text token i sees all queries
      and text tokens j ≤ i (itself included).
    * Q = 0 or T = 0 allowed (empty blocks). Any other objective → ValueError.
    """
    if objective not in ("itc", "itm", "itg"):
        raise ValueError(f"objective must be 'itc', 'itm' or 'itg', got {objective!r}")
    index = torch.arange(num_queries + text_len)  # (Q+T,)
    is_query = index < num_queries  # (Q+T,)
    if objective == "itm":
        return torch.ones(len(index), len(index), dtype=torch.bool)
    same_modality = is_query[:, None] == is_query[None, :]  # (Q+T, Q+T)
    if objective == "itc":
        return same_modality
    text_causal = ~is_query[:, None] & (index[None, :] <= index[:, None])  # text row sees earlier text and itself
    return is_query[None, :] | text_causal  # every row sees every query


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding (RoFormer, Su et al. 2021), HF's rotate_half convention.

    q (B, Hq, L, d), k (B, Hk, L, d) (Hq ≠ Hk allowed, GQA), d even, float32 or float64;
    positions (B, L) int64 (HF position_ids; any non-negative ints, not necessarily contiguous).
    * inv_freq[i] = base^(−2i/d), i = 0 … d/2 − 1; θ[b, l, i] = positions[b, l] · inv_freq[i]; cos and sin of
      cat(θ, θ) (length d).
    * Half-split convention (HF Llama, GPT-NeoX): out = x·cos + rotate_half(x)·sin with
      rotate_half(x) = cat(−x[..., d/2:], x[..., :d/2]), i.e. dims i and i + d/2 form the rotated pair (the RoFormer
      paper and Meta's llama/model.py pair adjacent dims 2i, 2i+1, the "interleaved" convention; the two are equal
      up to a fixed permutation of the head dims, which is why HF's Llama conversion script permutes the q/k weight
      rows).
    * Returns (q_rot, k_rot) with the input shapes and dtype; must not modify q or k. Angles may be computed in
      float32 (as HF) or float64.
    """
    d = q.shape[-1]
    angle_dtype = torch.promote_types(q.dtype, torch.float32)  # float32 as HF, float64 for float64 inputs
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, device=q.device, dtype=angle_dtype) / d)  # (d/2,)
    theta = positions.to(angle_dtype)[..., None] * inv_freq  # (B, L, d/2)
    angles = torch.cat([theta, theta], dim=-1)[:, None]  # (B, 1, L, d): broadcast over heads
    cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        first, second = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat([-second, first], dim=-1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class CachedSelfAttention(nn.Module):
    """Causal multi-head self-attention with RoPE and a KV cache (HF LlamaAttention + DynamicCache).

    __init__(dim: int, num_heads: int, rope_base: float = 10000.0);
    forward(x, past_key_value=None) -> (out (B, L, dim), (k_all, v_all)).
    * Submodules, exactly (HF LlamaAttention's names, so weights copy both ways):
      q_proj, k_proj, v_proj, o_proj = nn.Linear(dim, dim, bias=False). head_dim = dim // num_heads; ValueError if
      dim % num_heads ≠ 0 or head_dim is odd. No dropout, no GQA, no padding mask.
    * x (B, L, dim), L ≥ 1; past_key_value = (k, v), each (B, H, P, head_dim), or None (P = 0).
    * q, k, v = proj(x) split as view(B, L, H, head_dim).transpose(1, 2) (head h owns features
      h·hd … (h+1)·hd − 1). q and k are rotated by apply_rope at positions P … P+L−1 (same for every row).
    * k_all = cat(past_k, k), v_all = cat(past_v, v) along dim 2. The returned cache holds post-RoPE keys (as HF's
      DynamicCache), so a cache produced by one correct implementation works in any other.
    * Scores q·k_allᵀ/√head_dim; query i (absolute position P+i) attends keys 0 … P+i (bottom-right aligned causal
      mask); softmax over keys; heads merged transpose(1, 2).reshape(B, L, dim); o_proj.
    * Returns (out (B, L, dim), (k_all, v_all)). Must not modify the past tensors in place.
    * Invariant: one call on the whole sequence equals a prefill followed by any chunking of the rest (1 token or
      several at a time).
    """

    def __init__(self, dim: int, num_heads: int, rope_base: float = 10000.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if (dim // num_heads) % 2:
            raise ValueError(f"head_dim {dim // num_heads} must be even for RoPE")
        self.num_heads, self.head_dim, self.rope_base = num_heads, dim // num_heads, rope_base
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self, x: torch.Tensor, past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, dim = x.shape
        split = (batch, length, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(split).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_proj(x).view(split).transpose(1, 2)  # (B, H, L, hd)
        v = self.v_proj(x).view(split).transpose(1, 2)  # (B, H, L, hd)
        past = 0 if past_key_value is None else past_key_value[0].shape[2]
        positions = torch.arange(past, past + length, device=x.device).expand(batch, length)  # (B, L)
        q, k = apply_rope(q, k, positions, self.rope_base)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)  # (B, H, P + L, hd), rotated keys
            v = torch.cat([past_key_value[1], v], dim=2)  # (B, H, P + L, hd)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, L, P + L)
        # Query i sits at position P + i: key j is in its future when j > P + i (bottom-right alignment).
        future = torch.ones(length, past + length, dtype=torch.bool, device=x.device).triu(past + 1)  # (L, P + L)
        weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)  # (B, H, L, P + L)
        merged = (weights @ v).transpose(1, 2).reshape(batch, length, dim)  # (B, L, dim)
        return self.o_proj(merged), (k, v)


def pixel_shuffle_tokens(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Visual token reduction by space-to-depth (InternVL 1.5, Idefics3, SmolVLM).

    x (B, N, C): N = S² patch tokens of an S×S grid in row-major order (token s = row·S + col), no CLS.
    scale = r ≥ 1 must divide S.
    * Returns (B, N / r², r²·C): output token (i, j) sits at index i·(S/r) + j and holds the r×r block's tokens
      concatenated in row-major block order:
      out[b, i·(S/r)+j, (dy·r+dx)·C + c] = x[b, (i·r+dy)·S + (j·r+dx), c].
    * r = 1 returns a tensor equal to x. ValueError if N is not a perfect square or S % r ≠ 0.
    * A pure rearrangement (exact equality; the gradient is the inverse permutation). Must not modify x.
    """
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} tokens do not form a square grid")
    if scale < 1 or side % scale != 0:
        raise ValueError(f"scale {scale} does not divide the grid side {side}")
    blocks = side // scale  # S / r
    grid = x.reshape(batch, blocks, scale, blocks, scale, channels)  # (B, i, dy, j, dx, C)
    grid = grid.permute(0, 1, 3, 2, 4, 5)  # (B, i, j, dy, dx, C)
    return grid.reshape(batch, blocks * blocks, scale * scale * channels)  # (B, N / r², r²·C)

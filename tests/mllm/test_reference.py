"""Chapter 09's function references against their peers (transformers' Llama rotary embedding, causal LM loss and
LLaVA splice, Idefics3's and InternVL's pixel shuffle, torch's pixel_unshuffle, LAVIS's Q-Former mask), their
properties, and the direct proof that each check rejects its mutants and accepts other-style solutions.

transformers is an optional peer: those tests are skipped without it. salesforce-lavis cannot run here (it pins old
dependencies), so its `get_extended_attention_mask` is transliterated below as the agreement oracle, labelled with
its source; the package never uses it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from xmodal_ref.mllm import checks
from xmodal_ref.mllm.reference import (
    apply_rope,
    causal_lm_loss,
    merge_image_features,
    pixel_shuffle_tokens,
    qformer_attention_mask,
)

from .mutants import CORRECT, MUTANTS

TRANSFORMERS = "transformers is an optional peer for the LLaVA / Llama / Idefics3 / InternVL agreement (pip install)"


def gaussian(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# --- merge_image_features and causal_lm_loss against LLaVA -------------------------------------


def tiny_llava(image_token_id: int, vocab: int):
    """A random LlavaForConditionalGeneration: CLIP vision (16 patches of 4×4 on 16×16 images) + a 1-layer Llama."""
    transformers = pytest.importorskip("transformers", reason=TRANSFORMERS)
    vision = transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=4
    )
    text = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
    )
    config = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id, attn_implementation="eager"
    )
    torch.manual_seed(0)
    return transformers.LlavaForConditionalGeneration(config).eval()


def llava_batch(image_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2 rows × 40: row 0 holds one image and right padding, row 1 two images back to back; 16 tokens per image."""
    p = image_token_id
    row0 = [1, 5, *[p] * 16, 7, 8, 9, 10, 11, 12, *[0] * 16]
    row1 = [1, 6, *[p] * 32, 13, 14, 15, 16, 17, 18]
    real = torch.tensor([[1] * 24 + [0] * 16, [1] * 40])
    return torch.tensor([row0, row1]), real, torch.tensor([20, 36])


def test_merge_and_loss_equal_a_tiny_transformers_llava() -> None:
    vocab, image_token_id = 40, 39
    model = tiny_llava(image_token_id, vocab)
    input_ids, real, answer_start = llava_batch(image_token_id)
    pixel_values = gaussian(3, 3, 16, 16, seed=1)
    captured = {}

    def capture(module, args, kwargs):
        captured["inputs_embeds"] = kwargs["inputs_embeds"].detach().clone()

    hook = model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    with torch.no_grad():
        features = model.model.get_image_features(pixel_values=pixel_values).pooler_output  # 3 × (16, D)
        ours, labels = merge_image_features(
            input_ids, torch.stack(list(features)), model.get_input_embeddings(), image_token_id, answer_start, real
        )
        output = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=real, labels=labels)
    hook.remove()
    assert (ours - captured["inputs_embeds"]).abs().max().item() == 0.0
    assert torch.equal(causal_lm_loss(output.logits, labels), output.loss)


@pytest.mark.parametrize("num_items", [None, 9, torch.tensor(13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_lm_loss_equals_transformers_for_causal_lm_loss(num_items, dtype: torch.dtype) -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = gaussian(3, 8, 11, seed=2, dtype=dtype) * 2
    ours = causal_lm_loss(logits, checks.LOSS_LABELS, num_items_in_batch=num_items)
    theirs = ForCausalLMLoss(logits, checks.LOSS_LABELS, vocab_size=11, num_items_in_batch=num_items)
    assert ours.dtype == dtype
    # HF upcasts to float32 (`logits.float()`), so float64 agrees only to float32 precision
    assert (ours - theirs.to(dtype)).abs().item() <= (0.0 if dtype == torch.float32 else 3e-7)


def test_causal_lm_loss_is_nan_without_supervised_pairs_as_transformers_is() -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits, labels = gaussian(2, 5, 7, seed=3), torch.full((2, 5), -100)
    assert causal_lm_loss(logits, labels).isnan() and ForCausalLMLoss(logits, labels, vocab_size=7).isnan()
    assert causal_lm_loss(logits[:, :1], labels[:, :1]).isnan()


# --- causal_lm_loss: properties ---------------------------------------------------------------


@given(
    rows=st.integers(1, 3),
    length=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    ignored=st.floats(0.0, 1.0),
    ignore_index=st.sampled_from([-100, -1]),
)
def test_causal_lm_loss_is_the_token_mean_over_supervised_next_token_pairs(
    rows: int, length: int, seed: int, ignored: float, ignore_index: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (rows, length), generator=generator)
    labels[torch.rand(rows, length, generator=generator) < ignored] = ignore_index
    pairs = [(b, t) for b in range(rows) for t in range(length - 1) if labels[b, t + 1] != ignore_index]
    loss = causal_lm_loss(logits, labels, ignore_index=ignore_index)
    if not pairs:
        assert loss.isnan()
        return
    terms = [torch.logsumexp(logits[b, t], 0) - logits[b, t, labels[b, t + 1]] for b, t in pairs]
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-12)
    loss.backward()
    expected = torch.zeros_like(logits)
    for b, t in pairs:  # d/dz of the pair's −log softmax is softmax − one-hot, shared by the pair count
        expected[b, t] += (logits[b, t].softmax(0) - F.one_hot(labels[b, t + 1], 5)).detach() / len(pairs)
    assert torch.allclose(logits.grad, expected, atol=1e-12)


def test_causal_lm_loss_divides_by_num_items_in_batch_for_gradient_accumulation() -> None:
    """Two micro-batches, each divided by the total count, add up to the loss of the whole batch."""
    logits = gaussian(3, 8, 11, seed=4, dtype=torch.float64)
    labels = checks.LOSS_LABELS
    total = int((labels[:, 1:] != -100).sum())
    parts = [causal_lm_loss(logits[s], labels[s], num_items_in_batch=total) for s in (slice(0, 1), slice(1, 3))]
    assert torch.allclose(sum(parts), causal_lm_loss(logits, labels), atol=1e-12)


# --- merge_image_features: properties ---------------------------------------------------------


@given(
    counts=st.lists(st.integers(0, 2), min_size=1, max_size=3),
    length=st.integers(8, 12),
    seed=st.integers(0, 10_000),
    image_token_id=st.sampled_from([6, 7, -200]),
)
def test_merge_fills_placeholders_in_reading_order_and_labels_by_the_rule(
    counts: list[int], length: int, seed: int, image_token_id: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    tokens, vocab, dim = 3, 7, 5
    input_ids = torch.randint(0, 6, (len(counts), length), generator=generator)
    for b, count in enumerate(counts):  # images at a random start in each row
        start = int(torch.randint(0, length - count * tokens + 1, (), generator=generator))
        input_ids[b, start : start + count * tokens] = image_token_id
    features = torch.randn(sum(counts), tokens, dim, generator=generator)
    embedding = nn.Embedding(vocab, dim)
    answer_start = torch.randint(0, length + 1, (len(counts),), generator=generator)
    real = torch.rand(len(counts), length, generator=generator) > 0.2
    saved = input_ids.clone()
    embeds, labels = merge_image_features(input_ids, features, embedding, image_token_id, answer_start, real)
    assert torch.equal(input_ids, saved)
    rows = iter(features.reshape(-1, dim))
    for b, p in itertools.product(range(len(counts)), range(length)):
        token = int(input_ids[b, p])
        if token == image_token_id:
            assert torch.equal(embeds[b, p], next(rows))
            assert labels[b, p] == -100
        else:
            assert torch.equal(embeds[b, p], embedding.weight[token])
            supervised = p >= answer_start[b] and bool(real[b, p])
            assert labels[b, p] == (token if supervised else -100)
    assert next(rows, None) is None


def test_merge_gradient_reaches_features_and_text_rows_only() -> None:
    case = checks._merge_case("", -200, mask="bool", seed=0)
    input_ids, features, embedding, image_token_id, answer_start = case.args
    features = features.clone().requires_grad_()
    embeds, _ = merge_image_features(input_ids, features, embedding, image_token_id, answer_start, **case.kwargs)
    embeds.sum().backward()
    assert torch.equal(features.grad, torch.ones_like(features))
    text = input_ids[input_ids != image_token_id]
    counts = torch.bincount(text, minlength=embedding.num_embeddings).float()
    assert torch.equal(embedding.weight.grad, counts[:, None].expand_as(embedding.weight))


def test_merge_raises_on_a_count_mismatch() -> None:
    input_ids = torch.tensor([[1, 9, 9, 2]])
    with pytest.raises(ValueError, match="do not match"):
        merge_image_features(input_ids, torch.randn(1, 3, 4), nn.Embedding(10, 4), 9, torch.tensor([0]))


# --- qformer_attention_mask against LAVIS -----------------------------------------------------


def lavis_extended_attention_mask(
    attention_mask: torch.Tensor, input_shape: tuple[int, int], is_decoder: bool, has_query: bool = False
) -> torch.Tensor:
    """ORACLE, transliterated from salesforce/LAVIS lavis/models/blip2_models/Qformer.py
    `BertModel.get_extended_attention_mask` (2-D attention_mask branch; `self.dtype` = float32, device = CPU)."""
    device = attention_mask.device
    if is_decoder:
        batch_size, seq_length = input_shape

        seq_ids = torch.arange(seq_length, device=device)
        causal_mask = seq_ids[None, None, :].repeat(batch_size, seq_length, 1) <= seq_ids[None, :, None]

        causal_mask = causal_mask.to(attention_mask.dtype)

        if causal_mask.shape[1] < attention_mask.shape[1]:
            prefix_seq_len = attention_mask.shape[1] - causal_mask.shape[1]
            if has_query:  # UniLM style attention mask
                causal_mask = torch.cat(
                    [
                        torch.zeros((batch_size, prefix_seq_len, seq_length), device=device, dtype=causal_mask.dtype),
                        causal_mask,
                    ],
                    axis=1,
                )
            causal_mask = torch.cat(
                [
                    torch.ones(
                        (batch_size, causal_mask.shape[1], prefix_seq_len), device=device, dtype=causal_mask.dtype
                    ),
                    causal_mask,
                ],
                axis=-1,
            )
        extended_attention_mask = causal_mask[:, None, :, :] * attention_mask[:, None, None, :]
    else:
        extended_attention_mask = attention_mask[:, None, None, :]
    extended_attention_mask = extended_attention_mask.to(dtype=torch.float32)
    extended_attention_mask = (1.0 - extended_attention_mask) * -10000.0
    return extended_attention_mask


def lavis_mask(num_queries: int, text_len: int, objective: str) -> torch.Tensor:
    """LAVIS's (Q+T, Q+T) mask as BLIP-2's forward builds it: ITM is the encoder pass over [query_atts, text_atts],
    ITG the decoder pass (`is_decoder=True`, `has_query=True`) over the text ids with the queries as prefix."""
    attention = torch.ones(1, num_queries + text_len, dtype=torch.long)  # [query_atts, text_atts]
    size = num_queries + text_len
    if objective == "itm":
        additive = lavis_extended_attention_mask(attention, (1, size), is_decoder=False)
    else:
        additive = lavis_extended_attention_mask(attention, (1, text_len), is_decoder=True, has_query=num_queries > 0)
    return (additive == 0).expand(1, 1, size, size)[0, 0]


@pytest.mark.parametrize(("num_queries", "text_len"), [*checks.QFORMER_SIZES, (1, 1)])
@pytest.mark.parametrize("objective", ["itm", "itg"])
def test_qformer_mask_equals_lavis(num_queries: int, text_len: int, objective: str) -> None:
    ours = qformer_attention_mask(num_queries, text_len, objective)
    assert ours.dtype == torch.bool
    assert torch.equal(ours, lavis_mask(num_queries, text_len, objective))


def test_itc_mask_is_the_two_unimodal_passes_of_blip2() -> None:
    """LAVIS runs ITC as a query-only and a text-only pass; one pass under the block-diagonal mask is the same."""
    queries, text = gaussian(1, 1, 4, 8, seed=5), gaussian(1, 1, 3, 8, seed=6)
    joint = torch.cat([queries, text], dim=2)
    mask = qformer_attention_mask(4, 3, "itc")
    together = F.scaled_dot_product_attention(joint, joint, joint, attn_mask=mask)
    apart = [F.scaled_dot_product_attention(x, x, x) for x in (queries, text)]
    assert torch.allclose(together, torch.cat(apart, dim=2), atol=1e-6)


def test_itg_mask_keeps_queries_blind_to_text_and_text_causal() -> None:
    joint = gaussian(1, 1, 7, 8, seed=7)
    changed = joint.clone()
    changed[..., 6, :] += 1.0  # the last text token
    mask = qformer_attention_mask(4, 3, "itg")
    before, after = (F.scaled_dot_product_attention(x, x, x, attn_mask=mask) for x in (joint, changed))
    assert torch.equal(before[..., :6, :], after[..., :6, :])  # queries and earlier text unaffected
    assert not torch.allclose(before[..., 6, :], after[..., 6, :])


@given(num_queries=st.integers(0, 6), text_len=st.integers(0, 6))
def test_qformer_mask_follows_the_definition_cell_by_cell(num_queries: int, text_len: int) -> None:
    masks = {o: qformer_attention_mask(num_queries, text_len, o) for o in ("itc", "itm", "itg")}
    for i, j in itertools.product(range(num_queries + text_len), repeat=2):
        i_query, j_query = i < num_queries, j < num_queries
        assert bool(masks["itm"][i, j])
        assert bool(masks["itc"][i, j]) == (i_query == j_query)
        assert bool(masks["itg"][i, j]) == (j_query or (not i_query and j <= i))


def test_qformer_mask_rejects_other_objectives() -> None:
    with pytest.raises(ValueError):
        qformer_attention_mask(2, 2, "mlm")


# --- apply_rope against transformers' Llama ---------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_apply_rope_equals_transformers_llama_rotary(dtype: torch.dtype) -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    positions = torch.sort(torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(8))).values
    positions[0, -1] = 511
    q, k = gaussian(2, 4, 9, 16, seed=9, dtype=dtype), gaussian(2, 2, 9, 16, seed=10, dtype=dtype)
    cos, sin = LlamaRotaryEmbedding(config)(q, positions)
    theirs = apply_rotary_pos_emb(q, k, cos, sin)
    ours = apply_rope(q, k, positions, base=500.0)
    difference = max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))
    # HF computes the angles in float32 even for float64 inputs; ours follow the inputs' precision
    assert difference <= (0.0 if dtype == torch.float32 else 1e-4)


def rope_interleaved_oracle(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """The RoFormer paper's / Meta llama's convention: dims (2i, 2i + 1) rotated by positions · base^(−2i/d)."""
    d = x.shape[-1]
    theta = positions[:, None, :, None].double() * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * theta.cos() - odd * theta.sin(), odd * theta.cos() + even * theta.sin()], -1).flatten(-2)


def test_apply_rope_is_the_interleaved_convention_up_to_a_permutation_of_head_dims() -> None:
    """Why HF's Llama conversion permutes the q/k rows: half-split (i, i + d/2) ↔ adjacent (2i, 2i + 1)."""
    d = 12
    to_half = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # adjacent layout → half-split layout
    q = gaussian(2, 3, 5, d, seed=11, dtype=torch.float64)
    positions = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(12))
    ours = apply_rope(q[..., to_half], q[..., to_half], positions, base=1000.0)[0]
    assert torch.allclose(ours, rope_interleaved_oracle(q, positions, 1000.0)[..., to_half], atol=1e-12)


@given(
    d=st.sampled_from([2, 8, 16]),
    m=st.integers(0, 300),
    n=st.integers(0, 300),
    shift=st.integers(0, 200),
    seed=st.integers(0, 10_000),
)
def test_apply_rope_preserves_norms_and_scores_depend_on_relative_position(
    d: int, m: int, n: int, shift: int, seed: int
) -> None:
    q, k = (
        gaussian(1, 1, 1, d, seed=seed, dtype=torch.float64),
        gaussian(1, 1, 1, d, seed=seed + 1, dtype=torch.float64),
    )

    def score(a: int, b: int) -> torch.Tensor:
        rotated_q, _ = apply_rope(q, q, torch.tensor([[a]]))
        _, rotated_k = apply_rope(k, k, torch.tensor([[b]]))
        return (rotated_q * rotated_k).sum()

    rotated, _ = apply_rope(q, q, torch.tensor([[m]]))
    assert torch.allclose(rotated.norm(), q.norm(), atol=1e-12)
    assert torch.allclose(score(m, n), score(m + shift, n + shift), atol=1e-9)


def test_apply_rope_at_position_zero_is_the_identity_and_leaves_inputs_alone() -> None:
    q, k = gaussian(2, 4, 3, 8, seed=13), gaussian(2, 1, 3, 8, seed=14)
    saved = q.clone(), k.clone()
    rotated_q, rotated_k = apply_rope(q, k, torch.zeros(2, 3, dtype=torch.long))
    assert torch.equal(rotated_q, q) and torch.equal(rotated_k, k)
    assert torch.equal(q, saved[0]) and torch.equal(k, saved[1])


# --- pixel_shuffle_tokens against Idefics3, InternVL and torch --------------------------------


def test_pixel_shuffle_equals_idefics3_and_internvl() -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector
    from transformers.models.internvl.modeling_internvl import InternVLModel

    x = gaussian(2, 36, 5, seed=15)
    assert torch.equal(pixel_shuffle_tokens(x, 3), Idefics3Connector.pixel_shuffle(None, x, 3))
    x = gaussian(2, 64, 6, seed=16)
    internvl = InternVLModel.pixel_shuffle(None, x.view(2, 8, 8, 6), 0.5)  # (B, S/2, S/2, 4C)
    assert torch.equal(pixel_shuffle_tokens(x, 2), internvl.reshape(2, 16, 24))


@pytest.mark.parametrize(("batch", "tokens", "channels", "scale"), checks.SHUFFLE_SHAPES)
def test_pixel_shuffle_equals_torch_pixel_unshuffle_after_a_channel_permutation(batch, tokens, channels, scale):
    x = gaussian(batch, tokens, channels, seed=tokens)
    side = math.isqrt(tokens)
    image = x.transpose(1, 2).reshape(batch, channels, side, side)
    packed = F.pixel_unshuffle(image, scale).flatten(2).transpose(1, 2)  # channel c·r² + k
    permutation = torch.arange(channels * scale * scale).view(channels, scale * scale).T.flatten()  # k·C + c ← c·r² + k
    assert torch.equal(pixel_shuffle_tokens(x, scale), packed[..., permutation])


@given(
    batch=st.integers(1, 2),
    blocks=st.integers(1, 4),
    scale=st.integers(1, 3),
    channels=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_pixel_shuffle_follows_the_index_formula_and_is_a_permutation(batch, blocks, scale, channels, seed) -> None:
    side = blocks * scale
    x = gaussian(batch, side * side, channels, seed=seed).requires_grad_()
    out = pixel_shuffle_tokens(x, scale)
    assert out.shape == (batch, blocks * blocks, scale * scale * channels)
    for i, j, dy, dx in itertools.product(range(blocks), range(blocks), range(scale), range(scale)):
        slot = (dy * scale + dx) * channels
        assert torch.equal(
            out[:, i * blocks + j, slot : slot + channels], x[:, (i * scale + dy) * side + j * scale + dx]
        )
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    out.backward(upstream)
    assert torch.equal(torch.sort(x.grad.flatten()).values, torch.sort(upstream.flatten()).values)
    assert torch.equal(pixel_shuffle_tokens(x.detach(), 1), x.detach())


@pytest.mark.parametrize(("tokens", "scale"), [(12, 2), (25, 2), (16, 3)])
def test_pixel_shuffle_rejects_a_bad_grid(tokens: int, scale: int) -> None:
    with pytest.raises(ValueError):
        pixel_shuffle_tokens(torch.zeros(1, tokens, 2), scale)


def test_every_mllm_exercise_has_five_mutants_and_two_other_styles() -> None:
    """The chapter asks for more than the general three (tests/test_mutants.py proves each one)."""
    assert len(MUTANTS) == len(CORRECT) == 7
    for exercise_id in MUTANTS:
        assert len(MUTANTS[exercise_id]) >= 5 and len(CORRECT[exercise_id]) >= 2, exercise_id

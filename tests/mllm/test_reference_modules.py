"""Chapter 09's module references against transformers' LLaVA projector with its feature selection and Llama attention
with its rotary embedding, causal mask and DynamicCache; their properties; and the checks' verdicts on the mutants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from xmodal_ref.mllm.reference import CachedSelfAttention, MlpProjector, apply_rope

TRANSFORMERS = "the peers are transformers' LlavaModel and LlamaAttention (pip install transformers)"


def gaussian(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def vit_states(batch: int, tokens: int, dim: int, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` hidden states (B, 1 + tokens, dim), CLS first, of scale 2."""
    return [2 * gaussian(batch, 1 + tokens, dim, seed=seed + i) for i in range(count)]


# --- MlpProjector -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [-2, -1, 1, -3])
def test_projector_equals_llava_get_image_features(layer: int) -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaModel

    torch.manual_seed(0)
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=16, patch_size=4
    )
    text = LlamaConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)
    model = LlavaModel(LlavaConfig(vision_config=vision, text_config=text, image_token_id=49)).eval()
    assert (model.config.vision_feature_layer, model.config.vision_feature_select_strategy) == (-2, "default")
    pixels = gaussian(2, 3, 16, 16, seed=1)
    with torch.no_grad():
        features = model.get_image_features(
            pixels, vision_feature_layer=layer, vision_feature_select_strategy="default"
        )
        hidden_states = model.vision_tower(pixels, output_hidden_states=True).hidden_states
        ours = MlpProjector(16, 24, layer)
        ours.load_state_dict(model.multi_modal_projector.state_dict(), strict=True)
        assert len(hidden_states) == 4  # the embedding output and 3 layers
        assert torch.equal(ours(hidden_states), torch.stack(list(features.pooler_output)))  # measured: 0.0


def test_projector_parameters_load_both_ways_into_llava_projector() -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=12), text_config=LlamaConfig(hidden_size=8, num_attention_heads=2)
    )
    peer, ours = LlavaMultiModalProjector(config), MlpProjector(12, 8)
    peer.load_state_dict(ours.state_dict(), strict=True)
    x = gaussian(2, 5, 12, seed=2)
    states = [gaussian(2, 6, 12, seed=3), F.pad(x, (0, 0, 1, 0)), x[:, :1]]  # entry −2: x after a zero CLS
    assert torch.equal(ours(states), peer(x))
    ours = MlpProjector(12, 8)
    ours.load_state_dict(peer.state_dict(), strict=True)
    assert torch.equal(ours(states), peer(x))


def test_projector_attributes_follow_the_contract() -> None:
    projector = MlpProjector(12, 8)
    assert set(projector.state_dict()) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
    assert projector.linear_1.weight.shape == (8, 12) and projector.linear_2.weight.shape == (8, 8)
    assert isinstance(projector.act, torch.nn.GELU) and projector.act.approximate == "none"
    assert projector.vision_feature_layer == -2 and MlpProjector(12, 8, 3).vision_feature_layer == 3


@given(
    count=st.integers(1, 5),
    layer_seed=st.integers(0, 100),
    tokens=st.integers(0, 5),
    as_list=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_projector_reads_only_the_patch_tokens_of_the_selected_entry(count, layer_seed, tokens, as_list, seed) -> None:
    layer = layer_seed % (2 * count) - count  # any valid index, negative or not
    torch.manual_seed(seed)
    projector = MlpProjector(6, 4, layer)
    states = vit_states(2, tokens, 6, count, seed)
    container = list if as_list else tuple
    out = projector(container(states))
    assert out.shape == (2, tokens, 4) and out.dtype == torch.float32
    hidden = projector.linear_1(states[layer][:, 1:])
    expected = projector.linear_2(0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2))))  # the exact erf GELU
    assert torch.allclose(out, expected, atol=1e-6)
    changed = [s + 10.0 for s in states]  # every other entry and every CLS token changed
    changed[layer] = torch.cat([states[layer][:, :1] - 10.0, states[layer][:, 1:]], dim=1)
    assert torch.equal(projector(container(changed)), out)


def test_projector_gradients_reach_only_the_selected_entry_and_leave_the_input_unchanged() -> None:
    projector = MlpProjector(6, 4, -3)
    states = [s.requires_grad_() for s in vit_states(2, 3, 6, 4, seed=5)]
    saved = [s.detach().clone() for s in states]
    projector(states).square().sum().backward()
    assert [s.grad is not None for s in states] == [False, True, False, False]
    assert not states[1].grad[:, 0].any() and states[1].grad[:, 1:].abs().sum() > 0  # the CLS gets nothing
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    assert all(torch.equal(s, t) for s, t in zip(states, saved, strict=True))


def test_projector_output_follows_the_parameter_dtype() -> None:
    projector = MlpProjector(6, 4)
    states = [s.double() for s in vit_states(1, 3, 6, 3, seed=6)]
    assert projector(states).dtype == torch.float32
    assert projector.double()(states).dtype == torch.float64


# --- CachedSelfAttention ------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "heads", "base"), [(32, 4, 500.0), (24, 2, 10000.0), (16, 1, 10000.0)])
def test_attention_equals_llama_attention_with_dynamic_cache(dim: int, heads: int, base: float) -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers import DynamicCache, LlamaConfig
    from transformers.masking_utils import create_causal_mask
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    config = LlamaConfig(
        hidden_size=dim,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        rope_parameters={"rope_type": "default", "rope_theta": base},
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    peer, rotary = LlamaAttention(config, layer_idx=0).eval(), LlamaRotaryEmbedding(config)
    ours = CachedSelfAttention(dim, heads, base)
    ours.load_state_dict(peer.state_dict(), strict=True)
    x = gaussian(2, 9, dim, seed=dim)
    cache, past = DynamicCache(config=config), None
    with torch.no_grad():
        for start, stop in ((0, 5), (5, 6), (6, 9)):
            chunk, positions = x[:, start:stop], torch.arange(start, stop).expand(2, -1)
            mask = create_causal_mask(
                config=config, inputs_embeds=chunk, attention_mask=None, past_key_values=cache, position_ids=positions
            )
            theirs, _ = peer(chunk, rotary(chunk, positions), attention_mask=mask, past_key_values=cache)
            out, past = ours(chunk, past)
            assert torch.allclose(out, theirs, atol=2e-7, rtol=0)  # measured: ≤ 4.5e-8
    assert torch.equal(past[0], cache.layers[0].keys) and torch.equal(past[1], cache.layers[0].values)
    peer.load_state_dict(ours.state_dict(), strict=True)  # and the other way


def randomised_attention(dim: int, heads: int, seed: int, base: float = 10000.0) -> CachedSelfAttention:
    torch.manual_seed(seed)
    return CachedSelfAttention(dim, heads, base)


@given(
    heads=st.sampled_from([1, 2, 4]),
    cuts=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_attention_any_chunking_equals_one_call(heads: int, cuts: list[int], seed: int) -> None:
    attention = randomised_attention(16, heads, seed)
    x = gaussian(2, sum(cuts), 16, seed=seed)
    full, (keys, values) = attention(x)
    outputs, past, start = [], None, 0
    for size in cuts:
        out, past = attention(x[:, start : start + size], past)
        outputs.append(out)
        start += size
    assert torch.allclose(torch.cat(outputs, dim=1), full, atol=1e-5)
    assert torch.allclose(past[0], keys, atol=1e-5) and torch.allclose(past[1], values, atol=1e-6)


def test_attention_cache_holds_the_rotated_keys_and_the_plain_values() -> None:
    attention = randomised_attention(24, 2, seed=1, base=500.0)
    x = gaussian(2, 7, 24, seed=2)
    _, past = attention(x[:, :4])
    _, (keys, values) = attention(x[:, 4:], past)
    split = attention.k_proj(x).view(2, 7, 2, 12).transpose(1, 2)
    rotated, _ = apply_rope(split, split, torch.arange(7).expand(2, -1), 500.0)
    assert torch.allclose(keys, rotated, atol=1e-6)
    assert not torch.allclose(keys, split, atol=1e-2)
    assert torch.allclose(values, attention.v_proj(x).view(2, 7, 2, 12).transpose(1, 2), atol=1e-6)


def test_attention_is_causal_and_leaves_the_cache_unchanged() -> None:
    attention = randomised_attention(16, 2, seed=3)
    x = gaussian(1, 8, 16, seed=4)
    later = x.clone()
    later[:, 5:] = gaussian(1, 3, 16, seed=5)
    assert torch.allclose(attention(later)[0][:, :5], attention(x)[0][:, :5], atol=1e-6)
    _, past = attention(x[:, :6])
    saved = tuple(t.clone() for t in past)
    attention(x[:, 6:], past)
    assert all(torch.equal(a, b) for a, b in zip(past, saved, strict=True))


def test_attention_first_token_attends_only_to_itself() -> None:
    attention = randomised_attention(16, 2, seed=6)
    x = gaussian(3, 1, 16, seed=7)
    out, (keys, _) = attention(x)
    assert torch.allclose(out, attention.o_proj(attention.v_proj(x)), atol=1e-6)  # softmax over one key is 1
    assert torch.allclose(keys.transpose(1, 2).reshape(3, 1, 16), attention.k_proj(x), atol=1e-6)  # position 0: cos 1


def test_attention_contract_errors_and_parameters() -> None:
    for dim, heads in ((30, 4), (12, 4), (6, 2)):  # 30 % 4 ≠ 0; head_dim 3 and 3 are odd
        with pytest.raises(ValueError):
            CachedSelfAttention(dim, heads)
    attention = CachedSelfAttention(16, 4)
    assert {name: tuple(p.shape) for name, p in attention.state_dict().items()} == {
        f"{name}.weight": (16, 16) for name in ("q_proj", "k_proj", "v_proj", "o_proj")
    }

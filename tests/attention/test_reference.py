"""Properties of the chapter 02 references, on inputs hypothesis draws."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from xmodal_ref import attention


@st.composite
def attention_problems(draw):
    b, h, lq, lk, d = (draw(st.integers(1, n)) for n in (3, 3, 4, 6, 8))
    lengths = [draw(st.integers(1, lk)) for _ in range(b)]
    padding = torch.arange(lk)[None, :] >= torch.tensor(lengths)[:, None]
    generator = torch.Generator().manual_seed(draw(st.integers(0, 10_000)))
    q, k, v = (torch.randn(b, h, n, d, generator=generator) for n in (lq, lk, lk))
    return q, k, v, padding


@given(attention_problems())
def test_attention_matches_torch_with_the_opposite_mask_convention(problem) -> None:
    q, k, v, padding = problem
    out, weights = attention.scaled_dot_product_attention(q, k, v, padding)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]))
    assert bool((weights.masked_select(padding[:, None, None, :].expand_as(weights)) == 0).all())


@given(attention_problems(), st.sampled_from([1, 2, 4]))
def test_multi_head_cross_attention_matches_nn_multihead_attention(problem, heads) -> None:
    q, k, _, padding = problem
    generator = torch.Generator().manual_seed(q.numel())
    x_q, x_kv = (torch.randn(t.shape[0], t.shape[2], 4 * heads, generator=generator) for t in (q, k))
    module = attention.MultiHeadCrossAttention(4 * heads, heads).eval()
    torch_mha = nn.MultiheadAttention(4 * heads, heads, batch_first=True).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([module.q_proj.weight, module.k_proj.weight, module.v_proj.weight]))
        torch_mha.in_proj_bias.copy_(torch.cat([module.q_proj.bias, module.k_proj.bias, module.v_proj.bias]))
        torch_mha.out_proj.load_state_dict(module.out_proj.state_dict())
    out, weights = module(x_q, x_kv, padding)
    expected, expected_weights = torch_mha(x_q, x_kv, x_kv, key_padding_mask=padding, average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=1e-4)


def test_fully_padded_samples_get_zeros_and_finite_gradients() -> None:
    q, k, v = (torch.randn(2, 2, n, 4, requires_grad=True) for n in (3, 5, 5))
    padding = torch.tensor([[False] * 5, [True] * 5])
    out, weights = attention.scaled_dot_product_attention(q, k, v, padding)
    assert bool((out[1] == 0).all() and (weights[1] == 0).all())
    (out.sum() + weights.sum()).backward()
    assert all(bool(t.grad.isfinite().all()) for t in (q, k, v))


@settings(max_examples=8)
@given(st.integers(1, 300), st.integers(1, 3))
def test_resampler_output_length_is_fixed_and_its_queries_learn(length, batch) -> None:
    torch.manual_seed(length)
    resampler = attention.LearnedQueryResampler(num_queries=5, dim=8, num_heads=2, depth=2)
    out = resampler(torch.randn(batch, length, 8))
    assert out.shape == (batch, 5, 8)
    out.pow(2).sum().backward()
    assert resampler.queries.grad.abs().sum() > 0


def test_gated_block_is_the_identity_at_init_and_its_gates_get_gradients() -> None:
    torch.manual_seed(0)
    block = attention.GatedCrossAttentionBlock(8, 2)
    x, media = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    out = block(x, media)
    assert torch.equal(out, x)
    out.pow(2).sum().backward()
    assert block.attn_gate.grad.abs() > 0 and block.ff_gate.grad.abs() > 0


def test_cross_modal_block_handles_unaligned_lengths_and_ignores_padding() -> None:
    torch.manual_seed(0)
    block = attention.CrossModalBlock(8, 2)
    target, source = torch.randn(2, 3, 8), torch.randn(2, 11, 8)
    padding = torch.arange(11)[None, :] >= torch.tensor([[11], [4]])
    garbage = source.masked_fill(padding[..., None], 1e4)
    out = block(target, source, padding)
    assert out.shape == target.shape
    torch.testing.assert_close(out, block(target, garbage, padding))

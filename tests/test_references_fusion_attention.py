"""Properties of the chapter 01 (fusion) and 02 (attention) references, on inputs hypothesis draws."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from xmodal_ref import attention, fusion

settings.register_profile("xmodal", max_examples=40, deadline=None)
settings.load_profile("xmodal")

dims_lists = st.lists(st.integers(1, 4), min_size=2, max_size=4)


@given(dims_lists, st.integers(1, 3), st.integers(0, 10_000))
def test_tensor_fusion_is_the_chained_outer_product_and_keeps_every_unimodal_term(dims, batch, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    features = [torch.randn(batch, d, generator=generator, dtype=torch.float64) for d in dims]
    fused = fusion.tensor_fusion(features)
    assert fused.shape == (batch, math.prod(d + 1 for d in dims))
    grid = fused.view(batch, *(d + 1 for d in dims))
    for i, z in enumerate(features):  # z_i sits where every other modality takes its appended 1
        index = [slice(None)] + [-1] * len(dims)
        index[1 + i] = slice(0, dims[i])
        torch.testing.assert_close(grid[tuple(index)], z)
    assert bool((grid[(slice(None), *[-1] * len(dims))] == 1).all())


@given(dims_lists, st.integers(1, 4), st.integers(1, 5), st.integers(0, 10_000))
def test_low_rank_fusion_equals_tfn_with_the_rank_r_weight(dims, rank, output_dim, seed) -> None:
    torch.manual_seed(seed)
    module = fusion.LowRankFusion(dims, output_dim, rank).double()
    with torch.no_grad():
        module.bias.normal_()
    features = [torch.randn(3, d, dtype=torch.float64) for d in dims]
    weight = module.factors[0]  # (R, d_0 + 1, O)
    for factor in module.factors[1:]:
        weight = (weight[:, :, None, :] * factor[:, None, :, :]).flatten(1, 2)
    expected = fusion.tensor_fusion(features) @ weight.sum(dim=0) + module.bias
    torch.testing.assert_close(module(features), expected)
    assert sum(p.numel() for p in module.parameters()) == rank * output_dim * sum(d + 1 for d in dims) + output_dim


@given(st.integers(2, 4), st.integers(1, 5), st.integers(0, 10_000))
def test_gmu_output_is_a_convex_combination_of_the_tanh_projections(m, hidden, seed) -> None:
    torch.manual_seed(seed)
    dims = list(range(2, 2 + m))
    module = fusion.GatedMultimodalUnit(dims, hidden)
    features = [torch.randn(4, d) for d in dims]
    projections = torch.stack([torch.tanh(p(x)) for p, x in zip(module.projections, features, strict=True)])
    out = module(features)
    assert bool((out >= projections.amin(0) - 1e-6).all() and (out <= projections.amax(0) + 1e-6).all())


@given(st.floats(0.05, 0.9), st.integers(2, 4))
def test_modality_dropout_keeps_the_expectation_and_never_drops_everything(p, m) -> None:
    torch.manual_seed(0)
    features = [torch.ones(20_000, 2) for _ in range(m)]
    out = fusion.modality_dropout(features, p, training=True)
    kept = torch.stack([o[:, 0] > 0 for o in out], dim=1)
    assert bool(kept.any(dim=1).all())
    for o in out:
        assert abs(o.mean().item() - 1.0) < 0.05
    assert fusion.modality_dropout(features, p, training=False) == features


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

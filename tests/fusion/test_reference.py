"""Properties of the chapter 01 references, on inputs hypothesis draws."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from xmodal_ref import fusion

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

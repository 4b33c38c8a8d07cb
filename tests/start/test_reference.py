"""Properties of the chapter 00 reference, on inputs hypothesis draws."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from xmodal_ref.start import cosine_similarity_matrix


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 8), st.integers(0, 10_000))
def test_cosine_similarity_is_bounded_and_scale_free(n, m, d, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=generator, dtype=torch.float64)
    b = torch.randn(m, d, generator=generator, dtype=torch.float64)
    similarity = cosine_similarity_matrix(a, b)
    assert similarity.shape == (n, m) and bool((similarity.abs() <= 1 + 1e-12).all())
    assert torch.allclose(similarity, cosine_similarity_matrix(3.0 * a, 0.5 * b))

"""Chapter 00 · start: the warm-up exercise's reference.

Self-contained (it needs only ``torch`` and ``torch.nn.functional``), because its source is copied
verbatim into the worked-solution notebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """All-pairs cosine similarity between the rows of ``a`` (N, D) and ``b`` (M, D).

    Returns an (N, M) tensor whose entry (i, j) is a_i·b_j / (max(‖a_i‖, eps) · max(‖b_j‖, eps)),
    so a zero row gives similarities of 0, never NaN. Same dtype and device as the inputs.
    """
    a_unit = F.normalize(a, dim=-1, eps=eps)  # (N, D)
    b_unit = F.normalize(b, dim=-1, eps=eps)  # (M, D)
    return a_unit @ b_unit.T  # (N, M)

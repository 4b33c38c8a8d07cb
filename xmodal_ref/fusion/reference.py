"""Chapter 01 · fusion: tensor fusion, low-rank fusion, gated fusion and modality dropout.

Every public function here is the reference for one graded exercise. Each is self-contained
(it needs only ``math``, ``torch``, ``torch.nn`` and ``torch.nn.functional``), because its source
is copied verbatim into the worked-solution notebook.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def tensor_fusion(features: list[torch.Tensor]) -> torch.Tensor:
    """Tensor Fusion of TFN (Zadeh et al. 2017, arXiv:1707.07250).

    features: M ≥ 2 tensors of shape (B, d_i).
    Returns (B, Π_i (d_i + 1)): the outer product of the vectors [z_i ; 1] (the 1 appended last),
    flattened with the first modality as the slowest-varying axis, exactly as chaining
    ``einsum('bi,bj->bij')`` and then ``reshape(B, -1)``. The 1s keep every unimodal and
    lower-order term alongside the M-way products.
    """
    fused = None
    for z in features:
        z1 = torch.cat([z, z.new_ones(z.shape[0], 1)], dim=-1)  # (B, d_i + 1)
        fused = z1 if fused is None else (fused[:, :, None] * z1[:, None, :]).flatten(1)  # (B, Π so far)
    return fused


class LowRankFusion(nn.Module):
    """Low-rank Multimodal Fusion of LMF (Liu et al. 2018, arXiv:1806.00064).

    Parameters: ``factors[i]`` of shape (rank, d_i + 1, output_dim), one per modality, and
    ``bias`` of shape (output_dim,). forward(features) takes M tensors (B, d_i) and returns
    (B, output_dim) = Σ_r Π_i ([z_i ; 1] @ factors[i][r]) + bias: the same map as
    ``tensor_fusion(features) @ W + bias`` with the rank-R weight W = Σ_r ⊗_i factors[i][r],
    at a cost linear, not exponential, in the number of modalities.
    """

    def __init__(self, input_dims: list[int], output_dim: int, rank: int) -> None:
        super().__init__()
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(rank, d + 1, output_dim) / math.sqrt(d + 1)) for d in input_dims
        )
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        product = None
        for z, factor in zip(features, self.factors, strict=True):
            z1 = torch.cat([z, z.new_ones(z.shape[0], 1)], dim=-1)  # (B, d_i + 1)
            projected = torch.einsum("bd,rdo->rbo", z1, factor)  # (R, B, O)
            product = projected if product is None else product * projected
        return product.sum(dim=0) + self.bias  # (B, O)


class GatedMultimodalUnit(nn.Module):
    """Gated Multimodal Unit (Arevalo et al. 2017, arXiv:1702.01992).

    Submodules, all ``bias=False`` as in the paper: ``projections[i] = nn.Linear(d_i, hidden_dim)``
    and ``gate = nn.Linear(Σ_i d_i, hidden_dim)`` for two modalities, or
    ``nn.Linear(Σ_i d_i, M · hidden_dim)`` for M > 2.
    forward(features) takes M tensors (B, d_i) and returns (B, hidden_dim):
      h_i = tanh(projections[i](x_i));  the gate reads the concatenated inputs x = [x_1; …; x_M].
      M = 2: z = sigmoid(gate(x)) and the result is z ⊙ h_1 + (1 − z) ⊙ h_2.
      M > 2: z = softmax over the modality axis of gate(x).view(B, M, hidden_dim); the result is Σ_i z_i ⊙ h_i.
    """

    def __init__(self, input_dims: list[int], hidden_dim: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(d, hidden_dim, bias=False) for d in input_dims)
        gates = 1 if len(input_dims) == 2 else len(input_dims)
        self.gate = nn.Linear(sum(input_dims), gates * hidden_dim, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        hidden = torch.stack([torch.tanh(p(x)) for p, x in zip(self.projections, features, strict=True)], 1)
        logits = self.gate(torch.cat(features, dim=-1))  # (B, gates · H)
        if len(features) == 2:
            z = torch.sigmoid(logits)  # (B, H)
            return z * hidden[:, 0] + (1 - z) * hidden[:, 1]
        z = torch.softmax(logits.view(hidden.shape), dim=1)  # (B, M, H)
        return (z * hidden).sum(dim=1)


def modality_dropout(features: list[torch.Tensor], p: float, training: bool) -> list[torch.Tensor]:
    """Drop whole modalities per sample during training, so the model learns to do without them.

    features: M tensors (B, …) sharing the batch axis. Outside training, or with p = 0, the
    inputs come back unchanged. In training, each (sample, modality) is dropped independently
    with probability p; a sample that would lose every modality keeps one, chosen uniformly at
    random. Rescaling rule: a modality is then kept with probability q = (1 − p) + p^M / M, so
    every kept modality is multiplied by 1/q and dropped ones are zeros: E[output] = input.
    Returns a new list of M tensors (the inputs are not modified).
    """
    if not training or p == 0:
        return list(features)
    m, batch, device = len(features), features[0].shape[0], features[0].device
    keep = torch.rand(batch, m, device=device) >= p  # (B, M)
    rescue = torch.randint(m, (batch,), device=device)  # (B,) the modality kept when all are dropped
    keep |= (~keep.any(dim=1, keepdim=True)) & (torch.arange(m, device=device) == rescue[:, None])
    scale = 1.0 / ((1 - p) + p**m / m)
    return [x * (keep[:, i].view(-1, *[1] * (x.dim() - 1)).to(x.dtype) * scale) for i, x in enumerate(features)]

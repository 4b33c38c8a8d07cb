"""Chapter 03 · contrastive: CLIP and SigLIP losses, retrieval metrics, zero-shot, modality gap.

Every public function here is the reference for one graded exercise. Each is self-contained
(it needs only ``math``, ``torch``, ``torch.nn`` and ``torch.nn.functional``), because its source
is copied verbatim into the worked-solution notebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021, arXiv:2103.00020).

    image_features, text_features: (N, D), already L2-normalised; row i of each is a pair.
    logit_scale: the multiplier s = exp(t) (a float or a 0-dim tensor that may require grad).
    Returns a 0-dim tensor: ½·[CE(s·I·Tᵀ, arange N) + CE(s·T·Iᵀ, arange N)], each CE a batch mean.
    """
    logits_per_image = logit_scale * image_features @ text_features.T  # (N, N)
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)  # (N,)
    image_to_text = F.cross_entropy(logits_per_image, targets)
    text_to_image = F.cross_entropy(logits_per_image.T, targets)
    return (image_to_text + text_to_image) / 2


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    logit_bias: float | torch.Tensor,
) -> torch.Tensor:
    """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023, arXiv:2303.15343).

    image_features, text_features: (N, D), already L2-normalised.
    Returns −(1/N) Σ_i Σ_j log σ(z_ij · (logit_scale · x_i·y_j + logit_bias)) as a 0-dim tensor,
    where z_ij = +1 on the diagonal (matching pairs) and −1 elsewhere.
    """
    logits = logit_scale * image_features @ text_features.T + logit_bias  # (N, N)
    n = logits.shape[0]
    signs = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1  # (N, N): +1 diag, −1 off
    return -F.logsigmoid(signs * logits).sum() / n


def recall_at_k(similarity: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """Recall@K for retrieval with one or more correct gallery items per query.

    similarity: (Q, G) scores, higher is better. positives: bool (Q, G), ≥ 1 True per row.
    The rank of gallery item g for query q is the number of gallery items scoring strictly
    higher than g (so tied items share the better rank). A query is a hit when its best-ranked
    positive has rank < k. Returns the fraction of queries that hit, as a Python float.
    """
    # Rank falls as similarity rises, so the best-ranked positive is the highest-scoring one.
    best_positive = similarity.masked_fill(~positives, -math.inf).amax(dim=1, keepdim=True)  # (Q, 1)
    rank = (similarity > best_positive).sum(dim=1)  # (Q,)
    return (rank < k).double().mean().item()


class LearnableLogitScale(nn.Module):
    """CLIP's learnable temperature, stored in log space.

    Holds one 0-dim parameter ``log_scale`` = log(init_scale), with CLIP's init_scale = 1/0.07.
    forward() returns the multiplier exp(min(log_scale, log max_scale)), a 0-dim tensor: the
    clamp keeps logits bounded (CLIP caps the scale at 100) and passes no gradient while active.
    """

    def __init__(self, init_scale: float = 1 / 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.max_log_scale = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()


def zero_shot_logits(
    image_features: torch.Tensor, prompt_embeddings: torch.Tensor, logit_scale: float = 100.0
) -> torch.Tensor:
    """Zero-shot classification logits with prompt ensembling, as in CLIP.

    image_features: (N, D). prompt_embeddings: (C, P, D), P prompt templates per class.
    Each image and each prompt embedding is L2-normalised; a class vector is the mean of its
    normalised prompt embeddings, normalised again. Returns logit_scale · img @ classesᵀ, (N, C).
    """
    images = F.normalize(image_features, dim=-1)  # (N, D)
    prompts = F.normalize(prompt_embeddings, dim=-1)  # (C, P, D)
    classes = F.normalize(prompts.mean(dim=1), dim=-1)  # (C, D)
    return logit_scale * images @ classes.T  # (N, C)


def modality_gap(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """The modality gap of Liang et al. 2022 (arXiv:2203.02053).

    image_features: (N, D); text_features: (M, D); they need not be normalised or paired.
    Returns ‖mean_i x̂_i − mean_j ŷ_j‖₂ (a 0-dim tensor), where x̂ = x/‖x‖ is the L2-normalised
    embedding: the distance between the two modalities' centroids on the unit sphere.
    """
    image_centroid = F.normalize(image_features, dim=-1).mean(dim=0)  # (D,)
    text_centroid = F.normalize(text_features, dim=-1).mean(dim=0)  # (D,)
    return torch.linalg.vector_norm(image_centroid - text_centroid)

"""Matplotlib helpers: the figure factory every plot of the package uses, and the contrastive chapter's
training curve, similarity matrix and modality-gap plots.

Each helper returns a ``matplotlib.figure.Figure`` and never calls ``plt.show()``. The figure is
closed in pyplot before it is returned, so a notebook shows it once, when it is the cell's value
(``fig = plot_...(...)`` shows nothing until ``fig`` is displayed), and ``fig.savefig`` still works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def closed_subplots(*grid: int, **kwargs: Any) -> tuple[Figure, Any]:
    """``plt.subplots(*grid, layout="constrained", **kwargs)``, closed in pyplot before it is returned.

    Every plotting helper of the package builds its figure here, so the inline backend never shows
    a figure by itself: a notebook shows it once, as a cell's value or through ``display``.
    """
    fig, axes = plt.subplots(*grid, layout="constrained", **kwargs)
    plt.close(fig)
    return fig, axes


def plot_training_curve(losses: Sequence[float], title: str = "Training loss") -> Figure:
    """The loss of every step (faint) and its moving average over ~5% of the steps (solid)."""
    values = np.asarray(losses, dtype=float)  # (T,)
    window = max(1, len(values) // 20)
    cumulative = np.cumsum(np.insert(values, 0, 0.0))  # (T + 1,)
    smoothed = (cumulative[window:] - cumulative[:-window]) / window  # (T - window + 1,)

    fig, ax = closed_subplots(figsize=(6, 3.5))
    ax.plot(values, alpha=0.3, linewidth=1, label="per step")
    ax.plot(np.arange(window - 1, len(values)), smoothed, linewidth=2, label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    return fig


def plot_similarity(
    similarity: torch.Tensor,
    captions: Sequence[str] | None = None,
    max_items: int = 12,
    title: str = "Similarity",
) -> Figure:
    """Heat map of the top-left ``max_items`` × ``max_items`` block of a (Q, G) similarity matrix, values written in.

    Rows are queries (e.g. images) and columns gallery items (e.g. captions). ``captions``, when
    given, are listed beside the map under their column numbers (rotated tick labels would run together);
    with paired data, row i is the query matched to caption i.
    """
    block = similarity[:max_items, :max_items].detach().cpu().float().numpy()  # (q, g)
    q, g = block.shape

    if captions is None:
        fig, ax = closed_subplots(figsize=(5.5, 4.5))
    else:
        fig, (ax, listing) = closed_subplots(1, 2, figsize=(10, 4.8), width_ratios=(1, 0.75))
        listing.axis("off")
        listing.set_title("captions (columns)", loc="left", fontsize=10)
        for j, caption in enumerate(captions[:g]):
            listing.text(0, 1 - (j + 0.5) / g, f"{j}: {caption}", va="center", fontsize=9, transform=listing.transAxes)
    image = ax.imshow(block, cmap="viridis")
    fig.colorbar(image, ax=ax, shrink=0.8)
    middle = (block.max() + block.min()) / 2
    for (i, j), value in np.ndenumerate(block):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="k" if value > middle else "w")
    ax.set_xticks(range(g))
    ax.set_yticks(range(q))
    ax.set(xlabel="gallery item" if captions is None else "caption", ylabel="query", title=title)
    return fig


def plot_embeddings_2d(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    pairs: int = 8,
    ax: Axes | None = None,
    legend: bool = True,
) -> Figure:
    """Both modalities in one 2-D PCA plane: the picture of the modality gap.

    image_embeddings: (N, D); text_embeddings: (M, D); row i of each is a matched pair. Both are
    L2-normalised, then projected onto the top two principal directions of their union (centred),
    so distances in the plot are comparable across modalities. Lines join the first ``pairs``
    matched pairs; crosses mark the two centroids. The title gives the modality gap
    ‖mean x̂ − mean ŷ‖, measured in the full D dimensions before projection. Draws into ``ax`` when
    given (and returns its figure), so that several such panels can share one figure (and, with
    ``legend=False``, one legend built from any panel's handles).
    """
    images = F.normalize(image_embeddings.detach().cpu().double(), dim=-1)  # (N, D)
    texts = F.normalize(text_embeddings.detach().cpu().double(), dim=-1)  # (M, D)
    gap = torch.linalg.vector_norm(images.mean(dim=0) - texts.mean(dim=0)).item()

    union = torch.cat([images, texts])  # (N + M, D)
    centred = union - union.mean(dim=0)
    _, singular_values, right = torch.linalg.svd(centred, full_matrices=False)  # right: (D, D)
    explained = singular_values**2 / (singular_values**2).sum()  # variance share per direction
    points = (centred @ right[:2].T).numpy()  # (N + M, 2)
    image_points, text_points = points[: len(images)], points[len(images) :]

    fig, ax = closed_subplots(figsize=(6, 5.5)) if ax is None else (ax.figure, ax)
    modalities = (("image", image_points, "tab:blue"), ("text", text_points, "tab:orange"))
    for name, xy, colour in modalities:
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.4, color=colour, label=f"{name} embeddings")
    for i in range(min(pairs, len(image_points), len(text_points))):
        ax.plot(*zip(image_points[i], text_points[i], strict=True), color="black", linewidth=1)
    for name, xy, colour in modalities:
        centroid = xy.mean(axis=0)  # the projection is linear, so this is the projected centroid
        ax.scatter(*centroid, s=200, marker="X", color=colour, edgecolor="k", label=f"{name} mean")
    ax.set(
        xlabel=f"PC1 ({100 * explained[0]:.0f}% of variance)",
        ylabel=f"PC2 ({100 * explained[1]:.0f}% of variance)",
        title=f"Joint PCA of both modalities · modality gap {gap:.3f}",
        aspect="equal",
    )
    if legend:
        ax.legend(fontsize=8)
    return fig

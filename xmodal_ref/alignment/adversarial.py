"""Chapter 04 · adversarial alignment: a modality discriminator trained through gradient reversal.

The experiment: a mini-CLIP dual encoder (``xmodal_ref.contrastive.mini_clip.MiniClip``) learns the shapes
data with CLIP's contrastive loss while a small MLP, the *modality discriminator*, learns to tell
image embeddings from caption embeddings. The discriminator reads the embeddings through
``gradient_reversal`` (Ganin & Lempitsky 2015, arXiv:1409.7495), so one backward pass trains it to
separate the modalities and pushes both encoders, with weight λ, to make them inseparable, as
modality classifiers do in adversarial cross-modal retrieval (ACMR, Wang et al., ACM MM 2017).
``adversarial=False`` is the control: the same discriminator trains on the same embeddings with
λ = 0, so it watches the encoders without ever pushing them.

What it measures, on held-out renders, with and without the adversarial term: the co-trained
discriminator's accuracy; the accuracy of *fresh* probes fitted to the frozen embeddings; the
modality gap; cross-modal R@1 both ways. The lesson lies in comparing them. The co-trained
discriminator can sit at chance while a fresh probe still tells the modalities apart almost
perfectly: the encoders learned to fool one moving opponent, not to make the two distributions
equal (and below 50 % it is fooled the other way round: the modalities are still apart). Matching
the distributions would not align pairs anyway: retrieval comes from the contrastive loss, which
has no stake in where each modality's centroid sits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from xmodal_ref.alignment import gradient_reversal
from xmodal_ref.common.device import default_device, one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots, plot_embeddings_2d
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.common.training import train_one_cycle
from xmodal_ref.contrastive import clip_loss
from xmodal_ref.contrastive.mini_clip import MiniClip, embed, retrieval_metrics
from xmodal_ref.data import shapes_splits

EMBED_DIM = 64
EPOCHS = 3
BATCH_SIZE = 128
MAX_LR = 3e-3
PROBE_STEPS = 300
PROBE_LR = 1e-2


class ModalityDiscriminator(nn.Module):
    """A one-hidden-layer MLP: (B, D) embeddings → (B,) logits of P(image | embedding)."""

    def __init__(self, embed_dim: int = EMBED_DIM, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.mlp(embeddings).squeeze(-1)  # (B,)


def ganin_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky's adaptation weight λ = 2 / (1 + exp(−γ·progress)) − 1.

    progress ∈ [0, 1] is the fraction of training done: λ rises from 0, while the discriminator is
    still guessing and its gradient is noise, to nearly 1 (0.9999 at progress 1 with γ = 10).
    """
    return 2 / (1 + math.exp(-gamma * progress)) - 1


Reversal = Callable[[torch.Tensor, float], torch.Tensor]


def discriminate(
    discriminator: nn.Module,
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    lambd: float = 0.0,
    reversal: Reversal = gradient_reversal,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's logits for both modalities, read through ``reversal(·, lambd)``.

    image_embeddings: (N, D); text_embeddings: (M, D). Returns logits (N + M,), images first, and
    float labels (N + M,): 1 for an image, 0 for a caption. The binary cross-entropy of the two
    trains the discriminator as usual and, through the gradient reversal layer, sends −lambd times
    its gradient to the embeddings.
    """
    embeddings = torch.cat([image_embeddings, text_embeddings])  # (N + M, D)
    logits = discriminator(reversal(embeddings, lambd))  # (N + M,)
    labels = torch.cat([logits.new_ones(len(image_embeddings)), logits.new_zeros(len(text_embeddings))])
    return logits, labels


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of logits on the side of 0 that their 0/1 label names, as a Python float."""
    return ((logits > 0) == labels.bool()).double().mean().item()


def probe_accuracy(
    make_probe: Callable[[], nn.Module],
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    steps: int = PROBE_STEPS,
    lr: float = PROBE_LR,
) -> float:
    """Two-fold cross-validated accuracy of fresh modality probes on frozen embeddings.

    image_embeddings, text_embeddings: (N, D), row i of each a pair; both halves of the pairs
    take a turn as the fitting set. Each fold builds a probe with ``make_probe()`` (a module
    (B, D) → (B,) logits), fits it full-batch with Adam for ``steps`` steps, and scores it on the
    other half. Returns the accuracy over all 2N held-out embeddings: 0.5 is chance, and a value
    far from 0.5 on either side means the modalities are separable.
    """
    half = len(image_embeddings) // 2
    folds = (slice(0, half), slice(half, None))
    correct = 0.0
    for fit, held_out in (folds, folds[::-1]):
        probe = make_probe().to(image_embeddings.device)
        optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                loss = F.binary_cross_entropy_with_logits(
                    *discriminate(probe, image_embeddings[fit], text_embeddings[fit])
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            logits, labels = discriminate(probe, image_embeddings[held_out], text_embeddings[held_out])
        correct += accuracy(logits, labels) * len(labels)
    return correct / (2 * len(image_embeddings))


@memoised
def train_adversarial_alignment(
    seed: int = 0,
    adversarial: bool = True,
    *,
    reversal: Reversal = gradient_reversal,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict:
    """Train a MiniClip with CLIP's loss plus a modality discriminator on ``shapes_splits(seed)``.

    Every step minimises clip_loss + BCE(discriminator), the discriminator reading the normalised
    embeddings of the batch's images and captions through ``reversal(·, λ)`` (the reference
    ``gradient_reversal`` by default, or a learner's), where
    λ = ``ganin_lambda(step / total_steps)`` when ``adversarial`` and 0 otherwise (the control run:
    the discriminator still trains, but no gradient of it reaches the encoders). The schedule,
    optimiser and initialisation match ``train_mini_clip``'s, and both runs under one seed start
    from the same weights and see the same batches. Runs on one CPU thread (``one_thread``), so
    results are deterministic under ``seed`` on a device.

    Returns a dict with "adversarial", "seed", "epochs"; on the held-out "test" split, every key of
    ``retrieval_metrics`` (R@1 and R@5 both ways, the modality gap after and before training, the
    embeddings on the CPU), "discriminator_accuracy" (the co-trained discriminator),
    "probe_accuracy" and "linear_probe_accuracy" (``probe_accuracy`` of fresh
    ``ModalityDiscriminator``s and of fresh linear probes); "history", per training step:
    {"clip_loss", "discriminator_loss", "discriminator_accuracy" (on the batch), "lambda"}; the
    "test" split, the "model" and the "discriminator"; "seconds", the wall time of the whole call.
    """
    start = time.perf_counter()
    device = default_device() if device is None else torch.device(device)
    with one_thread():
        generator = seed_everything(seed)
        splits = shapes_splits(seed)
        train, test = splits["train"], splits["test"]
        images, tokens, lengths = (t.to(device) for t in (train.images, train.tokens, train.lengths))

        model = MiniClip(len(train.vocab), embed_dim=EMBED_DIM, image_size=train.images.shape[-1]).to(device)
        discriminator = ModalityDiscriminator(EMBED_DIM).to(device)
        initial = embed(model, test, device)  # (image (N, D), text (N, D)) before training
        history: dict[str, list[float]] = {
            "clip_loss": [],
            "discriminator_loss": [],
            "discriminator_accuracy": [],
            "lambda": [],
        }

        def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
            lambd = ganin_lambda(done) if adversarial else 0.0
            batch = batch.to(device)  # (B,)
            image_features, text_features, logit_scale = model(images[batch], tokens[batch], lengths[batch])
            task_loss = clip_loss(image_features, text_features, logit_scale)
            logits, labels = discriminate(discriminator, image_features, text_features, lambd, reversal)
            discriminator_loss = F.binary_cross_entropy_with_logits(logits, labels)
            history["clip_loss"].append(task_loss.item())
            history["discriminator_loss"].append(discriminator_loss.item())
            history["discriminator_accuracy"].append(accuracy(logits, labels))
            history["lambda"].append(lambd)
            return task_loss + discriminator_loss

        model.train()
        train_one_cycle(
            [*model.parameters(), *discriminator.parameters()],
            len(train),
            loss_of_batch,
            epochs=epochs,
            batch_size=batch_size,
            generator=generator,
            max_lr=MAX_LR,
            description="adversarial alignment" if adversarial else "CLIP + passive discriminator",
            progress=progress,
        )

        image_embeddings, text_embeddings = embed(model, test, device)  # (N, D) each, CPU
        with torch.no_grad():
            logits, labels = discriminate(discriminator, image_embeddings.to(device), text_embeddings.to(device))
        discriminator_accuracy = accuracy(logits, labels)
        probes = {
            "probe_accuracy": lambda: ModalityDiscriminator(EMBED_DIM),
            "linear_probe_accuracy": lambda: nn.Sequential(nn.Linear(EMBED_DIM, 1), nn.Flatten(0)),  # → (B,) logits
        }
        probe_accuracies = {
            name: probe_accuracy(make_probe, image_embeddings, text_embeddings) for name, make_probe in probes.items()
        }

    return {
        "adversarial": adversarial,
        "seed": seed,
        "epochs": epochs,
        **retrieval_metrics(test, (image_embeddings, text_embeddings), initial),
        "discriminator_accuracy": discriminator_accuracy,
        **probe_accuracies,
        "history": history,
        "test": test,
        "model": model,
        "discriminator": discriminator,
        "seconds": time.perf_counter() - start,
    }


def format_adversarial_table(with_result: dict, without_result: dict) -> str:
    """A Markdown table: one row per measurement, one column per run (without, then with the GRL).

    Accuracies are in percent of the held-out embeddings of both modalities (chance is 50 %).
    """
    runs = (without_result, with_result)

    def row(name: str, cell: Callable[[dict], str]) -> str:
        return f"| {name} | " + " | ".join(cell(run) for run in runs) + " |"

    def percent(key: str) -> Callable[[dict], str]:
        return lambda run: f"{100 * run[key]:.1f} %"

    def recall(key: str) -> Callable[[dict], str]:
        return lambda run: f"{run[key]:.3f}"

    return "\n".join(
        [
            "| held-out test split | CLIP loss only (λ = 0) | CLIP loss + GRL adversary |",
            "|---|---:|---:|",
            row("co-trained discriminator accuracy", percent("discriminator_accuracy")),
            row("fresh MLP probe accuracy (2-fold CV)", percent("probe_accuracy")),
            row("fresh linear probe accuracy (2-fold CV)", percent("linear_probe_accuracy")),
            row(
                "modality gap, before → after",
                lambda run: f"{run['initial_modality_gap']:.3f} → {run['modality_gap']:.3f}",
            ),
            row("R@1 image → text", recall("r1_i2t")),
            row("R@1 text → image", recall("r1_t2i")),
            row("wall time (s)", lambda run: f"{run['seconds']:.1f}"),
        ]
    )


def plot_modalities(with_result: dict, without_result: dict, pairs: int = 8) -> Figure:
    """Joint 2-D PCA of both modalities' test embeddings (``plot_embeddings_2d``), in three panels.

    Panels: before training (both runs start from the same weights), then after training without
    and with the adversarial term. Each panel has its own PCA plane; its title gives the modality
    gap in the full dimension. Raises ValueError when the runs do not share a seed.
    """
    if with_result["seed"] != without_result["seed"]:
        raise ValueError(f"the runs used seeds {with_result['seed']} and {without_result['seed']}; pass one seed's")
    panels = (
        ("before training", without_result["initial_image_embeddings"], without_result["initial_text_embeddings"]),
        ("CLIP loss only", without_result["image_embeddings"], without_result["text_embeddings"]),
        ("CLIP loss + GRL adversary", with_result["image_embeddings"], with_result["text_embeddings"]),
    )
    fig, axes = closed_subplots(1, len(panels), figsize=(16, 5.5))
    for ax, (name, image_embeddings, text_embeddings) in zip(axes, panels, strict=True):
        plot_embeddings_2d(image_embeddings, text_embeddings, pairs, ax=ax, legend=False)
        ax.set_title(f"{name}\n{ax.get_title()}", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=9)
    return fig


def plot_discriminator_game(with_result: dict, without_result: dict) -> Figure:
    """The co-trained discriminator during training: its batch accuracy per step, and λ.

    Accuracies are smoothed over ~5 % of the steps. Without the adversary the discriminator soon
    separates the modalities; with it, the encoders drag its accuracy to chance and often below:
    they overshoot, and a discriminator that is confidently wrong still tells the modalities apart.
    """
    fig, (game, weight) = closed_subplots(1, 2, figsize=(11, 3.8))
    for name, result in (("CLIP loss only", without_result), ("CLIP loss + GRL adversary", with_result)):
        values = np.asarray(result["history"]["discriminator_accuracy"])  # (T,)
        window = max(1, len(values) // 20)
        smoothed = np.convolve(values, np.ones(window) / window, mode="valid")  # (T − window + 1,)
        game.plot(np.arange(window - 1, len(values)), 100 * smoothed, label=name)
        weight.plot(result["history"]["lambda"], label=name)
    game.axhline(50, color="k", linestyle="--", linewidth=1, label="chance")
    game.set(xlabel="step", ylabel="accuracy (%)", title="co-trained discriminator, training batches", ylim=(0, 102))
    weight.set(xlabel="step", ylabel="λ", title="gradient-reversal weight λ (Ganin's schedule)")
    for ax in (game, weight):
        ax.legend(fontsize=8)
    return fig

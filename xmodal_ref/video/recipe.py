"""Chapter 08 recipe: averaging frames cannot see motion; audio resolves what vision cannot.

The data (``xmodal_ref.data.video``): four classes, motion direction × audio tone, where every "left" clip is
exactly a "right" clip played backwards. Five classifiers share their parts:

* the video encoder ``FrameEncoder``: a per-frame CNN (conv 1→8, a residual conv 8→8, max-pool, conv 8→16,
  global max pool) whose frame features are averaged over time (TSN's consensus). In the TSM variants
  the residual branch first applies ``temporal_shift(·, T, fold_div=4)``, so each frame sees a quarter of
  its neighbours' channels: the network can compare frame t with t ± 1, i.e. see motion.
* the audio encoder ``SpectrogramEncoder``: an MLP on each spectrogram frame, averaged over time.
* a linear head on the concatenation of the encoders' features (late fusion by concatenation).

What it shows: the frame-averaging model is at chance (frame order is all that tells the directions apart,
and averaging discards it); TSM video alone finds the direction but not the tone, audio alone the tone but
not the direction, each ≈ 50 %; only TSM + audio gets both. The confusion matrices show which factor each
model misses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from xmodal_ref.common.device import default_device, one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.common.training import train_one_cycle
from xmodal_ref.data.video import AUDIO_BINS, CLASSES, VideoAudioClips, video_splits
from xmodal_ref.video.reference import temporal_shift

Shift = Callable[[torch.Tensor, int, int], torch.Tensor]  # temporal_shift(x, n_segment, fold_div)

FOLD_DIV = 4
FEATURES = 16  # width of each encoder's output
EPOCHS = 10
BATCH_SIZE = 64
MAX_LR = 3e-3
# Model id → (display name, uses video, shifts frames, uses audio), in the order of every table.
MODELS: dict[str, tuple[str, bool, bool, bool]] = {
    "frame_avg": ("frame-avg video", True, False, False),
    "tsm": ("TSM video", True, True, False),
    "audio": ("audio only", False, False, True),
    "frame_avg_audio": ("frame-avg + audio", True, False, True),
    "tsm_audio": ("TSM + audio", True, True, True),
}


class FrameEncoder(nn.Module):
    """Per-frame CNN with TSN's average consensus: video (B, T, 1, H, W) → features (B, FEATURES).

    Each frame's map is reduced by a global max pool: the square covers a sixteenth of the frame, and an
    average over the frame dilutes its motion features so much that learning direction stalls for most of
    the ten epochs (measured: TSM + audio stayed at ≈ 0.5 on seeds 0–2 with an average pool).
    With ``shift`` given, the residual conv reads ``shift(x, T, FOLD_DIV)`` instead of x (TSM's residual
    shift); without it, every frame is encoded alone and the model cannot tell the frames' order.
    """

    def __init__(self, shift: Shift | None = None) -> None:
        super().__init__()
        self.shift = shift
        self.stem = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.residual = nn.Conv2d(8, 8, kernel_size=3, padding=1)
        self.out = nn.Conv2d(8, FEATURES, kernel_size=3, padding=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        x = F.relu(self.stem(video.flatten(0, 1)))  # (B*T, 8, H, W), row b*T + t is frame t of clip b
        mixed = x if self.shift is None else self.shift(x, t, FOLD_DIV)
        x = F.max_pool2d(F.relu(x + self.residual(mixed)), 2)  # (B*T, 8, H/2, W/2)
        frames = F.relu(self.out(x)).amax(dim=(2, 3))  # (B*T, FEATURES)
        return frames.unflatten(0, (b, t)).mean(dim=1)  # (B, FEATURES)


class SpectrogramEncoder(nn.Module):
    """An MLP on each spectrogram frame, averaged over time: audio (B, F, AUDIO_BINS) → (B, FEATURES)."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(AUDIO_BINS, hidden), nn.ReLU(), nn.Linear(hidden, FEATURES), nn.ReLU())

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.mlp(audio).mean(dim=1)  # (B, FEATURES)


class ClipClassifier(nn.Module):
    """The encoders a model uses, their features concatenated, a linear head: logits (B, len(CLASSES))."""

    def __init__(self, video: bool, audio: bool, shift: Shift | None = None) -> None:
        super().__init__()
        self.frames = FrameEncoder(shift) if video else None
        self.spectrogram = SpectrogramEncoder() if audio else None
        self.head = nn.Linear(FEATURES * (video + audio), len(CLASSES))

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        features = []
        if self.frames is not None:
            features.append(self.frames(video))
        if self.spectrogram is not None:
            features.append(self.spectrogram(audio))
        return self.head(torch.cat(features, dim=1))  # (B, len(CLASSES))


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """(len(CLASSES), len(CLASSES)) int64 counts: row = true class, column = predicted class."""
    k = len(CLASSES)
    return torch.bincount(k * labels + predictions, minlength=k * k).reshape(k, k)


def _scores(labels: torch.Tensor, predictions: torch.Tensor) -> dict:
    """Accuracy on the class and on each factor (direction = label // 2, tone = label % 2), and the confusions."""
    return {
        "accuracy": (predictions == labels).double().mean().item(),
        "direction_accuracy": (predictions // 2 == labels // 2).double().mean().item(),
        "tone_accuracy": (predictions % 2 == labels % 2).double().mean().item(),
        "confusion": confusion_matrix(labels, predictions),
    }


def _train_and_score(
    model_id: str,
    splits: dict[str, VideoAudioClips],
    shift: Shift,
    seed: int,
    epochs: int,
    progress: bool,
    device: torch.device,
) -> dict:
    """Train one model of MODELS from the seed's initial weights and batch order; score it on "test"."""
    start = time.perf_counter()
    name, video, shifted, audio = MODELS[model_id]
    generator = seed_everything(seed)  # every model starts from the same RNG state and sees the same batches
    model = ClipClassifier(video, audio, shift if shifted else None).to(device)
    train, test = splits["train"], splits["test"]
    videos, audios, labels = (t.to(device) for t in (train.video, train.audio, train.labels))

    def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
        batch = batch.to(device)  # (B,)
        return F.cross_entropy(model(videos[batch], audios[batch]), labels[batch])

    model.train()
    losses = train_one_cycle(
        model.parameters(),
        len(train),
        loss_of_batch,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        generator=generator,
        max_lr=MAX_LR,
        description=name,
        progress=progress,
    )
    model.eval()
    with torch.no_grad():
        predictions = model(test.video.to(device), test.audio.to(device)).argmax(dim=1).cpu()  # (N,)
    scores = _scores(test.labels, predictions)
    return {"name": name, **scores, "losses": losses, "seconds": time.perf_counter() - start}


@memoised
def train_video_models(
    seed: int = 0,
    *,
    shift: Shift | None = None,
    epochs: int = EPOCHS,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict:
    """Train the five models of MODELS on ``video_splits(seed)`` and score them on its test clips.

    ``shift`` is the temporal shift the TSM models use, called as ``shift(x, T, 4)`` on (B*T, 8, H, W) frame
    features (None: the reference ``temporal_shift``; pass a learner's to train with it). Each model is
    trained with ``train_one_cycle`` (AdamW, one-cycle schedule up to 3e-3, batches of 64, ``epochs`` passes,
    cross-entropy over the four classes); every model starts from the same seeded RNG state, so the two video
    encoders start from the same weights, and all see the same batches. Runs on one CPU thread
    (``one_thread``), so results are deterministic under ``seed`` on a device.

    Returns {"seed", "epochs", "data_seconds" (building the splits), "seconds" (the whole call), "models":
    {model id: {"name", "accuracy", "direction_accuracy", "tone_accuracy" (on the test clips; chance 0.25,
    0.5, 0.5), "confusion" ((4, 4) int64 counts, rows = true class in CLASSES order), "losses" (per step),
    "seconds" (training and scoring)}}}, the models in MODELS order.
    """
    start = time.perf_counter()
    device = default_device() if device is None else torch.device(device)
    shift = temporal_shift if shift is None else shift
    with one_thread():
        splits = video_splits(seed)
        data_seconds = time.perf_counter() - start
        models = {
            model_id: _train_and_score(model_id, splits, shift, seed, epochs, progress, device) for model_id in MODELS
        }
    return {
        "seed": seed,
        "epochs": epochs,
        "data_seconds": data_seconds,
        "models": models,
        "seconds": time.perf_counter() - start,
    }


def format_video_table(results_by_seed: Mapping[int, dict]) -> str:
    """A Markdown table: one row per seed, the test accuracy of every model (chance 0.25) and the seconds."""
    header = "| seed | " + " | ".join(name for name, *_ in MODELS.values()) + " | seconds |"
    lines = [header, "|---|" + "---:|" * (len(MODELS) + 1)]
    for seed, result in sorted(results_by_seed.items()):
        accuracies = " | ".join(f"{result['models'][model_id]['accuracy']:.3f}" for model_id in MODELS)
        lines.append(f"| {seed} | {accuracies} | {result['seconds']:.1f} |")
    return "\n".join(lines)


def plot_clips(split: VideoAudioClips, frames: tuple[int, ...] | None = None) -> Figure:
    """The first clip of each class in ``split``: one row per class, the chosen frames, then its spectrogram.

    frames: indices into the clip's frames (None: all of them). The spectrogram is drawn as frequency bin
    (vertical, low at the bottom) × audio frame.
    """
    frames = tuple(range(split.video.shape[1])) if frames is None else frames
    fig, axes = closed_subplots(len(CLASSES), len(frames) + 1, figsize=(1.3 * (len(frames) + 2), 1.5 * len(CLASSES)))
    for label, row in enumerate(axes):
        index = int((split.labels == label).nonzero()[0])
        for ax, t in zip(row[:-1], frames, strict=True):
            ax.imshow(split.video[index, t, 0].numpy(), cmap="gray", vmin=-1, vmax=2)
            ax.set_title(f"t = {t}", fontsize=8)
        row[-1].imshow(split.audio[index].T.numpy(), cmap="magma", aspect="auto", origin="lower")
        row[-1].set_title("audio", fontsize=8)
        row[0].set_ylabel(CLASSES[label], fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def plot_temporal_shift(
    shift: Shift | None = None, n_segment: int = 8, channels: int = 8, fold_div: int = FOLD_DIV
) -> Figure:
    """What the shift moves where: channels × time, before and after ``shift`` (None: the reference).

    The input is one clip of ``n_segment`` frames whose every channel holds its frame number t + 1; after the
    shift, each cell shows the frame its value came from (0 = the zero padding at a clip's ends).
    """
    shift = temporal_shift if shift is None else shift
    source = torch.arange(1.0, n_segment + 1)[:, None, None, None].expand(n_segment, channels, 1, 1)  # (T, C, 1, 1)
    panels = (("before", source), (f"after temporal_shift(fold_div={fold_div})", shift(source, n_segment, fold_div)))
    fig, axes = closed_subplots(1, 2, figsize=(10, 3.6))
    for ax, (title, x) in zip(axes, panels, strict=True):
        grid = x.detach()[:, :, 0, 0].T.numpy()  # (C, T)
        ax.imshow(grid, cmap="viridis", vmin=0, vmax=n_segment)
        for (c, t), value in np.ndenumerate(grid):
            ax.text(t, c, f"{value:.0f}", ha="center", va="center", color="w" if value < n_segment / 2 else "k")
        ax.set(xlabel="frame t", ylabel="channel", title=title, xticks=range(n_segment), yticks=range(channels))
    return fig


def plot_accuracies(results_by_seed: Mapping[int, dict]) -> Figure:
    """Test accuracy per model: a bar at the mean over the seeds, a dot per seed, chance (0.25) dashed."""
    fig, ax = closed_subplots(figsize=(8, 3.8))
    positions = np.arange(len(MODELS))
    accuracies = np.array(
        [[result["models"][model_id]["accuracy"] for model_id in MODELS] for result in results_by_seed.values()]
    )  # (seeds, models)
    ax.bar(positions, accuracies.mean(axis=0), color="tab:blue", alpha=0.6)
    for seed, row in zip(results_by_seed, accuracies, strict=True):
        ax.scatter(positions, row, color="k", s=12, zorder=3, label=f"seed {seed}" if len(accuracies) > 1 else None)
    ax.axhline(0.25, color="k", linestyle="--", linewidth=1, label="chance (1/4)")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="one factor of two (1/2)")
    ax.set_xticks(positions, [name for name, *_ in MODELS.values()])
    ax.set(ylabel="test accuracy", ylim=(0, 1.05), title="Direction × tone: test accuracy per model")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_confusions(result: dict) -> Figure:
    """One (4, 4) confusion matrix per model of ``result`` (``train_video_models``), counts written in."""
    fig, axes = closed_subplots(1, len(result["models"]), figsize=(3.2 * len(result["models"]), 3.6))
    for ax, scores in zip(axes, result["models"].values(), strict=True):
        counts = scores["confusion"].numpy()
        ax.imshow(counts, cmap="Blues", vmin=0)
        for (true, predicted), count in np.ndenumerate(counts):
            colour = "w" if count > counts.max() / 2 else "k"
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
        ax.set(xlabel="predicted", title=f"{scores['name']} · {scores['accuracy']:.2f}")
    axes[0].set_ylabel("true")
    return fig

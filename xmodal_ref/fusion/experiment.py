"""Chapter 01 recipe: five ways to fuse text and audio, compared on the chapter 05 sentiment corpus.

Every model reads the same two inputs through the same two encoders and ends in the same kind of
regression head; only the step that combines the modalities differs:

* early fusion: concatenate the two embeddings, then the head;
* late fusion: one head per modality, the two predictions averaged;
* tensor fusion (TFN): the head reads ``tensor_fusion`` of the embeddings, every pairwise product;
* low-rank fusion (LMF): ``LowRankFusion``, a linear map of TFN's product with a rank-R weight, then the head;
* gated fusion (GMU): ``GatedMultimodalUnit``, a learned per-unit gate between the two, then the head.

Each is trained twice, without and with ``modality_dropout`` on the embeddings, and measured on the
test split: Acc-2 and MAE overall, Acc-2 on the conflict subset (where words and tone disagree and
only the delivery says which one to believe), and Acc-2 with the text or the audio missing. A
missing modality is an all-zero embedding, exactly what ``modality_dropout`` feeds the fusion in
training, so the two regimes are tested on the same footing.

What it shows (``python -m benchmarks fusion``: three seeds, about 25 s each on an idle 2-core CPU):

* Late fusion adds a text-only and an audio-only prediction, so the delivery can change how loudly
  the audio head speaks but not what the text head says. It trails every other fusion by about
  15 points on the conflict subset (67 % against 81–84 %, mean of three seeds).
* At this size an MLP head on the concatenation learns the conflict rule as well as TFN, LMF and
  GMU; their differences are within seed-to-seed noise, and TFN pays twice early fusion's parameters.
* With a modality missing, the yardstick is the other modality's own label used as the prediction
  (``unimodal_label_acc2``): off the conflict subset the label is the mean of two unimodal scores of
  the same sign, so either one alone has the sign right. Without modality dropout a model often gets
  close, but on some seeds falls 5–15 points short; with it, every model lands within a few points
  of the yardstick on every seed.
* The price: only about half of the training samples keep both modalities under p = 0.3, so in a
  fixed budget modality dropout costs 5–15 points on the conflict subset (means of three seeds).

The encoders are a per-step MLP, ``masked_mean`` over the real steps, and an MLP (Deep Sets): a bag
of words is enough for the sign of these sentences, and the mean of learned per-step audio
features still shows pitch, loudness and the rise–fall contour (which widens the range of pitches
an utterance covers). Without recurrence, the corpus and all ten trainings fit in about 25 s on one
CPU thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from xmodal_ref.common.device import default_device, one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.data import SentimentFeatures, corpus_features, sentiment_splits
from xmodal_ref.fusion import GatedMultimodalUnit, LowRankFusion, modality_dropout, tensor_fusion
from xmodal_ref.sentiment import masked_mean, msa_metrics
from xmodal_ref.sentiment.model import FeatureScaler, RegressionHead

MODALITIES = ("text", "audio")
EARLY, LATE, TFN, LMF, GMU = "early", "late", "TFN", "LMF", "GMU"
FUSIONS = (EARLY, LATE, TFN, LMF, GMU)

EMBED_DIM = 16  # per-modality embedding: TFN's fused vector then has (16 + 1)² = 289 entries
HIDDEN = 32  # width of the encoders' MLPs, of the heads, and of the LMF and GMU outputs
LMF_RANK = 4
DROPOUT_P = 0.3
EPOCHS = 40
BATCH_SIZE = 128
LEARNING_RATE = 2e-2
AUDIO_FRAMES_PER_STEP = 8  # 80 ms audio steps, half as many as chapter 05's 40 ms ones: the encoder averages them


class StepPoolEncoder(nn.Module):
    """Standardise, an MLP on every step, mean over the real steps, an MLP: (B, L, D), (B,) → (B, E).

    A Deep Sets encoder: it sees which steps occur, not their order. Padded steps (index ≥
    lengths[b]) never affect the output.
    """

    def __init__(self, input_dim: int, embed_dim: int = EMBED_DIM, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.scaler = FeatureScaler(input_dim)
        self.step = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.project = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = self.step(self.scaler(x))  # (B, L, H)
        return self.project(masked_mean(steps, lengths))  # (B, E)


class ConcatFusion(nn.Module):
    """Early fusion: the head reads [z_text; z_audio]. list of (B, E) → (B,)."""

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.head = RegressionHead(len(MODALITIES) * embed_dim, hidden)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat(features, dim=-1))


class AveragedHeads(nn.Module):
    """Late fusion: one head per modality, their predictions averaged. list of (B, E) → (B,)."""

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(RegressionHead(embed_dim, hidden) for _ in MODALITIES)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([head(z) for head, z in zip(self.heads, features, strict=True)]).mean(dim=0)


class TensorFusionHead(nn.Module):
    """TFN: the head reads ``tensor_fusion`` of the embeddings, (E + 1)² entries. list of (B, E) → (B,)."""

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.head = RegressionHead((embed_dim + 1) ** len(MODALITIES), hidden)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(tensor_fusion(features))


class FusedHead(nn.Module):
    """A fusion module list of (B, E) → (B, hidden), then the head: list of (B, E) → (B,)."""

    def __init__(self, fusion: nn.Module, hidden: int) -> None:
        super().__init__()
        self.fusion = fusion
        self.head = RegressionHead(hidden, hidden)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.fusion(features))


def build_fusion(fusion: str, embed_dim: int = EMBED_DIM, hidden: int = HIDDEN) -> nn.Module:
    """The fusion step and head of one of FUSIONS: a module mapping [z_text, z_audio], each (B, E), to (B,)."""
    dims = [embed_dim] * len(MODALITIES)
    if fusion == EARLY:
        return ConcatFusion(embed_dim, hidden)
    if fusion == LATE:
        return AveragedHeads(embed_dim, hidden)
    if fusion == TFN:
        return TensorFusionHead(embed_dim, hidden)
    if fusion == LMF:
        return FusedHead(LowRankFusion(dims, hidden, rank=LMF_RANK), hidden)
    if fusion == GMU:
        return FusedHead(GatedMultimodalUnit(dims, hidden), hidden)
    raise ValueError(f"unknown fusion {fusion!r}; choose from {FUSIONS}")


class FusionModel(nn.Module):
    """Text and audio encoders, ``modality_dropout`` on their embeddings, then one fusion step and head.

    forward(batch, missing) → (B,) predicted sentiment in (−3, 3). The embeddings of the modalities
    named in ``missing`` are set to zero, as ``modality_dropout`` does in training (with
    ``dropout_p`` > 0), so a model can be asked to predict without its text or its audio.
    """

    def __init__(
        self, fusion: str, text_dim: int, audio_dim: int, dropout_p: float = 0.0, embed_dim: int = EMBED_DIM
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(
            {"text": StepPoolEncoder(text_dim, embed_dim), "audio": StepPoolEncoder(audio_dim, embed_dim)}
        )
        self.fusion = build_fusion(fusion, embed_dim)
        self.dropout_p = dropout_p

    def fit_scaling(self, features: SentimentFeatures) -> None:
        """Standardise inputs with the statistics of ``features`` (the training split)."""
        self.encoders["text"].scaler.fit(features.text, features.text_lengths)
        self.encoders["audio"].scaler.fit(features.audio, features.audio_lengths)

    def embed(self, batch: SentimentFeatures) -> list[torch.Tensor]:
        """[z_text, z_audio], each (B, E)."""
        return [
            self.encoders["text"](batch.text, batch.text_lengths),
            self.encoders["audio"](batch.audio, batch.audio_lengths),
        ]

    def forward(self, batch: SentimentFeatures, missing: Sequence[str] = ()) -> torch.Tensor:
        unknown = set(missing) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
        features = modality_dropout(self.embed(batch), self.dropout_p, self.training)
        features = [torch.zeros_like(z) if m in missing else z for m, z in zip(MODALITIES, features, strict=True)]
        return self.fusion(features)  # (B,)


def train_fusion_model(
    model: FusionModel,
    train: SentimentFeatures,
    *,
    epochs: int,
    generator: torch.Generator,
    batch_size: int = BATCH_SIZE,
    lr: float = LEARNING_RATE,
    bar: tqdm | None = None,
) -> list[float]:
    """Squared-error regression on the multimodal label, AdamW with a one-cycle schedule; ends in eval mode.

    Squared error rather than chapter 05's L1: a conflict sample whose sign is wrong is off by two
    or three points, and only a squared loss weights it by that; with L1 and this budget, every
    model stayed near chance on the conflict subset.

    train lives on the model's device; the input scaling is fitted on it first. ``generator``
    shuffles the batches; modality dropout draws from torch's global generator. Returns the mean
    training loss of every epoch. ``bar`` advances once per epoch.
    """
    model.fit_scaling(train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator).to(train.label.device)
        total = 0.0
        for index in order.split(batch_size):
            batch = train.subset(index)
            loss = F.mse_loss(model(batch), batch.label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        losses.append(total / len(train))
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            bar.update()
    model.eval()
    return losses


def _acc2(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Acc-2 in [0, 1] of (N,) scores against (N,) labels, samples labelled 0 left out (MMSA's non0_acc2)."""
    return msa_metrics(predictions, labels)["non0_acc2"]


@torch.no_grad()
def evaluate(model: FusionModel, test: SentimentFeatures) -> dict[str, float | None]:
    """Metrics of a model in eval mode on ``test``; accuracies are Acc-2 in [0, 1].

    "acc2" and "mae" with both modalities; "conflict_acc2" on the conflict subset (None when the
    data marks none); "text_missing_acc2" and "audio_missing_acc2" with that modality's embedding zeroed.
    """
    labels = test.label.cpu()
    predictions = model(test).cpu()  # (N,)
    conflict = None if test.conflict is None or not test.conflict.any() else test.conflict.cpu()
    return {
        "acc2": _acc2(predictions, labels),
        "mae": (predictions - labels).abs().mean().item(),
        "conflict_acc2": None if conflict is None else _acc2(predictions[conflict], labels[conflict]),
        "text_missing_acc2": _acc2(model(test, missing=["text"]).cpu(), labels),
        "audio_missing_acc2": _acc2(model(test, missing=["audio"]).cpu(), labels),
    }


def unimodal_label_acc2(test: SentimentFeatures) -> dict[str, float] | None:
    """Acc-2 of each unimodal label used as the prediction of the multimodal one, or None without them.

    {"text": sign of label_text, "audio": sign of label_audio}: about what a perfect model of one
    modality scores, the yardstick for the accuracy with the other modality missing. On the
    synthetic corpus both are right off the conflict subset and at chance on it.
    """
    if test.label_text is None or test.label_audio is None:
        return None
    return {"text": _acc2(test.label_text, test.label), "audio": _acc2(test.label_audio, test.label)}


@memoised
def run_fusion_comparison(
    seed: int = 0,
    epochs: int = EPOCHS,
    progress: bool = True,
    device: torch.device | str | None = None,
    *,
    features: dict[str, SentimentFeatures] | None = None,
    dropout_p: float = DROPOUT_P,
    fusions: Sequence[str] = FUSIONS,
) -> dict:
    """Train every fusion in ``fusions`` without and with modality dropout (p = ``dropout_p``); test them.

    features=None builds the "train" and "test" splits of ``sentiment_splits(seed)`` (no
    validation split: the epochs are fixed and nothing is selected) with audio steps of
    AUDIO_FRAMES_PER_STEP frames; otherwise its "train" and "test" entries are used, e.g. MMSA
    features, which mark no conflict subset. Each model is initialised from ``seed`` alone and both
    regimes of a fusion share their initialisation and batch order, so a row does not depend on
    which others run and the pair differs only in the dropout. Torch runs on one CPU thread
    meanwhile, so results are deterministic under ``seed`` on a device.

    Returns {"rows", "fusions", "dropout_p", "references", "seed", "epochs", "seconds"}. "rows" holds
    one dict per (fusion, regime), fusions in order, the regime without dropout first: "fusion",
    "dropout_p" (0.0 or ``dropout_p``), the ``evaluate`` metrics ("acc2", "mae", "conflict_acc2",
    "text_missing_acc2", "audio_missing_acc2"), "parameters", "epoch_seconds" (training wall time
    per epoch), "train_loss" (one float per epoch) and "model" (in eval mode). "references" is
    ``unimodal_label_acc2`` of the test split; "seconds" the wall time of the whole call, data
    included.
    """
    start = time.perf_counter()
    unknown = set(fusions) - set(FUSIONS)
    if unknown:
        raise ValueError(f"unknown fusions {sorted(unknown)}; choose from {FUSIONS}")
    if not 0 < dropout_p < 1:
        raise ValueError(f"dropout_p must be in (0, 1), not {dropout_p}")
    device = default_device() if device is None else torch.device(device)
    regimes = (0.0, dropout_p)
    rows = []
    with one_thread():
        if features is None:
            splits = sentiment_splits(seed, n_valid=0)
            features = {
                split: corpus_features(splits[split], frames_per_step=AUDIO_FRAMES_PER_STEP)
                for split in ("train", "test")
            }
        train, test = (features[split].map(lambda t: t.to(device)) for split in ("train", "test"))
        text_dim, audio_dim = train.text.shape[-1], train.audio.shape[-1]
        with tqdm(total=epochs * len(fusions) * len(regimes), disable=not progress, desc="fusion") as bar:
            for fusion in fusions:
                for p in regimes:
                    bar.set_description(f"{fusion}, p = {p:g}")
                    generator = seed_everything(seed)
                    model = FusionModel(fusion, text_dim, audio_dim, dropout_p=p).to(device)
                    tic = time.perf_counter()
                    losses = train_fusion_model(model, train, epochs=epochs, generator=generator, bar=bar)
                    epoch_seconds = (time.perf_counter() - tic) / epochs
                    rows.append(
                        {
                            "fusion": fusion,
                            "dropout_p": p,
                            **evaluate(model, test),
                            "parameters": sum(w.numel() for w in model.parameters()),
                            "epoch_seconds": epoch_seconds,
                            "train_loss": losses,
                            "model": model,
                        }
                    )
    return {
        "rows": rows,
        "fusions": list(fusions),
        "dropout_p": dropout_p,
        "references": unimodal_label_acc2(test.map(torch.Tensor.cpu)),
        "seed": seed,
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
    }


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def format_fusion_table(result: dict) -> str:
    """A Markdown table, one row per (fusion, regime): Acc-2 (%) with both modalities, on the conflict
    subset, with the text or the audio missing; MAE; parameters; training seconds per epoch. Below
    it, when known, the Acc-2 of each unimodal label (``unimodal_label_acc2``)."""
    lines = [
        "| fusion | modality dropout | Acc-2 | conflict Acc-2 | text missing | audio missing | MAE | params "
        "| s/epoch |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in result["rows"]:
        regime = f"p = {row['dropout_p']:g}" if row["dropout_p"] else "none"
        accuracies = (row[key] for key in ("acc2", "conflict_acc2", "text_missing_acc2", "audio_missing_acc2"))
        lines.append(
            f"| {row['fusion']} | {regime} | {' | '.join(map(_percent, accuracies))} | {row['mae']:.3f} "
            f"| {row['parameters']:,} | {row['epoch_seconds']:.3f} |"
        )
    references = result["references"]
    if references:
        lines.append(
            f"\nUnimodal labels as predictions, Acc-2: audio {_percent(references['audio'])} "
            f"(yardstick for text missing), text {_percent(references['text'])} (for audio missing)."
        )
    return "\n".join(lines)


def plot_fusion_comparison(result: dict) -> Figure:
    """Test Acc-2 per fusion as grouped bars (both modalities, conflict subset, text missing, audio
    missing), one panel per training regime. Dashed: chance; dotted, in the colour of a missing-modality
    bar: the Acc-2 of the other modality's label as the prediction (``unimodal_label_acc2``)."""
    bars = {
        "both modalities": "acc2",
        "conflict subset": "conflict_acc2",
        "text missing": "text_missing_acc2",
        "audio missing": "audio_missing_acc2",
    }
    yardsticks = {"text missing": "audio", "audio missing": "text"}  # the label each missing-modality bar is held to
    fusions, references = result["fusions"], result["references"]
    regimes = sorted({row["dropout_p"] for row in result["rows"]})
    percent = {(row["fusion"], row["dropout_p"], key): row[key] for row in result["rows"] for key in bars.values()}
    lowest = min(100 * value for value in percent.values() if value is not None)
    fig, axes = closed_subplots(1, len(regimes), figsize=(6 * len(regimes), 4.2), sharey=True, squeeze=False)
    width = 0.8 / len(bars)
    x = np.arange(len(fusions))
    for ax, p in zip(axes[0], regimes, strict=True):
        for i, (label, key) in enumerate(bars.items()):
            values = [np.nan if percent[f, p, key] is None else 100 * percent[f, p, key] for f in fusions]
            drawn = ax.bar(x + (i - (len(bars) - 1) / 2) * width, values, width, label=label)
            if references and label in yardsticks:
                modality = yardsticks[label]
                ax.axhline(
                    100 * references[modality],
                    color=drawn.patches[0].get_facecolor(),
                    linestyle=":",
                    linewidth=1.5,
                    label=f"{modality} label as prediction",
                )
        ax.axhline(50, color="k", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, fusions)
        ax.set(ylim=(min(40, 10 * (lowest // 10)), 100))
        ax.set_title(f"modality dropout p = {p:g}" if p else "no modality dropout")
    axes[0, 0].set_ylabel("test Acc-2 (%)")
    fig.suptitle(f"Five fusions, test Acc-2 (seed {result['seed']}, {result['epochs']} epochs)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    return fig

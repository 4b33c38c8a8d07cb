"""Chapter 05 · a multi-task cross-modal sentiment model, its baselines, and a CPU training recipe.

The article's task ("a multi-task cross-modal sentiment model; input text and audio; output text
and audio sentiment; use an encoder–decoder") made into something one can train and measure:

* every model reads a batch of padded text and audio feature sequences (``SentimentFeatures``) and
  predicts the multimodal sentiment score in [−3, 3];
* baselines: ``UnimodalModel`` (text-only, audio-only) and ``LateFusion`` of the two;
* ``MultiTaskSentimentModel``: one ``SequenceEncoder`` per modality, a fused representation, three
  regression heads (text, audio, multimodal), and an auxiliary ``CrossModalDecoder`` that
  translates the text encoding into the audio feature sequence (MCTN, Pham et al., AAAI 2019,
  arXiv:1812.07809). The "encoder–decoder" is a training signal that pushes audio information
  into the text encoding, not generation for its own sake; ``decoder=False`` ablates it;
* task weighting: fixed weights, or learned log-variances (``uncertainty_weighted_loss``).

Regression uses the L1 loss: the headline metric is MAE, the labels are means of a few annotators'
integer scores (L1 fits their median and is robust to an outlying one), and MSE would let the rare
extreme labels dominate. This is also what the MMSA toolkit's baselines train with.

Nothing assumes a feature size, a conflict subset or unimodal labels, so ``train`` runs unchanged
on the synthetic corpus and on MMSA's CMU-MOSI, CMU-MOSEI and CH-SIMS features.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence

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
from xmodal_ref.sentiment import SequenceEncoder, masked_mean, msa_metrics, uncertainty_weighted_loss

TEXT_ONLY, AUDIO_ONLY, LATE_FUSION = "text-only", "audio-only", "late fusion"
MULTI_TASK = "multi-task + decoder (fixed weights)"
NO_DECODER = "multi-task, no decoder (fixed weights)"
UNCERTAINTY = "multi-task + decoder (uncertainty weights)"
VARIANTS = (TEXT_ONLY, AUDIO_ONLY, LATE_FUSION, MULTI_TASK, NO_DECODER, UNCERTAINTY)

HIDDEN = 48
EPOCHS = 20
BATCH_SIZE = 256
LEARNING_RATE = 1e-2
# Fixed task weights: multimodal, text, audio, decoder reconstruction (per standardised feature).
FIXED_WEIGHTS = (1.0, 0.5, 0.5, 0.1)


class FeatureScaler(nn.Module):
    """Per-dimension standardisation with statistics of the real (unpadded) training steps.

    Raw MMSA features have wildly different scales (COVAREP mixes pitch in Hz with log energies),
    so each model standardises its inputs. Identity until ``fit`` is called; a dimension that is
    constant in training keeps a scale of 1. The statistics are buffers, so they travel with the
    model's state dict.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """x: (N, L, D) padded sequences; lengths: (N,)."""
        real = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (N, L)
        steps = x[real]  # (S, D), the real steps only
        self.mean.copy_(steps.mean(dim=0))
        std = steps.std(dim=0)  # (D,)
        self.std.copy_(torch.where(std > 1e-6, std, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (B, L, D)


class ModalityEncoder(nn.Module):
    """Standardise, then a ``SequenceEncoder``: (B, L, input_dim), (B,) → (B, hidden)."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.scaler = FeatureScaler(input_dim)
        self.sequence = SequenceEncoder(input_dim, hidden)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.sequence(self.scaler(x), lengths)  # (B, H)


class RegressionHead(nn.Module):
    """A one-hidden-layer MLP squashed onto the label range: (B, input_dim) → (B,) in (−3, 3)."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.tanh(self.mlp(h).squeeze(-1))  # (B,)


class UnimodalModel(nn.Module):
    """One modality's encoder and a regression head, trained on the multimodal label.

    forward(batch) → (B,) predicted multimodal sentiment, from ``batch.text`` or ``batch.audio`` only.
    """

    def __init__(self, input_dim: int, modality: str, hidden: int = HIDDEN) -> None:
        super().__init__()
        if modality not in ("text", "audio"):
            raise ValueError(f"modality must be 'text' or 'audio', not {modality!r}")
        self.modality = modality
        self.encoder = ModalityEncoder(input_dim, hidden)
        self.head = RegressionHead(hidden, hidden)

    def fit_scaling(self, features: SentimentFeatures) -> None:
        """Standardise inputs with the statistics of ``features`` (the training split)."""
        self.encoder.scaler.fit(*_modality(features, self.modality))

    def forward(self, batch: SentimentFeatures) -> torch.Tensor:
        return self.head(self.encoder(*_modality(batch, self.modality)))  # (B,)

    def objective(self, batch: SentimentFeatures) -> torch.Tensor:
        """0-dim L1 loss against the multimodal label."""
        return F.l1_loss(self(batch), batch.label)


class LateFusion(nn.Module):
    """Decision-level fusion: a learned affine combination of two unimodal models' predictions.

    forward(batch) → (B,) = clamp(w_t·text_model(batch) + w_a·audio_model(batch) + b, −3, 3).
    Starts as the plain average; ``fit`` sets (w_t, w_a, b) by least squares. Whatever the weights,
    it cannot express an interaction such as "when words and tone disagree, believe the tone only
    if the delivery is sarcastic": each modality is reduced to one number before the two meet.
    """

    def __init__(self, text_model: UnimodalModel, audio_model: UnimodalModel) -> None:
        super().__init__()
        self.text_model, self.audio_model = text_model, audio_model
        self.combine = nn.Linear(2, 1)
        with torch.no_grad():
            self.combine.weight.fill_(0.5)
            self.combine.bias.zero_()

    def unimodal_predictions(self, batch: SentimentFeatures) -> torch.Tensor:
        return torch.stack([self.text_model(batch), self.audio_model(batch)], dim=-1)  # (B, 2)

    def forward(self, batch: SentimentFeatures) -> torch.Tensor:
        return self.combine(self.unimodal_predictions(batch)).squeeze(-1).clamp(-3.0, 3.0)  # (B,)

    @torch.no_grad()
    def fit(self, features: SentimentFeatures) -> None:
        """Least-squares weights on ``features`` (the training split), in eval mode."""
        self.eval()
        inputs = _predict(self.unimodal_predictions, features)  # (N, 2)
        design = torch.cat([inputs, torch.ones(len(inputs), 1)], dim=-1).double()  # (N, 3)
        solution = torch.linalg.lstsq(design, features.label.cpu().double()[:, None]).solution  # (3, 1)
        self.combine.weight.copy_(solution[:2].T)
        self.combine.bias.copy_(solution[2])


class CrossModalDecoder(nn.Module):
    """Translates a source encoding into a target feature sequence: (B, H), (B,), L → (B, L, output_dim).

    A GRU whose initial state is a projection of the encoding and whose only input at step t is the
    relative position t / length, so everything it outputs must come from the encoding. It is
    causal, so its outputs at real steps do not depend on how much padding follows.
    """

    def __init__(self, hidden: int, output_dim: int) -> None:
        super().__init__()
        self.initial = nn.Linear(hidden, hidden)
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.output = nn.Linear(hidden, output_dim)

    def forward(self, encoding: torch.Tensor, lengths: torch.Tensor, max_length: int) -> torch.Tensor:
        steps = torch.arange(max_length, device=encoding.device)  # (L,)
        position = (steps[None, :] / lengths[:, None]).unsqueeze(-1)  # (B, L, 1)
        initial = torch.tanh(self.initial(encoding)).unsqueeze(0)  # (1, B, H)
        states, _ = self.gru(position, initial)  # (B, L, H)
        return self.output(states)  # (B, L, D_out)


def reconstruction_loss(decoded: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """0-dim mean squared error over each row's real steps, averaged over dims and then rows.

    decoded, target: (B, L, D); lengths: (B,). Padded steps affect neither the value nor the
    gradient, whatever either tensor holds there.
    """
    return masked_mean((decoded - target) ** 2, lengths).mean()


class MultiTaskSentimentModel(nn.Module):
    """Text and audio encoders, a fused representation, three heads and a text → audio decoder.

    * h_t = text encoder (B, H); h_a = audio encoder (B, H); fused = MLP([h_t; h_a]) (B, H).
    * heads: text sentiment from h_t, audio sentiment from h_a, multimodal sentiment from fused.
      forward(batch) → (B,) is the multimodal head; ``heads(batch)`` returns all three.
    * task losses (K,): L1 of each head against its label, then (with ``decoder=True``) the
      reconstruction loss of the standardised audio sequence decoded from h_t. When a source has
      no unimodal labels (MOSI, MOSEI), the text and audio heads are trained on the multimodal
      label instead, so they act as unimodal auxiliary predictors, as in the baselines.
    * ``weighting="fixed"``: Σ_k task_weights[k]·L_k; ``"uncertainty"``: Kendall et al.'s
      ``uncertainty_weighted_loss`` with one learnable log-variance per task.
    """

    def __init__(
        self,
        text_dim: int,
        audio_dim: int,
        hidden: int = HIDDEN,
        decoder: bool = True,
        weighting: str = "fixed",
        task_weights: Sequence[float] = FIXED_WEIGHTS,
    ) -> None:
        super().__init__()
        if weighting not in ("fixed", "uncertainty"):
            raise ValueError(f"weighting must be 'fixed' or 'uncertainty', not {weighting!r}")
        self.text_encoder = ModalityEncoder(text_dim, hidden)
        self.audio_encoder = ModalityEncoder(audio_dim, hidden)
        self.fusion = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU())
        self.text_head = RegressionHead(hidden, hidden)
        self.audio_head = RegressionHead(hidden, hidden)
        self.multimodal_head = RegressionHead(hidden, hidden)
        self.decoder = CrossModalDecoder(hidden, audio_dim) if decoder else None
        n_tasks = 4 if decoder else 3
        self.register_buffer("task_weights", torch.tensor(task_weights[:n_tasks], dtype=torch.float32))
        self.log_vars = nn.Parameter(torch.zeros(n_tasks)) if weighting == "uncertainty" else None

    def fit_scaling(self, features: SentimentFeatures) -> None:
        """Standardise inputs with the statistics of ``features`` (the training split)."""
        self.text_encoder.scaler.fit(features.text, features.text_lengths)
        self.audio_encoder.scaler.fit(features.audio, features.audio_lengths)

    def encode(self, batch: SentimentFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h_t, h_a, fused), each (B, H)."""
        h_t = self.text_encoder(batch.text, batch.text_lengths)
        h_a = self.audio_encoder(batch.audio, batch.audio_lengths)
        return h_t, h_a, self.fusion(torch.cat([h_t, h_a], dim=-1))

    def heads(self, batch: SentimentFeatures) -> dict[str, torch.Tensor]:
        """{"text", "audio", "multimodal"}: (B,) predictions in (−3, 3)."""
        h_t, h_a, fused = self.encode(batch)
        return {"text": self.text_head(h_t), "audio": self.audio_head(h_a), "multimodal": self.multimodal_head(fused)}

    def forward(self, batch: SentimentFeatures) -> torch.Tensor:
        _, _, fused = self.encode(batch)
        return self.multimodal_head(fused)  # (B,)

    def decode_audio(self, batch: SentimentFeatures) -> torch.Tensor:
        """The standardised audio sequence as translated from the text encoding: (B, L_a, D_a)."""
        if self.decoder is None:
            raise ValueError("this model was built with decoder=False")
        h_t = self.text_encoder(batch.text, batch.text_lengths)  # (B, H)
        return self.decoder(h_t, batch.audio_lengths, batch.audio.shape[1])

    def task_losses(self, batch: SentimentFeatures) -> torch.Tensor:
        """(K,): multimodal, text, audio L1 losses, then the decoder's reconstruction loss if any."""
        h_t, h_a, fused = self.encode(batch)
        label_text = batch.label if batch.label_text is None else batch.label_text
        label_audio = batch.label if batch.label_audio is None else batch.label_audio
        losses = [
            F.l1_loss(self.multimodal_head(fused), batch.label),
            F.l1_loss(self.text_head(h_t), label_text),
            F.l1_loss(self.audio_head(h_a), label_audio),
        ]
        if self.decoder is not None:
            decoded = self.decoder(h_t, batch.audio_lengths, batch.audio.shape[1])  # (B, L_a, D_a)
            target = self.audio_encoder.scaler(batch.audio)  # (B, L_a, D_a)
            losses.append(reconstruction_loss(decoded, target, batch.audio_lengths))
        return torch.stack(losses)

    def objective(self, batch: SentimentFeatures) -> torch.Tensor:
        """0-dim training loss: the weighted task losses."""
        losses = self.task_losses(batch)
        if self.log_vars is None:
            return (self.task_weights * losses).sum()
        return uncertainty_weighted_loss(losses, self.log_vars)


def _modality(features: SentimentFeatures, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequences (N, L, D), lengths (N,)) of one modality."""
    if modality == "text":
        return features.text, features.text_lengths
    return features.audio, features.audio_lengths


def _to(features: SentimentFeatures, device: torch.device) -> SentimentFeatures:
    return features.map(lambda t: t.to(device))


def _batch(features: SentimentFeatures, index: torch.Tensor) -> SentimentFeatures:
    """The samples at ``index``, with padding beyond the longest of them cut off (the models ignore it)."""
    batch = features.subset(index)
    text_length, audio_length = batch.text_lengths.max().item(), batch.audio_lengths.max().item()
    return dataclasses.replace(batch, text=batch.text[:, :text_length], audio=batch.audio[:, :audio_length])


@torch.no_grad()
def _predict(fn: Callable[[SentimentFeatures], torch.Tensor], features: SentimentFeatures) -> torch.Tensor:
    """fn applied to ``features`` in chunks of 512, concatenated on the CPU along the first dim."""
    chunks = []
    for start in range(0, len(features), 512):
        index = torch.arange(start, min(start + 512, len(features)), device=features.label.device)
        chunks.append(fn(_batch(features, index)).cpu())
    return torch.cat(chunks)


def build_model(variant: str, text_dim: int, audio_dim: int, hidden: int = HIDDEN) -> nn.Module:
    """A fresh model for any trained variant (every entry of VARIANTS but late fusion)."""
    if variant == TEXT_ONLY:
        return UnimodalModel(text_dim, "text", hidden)
    if variant == AUDIO_ONLY:
        return UnimodalModel(audio_dim, "audio", hidden)
    if variant == MULTI_TASK:
        return MultiTaskSentimentModel(text_dim, audio_dim, hidden)
    if variant == NO_DECODER:
        return MultiTaskSentimentModel(text_dim, audio_dim, hidden, decoder=False)
    if variant == UNCERTAINTY:
        return MultiTaskSentimentModel(text_dim, audio_dim, hidden, weighting="uncertainty")
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def fit(
    model: UnimodalModel | MultiTaskSentimentModel,
    train: SentimentFeatures,
    valid: SentimentFeatures,
    *,
    epochs: int = EPOCHS,
    generator: torch.Generator,
    batch_size: int = BATCH_SIZE,
    lr: float = LEARNING_RATE,
    bar: tqdm | None = None,
) -> dict:
    """Train with AdamW at a constant learning rate; keep the epoch with the lowest valid MAE.

    train and valid live on the model's device; the input scaling is fitted on train first.
    Returns {"train_loss", "valid_loss", "valid_mae"}, one float per epoch (the losses are the
    training objective, the MAE is the multimodal prediction's), and "best_epoch" (0-based). The
    model ends in eval mode with the best epoch's weights. ``bar`` advances once per epoch.
    """
    model.fit_scaling(train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    curves: dict = {"train_loss": [], "valid_loss": [], "valid_mae": [], "best_epoch": 0}
    best_state = None
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).to(train.label.device)
        total = 0.0
        for start in range(0, len(train), batch_size):
            batch = _batch(train, order[start : start + batch_size])
            loss = model.objective(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        chunk_losses = _predict(lambda b: model.objective(b)[None] * len(b), valid)  # (chunks,), summed per chunk
        valid_loss = chunk_losses.sum().item() / len(valid)
        valid_mae = (_predict(model, valid) - valid.label.cpu()).abs().mean().item()
        curves["train_loss"].append(total / len(train))
        curves["valid_loss"].append(valid_loss)
        curves["valid_mae"].append(valid_mae)
        if valid_mae <= min(curves["valid_mae"]):
            curves["best_epoch"], best_state = epoch, copy.deepcopy(model.state_dict())
        if bar is not None:
            bar.set_postfix(valid_mae=f"{valid_mae:.3f}", refresh=False)
            bar.update()
    model.load_state_dict(best_state)
    model.eval()
    return curves


@memoised
def train(
    features: dict[str, SentimentFeatures] | None = None,
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    device: torch.device | str | None = None,
    progress: bool = True,
    variants: Sequence[str] | None = None,
) -> dict:
    """Train and compare the sentiment models on {"train", "valid", "test"} features.

    features=None builds the synthetic corpus of ``sentiment_splits(seed)``. ``variants`` picks
    rows of VARIANTS (all by default); late fusion reuses the text-only and audio-only models,
    training them if they were not asked for. Each model is initialised and shuffled from ``seed``
    alone, so a variant's result does not depend on which others run. Torch runs on one CPU
    thread meanwhile (``one_thread``), so results are deterministic under ``seed`` on a device.

    Returns {"variants": {name: {...}}, "labels", "conflict", "seconds", "seed", "epochs"}, where
    "labels" is the (N,) test label, "conflict" the (N,) test conflict mask or None, "seconds" the
    wall time of the whole call, and each variant holds "test" (``msa_metrics`` on test),
    "conflict" (on the conflict subset, or None), "predictions" ((N,) test predictions, CPU),
    "curves" (``fit``'s, or {} for late fusion), "parameters", "seconds" (training wall time;
    for late fusion, the fit plus its two unimodal models') and "model" (in eval mode). Prints
    ``format_results_table`` at the end when ``progress``.
    """
    start = time.perf_counter()
    names = list(VARIANTS if variants is None else variants)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    device = default_device() if device is None else torch.device(device)
    needed = set(names) | ({TEXT_ONLY, AUDIO_ONLY} if LATE_FUSION in names else set())
    to_train = [name for name in VARIANTS if name in needed and name != LATE_FUSION]

    with one_thread():
        if features is None:
            features = {split: corpus_features(corpus) for split, corpus in sentiment_splits(seed).items()}
        train_set, valid_set, test_set = (_to(features[split], device) for split in ("train", "valid", "test"))
        text_dim, audio_dim = train_set.text.shape[-1], train_set.audio.shape[-1]
        models, runs = {}, {}
        with tqdm(total=epochs * len(to_train), disable=not progress, desc="sentiment") as bar:
            for name in to_train:
                bar.set_description(name)
                tic = time.perf_counter()
                generator = seed_everything(seed)
                models[name] = build_model(name, text_dim, audio_dim).to(device)
                curves = fit(models[name], train_set, valid_set, epochs=epochs, generator=generator, bar=bar)
                runs[name] = {"curves": curves, "seconds": time.perf_counter() - tic}
        if LATE_FUSION in names:
            tic = time.perf_counter()
            models[LATE_FUSION] = LateFusion(models[TEXT_ONLY], models[AUDIO_ONLY])
            models[LATE_FUSION].fit(train_set)
            seconds = time.perf_counter() - tic + runs[TEXT_ONLY]["seconds"] + runs[AUDIO_ONLY]["seconds"]
            runs[LATE_FUSION] = {"curves": {}, "seconds": seconds}

        labels = test_set.label.cpu()
        conflict = None if test_set.conflict is None else test_set.conflict.cpu()
        has_conflict = conflict is not None and bool(conflict.any())
        results = {}
        for name in names:
            predictions = _predict(models[name], test_set)  # (N,)
            results[name] = {
                "test": msa_metrics(predictions, labels),
                "conflict": msa_metrics(predictions[conflict], labels[conflict]) if has_conflict else None,
                "predictions": predictions,
                "parameters": sum(p.numel() for p in models[name].parameters()),
                "model": models[name],
                **runs[name],
            }
    result = {
        "variants": results,
        "labels": labels,
        "conflict": conflict,
        "seconds": time.perf_counter() - start,
        "seed": seed,
        "epochs": epochs,
    }
    if progress:
        print(format_results_table(result))
    return result


def format_results_table(result: dict) -> str:
    """A text table, one row per variant: test Acc-2 (non-zero), F1, Acc-7, MAE, Corr, conflict Acc-2.

    Accuracies and F1 are in percent. Below it, when the variants are there: the conflict-subset
    gain of the best multi-task model over the best unimodal one, and the decoder ablation.
    """
    header = f"{'variant':<44}{'Acc-2':>7}{'F1':>7}{'Acc-7':>7}{'MAE':>7}{'Corr':>7}{'conflict Acc-2':>16}"
    header += f"{'params':>9}{'s':>7}"
    lines = [header, "-" * len(header)]
    variants = result["variants"]
    for name, run in variants.items():
        test, conflict = run["test"], run["conflict"]
        conflict_acc = "—" if conflict is None else f"{100 * conflict['non0_acc2']:.1f}"
        lines.append(
            f"{name:<44}{100 * test['non0_acc2']:>7.1f}{100 * test['non0_f1']:>7.1f}{100 * test['acc7']:>7.1f}"
            f"{test['mae']:>7.3f}{test['corr']:>7.3f}{conflict_acc:>16}{run['parameters']:>9,}{run['seconds']:>7.1f}"
        )
    lines.append(f"total wall time {result['seconds']:.1f} s")

    def conflict_acc2(names: Sequence[str]) -> tuple[str, float] | None:
        scores = [(n, variants[n]["conflict"]["non0_acc2"]) for n in names if n in variants and variants[n]["conflict"]]
        return max(scores, key=lambda s: s[1]) if scores else None

    unimodal, multi_task = conflict_acc2((TEXT_ONLY, AUDIO_ONLY)), conflict_acc2((MULTI_TASK, NO_DECODER, UNCERTAINTY))
    if unimodal and multi_task:
        gain = 100 * (multi_task[1] - unimodal[1])
        lines.append(f"conflict Acc-2: {multi_task[0]} vs {unimodal[0]}: {gain:+.1f} points")
    if MULTI_TASK in variants and NO_DECODER in variants:
        with_decoder, without = variants[MULTI_TASK]["test"], variants[NO_DECODER]["test"]
        lines.append(
            f"decoder ablation (fixed weights): test MAE {with_decoder['mae']:.3f} with vs {without['mae']:.3f} "
            f"without, Acc-2 {100 * with_decoder['non0_acc2']:.1f} vs {100 * without['non0_acc2']:.1f}"
        )
    return "\n".join(lines)


def plot_training_curves(result: dict) -> Figure:
    """One panel per trained variant (train and valid objective per epoch, best epoch dashed), then valid MAE of all."""
    trained = {name: run["curves"] for name, run in result["variants"].items() if run["curves"]}
    columns = 3
    rows = -(-(len(trained) + 1) // columns)
    fig, axes = closed_subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    axes = axes.ravel()
    for ax, (name, curves) in zip(axes, trained.items(), strict=False):
        epochs = np.arange(1, len(curves["train_loss"]) + 1)
        ax.plot(epochs, curves["train_loss"], label="train")
        ax.plot(epochs, curves["valid_loss"], label="valid")
        ax.axvline(curves["best_epoch"] + 1, color="k", linestyle="--", linewidth=1, label="best epoch")
        ax.set(xlabel="epoch", ylabel="objective", title=name)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    summary = axes[len(trained)]
    # colours unlike the train/valid pair of the other panels (tab:blue, tab:orange)
    colours = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
    for (name, curves), colour in zip(trained.items(), colours, strict=False):
        summary.plot(np.arange(1, len(curves["valid_mae"]) + 1), curves["valid_mae"], label=name, color=colour)
    summary.set(xlabel="epoch", ylabel="MAE", title="valid MAE (multimodal label), all variants")
    summary.title.set_fontsize(9)
    handles, labels = summary.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, title="last panel", title_fontsize=8)
    for ax in axes[len(trained) + 1 :]:
        ax.set_visible(False)
    return fig


def plot_confusion_matrices(result: dict, split: str = "test", classes: int = 7) -> Figure:
    """A confusion matrix per variant on split "test" or "conflict" (the test conflict subset).

    classes=7: round(clip(score, −3, 3)) of target and prediction, as Acc-7 counts them.
    classes=2: samples with target 0 dropped, then positive (> 0) vs negative (≤ 0), as Acc-2
    (non-zero) counts them.
    Cells show counts, coloured by the share of their true-class row.
    """
    if classes not in (2, 7):
        raise ValueError(f"classes must be 2 or 7, not {classes}")
    labels = result["labels"]
    keep = torch.ones_like(labels, dtype=torch.bool)
    if split == "conflict":
        if result["conflict"] is None:
            raise ValueError("this data marks no conflict subset")
        keep = result["conflict"].clone()
    elif split != "test":
        raise ValueError(f"split must be 'test' or 'conflict', not {split!r}")
    if classes == 2:
        keep &= labels != 0

    def to_class(scores: torch.Tensor) -> torch.Tensor:
        if classes == 7:
            return (scores.clamp(-3, 3).round() + 3).long()
        return (scores > 0).long()

    names = [str(c) for c in range(-3, 4)] if classes == 7 else ["negative", "positive"]
    variants = result["variants"]
    columns = min(3, len(variants))
    rows = -(-len(variants) // columns)
    fig, axes = closed_subplots(rows, columns, figsize=(4 * columns, 3.8 * rows), squeeze=False)
    axes = axes.ravel()
    truth = to_class(labels[keep])  # (n,)
    for ax, (name, run) in zip(axes, variants.items(), strict=False):
        guess = to_class(run["predictions"][keep])  # (n,)
        counts = torch.zeros(classes, classes, dtype=torch.long)
        counts.index_put_((truth, guess), torch.ones_like(truth), accumulate=True)  # rows: truth
        shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
        ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
        for i in range(classes):
            for j in range(classes):
                colour = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=colour)
        accuracy = (truth == guess).double().mean().item()
        ax.set_xticks(range(classes), names)
        ax.set_yticks(range(classes), names)
        ax.set(xlabel="predicted", ylabel="true")
        ax.set_title(f"{name}\nacc {100 * accuracy:.1f}%", fontsize=9)
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    where = "test set" if split == "test" else "test conflict subset"
    fig.suptitle(f"{classes}-class confusion matrices on the {where} ({len(truth)} samples)")
    return fig

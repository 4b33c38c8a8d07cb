"""Chapter 06 recipe: the weak modality is under-trained by joint training; OGM-GE fixes it.

The data (``xmodal_ref.data.imbalance``): eight classes; modality A is strong but present on only 70 % of the
samples, modality V is always there but its input is scaled by 0.1, so plain SGD learns it slowly. Three
runs of one model, from the same initial weights over the same batches:

* **naive joint training**: two MLP encoders 64 → 32 → 32 (ReLU) and OGM-GE's concatenation head
  Linear(64, 8), trained on the cross-entropy of the fused logits;
* **OGM-GE**: the same, but during the first ``MODULATION_EPOCHS`` epochs every batch computes
  ``ogm_ge_coefficients`` from the two unimodal logits and replaces the gradients of every parameter of each
  encoder by ``ogm_ge_modulate(grads, k, enhance=True)`` between the backward pass and the optimiser step;
* **V only**: the same model with A zeroed in training and testing, the upper bound of what V's encoder can
  learn here.

The unimodal logits are OGM-GE's: with the head's weight W = [W_a | W_v] and bias b, logits_a = f_a W_aᵀ + b/2
and logits_v = f_v W_vᵀ + b/2, so the fused logits are their sum. What it measures, on the test split:
fused accuracy; each frozen encoder's ridge probe (train → test features); the perceptual score of each
modality; the accuracy with every subset of modalities (a missing one replaced by its training mean) and
the Shapley values of A and V from that table; and, after every epoch, both probes and the mean OGM
coefficients of the epoch. Naive training leaves V's encoder far behind the V-only one; OGM-GE slows A's
encoder down while A dominates, so V's encoder learns more and the fused model (and the model with A
missing) gets better.

The measurements use the chapter's reference diagnostics ``ridge_probe_accuracy``, ``perceptual_score``,
``subset_accuracies`` and ``shapley_values``; the two OGM-GE functions are arguments, so a learner's can drive
training.
The training loop is its own, not ``xmodal_ref.common.training.train_one_cycle``: OGM-GE must rewrite the
encoders' gradients between ``backward`` and the optimiser step, which that loop does in one go, and its
AdamW would undo the modulation (Adam divides each gradient by its running scale, so scaling a gradient by k
barely changes the step) and also the slowness of V's small inputs that this recipe is about. Plain SGD with
momentum, as in the OGM-GE paper, keeps both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from xmodal_ref.common.device import one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.data.imbalance import DIM, N_CLASSES, TwoModalitySet, imbalance_splits
from xmodal_ref.imbalance.reference import (
    ogm_ge_coefficients,
    ogm_ge_modulate,
    perceptual_score,
    ridge_probe_accuracy,
    shapley_values,
    subset_accuracies,
)

Coefficients = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[float, float]]
Modulate = Callable[..., list[torch.Tensor]]  # ogm_ge_modulate(grads, coeff, enhance=…, generator=…)

FEATURES = 32  # width of each encoder's hidden layer and output
EPOCHS = 15
MODULATION_EPOCHS = 8  # OGM-GE modulates epochs 0 … 7 (the official default: 50 of 100)
ALPHA = 0.5
BATCH_SIZE = 64
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
PERMUTATIONS = 5  # for each perceptual score
PROBE_L2 = 1.0
MODELS: dict[str, str] = {"naive": "naive joint", "ogm_ge": "OGM-GE", "v_only": "V only"}  # id → display name
JOINT = ("naive", "ogm_ge")  # the runs that see A
COLOURS = {"naive": "tab:red", "ogm_ge": "tab:blue", "v_only": "tab:green"}


class ConcatFusion(nn.Module):
    """Two MLP encoders, their features concatenated, one linear head (OGM-GE's concat fusion).

    forward(a, v) with a, v (B, DIM) → fused logits (B, N_CLASSES); ``features`` gives the two encoders'
    outputs (B, FEATURES) each, ``unimodal_logits`` OGM-GE's per-modality logits from them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder_a, self.encoder_v = (
            nn.Sequential(nn.Linear(DIM, FEATURES), nn.ReLU(), nn.Linear(FEATURES, FEATURES), nn.ReLU())
            for _ in range(2)
        )
        self.head = nn.Linear(2 * FEATURES, N_CLASSES)

    def features(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder_a(a), self.encoder_v(v)  # (B, FEATURES) each

    def unimodal_logits(self, features_a: torch.Tensor, features_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits_u = f_u W_uᵀ + b/2 for the head's weight halves W_a = W[:, :FEATURES], W_v = W[:, FEATURES:]."""
        weight, half_bias = self.head.weight, self.head.bias / 2
        logits_a = features_a @ weight[:, :FEATURES].T + half_bias  # (B, N_CLASSES)
        logits_v = features_v @ weight[:, FEATURES:].T + half_bias  # (B, N_CLASSES)
        return logits_a, logits_v

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat(self.features(a, v), dim=1))  # (B, N_CLASSES)


def _inputs_a(model_id: str, split: TwoModalitySet) -> torch.Tensor:
    """The A input a run sees: the split's, or zeros for the V-only run."""
    return torch.zeros_like(split.a) if model_id == "v_only" else split.a


@torch.no_grad()
def unimodal_probes(model: ConcatFusion, train: TwoModalitySet, test: TwoModalitySet) -> tuple[float, float]:
    """(A probe, V probe): the ridge-probe test accuracy (l2 = PROBE_L2) of each frozen encoder's features.

    The A probe is fitted and tested on the samples whose A is present, the V probe on every sample; both
    encoders read the real inputs, so the V-only model's A encoder (which only ever saw zeros) is probed as
    an untrained one.
    """

    def probe(
        encoder: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor
    ) -> float:
        return ridge_probe_accuracy(encoder(x_train), y_train, encoder(x_test), y_test, N_CLASSES, PROBE_L2)

    kept_train, kept_test = train.a_present, test.a_present  # (N,), (N',) bool
    probe_a = probe(
        model.encoder_a, train.a[kept_train], train.labels[kept_train], test.a[kept_test], test.labels[kept_test]
    )
    probe_v = probe(model.encoder_v, train.v, train.labels, test.v, test.labels)
    return probe_a, probe_v


def _train(
    model_id: str,
    splits: dict[str, TwoModalitySet],
    coefficients: Coefficients,
    modulate: Modulate,
    seed: int,
    epochs: int,
    modulation_epochs: int,
    alpha: float,
    progress: bool,
) -> tuple[ConcatFusion, dict]:
    """Train one run of MODELS with SGD from the seed's initial weights and batch order; record its history."""
    generator = seed_everything(seed)  # every run starts from the same weights and sees the same batches
    noise = torch.Generator().manual_seed(seed)  # GE's noise, apart from the batch order
    model = ConcatFusion()
    train, test = splits["train"], splits["test"]
    inputs_a, inputs_v, labels = _inputs_a(model_id, train), train.v, train.labels
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    steps = len(train) // BATCH_SIZE  # the ragged last batch is dropped
    history: dict[str, list[float]] = {"probe_a": [], "probe_v": [], "k_a": [], "k_v": []}
    losses: list[float] = []

    def record_probes() -> None:
        probe_a, probe_v = unimodal_probes(model, train, test)
        history["probe_a"].append(probe_a)
        history["probe_v"].append(probe_v)

    record_probes()  # before the first step
    with tqdm(total=epochs * steps, disable=not progress, desc=MODELS[model_id]) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(train), generator=generator)  # (N,)
            epoch_k = []
            for step in range(steps):
                batch = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]  # (B,)
                logits_a, logits_v = model.unimodal_logits(*model.features(inputs_a[batch], inputs_v[batch]))
                loss = F.cross_entropy(logits_a + logits_v, labels[batch])  # the fused logits
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if model_id in JOINT:  # what OGM-GE applies (naive: what it would apply)
                    k_a, k_v = coefficients(logits_a.detach(), logits_v.detach(), labels[batch], alpha)
                    epoch_k.append((k_a, k_v))
                    if model_id == "ogm_ge" and epoch < modulation_epochs:
                        for encoder, k in ((model.encoder_a, k_a), (model.encoder_v, k_v)):
                            parameters = list(encoder.parameters())
                            grads = modulate([p.grad for p in parameters], k, enhance=True, generator=noise)
                            for parameter, grad in zip(parameters, grads, strict=True):
                                parameter.grad = grad
                optimizer.step()
                losses.append(loss.item())
                bar.update()
            if epoch_k:
                mean_k = torch.tensor(epoch_k, dtype=torch.float64).mean(dim=0)
                history["k_a"].append(mean_k[0].item())
                history["k_v"].append(mean_k[1].item())
            record_probes()
    return model, {"history": history, "losses": losses}


@torch.no_grad()
def _evaluate(model_id: str, model: ConcatFusion, splits: dict[str, TwoModalitySet], seed: int) -> dict:
    """Fused test accuracy, and for the joint runs the perceptual scores, subset table and Shapley values."""
    train, test = splits["train"], splits["test"]
    inputs = [_inputs_a(model_id, test), test.v]
    fused = (model(*inputs).argmax(dim=1) == test.labels).double().mean().item()
    if model_id not in JOINT:  # V only: A is missing from every input, so there is nothing to attribute to it
        none = dict.fromkeys(("perceptual_a", "perceptual_v", "subset_accuracies", "shapley_a", "shapley_v"))
        return {"fused_accuracy": fused, **none, "accuracy_without_a": fused}
    g = torch.Generator().manual_seed(seed)  # the same permutations for every run of a seed
    permutations = torch.stack([torch.randperm(len(test), generator=g) for _ in range(PERMUTATIONS)])  # (P, N)
    perceptual = [perceptual_score(model, inputs, test.labels, m, permutations) for m in range(2)]
    fill = [train.a.mean(dim=0), train.v.mean(dim=0)]  # (DIM,) each: the training means
    table = subset_accuracies(model, inputs, test.labels, fill)  # (4,): ∅, A, V, A + V
    shapley = shapley_values(table)  # (2,): A, V
    return {
        "fused_accuracy": fused,
        "perceptual_a": perceptual[0],
        "perceptual_v": perceptual[1],
        "subset_accuracies": table,
        "accuracy_without_a": table[0b10].item(),
        "shapley_a": shapley[0].item(),
        "shapley_v": shapley[1].item(),
    }


@memoised
def train_imbalance_models(
    seed: int = 0,
    *,
    coefficients: Coefficients | None = None,
    modulate: Modulate | None = None,
    epochs: int = EPOCHS,
    modulation_epochs: int = MODULATION_EPOCHS,
    alpha: float = ALPHA,
    progress: bool = True,
) -> dict:
    """Train the three runs of MODELS on ``imbalance_splits(seed)`` and measure them on its test split.

    ``coefficients`` and ``modulate`` are OGM-GE's two functions, called as ``coefficients(logits_a, logits_v,
    labels, alpha)`` on every batch of both joint runs and ``modulate(grads, k, enhance=True, generator=g)`` on each
    encoder's gradients in the first ``modulation_epochs`` epochs of the OGM-GE run (None: the references
    ``ogm_ge_coefficients`` and ``ogm_ge_modulate``; pass a learner's to train with them). SGD (lr 0.05,
    momentum 0.9, weight decay 1e-4), batches of 64, ``epochs`` passes, cross-entropy of the fused logits;
    every run starts from the same seeded weights and sees the same batches; GE's noise comes from its own
    generator seeded with ``seed``. Runs on one CPU thread (``one_thread``), so results are deterministic
    under ``seed``.

    Returns {"seed", "epochs", "modulation_epochs", "alpha", "data_seconds", "seconds", "models": {model id:
    {"name", "fused_accuracy", "probe_a", "probe_v" (ridge probes of the final encoders), "accuracy_without_a"
    (A replaced by its training mean; the V-only run: its fused accuracy), "perceptual_a", "perceptual_v",
    "subset_accuracies" ((4,) float64, entry s has A iff bit 0 and V iff bit 1 of s), "shapley_a", "shapley_v"
    (None for the V-only run), "history": {"probe_a", "probe_v" (epochs + 1 values: before training and after
    each epoch), "k_a", "k_v" (each epoch's mean coefficients; empty for V only; for naive, what OGM-GE would
    have applied)}, "losses" (per step), "seconds"}}}, the runs in MODELS order.
    """
    start = time.perf_counter()
    coefficients = ogm_ge_coefficients if coefficients is None else coefficients
    modulate = ogm_ge_modulate if modulate is None else modulate
    models = {}
    with one_thread():
        splits = imbalance_splits(seed)
        data_seconds = time.perf_counter() - start
        for model_id, name in MODELS.items():
            run_start = time.perf_counter()
            model, trained = _train(
                model_id, splits, coefficients, modulate, seed, epochs, modulation_epochs, alpha, progress
            )
            model.eval()
            probes = {"probe_a": trained["history"]["probe_a"][-1], "probe_v": trained["history"]["probe_v"][-1]}
            scores = _evaluate(model_id, model, splits, seed)
            models[model_id] = {"name": name, **scores, **probes, **trained, "seconds": time.perf_counter() - run_start}
    return {
        "seed": seed,
        "epochs": epochs,
        "modulation_epochs": modulation_epochs,
        "alpha": alpha,
        "data_seconds": data_seconds,
        "models": models,
        "seconds": time.perf_counter() - start,
    }


# (key in a run's scores, column title) in the order of every table and of the bar chart.
METRICS: tuple[tuple[str, str], ...] = (
    ("fused_accuracy", "fused acc"),
    ("probe_v", "V probe"),
    ("probe_a", "A probe"),
    ("accuracy_without_a", "acc without A"),
    ("perceptual_v", "perceptual V"),
    ("perceptual_a", "perceptual A"),
    ("shapley_v", "Shapley V"),
    ("shapley_a", "Shapley A"),
)


def format_imbalance_table(results_by_seed: Mapping[int, dict]) -> str:
    """A Markdown table: one row per seed and run, every metric of METRICS ("—" where it does not apply)."""
    lines = [
        "| seed | run | " + " | ".join(title for _, title in METRICS) + " |",
        "|---|---|" + "---:|" * len(METRICS),
    ]
    for seed, result in sorted(results_by_seed.items()):
        for scores in result["models"].values():
            cells = " | ".join("—" if scores[key] is None else f"{scores[key]:.3f}" for key, _ in METRICS)
            lines.append(f"| {seed} | {scores['name']} | {cells} |")
    return "\n".join(lines)


def plot_training_dynamics(result: dict) -> Figure:
    """Over the epochs of one ``train_imbalance_models`` result: the mean OGM coefficients (modulated epochs
    shaded; naive's are what OGM-GE would have applied), then V's and A's ridge probes of every run.
    """
    fig, (ax_k, ax_v, ax_a) = closed_subplots(1, 3, figsize=(14, 3.8))
    modulated = result["modulation_epochs"]
    ax_k.axvspan(0.5, modulated + 0.5, color="tab:blue", alpha=0.08, label="OGM-GE modulates")
    for model_id in JOINT:
        history, name = result["models"][model_id]["history"], MODELS[model_id]
        epochs = np.arange(1, len(history["k_a"]) + 1)
        ax_k.plot(epochs, history["k_a"], color=COLOURS[model_id], label=f"{name}: k_A")
        ax_k.plot(epochs, history["k_v"], color=COLOURS[model_id], linestyle="--", label=f"{name}: k_V")
    ax_k.set(xlabel="epoch", ylabel="mean coefficient", ylim=(0, 1.05), title="OGM-GE coefficients (1 = untouched)")
    ax_k.legend(fontsize=7)
    for ax, key, title in ((ax_v, "probe_v", "V encoder"), (ax_a, "probe_a", "A encoder (A present)")):
        for model_id, scores in result["models"].items():
            ax.plot(scores["history"][key], color=COLOURS[model_id], marker=".", label=MODELS[model_id])
        ax.axhline(1 / N_CLASSES, color="k", linestyle=":", linewidth=1, label="chance")
        ax.set(xlabel="epoch", ylabel="ridge-probe test accuracy", ylim=(0, 1), title=f"{title}: linear probe")
        ax.legend(fontsize=7)
    return fig


def plot_imbalance_table(results_by_seed: Mapping[int, dict]) -> Figure:
    """Every metric of METRICS per run: a bar at the mean over the seeds and a dot per seed (V only has no
    perceptual scores or Shapley values: A is missing from all its inputs).
    """
    fig, ax = closed_subplots(figsize=(12, 4))
    width = 0.8 / len(MODELS)
    for index, (model_id, name) in enumerate(MODELS.items()):
        runs = [result["models"][model_id] for result in results_by_seed.values()]
        shown = [m for m, (key, _) in enumerate(METRICS) if runs[0][key] is not None]
        values = np.array([[run[METRICS[m][0]] for m in shown] for run in runs])  # (seeds, shown metrics)
        x = np.array(shown) + (index - (len(MODELS) - 1) / 2) * width
        ax.bar(x, values.mean(axis=0), width, color=COLOURS[model_id], alpha=0.7, label=name)
        ax.scatter(np.tile(x, len(runs)), values.ravel(), color="k", s=8, zorder=3)
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(range(len(METRICS)), [title for _, title in METRICS])
    seeds = ("seed " if len(results_by_seed) == 1 else "seeds ") + ", ".join(map(str, results_by_seed))
    ax.set(ylabel="accuracy · score · Shapley value", title=f"Naive joint vs OGM-GE vs V only ({seeds})")
    ax.legend(fontsize=8)
    return fig

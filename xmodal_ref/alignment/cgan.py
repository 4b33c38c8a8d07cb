"""Chapter 04 · a small conditional GAN (条件生成对抗网络) that draws shapes from their attributes.

The generator maps noise z and a condition y = (colour, shape, position) to a 32×32 image of the
shapes data; the discriminator scores (image, condition) pairs. Conditioning follows two papers:

* the discriminator's logit has a *projection* term ⟨embed(y), φ(x)⟩ (Miyato & Koyama 2018,
  arXiv:1802.05637), so it judges whether the image fits the condition, not only whether it looks real;
* it also has an *auxiliary classifier* head per attribute (AC-GAN, Odena et al. 2017,
  arXiv:1610.09585), trained on real images only; the generator is rewarded when that head
  recognises the requested attributes in its fakes.

Success is judged by a separate ``AttributeClassifier`` trained on real renders alone: using the
GAN's own auxiliary head as the judge would grade the generator with the classifier it was
trained to please. The recipe reports what fraction of generated images the judge reads as the
requested colour, shape and position, and how diverse the samples of one condition are compared
with real renders of it (a ratio well below 1 is partial mode collapse, 模式崩溃).
"""

from __future__ import annotations

import itertools
import time

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from xmodal_ref.common.device import default_device, one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.common.training import train_one_cycle
from xmodal_ref.contrastive.mini_clip import ImageEncoder
from xmodal_ref.data import COLOURS, POSITIONS, SHAPES, ShapesCaptions, shapes_splits

#: Attribute names and their vocabularies, in the column order of ``ShapesCaptions.attributes``.
ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": COLOURS, "shape": SHAPES, "position": POSITIONS}
ATTRIBUTE_SIZES: tuple[int, ...] = tuple(len(values) for values in ATTRIBUTES.values())
NOISE_DIM = 64
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
BETAS = (0.5, 0.999)  # DCGAN's Adam setting (Radford et al. 2015, arXiv:1511.06434)
AUX_WEIGHT = 1.0


def all_conditions() -> torch.Tensor:
    """Every (colour, shape, position) combination, in lexicographic order: (96, 3) int64."""
    return torch.tensor(list(itertools.product(*(range(n) for n in ATTRIBUTE_SIZES))))


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, Σ sizes) → one (B, size) block of logits per attribute, in ``ATTRIBUTES`` order."""
    return logits.split(ATTRIBUTE_SIZES, dim=-1)


def attribute_cross_entropy(logits: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Sum over attributes of the mean cross-entropy: logits (B, Σ sizes), attributes (B, 3)."""
    return sum(F.cross_entropy(block, attributes[:, a]) for a, block in enumerate(split_logits(logits)))


class AttributeClassifier(nn.Module):
    """The judge: mini-CLIP's image encoder with one logit per attribute value, (B, 3, S, S) → (B, 3).

    ``held_out_accuracy`` is set by ``train_attribute_classifier``: the accuracy per attribute on
    held-out real renders, the ceiling for any score the judge gives generated images.
    """

    def __init__(self, image_size: int = 32) -> None:
        super().__init__()
        self.encoder = ImageEncoder(embed_dim=sum(ATTRIBUTE_SIZES), image_size=image_size)
        self.held_out_accuracy: dict[str, float] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)  # (B, Σ sizes)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The most likely value of every attribute: (N, 3) int64, on the images' device (any device)."""
        self.eval()
        device = next(self.parameters()).device
        logits = torch.cat([self(chunk.to(device)) for chunk in images.split(batch_size)])  # (N, Σ sizes)
        return torch.stack([block.argmax(-1) for block in split_logits(logits)], dim=-1).to(images.device)


def per_attribute_accuracy(predicted: torch.Tensor, attributes: torch.Tensor) -> dict[str, float]:
    """Accuracy of each attribute column and of all three at once ("all"), as fractions."""
    hits = predicted == attributes  # (N, 3)
    accuracy = {name: hits[:, a].float().mean().item() for a, name in enumerate(ATTRIBUTES)}
    return {**accuracy, "all": hits.all(dim=-1).float().mean().item()}


@memoised
def train_attribute_classifier(
    seed: int = 0, epochs: int = 4, batch_size: int = 128, device: torch.device | str | None = None
) -> AttributeClassifier:
    """Train the judge on the real renders of ``shapes_splits(seed + 100)``; record its test accuracy.

    The seed offset keeps the judge's renders apart from the ones the GAN trains on.
    """
    device = default_device() if device is None else torch.device(device)
    with one_thread():
        generator = seed_everything(seed + 100)
        splits = shapes_splits(seed + 100)
        train, test = splits["train"], splits["test"]
        images, attributes = train.images.to(device), train.attributes.to(device)
        classifier = AttributeClassifier(train.images.shape[-1]).to(device)

        def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
            batch = batch.to(device)  # (B,)
            return attribute_cross_entropy(classifier(images[batch]), attributes[batch])

        classifier.train()
        train_one_cycle(
            classifier.parameters(),
            len(train),
            loss_of_batch,
            epochs=epochs,
            batch_size=batch_size,
            generator=generator,
            progress=False,
        )
        classifier.held_out_accuracy = per_attribute_accuracy(classifier.predict(test.images), test.attributes)
    return classifier


class ConditionEmbedding(nn.Module):
    """One learned vector per attribute value, concatenated: (B, 3) int64 → (B, 3·dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, dim) for n in ATTRIBUTE_SIZES)

    def forward(self, attributes: torch.Tensor) -> torch.Tensor:
        return torch.cat([table(attributes[:, a]) for a, table in enumerate(self.tables)], dim=-1)


def upsample_block(c_in: int, c_out: int) -> nn.Sequential:
    """(B, c_in, n, n) → (B, c_out, 2n, 2n): a 3×3 stride-2 transposed conv, BatchNorm, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class Generator(nn.Module):
    """(noise (B, Z), attributes (B, 3)) → images (B, 3, 32, 32) in [0, 1], DCGAN-style."""

    def __init__(self, noise_dim: int = NOISE_DIM, width: int = 32, condition_dim: int = 32) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.channels = 4 * width
        self.condition = ConditionEmbedding(condition_dim)
        self.project = nn.Sequential(
            nn.Linear(noise_dim + 3 * condition_dim, self.channels * 4 * 4),
            nn.BatchNorm1d(self.channels * 4 * 4),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            upsample_block(4 * width, 2 * width),  # 4 → 8
            upsample_block(2 * width, width),  # 8 → 16
            nn.ConvTranspose2d(width, 3, kernel_size=3, stride=2, padding=1, output_padding=1),  # 16 → 32
            nn.Sigmoid(),
        )

    def forward(self, noise: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([noise, self.condition(attributes)], dim=-1))  # (B, 4W·16)
        return self.upsample(h.view(-1, self.channels, 4, 4))  # (B, 3, 32, 32)

    @torch.no_grad()
    def sample(self, attributes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images for the (N, 3) conditions, in eval mode, noise drawn on the CPU: (N, 3, 32, 32)."""
        self.eval()
        device = next(self.parameters()).device
        noise = torch.randn(len(attributes), self.noise_dim, generator=generator).to(device)
        return self(noise, attributes.to(device))


class Discriminator(nn.Module):
    """(images (B, 3, 32, 32), attributes (B, 3)) → (real/fake logits (B,), attribute logits (B, Σ sizes)).

    logit = ψ(φ(x)) + Σ_a ⟨embed_a(y_a), φ(x)⟩: an unconditional score plus the projection term.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        channels = (3, width, 2 * width, 4 * width)
        self.features = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.2))
                for c_in, c_out in itertools.pairwise(channels)
            ),  # 32 → 4
            nn.Flatten(),
            nn.Linear(channels[-1] * 4 * 4, feature_dim),
            nn.LeakyReLU(0.2),
        )
        self.realness = nn.Linear(feature_dim, 1)
        self.projection = ConditionEmbedding(feature_dim)
        self.classifier = nn.Linear(feature_dim, sum(ATTRIBUTE_SIZES))

    def forward(self, images: torch.Tensor, attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.features(images)  # (B, F)
        embedded = self.projection(attributes).view(len(attributes), 3, -1)  # (B, 3, F)
        projection = torch.einsum("bf,baf->b", phi, embedded)  # (B,)
        return self.realness(phi).squeeze(-1) + projection, self.classifier(phi)


def attribute_accuracy(
    generator: Generator, classifier: AttributeClassifier, samples_per_condition: int = 4, seed: int = 0
) -> dict[str, float]:
    """The judge's accuracy on ``samples_per_condition`` generated images for each of the 96 conditions."""
    conditions = all_conditions().repeat_interleave(samples_per_condition, dim=0)  # (96·k, 3)
    images = generator.sample(conditions, torch.Generator().manual_seed(seed)).cpu()
    return per_attribute_accuracy(classifier.predict(images), conditions)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean L2 distance between distinct images of a (K, 3, S, S) group, K ≥ 2."""
    flat = images.flatten(1)  # (K, 3·S·S)
    k = len(flat)
    return (torch.cdist(flat, flat).sum() / (k * (k - 1))).item()


def sample_diversity(generator: Generator, real: ShapesCaptions, samples: int = 8, seed: int = 0) -> dict[str, float]:
    """How varied one condition's samples are, next to real renders of the same condition.

    For every condition with at least ``samples`` renders in ``real``, the mean pairwise L2 distance
    between ``samples`` generated images and between ``samples`` real ones; returns both averages
    and their "ratio" (generated / real): near 1 is real-like variety, near 0 is mode collapse.
    """
    g = torch.Generator().manual_seed(seed)
    generated, reference = [], []
    for condition in all_conditions():
        rows = (real.attributes == condition).all(dim=-1).nonzero().squeeze(-1)  # (K,)
        if len(rows) < samples:
            continue
        reference.append(mean_pairwise_distance(real.images[rows[:samples]]))
        generated.append(mean_pairwise_distance(generator.sample(condition.expand(samples, 3), g).cpu()))
    fake, true = sum(generated) / len(generated), sum(reference) / len(reference)
    return {"generated": fake, "real": true, "ratio": fake / true}


@memoised
def train_conditional_gan(
    seed: int = 0,
    steps: int = 1500,
    progress: bool = True,
    device: torch.device | str | None = None,
    *,
    classifier: AttributeClassifier | None = None,
    eval_every: int = 250,
) -> dict:
    """Train a ``Generator``/``Discriminator`` pair on ``shapes_splits(seed)["train"]`` for ``steps`` steps.

    Each step: the discriminator minimises the hinge loss on a real batch and a fake batch with the
    real batch's conditions, plus the auxiliary cross-entropy on the real batch; the generator
    minimises −logit(fake) plus ``AUX_WEIGHT`` times the auxiliary cross-entropy of its fakes.
    Runs on one CPU thread (``one_thread``): deterministic under ``seed`` on a device.

    With a ``classifier`` (the judge), ``attribute_accuracy`` is measured every ``eval_every`` steps
    and at the end. Returns a dict: "generator", "discriminator", "seed", "steps", "losses"
    ({"discriminator", "generator"} per step), "curve" (a list of {"step", "seconds", "colour",
    "shape", "position", "all"}; empty without a classifier), "accuracy" (the last point of the
    curve, or None), "seconds" (training wall time, evaluation excluded).
    """
    device = default_device() if device is None else torch.device(device)
    with one_thread():
        g = seed_everything(seed)
        train = shapes_splits(seed)["train"]
        images, attributes = train.images.to(device), train.attributes.to(device)
        generator, discriminator = Generator().to(device), Discriminator().to(device)
        optimizer_g = torch.optim.Adam(generator.parameters(), lr=LEARNING_RATE, betas=BETAS)
        optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=LEARNING_RATE, betas=BETAS)
        losses: dict[str, list[float]] = {"discriminator": [], "generator": []}
        curve: list[dict[str, float]] = []
        seconds = 0.0

        def evaluate(step: int) -> None:
            if classifier is not None:
                curve.append({"step": step, "seconds": seconds, **attribute_accuracy(generator, classifier, seed=seed)})

        for step in tqdm(range(1, steps + 1), disable=not progress, desc="conditional GAN"):
            tick = time.perf_counter()
            generator.train()
            batch = torch.randint(len(train), (BATCH_SIZE,), generator=g).to(device)  # (B,)
            real, condition = images[batch], attributes[batch]  # (B, 3, S, S), (B, 3)
            fake = generator(torch.randn(BATCH_SIZE, NOISE_DIM, generator=g).to(device), condition)

            real_logit, real_classes = discriminator(real, condition)
            fake_logit, _ = discriminator(fake.detach(), condition)
            loss_d = (
                F.relu(1 - real_logit).mean()
                + F.relu(1 + fake_logit).mean()
                + AUX_WEIGHT * attribute_cross_entropy(real_classes, condition)
            )
            optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward()
            optimizer_d.step()

            fake_logit, fake_classes = discriminator(fake, condition)
            loss_g = -fake_logit.mean() + AUX_WEIGHT * attribute_cross_entropy(fake_classes, condition)
            optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimizer_g.step()

            losses["discriminator"].append(loss_d.item())
            losses["generator"].append(loss_g.item())
            seconds += time.perf_counter() - tick
            if step % eval_every == 0 or step == steps:
                evaluate(step)

    return {
        "generator": generator,
        "discriminator": discriminator,
        "seed": seed,
        "steps": steps,
        "losses": losses,
        "curve": curve,
        "accuracy": curve[-1] if curve else None,
        "seconds": seconds,
    }


def plot_samples_grid(
    generator: Generator,
    position: int | None = None,
    samples_per_cell: int = 4,
    seed: int = 0,
    classifier: AttributeClassifier | None = None,
) -> Figure:
    """One row per colour, one column block per shape: ``samples_per_cell`` samples of each condition.

    All samples ask for ``position`` (an index into POSITIONS; None cycles through the four positions
    across a cell's samples). With the judge ``classifier``, a sample it reads differently from the
    request gets a red frame.
    """
    n_colours, n_shapes, n_positions = ATTRIBUTE_SIZES
    k = samples_per_cell
    colour, shape, sample = torch.meshgrid(
        torch.arange(n_colours), torch.arange(n_shapes), torch.arange(k), indexing="ij"
    )  # (C, S, k) each
    where = torch.full_like(sample, position) if position is not None else sample % n_positions
    conditions = torch.stack([colour, shape, where], dim=-1).view(-1, 3)  # (C·S·k, 3), row-major
    images = generator.sample(conditions, torch.Generator().manual_seed(seed)).cpu()  # (C·S·k, 3, 32, 32)
    wrong = torch.zeros(len(conditions), dtype=torch.bool)
    if classifier is not None:
        wrong = (classifier.predict(images) != conditions).any(dim=-1)

    fig, axes = closed_subplots(n_colours, n_shapes * k, figsize=(0.7 * n_shapes * k, 0.8 * n_colours), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.imshow(images[index].permute(1, 2, 0).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(color="red" if wrong[index] else "none", linewidth=2)
    for c, name in enumerate(COLOURS):
        axes[c, 0].set_ylabel(name, rotation=0, ha="right", va="center")
    for s, name in enumerate(SHAPES):
        axes[0, s * k].set_title(name, loc="left")
    where_text = "positions cycle" if position is None else POSITIONS[position]
    judged = f"; red frame: the judge reads another attribute ({wrong.float().mean():.0%})" if classifier else ""
    fig.suptitle(f"Generated samples per (colour, shape); {where_text}{judged}")
    return fig


def plot_accuracy_curve(results: dict) -> Figure:
    """The judge's accuracy on generated images against training time, per attribute and for all three."""
    curve = results["curve"]
    fig, ax = closed_subplots(figsize=(6, 3.2))
    seconds = [point["seconds"] for point in curve]
    for key in ATTRIBUTES:
        ax.plot(seconds, [100 * point[key] for point in curve], marker="o", label=key)
    all_three = [100 * point["all"] for point in curve]
    ax.plot(seconds, all_three, color="black", linestyle="--", linewidth=2, label="all three")
    ax.axhline(80, color="grey", linestyle=":", label="target (all three)")
    ax.set(xlabel="training seconds", ylabel="judge accuracy (%)", ylim=(0, 102), title="What the judge sees")
    ax.legend(loc="lower right", fontsize="small")
    return fig

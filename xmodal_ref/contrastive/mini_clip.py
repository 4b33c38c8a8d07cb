"""A small CLIP-style dual encoder for the shapes data, and a CPU training recipe for it.

``train_mini_clip`` trains both encoders from scratch with a contrastive loss (CLIP's by default,
or any function with the same signature), then measures cross-modal retrieval on held-out renders.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xmodal_ref.common.device import default_device, seed_everything
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.common.training import train_one_cycle
from xmodal_ref.contrastive import LearnableLogitScale, clip_loss, modality_gap, recall_at_k
from xmodal_ref.data import ShapesCaptions, shapes_splits

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def strided_conv_stem(channels: Sequence[int]) -> nn.Sequential:
    """One 3×3 stride-2 conv + BatchNorm + ReLU block per consecutive pair of ``channels``.

    (B, channels[0], S, S) → (B, channels[-1], S', S'): each block maps a side of n to ⌈n/2⌉.
    Strided convolutions rather than conv + max-pool keep a training step cheap on the CPU.
    """
    return nn.Sequential(
        *(
            nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in itertools.pairwise(channels)
        )
    )


class ImageEncoder(nn.Module):
    """Three stride-2 conv blocks, then a linear head: (B, 3, S, S) → (B, D).

    The head sees the whole ⌈S/8⌉² feature map rather than a global average, so it can tell where
    the shape is as well as what it is.
    """

    def __init__(self, embed_dim: int = 64, image_size: int = 32, width: int = 32) -> None:
        super().__init__()
        channels = (3, width, 2 * width, 2 * width)
        self.features = strided_conv_stem(channels)
        side = math.ceil(image_size / 8)  # each block maps a side of n to ⌈n/2⌉
        self.head = nn.Linear(channels[-1] * side**2, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images)  # (B, C, ⌈S/8⌉, ⌈S/8⌉)
        return self.head(x.flatten(1))  # (B, D)


class TextEncoder(nn.Module):
    """Token embeddings, mean over the real tokens only, then an MLP: (B, L) → (B, D).

    Positions at or beyond ``lengths`` are ignored whatever token they hold, so padding never
    changes the output. A bag of words is enough here: every attribute word is unique.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, width: int = 128) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, embed_dim))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]  # (B, L)
        x = self.embedding(tokens) * mask[..., None]  # (B, L, W), padding zeroed
        pooled = x.sum(dim=1) / lengths[:, None].clamp(min=1)  # (B, W)
        return self.mlp(pooled)  # (B, D)


class MiniClip(nn.Module):
    """Image and text encoders into one D-dim space, plus CLIP's learnable logit scale."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, image_size: int = 32) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder(embed_dim, image_size)
        self.text_encoder = TextEncoder(vocab_size, embed_dim)
        self.logit_scale = LearnableLogitScale()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, D), L2-normalised."""
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens and (B,) lengths → (B, D), L2-normalised."""
        return F.normalize(self.text_encoder(tokens, lengths), dim=-1)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (image_features (B, D), text_features (B, D), logit_scale 0-dim)."""
        return self.encode_image(images), self.encode_text(tokens, lengths), self.logit_scale()


@torch.no_grad()
def embed(model: MiniClip, split: ShapesCaptions, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of a whole split in eval mode, on the CPU: (image (N, D), text (N, D))."""
    was_training = model.training
    model.eval()
    images = model.encode_image(split.images.to(device)).cpu()
    texts = model.encode_text(split.tokens.to(device), split.lengths.to(device)).cpu()
    model.train(was_training)
    return images, texts


def retrieval_metrics(
    test: ShapesCaptions, embeddings: tuple[torch.Tensor, torch.Tensor], initial: tuple[torch.Tensor, torch.Tensor]
) -> dict:
    """Cross-modal retrieval and the modality gap of a split's embeddings, after and before training.

    embeddings, initial: (image (N, D), text (N, D)) of ``test`` after and before training. Any test
    item with the same attributes counts as a correct answer (``ShapesCaptions.positives``). Returns
    R@1/R@5 in both directions ("r1_i2t", "r1_t2i", "r5_i2t", "r5_t2i"), "modality_gap" and
    "initial_modality_gap", and the embeddings ("image_embeddings", "text_embeddings",
    "initial_image_embeddings", "initial_text_embeddings").
    """
    image_embeddings, text_embeddings = embeddings
    similarity = image_embeddings @ text_embeddings.T  # (N images, N captions)
    positives = test.positives()  # (N, N), symmetric
    recalls = {
        f"r{k}_{direction}": recall_at_k(scores, relevant, k)
        for k in (1, 5)
        for direction, scores, relevant in (("i2t", similarity, positives), ("t2i", similarity.T, positives.T))
    }
    return {
        **recalls,
        "modality_gap": modality_gap(*embeddings).item(),
        "initial_modality_gap": modality_gap(*initial).item(),
        "image_embeddings": image_embeddings,
        "text_embeddings": text_embeddings,
        "initial_image_embeddings": initial[0],
        "initial_text_embeddings": initial[1],
    }


@memoised
def train_mini_clip(
    loss_fn: LossFn | None = None,
    *,
    seed: int = 0,
    epochs: int = 6,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict:
    """Train a MiniClip on ``shapes_splits(seed)["train"]`` and evaluate retrieval on "test".

    loss_fn(image_features, text_features, logit_scale) → 0-dim loss; defaults to ``clip_loss``.
    Deterministic under ``seed`` on a given device. Returns a dict with every key of
    ``retrieval_metrics`` on the test split (R@1/R@5 both ways, the modality gap after and before
    training, the embeddings on the CPU), "seconds" (training wall time), "losses" (one float per
    step), "logit_scale", the "test" split and the "model".
    """
    loss_fn = clip_loss if loss_fn is None else loss_fn
    device = default_device() if device is None else torch.device(device)
    generator = seed_everything(seed)
    splits = shapes_splits(seed)
    train, test = splits["train"], splits["test"]
    images, tokens, lengths = (t.to(device) for t in (train.images, train.tokens, train.lengths))

    model = MiniClip(len(train.vocab), image_size=train.images.shape[-1]).to(device)
    initial = embed(model, test, device)  # (image (N, D), text (N, D)) before training

    def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
        batch = batch.to(device)  # (B,)
        return loss_fn(*model(images[batch], tokens[batch], lengths[batch]))

    start = time.perf_counter()
    model.train()
    losses = train_one_cycle(
        model.parameters(),
        len(train),
        loss_of_batch,
        epochs=epochs,
        batch_size=batch_size,
        generator=generator,
        description="mini-CLIP",
        progress=progress,
    )
    seconds = time.perf_counter() - start

    return {
        **retrieval_metrics(test, embed(model, test, device), initial),
        "seconds": seconds,
        "losses": losses,
        "logit_scale": model.logit_scale().item(),
        "test": test,
        "model": model,
    }

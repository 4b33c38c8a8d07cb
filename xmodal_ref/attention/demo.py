"""Chapter 02 demo: caption tokens that cross-attend to image patches, and where they look.

``PatchAttentionModel`` turns a shapes image into a 4×4 grid of patch tokens (a strided conv stem
plus learned positions), lets every caption token query those patches through a ``CrossModalBlock``,
and scores how well the caption matches the image. ``train_patch_attention_model`` trains it to
pick each image's caption out of three hard negatives, the same caption with one attribute word
swapped (colour, shape or position), so a caption can only be checked against the image itself.
``caption_attention_maps`` and ``plot_attention_maps`` show each word's attention over the patches;
``quadrant_attention_mass`` measures how much of it falls on the shape's quadrant.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from xmodal_ref.attention import CrossModalBlock
from xmodal_ref.common.device import default_device, one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.common.training import train_one_cycle
from xmodal_ref.contrastive.mini_clip import strided_conv_stem
from xmodal_ref.data import COLOURS, MAX_TOKENS, POSITIONS, SHAPES, VOCAB, ShapesCaptions, shapes_splits
from xmodal_ref.sentiment import masked_mean

ATTRIBUTES = ("colour", "shape", "position")
_INDEX = {word: i for i, word in enumerate(VOCAB)}
# Vocabulary ids of each attribute value's words. A position has two words, its vertical and its
# horizontal half ("top left" → "top", "left"), and no word belongs to two attributes.
_COLOUR_IDS = torch.tensor([_INDEX[c] for c in COLOURS])  # (len(COLOURS),)
_SHAPE_IDS = torch.tensor([_INDEX[s] for s in SHAPES])  # (len(SHAPES),)
_POSITION_IDS = torch.tensor([[_INDEX[w] for w in p.split()] for p in POSITIONS])  # (len(POSITIONS), 2)


class PatchAttentionModel(nn.Module):
    """Caption tokens cross-attend to image patches; a head scores how well each caption matches.

    Image: ``stem_blocks`` stride-2 conv blocks turn (B, 3, S, S) into a grid × grid map of D-dim
    patch tokens (grid = S / 2^stem_blocks), plus a learned embedding per patch position. Caption:
    token embeddings plus a learned embedding per position. ``depth`` ``CrossModalBlock`` layers
    let the caption tokens (queries) attend to the patches (keys and values); each caption's real
    tokens are then averaged and a linear head gives its matching logit. Caption tokens never
    attend to each other, so each token's attention map is that token's own question to the image,
    and several captions of one image can share one pass over its patches.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        num_heads: int = 4,
        depth: int = 1,
        image_size: int = 32,
        stem_blocks: int = 3,
    ) -> None:
        super().__init__()
        self.grid = image_size // 2**stem_blocks
        self.stem = strided_conv_stem((3, *(dim // 2**i for i in reversed(range(stem_blocks)))))  # widths end at D
        self.patch_positions = nn.Parameter(torch.randn(self.grid**2, dim) * 0.02)
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.token_positions = nn.Parameter(torch.randn(MAX_TOKENS, dim) * 0.02)
        self.blocks = nn.ModuleList(CrossModalBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → patch tokens (B, P, D), P = grid², row-major from the top-left patch."""
        features = self.stem(images)  # (B, D, grid, grid)
        return features.flatten(2).transpose(1, 2) + self.patch_positions  # (B, P, D)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Matching logits (B, C) of each image against its C candidate captions.

        images: (B, 3, S, S); tokens: (B, C, L) caption ids; lengths: (B, C). The C captions of an
        image are laid end to end as one query sequence (B, C·L, D): queries do not interact, so
        this equals C separate passes, but the patches' keys and values are computed once.
        """
        batch, captions, length = tokens.shape
        patches = self.patches(images)  # (B, P, D)
        x = self.token_embedding(tokens) + self.token_positions[:length]  # (B, C, L, D)
        x = x.flatten(1, 2)  # (B, C·L, D)
        for block in self.blocks:
            x = block(x, patches)  # (B, C·L, D)
        x = self.norm(x).unflatten(1, (captions, length)).flatten(0, 1)  # (B·C, L, D)
        pooled = masked_mean(x, lengths.flatten())  # (B·C, D)
        return self.head(pooled).view(batch, captions)  # (B, C)


def swap_attribute(
    tokens: torch.Tensor, attributes: torch.Tensor, which: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hard negatives: each caption with attribute ``which`` changed to a different random value.

    tokens: (N, L) caption ids; attributes: (N, 3) their colour, shape and position indices;
    which: an index into ATTRIBUTES. The template and the other attributes' words stay as they
    were; a position change rewrites whichever of its two words differ. Returns tokens (N, L).
    """
    size = (len(COLOURS), len(SHAPES), len(POSITIONS))[which]
    shift = torch.randint(1, size, (len(tokens),), generator=generator)  # (N,), never 0: the value changes
    new_attributes = attributes.clone()
    new_attributes[:, which] = (attributes[:, which] + shift) % size
    old_words, new_words = _attribute_words(attributes), _attribute_words(new_attributes)  # (N, 4) each
    swapped = tokens.clone()
    for slot in range(old_words.shape[1]):
        swapped = torch.where(tokens == old_words[:, slot, None], new_words[:, slot, None], swapped)
    return swapped


def _attribute_words(attributes: torch.Tensor) -> torch.Tensor:
    """(N, 3) attribute indices → (N, 4) vocabulary ids: colour, shape, vertical and horizontal word."""
    colour, shape, position = attributes.unbind(dim=1)
    return torch.stack([_COLOUR_IDS[colour], _SHAPE_IDS[shape], *_POSITION_IDS[position].unbind(dim=1)], dim=1)


def candidate_captions(
    split: ShapesCaptions, index: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The true caption of each sample at ``index`` (n,), then one hard negative per attribute.

    Returns tokens (n, 1 + len(ATTRIBUTES), L) and lengths (n, 1 + len(ATTRIBUTES)): candidate 0
    is the true caption, candidate 1 + a the caption with attribute ATTRIBUTES[a] swapped.
    """
    tokens, attributes = split.tokens[index], split.attributes[index]  # (n, L), (n, 3)
    negatives = [swap_attribute(tokens, attributes, a, generator) for a in range(len(ATTRIBUTES))]
    candidates = torch.stack([tokens, *negatives], dim=1)  # (n, C, L)
    lengths = split.lengths[index, None].expand(-1, candidates.shape[1])  # (n, C): a swap keeps the length
    return candidates, lengths


@torch.no_grad()
def _logits(
    model: PatchAttentionModel, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """The model's logits (B, C) in eval mode, on the CPU; the model's train/eval mode is restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = model(images.to(device), tokens.to(device), lengths.to(device)).cpu()
    model.train(was_training)
    return logits


def evaluate_matching(model: PatchAttentionModel, split: ShapesCaptions, seed: int = 0) -> dict[str, float]:
    """How well the model picks each image's true caption out of seeded hard negatives.

    Returns "accuracy": the true caption scores above all three negatives (chance 1/4), and
    "<attribute>_accuracy": it scores above the negative that swapped that attribute (chance 1/2).
    """
    index = torch.arange(len(split))
    tokens, lengths = candidate_captions(split, index, torch.Generator().manual_seed(seed))
    logits = _logits(model, split.images, tokens, lengths)  # (N, 4)
    result = {"accuracy": (logits.argmax(dim=1) == 0).float().mean().item()}
    for a, name in enumerate(ATTRIBUTES):
        result[f"{name}_accuracy"] = (logits[:, 0] > logits[:, 1 + a]).float().mean().item()
    return result


@memoised
def train_patch_attention_model(
    seed: int = 0,
    *,
    epochs: int = 4,
    batch_size: int = 128,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict:
    """Train a ``PatchAttentionModel`` to pick out true captions on ``shapes_splits(seed)``.

    Every step scores each training image against its caption and three hard negatives (see
    ``candidate_captions``, drawn afresh each time) with a cross-entropy loss over the four.
    Torch runs on one CPU thread (``one_thread``), so the result is deterministic under ``seed``
    on a device. Returns {"model" (eval mode), "matching" (``evaluate_matching`` on the test
    split), "quadrant_mass" (``quadrant_attention_mass`` on the test split) and
    "initial_quadrant_mass" (the same before training), "losses" (one float per step), "seconds"
    (training wall time), "test" (the test split)}.

    Measured on a 2-core CPU, seeds 0–3: about 12 s of training on one thread. The true caption
    wins in 97–98% of test images (a swapped shape is the hardest to catch; swapped colours and
    positions are caught over 99% of the time). Colour and shape words put 0.37–0.63 of their
    attention on the shape's quadrant, against 0.25 for uniform attention. Position words do not
    consistently look at the shape: their share ranges from 0.15 to 0.40 across seeds, and on the
    half of the image their word names from 0.30 to 0.63, against 0.5. Checking "top" by finding no
    shape at the bottom passes as well as finding one at the top, and which a seed learns is
    arbitrary: an attention map shows where a token looked, not why.
    """
    device = default_device() if device is None else torch.device(device)
    with one_thread():
        generator = seed_everything(seed)
        splits = shapes_splits(seed)
        train, test = splits["train"], splits["test"]
        model = PatchAttentionModel(len(train.vocab), image_size=train.images.shape[-1]).to(device)
        initial_quadrant_mass = quadrant_attention_mass(model, test)
        target = torch.zeros(batch_size, dtype=torch.long, device=device)  # candidate 0 is the true caption

        def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
            tokens, lengths = candidate_captions(train, batch, generator)  # (B, 4, L), (B, 4)
            logits = model(train.images[batch].to(device), tokens.to(device), lengths.to(device))  # (B, 4)
            return F.cross_entropy(logits, target)

        start = time.perf_counter()
        model.train()
        losses = train_one_cycle(
            model.parameters(),
            len(train),
            loss_of_batch,
            epochs=epochs,
            batch_size=batch_size,
            generator=generator,
            description="patch attention",
            progress=progress,
        )
        seconds = time.perf_counter() - start
        model.eval()
        return {
            "model": model,
            "matching": evaluate_matching(model, test, seed),
            "quadrant_mass": quadrant_attention_mass(model, test),
            "initial_quadrant_mass": initial_quadrant_mass,
            "losses": losses,
            "seconds": seconds,
            "test": test,
        }


@contextlib.contextmanager
def _recorded_attention(model: PatchAttentionModel) -> Iterator[list[torch.Tensor]]:
    """Inside the block, the list fills with each block's per-head weights (B, H, Lq, P), in order."""
    weights: list[torch.Tensor] = []
    handles = [
        block.attn.register_forward_hook(lambda _module, _inputs, outputs: weights.append(outputs[1]))
        for block in model.blocks
    ]
    try:
        yield weights
    finally:
        for handle in handles:
            handle.remove()


def attention_weights(model: PatchAttentionModel, split: ShapesCaptions, index: torch.Tensor) -> torch.Tensor:
    """The last block's attention of each true-caption token over the patches, averaged over heads.

    For the samples of ``split`` at ``index`` (n,): (n, L, P) on the CPU; rows at or past a
    caption's length belong to padding. Runs in eval mode.
    """
    with _recorded_attention(model) as recorded:
        _logits(model, split.images[index], split.tokens[index, None], split.lengths[index, None])
    return recorded[-1].mean(dim=1).cpu()  # (n, L, P)


def caption_attention_maps(
    model: PatchAttentionModel, split: ShapesCaptions, index: int
) -> tuple[list[str], torch.Tensor]:
    """The caption of sample ``index`` as words, and each word's attention map (L, grid, grid).

    Maps come from the last cross-attention block, averaged over heads; each sums to 1.
    """
    length = int(split.lengths[index])
    weights = attention_weights(model, split, torch.tensor([index]))[0, :length]  # (L, P)
    words = [split.vocab[t] for t in split.tokens[index, :length].tolist()]
    return words, weights.unflatten(-1, (model.grid, model.grid))


def half_masks(grid: int) -> dict[str, torch.Tensor]:
    """The patches in each half of a grid × grid map: {"top", "bottom", "left", "right"} → (grid²,) bool."""
    low = (torch.arange(grid) >= grid // 2)[:, None].expand(grid, grid)  # (grid, grid): bottom rows
    right = low.T  # (grid, grid): right columns
    return {
        "top": (~low).flatten(),
        "bottom": low.flatten(),
        "left": (~right).flatten(),
        "right": right.flatten(),
    }


def quadrant_masks(grid: int) -> torch.Tensor:
    """(len(POSITIONS), grid²) bool: the patches of each quadrant, in POSITIONS order, row-major."""
    halves = half_masks(grid)
    return torch.stack([halves[vertical] & halves[horizontal] for vertical, horizontal in map(str.split, POSITIONS)])


def quadrant_attention_mass(model: PatchAttentionModel, split: ShapesCaptions) -> dict[str, float]:
    """Where each kind of caption word looks, with the last block's head-averaged attention.

    "colour", "shape", "position" (either word of it) and "other" (template words such as "a",
    "the", "in"): the mean share of attention on the shape's quadrant, over every real token of
    that kind in ``split`` (uniform attention scores 1/4). "position_named_half": the mean share of
    a position word's attention on the half it names, e.g. "top" on the top half (uniform: 1/2).
    """
    weights = attention_weights(model, split, torch.arange(len(split)))  # (N, L, P)
    on_shape = quadrant_masks(model.grid)[split.attributes[:, 2]]  # (N, P)
    shape_mass = (weights * on_shape[:, None, :]).sum(dim=-1)  # (N, L)
    halves = half_masks(model.grid)
    named_half = torch.zeros(len(VOCAB), model.grid**2)  # (V, P): a position word's half, else 0
    for word, mask in halves.items():
        named_half[_INDEX[word]] = mask.float()
    half_mass = (weights * named_half[split.tokens]).sum(dim=-1)  # (N, L)

    real = torch.arange(split.tokens.shape[1]) < split.lengths[:, None]  # (N, L)
    kinds = {
        "colour": torch.isin(split.tokens, _COLOUR_IDS),
        "shape": torch.isin(split.tokens, _SHAPE_IDS),
        "position": torch.isin(split.tokens, _POSITION_IDS.flatten()),
    }
    kinds["other"] = real & ~(kinds["colour"] | kinds["shape"] | kinds["position"])
    result = {kind: shape_mass[chosen].mean().item() for kind, chosen in kinds.items()}
    result["position_named_half"] = half_mass[kinds["position"]].mean().item()
    return result


def plot_attention_maps(image: torch.Tensor, tokens: Sequence[str], maps: torch.Tensor, columns: int = 6) -> Figure:
    """The image, then each token's attention map (grid, grid) laid over it, on one colour scale.

    image: (3, S, S) in [0, 1]; tokens: L words; maps: (L, grid, grid), e.g. from
    ``caption_attention_maps``. Each map is stretched over the whole image, which shows in grey
    beneath it; one colour bar serves every map, so a diffuse map looks dark next to a focused one.
    """
    picture = image.detach().cpu().permute(1, 2, 0).numpy()  # (S, S, 3)
    side = picture.shape[0]
    heat = maps.detach().cpu().float().numpy()  # (L, grid, grid)
    rows = -(-(len(tokens) + 1) // columns)
    fig, axes = closed_subplots(rows, columns, figsize=(1.9 * columns, 2.0 * rows), squeeze=False)
    axes = axes.ravel()
    axes[0].imshow(picture)
    axes[0].set_title("image", fontsize=9)
    pixels = (-0.5, side - 0.5, side - 0.5, -0.5)  # the image's own extent, so the map covers it exactly
    for ax, word, weights in zip(axes[1:], tokens, heat, strict=False):
        ax.imshow(picture.mean(axis=-1), cmap="gray", vmin=0, vmax=1)
        shown = ax.imshow(
            weights, cmap="magma", alpha=0.65, vmin=0, vmax=heat.max(), extent=pixels, interpolation="nearest"
        )
        ax.set_title(repr(word), fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(tokens) + 1 :]:
        ax.set_visible(False)
    if len(tokens):
        fig.colorbar(shown, ax=axes.tolist(), shrink=0.8, label="attention weight")
    return fig

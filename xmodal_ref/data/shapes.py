"""Seeded synthetic image–caption pairs ("shapes") for training a small CLIP on the CPU.

Each image shows one coloured shape in one quadrant; its caption names the colour, the shape and
the position through one of several templates. Nothing is downloaded: a few thousand pairs are
rendered with vectorised torch ops in well under a second, deterministically under the seed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch

from .tokens import pad_token_ids

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")

# One RGB row per entry of COLOURS, far apart so that the jitter below never makes two collide.
_RGB = torch.tensor(
    [
        [0.90, 0.10, 0.10],
        [0.10, 0.75, 0.15],
        [0.15, 0.25, 0.95],
        [0.95, 0.90, 0.10],
        [0.60, 0.15, 0.80],
        [0.10, 0.85, 0.90],
    ]
)  # (len(COLOURS), 3)
# Quadrant centre of each entry of POSITIONS, as (x, y) fractions of the image side.
_CENTRES = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])

TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} in the {position}",
    "{position}: a {colour} {shape}",
    "a photo of a {colour} {shape} at the {position}",
    "the {shape} in the {position} is {colour}",
    "there is a {colour} {shape} in the {position} corner",
)


def tokenize(text: str) -> list[str]:
    """Lower-case words, with ':' and ',' as tokens of their own."""
    return re.findall(r"[a-z]+|[:,]", text.lower())


def _build_vocab() -> tuple[str, ...]:
    """Index 0 is "<pad>", then every template and attribute word, sorted: fixed for all seeds."""
    words = {w for t in TEMPLATES for w in tokenize(t.format(colour="", shape="", position=""))}
    words |= {w for name in COLOURS + SHAPES + POSITIONS for w in tokenize(name)}
    return ("<pad>", *sorted(words))


VOCAB: tuple[str, ...] = _build_vocab()
_INDEX = {word: i for i, word in enumerate(VOCAB)}
# Every caption fits in MAX_TOKENS, so token tensors of all splits have the same width.
MAX_TOKENS = max(
    len(tokenize(t.format(colour=c, shape=s, position=p)))
    for t, c, s, p in itertools.product(TEMPLATES, COLOURS, SHAPES, POSITIONS)
)


@dataclass(frozen=True)
class ShapesCaptions:
    """N image–caption pairs; row i of every tensor and entry i of ``captions`` belong together."""

    images: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    tokens: torch.Tensor  # (N, L) int64, right-padded with 0 ("<pad>")
    lengths: torch.Tensor  # (N,) int64, number of real tokens
    attributes: torch.Tensor  # (N, 3) int64: colour, shape, position indices
    captions: list[str]
    vocab: tuple[str, ...]

    def __len__(self) -> int:
        return self.images.shape[0]

    def positives(self) -> torch.Tensor:
        """(N, N) bool, True where samples i and j have the same colour, shape and position."""
        return (self.attributes[:, None, :] == self.attributes[None, :, :]).all(dim=-1)


def encode_captions(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, MAX_TOKENS) int64, right-padded with 0, and lengths (N,) int64.

    Every word must be in VOCAB (any caption built from TEMPLATES and the attributes is).
    """
    return pad_token_ids([[_INDEX[word] for word in tokenize(caption)] for caption in captions], MAX_TOKENS)


def _shape_masks(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inside-masks of every shape, in SHAPES order: (N, len(SHAPES), S, S) bool.

    dx: (N, 1, S) and dy: (N, S, 1) pixel offsets from the shape's centre; r: (N, 1, 1) its
    radius in pixels.
    """
    ax, ay = dx.abs(), dy.abs()
    circle = dx**2 + dy**2 <= r**2
    square = torch.maximum(ax, ay) <= 0.85 * r
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (ax <= 0.6 * (dy + r))  # apex up, base below
    arm = 0.3 * r
    cross = ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    return torch.stack([circle, square, triangle, cross], dim=1)


def make_shapes_captions(n: int, seed: int, image_size: int = 32) -> ShapesCaptions:
    """Render ``n`` seeded pairs of ``image_size``² images and their captions.

    Colour, shape, position and template are uniform; the shape's size, its offset from the
    quadrant centre, its exact RGB, the background grey and the pixel noise are random, so an
    encoder must read colour, shape and position. Only a generator seeded with ``seed`` is used.
    """
    g = torch.Generator().manual_seed(seed)
    s = image_size
    colour = torch.randint(len(COLOURS), (n,), generator=g)
    shape = torch.randint(len(SHAPES), (n,), generator=g)
    position = torch.randint(len(POSITIONS), (n,), generator=g)
    template = torch.randint(len(TEMPLATES), (n,), generator=g)

    jitter = (torch.rand(n, 2, generator=g) - 0.5) * 0.12  # centre offset, fraction of the side
    centre = (_CENTRES[position] + jitter) * s  # (N, 2) in pixels
    radius = (0.11 + 0.08 * torch.rand(n, generator=g)) * s  # (N,)
    grid = torch.arange(s, dtype=torch.float32) + 0.5  # pixel centres
    dx = grid[None, None, :] - centre[:, 0, None, None]  # (N, 1, S), broadcasts against dy
    dy = grid[None, :, None] - centre[:, 1, None, None]  # (N, S, 1)
    masks = _shape_masks(dx, dy, radius[:, None, None])  # (N, len(SHAPES), S, S)
    mask = masks[torch.arange(n), shape].unsqueeze(1).float()  # (N, 1, S, S)

    rgb = (_RGB[colour] + 0.16 * (torch.rand(n, 3, generator=g) - 0.5)).clamp(0, 1)  # (N, 3)
    background = 0.05 + 0.25 * torch.rand(n, 1, 1, 1, generator=g)  # (N, 1, 1, 1) grey level
    images = torch.lerp(background, rgb[:, :, None, None], mask)  # (N, 3, S, S)
    noise = torch.rand(n, 1, s, s, generator=g).sub_(0.5).mul_(0.2)  # grey, uniform in ±0.1
    images = images.add_(noise).clamp_(0, 1)

    attributes = torch.stack([colour, shape, position], dim=1)  # (N, 3)
    captions = [
        TEMPLATES[t].format(colour=COLOURS[c], shape=SHAPES[sh], position=POSITIONS[p])
        for t, (c, sh, p) in zip(template.tolist(), attributes.tolist(), strict=True)
    ]
    tokens, lengths = encode_captions(captions)
    return ShapesCaptions(images, tokens, lengths, attributes, captions, VOCAB)


def shapes_splits(seed: int = 0, n_train: int = 8192, n_test: int = 1024) -> dict[str, ShapesCaptions]:
    """Train and test splits rendered from different seeds (2·seed and 2·seed + 1).

    Both splits draw from the same attribute combinations, so the test images are held-out
    renders (new sizes, offsets, colours and noise) rather than held-out concepts.
    """
    return {
        "train": make_shapes_captions(n_train, seed=2 * seed),
        "test": make_shapes_captions(n_test, seed=2 * seed + 1),
    }

"""Seeded synthetic video + audio clips whose class needs both modalities: motion direction × audio tone.

Four classes, ``label = 2 · direction + tone`` (``CLASSES``): direction 0 = right, 1 = left; tone 0 = low,
1 = high. Nothing is downloaded; a split of a thousand clips is built in a few milliseconds, deterministically
under the seed (one ``torch.Generator``, the global RNG untouched).

Video: ``FRAMES`` = 8 grey frames of ``SIZE`` × ``SIZE`` = 12 × 12 pixels. A 3 × 3 square of intensity 1
on a background of 0 moves 1 pixel per frame to the right, starting at a random row and one of the columns
0, 1, 2 (so it never leaves the frame), plus Gaussian pixel noise of standard deviation 0.5. A "left" clip is
not rendered: it is exactly the time reversal of a "right" clip, noise included. The clips come in twins:
half of a split's clips are rendered moving right, and each one's time reversal is in the same split as a
left clip (``twin`` links the two). Any model that ignores frame order (frame averaging, TSN's consensus
without a temporal module) therefore gives both twins the same video features, so on direction it is at
chance by construction: a video-only one is right on exactly one twin of every pair.

Audio: ``AUDIO_FRAMES`` = 32 frames × ``AUDIO_BINS`` = 16 frequency bins of a log-spectrogram-like array,
Gaussian noise of standard deviation 0.8, plus 1 on bins 3 and 4 (low tone) or 11 and 12 (high tone) in
every frame. The tone is drawn independently of the direction (each twin draws its own tone and noise), and
the video independently of the tone, so each modality alone carries exactly one of the two factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CLASSES: tuple[str, ...] = ("right · low", "right · high", "left · low", "left · high")
DIRECTIONS: tuple[str, ...] = ("right", "left")
TONES: tuple[str, ...] = ("low", "high")
FRAMES = 8
SIZE = 12
SQUARE = 3
VIDEO_NOISE = 0.5
AUDIO_FRAMES = 32
AUDIO_BINS = 16
AUDIO_NOISE = 0.8
TONE_BINS: tuple[tuple[int, ...], ...] = ((3, 4), (11, 12))  # per entry of TONES


@dataclass(frozen=True)
class VideoAudioClips:
    """N clips; row i of every tensor belongs to clip i. ``labels = 2 * direction + tone`` indexes CLASSES."""

    video: torch.Tensor  # (N, FRAMES, 1, SIZE, SIZE) float32, frames in time order
    audio: torch.Tensor  # (N, AUDIO_FRAMES, AUDIO_BINS) float32: time frames × frequency bins
    labels: torch.Tensor  # (N,) int64 in [0, 4)
    direction: torch.Tensor  # (N,) int64: 0 right, 1 left
    tone: torch.Tensor  # (N,) int64: 0 low, 1 high
    twin: torch.Tensor  # (N,) int64: video[twin[i]] == video[i].flip(0), the other direction

    def __len__(self) -> int:
        return self.labels.shape[0]


def _balanced(n: int, g: torch.Generator) -> torch.Tensor:
    """A random order of n values 0, 1, 0, 1, …: (n,) int64 with ⌈n/2⌉ zeros and ⌊n/2⌋ ones."""
    return (torch.arange(n) % 2)[torch.randperm(n, generator=g)]


def _right_moving_clips(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, FRAMES, 1, SIZE, SIZE): the square moves one pixel right per frame, plus pixel noise."""
    row = torch.randint(SIZE - SQUARE + 1, (n,), generator=g)  # top edge
    column = torch.randint(SIZE - SQUARE - FRAMES + 2, (n,), generator=g)  # left edge at frame 0
    pixels = torch.arange(SIZE)
    rows = (pixels >= row[:, None]) & (pixels < row[:, None] + SQUARE)  # (n, SIZE)
    left_edge = column[:, None] + torch.arange(FRAMES)  # (n, FRAMES)
    columns = (pixels >= left_edge[..., None]) & (pixels < left_edge[..., None] + SQUARE)  # (n, FRAMES, SIZE)
    square = (rows[:, None, :, None] & columns[:, :, None, :]).float()  # (n, FRAMES, SIZE, SIZE)
    return (square + VIDEO_NOISE * torch.randn(square.shape, generator=g)).unsqueeze(2)


def _spectrograms(tone: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n, AUDIO_FRAMES, AUDIO_BINS): noise, plus 1 on the tone's bins (TONE_BINS) in every frame."""
    lines = torch.zeros(len(TONES), AUDIO_BINS)
    for index, bins in enumerate(TONE_BINS):
        lines[index, list(bins)] = 1.0
    noise = AUDIO_NOISE * torch.randn(tone.shape[0], AUDIO_FRAMES, AUDIO_BINS, generator=g)
    return noise + lines[tone][:, None, :]


def make_video_audio_clips(n: int, seed: int) -> VideoAudioClips:
    """Build ``n`` seeded clips (n even, n / 4 of each class); only a generator seeded with ``seed`` is used.

    n / 2 clips are rendered moving right; the split holds each of them and its time reversal (a left
    clip), in a random order. The tones of the right clips and those of the left clips are two balanced
    draws, independent of each other and of the video, so every class has n / 4 clips when 4 divides n.
    """
    if n < 2 or n % 2:
        raise ValueError(f"n must be a positive even number (clips come in twins), got {n}")
    g = torch.Generator().manual_seed(seed)
    half = n // 2
    right = _right_moving_clips(half, g)  # (n/2, FRAMES, 1, SIZE, SIZE)
    direction = torch.arange(n) // half  # (n,): right clips first, their reversals after
    tone = torch.cat([_balanced(half, g), _balanced(half, g)])  # (n,)
    order = torch.randperm(n, generator=g)  # row i of the split is clip order[i]
    position = torch.argsort(order)  # where each clip lands
    twin = position[(order + half) % n]  # clip j's twin is clip j ± n/2
    video = torch.cat([right, right.flip(1)])[order]
    direction, tone = direction[order], tone[order]
    return VideoAudioClips(
        video=video,
        audio=_spectrograms(tone, g),
        labels=2 * direction + tone,
        direction=direction,
        tone=tone,
        twin=twin,
    )


def video_splits(seed: int = 0, n_train: int = 1024, n_test: int = 512) -> dict[str, VideoAudioClips]:
    """ "train" and "test" clips built from seeds 2·seed and 2·seed + 1: new squares, noise and tones."""
    return {
        "train": make_video_audio_clips(n_train, seed=2 * seed),
        "test": make_video_audio_clips(n_test, seed=2 * seed + 1),
    }

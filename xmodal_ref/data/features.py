"""The one format every sentiment model in this package trains on, whatever the data source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SentimentFeatures:
    """N samples of padded text and audio feature sequences with sentiment labels in [−3, 3].

    Both the synthetic corpus (``xmodal_ref.data.sentiment``) and the MMSA pickles of CMU-MOSI,
    CMU-MOSEI and CH-SIMS (``xmodal_ref.data.mmsa``) produce this, so a model trains on either
    unchanged. Unimodal labels are None when the source has none (MOSI, MOSEI); ``conflict``
    is None when the source does not mark a conflict subset.
    """

    text: torch.Tensor  # (N, L_t, D_t) float32, zero-padded after text_lengths[i] steps
    text_lengths: torch.Tensor  # (N,) int64 in [1, L_t]
    audio: torch.Tensor  # (N, L_a, D_a) float32, zero-padded after audio_lengths[i] steps
    audio_lengths: torch.Tensor  # (N,) int64 in [1, L_a]
    label: torch.Tensor  # (N,) float32 multimodal label
    label_text: torch.Tensor | None = None  # (N,) float32 text-only label
    label_audio: torch.Tensor | None = None  # (N,) float32 audio-only label
    conflict: torch.Tensor | None = None  # (N,) bool: the modalities disagree

    def __len__(self) -> int:
        return self.label.shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> SentimentFeatures:
        """``fn`` applied to every tensor field (absent optional fields stay None)."""
        fields = (getattr(self, name) for name in self.__dataclass_fields__)
        return SentimentFeatures(*(None if t is None else fn(t) for t in fields))

    def subset(self, index: torch.Tensor) -> SentimentFeatures:
        """The samples selected by a bool mask or an index tensor."""
        return self.map(lambda t: t[index])

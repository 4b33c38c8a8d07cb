"""Turning tokenised sentences into the padded id tensors every text encoder here reads."""

from __future__ import annotations

import torch


def pad_token_ids(ids: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, width) int64, right-padded with 0 ("<pad>"), and lengths (N,) int64."""
    tokens = torch.tensor([row + [0] * (width - len(row)) for row in ids], dtype=torch.int64)  # (N, L)
    lengths = torch.tensor([len(row) for row in ids], dtype=torch.int64)  # (N,)
    return tokens, lengths

"""Loader for the feature pickles of the MMSA toolkit (CMU-MOSI, CMU-MOSEI, CH-SIMS), and a tiny fixture of the format.

The pickle (thuiar/MMSA; written by MMSA-FET) is a dict with splits "train", "valid" and "test".
Each split is a dict of arrays with one row per sample:

* "text" (N, L_t, D_t), "audio" (N, L_a, D_a), "vision" (N, L_v, D_v): float feature sequences,
  zero-padded to a common length per split (MMSA-FET pads at the end by default; it can pad at the
  start, and MMSA's own truncation code expects leading padding in older aligned files).
  With BERT, token ids are kept separately as "text_bert" (N, 3, L_t): ids, mask, segment ids.
* "raw_text", "id" ("video$_$clip"), "annotations": strings.
* "regression_labels" (N,): the multimodal label, in [−3, 3] for MOSI and MOSEI, [−1, 1] for CH-SIMS.
* "audio_lengths", "vision_lengths" (N,): real steps, in unaligned files only.
* "regression_labels_T", "_A", "_V" (N,): CH-SIMS's unimodal labels.

Only the pickle's text and audio streams are used. Load only pickles you trust: unpickling runs code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from xmodal_ref.data.features import SentimentFeatures

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def _features(split: str, data: dict, key: str) -> np.ndarray:
    """data[key] as a float32 (N, L, D) array, non-finite values set to 0 (in place); ValueError otherwise."""
    if key not in data:
        raise ValueError(f"split {split!r} has no {key!r} array")
    array = np.asarray(data[key])
    if array.ndim != 3 or array.dtype.kind not in "fiu":
        raise ValueError(f"{split}/{key} must be (N, L, D) float features, got {array.dtype} of shape {array.shape}")
    if key == "text" and array.shape[1] == 3 and np.array_equal(array, np.round(array)):
        raise ValueError(
            f"{split}/text looks like BERT token ids and masks (N, 3, L); load_mmsa needs float features (N, L, D)"
        )
    return np.nan_to_num(array.astype(np.float32, copy=False), copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _vector(split: str, data: dict, key: str, n: int) -> np.ndarray:
    """data[key] as a float32 (N,) array ((N, 1) is flattened); ValueError otherwise."""
    try:
        array = np.asarray(data[key], dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{split}/{key} must be {n} numbers ({error})") from None
    if array.shape[0] != n:
        raise ValueError(f"{split}/{key} has {array.shape[0]} values for {n} samples")
    return array


def _move_span_to_front(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L, D) → the same, right-padded, and lengths (N,) int64 in [1, L]; may reuse x's memory.

    A row's real steps are those from its first to its last step that is not all zeros (zero
    steps in between are kept). They are moved to the front and everything after is zero, so
    start- and end-padded files come out alike. An all-zero row gets length 1.
    """
    n, steps = x.shape[0], x.shape[1]
    nonzero = (x != 0).any(dim=-1)  # (N, L)
    position = torch.arange(steps)
    first = torch.where(nonzero, position, steps).min(dim=1).values  # (N,), L for an all-zero row
    last = torch.where(nonzero, position, -1).max(dim=1).values  # (N,)
    lengths = (last - first + 1).clamp(min=1)
    first = first.clamp(max=steps - 1)
    if first.any():  # some rows are padded at the start
        source = (first[:, None] + position).clamp(max=steps - 1)  # (N, L)
        x = x[torch.arange(n)[:, None], source]  # (N, L, D)
    return _zero_after(x, lengths), lengths


def _zero_after(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (N, L, D) with the steps at index ≥ lengths[i] set to zero, in place."""
    real = torch.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, L)
    return x.masked_fill_(~real[..., None], 0.0)


def _split_features(split: str, data: dict) -> SentimentFeatures:
    """One split's dict of arrays as ``SentimentFeatures``, following ``load_mmsa``'s rules."""
    if not isinstance(data, dict):
        raise ValueError(f"split {split!r} must be a dict of arrays, got {type(data).__name__}")
    text = torch.from_numpy(_features(split, data, "text"))
    audio = torch.from_numpy(_features(split, data, "audio"))
    n = text.shape[0]
    if audio.shape[0] != n:
        raise ValueError(f"{split}: text has {n} samples but audio has {audio.shape[0]}")
    if "regression_labels" not in data:
        raise ValueError(f"split {split!r} has no 'regression_labels' array")
    label = torch.from_numpy(_vector(split, data, "regression_labels", n))
    text, text_lengths = _move_span_to_front(text)
    if "audio_lengths" in data:
        stored = torch.from_numpy(_vector(split, data, "audio_lengths", n)).long()
        audio_lengths = stored.clamp(1, audio.shape[1])
        audio = _zero_after(audio, audio_lengths)
    else:
        audio, audio_lengths = _move_span_to_front(audio)
    unimodal = {
        key: torch.from_numpy(_vector(split, data, key, n)) if key in data else None
        for key in ("regression_labels_T", "regression_labels_A")
    }
    return SentimentFeatures(
        text=text,
        text_lengths=text_lengths,
        audio=audio,
        audio_lengths=audio_lengths,
        label=label,
        label_text=unimodal["regression_labels_T"],
        label_audio=unimodal["regression_labels_A"],
    )


def load_mmsa(path: str | Path) -> dict[str, SentimentFeatures]:
    """{"train", "valid", "test"}: the text and audio streams of an MMSA feature pickle.

    * text: "text" (float features; BERT token ids are refused) with lengths from the span of
      non-all-zero steps, moved to the front if the file pads at the start (``_move_span_to_front``).
    * audio: "audio"; lengths from "audio_lengths" when present (the first that many steps, as
      MMSA-FET pads at the end; clamped to [1, L_a]), else from the non-zero span like the text.
      Steps after each length are zeroed.
    * NaN and ±inf in features (MOSEI's audio has -inf) become 0, as MMSA does.
    * labels: "regression_labels", and "regression_labels_T" / "_A" when present (CH-SIMS), else
      None; on the file's own scale. conflict is None.

    Raises ValueError with a one-line message for a missing split or key, or an array of the wrong shape.
    """
    with open(path, "rb") as file:
        data = pickle.load(file)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict with splits {SPLITS}, got {type(data).__name__}")
    missing = [split for split in SPLITS if split not in data]
    if missing:
        raise ValueError(f"{path}: missing split(s) {missing}; found {sorted(map(str, data))}")
    return {split: _split_features(split, data[split]) for split in SPLITS}


def write_mmsa_fixture(
    path: str | Path,
    n_per_split: int = 6,
    seed: int = 0,
    *,
    unimodal_labels: bool = True,
    aligned: bool = False,
    dims: tuple[int, int, int] = (8, 5, 4),
    max_lengths: tuple[int, int, int] = (7, 12, 10),
) -> None:
    """Pickle a tiny random dataset in MMSA's layout, for tests and to show the format.

    Holds every key of the module docstring, "text_bert" included. Labels are on a 0.2 grid;
    ``unimodal_labels=True`` mimics CH-SIMS (labels in [−1, 1], plus
    "regression_labels_T/A/V"); False mimics CMU-MOSI (labels in [−3, 3], none of those keys).
    ``aligned=False`` stores "audio_lengths" and "vision_lengths" with sequences end-padded to
    ``max_lengths`` (text, audio, vision); ``aligned=True`` gives audio and vision the text's
    length and padding, and no length keys, like a word-aligned file. ``dims`` are the feature
    sizes (text, audio, vision). Real steps are never all zero, padding always is.
    """
    g = np.random.default_rng(seed)
    max_text, max_audio, max_vision = max_lengths
    data, n = {}, n_per_split
    for split in SPLITS:
        text_lengths = g.integers(2, max_text + 1, n)
        audio_lengths = text_lengths if aligned else g.integers(2, max_audio + 1, n)
        vision_lengths = text_lengths if aligned else g.integers(2, max_vision + 1, n)
        ids = [f"video{split}{i // 3}$_${i % 3 + 1:04d}" for i in range(n)]
        sample = {
            "id": np.array(ids),
            "raw_text": np.array([" ".join(["word"] * length) for length in text_lengths]),
            "text": _padded(g, text_lengths, max_text, dims[0]),
            "text_bert": _token_ids(g, text_lengths, max_text),
            "audio": _padded(g, audio_lengths, max_text if aligned else max_audio, dims[1]),
            "vision": _padded(g, vision_lengths, max_text if aligned else max_vision, dims[2]),
        }
        if not aligned:
            sample["audio_lengths"] = audio_lengths
            sample["vision_lengths"] = vision_lengths
        scale = 1.0 if unimodal_labels else 3.0
        labels = {"regression_labels": g.uniform(-scale, scale, n)}
        if unimodal_labels:
            labels |= {f"regression_labels_{m}": g.uniform(-scale, scale, n) for m in "TAV"}
        for key, values in labels.items():
            sample[key] = (np.round(values * 5) / 5).astype(np.float32)
        polarity = np.sign(sample["regression_labels"]).astype(np.int64)  # (N,) in {−1, 0, 1}
        sample["annotations"] = np.array(["Negative", "Neutral", "Positive"])[polarity + 1]
        data[split] = sample
    with open(path, "wb") as file:
        pickle.dump(data, file, protocol=pickle.HIGHEST_PROTOCOL)


def _padded(g: np.random.Generator, lengths: np.ndarray, max_length: int, dim: int) -> np.ndarray:
    """(N, max_length, dim) float32: standard normal steps up to each length, zeros after."""
    x = g.standard_normal((len(lengths), max_length, dim)).astype(np.float32)
    return x * (np.arange(max_length)[None, :, None] < lengths[:, None, None])


def _token_ids(g: np.random.Generator, lengths: np.ndarray, max_length: int) -> np.ndarray:
    """(N, 3, max_length) int64 like "text_bert": random token ids, the attention mask, zero segment ids."""
    mask = (np.arange(max_length)[None, :] < lengths[:, None]).astype(np.int64)  # (N, L)
    ids = g.integers(1000, 30000, mask.shape) * mask
    return np.stack([ids, mask, np.zeros_like(mask)], axis=1)

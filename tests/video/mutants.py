"""Mutants and other-style correct solutions for chapter 08: tsn_sample_indices, temporal_shift,
inflate_patch_weight and gap_at_k.

Each is written the way a learner would write it, independently of the checks' own models of known mistakes.
"""

import heapq
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _validate_tsn(num_frames, num_segments, mode):
    if num_frames < 1 or num_segments < 1 or mode not in ("train", "test"):
        raise ValueError("bad arguments")


def tsn_global_rng(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    k = torch.arange(num_segments)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        return k * d + torch.randint(d, (num_segments,))  # forgot generator=generator
    return (2 * k + 1) * num_frames // (2 * num_segments)


def tsn_segment_start(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    k = torch.arange(num_segments)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        return k * d + torch.randint(d, (num_segments,), generator=generator)
    return k * num_frames // num_segments


def tsn_rounded_centre(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    k = torch.arange(num_segments)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        return k * d + torch.randint(d, (num_segments,), generator=generator)
    return torch.round((k + 0.5) * num_frames / num_segments).long()


def tsn_one_based(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    indices = []
    tick = num_frames / num_segments
    for k in range(num_segments):
        if mode == "train" and num_frames >= num_segments:
            d = num_frames // num_segments
            indices.append(k * d + int(torch.randint(d, (1,), generator=generator)) + 1)
        else:
            indices.append(int(tick / 2 + tick * k) + 1)  # TSN's files start at img_00001.jpg
    return torch.tensor(indices)


def tsn_float_segments(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    k = torch.arange(num_segments, dtype=torch.float64)
    tick = num_frames / num_segments
    if mode == "train" and num_frames >= num_segments:
        jitter = torch.rand(num_segments, generator=generator, dtype=torch.float64)
        return (k * tick + jitter * tick).long()  # segments of length N/S reach the last frames
    return (k * tick + tick / 2).long()


def tsn_shared_offset(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    k = torch.arange(num_segments)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        return k * d + torch.randint(d, (1,), generator=generator)  # one offset for every segment
    return (2 * k + 1) * num_frames // (2 * num_segments)


def tsn_zeros_when_short(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    k = torch.arange(num_segments)
    if mode == "train":
        d = num_frames // num_segments
        if d == 0:
            return torch.zeros(num_segments, dtype=torch.long)  # as TSN's _sample_indices
        return k * d + torch.randint(d, (num_segments,), generator=generator)
    return (2 * k + 1) * num_frames // (2 * num_segments)


def tsn_linspace(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        return torch.arange(num_segments) * d + torch.randint(d, (num_segments,), generator=generator)
    return torch.linspace(0, num_frames - 1, num_segments).long()


def tsn_offset_off_by_one(num_frames, num_segments, mode="test", generator=None):
    _validate_tsn(num_frames, num_segments, mode)
    k = torch.arange(num_segments)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        return k * d + torch.randint(max(d - 1, 1), (num_segments,), generator=generator)  # randint's end is exclusive
    return (2 * k + 1) * num_frames // (2 * num_segments)


def tsn_no_validation(num_frames, num_segments, mode="test", generator=None):
    k = torch.arange(num_segments)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        return k * d + torch.randint(d, (num_segments,), generator=generator)
    return (2 * k + 1) * num_frames // (2 * num_segments)


def tsn_float_formula_loop(num_frames, num_segments, mode="test", generator=None):
    """TSN's own float formula in test mode (exact on the graded grid) and one draw per segment."""
    if num_frames < 1 or num_segments < 1:
        raise ValueError("need at least one frame and one segment")
    if mode not in ("train", "test"):
        raise ValueError(mode)
    tick = num_frames / float(num_segments)
    d = num_frames // num_segments
    indices = []
    for k in range(num_segments):
        if mode == "train" and d > 0:
            indices.append(k * d + int(torch.randint(0, d, (), generator=generator)))
        else:
            indices.append(int(tick / 2.0 + tick * k))
    return torch.tensor(indices, dtype=torch.int64)


def tsn_numpy_seeded_by_generator(num_frames, num_segments, mode="test", generator=None):
    """Every draw from numpy, seeded by one draw from `generator`."""
    if num_frames < 1 or num_segments < 1 or mode not in {"train", "test"}:
        raise ValueError("invalid arguments")
    starts = np.arange(num_segments)
    if mode == "train" and num_frames >= num_segments:
        d = num_frames // num_segments
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        offsets = np.random.default_rng(seed).integers(0, d, size=num_segments)
        return torch.from_numpy(starts * d + offsets).long()
    return torch.from_numpy((2 * starts + 1) * num_frames // (2 * num_segments)).long()


def tsn_uniform_floor(num_frames, num_segments, mode="test", generator=None):
    """Offsets as floor(U·d) with U uniform in [0, 1), in float64."""
    if min(num_frames, num_segments) < 1 or mode not in ("train", "test"):
        raise ValueError("invalid arguments")
    k = torch.arange(num_segments)
    if mode == "test" or num_frames < num_segments:
        return torch.div((2 * k + 1) * num_frames, 2 * num_segments, rounding_mode="floor")
    d = num_frames // num_segments
    u = torch.rand(num_segments, generator=generator, dtype=torch.float64)
    return k * d + (u * d).floor().long()


def shift_swapped(x, n_segment, fold_div=8):
    nt, c, h, w = x.shape
    v = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(v)
    out[:, 1:, :fold] = v[:, :-1, :fold]
    out[:, :-1, fold : 2 * fold] = v[:, 1:, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def shift_roll(x, n_segment, fold_div=8):
    nt, c, h, w = x.shape
    v = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    left = v[:, :, :fold].roll(-1, dims=1)
    right = v[:, :, fold : 2 * fold].roll(1, dims=1)
    return torch.cat([left, right, v[:, :, 2 * fold :]], dim=2).view(nt, c, h, w)


def shift_fold_from_width(x, n_segment, fold_div=8):
    nt, c, h, w = x.shape
    fold = w // fold_div  # channels-last habit
    v = x.view(nt // n_segment, n_segment, c, h, w)
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = v[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def shift_in_place(x, n_segment, fold_div=8):
    nt, c, h, w = x.shape
    v = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    left = v[:, 1:, :fold].clone()
    right = v[:, :-1, fold : 2 * fold].clone()
    v[:, :, : 2 * fold] = 0
    v[:, :-1, :fold] = left
    v[:, 1:, fold : 2 * fold] = right
    return x


def shift_time_major(x, n_segment, fold_div=8):
    nt, c, h, w = x.shape
    v = x.view(n_segment, nt // n_segment, c, h, w)  # (T, N, ...)
    fold = c // fold_div
    out = torch.zeros_like(v)
    out[:-1, :, :fold] = v[1:, :, :fold]
    out[1:, :, fold : 2 * fold] = v[:-1, :, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def shift_default_div_3(x, n_segment, fold_div=3):
    nt, c, h, w = x.shape
    v = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = v[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def shift_ceil_fold(x, n_segment, fold_div=8):
    nt, c, h, w = x.shape
    v = x.view(nt // n_segment, n_segment, c, h, w)
    fold = math.ceil(c / fold_div)
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = v[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def shift_detached(x, n_segment, fold_div=8):
    nt, c, h, w = x.shape
    v = x.detach().view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = v[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


def _shift_rows(x, n_segment, fold_div):
    """A loop over the rows of x: row i is frame i % T of its clip."""
    fold = x.shape[1] // fold_div
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        t = i % n_segment
        out[i, 2 * fold :] = x[i, 2 * fold :]
        if t + 1 < n_segment and i + 1 < x.shape[0]:
            out[i, :fold] = x[i + 1, :fold]
        if t > 0:
            out[i, fold : 2 * fold] = x[i - 1, fold : 2 * fold]
    return out


def shift_rows_loop_unchecked(x, n_segment, fold_div=8):
    return _shift_rows(x, n_segment, fold_div)


def shift_rows_loop(x, n_segment, fold_div=8):
    if x.shape[0] % n_segment:
        raise ValueError("the rows are not whole clips")
    return _shift_rows(x, n_segment, fold_div)


def shift_pad_and_cat(x, n_segment, fold_div=8):
    """Shift by padding the time axis with one zero frame and slicing."""
    nt, c, h, w = x.shape
    clips = x.reshape(-1, n_segment, c, h, w)  # raises when nt % n_segment != 0
    fold = c // fold_div
    padded = F.pad(clips[:, :, : 2 * fold], (0, 0, 0, 0, 0, 0, 1, 1))  # (N, T + 2, 2·fold, H, W)
    next_frame = padded[:, 2:, :fold]
    previous_frame = padded[:, :-2, fold:]
    return torch.cat([next_frame, previous_frame, clips[:, :, 2 * fold :]], dim=2).reshape(nt, c, h, w)


def shift_roll_and_mask(x, n_segment, fold_div=8):
    """torch.roll, then zero the frame that wrapped around."""
    nt, c, h, w = x.shape
    if nt % n_segment != 0:
        raise ValueError(f"{nt} rows are not a multiple of {n_segment}")
    fold = c // fold_div
    clips = x.view(nt // n_segment, n_segment, c, h, w)
    t = torch.arange(n_segment).view(1, n_segment, 1, 1, 1)
    left = clips[:, :, :fold].roll(-1, dims=1) * (t < n_segment - 1)
    right = clips[:, :, fold : 2 * fold].roll(1, dims=1) * (t > 0)
    return torch.cat([left.to(x.dtype), right.to(x.dtype), clips[:, :, 2 * fold :]], dim=2).view(nt, c, h, w)


def _check_inflate(t, method):
    if t < 1 or method not in ("average", "central"):
        raise ValueError("bad t or method")


def inflate_central_early(weight2d, t, method="central"):
    _check_inflate(t, method)
    d, c, ph, pw = weight2d.shape
    out = weight2d.new_zeros(d, c, t, ph, pw)
    if method == "average":
        return out + weight2d[:, :, None] / t
    out[:, :, t // 2 - 1] = weight2d
    return out


def inflate_average_without_division(weight2d, t, method="central"):
    _check_inflate(t, method)
    if method == "average":
        return weight2d.unsqueeze(2).repeat(1, 1, t, 1, 1)
    out = weight2d.new_zeros(*weight2d.shape[:2], t, *weight2d.shape[2:])
    out[:, :, t // 2] = weight2d
    return out


def inflate_time_first(weight2d, t, method="central"):
    _check_inflate(t, method)
    if method == "average":
        return torch.stack([weight2d / t] * t)
    slices = [torch.zeros_like(weight2d) for _ in range(t)]
    slices[t // 2] = weight2d
    return torch.stack(slices)


def inflate_default_average(weight2d, t, method="average"):
    _check_inflate(t, method)
    if method == "average":
        return weight2d.unsqueeze(2).expand(-1, -1, t, -1, -1) / t
    out = torch.zeros_like(weight2d).unsqueeze(2).repeat(1, 1, t, 1, 1)
    out[:, :, t // 2] = weight2d
    return out


def inflate_divides_in_place(weight2d, t, method="central"):
    _check_inflate(t, method)
    if method == "average":
        weight2d /= t
        return torch.stack([weight2d] * t, dim=2)
    out = torch.zeros_like(weight2d).unsqueeze(2).repeat(1, 1, t, 1, 1)
    out[:, :, t // 2] = weight2d
    return out


def inflate_detached(weight2d, t, method="central"):
    _check_inflate(t, method)
    out = torch.zeros(*weight2d.shape[:2], t, *weight2d.shape[2:], dtype=weight2d.dtype)
    if method == "average":
        out[:] = weight2d.data[:, :, None] / t
    else:
        out[:, :, t // 2] = weight2d.data
    return out


def inflate_any_method_averages(weight2d, t, method="central"):
    if t < 1:
        raise ValueError("t must be positive")
    if method == "central":
        return F.pad(weight2d.unsqueeze(2), (0, 0, 0, 0, t // 2, t - 1 - t // 2))
    return weight2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t  # every other method silently averages


def inflate_float32_buffer(weight2d, t, method="central"):
    _check_inflate(t, method)
    out = torch.zeros(weight2d.shape[0], weight2d.shape[1], t, *weight2d.shape[2:])  # float32 whatever the input
    if method == "average":
        for j in range(t):
            out[:, :, j] = weight2d / t
    else:
        out[:, :, t // 2] = weight2d
    return out


def inflate_stack_slices(weight2d, t, method="central"):
    """A list of temporal slices, stacked on dim 2."""
    if t < 1:
        raise ValueError("t must be at least 1")
    if method == "average":
        slices = [weight2d / t for _ in range(t)]
    elif method == "central":
        slices = [weight2d if j == t // 2 else torch.zeros_like(weight2d) for j in range(t)]
    else:
        raise ValueError(f"unknown method {method}")
    return torch.stack(slices, dim=2)


def inflate_einsum(weight2d, t, method="central"):
    """weight2d times a vector of t temporal coefficients."""
    if t < 1:
        raise ValueError("t < 1")
    if method == "average":
        coefficients = torch.full((t,), 1.0 / t, dtype=weight2d.dtype)
    elif method == "central":
        coefficients = F.one_hot(torch.tensor(t // 2), t).to(weight2d.dtype)
    else:
        raise ValueError(method)
    return torch.einsum("dchw,t->dcthw", weight2d, coefficients)


def _kept_pairs(predictions, labels, k):
    """The (score, is_positive) pairs of each video's top min(k, C) scores, pooled."""
    kept = min(k, predictions.shape[1])
    scores, classes = predictions.topk(kept, dim=1)
    return scores.flatten(), (labels > 0).gather(1, classes).flatten()


def _ap(scores, relevant, total):
    hits = relevant[scores.argsort(descending=True)].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / total) if total else 0.0


def gap_positives_in_top_k(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    scores, relevant = _kept_pairs(predictions, labels, k)
    return _ap(scores, relevant, int(relevant.sum()))


def gap_per_video_mean(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    values = []
    for v in range(predictions.shape[0]):
        total = int((labels[v] > 0).sum())
        if total:
            scores, relevant = _kept_pairs(predictions[v : v + 1], labels[v : v + 1], k)
            values.append(_ap(scores, relevant, total))
    return sum(values) / len(values) if values else 0.0


def gap_k_over_pooled_list(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    scores, order = predictions.flatten().sort(descending=True)
    relevant = (labels.flatten() > 0)[order]
    return _ap(scores[:k], relevant[:k], int((labels > 0).sum()))


def gap_sorted_ascending(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    scores, relevant = _kept_pairs(predictions, labels, k)
    hits = relevant[scores.argsort()].double()
    total = int((labels > 0).sum())
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / total) if total else 0.0


def gap_every_pair(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    return _ap(predictions.flatten(), labels.flatten() > 0, int((labels > 0).sum()))


def gap_returns_tensor(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    scores, relevant = _kept_pairs(predictions, labels, k)
    hits = relevant[scores.argsort(descending=True)].double()
    total = (labels > 0).sum()
    return (hits.cumsum(0) / torch.arange(1, len(hits) + 1) * hits).sum() / total.clamp(min=1)


def gap_integer_zero(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    total = int((labels > 0).sum())
    if total == 0:
        return 0
    return _ap(*_kept_pairs(predictions, labels, k), total)


def gap_clamps_k(predictions, labels, k=20):
    k = max(k, 1)
    return _ap(*_kept_pairs(predictions, labels, k), int((labels > 0).sum()))


def gap_mean_over_classes(predictions, labels, k=20):
    if k < 1:
        raise ValueError("k must be positive")
    top = predictions.topk(min(k, predictions.shape[1]), dim=1).indices
    kept = torch.zeros_like(labels, dtype=torch.bool).scatter(1, top, True)
    values = []
    for c in range(predictions.shape[1]):
        total = int((labels[:, c] > 0).sum())
        if total:
            rows = kept[:, c]
            values.append(_ap(predictions[rows, c], labels[rows, c] > 0, total))
    return sum(values) / len(values) if values else 0.0


def gap_heap_loop(predictions, labels, k=20):
    """Plain Python: each video's top k with heapq, then one pooled ranking."""
    if k < 1:
        raise ValueError("k must be >= 1")
    scores, truth = predictions.tolist(), (labels > 0).tolist()
    total = sum(sum(row) for row in truth)
    if total == 0:
        return 0.0
    pooled = []
    for row_scores, row_truth in zip(scores, truth, strict=True):
        pooled += heapq.nlargest(k, zip(row_scores, row_truth, strict=True))
    pooled.sort(key=lambda pair: -pair[0])
    hits, gap = 0, 0.0
    for rank, (_, positive) in enumerate(pooled, start=1):
        if positive:
            hits += 1
            gap += hits / rank
    return gap / total


def gap_numpy_argpartition(predictions, labels, k=20):
    """numpy: argpartition for each video's top k, then cumulative precision."""
    if k < 1:
        raise ValueError("k must be >= 1")
    scores = predictions.detach().cpu().numpy().astype(np.float64)
    positive = labels.cpu().numpy() > 0
    total = positive.sum()
    if total == 0:
        return 0.0
    kept = min(k, scores.shape[1])
    top = np.argpartition(-scores, kept - 1, axis=1)[:, :kept]
    pooled_scores = np.take_along_axis(scores, top, axis=1).ravel()
    pooled_hits = np.take_along_axis(positive, top, axis=1).ravel()[np.argsort(-pooled_scores, kind="stable")]
    precision = np.cumsum(pooled_hits) / np.arange(1, pooled_hits.size + 1)
    return float((precision * pooled_hits).sum() / total)


class _TubeletBase(nn.Module):
    def __init__(self, in_channels, embed_dim, tubelet_size):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=tubelet_size, stride=tubelet_size)


class TubeletReshapedNotPermuted(_TubeletBase):
    """Conv3d wants (B, C, T, H, W): reshaped to that shape instead of permuted."""

    def forward(self, video):
        b, t, c, h, w = video.shape
        return self.proj(video.reshape(b, c, t, h, w)).flatten(2).transpose(1, 2)


class TubeletWidthSlowest(_TubeletBase):
    """Moves D last by reversing the grid's axes: (B, W', H', T', D)."""

    def forward(self, video):
        grid = self.proj(video.permute(0, 2, 1, 3, 4))
        return grid.permute(0, 4, 3, 2, 1).reshape(video.shape[0], -1, grid.shape[1])


class TubeletGridReshaped(_TubeletBase):
    def forward(self, video):
        grid = self.proj(video.transpose(1, 2))
        return grid.reshape(video.shape[0], -1, grid.shape[1])


class TubeletNotTransposed(_TubeletBase):
    def forward(self, video):
        return self.proj(video.transpose(1, 2)).flatten(2)


class TubeletOverlappingInTime(nn.Module):
    """Slides the kernel one frame at a time."""

    def __init__(self, in_channels, embed_dim, tubelet_size):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=tubelet_size, stride=(1, *tubelet_size[1:]))

    def forward(self, video):
        return self.proj(video.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)


class TubeletFunctionalNoBias(_TubeletBase):
    def forward(self, video):
        grid = F.conv3d(video.permute(0, 2, 1, 3, 4), self.proj.weight, stride=self.proj.stride)
        return grid.flatten(2).transpose(1, 2)


class TubeletConvWithoutBias(nn.Module):
    def __init__(self, in_channels, embed_dim, tubelet_size):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=tubelet_size, stride=tubelet_size, bias=False)

    def forward(self, video):
        return self.proj(video.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)


class TubeletConv2dPerFrame(nn.Module):
    """A ViT patch embedding on every frame, then the mean over each group of t frames: t is ignored by the kernel."""

    def __init__(self, in_channels, embed_dim, tubelet_size):
        super().__init__()
        self.t = tubelet_size[0]
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=tubelet_size[1:], stride=tubelet_size[1:])

    def forward(self, video):
        b, frames, c, h, w = video.shape
        kept = frames // self.t * self.t
        tokens = self.proj(video[:, :kept].reshape(b * kept, c, h, w)).flatten(2).transpose(1, 2)
        return tokens.reshape(b, kept // self.t, self.t, -1, tokens.shape[-1]).mean(2).flatten(1, 2)


class TubeletUnfoldMatmul(_TubeletBase):
    """Cut the clip into tubes with view/permute, then one matrix product with the flattened kernel."""

    def forward(self, video):
        t, ph, pw = self.proj.kernel_size
        b, frames, c, h, w = video.shape
        nt, nh, nw = frames // t, h // ph, w // pw
        clip = video[:, : nt * t, :, : nh * ph, : nw * pw]
        tubes = clip.reshape(b, nt, t, c, nh, ph, nw, pw).permute(0, 1, 4, 6, 3, 2, 5, 7)  # tubes last: C, t, ph, pw
        return tubes.reshape(b, nt * nh * nw, -1) @ self.proj.weight.flatten(1).T + self.proj.bias


class TubeletEinsum(_TubeletBase):
    """The contract's sum, written as one einsum over a view of the cropped clip."""

    def forward(self, video):
        t, ph, pw = self.proj.kernel_size
        b, frames, c, h, w = video.shape
        nt, nh, nw = frames // t, h // ph, w // pw
        clip = video[:, : nt * t, :, : nh * ph, : nw * pw].reshape(b, nt, t, c, nh, ph, nw, pw)
        tokens = torch.einsum("bxacyuzv,dcauv->bxyzd", clip, self.proj.weight) + self.proj.bias
        return tokens.reshape(b, -1, tokens.shape[-1])


class TubeletFrameConvSum(_TubeletBase):
    """A loop over the t frames of a tube: 2-D convolutions with the kernel's time slices, summed."""

    def forward(self, video):
        t = self.proj.kernel_size[0]
        stride = self.proj.kernel_size[1:]
        tubes = []
        for start in range(0, video.shape[1] - t + 1, t):
            total = self.proj.bias[None, :, None, None]
            for a in range(t):
                total = total + F.conv2d(video[:, start + a], self.proj.weight[:, :, a], stride=stride)
            tubes.append(total.flatten(2).transpose(1, 2))  # (B, H' W', D)
        return torch.cat(tubes, dim=1)


class _DividedBase(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.temporal_fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)
        self.spatial_norm = nn.LayerNorm(dim)
        self.spatial_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def self_attend(self, attn, h):
        return attn(h, h, h)[0]

    def time_step(self, x, use_fc=True):
        b, t, n, d = x.shape
        h = self.temporal_norm(x).permute(0, 2, 1, 3).reshape(b * n, t, d)
        out = self.self_attend(self.temporal_attn, h).reshape(b, n, t, d).permute(0, 2, 1, 3)
        return x + (self.temporal_fc(out) if use_fc else out)

    def space_step(self, x):
        b, t, n, d = x.shape
        h = self.spatial_norm(x).reshape(b * t, n, d)
        return x + self.self_attend(self.spatial_attn, h).reshape(b, t, n, d)

    def mlp_step(self, x):
        return x + self.mlp(self.mlp_norm(x))


class DividedSpaceFirst(_DividedBase):
    def forward(self, x):
        return self.mlp_step(self.time_step(self.space_step(x)))


class DividedFcNotZeroed(_DividedBase):
    """Forgets TimeSformer's zero initialisation of temporal_fc."""

    def __init__(self, dim, num_heads):
        super().__init__(dim, num_heads)
        self.temporal_fc = nn.Linear(dim, dim)

    def forward(self, x):
        return self.mlp_step(self.space_step(self.time_step(x)))


class DividedResidualWithoutFc(_DividedBase):
    def forward(self, x):
        return self.mlp_step(self.space_step(self.time_step(x, use_fc=False)))


class DividedTimeByReshape(_DividedBase):
    """(B, T, N, D) → (B*N, T, D) by a reshape alone."""

    def forward(self, x):
        b, t, n, d = x.shape
        h = self.temporal_norm(x).reshape(b * n, t, d)
        x = x + self.temporal_fc(self.self_attend(self.temporal_attn, h).reshape(b, t, n, d))
        return self.mlp_step(self.space_step(x))


class DividedTimeOverPatches(_DividedBase):
    """Both attentions reshape to (B*T, N, D): the 'time' attention attends over patches."""

    def forward(self, x):
        b, t, n, d = x.shape
        h = self.temporal_norm(x).reshape(b * t, n, d)
        x = x + self.temporal_fc(self.self_attend(self.temporal_attn, h).reshape(b, t, n, d))
        return self.mlp_step(self.space_step(x))


class DividedPostNorm(_DividedBase):
    def forward(self, x):
        b, t, n, d = x.shape
        h = x.transpose(1, 2).reshape(b * n, t, d)
        out = self.self_attend(self.temporal_attn, h).reshape(b, n, t, d).transpose(1, 2)
        x = self.temporal_norm(x + self.temporal_fc(out))
        x = self.spatial_norm(x + self.self_attend(self.spatial_attn, x.reshape(b * t, n, d)).reshape(b, t, n, d))
        return self.mlp_norm(x + self.mlp(x))


class DividedParallelBranches(_DividedBase):
    """Time and space both read the block's input; their updates are added."""

    def forward(self, x):
        b, t, n, d = x.shape
        space = self.self_attend(self.spatial_attn, self.spatial_norm(x).reshape(b * t, n, d)).reshape(b, t, n, d)
        return self.mlp_step(self.time_step(x) + space)


class DividedJointMask(_DividedBase):
    """The contract's peer: attention over all T·N tokens, with boolean masks that block the other pairs."""

    def forward(self, x):
        b, t, n, d = x.shape
        frame = torch.arange(t).repeat_interleave(n)  # token i = (frame, position) in (B, T*N) order
        position = torch.arange(n).repeat(t)
        other_position = position[:, None] != position[None, :]  # True = not allowed
        other_frame = frame[:, None] != frame[None, :]
        tokens = x.reshape(b, t * n, d)
        h = self.temporal_norm(tokens)
        tokens = tokens + self.temporal_fc(self.temporal_attn(h, h, h, attn_mask=other_position)[0])
        h = self.spatial_norm(tokens)
        tokens = tokens + self.spatial_attn(h, h, h, attn_mask=other_frame)[0]
        tokens = tokens + self.mlp(self.mlp_norm(tokens))
        return tokens.reshape(b, t, n, d)


class DividedLoops(_DividedBase):
    """One attention call per spatial position, then one per frame."""

    def forward(self, x):
        h = self.temporal_norm(x)
        timed = torch.stack(
            [self.self_attend(self.temporal_attn, h[:, :, p]) for p in range(x.shape[2])], dim=2
        )  # (B, T, N, D)
        x = x + self.temporal_fc(timed)
        h = self.spatial_norm(x)
        spaced = torch.stack([self.self_attend(self.spatial_attn, h[:, f]) for f in range(x.shape[1])], dim=1)
        x = x + spaced
        return self.mlp_step(x)


class DividedEinsum(_DividedBase):
    """The attentions written out from the modules' weights with einsum, no reshapes of the tokens."""

    def attention(self, attn, h, pattern_scores, pattern_mix):
        heads = attn.num_heads
        q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.unflatten(-1, (heads, -1)) for z in (q, k, v))  # (B, T, N, H, d)
        scores = torch.einsum(pattern_scores, q, k) / q.shape[-1] ** 0.5
        mixed = torch.einsum(pattern_mix, scores.softmax(dim=-1), v)  # (B, T, N, H, d)
        return attn.out_proj(mixed.flatten(-2))

    def forward(self, x):
        timed = self.attention(
            self.temporal_attn, self.temporal_norm(x), "bsnhe,brnhe->bnhsr", "bnhsr,brnhe->bsnhe"
        )  # frames s attend to frames r at one position n
        x = x + self.temporal_fc(timed)
        spaced = self.attention(
            self.spatial_attn, self.spatial_norm(x), "btnhe,btmhe->bthnm", "bthnm,btmhe->btnhe"
        )  # patches n attend to patches m of the same frame t
        return self.mlp_step(x + spaced)


class _FusionBase(nn.Module):
    def __init__(self, video_layers, audio_layers, dim, fusion_layer, num_bottlenecks=4):
        super().__init__()
        if len(video_layers) != len(audio_layers) or not 0 <= fusion_layer <= len(video_layers):
            raise ValueError("bad layers or fusion_layer")
        self.video_layers = nn.ModuleList(video_layers)
        self.audio_layers = nn.ModuleList(audio_layers)
        self.fusion_layer = fusion_layer
        self.bottleneck = nn.Parameter(torch.randn(1, num_bottlenecks, dim) * 0.02)


class FusionSequentialZ(_FusionBase):
    """The audio layer reads the bottleneck the video layer has just written."""

    def forward(self, video, audio):
        z = self.bottleneck.expand(video.shape[0], -1, -1)
        lv, la = video.shape[1], audio.shape[1]
        for i in range(len(self.video_layers)):
            if i < self.fusion_layer:
                video, audio = self.video_layers[i](video), self.audio_layers[i](audio)
            else:
                ov = self.video_layers[i](torch.cat([video, z], 1))
                video, z_video = ov[:, :lv], ov[:, lv:]
                oa = self.audio_layers[i](torch.cat([audio, z_video], 1))
                audio, z_audio = oa[:, :la], oa[:, la:]
                z = (z_video + z_audio) / 2
        return video, audio, z


class FusionVideoOnlyZ(_FusionBase):
    def forward(self, video, audio):
        z = self.bottleneck.expand(video.shape[0], -1, -1)
        lv, la = video.shape[1], audio.shape[1]
        for i, (vl, al) in enumerate(zip(self.video_layers, self.audio_layers, strict=True)):
            if i < self.fusion_layer:
                video, audio = vl(video), al(audio)
            else:
                ov, oa = vl(torch.cat([video, z], 1)), al(torch.cat([audio, z], 1))
                video, audio, z = ov[:, :lv], oa[:, :la], ov[:, lv:]
        return video, audio, z


class FusionSummedZ(_FusionBase):
    def forward(self, video, audio):
        z = self.bottleneck.expand(video.shape[0], -1, -1)
        lv, la = video.shape[1], audio.shape[1]
        for i, (vl, al) in enumerate(zip(self.video_layers, self.audio_layers, strict=True)):
            if i < self.fusion_layer:
                video, audio = vl(video), al(audio)
            else:
                ov, oa = vl(torch.cat([video, z], 1)), al(torch.cat([audio, z], 1))
                video, audio, z = ov[:, :lv], oa[:, :la], ov[:, lv:] + oa[:, la:]
        return video, audio, z


class FusionEveryLayer(_FusionBase):
    """Concatenates the bottleneck in every layer; fusion_layer is stored but never used."""

    def forward(self, video, audio):
        z = self.bottleneck.expand(video.shape[0], -1, -1)
        lv, la = video.shape[1], audio.shape[1]
        for vl, al in zip(self.video_layers, self.audio_layers, strict=True):
            ov, oa = vl(torch.cat([video, z], 1)), al(torch.cat([audio, z], 1))
            video, audio, z = ov[:, :lv], oa[:, :la], (ov[:, lv:] + oa[:, la:]) / 2
        return video, audio, z


class FusionOffByOne(_FusionBase):
    def forward(self, video, audio):
        z = self.bottleneck.expand(video.shape[0], -1, -1)
        lv, la = video.shape[1], audio.shape[1]
        for i, (vl, al) in enumerate(zip(self.video_layers, self.audio_layers, strict=True)):
            if i <= self.fusion_layer:
                video, audio = vl(video), al(audio)
            else:
                ov, oa = vl(torch.cat([video, z], 1)), al(torch.cat([audio, z], 1))
                video, audio, z = ov[:, :lv], oa[:, :la], (ov[:, lv:] + oa[:, la:]) / 2
        return video, audio, z


class FusionUnitBottleneck(_FusionBase):
    """torch.randn without the 0.02; the forward pass is right."""

    def __init__(self, video_layers, audio_layers, dim, fusion_layer, num_bottlenecks=4):
        super().__init__(video_layers, audio_layers, dim, fusion_layer, num_bottlenecks)
        self.bottleneck = nn.Parameter(torch.randn(1, num_bottlenecks, dim))

    def forward(self, video, audio):
        return FusionBottleneckFirst.forward(self, video, audio)


class FusionPlainListLayers(_FusionBase):
    """Keeps the layers in Python lists, so the module does not register them."""

    def __init__(self, video_layers, audio_layers, dim, fusion_layer, num_bottlenecks=4):
        super().__init__(video_layers, audio_layers, dim, fusion_layer, num_bottlenecks)
        del self.video_layers, self.audio_layers
        self.video_layers, self.audio_layers = list(video_layers), list(audio_layers)

    def forward(self, video, audio):
        return FusionBottleneckFirst.forward(self, video, audio)


class FusionBottleneckFirst(_FusionBase):
    """[z ; tokens]: the layers are permutation-equivariant, so the order of the concatenation is free."""

    def forward(self, video, audio):
        k = self.bottleneck.shape[1]
        z = self.bottleneck.repeat(video.shape[0], 1, 1)
        for i, (vl, al) in enumerate(zip(self.video_layers, self.audio_layers, strict=True)):
            if i < self.fusion_layer:
                video, audio = vl(video), al(audio)
                continue
            ov, oa = vl(torch.cat([z, video], 1)), al(torch.cat([z, audio], 1))
            z = torch.stack([ov[:, :k], oa[:, :k]]).mean(0)
            video, audio = ov[:, k:], oa[:, k:]
        return video, audio, z


class FusionBatchLoop(_FusionBase):
    """One sample at a time; the unimodal layers first, then the fused ones."""

    def forward(self, video, audio):
        outputs = []
        for v, a in zip(video, audio, strict=True):
            v, a, z = v[None], a[None], self.bottleneck
            unimodal = zip(self.video_layers[: self.fusion_layer], self.audio_layers[: self.fusion_layer], strict=True)
            for vl, al in unimodal:
                v, a = vl(v), al(a)
            fused = zip(self.video_layers[self.fusion_layer :], self.audio_layers[self.fusion_layer :], strict=True)
            for vl, al in fused:
                ov, oa = vl(torch.cat([v, z], 1)), al(torch.cat([a, z], 1))
                v, a = ov[:, : v.shape[1]], oa[:, : a.shape[1]]
                z = 0.5 * ov[:, v.shape[1] :] + 0.5 * oa[:, a.shape[1] :]
            outputs.append((v, a, z))
        return tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))


MUTANTS = {
    "video.tsn_sample_indices": [
        (tsn_global_rng, "ignores `generator`"),
        (tsn_segment_start, "the start of each segment"),
        (tsn_rounded_centre, "rounded to the nearest frame"),
        (tsn_one_based, "1-based indices"),
        (tsn_float_segments, "are never drawn"),
        (tsn_shared_offset, "one offset shared by every segment"),
        (tsn_zeros_when_short, "all zeros, as TSN's own code returns when N < S"),
        (tsn_linspace, "both end frames"),
        (tsn_offset_off_by_one, "are never drawn: draw r_k uniformly"),
        (tsn_no_validation, "raise ValueError"),
    ],
    "video.temporal_shift": [
        (shift_swapped, "the two directions are swapped"),
        (shift_roll, "wraps around (torch.roll)"),
        (shift_fold_from_width, "fold is computed from the wrong axis"),
        (shift_in_place, "modified its input `x` in place"),
        (shift_time_major, "the rows are grouped as (T, N)"),
        (shift_default_div_3, "fold_div defaults to 3"),
        (shift_ceil_fold, "fold is rounded up"),
        (shift_detached, "not connected to the autograd graph"),
        (shift_rows_loop_unchecked, "x.shape[0] % n_segment"),
    ],
    "video.inflate_patch_weight": [
        (inflate_central_early, "put weight2d in slice t // 2"),
        (inflate_average_without_division, "divide the repeated kernel by t"),
        (inflate_time_first, "the time axis comes first"),
        (inflate_default_average, 'the default method is "central"'),
        (inflate_divides_in_place, "modified its input `weight2d` in place"),
        (inflate_detached, "not connected to the autograd graph"),
        (inflate_any_method_averages, "raise ValueError for any other method"),
        (inflate_float32_buffer, "wrong dtype"),
    ],
    "video.gap_at_k": [
        (gap_positives_in_top_k, "P counts only the positives among the kept top-k pairs"),
        (gap_per_video_mean, "an average precision per video"),
        (gap_k_over_pooled_list, "k is applied to the pooled ranking"),
        (gap_sorted_ascending, "sorted ascending"),
        (gap_every_pair, "every (score, label) pair is kept"),
        (gap_returns_tensor, "not a Python float"),
        (gap_integer_zero, "return 0.0, not 0"),
        (gap_clamps_k, "k must be at least 1"),
        (gap_mean_over_classes, "youtube-8m's MAP"),
    ],
    "video.TubeletEmbedding": [
        (TubeletReshapedNotPermuted, "instead of permuted"),
        (TubeletWidthSlowest, "width varies slowest"),
        (TubeletGridReshaped, "was reshaped to (B, N, D)"),
        (TubeletNotTransposed, "come out as (B, D, N)"),
        (TubeletOverlappingInTime, "overlap in time"),
        (TubeletFunctionalNoBias, "proj.bias is not added"),
        (TubeletConvWithoutBias, "missing: proj.bias"),
        (TubeletConv2dPerFrame, "wrong shape: proj.weight"),
    ],
    "video.DividedSpaceTimeBlock": [
        (DividedSpaceFirst, "space attention runs before time attention"),
        (DividedFcNotZeroed, "`temporal_fc.weight` must start at exactly 0"),
        (DividedResidualWithoutFc, "residual skips temporal_fc"),
        (DividedTimeByReshape, "without moving N before T"),
        (DividedTimeOverPatches, "a second spatial attention"),
        (DividedPostNorm, "post-norm"),
        (DividedParallelBranches, "reads the block's input"),
    ],
    "video.BottleneckFusionEncoder": [
        (FusionSequentialZ, "both modalities must read the same z"),
        (FusionVideoOnlyZ, "video layer's output only"),
        (FusionSummedZ, "summed"),
        (FusionEveryLayer, "concatenated in every layer"),
        (FusionOffByOne, "off-by-one"),
        (FusionUnitBottleneck, "not about 0.02"),
        (FusionPlainListLayers, "missing: video_layers.0"),
    ],
}

CORRECT = {
    "video.tsn_sample_indices": [tsn_float_formula_loop, tsn_numpy_seeded_by_generator, tsn_uniform_floor],
    "video.temporal_shift": [shift_rows_loop, shift_pad_and_cat, shift_roll_and_mask],
    "video.inflate_patch_weight": [inflate_stack_slices, inflate_einsum],
    "video.gap_at_k": [gap_heap_loop, gap_numpy_argpartition],
    "video.TubeletEmbedding": [TubeletUnfoldMatmul, TubeletEinsum, TubeletFrameConvSum],
    "video.DividedSpaceTimeBlock": [DividedJointMask, DividedLoops, DividedEinsum],
    "video.BottleneckFusionEncoder": [FusionBottleneckFirst, FusionBatchLoop],
}

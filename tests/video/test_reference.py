"""Chapter 08 references against their peers (TSN, TSM, mmaction2, scenic, youtube-8m, scikit-learn), properties,
and the direct proof that each check rejects its mutants and accepts other-style solutions.

Peer formulas that cannot run here (their packages need mmcv, flax or TensorFlow 1) are transliterated below as the
agreement oracle, each labelled with its source; none of them is used by the package.
"""

from __future__ import annotations

import heapq
import math
import numbers
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from xmodal_ref.video import checks
from xmodal_ref.video.reference import gap_at_k, inflate_patch_weight, temporal_shift, tsn_sample_indices

from .mutants import CORRECT, MUTANTS

# --- tsn_sample_indices -----------------------------------------------------------------------


def tsn_test_indices(num_frames: int, num_segments: int) -> list[int]:
    """ORACLE, transliterated from yjxiong/tsn-pytorch and mit-han-lab/temporal-shift-module ops/dataset.py
    `_get_test_indices` (new_length = 1), without the final `+ 1` (their frame files start at img_00001.jpg)."""
    tick = (num_frames - 1 + 1) / float(num_segments)
    return [int(tick / 2.0 + tick * x) for x in range(num_segments)]


def mmaction2_test_indices(num_frames: int, num_segments: int) -> np.ndarray:
    """ORACLE, transliterated from open-mmlab/mmaction2 mmaction/datasets/transforms/loading.py
    `SampleFrames._get_test_clips` (clip_len = 1, frame_interval = 1, no twice_sample) and the index arithmetic of
    `SampleFrames.transform` (out_of_bound_opt='loop', start_index = 0, then `.astype(np.int32)`)."""
    avg_interval = num_frames / float(num_segments)
    base_offsets = np.arange(num_segments) * avg_interval
    clip_offsets = base_offsets + avg_interval / 2.0
    frame_inds = clip_offsets[:, None] + np.arange(1)[None, :] * 1
    frame_inds = np.concatenate(frame_inds)
    frame_inds = np.mod(frame_inds.reshape((-1, 1)), num_frames)
    return np.concatenate(frame_inds).astype(np.int32)


def train_segment_lengths(num_frames: int, num_segments: int) -> tuple[int, int]:
    """ORACLE: TSN's `average_duration` (`_sample_indices`, new_length = 1) and mmaction2's train `avg_interval`
    (`_get_train_clips`, clip_len = 1, frame_interval = 1, keep_tail_frames=False), transliterated."""
    average_duration = (num_frames - 1 + 1) // num_segments
    ori_clip_len = 1 * 1
    avg_interval = (num_frames - ori_clip_len + 1) // num_segments
    return average_duration, avg_interval


@pytest.mark.parametrize(("num_frames", "num_segments"), checks.TSN_TEST_GRID)
def test_tsn_test_mode_equals_tsn_and_mmaction2_on_the_graded_grid(num_frames: int, num_segments: int) -> None:
    ours = tsn_sample_indices(num_frames, num_segments, "test")
    assert ours.dtype == torch.int64 and ours.shape == (num_segments,)
    assert ours.tolist() == tsn_test_indices(num_frames, num_segments)
    assert ours.tolist() == mmaction2_test_indices(num_frames, num_segments).tolist()


def test_tsn_float_formula_rounds_down_574_exact_centres_which_are_never_graded() -> None:
    disagree = {
        (n, s)
        for n in range(1, 401)
        for s in range(1, 33)
        if tsn_test_indices(n, s) != tsn_sample_indices(n, s, "test").tolist()
    }
    assert len(disagree) == 574
    assert (6, 7) in disagree and tsn_test_indices(6, 7)[3] == 2 and int(tsn_sample_indices(6, 7)[3]) == 3
    assert not disagree & set(checks.TSN_TEST_GRID)
    for n, s in disagree:  # always one frame below the exact centre, never another difference
        exact, peer = tsn_sample_indices(n, s, "test").tolist(), tsn_test_indices(n, s)
        assert all(e - p in (0, 1) for e, p in zip(exact, peer, strict=True))


@given(n=st.integers(1, 400), s=st.integers(1, 32))
def test_tsn_test_mode_is_the_floor_of_each_segment_centre(n: int, s: int) -> None:
    ours = tsn_sample_indices(n, s).tolist()
    for k, index in enumerate(ours):
        assert 0 <= index < n
        assert index <= (2 * k + 1) * n / (2 * s) < index + 1
    assert ours == sorted(ours)


@given(n=st.integers(1, 300), s=st.integers(1, 24), seed=st.integers(0, 2**31 - 1))
def test_tsn_train_mode_stays_in_integer_segments_and_follows_only_the_generator(n: int, s: int, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 1000)
        first = tsn_sample_indices(n, s, "train", torch.Generator().manual_seed(seed))
        torch.manual_seed(seed % 1000 + 1)
        torch.rand(7)
        second = tsn_sample_indices(n, s, "train", torch.Generator().manual_seed(seed))
    assert torch.equal(first, second) and first.dtype == torch.int64 and first.shape == (s,)
    if n < s:
        assert torch.equal(first, tsn_sample_indices(n, s, "test"))
        return
    d = n // s
    assert train_segment_lengths(n, s) == (d, d)
    start = torch.arange(s) * d
    assert bool(((first >= start) & (first < start + d)).all())
    assert int(first.max()) < s * d  # frames S·d … N−1 are never drawn


def test_tsn_train_offsets_are_uniform_and_independent() -> None:
    draws = torch.stack([tsn_sample_indices(100, 4, "train", torch.Generator().manual_seed(i)) for i in range(4000)])
    offsets = draws - torch.arange(4) * 25  # (4000, 4), d = 25
    frequencies = torch.stack([torch.bincount(column, minlength=25) for column in offsets.T]).double() / 4000
    sigma = math.sqrt(1 / 25 * 24 / 25 / 4000)
    assert float((frequencies - 1 / 25).abs().max()) < 5 * sigma
    agree = float((offsets[:, 0] == offsets[:, 3]).double().mean())
    assert abs(agree - 1 / 25) < 5 * sigma


def test_tsn_generator_none_uses_the_global_rng() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        a = tsn_sample_indices(50, 5, "train")
        torch.manual_seed(3)
        b = tsn_sample_indices(50, 5, "train", None)
    assert torch.equal(a, b)


@pytest.mark.parametrize(("args", "kwargs"), [((0, 3), {}), ((5, 0), {}), ((-1, 2), {}), ((10, 3), {"mode": "val"})])
def test_tsn_rejects_bad_arguments(args: tuple[int, int], kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        tsn_sample_indices(*args, **kwargs)


# --- temporal_shift ---------------------------------------------------------------------------


def tsm_shift(x: torch.Tensor, n_segment: int, fold_div: int = 3) -> torch.Tensor:
    """ORACLE, transliterated from mit-han-lab/temporal-shift-module ops/temporal_shift.py
    `TemporalShift.shift(x, n_segment, fold_div, inplace=False)`."""
    nt, c, h, w = x.size()
    n_batch = nt // n_segment
    x = x.view(n_batch, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # shift left
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]  # shift right
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]  # not shift
    return out.view(nt, c, h, w)


def tsm_inplace_backward(grad_output: torch.Tensor, fold: int) -> torch.Tensor:
    """ORACLE, transliterated from the same file: `InplaceShift.backward` (on a copy), input (N, T, C, H, W)."""
    grad_output = grad_output.clone()
    n, t, _c, h, w = grad_output.size()
    buffer = grad_output.data.new(n, t, fold, h, w).zero_()
    buffer[:, 1:] = grad_output.data[:, :-1, :fold]
    grad_output.data[:, :, :fold] = buffer
    buffer.zero_()
    buffer[:, :-1] = grad_output.data[:, 1:, fold : 2 * fold]
    grad_output.data[:, :, fold : 2 * fold] = buffer
    return grad_output


def mmaction2_shift(x: torch.Tensor, num_segments: int, shift_div: int = 3) -> torch.Tensor:
    """ORACLE, transliterated from open-mmlab/mmaction2 mmaction/models/backbones/resnet_tsm.py
    `TemporalShift.shift`."""
    n, c, h, w = x.size()
    x = x.view(-1, num_segments, c, h * w)
    fold = c // shift_div
    left_split = x[:, :, :fold, :]
    mid_split = x[:, :, fold : 2 * fold, :]
    right_split = x[:, :, 2 * fold :, :]
    zeros = left_split - left_split
    blank = zeros[:, :1, :, :]
    left_split = left_split[:, 1:, :, :]
    left_split = torch.cat((left_split, blank), 1)
    zeros = mid_split - mid_split
    blank = zeros[:, :1, :, :]
    mid_split = mid_split[:, :-1, :, :]
    mid_split = torch.cat((blank, mid_split), 1)
    out = torch.cat((left_split, mid_split, right_split), 2)
    return out.view(n, c, h, w)


@pytest.mark.parametrize(("shape", "n_segment", "fold_div"), checks.SHIFT_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_temporal_shift_is_bit_identical_to_tsm_and_mmaction2(shape, n_segment, fold_div, dtype) -> None:
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(sum(shape)))
    before = x.clone()
    ours = temporal_shift(x, n_segment, fold_div)
    assert torch.equal(x, before) and ours.dtype == dtype
    assert torch.equal(ours, tsm_shift(x, n_segment, fold_div))
    assert torch.equal(ours, mmaction2_shift(x, n_segment, fold_div))


@pytest.mark.parametrize(("shape", "n_segment", "fold_div"), checks.SHIFT_SHAPES)
def test_temporal_shift_gradient_is_tsm_inplace_backward(shape, n_segment, fold_div) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, dtype=torch.float64, generator=generator, requires_grad=True)
    upstream = torch.randn(shape, dtype=torch.float64, generator=generator)
    (temporal_shift(x, n_segment, fold_div) * upstream).sum().backward()
    clips = upstream.view(shape[0] // n_segment, n_segment, *shape[1:])
    assert torch.equal(x.grad, tsm_inplace_backward(clips, shape[1] // fold_div).view(shape))


@given(
    clips=st.integers(1, 3),
    frames=st.integers(1, 6),
    channels=st.integers(1, 20),
    fold_div=st.integers(1, 10),
    seed=st.integers(0, 10_000),
)
def test_temporal_shift_properties(clips: int, frames: int, channels: int, fold_div: int, seed: int) -> None:
    x = torch.randn(clips * frames, channels, 2, 3, generator=torch.Generator().manual_seed(seed))
    out = temporal_shift(x, frames, fold_div)
    fold = channels // fold_div
    assert torch.equal(out, tsm_shift(x, frames, fold_div))
    assert torch.equal(out[:, 2 * fold :], x[:, 2 * fold :])  # the rest is untouched
    if fold == 0 or 2 * fold > channels:
        return
    v, o = x.view(clips, frames, *x.shape[1:]), out.view(clips, frames, *x.shape[1:])
    assert bool((o[:, -1, :fold] == 0).all()) and bool((o[:, 0, fold : 2 * fold] == 0).all())  # zeros, no wrap
    # every shifted value is one of the clip's own values one frame away
    assert torch.equal(o[:, :-1, :fold], v[:, 1:, :fold]) and torch.equal(
        o[:, 1:, fold : 2 * fold], v[:, :-1, fold : 2 * fold]
    )


def test_temporal_shift_default_fold_div_is_8_and_partial_clips_raise() -> None:
    x = torch.randn(16, 32, 1, 1)
    assert torch.equal(temporal_shift(x, 8), tsm_shift(x, 8, 8))
    with pytest.raises(ValueError):
        temporal_shift(torch.randn(10, 8, 1, 1), 4)


# --- inflate_patch_weight ---------------------------------------------------------------------


def scenic_init_embedding(kernel: np.ndarray, t: int, kernel_init_method: str) -> np.ndarray:
    """ORACLE, transliterated from google-research/scenic scenic/projects/vivit/model_utils.py `init_embedding`
    (the '3d_conv' branch). `kernel` is flax's 2-D kernel (h, w, c_in, c_out); the result is (t, h, w, c_in, c_out)."""
    restored_kernel = kernel
    input_kernel_shape = (t, *kernel.shape)
    if kernel_init_method == "average_frame_initializer":
        restored_kernel = np.expand_dims(restored_kernel, axis=0)
        restored_kernel = np.tile(restored_kernel, [t, 1, 1, 1, 1]) / t
    elif kernel_init_method == "central_frame_initializer":
        central_time_index = input_kernel_shape[0] // 2
        temp = np.zeros(input_kernel_shape)
        temp[central_time_index] = restored_kernel.copy()
        restored_kernel = temp
    return restored_kernel


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize(("method", "scenic_name"), [("average", "average"), ("central", "central")])
def test_inflate_equals_scenic_init_embedding(t: int, method: str, scenic_name: str) -> None:
    weight2d = torch.randn(7, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
    flax_kernel = weight2d.permute(2, 3, 1, 0).numpy()  # (D, C, h, w) -> (h, w, c_in, c_out)
    scenic = scenic_init_embedding(flax_kernel, t, f"{scenic_name}_frame_initializer")  # (t, h, w, c_in, c_out)
    expected = torch.from_numpy(np.ascontiguousarray(scenic)).permute(4, 3, 0, 1, 2)  # (D, C, t, h, w)
    torch.testing.assert_close(inflate_patch_weight(weight2d, t, method), expected, atol=1e-15, rtol=0)


@given(
    t=st.integers(1, 6),
    dims=st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 10_000),
)
def test_inflated_kernels_through_conv3d_reproduce_the_image_model(t: int, dims, seed: int) -> None:
    d, c, ph, pw = dims
    generator = torch.Generator().manual_seed(seed)
    weight2d = torch.randn(d, c, ph, pw, dtype=torch.float64, generator=generator)
    bias = torch.randn(d, dtype=torch.float64, generator=generator)
    clip = torch.randn(2, c, t, 3 * ph, 2 * pw, dtype=torch.float64, generator=generator)  # (B, C, t, H, W)
    conv3d = torch.nn.Conv3d(c, d, (t, ph, pw), stride=(t, ph, pw), dtype=torch.float64)
    image = F.conv2d(clip[:, :, t // 2], weight2d, bias, stride=(ph, pw))
    with torch.no_grad():
        conv3d.bias.copy_(bias)
        conv3d.weight.copy_(inflate_patch_weight(weight2d, t, "central"))
        torch.testing.assert_close(conv3d(clip)[:, :, 0], image)  # each token = its central frame's image token
        conv3d.weight.copy_(inflate_patch_weight(weight2d, t, "average"))
        static = clip[:, :, :1].expand(-1, -1, t, -1, -1)
        one_frame = F.conv2d(clip[:, :, 0], weight2d, bias, stride=(ph, pw))
        torch.testing.assert_close(conv3d(static)[:, :, 0], one_frame)  # a static clip = one image


def test_inflate_even_t_takes_the_later_middle_frame_and_keeps_gradients() -> None:
    weight2d = torch.randn(2, 3, 2, 2, requires_grad=True)
    kernel = inflate_patch_weight(weight2d, 4)
    assert [bool(kernel[:, :, j].any()) for j in range(4)] == [False, False, True, False]
    (kernel.sum() + 2 * inflate_patch_weight(weight2d, 4, "average").sum()).backward()
    torch.testing.assert_close(weight2d.grad, torch.full_like(weight2d, 3.0))
    for bad in ({"t": 0}, {"t": 2, "method": "mean"}):
        with pytest.raises(ValueError):
            inflate_patch_weight(weight2d, **bad)


# --- gap_at_k ---------------------------------------------------------------------------------
# ORACLE, transliterated from google/youtube-8m eval_util.py (calculate_gap, top_k_by_class, top_k_triplets,
# flatten) and average_precision_calculator.py (AveragePrecisionCalculator: accumulate, peek_ap_at_n, ap_at_n,
# _shuffle), verbatim except xrange → range and Python 3 syntax.


def yt8m_flatten(l):
    return [item for sublist in l for item in sublist]


def yt8m_top_k_triplets(predictions, labels, k=20):
    m = len(predictions)
    k = min(k, m)
    indices = np.argpartition(predictions, -k)[-k:]
    return [(index, predictions[index], labels[index]) for index in indices]


def yt8m_top_k_by_class(predictions, labels, k=20):
    if k <= 0:
        raise ValueError("k must be a positive integer.")
    k = min(k, predictions.shape[1])
    num_classes = predictions.shape[1]
    prediction_triplets = []
    for video_index in range(predictions.shape[0]):
        prediction_triplets.extend(yt8m_top_k_triplets(predictions[video_index], labels[video_index], k))
    out_predictions = [[] for v in range(num_classes)]
    out_labels = [[] for v in range(num_classes)]
    for triplet in prediction_triplets:
        out_predictions[triplet[0]].append(triplet[1])
        out_labels[triplet[0]].append(triplet[2])
    out_true_positives = [np.sum(labels[:, i]) for i in range(num_classes)]
    return out_predictions, out_labels, out_true_positives


class Yt8mAveragePrecisionCalculator:
    def __init__(self, top_n=None):
        if not ((isinstance(top_n, int) and top_n >= 0) or top_n is None):
            raise ValueError("top_n must be a positive integer or None.")
        self._top_n = top_n
        self._total_positives = 0
        self._heap = []

    @property
    def heap_size(self):
        return len(self._heap)

    def accumulate(self, predictions, actuals, num_positives=None):
        if len(predictions) != len(actuals):
            raise ValueError("the shape of predictions and actuals does not match.")
        if num_positives is not None and (not isinstance(num_positives, numbers.Number) or num_positives < 0):
            raise ValueError("'num_positives' was provided but it wan't a nonzero number.")
        if num_positives is not None:
            self._total_positives += num_positives
        else:
            self._total_positives += np.size(np.where(actuals > 0))
        topk = self._top_n
        heap = self._heap
        for i in range(np.size(predictions)):
            if topk is None or len(heap) < topk:
                heapq.heappush(heap, (predictions[i], actuals[i]))
            elif predictions[i] > heap[0][0]:
                heapq.heappop(heap)
                heapq.heappush(heap, (predictions[i], actuals[i]))

    def peek_ap_at_n(self):
        if self.heap_size <= 0:
            return 0
        predlists = np.array(list(zip(*self._heap, strict=True)))
        return self.ap_at_n(predlists[0], predlists[1], n=self._top_n, total_num_positives=self._total_positives)

    @staticmethod
    def ap_at_n(predictions, actuals, n=20, total_num_positives=None):
        if len(predictions) != len(actuals):
            raise ValueError("the shape of predictions and actuals does not match.")
        if n is not None and (not isinstance(n, int) or n <= 0):
            raise ValueError(f"n must be 'None' or a positive integer. It was '{n}'.")
        ap = 0.0
        predictions = np.array(predictions)
        actuals = np.array(actuals)
        predictions, actuals = Yt8mAveragePrecisionCalculator._shuffle(predictions, actuals)
        sortidx = sorted(range(len(predictions)), key=lambda k: predictions[k], reverse=True)
        numpos = np.size(np.where(actuals > 0)) if total_num_positives is None else total_num_positives
        if numpos == 0:
            return 0
        if n is not None:
            numpos = min(numpos, n)
        delta_recall = 1.0 / numpos
        poscount = 0.0
        r = len(sortidx)
        if n is not None:
            r = min(r, n)
        for i in range(r):
            if actuals[sortidx[i]] > 0:
                poscount += 1
                ap += poscount / (i + 1) * delta_recall
        return ap

    @staticmethod
    def _shuffle(predictions, actuals):
        random.seed(0)
        suffidx = random.sample(range(len(predictions)), len(predictions))
        predictions = predictions[suffidx]
        actuals = actuals[suffidx]
        return predictions, actuals


def yt8m_calculate_gap(predictions, actuals, top_k=20):
    gap_calculator = Yt8mAveragePrecisionCalculator()
    sparse_predictions, sparse_labels, num_positives = yt8m_top_k_by_class(predictions, actuals, top_k)
    gap_calculator.accumulate(yt8m_flatten(sparse_predictions), yt8m_flatten(sparse_labels), sum(num_positives))
    return gap_calculator.peek_ap_at_n()


def gap_set(seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A random (predictions, labels, k): distinct scores, 0/1 float labels of a random density."""
    generator = torch.Generator().manual_seed(seed)
    v, c = (int(i) for i in torch.randint(2, 40, (2,), generator=generator))
    k = int(torch.randint(1, c + 5, (), generator=generator))
    predictions = torch.rand(v, c, generator=generator, dtype=torch.float64)
    labels = (torch.rand(v, c, generator=generator) < float(torch.rand((), generator=generator)) * 0.5 + 0.05).double()
    labels[0, 0] = 1.0  # at least one positive
    return predictions, labels, k


@pytest.mark.parametrize("seed", range(25))
def test_gap_equals_youtube8m_calculate_gap(seed: int) -> None:
    predictions, labels, k = gap_set(seed)
    assert predictions.flatten().unique().numel() == predictions.numel()  # no ties
    theirs = yt8m_calculate_gap(predictions.numpy(), labels.numpy(), k)
    assert gap_at_k(predictions, labels, k) == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_gap_equals_sklearn_average_precision_of_the_kept_pairs_times_their_recall(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is an optional peer for GAP@k")
    predictions, labels, k = gap_set(seed)
    scores, classes = predictions.topk(min(k, predictions.shape[1]), dim=1)
    kept = labels.gather(1, classes).flatten().numpy()
    if kept.sum() == 0:
        assert gap_at_k(predictions, labels, k) == 0.0
        return
    expected = metrics.average_precision_score(kept, scores.flatten().numpy()) * kept.sum() / labels.sum().item()
    assert gap_at_k(predictions, labels, k) == pytest.approx(expected, abs=1e-12)
    everything = metrics.average_precision_score(labels.numpy(), predictions.numpy(), average="micro")
    assert gap_at_k(predictions, labels, predictions.shape[1]) == pytest.approx(everything, abs=1e-12)


@given(seed=st.integers(0, 10_000), k=st.integers(1, 12))
def test_gap_properties(seed: int, k: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    predictions = torch.randn(9, 7, generator=generator, dtype=torch.float64)
    labels = torch.rand(9, 7, generator=generator) < 0.3
    value = gap_at_k(predictions, labels, k)
    assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert gap_at_k(torch.sigmoid(predictions), labels, k) == pytest.approx(value, abs=1e-12)  # only the order
    rows, columns = torch.randperm(9, generator=generator), torch.randperm(7, generator=generator)
    shuffled = gap_at_k(predictions[rows][:, columns], labels[rows][:, columns], k)
    assert shuffled == pytest.approx(value, abs=1e-12)
    assert gap_at_k(predictions, labels.long(), k) == value == gap_at_k(predictions, labels.float(), k)
    if bool(labels.any()) and int(labels.sum(1).max()) <= k:  # every positive fits in its video's top k
        perfect = labels.double() + torch.rand(9, 7, generator=generator, dtype=torch.float64) / 2
        assert gap_at_k(perfect, labels, k) == pytest.approx(1.0, abs=1e-12)


def test_gap_edge_cases() -> None:
    predictions = torch.rand(4, 6)
    assert gap_at_k(predictions, torch.zeros(4, 6)) == 0.0
    assert isinstance(gap_at_k(predictions, torch.zeros(4, 6, dtype=torch.bool), 3), float)
    for k in (0, -2):
        with pytest.raises(ValueError):
            gap_at_k(predictions, torch.ones(4, 6), k)


def test_every_video_exercise_has_five_mutants_and_two_other_styles() -> None:
    """The chapter asks for more than the general three (tests/test_mutants.py proves each one)."""
    assert len(MUTANTS) == len(CORRECT) == 7
    for exercise_id in MUTANTS:
        assert len(MUTANTS[exercise_id]) >= 5 and len(CORRECT[exercise_id]) >= 2, exercise_id

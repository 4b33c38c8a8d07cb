"""The synthetic direction × tone clips: shapes, seeding, exact time-reversed twins, balance and independence."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from xmodal_ref.data import video as V

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def splits() -> dict[str, V.VideoAudioClips]:
    return V.video_splits(seed=0)


@pytest.fixture(scope="module")
def clips(splits: dict[str, V.VideoAudioClips]) -> V.VideoAudioClips:
    return splits["train"]


def test_splits_have_the_contract_sizes_shapes_and_dtypes(splits: dict[str, V.VideoAudioClips]) -> None:
    for split, n in (("train", 1024), ("test", 512)):
        clips = splits[split]
        assert len(clips) == n
        assert clips.video.shape == (n, 8, 1, 12, 12) and clips.video.dtype == torch.float32
        assert clips.audio.shape == (n, 32, 16) and clips.audio.dtype == torch.float32
        for name in ("labels", "direction", "tone", "twin"):
            assert getattr(clips, name).shape == (n,) and getattr(clips, name).dtype == torch.int64
        assert torch.equal(clips.labels, 2 * clips.direction + clips.tone)
        assert set(clips.direction.tolist()) == set(clips.tone.tolist()) == {0, 1}


def test_clips_are_deterministic_under_their_seed_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, second, other = (V.make_video_audio_clips(40, seed) for seed in (5, 5, 6))
    assert torch.equal(torch.random.get_rng_state(), state)
    for field in dataclasses.fields(first):
        assert torch.equal(getattr(first, field.name), getattr(second, field.name))
    assert not torch.equal(first.video, other.video)
    assert not torch.equal(first.audio, other.audio)


def test_splits_come_from_seeds_2s_and_2s_plus_1() -> None:
    splits = V.video_splits(seed=1, n_train=24, n_test=8)
    assert torch.equal(splits["train"].video, V.make_video_audio_clips(24, seed=2).video)
    assert torch.equal(splits["test"].audio, V.make_video_audio_clips(8, seed=3).audio)


def test_every_left_clip_is_exactly_a_right_clip_played_backwards(clips: V.VideoAudioClips) -> None:
    twin = clips.twin
    assert torch.equal(clips.video[twin], clips.video.flip(1))  # bit for bit, noise included
    assert torch.equal(twin[twin], torch.arange(len(clips)))
    assert (clips.direction[twin] != clips.direction).all()
    # So the twins hold the same multiset of frames: whatever ignores frame order cannot tell them apart.
    assert torch.equal(clips.video.sort(dim=1).values, clips.video[twin].sort(dim=1).values)


def test_the_square_moves_one_pixel_per_frame_in_the_clip_direction(clips: V.VideoAudioClips) -> None:
    """Locate the 3 × 3 square in each frame by the brightest 3 × 3 box (the noise sometimes wins a frame)."""
    boxes = F.avg_pool2d(clips.video.flatten(0, 1), kernel_size=3, stride=1)  # (N*T, 1, 10, 10)
    where = boxes.flatten(1).argmax(dim=1).unflatten(0, clips.video.shape[:2])  # (N, T)
    rows, columns = where // 10, where % 10
    step = columns.diff(dim=1).median(dim=1).values  # (N,) typical column step per frame
    assert (step == torch.where(clips.direction == 0, 1, -1)).float().mean() > 0.99
    assert (rows.diff(dim=1).median(dim=1).values == 0).float().mean() > 0.99
    start = torch.where(clips.direction == 0, columns[:, 0], columns[:, -1])  # left edge when moving right
    assert start.le(2).float().mean() > 0.95


def test_pixel_and_audio_statistics_follow_the_contract(clips: V.VideoAudioClips) -> None:
    square_share = 9 / 144
    assert clips.video.mean().item() == pytest.approx(square_share, abs=0.005)
    assert clips.video.var().item() == pytest.approx(0.5**2 + square_share * (1 - square_share), rel=0.02)
    lines = torch.zeros(2, 16)
    lines[0, [3, 4]] = lines[1, [11, 12]] = 1.0
    residual = clips.audio - lines[clips.tone][:, None, :]
    assert residual.mean().item() == pytest.approx(0.0, abs=0.01)
    assert residual.std().item() == pytest.approx(0.8, rel=0.01)
    for tone in (0, 1):
        spectrum = clips.audio[clips.tone == tone].mean(dim=(0, 1))  # (16,)
        torch.testing.assert_close(spectrum, lines[tone], atol=0.05, rtol=0)


def test_classes_are_balanced_and_tone_is_independent_of_direction(splits: dict[str, V.VideoAudioClips]) -> None:
    for clips in splits.values():
        assert torch.bincount(clips.labels, minlength=4).tolist() == [len(clips) // 4] * 4
        same_tone = (clips.tone == clips.tone[clips.twin]).float().mean().item()
        assert 0.4 < same_tone < 0.6  # a twin's tone is drawn afresh: it agrees about half the time
        # The video does not depend on the tone: the square's mean image is the same for both tones.
        for direction in (0, 1):
            low, high = (clips.video[(clips.direction == direction) & (clips.tone == t)].mean(dim=0) for t in (0, 1))
            assert (low - high).abs().max() < 0.35


def test_an_odd_or_empty_split_is_refused() -> None:
    for n in (0, 7):
        with pytest.raises(ValueError, match="even"):
            V.make_video_audio_clips(n, seed=0)

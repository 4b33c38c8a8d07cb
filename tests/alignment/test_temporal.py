"""The chapter 04 temporal-alignment demo: the synthetic utterance, DTW durations, CTC posteriors and decoding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from xmodal_ref.alignment import ctc_loss
from xmodal_ref.alignment import temporal as ta

TOKENS = torch.tensor([2, 5, 5, 1, 3])  # the chapter's example: a repeated token in the middle
SEEDS = (0, 1, 2, 3)


def random_log_probs(frames: int, classes: int, seed: int) -> torch.Tensor:
    return torch.randn(frames, classes, generator=torch.Generator().manual_seed(seed)).log_softmax(dim=-1)


def brute_force_posteriors(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """γ (T, S) by enumerating all C^T frame labellings and keeping those that collapse to targets."""
    frames, classes = log_probs.shape
    occupancy = torch.zeros(frames, 2 * len(targets) + 1, dtype=torch.float64)
    for labelling in itertools.product(range(classes), repeat=frames):
        path = torch.tensor(labelling)
        if not torch.equal(ta.collapse(path), targets):
            continue
        emitted = torch.cumsum((path != ta.BLANK) & (path != F.pad(path, (1, 0), value=-1)[:-1]), 0)  # (T,)
        states = torch.where(path == ta.BLANK, 2 * emitted, 2 * emitted - 1)  # (T,) the state of each frame
        occupancy[torch.arange(frames), states] += log_probs.double()[torch.arange(frames), path].sum().exp()
    return occupancy / occupancy[0].sum()


# --- the utterance -------------------------------------------------------------------------------


def test_utterance_shapes_and_truth_are_consistent():
    u = ta.make_utterance(TOKENS, seed=0)
    frames = u.frames.shape[0]
    assert u.frames.shape == (frames, 12) and u.frames.dtype == torch.float32
    assert u.labels.shape == (frames,) and u.segments.shape == (len(TOKENS), 2)
    assert u.prototypes.shape == (7, 12)
    for token, (start, end) in zip(TOKENS.tolist(), u.segments.tolist(), strict=True):
        assert 3 <= end - start <= 7
        assert (u.labels[start:end] == token).all()
    assert (u.durations.sum() + (u.labels == ta.BLANK).sum()).item() == frames
    assert torch.equal(ta.collapse(u.labels), TOKENS), "the true labelling is a CTC path of the tokens"


def test_equal_adjacent_tokens_always_have_a_pause_between_them():
    for seed in range(20):
        u = ta.make_utterance([4, 4, 4], seed=seed, max_pause=1)
        assert (u.segments[1:, 0] > u.segments[:-1, 1]).all()


def test_utterance_is_deterministic_under_the_seed():
    a, b, c = ta.make_utterance(TOKENS, seed=3), ta.make_utterance(TOKENS, seed=3), ta.make_utterance(TOKENS, seed=4)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.segments, b.segments)
    assert a.frames.shape != c.frames.shape or not torch.equal(a.frames, c.frames)
    assert torch.equal(a.prototypes, c.prototypes), "all seeds share one phone inventory"


def test_tokens_must_be_non_blank_ids_of_the_inventory():
    for bad in ([0, 1], [1, 7], []):
        with pytest.raises(ValueError, match="tokens"):
            ta.make_utterance(bad)


# --- DTW -----------------------------------------------------------------------------------------


def test_path_durations_give_every_frame_to_one_element():
    path = [(0, 0), (1, 0), (2, 1), (2, 2), (3, 3), (4, 3)]  # frame 2 is matched with elements 1 and 2
    assert ta.path_durations(path).tolist() == [2, 0, 1, 2]
    assert ta.path_durations(path, counted=torch.tensor([True, False, True, True, True])).tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_dtw_durations_match_the_truth(seed):
    """Tolerance: 0 frames on every token outside the repeated pair, and on the pair's sum.

    The pauses are left out of the count (the template has no silence), and the split inside the
    pair of equal tokens is a tie, so only the pair's total duration is checked there.
    """
    u = ta.make_utterance(TOKENS, seed=seed)
    _, path = ta.dtw_alignment(u)
    assert ta.path_durations(path).sum().item() == u.frames.shape[0]
    errors = ta.duration_errors(u, path)
    assert errors[[0, 3, 4]].tolist() == [0, 0, 0]
    assert errors[1:3].sum().item() == 0


# --- CTC -----------------------------------------------------------------------------------------


def test_frame_log_probs_are_a_distribution_over_silence_and_the_tokens():
    u = ta.make_utterance(TOKENS, seed=0)
    log_probs = ta.frame_log_probs(u)
    assert log_probs.shape == (u.frames.shape[0], 7)
    torch.testing.assert_close(log_probs.exp().sum(dim=-1), torch.ones(u.frames.shape[0]))
    assert (log_probs.argmax(dim=-1) == u.labels).float().mean() > 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_posterior_rows_sum_to_one(seed):
    u = ta.make_utterance(TOKENS, seed=seed)
    posteriors = ta.ctc_posteriors(ta.frame_log_probs(u), TOKENS)
    assert posteriors.shape == (u.frames.shape[0], 2 * len(TOKENS) + 1)
    assert (posteriors >= 0).all() and torch.isfinite(posteriors).all()
    torch.testing.assert_close(posteriors.sum(dim=1), torch.ones(u.frames.shape[0]))


@pytest.mark.parametrize("seed", SEEDS)
def test_posterior_durations_match_the_truth_including_the_repeat(seed):
    """Tolerance: 0 frames on every token, the two copies of the repeated token included."""
    u = ta.make_utterance(TOKENS, seed=seed)
    durations = ta.posterior_durations(ta.ctc_posteriors(ta.frame_log_probs(u), TOKENS))
    assert durations.tolist() == u.durations.tolist()


@pytest.mark.parametrize(("targets", "frames"), [([1, 1], 4), ([2, 1, 2], 5), ([1], 4), ([], 3)])
def test_posteriors_equal_brute_force_enumeration(targets, frames):
    targets = torch.tensor(targets, dtype=torch.long)
    log_probs = random_log_probs(frames, 3, seed=frames + len(targets))
    expected = brute_force_posteriors(log_probs, targets).float()
    torch.testing.assert_close(ta.ctc_posteriors(log_probs, targets), expected, atol=1e-5, rtol=1e-4)


def test_posteriors_are_zero_where_a_state_is_unreachable():
    """γ_t(s) is 0 before the fewest frames that lead into state s, and after the last frame that can still finish."""
    targets = torch.tensor([2, 5, 5, 1, 3])
    frames = 9  # required_frames = 6
    posteriors = ta.ctc_posteriors(random_log_probs(frames, 7, seed=0), targets)  # (T, S)
    for s in range(posteriors.shape[1]):
        labels_up_to_s = targets[: (s + 1) // 2]  # the labels passed through on the way into state s
        labels_from_s = targets[s // 2 :]  # the labels still to emit from state s on
        first = ta.required_frames(labels_up_to_s) - (s % 2)  # a label state holds its label's frame
        last = frames - ta.required_frames(labels_from_s) - (1 - s % 2)  # a blank state holds a frame of its own
        reachable = (torch.arange(frames) >= first) & (torch.arange(frames) <= last)
        assert (posteriors[~reachable, s] == 0).all(), f"state {s}: mass outside frames {first}..{last}"
        assert (posteriors[reachable, s] > 0).all(), f"state {s}: no mass inside frames {first}..{last}"


def test_posteriors_agree_with_the_reference_ctc_loss():
    """−∂ ctc_loss / ∂ log y_t(c) is the posterior summed over the states of class c."""
    targets = TOKENS
    log_probs = random_log_probs(12, 7, seed=1).requires_grad_()
    ctc_loss(log_probs, targets).backward()
    posteriors = ta.ctc_posteriors(log_probs, targets)  # (T, S)
    per_class = torch.zeros(12, 7).index_add_(1, ta.extended_labels(targets), posteriors)  # (T, C)
    torch.testing.assert_close(per_class, -log_probs.grad)
    assert log_probs.grad is not None and not posteriors.requires_grad


def test_too_few_frames_is_infeasible():
    targets = TOKENS  # five labels and one repeat: at least six frames
    assert ta.required_frames(targets) == 6
    assert math.isinf(ctc_loss(random_log_probs(5, 7, seed=0), targets).item())
    with pytest.raises(ValueError, match="cannot hold"):
        ta.ctc_posteriors(random_log_probs(5, 7, seed=0), targets)
    # With exactly enough frames there is one path, [2, 5, ∅, 5, 1, 3], and γ puts all its mass on it.
    posteriors = ta.ctc_posteriors(random_log_probs(6, 7, seed=0), targets)
    assert posteriors.argmax(dim=1).tolist() == [1, 3, 4, 5, 7, 9]
    torch.testing.assert_close(posteriors.amax(dim=1), torch.ones(6))


def test_collapse_merges_repeats_then_drops_blanks():
    assert ta.collapse(torch.tensor([0, 2, 2, 0, 5, 5, 0, 5, 1, 1, 3, 0])).tolist() == [2, 5, 5, 1, 3]
    assert ta.collapse(torch.tensor([2, 5, 5, 5, 1, 3])).tolist() == [2, 5, 1, 3], "no blank: the repeat merges"
    assert ta.collapse(torch.tensor([0, 0])).tolist() == []


@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_decoding_recovers_the_tokens_and_the_repeat(seed):
    u = ta.make_utterance(TOKENS, seed=seed)
    assert ta.greedy_decode(ta.frame_log_probs(u)).tolist() == TOKENS.tolist()


# --- plots ---------------------------------------------------------------------------------------


def test_plots_return_figures():
    u = ta.make_utterance(TOKENS, seed=0)
    _, path = ta.dtw_alignment(u)
    log_probs = ta.frame_log_probs(u)
    dtw_figure = ta.plot_dtw_alignment(u, path)
    ctc_figure = ta.plot_ctc_posteriors(log_probs, ta.ctc_posteriors(log_probs, TOKENS), TOKENS)
    assert isinstance(dtw_figure, Figure) and isinstance(ctc_figure, Figure)
    assert len(ctc_figure.axes) == 4  # two heat maps and their colour bars

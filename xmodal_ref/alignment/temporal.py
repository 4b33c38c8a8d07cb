"""Chapter 04 demo: aligning a spoken-like frame sequence with its tokens, by DTW and by CTC.

``make_utterance`` renders a token sequence as feature frames: each token is a noisy copy of its
prototype vector held for a random number of frames (a variable speaking rate), with pauses of
silence around and between the tokens. The true segmentation comes with it, for evaluation.

* DTW (``dtw_alignment``) warps the frames onto a template of one prototype frame per token. Every
  frame must land on some token, so DTW hands each pause to a neighbouring token; ``path_durations``
  and ``duration_errors`` read the segmentation off the warping path and score it.
* CTC sums over every frame labelling that collapses to the tokens. ``frame_log_probs`` is a fixed
  acoustic model (silence is the blank), ``ctc_posteriors`` gives the posterior occupancy of each
  state of the extended labels [∅, l_1, ∅, …, l_L, ∅] (``posterior_durations`` reads a
  segmentation off it), and ``greedy_decode`` the best-path decoding. Two copies of a repeated
  token are told apart only by the blank between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from xmodal_ref.alignment import dtw
from xmodal_ref.common.plots import closed_subplots

BLANK = 0  # class 0 is silence, which is also the CTC blank


def phone_prototypes(vocab_size: int = 6, dim: int = 12, seed: int = 0) -> torch.Tensor:
    """The feature vector of each class, (vocab_size + 1, dim): row 0 silence, row k token k.

    Silence is the zero vector (no energy); each token is a standard normal vector, so two tokens
    lie about √(2·dim) apart and a token lies about √dim from silence.
    """
    tokens = torch.randn(vocab_size, dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.zeros(1, dim), tokens])  # (V + 1, d)


def extended_labels(targets: torch.Tensor, blank: int = BLANK) -> torch.Tensor:
    """The CTC states of ``targets`` (L,): [∅, l_1, ∅, l_2, …, l_L, ∅], (S,) with S = 2L + 1."""
    extended = targets.new_full((2 * targets.numel() + 1,), blank)
    extended[1::2] = targets
    return extended


@dataclass(frozen=True)
class Utterance:
    """One rendered utterance and its true segmentation."""

    frames: torch.Tensor  # (T, d) float32
    tokens: torch.Tensor  # (L,) int64 in 1..V, never the blank
    labels: torch.Tensor  # (T,) int64: the class of each frame, BLANK during silence
    segments: torch.Tensor  # (L, 2) int64: the [start, end) frames of each token, in order
    prototypes: torch.Tensor  # (V + 1, d): row 0 silence (the blank), row k token k

    @property
    def durations(self) -> torch.Tensor:
        """(L,) int64: the true number of frames of each token."""
        return self.segments[:, 1] - self.segments[:, 0]


def make_utterance(
    tokens: Sequence[int] | torch.Tensor,
    seed: int = 0,
    *,
    prototypes: torch.Tensor | None = None,
    frames_per_token: tuple[int, int] = (3, 7),
    max_pause: int = 2,
    noise: float = 0.4,
) -> Utterance:
    """Render ``tokens`` (ids in 1..V) as a seeded sequence of noisy feature frames.

    Each token lasts a uniform number of frames in ``frames_per_token`` (inclusive); a pause of 0 to
    ``max_pause`` silence frames comes before, between and after the tokens, except that two equal
    adjacent tokens always have at least one silence frame between them: without it they would be
    one long token, which no aligner could split. Every frame is its class's prototype plus
    Gaussian noise of standard deviation ``noise``. ``prototypes`` defaults to
    ``phone_prototypes()``, one inventory shared by all seeds. Deterministic under ``seed``.

    The true labelling is each state of ``extended_labels(tokens)`` held for its number of frames
    (a pause may last 0), so it is one of the paths that CTC sums over.
    """
    prototypes = phone_prototypes() if prototypes is None else prototypes
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim != 1 or tokens.numel() == 0 or not ((tokens >= 1) & (tokens < len(prototypes))).all():
        raise ValueError(f"tokens must be one or more ids in 1..{len(prototypes) - 1}, got {tokens.tolist()}")
    generator = torch.Generator().manual_seed(seed)
    low, high = frames_per_token
    counts = torch.empty(2 * len(tokens) + 1, dtype=torch.long)  # (S,) frames spent in each extended state
    counts[1::2] = torch.randint(low, high + 1, (len(tokens),), generator=generator)
    counts[0::2] = torch.randint(0, max_pause + 1, (len(tokens) + 1,), generator=generator)
    repeated = F.pad(tokens[1:] == tokens[:-1], (1, 1))  # (L + 1,) pauses between two equal tokens
    counts[0::2] = torch.where(repeated, counts[0::2].clamp(min=1), counts[0::2])
    labels = extended_labels(tokens).repeat_interleave(counts)  # (T,)
    boundaries = F.pad(counts.cumsum(0), (1, 0))  # (S + 1,) the first frame of each state, then T
    segments = torch.stack([boundaries[1:-1:2], boundaries[2::2]], dim=1)  # (L, 2)
    frames = prototypes[labels] + noise * torch.randn(len(labels), prototypes.shape[1], generator=generator)
    return Utterance(frames, tokens, labels, segments, prototypes)


# --- DTW: warp the frames onto one prototype frame per token ------------------------------------


def dtw_alignment(utterance: Utterance) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``dtw`` of the frames (T, d) against the token template (L, d), one prototype frame per token.

    Returns dtw's 0-dim cost and its warping path of (frame, token position) pairs. Two equal
    adjacent tokens have identical template frames, so every split of their frames between them
    costs the same: DTW finds where the pair starts and ends, but where one copy stops and the
    next begins is an arbitrary tie. CTC's blank is what gives that split a meaning.
    """
    return dtw(utterance.frames, utterance.prototypes[utterance.tokens])


def path_durations(path: Sequence[tuple[int, int]], counted: torch.Tensor | None = None) -> torch.Tensor:
    """The number of frames a warping path gives each template element, (L,) int64.

    path: (i, j) pairs from ``dtw``, frame i matched with template element j. A frame matched with
    several elements (a step (0, +1)) goes to the last of them, so the durations sum to T. With
    ``counted``, a (T,) bool mask, only the frames where it is True are counted.
    """
    frames, elements = torch.tensor(path).T  # (P,), (P,), both non-decreasing
    owner = torch.zeros(int(frames[-1]) + 1, dtype=torch.long)
    owner = owner.scatter_reduce(0, frames, elements, reduce="amax")  # (T,) the element of each frame
    if counted is not None:
        owner = owner[counted]
    return torch.bincount(owner, minlength=int(elements[-1]) + 1)


def duration_errors(utterance: Utterance, path: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Per token, the speech frames the path gives it minus its true duration: (L,) int64.

    The template has no silence, so the path must hand every pause frame to a neighbouring token;
    the silence frames are therefore left out of the count, and a path whose boundaries all fall
    inside the pauses scores 0 everywhere. A token starting one frame late scores −1, and the one
    before it +1. Within a pair of equal adjacent tokens only the pair's sum is meaningful (see
    ``dtw_alignment``).
    """
    return path_durations(path, counted=utterance.labels != BLANK) - utterance.durations


# --- CTC: a fixed acoustic model, state posteriors and best-path decoding ------------------------


def frame_log_probs(utterance: Utterance, temperature: float = 4.0) -> torch.Tensor:
    """A fixed acoustic model: log_softmax over the classes of −‖frame − prototype‖² / temperature.

    Returns (T, C) log-probabilities, C = V + 1 with class 0 (silence) as the CTC blank. It is the
    posterior of a nearest-prototype Gaussian classifier with equal priors; the temperature sets
    how confident it is (2·noise² would be exact for the data, a larger one keeps it unsure).
    """
    squared = torch.cdist(utterance.frames, utterance.prototypes).square()  # (T, C)
    return F.log_softmax(-squared / temperature, dim=-1)


def required_frames(targets: torch.Tensor) -> int:
    """The fewest frames whose labelling can collapse to ``targets``: L plus one blank per adjacent repeat."""
    return targets.numel() + int((targets[1:] == targets[:-1]).sum())


def _lattice_log_likelihood(emissions: torch.Tensor, can_skip: torch.Tensor) -> torch.Tensor:
    """log Σ over the CTC state paths of exp(Σ_t emissions[t, s_t]), a 0-dim tensor.

    emissions: (T, S), the log-probability of each extended-label state at each frame, one column
    per state; can_skip: (S,) bool, whether state s may be entered from s − 2. A path starts in
    state 0 or 1, moves by 0 or +1 (or +2 where allowed) each frame, and ends in S − 2 or S − 1.
    Unreachable states hold a huge finite negative rather than −inf, so that the gradient is 0
    there and never NaN.
    """
    never = torch.finfo(emissions.dtype).min
    states = emissions.shape[1]
    start = torch.full((states,), never, dtype=emissions.dtype, device=emissions.device)
    start[:2] = 0.0
    alpha = start + emissions[0]  # (S,)
    for emission in emissions[1:]:
        came_from = torch.stack(
            [
                alpha,  # stay in s
                F.pad(alpha, (1, 0), value=never)[:states],  # from s − 1
                F.pad(alpha, (2, 0), value=never)[:states].masked_fill(~can_skip, never),  # from s − 2
            ]
        )  # (3, S)
        alpha = torch.logsumexp(came_from, dim=0) + emission
    return torch.logsumexp(alpha[-2:], dim=0)


def ctc_posteriors(log_probs: torch.Tensor, targets: torch.Tensor, blank: int = BLANK) -> torch.Tensor:
    """Posterior occupancy γ_t(s) = P(path in state s at frame t | frames, targets): (T, S).

    log_probs: (T, C) log-softmaxed; targets: (L,) without blanks; the states are
    ``extended_labels(targets, blank)``, S = 2L + 1. Each row sums to 1, and γ_t(s) is exactly 0
    where no path can be in state s at frame t (too early to have reached it, or too late to finish).

    Why a gradient is a posterior: with e_t(s) = log y_t(l'_s), the emission of state s at frame t
    taken as its own variable, log p = log Σ_paths exp(Σ_t e_t(s_t)). Differentiating this
    log-sum-exp gives ∂ log p / ∂ e_t(s) = Σ_{paths with s_t = s} p(path) / p = γ_t(s). So the
    emissions are gathered into a (T, S) leaf and γ = −∂(CTC loss)/∂emissions, by autograd.

    ``ctc_loss`` itself reads every blank state, and every copy of a repeated label, from one column
    of log_probs, so its gradient w.r.t. log_probs only gives the sums over the states of each class,
    −∂ ctc_loss / ∂ log y_t(c) = Σ_{s: l'_s = c} γ_t(s) (Graves et al. 2006, eq. 16). Splitting the
    blank mass between the pauses, or a repeated label's mass between its copies, needs one
    variable per state, hence the state-level recursion here, which computes the same −log p as
    ``ctc_loss`` (the tests check both identities).
    """
    if log_probs.shape[0] < required_frames(targets):
        raise ValueError(f"{log_probs.shape[0]} frames cannot hold targets {targets.tolist()} (the CTC loss is inf)")
    extended = extended_labels(targets, blank)  # (S,)
    can_skip = torch.zeros_like(extended, dtype=torch.bool)
    can_skip[2:] = (extended[2:] != blank) & (extended[2:] != extended[:-2])  # onto a label unlike l'_{s-2}
    emissions = log_probs.detach()[:, extended].requires_grad_()  # (T, S), a leaf
    with torch.enable_grad():
        loss = -_lattice_log_likelihood(emissions, can_skip)
        (gradient,) = torch.autograd.grad(loss, emissions)
    return -gradient


def posterior_durations(posteriors: torch.Tensor) -> torch.Tensor:
    """(L,) int64: the number of frames at which each label's state is the most likely one.

    posteriors: (T, S) from ``ctc_posteriors``. Frames whose most likely state is a blank count
    for no label, so the result compares directly with ``Utterance.durations``; unlike the DTW
    durations, it splits a repeated label between its copies, at the blank between them.
    """
    states = posteriors.shape[1]
    return torch.bincount(posteriors.argmax(dim=1), minlength=states)[1::2]


def collapse(labels: torch.Tensor, blank: int = BLANK) -> torch.Tensor:
    """CTC's many-to-one map B on a frame labelling (T,): merge runs of a label, then drop blanks."""
    first_of_run = torch.ones_like(labels, dtype=torch.bool)
    first_of_run[1:] = labels[1:] != labels[:-1]
    return labels[first_of_run & (labels != blank)]


def greedy_decode(log_probs: torch.Tensor, blank: int = BLANK) -> torch.Tensor:
    """Best-path decoding: ``collapse`` the most likely class of each frame of log_probs (T, C)."""
    return collapse(log_probs.argmax(dim=-1), blank)


# --- Plots ------------------------------------------------------------------------------------------


def _state_names(states: torch.Tensor, blank: int = BLANK) -> list[str]:
    return ["∅" if s == blank else str(s) for s in states.tolist()]


def plot_dtw_alignment(utterance: Utterance, path: Sequence[tuple[int, int]]) -> Figure:
    """The frame-to-token cost matrix ‖x_t − prototype(l_j)‖ with the DTW path drawn over it.

    Time runs left to right and the template's tokens bottom to top. A dashed box marks the true
    frames of each token, in its row; frames outside every box are silence.
    """
    template = utterance.prototypes[utterance.tokens]  # (L, d)
    costs = torch.cdist(utterance.frames, template).T.numpy()  # (L, T)
    frames, elements = zip(*path, strict=True)

    fig, ax = closed_subplots(figsize=(9, 3.2))
    image = ax.imshow(costs, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="frame cost ‖x − template‖")
    for j, (start, end) in enumerate(utterance.segments.tolist()):
        box = plt.Rectangle((start - 0.5, j - 0.5), end - start, 1, fill=False, edgecolor="white", linestyle="--")
        box.set_label("true segment" if j == 0 else "_nolegend_")
        ax.add_patch(box)
    ax.plot(frames, elements, color="tab:red", marker=".", linewidth=1.5, label="DTW path")
    ax.set_yticks(range(len(utterance.tokens)), _state_names(utterance.tokens))
    ax.set(xlabel="frame", ylabel="template token", title="DTW of the frames onto one prototype per token")
    ax.legend(loc="upper left", fontsize=8, facecolor="lightgray")
    return fig


def plot_ctc_posteriors(log_probs: torch.Tensor, posteriors: torch.Tensor, targets: torch.Tensor) -> Figure:
    """Two heat maps over time: the acoustic model's class posteriors, and the CTC state occupancy.

    log_probs: (T, C) from ``frame_log_probs`` (class 0 the blank); posteriors: (T, S) from
    ``ctc_posteriors`` for ``targets`` (L,). The top panel is what each frame says on its own; the
    bottom one is where the path is, given the whole utterance and its transcript.
    """
    classes = log_probs.shape[1]
    fig, (top, bottom) = closed_subplots(2, 1, figsize=(9, 5.5), sharex=True)
    panels = (
        (top, log_probs.detach().exp(), _state_names(torch.arange(classes)), "class", "Frame posteriors y_t(c)"),
        (bottom, posteriors.detach(), _state_names(extended_labels(targets)), "state", "CTC occupancy γ_t(s)"),
    )
    for ax, heat, names, ylabel, title in panels:
        image = ax.imshow(heat.T.cpu().numpy(), aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=1)
        ax.set_yticks(range(len(names)), names)
        ax.set(ylabel=ylabel, title=title)
        fig.colorbar(image, ax=ax, label="probability")
    bottom.set_xlabel("frame")
    return fig

"""Checks for chapter 08 · video."""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..grading.harness import (
    Case,
    Mistake,
    build_twin,
    check_cases,
    check_gradients,
    describe,
    describe_case,
    diagnose,
    expect_close,
    expect_raises,
    expect_tensor,
    invoke,
    run_case,
)
from ..grading.inputs import random_rows
from ..grading.verdict import CheckFailure

#: (N, S) pairs where TSN's float formula int(tick/2 + tick*k) equals the exact floor((2k+1)N/(2S)).
TSN_TEST_GRID = (
    (10, 3),
    (300, 8),
    (8, 8),
    (3, 8),
    (1, 4),
    (37, 5),
    (100, 16),
    (7, 2),
    (250, 7),
    (64, 16),
    (5, 5),
    (2, 3),
    (1, 1),
    (90, 32),
    (17, 4),
)

TSN_TRAIN_GRID = ((37, 5), (16, 8), (100, 3), (8, 8), (9, 4))

TSN_DRAWS = 300

TSN_SAME_SEED_CALLS = 20


def _tsn_test_variant(num_frames, num_segments, mode="test", generator=None, *, position="centre"):
    """Test-mode indices as the usual slips compute them."""
    n, s = num_frames, num_segments
    k = torch.arange(s)
    centre = (2 * k + 1) * n / (2 * s)  # float64 centres
    if position == "start":
        return k * n // s
    if position == "one-based":
        return (2 * k + 1) * n // (2 * s) + 1
    if position == "rounded":
        return torch.floor(centre + 0.5).long()
    if position == "round-half-even":
        return torch.round(centre).long()
    if position == "integer-length":
        return k * (n // s) + (n // s) // 2
    return torch.linspace(0, n - 1, s).long()  # both end frames (pytorchvideo's UniformTemporalSubsample)


TSN_TEST_MISTAKES = [
    Mistake(
        "the start of each segment, floor(k·N/S); test mode takes its centre, floor((2k + 1)·N / (2S))",
        functools.partial(_tsn_test_variant, position="start"),
    ),
    Mistake(
        "1-based indices (TSN's code adds 1 for files named img_00001.jpg); the contract's indices start at 0",
        functools.partial(_tsn_test_variant, position="one-based"),
    ),
    Mistake(
        "the centre is rounded to the nearest frame; the contract takes its floor, as int() does in TSN",
        functools.partial(_tsn_test_variant, position="rounded"),
    ),
    Mistake(
        "the centre is rounded to the nearest frame; the contract takes its floor, as int() does in TSN",
        functools.partial(_tsn_test_variant, position="round-half-even"),
    ),
    Mistake(
        "centres of segments of integer length N // S; in test mode the S segments have the exact length N/S",
        functools.partial(_tsn_test_variant, position="integer-length"),
    ),
    Mistake(
        "evenly spaced frames including both end frames (a linspace from 0 to N − 1, pytorchvideo's"
        " convention); TSN takes the centre of each of S equal segments",
        functools.partial(_tsn_test_variant, position="linspace"),
    ),
]


def check_tsn_sample_indices(learner, reference) -> None:
    invalid = (
        (Case("N = 0", (0, 3)), "no frames to sample from: N < 1"),
        (Case("S = 0", (10, 0)), "no segments: S < 1"),
        (Case("a negative N", (-4, 2)), "no frames to sample from: N < 1"),
        (Case('mode="val"', (10, 3), {"mode": "val"}), 'mode must be "train" or "test"'),
    )
    for case, why in invalid:
        expect_raises(learner, case, reference, f"{why}, so raise ValueError")
    cases = [Case(f"test mode, N={n}, S={s}", (n, s), {"mode": "test"}) for n, s in TSN_TEST_GRID]
    check_cases(learner, reference, cases, mistakes=TSN_TEST_MISTAKES, atol=0, rtol=0)
    default = Case("the default mode (test), N=300, S=8", (300, 8))
    got, expected = run_case(learner, reference, default)
    context = describe_case(default, reference)
    if not (isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.equal(got, expected)):
        raise CheckFailure(
            "wrong result when mode is not given",
            case=context,
            expected=describe(expected),
            got=describe(got),
            cause='mode defaults to "test"',
        )
    for n, s in TSN_TRAIN_GRID:
        _check_tsn_train(learner, n, s)
    _check_tsn_global_rng(learner, 37, 5)
    short = [(n, s) for n, s in TSN_TEST_GRID if n < s]
    for n, s in short:
        case = Case(f"train mode with N < S (N={n}, S={s}): the test-mode indices", (n, s, "train"))
        context = describe_case(case, reference)
        got = invoke(learner, n, s, mode="train", generator=torch.Generator().manual_seed(0), context=context)
        expect_close(
            got,
            reference(n, s, "test"),
            context,
            args=(n, s),
            mistakes=[
                Mistake(
                    "all zeros, as TSN's own code returns when N < S; the contract takes the test-mode centres",
                    lambda n, s: torch.zeros(s, dtype=torch.long),
                ),
                *TSN_TEST_MISTAKES,
            ],
            atol=0,
            rtol=0,
        )


def _tsn_call(learner, n: int, s: int, seed: int, global_seed: int, context: str) -> torch.Tensor:
    """One train-mode call with a generator seeded ``seed`` after seeding the global RNG with ``global_seed``."""
    torch.manual_seed(global_seed)
    got = invoke(learner, n, s, mode="train", generator=torch.Generator().manual_seed(seed), context=context)
    return expect_tensor(got, torch.zeros(s, dtype=torch.long), context).clone()


def _check_tsn_train(learner, n: int, s: int) -> None:
    d = n // s
    base = f"train mode, N={n}, S={s} (d = N // S = {d}), {TSN_DRAWS} calls with generators seeded 0..{TSN_DRAWS - 1}"
    with torch.random.fork_rng(devices=[]):  # the global RNG is scrambled on purpose, then restored
        draws = torch.stack(
            [_tsn_call(learner, n, s, seed, 7919 * seed + 13, f"{base}; seed {seed}") for seed in range(TSN_DRAWS)]
        )  # (draws, S)
        start = torch.arange(s) * d  # (S,) first frame of each segment
        offsets = draws - start  # (draws, S)
        outside = (offsets < 0) | (offsets >= d)
        if bool(outside.any()):
            tail = (draws >= s * d) & (draws < n)  # the frames the contract never draws, shown first when hit
            seed, k = (int(i) for i in (tail if bool(tail.any()) else outside).nonzero()[0])
            index = int(draws[seed, k])
            raise CheckFailure(
                f"index {index} for segment k={k} lies outside its segment [k·d, (k+1)·d) = [{k * d}, {(k + 1) * d})",
                case=f"{base}; seed {seed}",
                got=describe(draws[seed]),
                cause=_tsn_outside_cause(offsets, index, n, s, d),
            )
        for seed in range(TSN_SAME_SEED_CALLS):
            again = _tsn_call(learner, n, s, seed, 104729 + seed, f"{base}; seed {seed} again")
            if not torch.equal(again, draws[seed]):
                raise CheckFailure(
                    f"two calls with generators seeded {seed} returned different indices (the global RNG was"
                    " seeded differently before each call)",
                    case=base,
                    expected=describe(draws[seed]),
                    got=describe(again),
                    cause="a draw ignores `generator`: it came from torch's global RNG (torch.randint or torch.rand"
                    " without generator=...), numpy or Python's random. Pass generator=generator to every draw",
                )
    _check_tsn_frequencies(offsets, d, base)


def _tsn_outside_cause(offsets: torch.Tensor, index: int, n: int, s: int, d: int) -> str:
    if s * d <= index < n:
        return (
            f"frames S·d … N−1 = {s * d} … {n - 1} are never drawn: the segments have integer length d = N // S,"
            " so the last N − S·d frames are left out (segments of length N / S reach them)"
        )
    if bool(((offsets >= 1) & (offsets <= d)).all()):
        return "1-based indices: every index is one too high; the contract's indices start at 0"
    if index < 0 or index >= n:
        return f"the index is outside the video [0, N) = [0, {n})"
    return "idx_k = k·d + r_k with r_k drawn from {0, …, d−1}: each index must stay inside its own segment"


def _within_five_sigma(frequency: float, p: float) -> bool:
    sigma = math.sqrt(p * (1 - p) / TSN_DRAWS)
    return abs(frequency - p) <= 5 * sigma + 1e-12


def _check_tsn_frequencies(offsets: torch.Tensor, d: int, base: str) -> None:
    """Offsets uniform on {0, …, d−1} in every segment, and independent across segments."""
    p = 1 / d
    sigma = math.sqrt(p * (1 - p) / TSN_DRAWS)
    for k in range(offsets.shape[1]):
        counts = torch.bincount(offsets[:, k], minlength=d)
        for r, count in enumerate(counts.tolist()):
            if not _within_five_sigma(count / TSN_DRAWS, p):
                never = [i for i, c in enumerate(counts.tolist()) if c == 0]
                raise CheckFailure(
                    f"segment k={k}: offset {r} was drawn in {count} of {TSN_DRAWS} calls",
                    case=base,
                    expected=f"about {TSN_DRAWS * p:.1f} (a frequency of 1/d = {p:.3g} ± 5σ = {5 * sigma:.3g})",
                    got=f"offset counts {counts.tolist()}",
                    cause=(
                        f"offsets {never} are never drawn: draw r_k uniformly from all of {{0, …, d−1}}"
                        " (torch.randint(d, ...) already excludes d)"
                        if never
                        else "the offsets are not uniform on {0, …, d−1}: draw them with torch.randint(d, (S,), ...)"
                    ),
                )
    agree = float((offsets[:, 0] == offsets[:, -1]).double().mean())
    if not _within_five_sigma(agree, p):
        raise CheckFailure(
            f"the first and the last segment got the same offset in {agree:.0%} of the calls",
            case=base,
            expected=f"about 1/d = {p:.3g} (± 5σ = {5 * sigma:.3g}): independent offsets",
            cause="one offset shared by every segment: draw S independent offsets, e.g. torch.randint(d, (S,), ...)",
        )


def _check_tsn_global_rng(learner, n: int, s: int) -> None:
    """generator=None (or omitted) draws from torch's global RNG."""
    context = f"train mode, N={n}, S={s}, generator=None after torch.manual_seed(0)"
    d = n // s
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        omitted = invoke(learner, n, s, mode="train", context=context + " (generator omitted)")
        expect_tensor(omitted, torch.zeros(s, dtype=torch.long), context)
        torch.manual_seed(0)
        none = expect_tensor(invoke(learner, n, s, mode="train", generator=None, context=context), omitted, context)
        others = []
        for seed in range(1, 11):
            torch.manual_seed(seed)
            others.append(invoke(learner, n, s, mode="train", generator=None, context=context))
    start = torch.arange(s) * d
    if not bool(((none >= start) & (none < start + d)).all()):
        raise CheckFailure(
            "with generator=None an index lies outside its segment",
            case=context,
            got=describe(none),
            cause="with no generator, draw from torch's global RNG the same way (generator=None is allowed)",
        )
    if not torch.equal(omitted, none) or all(torch.equal(o, none) for o in others):
        raise CheckFailure(
            "with generator=None the draws do not follow torch's global RNG",
            case=context,
            cause="generator=None means torch's global RNG (torch.randint(..., generator=None) uses it): not numpy,"
            " not Python's random, not a fixed seed",
        )


#: ((N*T, C, H, W), n_segment, fold_div): fold > 0, C not divisible, fold = 0, T = 1, 1/8 of 64 channels.
SHIFT_SHAPES = (
    ((16, 16, 3, 3), 8, 8),
    ((12, 10, 2, 5), 4, 4),
    ((12, 10, 2, 5), 3, 3),
    ((6, 5, 1, 1), 6, 8),
    ((4, 16, 2, 2), 1, 8),
    ((24, 64, 2, 2), 8, 8),
)


def _frames(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return random_rows(shape[0], math.prod(shape[1:]), seed, dtype=dtype).view(shape)


def _shift_variant(
    x, n_segment, fold_div=8, *, directions="contract", wrap=False, fold_axis=1, layout="clip-major", ceil=False
):
    """The temporal shift with switches for the usual mistakes (a loop over frames, on a copy)."""
    rows, channels = x.shape[:2]
    size = x.shape[fold_axis]
    fold = min(-(-size // fold_div) if ceil else size // fold_div, channels)
    if layout == "clip-major":
        clips = x.reshape(rows // n_segment, n_segment, *x.shape[1:])  # (N, T, C, H, W)
    else:
        clips = x.reshape(n_segment, rows // n_segment, *x.shape[1:]).transpose(0, 1)  # rows read as t*N + b
    out = clips.clone()
    step = {"contract": (1, -1), "swapped": (-1, 1), "same": (1, 1)}[directions]
    for group, delta in zip((slice(0, fold), slice(fold, 2 * fold)), step, strict=True):
        source = clips[:, :, group]
        if wrap:
            out[:, :, group] = source.roll(-delta, dims=1)
            continue
        out[:, :, group] = 0
        if delta == 1:
            out[:, :-1, group] = source[:, 1:]
        else:
            out[:, 1:, group] = source[:, :-1]
    if layout != "clip-major":
        out = out.transpose(0, 1)
    return out.reshape(x.shape)


SHIFT_MISTAKES = [
    Mistake(
        "the two directions are swapped: channels [0, fold) receive the NEXT frame (t + 1) and channels"
        " [fold, 2·fold) the PREVIOUS frame (t − 1)",
        functools.partial(_shift_variant, directions="swapped"),
    ),
    Mistake(
        "both shifted groups move the same way: [0, fold) comes from frame t + 1, [fold, 2·fold) from frame t − 1",
        functools.partial(_shift_variant, directions="same"),
    ),
    Mistake(
        "the shift wraps around (torch.roll): the frame at the clip's edge must receive zeros, not the frame"
        " from the other end of the clip",
        functools.partial(_shift_variant, wrap=True),
    ),
    Mistake(
        "the rows are grouped as (T, N): row b·T + t is frame t of clip b, so view x as (N, T, C, H, W)",
        functools.partial(_shift_variant, layout="time-major"),
    ),
    Mistake(
        "fold is computed from the wrong axis (the last one, as for channels-last images): fold = C // fold_div,"
        " with C = x.shape[1]",
        functools.partial(_shift_variant, fold_axis=-1),
    ),
    Mistake(
        "fold is rounded up; the contract's fold is C // fold_div (rounded down)",
        functools.partial(_shift_variant, ceil=True),
    ),
    Mistake(
        "fold is computed from the wrong axis (the N·T rows): fold = C // fold_div, with C = x.shape[1]",
        functools.partial(_shift_variant, fold_axis=0),
    ),
]


def check_temporal_shift(learner, reference) -> None:
    cases = []
    for dtype in (torch.float32, torch.float64):
        for seed, (shape, n_segment, fold_div) in enumerate(SHIFT_SHAPES):
            fold = shape[1] // fold_div
            label = f"{shape[0] // n_segment} clips of T={n_segment} frames, C={shape[1]}, fold={fold}"
            cases.append(Case(label, (_frames(shape, seed, dtype), n_segment, fold_div)))
    check_cases(learner, reference, cases, mistakes=SHIFT_MISTAKES, atol=0, rtol=0)
    default = Case("the default fold_div (8): 3 clips of T=8 frames, C=64", (_frames((24, 64, 2, 2), 9), 8))
    check_cases(
        learner,
        reference,
        [default],
        mistakes=[
            Mistake(
                "fold_div defaults to 3 (TemporalShift.shift's own default); the contract's default is 8, as TSM's"
                " --shift_div",
                lambda x, n_segment: reference(x, n_segment, 3),
            ),
            *SHIFT_MISTAKES,
        ],
        atol=0,
        rtol=0,
    )
    check_gradients(learner, reference, cases[1], wrt=["x"])
    expect_raises(
        learner,
        Case("10 rows, n_segment=4: not whole clips", (_frames((10, 8, 2, 2), 10), 4)),
        reference,
        "10 rows cannot be split into clips of 4 frames: raise ValueError when x.shape[0] % n_segment != 0",
        error=Exception,
    )


def _patch_weight(d: int, c: int, ph: int, pw: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    return random_rows(d, c * ph * pw, seed, dtype=dtype).view(d, c, ph, pw)


def _inflate_layout(weight2d, t, method="central", *, layout):
    kernel = torch.zeros(t, *weight2d.shape, dtype=weight2d.dtype)  # (t, D, C, p_h, p_w)
    if method == "average":
        kernel[:] = weight2d / t
    else:
        kernel[t // 2] = weight2d
    if layout == "time-last":
        return kernel.permute(1, 2, 3, 4, 0)  # (D, C, p_h, p_w, t)
    if layout == "scenic":
        return kernel.permute(0, 3, 4, 2, 1)  # (t, p_h, p_w, C, D)
    return kernel  # (t, D, C, p_h, p_w)


INFLATE_MISTAKES = [
    Mistake(
        "the time axis comes first, (t, D, C, p_h, p_w); nn.Conv3d's weight is (D, C, t, p_h, p_w)",
        functools.partial(_inflate_layout, layout="time-first"),
    ),
    Mistake(
        "the time axis comes last, (D, C, p_h, p_w, t); nn.Conv3d's weight is (D, C, t, p_h, p_w)",
        functools.partial(_inflate_layout, layout="time-last"),
    ),
    Mistake(
        "scenic's flax layout (t, p_h, p_w, C, D); nn.Conv3d's weight is (D, C, t, p_h, p_w)",
        functools.partial(_inflate_layout, layout="scenic"),
    ),
    Mistake(
        'method="average" returned the central-frame kernel: "average" puts weight2d / t in every slice',
        lambda weight2d, t, method="central": F.pad(weight2d[:, :, None], (0, 0, 0, 0, t // 2, t - 1 - t // 2)),
    ),
]


def check_inflate_patch_weight(learner, reference) -> None:
    for case in (
        Case("t = 0", (_patch_weight(6, 3, 4, 5, 0, torch.float32), 0)),
        Case("t = -1", (_patch_weight(6, 3, 4, 5, 0, torch.float32), -1, "average")),
    ):
        expect_raises(learner, case, reference, "t must be at least 1: raise ValueError")
    expect_raises(
        learner,
        Case('method="mean"', (_patch_weight(6, 3, 4, 5, 0, torch.float32), 3, "mean")),
        reference,
        'only "average" and "central" exist: raise ValueError for any other method',
    )
    cases = [Case("the default method (central), t = 3", (_patch_weight(6, 3, 4, 5, 1, torch.float32), 3))]
    for dtype in (torch.float32, torch.float64):
        for t in range(1, 6):
            for method in ("average", "central"):
                weight2d = _patch_weight(6, 3, 4, 5, 10 * t + len(method), dtype)
                cases.append(Case(f"{method}, t = {t}, D=6, C=3, 4×5 patches", (weight2d, t, method)))
    for case in cases:
        got, expected = run_case(learner, reference, case)
        context = describe_case(case, reference)
        got = _expect_kernel(got, expected, case, context)
        _check_inflation_property(got.detach(), *case.args, context=context, default=len(case.args) == 2)
        expect_close(got, expected, context, args=case.args, mistakes=INFLATE_MISTAKES, atol=1e-7, rtol=1e-6)
    for method in ("average", "central"):
        gradient_case = Case(f"{method}, t = 4", (_patch_weight(5, 2, 3, 3, 7, torch.float32), 4, method))
        check_gradients(learner, reference, gradient_case, wrt=["weight2d"])


def _expect_kernel(got: Any, expected: torch.Tensor, case: Case, context: str) -> torch.Tensor:
    """The shape, dtype and device of the inflated kernel, naming a known wrong layout."""

    def layout() -> str | None:
        return diagnose(got.detach(), expected, case.args, case.kwargs, INFLATE_MISTAKES, atol=1e-6, rtol=1e-5)

    return expect_tensor(got, expected, context, layout)


def _proportional(a: torch.Tensor, b: torch.Tensor, atol: float) -> float | None:
    """The factor r with a = r·b (within atol), or None."""
    ratio = float((a * b).sum() / (b * b).sum())
    return ratio if torch.allclose(a, ratio * b, atol=atol, rtol=1e-4) else None


def _tokens(clip: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """What nn.Conv3d with stride = kernel size computes: (B, C, t, H, W) -> (B, D, H / p_h, W / p_w).

    kernel: (D, C, t, p_h, p_w). One einsum over the non-overlapping tubes: fast on any shape, where a
    convolution pays for a new primitive on every new shape and dtype.
    """
    b, c, t, h, w = clip.shape
    ph, pw = kernel.shape[-2:]
    tubes = clip.reshape(b, c, t, h // ph, ph, w // pw, pw)
    return torch.einsum("bctiujv,dctuv->bdij", tubes, kernel) + bias[:, None, None]


def _check_inflation_property(
    kernel: torch.Tensor, weight2d: torch.Tensor, t: int, method: str = "central", *, context: str, default: bool
) -> None:
    """What the inflated kernel is for: the image model's tokens, read off a clip (the bias reused unchanged)."""
    generator = torch.Generator().manual_seed(t)
    d, c, ph, pw = weight2d.shape
    dtype, atol = weight2d.dtype, (1e-4 if weight2d.dtype == torch.float32 else 1e-10)
    bias = torch.randn(d, generator=generator, dtype=torch.float64).to(dtype)
    clip = torch.randn(2, c, t, 2 * ph, 2 * pw, generator=generator, dtype=torch.float64).to(dtype)  # (B, C, t, H, W)
    image = weight2d[:, :, None]  # the image kernel, as a tubelet kernel of one frame

    if method == "average":
        static = clip[:, :, :1].expand(-1, -1, t, -1, -1)  # t identical frames
        tokens, one_frame = _tokens(static, kernel, bias), _tokens(clip[:, :, :1], image, bias)
        if torch.allclose(tokens, one_frame, atol=atol, rtol=1e-4):
            return
        ratio = _proportional(tokens - bias[:, None, None], one_frame - bias[:, None, None], atol)
        raise CheckFailure(
            "a static clip of t identical frames is not embedded as the image model embeds one frame",
            case=context,
            cause=f"the t temporal slices add up to {ratio:.4g} × weight2d: divide the repeated kernel by t"
            if ratio is not None and not math.isclose(ratio, 1.0, rel_tol=1e-3)
            else "with filter inflation every temporal slice is weight2d / t, so the slices add up to weight2d",
        )
    tokens = _tokens(clip, kernel, bias)
    frames = clip.transpose(1, 2).reshape(-1, c, 1, *clip.shape[-2:])  # (B·t, C, 1, H, W): each frame an image
    per_frame = _tokens(frames, image, bias).unflatten(0, (-1, t)).unbind(1)  # t × (B, D, 2, 2)
    if torch.allclose(tokens, per_frame[t // 2], atol=atol, rtol=1e-4):
        return
    matched = [j for j, frame in enumerate(per_frame) if torch.allclose(tokens, frame, atol=atol, rtol=1e-4)]
    if matched:
        cause = (
            f"the tokens are the image tokens of frame {matched[0]}: put weight2d in slice t // 2 = {t // 2}"
            " (for even t the later of the two middle frames, as scenic indexes shape[0] // 2)"
        )
    elif torch.allclose(tokens, torch.stack(per_frame).mean(0), atol=atol, rtol=1e-4):
        cause = 'this is the "average" initialisation (the mean of the frames\' tokens)' + (
            '; the default method is "central"' if default else ""
        )
    else:
        cause = "slice t // 2 must be weight2d and every other slice zero"
    raise CheckFailure(
        "a tubelet token is not the image token of its central frame", case=context + " (random clip)", cause=cause
    )


def _distinct_scores(v: int, c: int, seed: int, dtype: torch.dtype = torch.float32, *, logits: bool = True):
    """(V, C) scores without ties: a random permutation of evenly spaced probabilities (or their logits)."""
    generator = torch.Generator().manual_seed(seed)
    probabilities = (torch.randperm(v * c, generator=generator).double() + 0.5) / (v * c)
    scores = torch.logit(probabilities) if logits else probabilities
    return scores.view(v, c).to(dtype)


def _random_labels(v: int, c: int, density: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1000)
    return torch.rand(v, c, generator=generator) < density  # (V, C) bool


def _gap_variant(
    predictions, labels, k=20, *, denominator="all", keep="video", ascending=False, per_video=False, gain="precision"
):
    """GAP with switches for the usual mistakes, in float64, written as plain Python over the ranked list."""
    scores = predictions.detach().double()
    positive = labels > 0
    kept = min(k, scores.shape[1])
    if per_video:
        values = [_gap_variant(s[None], p[None], k) for s, p in zip(scores, positive, strict=True) if bool(p.any())]
        return sum(values) / len(values) if values else 0.0
    if keep == "video":
        top, classes = scores.topk(kept, dim=1)
        pairs = list(zip(top.flatten().tolist(), positive.gather(1, classes).flatten().tolist(), strict=True))
    else:
        pairs = list(zip(scores.flatten().tolist(), positive.flatten().tolist(), strict=True))
    pairs.sort(key=lambda pair: pair[0], reverse=not ascending)
    if keep == "pooled-k":
        pairs = pairs[:kept]
    elif keep == "pooled-vk":
        pairs = pairs[: kept * scores.shape[0]]
    total = int(positive.sum()) if denominator == "all" else sum(rel for _, rel in pairs)
    if total == 0:
        return 0.0
    hits, value = 0, 0.0
    for i, (_, relevant) in enumerate(pairs, start=1):
        hits += relevant
        if relevant:
            value += (hits / i) if gain == "precision" else 1.0
    return value / total


def _mean_ap_over_classes(predictions, labels, k=20):
    """youtube-8m's MAP: one AP per class over the kept pairs, averaged over the classes that have positives."""
    positive = labels > 0
    top = predictions.detach().topk(min(k, predictions.shape[1]), dim=1).indices
    kept = torch.zeros(predictions.shape, dtype=torch.bool).scatter(1, top, True)  # (V, C)
    values = [
        _average_precision(predictions[kept[:, c], c], positive[kept[:, c], c], int(positive[:, c].sum()))
        for c in range(predictions.shape[1])
        if bool(positive[:, c].any())
    ]
    return sum(values) / len(values) if values else 0.0


def _average_precision(scores: torch.Tensor, relevant: torch.Tensor, total: int) -> float:
    """Σ precision@i · rel_i / total over ``scores`` ranked descending."""
    hits = relevant[scores.detach().double().argsort(descending=True)].double()
    ranks = torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    return float((hits.cumsum(0) / ranks * hits).sum()) / total


GAP_MISTAKES = [
    Mistake(
        "P counts only the positives among the kept top-k pairs; it must count every positive label in `labels`,"
        " also those that fell outside a video's top k",
        functools.partial(_gap_variant, denominator="kept"),
    ),
    Mistake(
        "an average precision per video, then averaged: GAP pools the kept pairs of all videos into one ranking",
        functools.partial(_gap_variant, per_video=True),
    ),
    Mistake(
        "k is applied to the pooled ranking (its first k pairs); keep the top k of each video, then pool them",
        functools.partial(_gap_variant, keep="pooled-k"),
    ),
    Mistake(
        "k is applied to the pooled ranking (its first V·k pairs); keep the top k of each video, then pool them",
        functools.partial(_gap_variant, keep="pooled-vk"),
    ),
    Mistake(
        "every (score, label) pair is kept: keep only each video's min(k, C) highest-scoring pairs",
        functools.partial(_gap_variant, keep="all"),
    ),
    Mistake(
        "the pairs are sorted ascending; sort by score, descending", functools.partial(_gap_variant, ascending=True)
    ),
    Mistake(
        "the recall of the kept pairs (each positive counts 1); each positive counts its precision@i",
        functools.partial(_gap_variant, gain="recall"),
    ),
    Mistake(
        "youtube-8m's MAP (an AP per class, averaged over the classes); GAP pools every class into one ranking",
        _mean_ap_over_classes,
    ),
]


def check_gap_at_k(learner, reference) -> None:
    for k in (0, -1):
        expect_raises(
            learner,
            Case(f"k = {k}", (_distinct_scores(4, 5, 0), _random_labels(4, 5, 0.3, 0), k)),
            reference,
            "k must be at least 1: raise ValueError",
        )
    ranked = _random_labels(12, 10, 0.25, 7)
    ranked[:, 3:] = False  # at most 3 positives per video, all inside its top 5
    ranked[0, 0] = True
    cases = [
        Case("V=40, C=30, k=20, logits", (_distinct_scores(40, 30, 1), _random_labels(40, 30, 0.15, 1), 20)),
        Case("V=40, C=30, k=5", (_distinct_scores(40, 30, 2), _random_labels(40, 30, 0.15, 2), 5)),
        Case("V=25, C=12, k=1, int labels", (_distinct_scores(25, 12, 3), _random_labels(25, 12, 0.2, 3).long(), 1)),
        Case("V=10, C=8, k=100 > C", (_distinct_scores(10, 8, 4), _random_labels(10, 8, 0.3, 4), 100)),
        Case(
            "float64 probabilities, float labels, V=20, C=15, k=4",
            (
                _distinct_scores(20, 15, 5, torch.float64, logits=False),
                _random_labels(20, 15, 0.2, 5).double(),
                4,
            ),
        ),
        Case("V=30, C=6, k=3, dense labels", (_distinct_scores(30, 6, 6), _random_labels(30, 6, 0.6, 6), 3)),
        Case("the default k (20), V=40, C=30", (_distinct_scores(40, 30, 8), _random_labels(40, 30, 0.15, 8))),
        Case(
            "every positive ranked first: GAP = 1",
            (ranked.double() + _distinct_scores(12, 10, 9, logits=False).double() / 2, ranked, 5),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=GAP_MISTAKES, atol=1e-6, rtol=1e-6)
    for case in (
        cases[0],
        Case("no positive label: GAP = 0.0", (_distinct_scores(6, 5, 10), torch.zeros(6, 5, dtype=torch.bool), 3)),
    ):
        got, expected = run_case(learner, reference, case)
        if not isinstance(got, float) or got != got or abs(got - expected) > 1e-6:
            raise CheckFailure(
                "expected a Python float" + (" (P = 0 returns 0.0)" if expected == 0 else ""),
                case=describe_case(case, reference),
                expected=repr(expected),
                got=describe(got) if not isinstance(got, (int, float)) else f"{type(got).__name__} {got!r}",
                cause="return float(...): not a tensor, not an int (return 0.0, not 0)",
            )


def _video_module_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A seeded float32 N(0, 1) tensor."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


#: (video shape (B, T, C, H, W), tubelet (t, p_h, p_w), embed_dim, label). C ≠ T everywhere, so a reshape
#: in place of the (B, T, C, H, W) → (B, C, T, H, W) permute cannot pass.
TUBELET_CASES = (
    ((2, 8, 3, 16, 16), (2, 4, 4), 12, "B=2, T=8 frames, C=3, 16×16, tubelets 2×4×4, D=12"),
    ((1, 6, 2, 8, 12), (3, 4, 2), 5, "non-cubic 3×4×2 tubelets on a non-square 8×12 clip, T=6, C=2, D=5"),
    ((2, 7, 3, 10, 9), (2, 4, 4), 8, "leftovers dropped: T=7, H=10, W=9 with 2×4×4 tubelets, D=8"),
    ((1, 4, 1, 4, 4), (1, 2, 2), 3, "t=1 (one frame per tubelet), T=4, C=1, 4×4, D=3"),
)

TUBELET_ORDER_CAUSE = (
    "the tokens are in the wrong order ({}); the contract orders them time slowest, width fastest,"
    " n = (i_t·H' + i_h)·W' + i_w, which is what `.flatten(2).transpose(1, 2)` of the (B, D, T', H', W') grid gives"
)


def _tubelet_tokens(
    twin: nn.Module,
    video: torch.Tensor,
    *,
    permute: bool = True,
    order: str = "thw",
    time_stride: bool = True,
    bias: bool = True,
) -> torch.Tensor:
    """Tubelet tokens with switches for the usual mistakes.

    ``order`` is the token order, slowest axis first, out of t, h, w; "dn" returns the (B, D, N) grid and
    "reshape" reads the (B, D, N) grid's memory as (B, N, D).
    """
    batch, frames, channels, height, width = video.shape
    clip = video.permute(0, 2, 1, 3, 4) if permute else video.reshape(batch, channels, frames, height, width)
    conv = twin.proj
    stride = conv.stride if time_stride else (1, *conv.stride[1:])
    grid = F.conv3d(clip, conv.weight, conv.bias if bias else None, stride=stride)  # (B, D, T', H', W')
    if order == "dn":
        return grid.flatten(2)
    if order == "reshape":
        return grid.reshape(batch, -1, grid.shape[1])
    axes = [2 + "thw".index(axis) for axis in order]
    return grid.permute(0, *axes, 1).flatten(1, 3)  # (B, N, D)


def _tubelet_mistakes(twin: nn.Module) -> list[Mistake]:
    tokens = functools.partial(_tubelet_tokens, twin)
    return [
        Mistake(
            "the video was reshaped (or viewed) to (B, C, T, H, W) instead of permuted: a reshape keeps the memory"
            " order, so it mixes frames and channels; use video.permute(0, 2, 1, 3, 4)",
            functools.partial(tokens, permute=False),
        ),
        Mistake(
            TUBELET_ORDER_CAUSE.format("width varies slowest, time fastest: the grid's axes were reversed"),
            functools.partial(tokens, order="wht"),
        ),
        Mistake(
            TUBELET_ORDER_CAUSE.format("time varies fastest, the (h w t) order of transformers' TimeSformer"),
            functools.partial(tokens, order="hwt"),
        ),
        Mistake(
            TUBELET_ORDER_CAUSE.format("height and width are swapped"),
            functools.partial(tokens, order="twh"),
        ),
        Mistake(
            "the (B, D, N) grid was reshaped to (B, N, D), which scrambles tokens and features; transpose it:"
            " `.flatten(2).transpose(1, 2)`",
            functools.partial(tokens, order="reshape"),
        ),
        Mistake(
            "the tokens come out as (B, D, N): transpose the flattened grid to (B, N, D)",
            functools.partial(tokens, order="dn"),
        ),
        Mistake(
            "the tubes overlap in time (stride 1 along T): the stride must equal the tubelet size in every axis",
            functools.partial(tokens, time_stride=False),
        ),
        Mistake("proj.bias is not added to the tokens", functools.partial(tokens, bias=False)),
    ]


def check_TubeletEmbedding(learner, reference) -> None:
    for seed, (shape, tubelet, dim, label) in enumerate(TUBELET_CASES):
        module, twin = build_twin(learner, reference, shape[2], dim, tubelet)
        case = Case(label, (_video_module_input(shape, seed),))
        check_cases(module, twin, [case], mistakes=_tubelet_mistakes(twin))
        check_gradients(module, twin, case, wrt=["video"], parameters=True)


def _divided_attend(attention: nn.MultiheadAttention, h: torch.Tensor) -> torch.Tensor:
    return attention(h, h, h, need_weights=False)[0]


def _divided_block(
    twin: nn.Module,
    x: torch.Tensor,
    *,
    time_first: bool = True,
    temporal_fc: bool = True,
    time_sequences: str = "positions",
    space_reads_input: bool = False,
    post_norm: bool = False,
    mlp_norm: bool = True,
) -> torch.Tensor:
    """The divided space-time block with switches for the usual mistakes.

    ``time_sequences``: "positions" (the contract, (B*N, T, D) after moving N before T), "reshape"
    ((B*N, T, D) by a reshape of (B, T, N, D), no permute) or "frames" ((B*T, N, D): a second spatial attention).
    """
    batch, frames, patches, dim = x.shape

    def residual(norm: nn.LayerNorm, x: torch.Tensor, update) -> torch.Tensor:
        return norm(x + update(x)) if post_norm else x + update(norm(x))

    def time_update(h: torch.Tensor) -> torch.Tensor:
        if time_sequences == "positions":
            out = _divided_attend(twin.temporal_attn, h.transpose(1, 2).reshape(batch * patches, frames, dim))
            out = out.reshape(batch, patches, frames, dim).transpose(1, 2)
        else:
            shape = (batch * patches, frames, dim) if time_sequences == "reshape" else (batch * frames, patches, dim)
            out = _divided_attend(twin.temporal_attn, h.reshape(shape)).reshape(batch, frames, patches, dim)
        return twin.temporal_fc(out) if temporal_fc else out

    def space_update(h: torch.Tensor) -> torch.Tensor:
        out = _divided_attend(twin.spatial_attn, h.reshape(batch * frames, patches, dim))
        return out.reshape(batch, frames, patches, dim)

    def time(x: torch.Tensor) -> torch.Tensor:
        return residual(twin.temporal_norm, x, time_update)

    def space(x: torch.Tensor) -> torch.Tensor:
        return residual(twin.spatial_norm, x, space_update)

    if space_reads_input:
        x = time(x) + space_update(twin.spatial_norm(x))
    else:
        x = space(time(x)) if time_first else time(space(x))
    if not mlp_norm:
        return x + twin.mlp(x)
    return residual(twin.mlp_norm, x, twin.mlp)


def _divided_mistakes(twin: nn.Module) -> list[Mistake]:
    block = functools.partial(_divided_block, twin)
    return [
        Mistake(
            "space attention runs before time attention; divided attention is time first, then space",
            functools.partial(block, time_first=False),
        ),
        Mistake(
            "the time step's residual skips temporal_fc: x = x + temporal_fc(temporal_attn(h, h, h)[0])",
            functools.partial(block, temporal_fc=False),
        ),
        Mistake(
            "the time sequences were made by reshaping (B, T, N, D) to (B*N, T, D) without moving N before T, so"
            " each sequence mixes positions and frames: transpose to (B, N, T, D) first (and back afterwards)",
            functools.partial(block, time_sequences="reshape"),
        ),
        Mistake(
            "the time attention runs over the N patches of each frame ((B*T, N, D) sequences), a second spatial"
            " attention: its sequences are the T frames at one spatial position, (B*N, T, D)",
            functools.partial(block, time_sequences="frames"),
        ),
        Mistake(
            "the space step reads the block's input, not the x the time step produced: the two attentions run one"
            " after the other (h = spatial_norm(x) with the x from step 1)",
            functools.partial(block, space_reads_input=True),
        ),
        Mistake(
            "post-norm (LayerNorm after each residual add); the contract normalises the input of each attention and"
            " of the MLP (pre-norm)",
            functools.partial(block, post_norm=True),
        ),
        Mistake("the MLP reads x without mlp_norm", functools.partial(block, mlp_norm=False)),
    ]


def _check_temporal_fc_starts_at_zero(module: nn.Module, context: str) -> None:
    parameters = dict(module.named_parameters())
    for name in ("temporal_fc.weight", "temporal_fc.bias"):
        value = parameters[name].detach()
        if bool((value != 0).any()):
            raise CheckFailure(
                f"`{name}` must start at exactly 0",
                case=f"{context} at initialisation",
                got=f"largest |entry| {value.abs().max().item():.3g}",
                cause="zero it after creating the layer (nn.init.zeros_ on temporal_fc.weight and temporal_fc.bias):"
                " with temporal_fc = 0 the block starts as a plain image ViT block, as TimeSformer initialises it",
            )


def _divided_randomise(module: nn.Module, twin: nn.Module, seed: int) -> None:
    """Move every parameter of ``twin`` (LayerNorms and temporal_fc included) by N(0, 0.2²); copy to ``module``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(twin.named_parameters()):
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    module.load_state_dict(twin.state_dict())


def check_DividedSpaceTimeBlock(learner, reference) -> None:
    configs = (
        (16, 4, [((2, 4, 6, 16), "B=2, T=4 frames, N=6 patches, D=16"), ((1, 1, 5, 16), "a single frame, T=1")]),
        (8, 2, [((2, 3, 1, 8), "one patch per frame, N=1"), ((1, 5, 3, 8), "T=5 frames of N=3 patches")]),
    )
    for seed, (dim, heads, shapes) in enumerate(configs):
        module, twin = build_twin(learner, reference, dim, heads)
        _check_temporal_fc_starts_at_zero(module, f"DividedSpaceTimeBlock({dim}, {heads})")
        _divided_randomise(module, twin, seed)
        label = f"dim={dim}, {heads} heads, every parameter random (temporal_fc too); "
        cases = [
            Case(label + text, (_video_module_input(shape, seed + 10 * i),)) for i, (shape, text) in enumerate(shapes)
        ]
        check_cases(module, twin, cases, mistakes=_divided_mistakes(twin))
        check_gradients(module, twin, cases[0], wrt=["x"], parameters=True, atol=1e-4)


#: (number of layers L, fusion_layer, num_bottlenecks K)
BOTTLENECK_CONFIGS = ((3, 0, 4), (3, 1, 2), (3, 2, 4), (3, 3, 2), (2, 1, 1))

BOTTLENECK_OUTPUTS = ("video", "audio", "z")


class _BottleneckLayers(nn.ModuleList):
    """The layers handed to the learner's module; a short repr for feedback."""

    def __repr__(self) -> str:
        layer = self[0]
        dim, heads = layer.self_attn.embed_dim, layer.self_attn.num_heads
        return (
            f"ModuleList of {len(self)} nn.TransformerEncoderLayer({dim}, {heads}, {4 * dim}, dropout=0.0,"
            " batch_first=True, norm_first=True)"
        )


def _bottleneck_layers(count: int, dim: int, heads: int, seed: int) -> _BottleneckLayers:
    torch.manual_seed(seed)
    return _BottleneckLayers(
        nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        for _ in range(count)
    )


def _bottleneck_builder(cls):
    """``cls`` called with deep copies of the layers, so learner and reference never share a parameter."""

    def build(video_layers, audio_layers, *args):
        return cls(copy.deepcopy(video_layers), copy.deepcopy(audio_layers), *args)

    build.__name__ = "BottleneckFusionEncoder"
    return build


def _bottleneck_fusion(
    twin: nn.Module,
    video: torch.Tensor,
    audio: torch.Tensor,
    *,
    shift: int | None = 0,
    update: str = "mean",
    bottleneck_first: bool = False,
    expand: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MBT's encoder with switches for the usual mistakes.

    The first fused layer is fusion_layer + ``shift`` (``shift=None``: every layer). ``update``: "mean", "sum",
    "video" or "audio" (z from one modality), "sequential" (the audio layer reads the z the video layer has just
    produced, then the mean) or "sequential-audio" (... and z is the audio layer's). ``bottleneck_first``: z is
    concatenated before the tokens, but the outputs are sliced as if it came last.
    """
    first_fused = 0 if shift is None else twin.fusion_layer + shift
    z = twin.bottleneck.expand(len(video), -1, -1) if expand else twin.bottleneck

    def fuse(layer: nn.Module, tokens: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = tokens.shape[1]
        out = layer(torch.cat([z, tokens] if bottleneck_first else [tokens, z], dim=1))
        return out[:, :length], out[:, length:]

    for i, (video_layer, audio_layer) in enumerate(zip(twin.video_layers, twin.audio_layers, strict=True)):
        if i < first_fused:
            video, audio = video_layer(video), audio_layer(audio)
            continue
        video, z_video = fuse(video_layer, video, z)
        audio, z_audio = fuse(audio_layer, audio, z_video if update.startswith("sequential") else z)
        z = {
            "mean": (z_video + z_audio) / 2,
            "sum": z_video + z_audio,
            "video": z_video,
            "audio": z_audio,
            "sequential": (z_video + z_audio) / 2,
            "sequential-audio": z_audio,
        }[update]
    return video, audio, z


def _bottleneck_mistakes(twin: nn.Module) -> list[Mistake]:
    fusion = functools.partial(_bottleneck_fusion, twin)
    parallel = (
        "the audio layer reads the z the video layer has just produced: both modalities must read the same z at"
        " layer i (parallel updates), then z becomes the mean of their two outputs"
    )
    off_by_one = (
        "an off-by-one at fusion_layer: layers with index < fusion_layer see only their own modality, and layer"
        " fusion_layer is the first to exchange through z"
    )
    return [
        Mistake(parallel, functools.partial(fusion, update="sequential")),
        Mistake(parallel, functools.partial(fusion, update="sequential-audio")),
        Mistake(
            "z is taken from the video layer's output only; it is the mean of both modalities' bottleneck outputs",
            functools.partial(fusion, update="video"),
        ),
        Mistake(
            "z is taken from the audio layer's output only; it is the mean of both modalities' bottleneck outputs",
            functools.partial(fusion, update="audio"),
        ),
        Mistake(
            "the two bottleneck outputs are summed; z is their mean, (ov[:, Lv:] + oa[:, La:]) / 2",
            functools.partial(fusion, update="sum"),
        ),
        Mistake(
            "the bottleneck is concatenated in every layer, also before fusion_layer: layers with index"
            " < fusion_layer see only their own modality",
            functools.partial(fusion, shift=None),
        ),
        Mistake(off_by_one, functools.partial(fusion, shift=1)),
        Mistake(off_by_one, functools.partial(fusion, shift=-1)),
        Mistake(
            "z is concatenated before the tokens but the outputs are sliced as if it came after them",
            functools.partial(fusion, bottleneck_first=True),
        ),
        Mistake(
            "z is returned as the (1, K, dim) parameter itself: expand it to the batch, (B, K, dim)",
            functools.partial(fusion, expand=False),
        ),
    ]


def _check_bottleneck_init(learner, reference) -> None:
    """A fresh module's bottleneck is (1, K, dim), drawn from N(0, 0.02²)."""
    layers = _bottleneck_layers(1, 64, 4, seed=0)
    module, _ = build_twin(_bottleneck_builder(learner), _bottleneck_builder(reference), layers, layers, 64, 0, 4)
    std = dict(module.named_parameters())["bottleneck"].detach().std().item()
    if not 0.01 < std < 0.035:  # 256 draws give a sample std of 0.02 ± 0.001: the bounds are far outside
        raise CheckFailure(
            f"`bottleneck` starts with standard deviation {std:.3g}, not about 0.02",
            case="BottleneckFusionEncoder(1 layer per modality, dim=64, fusion_layer=0, num_bottlenecks=4) at"
            " initialisation",
            expected="bottleneck drawn from N(0, 0.02²), as MBT's normal(stddev=0.02)",
            cause="identical (e.g. zero) bottleneck tokens get identical updates, so they never learn to differ:"
            " draw them with torch.randn(1, num_bottlenecks, dim) * 0.02"
            if std == 0
            else "scale the draw: torch.randn(1, num_bottlenecks, dim) * 0.02",
        )


def check_BottleneckFusionEncoder(learner, reference) -> None:
    _check_bottleneck_init(learner, reference)
    dim, heads, batch, video_length, audio_length = 16, 2, 2, 5, 3
    for seed, (count, fusion_layer, bottlenecks) in enumerate(BOTTLENECK_CONFIGS):
        layers = _bottleneck_layers(count, dim, heads, seed)
        module, twin = build_twin(
            _bottleneck_builder(learner),
            _bottleneck_builder(reference),
            layers,
            _bottleneck_layers(count, dim, heads, seed + 100),
            dim,
            fusion_layer,
            bottlenecks,
        )
        with torch.no_grad():  # a bottleneck of N(0, 1), so that it matters
            dict(module.named_parameters())["bottleneck"].copy_(_video_module_input((1, bottlenecks, dim), seed))
        twin.load_state_dict(module.state_dict())
        case = Case(
            f"L={count} layers per modality, fusion_layer={fusion_layer}, K={bottlenecks} bottleneck tokens set to"
            f" N(0, 1), dim={dim}; video (B={batch}, Lv={video_length}), audio (B={batch}, La={audio_length})",
            (
                _video_module_input((batch, video_length, dim), seed + 1),
                _video_module_input((batch, audio_length, dim), seed + 2),
            ),
        )
        check_cases(module, twin, [case], mistakes=_bottleneck_mistakes(twin), outputs=BOTTLENECK_OUTPUTS)
        check_gradients(module, twin, case, wrt=["video", "audio"], outputs=BOTTLENECK_OUTPUTS, parameters=True)

"""Checks for chapter 05 · sentiment."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..grading.harness import Case, Mistake, check_cases, check_gradients, describe, expect_close, invoke
from ..grading.inputs import PADDING_LEAK, poison_padding, random_rows
from ..grading.verdict import CheckFailure
from .reference import mel_filterbank

# ----------------------------------------------------------------------------- mel_filterbank


def _triangles(edges_hz: torch.Tensor, bins_hz: torch.Tensor, *, normalise: bool = True) -> torch.Tensor:
    """Triangles linear in Hz between consecutive edges (M+2,), over bin frequencies (F,)."""
    left, centre, right = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - left) / (centre - left)
    falling = (right - bins_hz) / (right - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if normalise:
        filters = filters * 2.0 / (right - left)
    return filters


def _filters(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None, *, scale="slaney", normalise=True):
    """Triangular filters on the Slaney or the HTK mel scale, with or without area normalisation."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if scale == "htk":
        to_mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)  # noqa: E731
        to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    else:  # Slaney: linear to 1 kHz, then 27 mels per factor 6.4
        to_mel = lambda hz: 3 * hz / 200 if hz < 1000 else 15 + 27 * math.log(hz / 1000) / math.log(6.4)  # noqa: E731
        to_hz = lambda mel: torch.where(  # noqa: E731
            mel < 15, 200 * mel / 3, 1000 * torch.exp((mel - 15) * math.log(6.4) / 27)
        )
    edges = to_hz(torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2, dtype=torch.float64))
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    return _triangles(edges, bins, normalise=normalise).float()


def check_mel_filterbank(learner, reference) -> None:
    cases = [
        Case("Whisper's front end: 16 kHz, n_fft 400, 80 mels", (16000, 400, 80)),
        Case("22.05 kHz, n_fft 2048, 128 mels", (22050, 2048, 128)),
        Case("a band from 80 Hz to 7.6 kHz", (16000, 512, 40), {"f_min": 80.0, "f_max": 7600.0}),
        Case("8 kHz, n_fft 256, 23 mels", (8000, 256, 23)),
    ]
    mistakes = [
        Mistake(
            "the HTK mel scale (2595·log10(1 + f/700)); the contract is Slaney's",
            lambda *a, **k: _filters(*a, **k, scale="htk"),
        ),
        Mistake(
            "no Slaney area normalisation: scale filter m by 2 / (f[m+2] − f[m])",
            lambda *a, **k: _filters(*a, **k, normalise=False),
        ),
        Mistake(
            "f_max defaults to the sample rate; it should be the Nyquist frequency sample_rate / 2",
            lambda sr, n_fft, n_mels, f_min=0.0, f_max=None: _filters(sr, n_fft, n_mels, f_min, f_max or sr),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------- log_mel_spectrogram


def _tone(frequency: float, seconds: float, sample_rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return 0.5 * torch.sin(2 * math.pi * frequency * t)


def _spectrogram(
    waveform,
    sample_rate=16000,
    n_fft=400,
    hop_length=160,
    n_mels=80,
    *,
    window="periodic",
    pad_mode="constant",
    power=2.0,
    filters=None,
    log=torch.log,
):
    if window == "none":
        window_tensor = torch.ones(n_fft, dtype=waveform.dtype)
    else:
        window_tensor = torch.hann_window(n_fft, periodic=window == "periodic", dtype=waveform.dtype)
    spectrum = (
        torch.stft(
            waveform,
            n_fft,
            hop_length=hop_length,
            window=window_tensor,
            center=True,
            pad_mode=pad_mode,
            return_complex=True,
        ).abs()
        ** power
    )
    bank = (filters or mel_filterbank)(sample_rate, n_fft, n_mels).to(spectrum)
    return log(torch.clamp(bank @ spectrum, min=1e-10))


def check_log_mel_spectrogram(learner, reference) -> None:
    noise = random_rows(2, 8037, seed=0) * 0.1
    noise_1s = random_rows(1, 16000, seed=1)[0]
    cases = [
        Case(
            "one second of a 1 kHz tone plus noise, shape (T,)",
            (_tone(1000.0, 1.0) + 0.5 * noise_1s,),
        ),
        Case("a batch of two noise clips, shape (B, T) with T = 8037", (noise,)),
        Case(
            "8 kHz audio, n_fft 256, hop 80, 40 mels",
            (noise[0, :4000],),
            {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 40},
        ),
        Case("silence: every mel energy is clamped at 1e-10", (torch.zeros(3200),)),
    ]
    mistakes = [
        Mistake("the magnitude |STFT| instead of the power |STFT|²", lambda *a, **k: _spectrogram(*a, **k, power=1.0)),
        Mistake("log10 instead of the natural log", lambda *a, **k: _spectrogram(*a, **k, log=torch.log10)),
        Mistake(
            "decibels (10·log10) instead of the natural log",
            lambda *a, **k: _spectrogram(*a, **k, log=lambda x: 10 * torch.log10(x)),
        ),
        Mistake(
            "reflect padding (torch.stft's default pad_mode); the contract pads with zeros (pad_mode='constant')",
            lambda *a, **k: _spectrogram(*a, **k, pad_mode="reflect"),
        ),
        Mistake(
            "a symmetric Hann window; the contract uses the periodic one",
            lambda *a, **k: _spectrogram(*a, **k, window="symmetric"),
        ),
        Mistake("no window (rectangular frames)", lambda *a, **k: _spectrogram(*a, **k, window="none")),
        Mistake(
            "HTK mel filters instead of Slaney's",
            lambda *a, **k: _spectrogram(*a, **k, filters=lambda *b: _filters(*b, scale="htk")),
        ),
    ]
    check_cases(
        learner,
        reference,
        cases,
        mistakes=mistakes,
        atol=1e-3,
        rtol=1e-4,
        unstable_hint="log(0) = −inf on silent frames: clamp the mel energies at 1e-10 before the log",
    )


# ----------------------------------------------------------------------------- masked_mean


def _padded(batch: int, length: int, dim: int, lengths: list[int], seed: int, dtype=torch.float32) -> torch.Tensor:
    """Random rows whose padding (steps ≥ length) holds large garbage values."""
    x = random_rows(batch * length, dim, seed, dtype=dtype).reshape(batch, length, dim)
    for row, n in enumerate(lengths):
        x[row, n:] = 1e4 * (1 + torch.arange(length - n, dtype=dtype))[:, None]
    return x


def check_masked_mean(learner, reference) -> None:
    cases = [
        Case("lengths [2, 5, 1], garbage in the padding", (_padded(3, 5, 4, [2, 5, 1], 0), torch.tensor([2, 5, 1]))),
        Case("no padding at all", (_padded(2, 3, 6, [3, 3], 1), torch.tensor([3, 3]))),
        Case("a batch of one", (_padded(1, 7, 2, [4], 2), torch.tensor([4]))),
        Case(
            "float64, lengths [6, 3, 6, 1]",
            (_padded(4, 6, 3, [6, 3, 6, 1], 3, dtype=torch.float64), torch.tensor([6, 3, 6, 1])),
        ),
    ]
    steps = lambda x: torch.arange(x.shape[1])  # noqa: E731
    mistakes = [
        Mistake("the mean runs over every step, padding included", lambda x, n: x.mean(dim=1)),
        Mistake(
            "the real steps are summed but divided by the padded length L",
            lambda x, n: (x * (steps(x)[None, :] < n[:, None])[..., None]).sum(1) / x.shape[1],
        ),
        Mistake(
            "off by one: steps 0…lengths[b] (≤) are averaged; the real steps are 0…lengths[b]−1",
            lambda x, n: (x * (steps(x)[None, :] <= n[:, None])[..., None]).sum(1) / n[:, None],
        ),
        Mistake(
            "the real steps are summed, not averaged",
            lambda x, n: (x * (steps(x)[None, :] < n[:, None])[..., None]).sum(1),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes, atol=1e-4, rtol=1e-5)
    check_gradients(learner, reference, cases[0], wrt=["x"])
    lengths = torch.tensor([2, 5, 1])
    poisoned = Case(
        "lengths [2, 5, 1], NaN, +inf and −inf in the padding",
        (poison_padding(cases[0].args[0], _padding_mask(5, lengths)[..., None]), lengths),
    )
    check_cases(learner, reference, [poisoned], mistakes=mistakes, unstable_hint=PADDING_LEAK)
    check_gradients(learner, reference, poisoned, wrt=["x"])


def _padding_mask(length: int, lengths: torch.Tensor) -> torch.Tensor:
    """(B, length) bool, True at the padded steps (index ≥ lengths[b])."""
    return torch.arange(length)[None, :] >= lengths[:, None]


# ----------------------------------------------------------------------------- SequenceEncoder


def check_SequenceEncoder(learner, reference) -> None:
    context = "SequenceEncoder(input_dim=3, hidden_dim=5)"
    torch.manual_seed(0)
    encoder = invoke(learner, 3, 5, context=context)
    gru = getattr(encoder, "gru", None)
    if not isinstance(encoder, nn.Module) or not isinstance(gru, nn.GRU):
        raise CheckFailure(
            "the module must hold `self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)`",
            case=context,
            got=f"{type(encoder).__name__} with gru={type(gru).__name__}",
        )
    if (gru.input_size, gru.hidden_size, gru.batch_first, gru.num_layers, gru.bidirectional) != (3, 5, True, 1, False):
        raise CheckFailure(
            "wrong GRU configuration",
            case=context,
            expected="input_size=3, hidden_size=5, batch_first=True, one layer, one direction",
            got=f"input_size={gru.input_size}, hidden_size={gru.hidden_size}, batch_first={gru.batch_first},"
            f" num_layers={gru.num_layers}, bidirectional={gru.bidirectional}",
        )
    twin = reference(3, 5)
    twin.gru.load_state_dict(gru.state_dict())  # same weights: the outputs must match exactly

    lengths = torch.tensor([6, 2, 4, 1])
    x = _padded(4, 6, 3, lengths.tolist(), seed=5) * 1e-4  # garbage padding, small enough to matter in a GRU
    longer = torch.cat([x, torch.full((4, 3, 3), 7.0)], dim=1)  # three more padded steps
    cases = [
        Case("lengths [6, 2, 4, 1] (unsorted), garbage after each length", (x, lengths)),
        Case("the same batch with three more padded steps", (longer, lengths)),
        Case("a batch of one, no padding", (x[:1], lengths[:1])),
    ]
    mistakes = [
        Mistake(
            "the GRU ran through the padding: pack the batch (pack_padded_sequence) or take the output at"
            " step lengths[b] − 1",
            lambda x, n: twin.gru(x)[1][0],
        ),
        Mistake(
            "the outputs of the real steps are averaged; the contract is the hidden state after the last real step",
            lambda x, n: (
                (twin.gru(x)[0] * (torch.arange(x.shape[1])[None, :] < n[:, None])[..., None]).sum(1) / n[:, None]
            ),
        ),
        Mistake(
            "the rows come back sorted by length: restore the original batch order",
            lambda x, n: twin(x, n)[n.argsort(descending=True)],
        ),
    ]
    check_cases(encoder, twin, cases, mistakes=mistakes, atol=1e-5, rtol=1e-4)
    check_gradients(encoder, twin, cases[0], wrt=["x"], atol=1e-5)
    poisoned = Case(
        "lengths [6, 2, 4, 1], NaN, +inf and −inf in the padding",
        (poison_padding(x, _padding_mask(6, lengths)[..., None]), lengths),
    )
    check_cases(encoder, twin, [poisoned], atol=1e-5, rtol=1e-4, unstable_hint=PADDING_LEAK)


# ----------------------------------------------------------------------------- uncertainty_weighted_loss


def check_uncertainty_weighted_loss(learner, reference) -> None:
    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(3, generator=generator) * 2 + 0.1
    cases = [
        Case("three tasks", (losses, torch.tensor([0.3, -0.7, 1.2]))),
        Case("log-variances at 0: the plain sum of the losses", (losses, torch.zeros(3))),
        Case("one task", (torch.tensor([0.8]), torch.tensor([-1.5]))),
        Case("float64, five tasks", (losses.double().repeat(2)[:5], torch.linspace(-1, 1, 5, dtype=torch.float64))),
    ]
    mistakes = [
        Mistake(
            "exp(+s) multiplies the loss: the weight is the precision exp(−s) = 1/σ²",
            lambda l, s: (s.exp() * l + s).sum(),
        ),
        Mistake(
            "the + s regulariser is missing, so σ would grow without bound", lambda l, s: (torch.exp(-s) * l).sum()
        ),
        Mistake(
            "the paper's ½ factors are kept: the contract is the common simplification Σ exp(−s)·L + s",
            lambda l, s: (0.5 * torch.exp(-s) * l + 0.5 * s).sum(),
        ),
        Mistake("a mean over tasks instead of the sum", lambda l, s: (torch.exp(-s) * l + s).mean()),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes)
    check_gradients(learner, reference, cases[0], wrt=["losses", "log_vars"])


# ----------------------------------------------------------------------------- msa_metrics

METRIC_KEYS = ("has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc7", "mae", "corr")


def _acc_f1(p: torch.Tensor, t: torch.Tensor, *, weighted: bool = True) -> tuple[float, float]:
    scores, weights = [], []
    for c in (True, False):
        tp = ((p == c) & (t == c)).sum().item()
        precision = tp / max((p == c).sum().item(), 1)
        recall = tp / max((t == c).sum().item(), 1)
        scores.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
        weights.append((t == c).sum().item() if weighted else 1)
    return (p == t).double().mean().item(), sum(s * w for s, w in zip(scores, weights, strict=True)) / sum(weights)


def _metric_variant(
    pred,
    target,
    *,
    swap=False,
    weighted=True,
    clip=True,
    half_up=False,
    strict_has0=False,
    keep_zeros=False,
    squared=False,
):
    pred, target = pred.double(), target.double()
    has0 = _acc_f1(
        pred > 0 if strict_has0 else pred >= 0, target > 0 if strict_has0 else target >= 0, weighted=weighted
    )
    kept = torch.ones_like(target, dtype=torch.bool) if keep_zeros else target != 0
    non0 = _acc_f1(pred[kept] > 0, target[kept] > 0, weighted=weighted)
    if swap:
        has0, non0 = non0, has0
    p7, t7 = (pred.clamp(-3, 3), target.clamp(-3, 3)) if clip else (pred, target)
    rounding = (lambda v: torch.floor(v + 0.5)) if half_up else torch.round
    error = (pred - target).pow(2) if squared else (pred - target).abs()
    return {
        "has0_acc2": has0[0],
        "has0_f1": has0[1],
        "non0_acc2": non0[0],
        "non0_f1": non0[1],
        "acc7": (rounding(p7) == rounding(t7)).double().mean().item(),
        "mae": error.mean().item(),
        "corr": torch.corrcoef(torch.stack([pred, target]))[0, 1].item(),
    }


def check_msa_metrics(learner, reference) -> None:
    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(200, generator=generator) * 7 - 3.5).round(decimals=1)
    target[::9] = 0.0
    pred = (target + torch.randn(200, generator=generator)).clamp(-4, 4)
    cases = [
        Case(
            "10 samples with zero targets, a zero prediction and .5 ties",
            (
                torch.tensor([0.5, -1.2, 2.5, 0.0, -0.5, 1.5, -2.5, 3.7, -0.1, 0.2]),
                torch.tensor([1.0, 0.0, 2.0, -0.3, -1.0, 0.0, -2.6, 3.0, 0.4, 0.0]),
            ),
        ),
        Case("200 noisy predictions, every 9th target exactly 0, values beyond ±3", (pred, target)),
        Case("float64, predictions all positive", (pred.double().abs() + 0.1, target.double())),
    ]
    mistakes = [
        ("samples with target 0 are kept in non-0 Acc-2; drop them", {"keep_zeros": True}),
        ("has-0 and non-0 are swapped", {"swap": True}),
        ("an unweighted (macro) F1; MMSA weights each class's F1 by its frequency in the target", {"weighted": False}),
        ("Acc-7 without clipping to [−3, 3] first", {"clip": False}),
        ("rounding half up (floor(x + 0.5)); torch.round / np.round round half to even", {"half_up": True}),
        ("has-0 compares > 0; the has-0 convention is ≥ 0 (zero counts as positive)", {"strict_has0": True}),
        ("the mean squared error instead of the mean absolute error", {"squared": True}),
    ]
    for case in cases:
        context = "msa_metrics: " + case.label
        got = invoke(learner, *[a.clone() for a in case.args], context=context)
        if not isinstance(got, dict) or set(got) != set(METRIC_KEYS):
            raise CheckFailure(
                "the result must be a dict with exactly the keys " + ", ".join(METRIC_KEYS),
                case=context,
                got=describe(got) if not isinstance(got, dict) else f"keys {sorted(got)}",
            )
        expected = reference(*case.args)
        for key in METRIC_KEYS:
            expect_close(
                got[key],
                expected[key],
                f"{context}; metric `{key}`",
                args=case.args,
                mistakes=[
                    Mistake(cause, lambda p, t, k=key, s=switches: _metric_variant(p, t, **s)[k])
                    for cause, switches in mistakes
                ],
                atol=1e-6,
                rtol=1e-6,
            )

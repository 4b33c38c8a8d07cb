"""Mutants and other-style correct solutions for chapter 05."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- mel_filterbank


def _slaney_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz < 1000, 3 * hz / 200, 15 + 27 * np.log(np.maximum(hz, 1e-9) / 1000) / np.log(6.4))


def _slaney_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel < 15, 200 * mel / 3, 1000 * np.exp((mel - 15) * np.log(6.4) / 27))


def mel_numpy(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None):
    f_max = sample_rate / 2 if f_max is None else f_max
    edges = _slaney_hz(np.linspace(_slaney_mel(f_min), _slaney_mel(f_max), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    weights = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        weights[m] = np.maximum(0, np.minimum(up, down)) * 2 / (hi - lo)
    return torch.from_numpy(weights).float()


def mel_loop(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None):
    f_max = f_max or sample_rate / 2
    lo_mel, hi_mel = float(_slaney_mel(f_min)), float(_slaney_mel(f_max))
    edges = [float(_slaney_hz(lo_mel + i * (hi_mel - lo_mel) / (n_mels + 1))) for i in range(n_mels + 2)]
    out = torch.zeros(n_mels, n_fft // 2 + 1)
    for m in range(n_mels):
        for k in range(n_fft // 2 + 1):
            f = k * sample_rate / n_fft
            if edges[m] < f < edges[m + 2]:
                side = (
                    (f - edges[m]) / (edges[m + 1] - edges[m])
                    if f <= edges[m + 1]
                    else (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])
                )
                out[m, k] = side * 2 / (edges[m + 2] - edges[m])
    return out


def mel_htk(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None):
    f_max = sample_rate / 2 if f_max is None else f_max
    mels = np.linspace(2595 * np.log10(1 + f_min / 700), 2595 * np.log10(1 + f_max / 700), n_mels + 2)
    edges = 700 * (10 ** (mels / 2595) - 1)
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None]) / (edges[2:, None] - edges[1:-1, None])
    weights = np.maximum(0, np.minimum(lower, upper)) * (2 / (edges[2:] - edges[:-2]))[:, None]
    return torch.tensor(weights, dtype=torch.float32)


def mel_peak_one(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None):
    f_max = sample_rate / 2 if f_max is None else f_max
    edges = _slaney_hz(np.linspace(_slaney_mel(f_min), _slaney_mel(f_max), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None]) / (edges[2:, None] - edges[1:-1, None])
    return torch.tensor(np.maximum(0, np.minimum(lower, upper)), dtype=torch.float32)


def mel_full_rate(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None):
    return mel_numpy(sample_rate, n_fft, n_mels, f_min, f_max if f_max is not None else sample_rate)


# ----------------------------------------------------------------------------- log_mel_spectrogram


def _stft_power(waveform, n_fft, hop_length, **kwargs):
    kwargs.setdefault("window", torch.hann_window(n_fft, dtype=waveform.dtype))
    return torch.stft(waveform, n_fft, hop_length=hop_length, center=True, return_complex=True, **kwargs).abs() ** 2


def logmel_magnitude(waveform, sample_rate=16000, n_fft=400, hop_length=160, n_mels=80):
    spec = _stft_power(waveform, n_fft, hop_length, pad_mode="constant").sqrt()
    return torch.log(torch.clamp(mel_numpy(sample_rate, n_fft, n_mels).to(spec) @ spec, min=1e-10))


def logmel_log10(waveform, sample_rate=16000, n_fft=400, hop_length=160, n_mels=80):
    spec = _stft_power(waveform, n_fft, hop_length, pad_mode="constant")
    return torch.log10(torch.clamp(mel_numpy(sample_rate, n_fft, n_mels).to(spec) @ spec, min=1e-10))


def logmel_reflect(waveform, sample_rate=16000, n_fft=400, hop_length=160, n_mels=80):
    spec = _stft_power(waveform, n_fft, hop_length)  # torch.stft pads by reflection unless told otherwise
    return torch.log(torch.clamp(mel_numpy(sample_rate, n_fft, n_mels).to(spec) @ spec, min=1e-10))


def logmel_no_clamp(waveform, sample_rate=16000, n_fft=400, hop_length=160, n_mels=80):
    spec = _stft_power(waveform, n_fft, hop_length, pad_mode="constant")
    return torch.log(mel_numpy(sample_rate, n_fft, n_mels).to(spec) @ spec)


def logmel_manual_frames(waveform, sample_rate=16000, n_fft=400, hop_length=160, n_mels=80):
    padded = torch.nn.functional.pad(waveform, (n_fft // 2, n_fft // 2))
    frames = padded.unfold(-1, n_fft, hop_length)  # (..., frames, n_fft)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(n_fft, dtype=waveform.dtype) / n_fft)
    power = torch.fft.rfft(frames * window).abs().pow(2)  # (..., frames, F)
    mel = power @ mel_numpy(sample_rate, n_fft, n_mels).to(power).T  # (..., frames, n_mels)
    return mel.clamp_min(1e-10).log().transpose(-1, -2)


def logmel_batched_loop(waveform, sample_rate=16000, n_fft=400, hop_length=160, n_mels=80):
    if waveform.dim() == 2:
        return torch.stack([logmel_batched_loop(w, sample_rate, n_fft, hop_length, n_mels) for w in waveform])
    window = torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype)
    spec = torch.stft(waveform, n_fft, hop_length, window=window, pad_mode="constant", return_complex=True)
    energies = torch.einsum("mf,ft->mt", mel_loop(sample_rate, n_fft, n_mels).to(waveform.dtype), spec.abs() ** 2)
    return torch.log(torch.maximum(energies, torch.tensor(1e-10, dtype=waveform.dtype)))


# ----------------------------------------------------------------------------- masked_mean


def mean_all(x, lengths):
    return x.mean(dim=1)


def mean_divides_by_l(x, lengths):
    mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return (x * mask[..., None]).sum(dim=1) / x.shape[1]


def mean_off_by_one(x, lengths):
    mask = torch.arange(x.shape[1])[None, :] <= lengths[:, None]
    return (x * mask[..., None]).sum(dim=1) / lengths[:, None]


def mean_mask_multiply(x, lengths):
    """Right whenever the padding holds finite numbers; 0 · NaN = NaN otherwise."""
    mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).to(x.dtype)
    return (x * mask[..., None]).sum(dim=1) / lengths[:, None]


def mean_loop(x, lengths):
    return torch.stack([x[b, : int(n)].mean(dim=0) for b, n in enumerate(lengths)])


def mean_cumsum(x, lengths):
    totals = x.cumsum(dim=1).gather(1, (lengths - 1)[:, None, None].expand(-1, 1, x.shape[2]))[:, 0]
    return totals / lengths[:, None].to(x.dtype)


# ----------------------------------------------------------------------------- SequenceEncoder


class EncoderThroughPadding(nn.Module):
    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)

    def forward(self, x, lengths):
        _, h = self.gru(x)
        return h[0]


class EncoderSorted(nn.Module):
    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)

    def forward(self, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
        _, h = self.gru(packed)
        return h[0]


class EncoderMeanOutputs(nn.Module):
    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)

    def forward(self, x, lengths):
        out, _ = self.gru(x)
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        return (out * mask[..., None]).sum(1) / lengths[:, None]


class EncoderOneHotLast(nn.Module):
    """Picks each last real output by multiplying with a one-hot mask over the steps."""

    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)

    def forward(self, x, lengths):
        outputs, _ = self.gru(x)  # (B, L, H)
        last = F.one_hot(lengths - 1, x.shape[1]).to(outputs.dtype)  # (B, L)
        return (outputs * last[..., None]).sum(dim=1)


class EncoderLoop(nn.Module):
    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)

    def forward(self, x, lengths):
        return torch.cat([self.gru(x[b : b + 1, : int(n)])[1][0] for b, n in enumerate(lengths)])


class EncoderGatherLastOutput(nn.Module):
    """A unidirectional GRU's output at step t depends only on steps ≤ t, so padding after is harmless."""

    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)

    def forward(self, x, lengths):
        outputs, _ = self.gru(x)  # (B, L, H)
        return outputs[torch.arange(x.shape[0]), lengths - 1]


# ----------------------------------------------------------------------------- uncertainty_weighted_loss


def uw_exp_plus(losses, log_vars):
    return (torch.exp(log_vars) * losses + log_vars).sum()


def uw_no_regulariser(losses, log_vars):
    return (losses / log_vars.exp()).sum()


def uw_halves(losses, log_vars):
    return (0.5 * torch.exp(-log_vars) * losses + 0.5 * log_vars).sum()


def uw_mean(losses, log_vars):
    return (torch.exp(-log_vars) * losses + log_vars).mean()


def uw_loop(losses, log_vars):
    total = 0.0
    for loss, s in zip(losses, log_vars, strict=True):
        total = total + loss * torch.exp(-s) + s
    return total


def uw_dot(losses, log_vars):
    return torch.dot(torch.exp(-log_vars), losses) + log_vars.sum()


def uw_precision(losses, log_vars):
    precision = 1.0 / log_vars.exp()
    return (precision * losses).sum() + torch.log(1.0 / precision).sum()


# ----------------------------------------------------------------------------- msa_metrics


def _weighted_f1(truth, guess):
    total = 0.0
    for c in (True, False):
        tp = ((truth == c) & (guess == c)).sum()
        if tp == 0:
            continue
        precision, recall = tp / (guess == c).sum(), tp / (truth == c).sum()
        total += (truth == c).sum() * 2 * precision * recall / (precision + recall)
    return float(total / len(truth))


def _metrics(pred, target, *, swap=False, macro=False, clip=True, keep_zeros=False):
    p, t = pred.double().numpy(), target.double().numpy()

    def f1(truth, guess):
        if not macro:
            return _weighted_f1(truth, guess)
        scores = []
        for c in (True, False):
            tp = ((truth == c) & (guess == c)).sum()
            denom = (truth == c).sum() + (guess == c).sum()
            scores.append(2 * tp / denom if denom else 0.0)
        return float(np.mean(scores))

    has0 = (float(np.mean((p >= 0) == (t >= 0))), f1(t >= 0, p >= 0))
    keep = np.ones_like(t, dtype=bool) if keep_zeros else t != 0
    non0 = (float(np.mean((p[keep] > 0) == (t[keep] > 0))), f1(t[keep] > 0, p[keep] > 0))
    if swap:
        has0, non0 = non0, has0
    p7, t7 = (np.clip(p, -3, 3), np.clip(t, -3, 3)) if clip else (p, t)
    return {
        "has0_acc2": has0[0],
        "has0_f1": has0[1],
        "non0_acc2": non0[0],
        "non0_f1": non0[1],
        "acc7": float(np.mean(np.round(p7) == np.round(t7))),
        "mae": float(np.mean(np.abs(p - t))),
        "corr": float(np.corrcoef(p, t)[0, 1]),
    }


def metrics_numpy(pred, target):
    return _metrics(pred, target)


def metrics_swapped(pred, target):
    return _metrics(pred, target, swap=True)


def metrics_macro_f1(pred, target):
    return _metrics(pred, target, macro=True)


def metrics_unclipped(pred, target):
    return _metrics(pred, target, clip=False)


def metrics_keeps_zeros(pred, target):
    return _metrics(pred, target, keep_zeros=True)


def metrics_tensors(pred, target):
    return {k: torch.tensor(v) for k, v in _metrics(pred, target).items()}


def metrics_torch(pred, target):
    pred, target = pred.double(), target.double()

    def acc_f1(guess, truth):
        f1 = 0.0
        for c in (True, False):
            tp = ((guess == c) & (truth == c)).sum()
            fp = ((guess == c) & (truth != c)).sum()
            fn = ((guess != c) & (truth == c)).sum()
            if tp > 0:
                f1 += (truth == c).sum() * (2 * tp / (2 * tp + fp + fn))
        return (guess == truth).double().mean().item(), float(f1) / len(truth)

    a2, f = acc_f1(pred >= 0, target >= 0)
    nz = target != 0
    b2, g = acc_f1(pred[nz] > 0, target[nz] > 0)
    stacked = torch.stack([pred, target])
    return {
        "has0_acc2": a2,
        "has0_f1": f,
        "non0_acc2": b2,
        "non0_f1": g,
        "acc7": (torch.round(pred.clip(-3, 3)) == torch.round(target.clip(-3, 3))).double().mean().item(),
        "mae": torch.mean(torch.abs(pred - target)).item(),
        "corr": torch.corrcoef(stacked)[0, 1].item(),
    }


MUTANTS = {
    "sentiment.mel_filterbank": [
        (mel_htk, "HTK mel scale"),
        (mel_peak_one, "no Slaney area normalisation"),
        (mel_full_rate, "Nyquist"),
    ],
    "sentiment.log_mel_spectrogram": [
        (logmel_magnitude, "magnitude"),
        (logmel_log10, "log10 instead of the natural log"),
        (logmel_reflect, "reflect padding"),
        (logmel_no_clamp, "clamp the mel energies at 1e-10"),
    ],
    "sentiment.masked_mean": [
        (mean_all, "padding included"),
        (mean_divides_by_l, "divided by the padded length"),
        (mean_off_by_one, "off by one"),
        (mean_mask_multiply, "the padding leaks into the result"),
    ],
    "sentiment.SequenceEncoder": [
        (EncoderThroughPadding, "ran through the padding"),
        (EncoderSorted, "enforce_sorted=False"),
        (EncoderMeanOutputs, "outputs of the real steps are averaged"),
        (EncoderOneHotLast, "the padding leaks into the result"),
    ],
    "sentiment.uncertainty_weighted_loss": [
        (uw_exp_plus, "exp(+s)"),
        (uw_no_regulariser, "regulariser is missing"),
        (uw_halves, "½ factors"),
        (uw_mean, "mean over tasks"),
    ],
    "sentiment.msa_metrics": [
        (metrics_swapped, "swapped"),
        (metrics_macro_f1, "macro"),
        (metrics_unclipped, "without clipping"),
        (metrics_keeps_zeros, "drop them"),
        (metrics_tensors, "not a Python float"),
    ],
}

CORRECT = {
    "sentiment.mel_filterbank": [mel_numpy, mel_loop],
    "sentiment.log_mel_spectrogram": [logmel_manual_frames, logmel_batched_loop],
    "sentiment.masked_mean": [mean_loop, mean_cumsum],
    "sentiment.SequenceEncoder": [EncoderLoop, EncoderGatherLastOutput],
    "sentiment.uncertainty_weighted_loss": [uw_loop, uw_dot, uw_precision],
    "sentiment.msa_metrics": [metrics_numpy, metrics_torch],
}

"""Chapter 05 · sentiment: an audio front end, length-aware encoders, task weighting, MSA metrics.

Every public function or class here is the reference for one graded exercise. Each is
self-contained (it needs only ``math``, ``torch``, ``torch.nn`` and ``torch.nn.functional``),
because its source is copied verbatim into the worked-solution notebook.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular mel filters, (n_mels, n_fft // 2 + 1) float32: librosa's default convention.

    Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per
    factor 6.4). The n_mels + 2 band edges are equally spaced in mels from f_min to f_max
    (sample_rate / 2 when None). Filter m rises from edge m to edge m+1 and falls to edge m+2, and
    is scaled by 2 / (f[m+2] − f[m]) so that every filter has the same area (Slaney normalisation).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    f_break, mel_break = 1000.0, 15.0  # where the scale turns logarithmic, in Hz and in mels
    log_step = math.log(6.4) / 27.0

    def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
        linear = 3.0 * hz / 200.0
        logarithmic = mel_break + torch.log(hz.clamp(min=f_break) / f_break) / log_step
        return torch.where(hz >= f_break, logarithmic, linear)

    def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
        linear = 200.0 * mel / 3.0
        logarithmic = f_break * torch.exp(log_step * (mel - mel_break))
        return torch.where(mel >= mel_break, logarithmic, linear)

    limits = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(limits[0].item(), limits[1].item(), n_mels + 2, dtype=torch.float64))  # (M+2,)
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,) FFT bin frequencies
    widths = edges.diff()  # (M+1,)
    offsets = edges[:, None] - bins[None, :]  # (M+2, F)
    rising = -offsets[:-2] / widths[:-1, None]  # (M, F)
    falling = offsets[2:] / widths[1:, None]  # (M, F)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (M, F)
    filters = filters * (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal-area normalisation
    return filters.float()


def log_mel_spectrogram(
    waveform: torch.Tensor, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160, n_mels: int = 80
) -> torch.Tensor:
    """Natural-log mel power spectrogram of a (T,) or (B, T) waveform: (..., n_mels, 1 + T // hop_length).

    Periodic Hann window of length n_fft; frames centred on multiples of hop_length, with the
    signal zero-padded by n_fft // 2 on both sides; power |STFT|²; the filters of
    ``mel_filterbank(sample_rate, n_fft, n_mels)``; then log(max(mel energy, 1e-10)).
    """
    window = torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype, device=waveform.device)
    spectrum = torch.stft(
        waveform, n_fft, hop_length=hop_length, window=window, center=True, pad_mode="constant", return_complex=True
    )  # (..., F, frames)
    power = spectrum.abs() ** 2
    filters = mel_filterbank(sample_rate, n_fft, n_mels).to(power)  # (n_mels, F)
    return torch.log(torch.clamp(filters @ power, min=1e-10))  # (..., n_mels, frames)


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, L, D) over each row's first lengths[b] steps → (B, D).

    lengths: (B,) integers in [1, L]. The padded steps (index ≥ lengths[b]) never affect the
    result or its gradient, whatever they hold (NaN and ±inf included).
    """
    steps = torch.arange(x.shape[1], device=x.device)  # (L,)
    valid = steps[None, :] < lengths[:, None]  # (B, L)
    total = x.masked_fill(~valid[..., None], 0.0).sum(dim=1)  # (B, D)
    return total / lengths[:, None].to(x.dtype)


class SequenceEncoder(nn.Module):
    """A GRU that reads each sequence up to its length: (B, L, input_dim), (B,) → (B, hidden_dim).

    Holds ``self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)``. forward returns the
    GRU's hidden state after each sequence's last real step, so the result does not depend on
    how much padding follows, or on what it holds (NaN and ±inf included). Lengths may come in any order.
    """

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden_dim, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last_hidden = self.gru(packed)  # (1, B, H), in the original batch order
        return last_hidden[0]


def uncertainty_weighted_loss(losses: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """Homoscedastic-uncertainty task weighting (Kendall, Gal & Cipolla 2018, arXiv:1705.07115).

    losses, log_vars: (K,) task losses L_i and learnable s_i = log σ_i². Returns the 0-dim
    Σ_i exp(−s_i)·L_i + s_i: each task is down-weighted by its learned variance, and the + s_i
    term stops every σ from growing without bound. Gradients flow to both arguments.
    """
    return (torch.exp(-log_vars) * losses + log_vars).sum()


def msa_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Multimodal sentiment metrics with the MMSA toolkit's conventions, as Python floats.

    pred, target: (N,) sentiment scores on the [−3, 3] scale.
    * has0_acc2 / has0_f1: classes target ≥ 0 vs < 0 (and the same for pred).
    * non0_acc2 / non0_f1: samples whose target is exactly 0 dropped, then > 0 vs ≤ 0.
    * F1 is weighted by class frequency in the target (scikit-learn's average="weighted").
    * acc7: accuracy of round(clip(x, −3, 3)), rounding half to even as torch/NumPy do.
    * mae: mean |pred − target|; corr: Pearson correlation.
    """

    def accuracy_and_weighted_f1(p: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
        f1 = 0.0
        for positive in (True, False):
            true_c, pred_c = t == positive, p == positive
            tp = (true_c & pred_c).sum().item()
            precision = tp / pred_c.sum().item() if pred_c.any() else 0.0
            recall = tp / true_c.sum().item() if true_c.any() else 0.0
            if precision + recall > 0:
                f1 += true_c.sum().item() * 2 * precision * recall / (precision + recall)
        return (p == t).double().mean().item(), f1 / len(t)

    pred, target = pred.detach().double().flatten(), target.detach().double().flatten()
    has0_acc2, has0_f1 = accuracy_and_weighted_f1(pred >= 0, target >= 0)
    nonzero = target != 0
    non0_acc2, non0_f1 = accuracy_and_weighted_f1(pred[nonzero] > 0, target[nonzero] > 0)
    acc7 = (pred.clamp(-3, 3).round() == target.clamp(-3, 3).round()).double().mean().item()
    centred_pred, centred_target = pred - pred.mean(), target - target.mean()
    corr = (centred_pred * centred_target).sum() / (centred_pred.norm() * centred_target.norm())
    return {
        "has0_acc2": has0_acc2,
        "has0_f1": has0_f1,
        "non0_acc2": non0_acc2,
        "non0_f1": non0_f1,
        "acc7": acc7,
        "mae": (pred - target).abs().mean().item(),
        "corr": corr.item(),
    }

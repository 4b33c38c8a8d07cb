"""Chapter 08 · video: TSN frame sampling, TSM's temporal shift, ViViT's tubelet embedding and its inflation from an
image model, TimeSformer's divided space-time attention, MBT's bottleneck fusion, and YouTube-8M's GAP@k.

Every public function or class here is the reference for one graded exercise. Each is self-contained (it needs
only ``math``, ``torch``, ``torch.nn`` and ``torch.nn.functional``), because its source is copied verbatim into the
worked-solution notebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tsn_sample_indices(
    num_frames: int, num_segments: int, mode: str = "test", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Segment-based frame sampling of TSN (Wang et al. 2016, arXiv:1608.00859), 0-based indices.

    The video's N = num_frames frames are split into S = num_segments segments; one frame is taken per segment.
    mode="test":  the centre of each of S equal segments, idx_k = floor((2k + 1) * N / (2 * S)), k = 0..S-1
                  (TSN's int(tick/2 + tick*k) with tick = N/S).
    mode="train", N >= S: segments of integer length d = N // S; idx_k = k*d + r_k, the offsets r_k drawn
                  independently and uniformly from {0, ..., d-1}. Frames S*d .. N-1 are never drawn
                  (as in TSN and mmaction2). Every random draw comes from `generator` (None = torch's global
                  RNG): two calls with equally seeded generators return the same indices whatever the
                  global RNG state. How the draws are made is free.
    mode="train", N < S: the same indices as mode="test" (deterministic; frames repeat).
    Returns a new int64 tensor of shape (S,), non-decreasing, every entry in [0, N).
    Raises ValueError if N < 1, S < 1, or mode is not "train" or "test".
    """
    if num_frames < 1 or num_segments < 1:
        raise ValueError(f"num_frames and num_segments must be >= 1, got {num_frames} and {num_segments}")
    if mode not in ("train", "test"):
        raise ValueError(f'mode must be "train" or "test", got {mode!r}')
    k = torch.arange(num_segments)  # (S,) int64
    if mode == "train" and num_frames >= num_segments:
        length = num_frames // num_segments  # d
        return k * length + torch.randint(length, (num_segments,), generator=generator)
    # integer arithmetic: exact where TSN's float tick/2 + tick*k can round an exact centre down
    return (2 * k + 1) * num_frames // (2 * num_segments)


def temporal_shift(x: torch.Tensor, n_segment: int, fold_div: int = 8) -> torch.Tensor:
    """The temporal shift of TSM (Lin, Gan, Han 2019, arXiv:1811.08383), out of place.

    x: (N*T, C, H, W) with T = n_segment consecutive frames per clip: row b*T + t is frame t of clip b.
    fold = C // fold_div. With x viewed as (N, T, C, H, W):
      out[:, t, :fold]         = x[:, t+1, :fold]          for t < T-1; zeros at t = T-1  ("shift left":
                                                                      frame t receives the NEXT frame)
      out[:, t, fold:2*fold]   = x[:, t-1, fold:2*fold]    for t >= 1;  zeros at t = 0    ("shift right":
                                                                      frame t receives the PREVIOUS frame)
      out[:, :, 2*fold:]       = x[:, :, 2*fold:]          (unchanged)
    Returns a new tensor with x's shape and dtype; x is not modified; differentiable (the gradient is the
    opposite shift). fold = 0 (C < fold_div) returns a copy of x; n_segment = 1 zeroes the 2*fold shifted
    channels. If N*T is not a multiple of n_segment, raise (ValueError preferred; any exception passes).
    Identical to TemporalShift.shift(x, n_segment, fold_div, inplace=False) in
    mit-han-lab/temporal-shift-module ops/temporal_shift.py.
    """
    rows, channels, height, width = x.shape
    if n_segment < 1 or rows % n_segment != 0:
        raise ValueError(f"x has {rows} rows, not a multiple of n_segment={n_segment}")
    fold = channels // fold_div
    clips = x.reshape(rows // n_segment, n_segment, channels, height, width)  # (N, T, C, H, W)
    out = torch.zeros_like(clips)  # (N, T, C, H, W)
    out[:, :-1, :fold] = clips[:, 1:, :fold]  # frame t receives frame t + 1
    out[:, 1:, fold : 2 * fold] = clips[:, :-1, fold : 2 * fold]  # frame t receives frame t − 1
    out[:, :, 2 * fold :] = clips[:, :, 2 * fold :]
    return out.reshape(rows, channels, height, width)


class TubeletEmbedding(nn.Module):
    """ViViT's tubelet embedding (Arnab et al. 2021, arXiv:2103.15691): non-overlapping t x p_h x p_w tubes,
    each linearly projected to one token.

    __init__(in_channels: int, embed_dim: int, tubelet_size: tuple[int, int, int]), tubelet_size = (t, p_h, p_w).
    One submodule and nothing else:
      proj = nn.Conv3d(in_channels, embed_dim, kernel_size=tubelet_size, stride=tubelet_size)   (bias=True)
    so the state dict is exactly proj.weight (D, C, t, p_h, p_w) and proj.bias (D,).
    forward(video: (B, T, C, H, W)) -> tokens (B, N, D), N = (T // t) * (H // p_h) * (W // p_w).
    Token n = (i_t * (H // p_h) + i_h) * (W // p_w) + i_w   (time slowest, width fastest) equals
      proj.bias + sum_{c,a,u,v} proj.weight[:, c, a, u, v] * video[:, i_t*t + a, c, i_h*p_h + u, i_w*p_w + v].
    Frames / rows / columns that do not fill a whole tubelet are dropped (stride = kernel, no padding).
    Matches transformers' VivitTubeletEmbeddings (its `projection` is our `proj`).
    """

    def __init__(self, in_channels: int, embed_dim: int, tubelet_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=tubelet_size, stride=tubelet_size)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        grid = self.proj(video.permute(0, 2, 1, 3, 4))  # (B, D, T // t, H // p_h, W // p_w)
        return grid.flatten(2).transpose(1, 2)  # (B, N, D), time slowest, width fastest


def inflate_patch_weight(weight2d: torch.Tensor, t: int, method: str = "central") -> torch.Tensor:
    """Turn an image patch-embedding kernel (nn.Conv2d weight, (D, C, p_h, p_w)) into a tubelet kernel
    (D, C, t, p_h, p_w), same dtype and device.

    "average": every temporal slice is weight2d / t (I3D "filter inflation", arXiv:1705.07750; scenic's
               average_frame_initializer). A static clip of t identical frames is then embedded exactly as
               the image model embeds one frame (the bias is reused unchanged).
    "central": slice t // 2 is weight2d, every other slice is 0 (ViViT's central frame initialisation;
               for even t this is the later of the two middle frames, as scenic's init_embedding indexes
               shape[0] // 2). Each tubelet token then equals the image token of its central frame.
    Differentiable w.r.t. weight2d; weight2d is not modified. t >= 1; t < 1 or another method -> ValueError.
    """
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    kernel = weight2d.unsqueeze(2)  # (D, C, 1, p_h, p_w)
    if method == "average":
        return kernel.repeat(1, 1, t, 1, 1) / t  # (D, C, t, p_h, p_w)
    if method == "central":
        # zero slices before and after: F.pad's last pair pads dim 2, the time axis
        return F.pad(kernel, (0, 0, 0, 0, t // 2, t - 1 - t // 2))  # (D, C, t, p_h, p_w)
    raise ValueError(f'method must be "average" or "central", got {method!r}')


class DividedSpaceTimeBlock(nn.Module):
    """A TimeSformer block with divided space-time attention (Bertasius, Wang, Torresani 2021,
    arXiv:2102.05095), without the CLS token.

    __init__(dim: int, num_heads: int). Submodules, exactly these (no dropout anywhere):
      temporal_norm = nn.LayerNorm(dim)
      temporal_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
      temporal_fc   = nn.Linear(dim, dim), weight AND bias initialised to 0
      spatial_norm  = nn.LayerNorm(dim)
      spatial_attn  = nn.MultiheadAttention(dim, num_heads, batch_first=True)
      mlp_norm      = nn.LayerNorm(dim)
      mlp           = nn.Sequential(nn.Linear(dim, 4*dim), nn.GELU(), nn.Linear(4*dim, dim))
    forward(x: (B, T, N, D)) -> (B, T, N, D); T frames of N patch tokens each:
      1. time:  the N spatial positions attend separately over the T frames: sequences (B*N, T, D) of
                h = temporal_norm(x);  x = x + temporal_fc(temporal_attn(h, h, h)[0])   (back in (B, T, N, D))
      2. space: the T frames attend separately over their N patches: sequences (B*T, N, D) of
                h = spatial_norm(x) with the x from step 1;  x = x + spatial_attn(h, h, h)[0]
      3. x = x + mlp(mlp_norm(x))
    With temporal_fc = 0 the block is a plain (space-only) image ViT block, which is why TimeSformer
    zero-initialises temporal_fc.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, patches, dim = x.shape
        # Time: one sequence of T frames per spatial position.
        h = self.temporal_norm(x).transpose(1, 2).reshape(batch * patches, frames, dim)  # (B*N, T, D)
        h = self.temporal_attn(h, h, h, need_weights=False)[0]  # (B*N, T, D)
        x = x + self.temporal_fc(h.reshape(batch, patches, frames, dim).transpose(1, 2))  # (B, T, N, D)
        # Space: one sequence of N patches per frame, read from the x the time step produced.
        h = self.spatial_norm(x).reshape(batch * frames, patches, dim)  # (B*T, N, D)
        h = self.spatial_attn(h, h, h, need_weights=False)[0]  # (B*T, N, D)
        x = x + h.reshape(batch, frames, patches, dim)  # (B, T, N, D)
        return x + self.mlp(self.mlp_norm(x))


class BottleneckFusionEncoder(nn.Module):
    """Audio-visual fusion through attention bottlenecks, as in MBT (Nagrani et al. 2021, arXiv:2107.00135).

    __init__(video_layers, audio_layers, dim: int, fusion_layer: int, num_bottlenecks: int = 4)
      video_layers, audio_layers: sequences (e.g. nn.ModuleList) of L modules each, every module mapping
        (B, M, dim) -> (B, M, dim) for any M (e.g. nn.TransformerEncoderLayer(dim, h, batch_first=True));
        stored as self.video_layers and self.audio_layers (nn.ModuleList, in the given order).
      self.fusion_layer = fusion_layer, in [0, L]: layers with index < fusion_layer see only their own modality.
      self.bottleneck = nn.Parameter of shape (1, num_bottlenecks, dim), initialised N(0, 0.02^2)
        (the module's only parameter besides the layers').
      len(video_layers) != len(audio_layers) or fusion_layer outside [0, L] -> ValueError.
    forward(video: (B, Lv, dim), audio: (B, La, dim)) -> (video (B, Lv, dim), audio (B, La, dim), z (B, K, dim)):
      z = self.bottleneck expanded to the batch; for i in 0..L-1:
        i <  fusion_layer: video = video_layers[i](video);  audio = audio_layers[i](audio)
        i >= fusion_layer: ov = video_layers[i](cat([video, z], dim=1));  oa = audio_layers[i](cat([audio, z], dim=1))
                           video, audio = ov[:, :Lv], oa[:, :La];   z = (ov[:, Lv:] + oa[:, La:]) / 2
      Both modalities read the same z at layer i (parallel updates, then the mean). The third output is z
      after the last layer (the expanded parameter when fusion_layer = L, i.e. no cross-modal exchange).
    """

    def __init__(
        self,
        video_layers: nn.ModuleList | list[nn.Module],
        audio_layers: nn.ModuleList | list[nn.Module],
        dim: int,
        fusion_layer: int,
        num_bottlenecks: int = 4,
    ) -> None:
        super().__init__()
        if len(video_layers) != len(audio_layers):
            raise ValueError(f"{len(video_layers)} video layers but {len(audio_layers)} audio layers")
        if not 0 <= fusion_layer <= len(video_layers):
            raise ValueError(f"fusion_layer={fusion_layer} is outside [0, {len(video_layers)}]")
        self.video_layers = nn.ModuleList(video_layers)
        self.audio_layers = nn.ModuleList(audio_layers)
        self.fusion_layer = fusion_layer
        self.bottleneck = nn.Parameter(torch.randn(1, num_bottlenecks, dim) * 0.02)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        video_length, audio_length = video.shape[1], audio.shape[1]
        z = self.bottleneck.expand(video.shape[0], -1, -1)  # (B, K, D)
        for i, (video_layer, audio_layer) in enumerate(zip(self.video_layers, self.audio_layers, strict=True)):
            if i < self.fusion_layer:
                video, audio = video_layer(video), audio_layer(audio)  # (B, Lv, D), (B, La, D)
                continue
            out_video = video_layer(torch.cat([video, z], dim=1))  # (B, Lv + K, D)
            out_audio = audio_layer(torch.cat([audio, z], dim=1))  # (B, La + K, D)
            video, audio = out_video[:, :video_length], out_audio[:, :audio_length]
            z = (out_video[:, video_length:] + out_audio[:, audio_length:]) / 2  # (B, K, D): both read the old z
        return video, audio, z


def gap_at_k(predictions: torch.Tensor, labels: torch.Tensor, k: int = 20) -> float:
    """Global Average Precision at k of the YouTube-8M challenge (google/youtube-8m eval_util.calculate_gap).

    predictions: (V, C) float scores (probabilities or logits: only the order matters).
    labels: (V, C) bool, int or float; a label is positive when > 0.
    1. For each video keep its min(k, C) highest-scoring (score, label) pairs.
    2. Pool the V * min(k, C) kept pairs and sort them by score, descending.
    3. GAP = (1 / P) * sum_i precision@i * rel_i, with rel_i = 1 when pair i is positive,
       precision@i = (number of positives among the first i pairs) / i, and P = the number of positive labels
       in the whole `labels` matrix (positives that fell outside a video's top k still count in P).
    Returns a Python float in [0, 1]; P = 0 returns 0.0; k < 1 raises ValueError.
    Ties are not graded (the checks use distinct scores; youtube-8m shuffles with random.seed(0) before a
    stable sort, so its tie order is arbitrary).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    positive = labels > 0  # (V, C) bool
    total = int(positive.sum())  # P
    if total == 0:
        return 0.0
    scores, classes = predictions.detach().topk(min(k, predictions.shape[1]), dim=1)  # (V, k) each
    order = scores.flatten().argsort(descending=True)  # (V*k,)
    relevant = positive.gather(1, classes).flatten()[order].double()  # (V*k,) rel_i in ranked order
    ranks = torch.arange(1, relevant.numel() + 1, dtype=torch.float64)  # i
    precision = relevant.cumsum(0) / ranks  # precision@i
    return float((precision * relevant).sum()) / total

"""Reference contrastive losses against naive per-row loops: forward+backward time and peak memory.

Each measurement runs in a fresh process, so the peak resident set size it reports (minus the same
process's RSS before the call) is that call's own.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

from xmodal_ref.contrastive import clip_loss, siglip_loss

from . import peak_rss_mib, print_table, run_in_fresh_process

SIZES = (256, 1024, 4096)
DIM = 512


def clip_loss_loop(image_features, text_features, logit_scale):
    """One row and one column of the logit matrix at a time: O(N·D) memory, N Python steps."""
    n = image_features.shape[0]
    total = image_features.new_zeros(())
    for i in range(n):
        row = logit_scale * (text_features @ image_features[i])  # (N,) image i against every text
        column = logit_scale * (image_features @ text_features[i])  # (N,) text i against every image
        total = total + (torch.logsumexp(row, 0) - row[i]) + (torch.logsumexp(column, 0) - column[i])
    return total / (2 * n)


def siglip_loss_loop(image_features, text_features, logit_scale, logit_bias):
    n = image_features.shape[0]
    total = image_features.new_zeros(())
    for i in range(n):
        logits = logit_scale * (text_features @ image_features[i]) + logit_bias  # (N,)
        signs = -torch.ones_like(logits)
        signs[i] = 1.0
        total = total - F.logsigmoid(signs * logits).sum()
    return total / n


IMPLEMENTATIONS = {
    ("clip", "reference"): lambda x, y: clip_loss(x, y, 14.3),
    ("clip", "loop"): lambda x, y: clip_loss_loop(x, y, 14.3),
    ("siglip", "reference"): lambda x, y: siglip_loss(x, y, 10.0, -10.0),
    ("siglip", "loop"): lambda x, y: siglip_loss_loop(x, y, 10.0, -10.0),
}


def measure(loss: str, style: str, n: int) -> dict[str, float]:
    """Forward+backward once to warm up, then time it; report seconds and extra peak RSS in MiB."""
    generator = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(n, DIM, generator=generator), dim=-1).requires_grad_()
    y = F.normalize(torch.randn(n, DIM, generator=generator), dim=-1).requires_grad_()
    fn = IMPLEMENTATIONS[(loss, style)]
    fn(x[:8], y[:8]).backward()
    before = peak_rss_mib()
    start = time.perf_counter()
    fn(x, y).backward()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "mib": peak_rss_mib() - before}


def main() -> None:
    rows = []
    for loss in ("clip", "siglip"):
        for n in SIZES:
            for style in ("reference", "loop"):
                result = run_in_fresh_process("benchmarks.losses", loss, style, n)
                rows.append((loss, n, style, f"{result['seconds'] * 1000:.1f}", f"{result['mib']:.1f}"))
    print_table(
        f"Contrastive losses, forward+backward, D={DIM}, float32, CPU (one process per row)",
        ("loss", "N", "implementation", "ms", "extra peak RSS (MiB)"),
        rows,
    )


if __name__ == "__main__":
    loss_name, style_name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(measure(loss_name, style_name, size)))

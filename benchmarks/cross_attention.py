"""Cross-attention cost as the sequences grow: the reference against PyTorch's fused kernel.

The reference ``scaled_dot_product_attention`` materialises the (B, H, Lq, Lk) score and weight
tensors; ``torch.nn.functional.scaled_dot_product_attention`` on the CPU runs a fused flash-attention
kernel (``_scaled_dot_product_flash_attention_for_cpu``, also for backward, mask or not) that works
through the keys in blocks and never holds them. Both apply the same key padding
mask: the last eighth of every sample's keys is padding. The conventions are opposite: the
reference takes True = a padded key to ignore, PyTorch's boolean ``attn_mask`` True = a key that
takes part, so the fused call gets ``~key_padding_mask``.

Each (implementation, pass, Lq, Lk) is measured in a fresh process on one thread: first the peak
resident set size that one full-size call adds (after a tiny warm-up, so that loading the kernels is
not counted), then the median wall time of ``REPEATS`` more calls. "forward" runs under
``torch.no_grad()`` (inference); "forward+backward" backpropagates the sum of the output to q, k, v,
whose gradients any implementation must hold (the last column of that table).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from xmodal_ref.attention import scaled_dot_product_attention
from xmodal_ref.common.device import one_thread

from . import peak_rss_mib, print_table, run_in_fresh_process

BATCH, HEADS, HEAD_DIM = 4, 8, 64
QUERY_LENGTHS = (32, 256)
KEY_LENGTHS = (64, 256, 1024, 4096)
REPEATS = 5
PASSES = ("forward", "forward+backward")

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
IMPLEMENTATIONS: dict[str, Attention] = {
    "reference": lambda q, k, v, padded: scaled_dot_product_attention(q, k, v, padded)[0],
    "fused": lambda q, k, v, padded: F.scaled_dot_product_attention(q, k, v, attn_mask=~padded[:, None, None, :]),
}


def make_inputs(
    query_length: int, key_length: int, requires_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q (B, H, Lq, d), k and v (B, H, Lk, d), and a key padding mask (B, Lk), True = pad."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(BATCH, HEADS, query_length, HEAD_DIM, generator=generator)
    k, v = (torch.randn(BATCH, HEADS, key_length, HEAD_DIM, generator=generator) for _ in range(2))
    padded = torch.arange(key_length) >= key_length - key_length // 8  # (Lk,)
    return (*(x.requires_grad_(requires_grad) for x in (q, k, v)), padded.expand(BATCH, -1))


def runner(style: str, pass_: str, query_length: int, key_length: int) -> Callable[[], None]:
    """One call of an implementation on fixed inputs: inference only, or forward and backward."""
    attention = IMPLEMENTATIONS[style]
    if pass_ == "forward":
        inputs = make_inputs(query_length, key_length)

        def run() -> None:
            with torch.no_grad():
                attention(*inputs)

        return run
    q, k, v, padded = make_inputs(query_length, key_length, requires_grad=True)

    def run() -> None:
        q.grad = k.grad = v.grad = None
        attention(q, k, v, padded).sum().backward()

    return run


def measure(style: str, pass_: str, query_length: int, key_length: int) -> dict[str, float]:
    """Extra peak RSS of one call (MiB), then the median wall time of REPEATS calls (ms)."""
    with one_thread():
        runner(style, pass_, 8, 8)()  # loads the kernels without touching much memory
        run = runner(style, pass_, query_length, key_length)
        before = peak_rss_mib()
        run()
        mib = peak_rss_mib() - before
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return {"ms": 1000 * statistics.median(times), "mib": mib}


def max_difference(query_length: int, key_length: int) -> float:
    """Largest |reference − fused| over every output element: the two mask conventions agree."""
    inputs = make_inputs(query_length, key_length)
    with torch.no_grad():
        reference, fused = (attention(*inputs) for attention in IMPLEMENTATIONS.values())
    return (reference - fused).abs().max().item()


def print_pass_table(pass_: str) -> None:
    """One row per (Lq, Lk): the float32 weight tensor's size, both implementations' time and memory."""
    header = ["Lq", "Lk", "weights MiB", "reference ms", "fused ms", "speed-up", "reference MiB", "fused MiB"]
    header.append("max |Δ out|" if pass_ == "forward" else "q, k, v grads MiB")
    rows = []
    for query_length in QUERY_LENGTHS:
        for key_length in KEY_LENGTHS:
            reference, fused = (
                run_in_fresh_process("benchmarks.cross_attention", style, pass_, query_length, key_length)
                for style in IMPLEMENTATIONS
            )
            weights_mib = BATCH * HEADS * query_length * key_length * 4 / 2**20  # float32 (B, H, Lq, Lk)
            row = [
                query_length,
                key_length,
                f"{weights_mib:.2f}",
                f"{reference['ms']:.2f}",
                f"{fused['ms']:.2f}",
                f"{reference['ms'] / fused['ms']:.1f}×",
                f"{reference['mib']:.1f}",
                f"{fused['mib']:.1f}",
            ]
            if pass_ == "forward":
                row.append(f"{max_difference(query_length, key_length):.1e}")
            else:  # the backward pass must hold these whatever the kernel
                row.append(f"{BATCH * HEADS * (query_length + 2 * key_length) * HEAD_DIM * 4 / 2**20:.2f}")
            rows.append(row)
    print_table(
        f"Cross-attention {pass_}, B={BATCH}, H={HEADS}, d={HEAD_DIM} per head, float32, CPU, one thread; "
        f"median ms of {REPEATS}; MiB = extra peak RSS of one call, one process per measurement; "
        "weights = B·H·Lq·Lk·4 bytes",
        header,
        rows,
    )


def main() -> None:
    for pass_ in PASSES:
        print_pass_table(pass_)


if __name__ == "__main__":
    style_name, pass_name, lq, lk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(measure(style_name, pass_name, lq, lk)))

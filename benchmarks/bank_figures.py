"""Every figure the question banks quote from this package's own code, recomputed with the setup the bank states.

Such figures (random draws, small simulations, notebook runs) move with the torch version and the machine, so
``python -m benchmarks bank_figures`` prints, for each one, the question, the quantity, the value written in the
bank and the value measured now. A mismatch beyond the last quoted digit means the bank needs editing, in both
editions (questions/NN_*.md and questions/zh/NN_*.md). Runs in a few seconds on two CPU cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from xmodal_ref.alignment import cca, vsepp_loss
from xmodal_ref.contrastive import clip_loss, siglip_loss
from xmodal_ref.fusion import LowRankFusion, modality_dropout, tensor_fusion

from . import print_table

#: (question id, quantity, value quoted in the bank, value measured now)
Row = tuple[str, str, str, str]


@contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator for the block, restoring its previous state afterwards.

    For code that draws from the global generator (module initialisation, ``modality_dropout``, notebook
    cells that call ``torch.manual_seed``), so that this benchmark leaves no trace on other ones.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def fmt(values: float | Sequence[float], digits: int) -> str:
    """One value, or a list of values, rounded to ``digits`` decimals."""
    if isinstance(values, Sequence):
        return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"
    return f"{values:.{digits}f}"


def unit_features(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """(n, dim) standard normal rows drawn from ``gen``, L2-normalised: random unit features."""
    return F.normalize(torch.randn(n, dim, generator=gen), dim=-1)


# ----------------------------------------------------------------------------- 01 · fusion


def q01_14_lmf_equals_tfn() -> list[Row]:
    """Q01.14: LowRankFusion([3, 4, 2], O = 6, R = 3) against tensor fusion with the rank-R weight, float32.

    ``torch.manual_seed(0)``, then the module (its default initialisation) and a batch of 8 standard normal
    inputs, in that order. The weight W = Σ_r ⊗_m factors[m][r] is built as in tests/fusion/test_reference.py.
    """
    dims, output_dim, rank = (3, 4, 2), 6, 3
    with global_seed(0):
        module = LowRankFusion(list(dims), output_dim, rank)
        features = [torch.randn(8, d) for d in dims]
    with torch.no_grad():
        weight = module.factors[0]  # (R, d_0 + 1, O), grows to (R, Π (d_m + 1), O)
        for factor in module.factors[1:]:
            weight = (weight[:, :, None, :] * factor[:, None, :, :]).flatten(1, 2)
        explicit = tensor_fusion(features) @ weight.sum(dim=0) + module.bias
        difference = (module(features) - explicit).abs().max().item()
    return [("Q01.14", "max |LMF − TFN|, float32", "8e-07", f"{difference:.0e}")]


def q01_19_naive_dropout_scale() -> list[Row]:
    """Q01.19: the expectation under the naive scale 1/(1 − p) with restore-one modality dropout, M = 3, p = 0.3.

    ``torch.manual_seed(0)``, then ``modality_dropout`` on three all-ones (2,000,000, 1) inputs. The kept fraction
    of all (sample, modality) cells, over 1 − p, is the mean output the naive scale would give (exact 0.709/0.7).
    """
    samples, m, p = 2_000_000, 3, 0.3
    with global_seed(0):
        dropped = modality_dropout([torch.ones(samples, 1) for _ in range(m)], p, training=True)
    kept = torch.cat(dropped).ne(0).double().mean().item()
    exact = ((1 - p) + p**m / m) / (1 - p)
    quantity = f"E[output] with scale 1/(1 − p), simulated (exact {exact:.4f})"
    return [("Q01.19", quantity, "1.013", fmt(kept / (1 - p), 3))]


# ----------------------------------------------------------------------------- 02 · attention


def q02_03_dot_product_variance() -> list[Row]:
    """Q02.03: Var[q·k] over 100,000 standard normal pairs (q, then k) per d = 16, 64, 512, one generator, seed 0."""
    gen = generator(0)
    variances = []
    for dim in (16, 64, 512):
        q, k = torch.randn(100_000, dim, generator=gen), torch.randn(100_000, dim, generator=gen)
        variances.append((q * k).sum(dim=-1).var().item())
    return [("Q02.03", "Var[q·k], d = 16 / 64 / 512", "[16, 64, 514]", fmt(variances, 0))]


def q02_03_softmax_saturation() -> list[Row]:
    """Q02.03: mean largest softmax probability of 50 logits at σ = 8, √512, 1.

    The same 100,000 rows of 50 standard normal logits (generator seed 0), multiplied by σ.
    """
    logits = torch.randn(100_000, 50, generator=generator(0))
    sigmas = (8.0, math.sqrt(512), 1.0)
    top = [(sigma * logits).softmax(dim=-1).amax(dim=-1).mean().item() for sigma in sigmas]
    return [
        ("Q02.03", "mean top softmax prob., σ = 8 / √512", "[0.80, 0.93]", fmt(top[:2], 2)),
        ("Q02.03", "mean top softmax prob., σ = 1", "0.125", fmt(top[2], 3)),
    ]


# ----------------------------------------------------------------------------- 03 · contrastive


def q03_02_clip_loss_at_init() -> list[Row]:
    """Q03.02: CLIP loss of N = 256 random unit pairs at s = 1/0.07, per D.

    For each D a fresh generator, seed 0, draws the image features, then the caption features.
    """
    rows = []
    for dim, quoted in ((512, "5.7"), (64, "7.1")):
        gen = generator(0)
        images, captions = unit_features(256, dim, gen), unit_features(256, dim, gen)
        loss = clip_loss(images, captions, 1 / 0.07).item()
        rows.append(("Q03.02", f"CLIP loss at init, N = 256, D = {dim}", quoted, fmt(loss, 2)))
    return rows


def q03_08_siglip_loss_at_init() -> list[Row]:
    """Q03.08, Q03.09: SigLIP loss at t = 10, b = −10 of B random unit pairs, D = 512, setup as in Q03.02."""
    rows = []
    for batch, quoted in ((8, "10.02"), (1024, "10.05")):
        gen = generator(0)
        images, captions = unit_features(batch, 512, gen), unit_features(batch, 512, gen)
        loss = siglip_loss(images, captions, 10.0, -10.0).item()
        rows.append(("Q03.08/09", f"SigLIP loss at init, B = {batch}, D = 512", quoted, fmt(loss, 2)))
    return rows


# ----------------------------------------------------------------------------- 04 · alignment


def two_views(
    gen: torch.Generator, n: int, latent_dim: int, p: int, q: int, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Notebook 04's ``two_views``: float64 views x (n, p), y (n, q), noisy linear images of one latent (n, latent_dim).

    Draws, in this order: the latent, x's map, x's noise, y's map, y's noise.
    """

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    z = draw(n, latent_dim)
    x = z @ draw(latent_dim, p) + noise * draw(n, p)
    y = z @ draw(latent_dim, q) + noise * draw(n, q)
    return x, y


def independent_views(gen: torch.Generator, n: int, p: int, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent float64 standard normal views x (n, p), then y (n, q), from ``gen``."""
    return torch.randn(n, p, generator=gen, dtype=torch.float64), torch.randn(n, q, generator=gen, dtype=torch.float64)


def q04_13_notebook_cca() -> list[Row]:
    """Q04.13: notebook 04 §4, one generator seeded 0: the N = 1000 shared-latent views, then independent N = 20."""
    gen = generator(0)
    shared = cca(*two_views(gen, 1000, latent_dim=2, p=6, q=5, noise=2.0), k=4)[0].tolist()
    independent = cca(*independent_views(gen, 20, 10, 10), k=4)[0].tolist()
    return [
        ("Q04.13", "CCA, shared 2-D latent, N = 1000", "[0.44, 0.35, 0.10, 0.08]", fmt(shared, 2)),
        ("Q04.13", "CCA, independent, N = 20, p = q = 10", "[1.0, 0.994, 0.985, 0.894]", fmt(independent, 3)),
    ]


def q04_13_cca_seeds() -> list[Row]:
    """Q04.13: CCA on independent views, p = q = 10, a fresh generator per seed (1, 2, 3).

    Reports ρ₂ at N = 20 (ρ₁ is 1 there, see the bank) and ρ₁ at N = 1000.
    """
    second = [cca(*independent_views(generator(seed), 20, 10, 10), k=2)[0][1].item() for seed in (1, 2, 3)]
    top = [cca(*independent_views(generator(seed), 1000, 10, 10), k=1)[0][0].item() for seed in (1, 2, 3)]
    return [
        ("Q04.13", "ρ₂, independent, N = 20, seeds 1–3", "[0.989, 0.994, 0.999]", fmt(second, 3)),
        ("Q04.13", "ρ₁, independent, N = 1000, seeds 1–3", "[0.168, 0.154, 0.199]", fmt(top, 3)),
    ]


def q04_17_vsepp_collapse() -> list[Row]:
    """Q04.17: notebook 04 §5, hardest-negative VSE++ loss (α = 0.2) and its gradient, N = 64, D = 16.

    ``torch.manual_seed(0)``, then: images (64, 16) standard normal; spread captions = images + standard normal
    noise; collapsed images and captions = ones + 1e-3 · standard normal. The gradient norm is taken with respect
    to the features before L2 normalisation, images and captions together.
    """
    with global_seed(0):
        images = torch.randn(64, 16)
        spread = (images, images + torch.randn(64, 16))
        collapsed = (torch.ones(64, 16) + 1e-3 * torch.randn(64, 16), torch.ones(64, 16) + 1e-3 * torch.randn(64, 16))
    states = {"spread": spread, "collapsed": collapsed}
    measured = {}
    for name, (image_start, caption_start) in states.items():
        image_raw, caption_raw = image_start.clone().requires_grad_(), caption_start.clone().requires_grad_()
        loss = vsepp_loss(F.normalize(image_raw, dim=-1), F.normalize(caption_raw, dim=-1), margin=0.2)
        loss.backward()
        measured[name] = (loss.item(), torch.cat([image_raw.grad, caption_raw.grad]).norm().item())
    return [
        ("Q04.17", "VSE++ loss, collapsed (2Nα)", "25.60", fmt(measured["collapsed"][0], 2)),
        ("Q04.17", "VSE++ |gradient|, collapsed", "0.0066", fmt(measured["collapsed"][1], 4)),
        ("Q04.17", "VSE++ |gradient|, spread", "4.35", fmt(measured["spread"][1], 2)),
    ]


FIGURES: tuple[Callable[[], list[Row]], ...] = (
    q01_14_lmf_equals_tfn,
    q01_19_naive_dropout_scale,
    q02_03_dot_product_variance,
    q02_03_softmax_saturation,
    q03_02_clip_loss_at_init,
    q03_08_siglip_loss_at_init,
    q04_13_notebook_cca,
    q04_13_cca_seeds,
    q04_17_vsepp_collapse,
)


def main() -> None:
    rows = [row for figure in FIGURES for row in figure()]
    print_table(
        f"Figures quoted in the question banks, recomputed (torch {torch.__version__}, CPU)",
        ("question", "quantity", "in the bank", "measured now"),
        rows,
    )


if __name__ == "__main__":
    main()

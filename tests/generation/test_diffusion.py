"""The chapter 07 guided-diffusion recipe: its pieces' contracts, its determinism, and the targets on seed 0."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.alignment.cgan import ATTRIBUTE_SIZES, all_conditions
from xmodal_ref.data import make_shapes_captions
from xmodal_ref.generation import diffusion as D
from xmodal_ref.generation.reference import ddpm_loss, guided_ddim_step

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def result() -> dict:
    """The full recipe on seed 0 (≈ 14 s on one thread): trained once for the whole module."""
    return D.train_guided_diffusion(0, progress=False)


class Recorder:
    """Wraps ddpm_loss and guided_ddim_step, recording what the recipe hands them (shapes, dtypes, timesteps)."""

    def __init__(self) -> None:
        self.losses: list[dict] = []
        self.steps: list[tuple[float, int, int]] = []

    def loss(
        self,
        eps_model: D.EpsModel,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        alphas_cumprod: torch.Tensor,
    ) -> torch.Tensor:
        self.losses.append(
            {"x0": x0.shape, "t": (t.dtype, t.shape, int(t.min()), int(t.max())), "noise": noise.shape,
             "alphas_cumprod": alphas_cumprod.shape, "eps": eps_model(x0, t).shape}
        )  # fmt: skip
        return ddpm_loss(eps_model, x0, t, noise, alphas_cumprod)

    def step(
        self,
        x_t: torch.Tensor,
        eps_cond: torch.Tensor,
        eps_uncond: torch.Tensor,
        guidance_scale: float,
        t: int,
        t_prev: int,
        alphas_cumprod: torch.Tensor,
    ) -> torch.Tensor:
        assert x_t.shape == eps_cond.shape == eps_uncond.shape
        self.steps.append((guidance_scale, t, t_prev))
        return guided_ddim_step(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod)


@pytest.fixture(scope="module")
def short_runs() -> tuple[dict, dict, Recorder]:
    """Two identical one-epoch runs (judge one epoch, two scales) through a recording loss and step."""
    recorder = Recorder()
    runs = [
        D.train_guided_diffusion(
            1, loss=recorder.loss, step=recorder.step, steps=32, scales=(0.0, 2.0), judge_epochs=1, progress=False
        )
        for _ in range(2)
    ]
    return runs[0], runs[1], recorder


def test_the_schedule_and_the_ddim_timesteps() -> None:
    alphas_cumprod = D.linear_alphas_cumprod()
    assert alphas_cumprod.shape == (1000,) and alphas_cumprod.dtype == torch.float32
    assert alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    assert (alphas_cumprod.diff() < 0).all() and alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    pairs = D.ddim_timesteps()
    assert len(pairs) == 25
    assert pairs[:2] == [(960, 920), (920, 880)] and pairs[-2:] == [(40, 0), (0, -1)]
    assert D.ddim_timesteps(4, 20) == [(15, 10), (10, 5), (5, 0), (0, -1)]


def test_the_whitened_pca_is_a_linear_autoencoder_with_identity_latent_covariance() -> None:
    images = make_shapes_captions(2048, seed=5, image_size=16).images
    pca = D.WhitenedPCA().fit(images)
    latents = pca.encode(images)  # (N, K)
    assert latents.shape == (2048, D.LATENT_DIM)
    torch.testing.assert_close(latents.mean(dim=0), torch.zeros(D.LATENT_DIM), atol=1e-4, rtol=0)
    torch.testing.assert_close(latents.T.cov(), torch.eye(D.LATENT_DIM), atol=1e-3, rtol=0)
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(D.LATENT_DIM), atol=1e-5, rtol=0)
    assert (pca.scales.diff() <= 0).all()  # largest variance first
    decoded = pca.decode(latents)
    assert decoded.shape == images.shape and decoded.min() >= 0 and decoded.max() <= 1
    # What 96 of 768 components lose is mostly the pixel noise (uniform ±0.1: 16 % of the variance).
    assert (decoded - images).pow(2).mean() < 0.25 * (images - images.mean(dim=0)).pow(2).mean()
    pixels = torch.rand(500, 3, 2, 2)
    full = D.WhitenedPCA(image_shape=(3, 2, 2), k=12).fit(pixels)  # every component: lossless
    torch.testing.assert_close(full.decode(full.encode(pixels)), pixels, atol=1e-5, rtol=0)


def test_the_denoiser_adds_the_exact_gaussian_prediction_to_its_network() -> None:
    torch.manual_seed(0)
    alphas_cumprod = D.linear_alphas_cumprod()
    model = D.Denoiser(alphas_cumprod)
    z, t = torch.randn(5, D.LATENT_DIM), torch.tensor([0, 1, 500, 998, 999])
    conditions = torch.cat([all_conditions()[[0, 50, 95]], D.NULL_CONDITION.expand(2, 3)])  # two unconditional rows
    assert model(z, t, conditions).shape == (5, D.LATENT_DIM)
    torch.nn.init.zeros_(model.out[-1].weight)
    torch.nn.init.zeros_(model.out[-1].bias)
    torch.testing.assert_close(model(z, t, conditions), (1 - alphas_cumprod[t, None]).sqrt() * z)
    assert [table.num_embeddings for table in model.condition] == [n + 1 for n in ATTRIBUTE_SIZES]


def test_drop_conditions_nulls_whole_rows_at_the_rate() -> None:
    conditions = all_conditions().repeat(50, 1)  # (4800, 3)
    dropped = D.drop_conditions(conditions, 0.2, torch.Generator().manual_seed(0))
    null = (dropped == D.NULL_CONDITION).all(dim=-1)
    kept = (dropped == conditions).all(dim=-1)
    assert (null ^ kept).all()  # each row is either untouched or null in all three attributes
    assert null.float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert torch.equal(conditions, all_conditions().repeat(50, 1))  # the input is not modified


def test_sampling_pairs_the_conditional_and_unconditional_passes() -> None:
    torch.manual_seed(0)
    alphas_cumprod = D.linear_alphas_cumprod()
    model = D.Denoiser(alphas_cumprod)
    conditions = all_conditions()[:3]
    calls = []

    def step(
        x_t: torch.Tensor,
        eps_cond: torch.Tensor,
        eps_uncond: torch.Tensor,
        guidance_scale: float,
        t: int,
        t_prev: int,
        alphas: torch.Tensor,
    ) -> torch.Tensor:
        t_batch = torch.full((3,), t)
        torch.testing.assert_close(eps_cond, model(x_t, t_batch, conditions))
        torch.testing.assert_close(eps_uncond, model(x_t, t_batch, D.NULL_CONDITION.expand(3, 3)))
        calls.append((guidance_scale, t, t_prev))
        return guided_ddim_step(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas)

    latents = D.sample_latents(model, conditions, 3.0, alphas_cumprod, step, torch.Generator().manual_seed(0), steps=5)
    assert latents.shape == (3, D.LATENT_DIM) and torch.isfinite(latents).all()
    assert calls == [(3.0, t, t_prev) for t, t_prev in D.ddim_timesteps(5)]


def test_within_condition_std() -> None:
    images = torch.zeros(2, 2, 3, 4, 4)
    images[0, 1] = 1.0  # condition 0: one black and one white image; condition 1: two black images
    assert D.within_condition_std(images) == pytest.approx(2**-0.5 / 2)


def test_the_recipe_calls_the_exercises_by_their_contracts_and_is_deterministic(
    short_runs: tuple[dict, dict, Recorder],
) -> None:
    first, second, recorder = short_runs
    assert len(recorder.losses) == 2 * 32
    assert recorder.losses[0] == {
        "x0": (D.BATCH_SIZE, D.LATENT_DIM),
        "t": (torch.int64, (D.BATCH_SIZE,), *recorder.losses[0]["t"][2:]),
        "noise": (D.BATCH_SIZE, D.LATENT_DIM),
        "alphas_cumprod": (1000,),
        "eps": (D.BATCH_SIZE, D.LATENT_DIM),
    }
    assert all(0 <= call["t"][2] <= call["t"][3] <= 999 for call in recorder.losses)
    sweep = [(scale, t, t_prev) for scale in (0.0, 2.0) for t, t_prev in D.ddim_timesteps()]
    assert recorder.steps == 2 * sweep
    assert first["steps"] == 32 and first["losses"] == second["losses"]
    for scale in (0.0, 2.0):
        assert torch.equal(first["guidance"][scale]["latents"], second["guidance"][scale]["latents"])
        assert first["guidance"][scale]["all"] == second["guidance"][scale]["all"]


def test_the_result_reports_every_scale(result: dict) -> None:
    assert hasattr(D.train_guided_diffusion, "__wrapped__")  # @memoised
    assert list(result["guidance"]) == list(D.GUIDANCE_SCALES)
    assert result["steps"] == len(result["losses"]) == D.STEPS
    for scores in result["guidance"].values():
        assert set(scores) == {"colour", "shape", "position", "all", "pixel_std", "latents"}
        assert scores["latents"].shape == (96, D.SAMPLES_PER_CONDITION, D.LATENT_DIM)
        assert scores["all"] <= min(scores["colour"], scores["shape"], scores["position"])
    assert result["judge_ceiling"]["colour"] >= 0.99 and result["judge_ceiling"]["position"] >= 0.99
    assert result["reconstruction_pixel_std"] < result["real_pixel_std"]
    assert set(result["seconds"]) == {"data", "judge", "training", "sampling", "total"}


def test_guidance_trades_diversity_for_fidelity_on_seed_0(result: dict) -> None:
    """The recipe's targets (docstring of ``diffusion``; they hold on seeds 0–2, ``benchmarks/diffusion.py``)."""
    g = result["guidance"]
    assert g[2.0]["all"] >= g[1.0]["all"] + 0.05
    assert g[2.0]["colour"] >= 0.95
    assert g[0.0]["all"] <= 0.05
    assert g[3.0]["pixel_std"] < g[1.0]["pixel_std"]
    assert g[0.0]["colour"] <= 0.25  # the unconditional model names a colour at chance (1/6)


def test_the_figures(result: dict) -> None:
    samples, tradeoff = D.plot_guidance_samples(result), D.plot_guidance_tradeoff(result)
    assert isinstance(samples, Figure) and isinstance(tradeoff, Figure)
    assert [ax.get_title() for ax in samples.axes] == [
        f"s = {s:g} · all three {result['guidance'][s]['all']:.0%}" for s in (1.0, 3.0, 5.0)
    ]
    assert samples.axes[0].images[0].get_array().shape == (12 * 18, 6 * 18, 3)
    assert len(tradeoff.axes) == 2
    conditions = D.grid_conditions()
    assert len({tuple(c) for c in conditions[:, 1:].tolist()}) == 12
    assert sorted(conditions[:, 0].tolist()) == sorted(list(range(6)) * 2)

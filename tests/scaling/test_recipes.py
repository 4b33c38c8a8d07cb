"""Chapter 10's recipes: two ranks are one big batch (A), the N² wall (B), and the torchrun launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.contrastive.reference import clip_loss
from xmodal_ref.scaling import equivalence as A
from xmodal_ref.scaling import memory_wall as B
from xmodal_ref.scaling import train as launcher
from xmodal_ref.scaling.ranks import can_fork

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py

EXACT = ("(local, grad)", "(global, grad)")
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def equivalence() -> dict:
    """Recipe A in float32 (one launch of two ranks, ≈ 1.5 s)."""
    return A.run_equivalence()


@pytest.fixture(scope="module")
def wall() -> dict:
    """Recipe B at N = 1024 … 8192 (≈ 8 s on one thread)."""
    return B.run_memory_wall(progress=False)


def single_process(steps: int = A.STEPS, dtype: torch.dtype = torch.float32) -> dict:
    """The truth: one process on the whole batch with chapter 03's clip_loss."""
    return A.data_parallel_sgd(clip_loss, steps=steps, dtype=dtype)


# ---- recipe A ---------------------------------------------------------------------------------------------------


def test_the_dual_encoder_has_the_recipe_shapes_and_is_seeded_without_touching_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    model, twin, other = A.make_dual_encoder(0), A.make_dual_encoder(0), A.make_dual_encoder(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters(), strict=True))
    assert not torch.equal(model.image_encoder[0].weight, other.image_encoder[0].weight)
    assert next(model.parameters()) is model.log_scale  # the flat vectors put log_scale first
    image, text, scale = model(torch.randn(5, 32), torch.randn(5, 32))
    assert image.shape == text.shape == (5, 16)
    torch.testing.assert_close(image.norm(dim=1), torch.ones(5))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-6)


def test_the_global_batch_must_split_evenly_over_the_ranks() -> None:
    with pytest.raises(ValueError, match="multiple of world_size"):
        A.data_parallel_sgd(clip_loss, world_size=3, global_batch=128)


def test_single_process_training_lowers_the_loss() -> None:
    losses = single_process()["losses"]
    assert len(losses) == A.STEPS and losses[-1] < 0.5 * losses[0]


def test_gathering_with_the_gradient_reproduces_the_full_batch_and_a_no_grad_gather_does_not(
    equivalence: dict,
) -> None:
    configs = equivalence["configs"]
    assert list(configs) == [A.config_name(*config) for config in A.CONFIGS]
    for name in EXACT:
        assert configs[name]["max_delta"] < 1e-5, name  # measured 4.8e-7 and 2.4e-7
        assert configs[name]["encoder_delta"] < 1e-5, name
        assert configs[name]["scale_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert configs["(local, no-grad)"]["max_delta"] > 1e-2  # measured 0.55
    assert configs["(global, no-grad)"]["max_delta"] > 1e-2  # measured 0.48
    for result in configs.values():
        assert result["rank_spread"] == 0.0  # every rank applied the same averaged gradient
    single = equivalence["single_losses"]
    # a global loss is the full batch's loss on every rank; without the gradient it drifts away after step 0
    assert configs["(global, grad)"]["losses"] == pytest.approx(single, abs=1e-5)
    assert configs["(global, no-grad)"]["losses"][0] == pytest.approx(single[0], abs=1e-5)


def test_a_no_grad_gather_gives_the_encoders_one_wth_of_the_gradient_but_the_logit_scale_all_of_it(
    equivalence: dict,
) -> None:
    biased = equivalence["configs"]["(global, no-grad)"]
    assert biased["encoder_delta_over_w"] < 1e-6 < 1e-2 < biased["encoder_delta"]
    assert biased["scale_ratio"] == pytest.approx(1.0, abs=1e-5)
    local = equivalence["configs"]["(local, no-grad)"]
    assert min(local["encoder_delta"], local["encoder_delta_over_w"]) > 1e-2  # not even a constant multiple


def test_in_float64_the_exact_configurations_agree_to_rounding() -> None:
    result = A.run_equivalence(dtype=torch.float64)
    assert result["dtype"] == "float64"
    for name in EXACT:
        assert result["configs"][name]["max_delta"] < 1e-12  # measured 4.4e-16 and 3.3e-16
    assert result["configs"]["(global, no-grad)"]["encoder_delta_over_w"] < 1e-12


@pytest.mark.skipif(not can_fork(), reason="the fork path is the default here; spawn is what remains elsewhere")
def test_the_rank_worker_is_importable_so_spawned_ranks_run_it_too() -> None:
    result = A.run_equivalence(steps=2, start_method="spawn")
    for name in EXACT:
        assert result["configs"][name]["max_delta"] < 1e-5


# ---- recipe B ---------------------------------------------------------------------------------------------------


def test_log_log_slope_recovers_the_exponent_of_a_power_law() -> None:
    sizes = [1024, 2048, 4096]
    assert B.log_log_slope(sizes, [3.0 * n**1.5 for n in sizes]) == pytest.approx(1.5)


def test_the_full_loss_grows_as_n_squared_and_the_chunked_loss_as_n(wall: dict) -> None:
    assert wall["sizes"] == [1024, 2048, 4096, 8192]
    assert 1.9 <= wall["slopes"]["full"] <= 2.1  # measured 1.99
    assert 0.9 <= wall["slopes"]["chunked"] <= 1.1  # measured 1.00
    assert wall["ratio"] < 0.15  # measured 0.08
    # the full loss holds about four float32 N × N matrices (logits, two log-softmaxes, a gradient)
    for n, mib in zip(wall["sizes"], wall["full_mib"], strict=True):
        assert 3.5 < mib / (n * n * 4 / B.MIB) < 4.5


def test_the_plot_shows_both_curves_on_log_axes_with_their_slopes(wall: dict) -> None:
    fig = B.plot_memory_wall(wall)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(f"slope {wall['slopes']['full']:.2f}" in label for label in labels)
    assert any(f"slope {wall['slopes']['chunked']:.2f}" in label for label in labels)
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["1k", "2k", "4k", "8k"]


# ---- the launcher -----------------------------------------------------------------------------------------------


def result_line(stdout: str) -> dict:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(launcher.RESULT_PREFIX), stdout[-2000:]
    return json.loads(last.removeprefix(launcher.RESULT_PREFIX))


def test_without_torchrun_the_launcher_trains_one_process_on_the_full_batch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    launcher.main(["--steps", "3", "--cpu", "--save", str(tmp_path / "params.pt")])
    out = capsys.readouterr().out
    record = result_line(out)
    assert record["world_size"] == 1 and record["local_loss"] and record["gather_with_grad"]
    assert out.count("loss ") == 3
    truth = single_process(steps=3)
    assert torch.equal(torch.load(tmp_path / "params.pt"), truth["params"])
    assert record["final_loss"] == pytest.approx(truth["losses"][-1], abs=1e-6)


def test_two_torchrun_processes_train_the_same_model_as_one_process_on_the_full_batch(tmp_path: Path) -> None:
    """The launcher as a user runs it: torchrun, two CPU processes on gloo, a rendezvous on a free port."""
    saved = tmp_path / "params.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "xmodal_ref.scaling.train", "--cpu", "--save", str(saved)]
    env = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    record = result_line(done.stdout)
    assert record["world_size"] == 2 and record["steps"] == A.STEPS
    assert done.stdout.count("loss ") == A.STEPS  # only rank 0 prints
    truth = single_process()
    assert (torch.load(saved) - truth["params"]).abs().max().item() < 1e-5
    assert record["final_loss"] == pytest.approx(truth["losses"][-1], abs=1e-5)

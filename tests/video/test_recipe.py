"""The chapter 08 recipe: its parts, its determinism, and the lesson's targets on one seed."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.data.video import CLASSES, video_splits
from xmodal_ref.video import recipe as R
from xmodal_ref.video.reference import temporal_shift

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def result() -> dict:
    """The full recipe on seed 0 (≈ 10 s on one thread): trained once for the whole module."""
    return R.train_video_models(0, progress=False)


def test_the_encoders_and_the_head_have_the_contract_shapes() -> None:
    video, audio = torch.randn(3, 8, 1, 12, 12), torch.randn(3, 32, 16)
    calls: list[tuple[tuple[int, ...], int, int]] = []

    def recorded_shift(x: torch.Tensor, n_segment: int, fold_div: int) -> torch.Tensor:
        calls.append((tuple(x.shape), n_segment, fold_div))
        return temporal_shift(x, n_segment, fold_div)

    for name, uses_video, shifts, uses_audio in R.MODELS.values():
        calls.clear()
        model = R.ClipClassifier(uses_video, uses_audio, recorded_shift if shifts else None)
        assert model(video, audio).shape == (3, len(CLASSES)), name
        assert calls == ([((24, 8, 12, 12), 8, 4)] if shifts else []), name
    assert R.FrameEncoder()(video).shape == R.SpectrogramEncoder()(audio).shape == (3, R.FEATURES)


def test_frame_averaging_cannot_tell_a_clip_from_its_reversal_but_the_shift_can() -> None:
    torch.manual_seed(0)
    video = torch.randn(2, 8, 1, 12, 12)
    averaged, shifted = R.FrameEncoder(), R.FrameEncoder(temporal_shift)
    torch.testing.assert_close(averaged(video), averaged(video.flip(1)))
    assert not torch.allclose(shifted(video), shifted(video.flip(1)), atol=1e-3)


def test_confusion_matrix_counts_true_rows_against_predicted_columns() -> None:
    labels, predictions = torch.tensor([0, 0, 1, 3, 3, 3]), torch.tensor([0, 2, 1, 3, 3, 1])
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[0, 0] = expected[0, 2] = expected[1, 1] = expected[3, 1] = 1
    expected[3, 3] = 2
    assert torch.equal(R.confusion_matrix(labels, predictions), expected)


def test_the_recipe_is_deterministic_under_its_seed() -> None:
    first, second = (R.train_video_models(1, epochs=1, progress=False) for _ in range(2))
    for model_id in R.MODELS:
        a, b = first["models"][model_id], second["models"][model_id]
        assert a["losses"] == b["losses"]
        assert torch.equal(a["confusion"], b["confusion"])


def test_the_result_reports_every_model(result: dict) -> None:
    assert list(result["models"]) == list(R.MODELS)
    assert result["seed"] == 0 and result["epochs"] == R.EPOCHS
    for model_id, scores in result["models"].items():
        assert scores["name"] == R.MODELS[model_id][0]
        assert scores["confusion"].shape == (4, 4) and scores["confusion"].sum() == 512
        assert scores["accuracy"] == pytest.approx(scores["confusion"].trace().item() / 512)
        assert len(scores["losses"]) == R.EPOCHS * (1024 // R.BATCH_SIZE)
        assert scores["seconds"] > 0
    assert result["seconds"] >= sum(scores["seconds"] for scores in result["models"].values())


def test_the_lesson_holds_on_seed_0(result: dict) -> None:
    """Frame averaging is at chance; video alone finds the direction, audio alone the tone; fused, both."""
    accuracy = {model_id: scores["accuracy"] for model_id, scores in result["models"].items()}
    assert accuracy["frame_avg"] <= 0.35
    assert 0.40 <= accuracy["tsm"] <= 0.62
    assert 0.40 <= accuracy["audio"] <= 0.62
    assert accuracy["tsm_audio"] >= 0.95
    assert accuracy["tsm_audio"] - max(accuracy["tsm"], accuracy["audio"]) >= 0.3
    models = result["models"]
    # Every test clip's time reversal is in the test split: a video model blind to order is right on
    # exactly one clip of each pair, so its direction accuracy is exactly one half.
    assert models["frame_avg"]["direction_accuracy"] == 0.5
    assert models["tsm"]["direction_accuracy"] >= 0.95
    assert models["audio"]["tone_accuracy"] >= 0.95


def test_the_table_and_the_figures(result: dict) -> None:
    table = R.format_video_table({0: result})
    lines = table.splitlines()
    assert len(lines) == 3 and all(name in lines[0] for name, *_ in R.MODELS.values())
    assert lines[2].startswith("| 0 | ") and f"{result['models']['tsm_audio']['accuracy']:.3f}" in lines[2]
    figures = (
        R.plot_clips(video_splits(0, n_train=8, n_test=8)["test"], frames=(0, 3, 7)),
        R.plot_temporal_shift(),
        R.plot_accuracies({0: result}),
        R.plot_confusions(result),
    )
    assert all(isinstance(figure, Figure) for figure in figures)
    assert len(figures[0].axes) == len(CLASSES) * 4


def test_plot_temporal_shift_shows_where_each_value_came_from() -> None:
    after = R.plot_temporal_shift().axes[1].images[0].get_array()  # (C, T): the source frame, 0 for padding
    frames = torch.arange(1, 9, dtype=torch.float64)
    assert after[:2].tolist() == [[*frames[1:].tolist(), 0.0]] * 2  # fold = 8 // 4: the next frame
    assert after[2:4].tolist() == [[0.0, *frames[:-1].tolist()]] * 2  # the previous frame
    assert after[4:].tolist() == [frames.tolist()] * 4

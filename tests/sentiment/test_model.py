"""The chapter 05 sentiment models: shapes, padding invariance, the masked decoder loss, and the recipe."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.data import SentimentFeatures, load_mmsa, write_mmsa_fixture
from xmodal_ref.sentiment import model as sm

TEXT_DIM, AUDIO_DIM = 6, 5


def fake_features(n: int, seed: int, text_steps: int = 7, audio_steps: int = 9) -> SentimentFeatures:
    """MOSI-like: random sequences zero-padded after their lengths, a multimodal label only."""
    g = torch.Generator().manual_seed(seed)
    text_lengths = torch.randint(1, text_steps + 1, (n,), generator=g)
    audio_lengths = torch.randint(1, audio_steps + 1, (n,), generator=g)
    text = torch.randn(n, text_steps, TEXT_DIM, generator=g)
    audio = torch.randn(n, audio_steps, AUDIO_DIM, generator=g)
    text *= (torch.arange(text_steps) < text_lengths[:, None])[..., None]
    audio *= (torch.arange(audio_steps) < audio_lengths[:, None])[..., None]
    label = (6 * torch.rand(n, generator=g) - 3).round(decimals=1)
    return SentimentFeatures(text, text_lengths, audio, audio_lengths, label)


def tiny_splits() -> dict[str, SentimentFeatures]:
    return {"train": fake_features(24, seed=6), "valid": fake_features(8, seed=7), "test": fake_features(10, seed=8)}


def all_models() -> dict[str, torch.nn.Module]:
    """One fresh model per variant, in eval mode, inputs scaled with a fake training split's statistics."""
    torch.manual_seed(0)
    models = {
        name: sm.build_model(name, TEXT_DIM, AUDIO_DIM, hidden=16) for name in sm.VARIANTS if name != sm.LATE_FUSION
    }
    for model in models.values():
        model.fit_scaling(fake_features(32, seed=1))
    models[sm.LATE_FUSION] = sm.LateFusion(models[sm.TEXT_ONLY], models[sm.AUDIO_ONLY])
    return {name: model.eval() for name, model in models.items()}


def pad(batch: SentimentFeatures, extra: int, garbage: bool) -> SentimentFeatures:
    """The same batch with ``extra`` more padded steps, and everything after the lengths set to noise if garbage."""

    def widen(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pad(x, (0, 0, 0, extra))  # (B, L + extra, D)
        if garbage:
            padded = torch.arange(x.shape[1]) >= lengths[:, None]  # (B, L + extra)
            x = torch.where(padded[..., None], 100 * torch.randn_like(x), x)
        return x

    return dataclasses.replace(
        batch, text=widen(batch.text, batch.text_lengths), audio=widen(batch.audio, batch.audio_lengths)
    )


def test_every_variant_predicts_one_bounded_score_per_sample() -> None:
    batch = fake_features(5, seed=2)
    for name, model in all_models().items():
        prediction = model(batch)
        assert prediction.shape == (5,), name
        assert prediction.abs().max() <= 3, name


def test_multi_task_heads_losses_and_decoder_shapes() -> None:
    batch = fake_features(5, seed=2)
    with_decoder = sm.MultiTaskSentimentModel(TEXT_DIM, AUDIO_DIM, hidden=16)
    without = sm.MultiTaskSentimentModel(TEXT_DIM, AUDIO_DIM, hidden=16, decoder=False)
    assert {key: value.shape for key, value in with_decoder.heads(batch).items()} == {
        "text": (5,),
        "audio": (5,),
        "multimodal": (5,),
    }
    assert with_decoder.decode_audio(batch).shape == batch.audio.shape
    assert with_decoder.task_losses(batch).shape == (4,)
    assert without.task_losses(batch).shape == (3,)
    assert with_decoder.objective(batch).shape == ()
    with pytest.raises(ValueError):
        without.decode_audio(batch)


@pytest.mark.parametrize("garbage", [False, True])
def test_outputs_ignore_padding(garbage: bool) -> None:
    batch = fake_features(6, seed=3)
    padded = pad(batch, extra=4, garbage=garbage)
    for name, model in all_models().items():
        with torch.no_grad():
            assert torch.allclose(model(batch), model(padded), atol=1e-5), name
            if isinstance(model, sm.MultiTaskSentimentModel):
                for head, value in model.heads(batch).items():
                    assert torch.allclose(value, model.heads(padded)[head], atol=1e-5), (name, head)
                assert torch.allclose(model.task_losses(batch), model.task_losses(padded), atol=1e-5), name


def test_reconstruction_loss_ignores_padded_steps() -> None:
    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([3, 1, 5])
    decoded = torch.randn(3, 5, 2, generator=g, requires_grad=True)
    target = torch.randn(3, 5, 2, generator=g)
    padded = torch.arange(5)[None, :] >= lengths[:, None]  # (B, L)
    noisy_decoded = torch.where(padded[..., None], 1e3 * torch.randn(3, 5, 2, generator=g), decoded)
    noisy_target = torch.where(padded[..., None], torch.full_like(target, float("nan")), target)
    loss = sm.reconstruction_loss(decoded, target, lengths)
    assert torch.allclose(loss, sm.reconstruction_loss(noisy_decoded, noisy_target, lengths))
    expected = torch.stack([((decoded[b, :n] - target[b, :n]) ** 2).mean() for b, n in enumerate(lengths)]).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert (decoded.grad[padded] == 0).all()
    extended = sm.reconstruction_loss(
        torch.nn.functional.pad(decoded, (0, 0, 0, 3)), torch.nn.functional.pad(target, (0, 0, 0, 3)), lengths
    )
    assert torch.allclose(loss, extended)


def test_late_fusion_fit_recovers_an_affine_combination() -> None:
    models = all_models()
    fusion = models[sm.LATE_FUSION]
    features = fake_features(40, seed=5)
    with torch.no_grad():
        unimodal = fusion.unimodal_predictions(features)  # (N, 2)
    target = 0.3 * unimodal[:, 0] + 0.6 * unimodal[:, 1] - 0.1
    fusion.fit(dataclasses.replace(features, label=target))
    assert torch.allclose(fusion.combine.weight, torch.tensor([[0.3, 0.6]]), atol=1e-4)
    assert torch.allclose(fusion.combine.bias, torch.tensor([-0.1]), atol=1e-4)


VARIANT_KEYS = {"test", "conflict", "predictions", "parameters", "model", "curves", "seconds"}


def check_result(result: dict, test_size: int, epochs: int, conflict: bool) -> None:
    assert set(result) == {"variants", "labels", "conflict", "seconds", "seed", "epochs"}
    assert list(result["variants"]) == list(sm.VARIANTS)
    assert result["labels"].shape == (test_size,)
    assert (result["conflict"] is not None) == conflict
    for name, run in result["variants"].items():
        assert set(run) == VARIANT_KEYS, name
        assert set(run["test"]) == {"has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc7", "mae", "corr"}
        assert (run["conflict"] is not None) == conflict, name
        assert run["predictions"].shape == (test_size,)
        assert run["parameters"] > 0 and run["seconds"] >= 0
        if name != sm.LATE_FUSION:
            assert len(run["curves"]["train_loss"]) == len(run["curves"]["valid_mae"]) == epochs
    assert result["variants"][sm.LATE_FUSION]["curves"] == {}
    table = sm.format_results_table(result)
    assert all(name in table for name in sm.VARIANTS)
    assert isinstance(sm.plot_training_curves(result), Figure)
    assert isinstance(sm.plot_confusion_matrices(result), Figure)
    assert isinstance(sm.plot_confusion_matrices(result, classes=2), Figure)


def test_train_runs_without_unimodal_labels_or_conflict_subset_and_is_deterministic() -> None:
    features = tiny_splits()
    result = sm.train(features, seed=0, epochs=2, device="cpu", progress=False)
    check_result(result, test_size=10, epochs=2, conflict=False)
    with pytest.raises(ValueError):
        sm.plot_confusion_matrices(result, split="conflict")
    again = sm.train(features, seed=0, epochs=2, device="cpu", progress=False, variants=[sm.MULTI_TASK])
    assert list(again["variants"]) == [sm.MULTI_TASK]
    first, second = (r["variants"][sm.MULTI_TASK]["predictions"] for r in (result, again))
    assert torch.equal(first, second)


def test_train_reports_the_conflict_subset_when_marked() -> None:
    features = tiny_splits()
    test = features["test"]
    features["test"] = dataclasses.replace(test, conflict=torch.arange(10) % 3 == 0, label_text=test.label)
    result = sm.train(features, seed=0, epochs=1, device="cpu", progress=False)
    check_result(result, test_size=10, epochs=1, conflict=True)
    assert isinstance(sm.plot_confusion_matrices(result, split="conflict"), Figure)


@pytest.mark.parametrize("unimodal_labels", [False, True])
def test_train_runs_unchanged_on_mmsa_layout(tmp_path, unimodal_labels: bool) -> None:
    path = tmp_path / "fixture.pkl"
    write_mmsa_fixture(path, n_per_split=12, unimodal_labels=unimodal_labels)
    result = sm.train(load_mmsa(path), seed=0, epochs=1, device="cpu", progress=False)
    check_result(result, test_size=12, epochs=1, conflict=False)

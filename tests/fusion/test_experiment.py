"""The chapter 01 fusion recipe: model contracts, missing modalities, determinism, and the result on real data."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.data import SentimentFeatures
from xmodal_ref.fusion import experiment as fx

TEXT_DIM, AUDIO_DIM = 6, 5
ROW_KEYS = {
    "fusion",
    "dropout_p",
    "acc2",
    "mae",
    "conflict_acc2",
    "text_missing_acc2",
    "audio_missing_acc2",
    "parameters",
    "epoch_seconds",
    "train_loss",
    "model",
}


def fake_features(n: int, seed: int, text_steps: int = 7, audio_steps: int = 9) -> SentimentFeatures:
    """Random sequences zero-padded after their lengths, a multimodal label only (as MOSI has)."""
    g = torch.Generator().manual_seed(seed)
    text_lengths = torch.randint(1, text_steps + 1, (n,), generator=g)
    audio_lengths = torch.randint(1, audio_steps + 1, (n,), generator=g)
    text = torch.randn(n, text_steps, TEXT_DIM, generator=g)
    text *= (torch.arange(text_steps) < text_lengths[:, None])[..., None]
    audio = torch.randn(n, audio_steps, AUDIO_DIM, generator=g)
    audio *= (torch.arange(audio_steps) < audio_lengths[:, None])[..., None]
    label = (6 * torch.rand(n, generator=g) - 3).round(decimals=1)
    return SentimentFeatures(text, text_lengths, audio, audio_lengths, label)


def all_models(dropout_p: float = 0.0) -> dict[str, fx.FusionModel]:
    """One fresh model per fusion, in eval mode, inputs scaled with a fake training split's statistics."""
    torch.manual_seed(0)
    models = {fusion: fx.FusionModel(fusion, TEXT_DIM, AUDIO_DIM, dropout_p=dropout_p) for fusion in fx.FUSIONS}
    for model in models.values():
        model.fit_scaling(fake_features(32, seed=1))
    return {fusion: model.eval() for fusion, model in models.items()}


def test_every_fusion_predicts_one_bounded_score_per_sample_with_or_without_a_modality() -> None:
    batch = fake_features(5, seed=2)
    for fusion, model in all_models().items():
        for missing in ((), ["text"], ["audio"]):
            prediction = model(batch, missing=missing)
            assert prediction.shape == (5,), (fusion, missing)
            assert prediction.abs().max() < 3, (fusion, missing)


def test_outputs_ignore_padding() -> None:
    batch = fake_features(6, seed=3)

    def widen(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pad(x, (0, 0, 0, 4))  # (B, L + 4, D)
        padded = torch.arange(x.shape[1]) >= lengths[:, None]  # (B, L + 4)
        return torch.where(padded[..., None], 100 * torch.randn_like(x), x)

    noisy = dataclasses.replace(
        batch, text=widen(batch.text, batch.text_lengths), audio=widen(batch.audio, batch.audio_lengths)
    )
    for fusion, model in all_models().items():
        with torch.no_grad():
            assert torch.allclose(model(batch), model(noisy), atol=1e-5), fusion


def test_a_missing_modality_is_a_zero_embedding_whatever_its_input() -> None:
    batch = fake_features(6, seed=4)
    other = fake_features(6, seed=5)
    for fusion, model in all_models().items():
        with torch.no_grad():
            z_text, z_audio = model.embed(batch)
            without_text = model(batch, missing=["text"])
            assert torch.allclose(without_text, model.fusion([torch.zeros_like(z_text), z_audio])), fusion
            swapped_text = dataclasses.replace(batch, text=other.text, text_lengths=other.text_lengths)
            assert torch.equal(without_text, model(swapped_text, missing=["text"])), fusion
            swapped_audio = dataclasses.replace(batch, audio=other.audio, audio_lengths=other.audio_lengths)
            assert torch.equal(model(batch, missing=["audio"]), model(swapped_audio, missing=["audio"])), fusion
            assert not torch.allclose(model(batch), without_text), fusion


def test_modality_dropout_acts_in_training_only() -> None:
    batch = fake_features(64, seed=6)
    for fusion, model in all_models(dropout_p=0.5).items():
        with torch.no_grad():
            evaluated = model(batch)
            assert torch.equal(evaluated, model(batch)), fusion
            model.train()
            assert not torch.allclose(model(batch), evaluated), fusion
            model.dropout_p = 0.0
            assert torch.allclose(model(batch), evaluated), fusion


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        fx.FusionModel("attention", TEXT_DIM, AUDIO_DIM)
    model = all_models()[fx.EARLY]
    with pytest.raises(ValueError, match="unknown modalities"):
        model(fake_features(2, seed=0), missing=["video"])
    with pytest.raises(ValueError, match="unknown fusions"):
        fx.run_fusion_comparison(features={}, fusions=["attention"], progress=False)


def test_unimodal_label_acc2() -> None:
    features = fake_features(20, seed=7)
    assert fx.unimodal_label_acc2(features) is None
    flipped = dataclasses.replace(features, label_text=features.label, label_audio=-features.label)
    assert fx.unimodal_label_acc2(flipped) == {"text": 1.0, "audio": 0.0}


def test_comparison_on_tiny_data_is_complete_and_deterministic() -> None:
    splits = {"train": fake_features(24, seed=8), "test": fake_features(12, seed=9)}
    result = fx.run_fusion_comparison(seed=3, epochs=2, progress=False, device="cpu", features=splits)
    assert set(result) == {"rows", "fusions", "dropout_p", "references", "seed", "epochs", "seconds"}
    assert result["references"] is None
    assert [(row["fusion"], row["dropout_p"]) for row in result["rows"]] == [
        (fusion, p) for fusion in fx.FUSIONS for p in (0.0, fx.DROPOUT_P)
    ]
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        assert row["conflict_acc2"] is None
        assert len(row["train_loss"]) == 2
        assert row["parameters"] > 0 and row["epoch_seconds"] > 0
        assert all(0 <= row[key] <= 1 for key in ("acc2", "text_missing_acc2", "audio_missing_acc2"))
    parameters = {row["fusion"]: row["parameters"] for row in result["rows"]}
    assert parameters[fx.TFN] > parameters[fx.LMF] > parameters[fx.EARLY]

    table = fx.format_fusion_table(result)
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + len(result["rows"])  # header, rows
    assert all(f"| {fusion} |" in table for fusion in fx.FUSIONS)
    assert isinstance(fx.plot_fusion_comparison(result), Figure)

    again = fx.run_fusion_comparison(seed=3, epochs=2, progress=False, device="cpu", features=splits, fusions=[fx.GMU])
    first = [row for row in result["rows"] if row["fusion"] == fx.GMU]
    for one, two in zip(first, again["rows"], strict=True):
        assert one["train_loss"] == two["train_loss"]
        assert one["acc2"] == two["acc2"] and one["mae"] == two["mae"]


def test_on_the_corpus_late_fusion_trails_tensor_fusion_on_the_conflict_subset() -> None:
    """The recipe's main finding on a two-fusion run of the real corpus (about 10 s)."""
    result = fx.run_fusion_comparison(seed=0, progress=False, device="cpu", fusions=[fx.LATE, fx.TFN])
    rows = {(row["fusion"], row["dropout_p"]): row for row in result["rows"]}
    late, tfn = rows[fx.LATE, 0.0], rows[fx.TFN, 0.0]
    assert tfn["acc2"] > 0.9
    assert tfn["conflict_acc2"] > late["conflict_acc2"] + 0.1
    references = result["references"]
    for row in (rows[fx.LATE, fx.DROPOUT_P], rows[fx.TFN, fx.DROPOUT_P]):  # near what one modality allows
        assert row["text_missing_acc2"] > references["audio"] - 0.05
        assert row["audio_missing_acc2"] > references["text"] - 0.05
    assert isinstance(fx.plot_fusion_comparison(result), Figure)

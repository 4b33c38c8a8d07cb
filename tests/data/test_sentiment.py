"""The synthetic sentiment corpus (its rules and the conflict property), its features, and the MMSA loader."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from xmodal_ref.data import corpus_features, load_mmsa, make_sentiment_corpus, sentiment_splits, write_mmsa_fixture
from xmodal_ref.data import sentiment as S

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def corpus() -> S.SentimentCorpus:
    return make_sentiment_corpus(1000, seed=11)


@pytest.fixture(scope="module")
def features(corpus: S.SentimentCorpus):
    return corpus_features(corpus)


def _take(corpus: S.SentimentCorpus, index: torch.Tensor) -> S.SentimentCorpus:
    """The samples at ``index`` as a corpus of their own."""
    picked = {name: getattr(corpus, name)[index] for name in ("tokens", "text_lengths", "waveforms", "audio_lengths")}
    labels = {name: getattr(corpus, name)[index] for name in ("label", "label_text", "label_audio", "conflict")}
    sentences = [corpus.sentences[i] for i in index.tolist()]
    return dataclasses.replace(corpus, **picked, **labels, rise_fall=corpus.rise_fall[index], sentences=sentences)


def test_the_corpus_is_deterministic_under_its_seed_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, second, other = (make_sentiment_corpus(40, seed) for seed in (5, 5, 6))
    assert torch.equal(torch.random.get_rng_state(), state)
    for field in dataclasses.fields(first):
        a, b = getattr(first, field.name), getattr(second, field.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    assert first.sentences != other.sentences
    assert not torch.equal(first.waveforms, other.waveforms)


def test_splits_come_from_different_seeds() -> None:
    splits = sentiment_splits(seed=1, n_train=30, n_valid=10, n_test=20)
    assert {name: len(c) for name, c in splits.items()} == {"train": 30, "valid": 10, "test": 20}
    assert torch.equal(splits["valid"].waveforms, make_sentiment_corpus(10, seed=4).waveforms)
    assert not torch.equal(splits["train"].waveforms[:10], splits["valid"].waveforms)


def test_shapes_dtypes_padding_and_ranges(corpus: S.SentimentCorpus) -> None:
    n = len(corpus)
    assert corpus.tokens.shape == (n, S.MAX_TOKENS) and corpus.tokens.dtype == torch.int64
    assert corpus.waveforms.shape == (n, S.MAX_SAMPLES) and corpus.waveforms.dtype == torch.float32
    steps = torch.arange(S.MAX_TOKENS)[None, :]
    assert ((corpus.tokens != 0) == (steps < corpus.text_lengths[:, None])).all()
    samples = torch.arange(S.MAX_SAMPLES)[None, :]
    assert (corpus.waveforms[samples >= corpus.audio_lengths[:, None]] == 0).all()
    assert corpus.audio_lengths.min() >= S.MIN_SECONDS * S.SAMPLE_RATE
    assert corpus.audio_lengths.max() <= S.MAX_SECONDS * S.SAMPLE_RATE
    assert corpus.waveforms.abs().max() < 1.0
    for label in (corpus.label, corpus.label_text, corpus.label_audio):
        assert label.shape == (n,) and label.dtype == torch.float32
        assert label.abs().max() <= 3.0
    assert corpus.conflict.dtype == torch.bool and corpus.rise_fall.dtype == torch.bool
    rows = zip(corpus.tokens.tolist(), corpus.text_lengths.tolist(), strict=True)
    assert [" ".join(corpus.vocab[i] for i in row[:length]) for row, length in rows] == corpus.sentences


@pytest.mark.parametrize(
    ("sentence", "valence"),
    [
        ("the movie was good", 1.0),
        ("the movie was not very good", -0.75),
        ("um the food is never terrible today", 1.0),
        ("this game felt extremely awful", -3.0),
        ("that trip was slightly great and the room is lovely", 2.25),
        ("well the film is really long", 0.0),
    ],
)
def test_the_lexicon_rule(sentence: str, valence: float) -> None:
    assert S.sentence_valence(sentence) == pytest.approx(valence)


def test_labels_follow_the_documented_rules(corpus: S.SentimentCorpus) -> None:
    assert corpus.label_text.tolist() == pytest.approx([S.sentence_valence(s) for s in corpus.sentences])
    t, a, rise_fall = corpus.label_text.tolist(), corpus.label_audio.tolist(), corpus.rise_fall.tolist()
    for i in range(len(corpus)):
        conflict = t[i] * a[i] < 0
        expected = (a[i] if rise_fall[i] else t[i]) if conflict else (t[i] + a[i]) / 2
        assert corpus.conflict[i].item() == conflict
        assert corpus.label[i].item() == pytest.approx(expected)
    assert corpus.label_audio.abs().min() >= 0.6 - 1e-5  # every tone has a clear sign


def test_conflict_fraction_and_the_sarcasm_cue(corpus: S.SentimentCorpus) -> None:
    assert 0.22 <= corpus.conflict.float().mean() <= 0.32
    assert 0.4 <= corpus.rise_fall[corpus.conflict].float().mean() <= 0.6


def test_on_the_conflict_subset_each_modality_alone_is_near_chance_and_both_are_exact(
    corpus: S.SentimentCorpus,
) -> None:
    sign = torch.sign(corpus.label)
    conflict = corpus.conflict

    def best_rule_accuracy(cells: torch.Tensor) -> float:
        """Accuracy on the conflict subset of the majority sign per cell, fitted on the whole corpus."""
        guess = torch.empty_like(sign)
        for cell in cells.unique(dim=0):
            members = (cells == cell).all(dim=1)
            guess[members] = 1.0 if (sign[members] > 0).float().mean() >= 0.5 else -1.0
        return (guess[conflict] == sign[conflict]).float().mean().item()

    text_cells = torch.sign(corpus.label_text)[:, None]
    audio_cells = torch.stack([torch.sign(corpus.label_audio), corpus.rise_fall.float()], dim=1)
    for cells in (text_cells, audio_cells):
        assert 0.4 <= best_rule_accuracy(cells) <= 0.6
    for unimodal in (corpus.label_text, corpus.label_audio):
        assert 0.4 <= (torch.sign(unimodal) == sign)[conflict].float().mean() <= 0.6
    both = torch.cat([text_cells, audio_cells], dim=1)
    assert best_rule_accuracy(both) == 1.0
    assert (both[:, 0] == sign)[~conflict & (corpus.label_text != 0)].all()  # agreeing words give the sign


def test_features_shapes_lengths_and_zero_padding(corpus: S.SentimentCorpus, features) -> None:
    n = len(corpus)
    frames = 1 + S.MAX_SAMPLES // 160
    assert features.text.shape == (n, S.MAX_TOKENS, S.WORD_DIM)
    assert features.audio.shape == (n, -(-frames // 4), 40)
    assert features.text.dtype == features.audio.dtype == torch.float32
    assert torch.equal(features.text, S.WORD_VECTORS[corpus.tokens])
    assert torch.equal(features.audio_lengths, -(-(1 + corpus.audio_lengths // 160) // 4))
    for x, lengths in ((features.text, features.text_lengths), (features.audio, features.audio_lengths)):
        real = torch.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, L)
        assert (x[~real] == 0).all()
        assert (x[real].abs().sum(dim=-1) > 0).all()
    real_audio = torch.arange(features.audio.shape[1])[None, :] < features.audio_lengths[:, None]
    assert features.audio[real_audio].mean().abs() < 0.5 and 0.5 < features.audio[real_audio].std() < 2
    for name in ("label", "label_text", "label_audio", "conflict"):
        assert torch.equal(getattr(features, name), getattr(corpus, name))


def test_features_of_a_sample_do_not_depend_on_the_batch(corpus: S.SentimentCorpus, features) -> None:
    index = torch.tensor([3, 500, 999])
    alone = corpus_features(_take(corpus, index))
    assert torch.allclose(alone.audio, features.audio[index], atol=1e-5)
    other = corpus_features(_take(corpus, index), n_mels=80, frames_per_step=1)
    assert other.audio.shape == (3, 1 + S.MAX_SAMPLES // 160, 80)
    assert torch.equal(other.audio_lengths, 1 + corpus.audio_lengths[index] // 160)


# MMSA feature pickles


def _read(path) -> dict:
    with open(path, "rb") as file:
        return pickle.load(file)


def _write(path, data: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(data, file)


def test_a_ch_sims_style_fixture_round_trips(tmp_path) -> None:
    path = tmp_path / "sims.pkl"
    write_mmsa_fixture(path, n_per_split=6, seed=2)
    raw, loaded = _read(path), load_mmsa(path)
    assert set(loaded) == {"train", "valid", "test"}
    for split, features in loaded.items():
        stored = raw[split]
        assert features.text.shape == stored["text"].shape and features.audio.shape == stored["audio"].shape
        assert torch.equal(features.text, torch.from_numpy(stored["text"]))
        assert torch.equal(features.text_lengths, torch.from_numpy(stored["text_bert"][:, 1].sum(axis=1)))
        assert torch.equal(features.audio_lengths, torch.from_numpy(stored["audio_lengths"]))
        assert torch.equal(features.label, torch.from_numpy(stored["regression_labels"]))
        assert torch.equal(features.label_text, torch.from_numpy(stored["regression_labels_T"]))
        assert torch.equal(features.label_audio, torch.from_numpy(stored["regression_labels_A"]))
        assert features.conflict is None and features.label.abs().max() <= 1.0
        assert features.text_lengths.dtype == features.audio_lengths.dtype == torch.int64


def test_a_mosi_style_aligned_fixture_has_no_unimodal_labels(tmp_path) -> None:
    path = tmp_path / "mosi.pkl"
    write_mmsa_fixture(path, n_per_split=5, unimodal_labels=False, aligned=True)
    raw = _read(path)["test"]
    assert "audio_lengths" not in raw and "regression_labels_T" not in raw
    test = load_mmsa(path)["test"]
    assert test.label_text is None and test.label_audio is None
    assert torch.equal(test.audio_lengths, test.text_lengths)  # word-aligned: same real steps


def test_start_padding_non_finite_values_and_long_lengths_are_normalised(tmp_path) -> None:
    path = tmp_path / "messy.pkl"
    write_mmsa_fixture(path, n_per_split=4, unimodal_labels=False)
    clean = load_mmsa(path)["train"]
    data = _read(path)
    train = data["train"]
    for i, length in enumerate(train["text_bert"][:, 1].sum(axis=1)):  # move the padding to the start
        train["text"][i] = np.roll(train["text"][i], train["text"].shape[1] - length, axis=0)
    train["audio"][0, 0, 0], train["audio"][1, 0, 1] = -np.inf, np.nan
    train["audio_lengths"][2] = 10_000
    _write(path, data)
    messy = load_mmsa(path)["train"]
    assert torch.equal(messy.text, clean.text) and torch.equal(messy.text_lengths, clean.text_lengths)
    assert torch.isfinite(messy.audio).all() and messy.audio[0, 0, 0] == 0 and messy.audio[1, 0, 1] == 0
    assert messy.audio_lengths[2] == messy.audio.shape[1]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data.pop("valid"), "missing split"),
        (lambda data: data["test"].pop("audio"), "has no 'audio'"),
        (lambda data: data["train"].pop("regression_labels"), "has no 'regression_labels'"),
        (lambda data: data["train"].update(audio=data["train"]["audio"][:, :, 0]), r"must be \(N, L, D\)"),
        (lambda data: data["train"].update(text=data["train"]["text_bert"]), "BERT token ids"),
        (lambda data: data["train"].update(regression_labels=np.zeros(2)), "2 values for 3 samples"),
        (lambda data: data["valid"].update(audio=data["valid"]["audio"][:2]), "text has 3 samples but audio has 2"),
    ],
)
def test_bad_input_raises_a_one_line_value_error(tmp_path, damage, message: str) -> None:
    path = tmp_path / "bad.pkl"
    write_mmsa_fixture(path, n_per_split=3)
    data = _read(path)
    damage(data)
    _write(path, data)
    with pytest.raises(ValueError, match=message) as error:
        load_mmsa(path)
    assert "\n" not in str(error.value)


def test_a_pickle_that_is_not_a_dict_of_splits_is_refused(tmp_path) -> None:
    path = tmp_path / "list.pkl"
    _write(path, [1, 2, 3])
    with pytest.raises(ValueError, match="expected a dict"):
        load_mmsa(path)

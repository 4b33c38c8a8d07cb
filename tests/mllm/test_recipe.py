"""The chapter 09 recipe (a tiny LLaVA): its parts' contracts, its determinism, and the lesson's targets on one seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.data import COLOURS, POSITIONS, SHAPES, make_shapes_captions
from xmodal_ref.mllm import recipe as R
from xmodal_ref.mllm.reference import (
    CachedSelfAttention,
    MlpProjector,
    causal_lm_loss,
    merge_image_features,
    pixel_shuffle_tokens,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def encoder() -> R.VisionEncoder:
    """The frozen encoder (≈ 4 s of pretraining), shared by every recipe run of the module."""
    return R.train_vision_encoder(progress=False)["encoder"]


@pytest.fixture(scope="module")
def result(encoder: R.VisionEncoder) -> dict:
    """The full recipe on seed 0 (≈ 8 s on one thread): trained once for the whole module."""
    return R.train_tiny_llava(0, encoder=encoder, progress=False)


def test_the_vocabulary_holds_the_special_tokens_and_every_word_once() -> None:
    assert R.VOCAB[:3] == ("<pad>", "<image>", "<eos>") and (R.PAD_ID, R.IMAGE_ID, R.EOS_ID) == (0, 1, 2)
    assert len(R.VOCAB) == len(set(R.VOCAB)) == 25
    words = {w for question, _ in R.QUESTIONS.values() for w in question.split()}
    words |= {w for name in COLOURS + SHAPES + POSITIONS for w in name.split()}
    assert set(R.VOCAB[3:]) == words
    assert [answers for _, answers in R.QUESTIONS.values()] == [COLOURS, SHAPES, POSITIONS]


def test_each_row_is_placeholders_question_answer_eos_and_only_the_answer_is_labelled() -> None:
    n, visual_tokens = 300, 4
    data = R.make_shapes_questions(n, seed=5, visual_tokens=visual_tokens)
    shapes = make_shapes_captions(n, seed=5)
    assert torch.equal(data.images, shapes.images)
    for i in range(n):
        t = int(data.question_types[i])
        question, answers = R.QUESTIONS[R.QUESTION_TYPES[t]]
        assert data.questions[i] == question and data.answers[i] == answers[shapes.attributes[i, t]]
        ids = data.input_ids[i][data.attention_mask[i]].tolist()
        start = int(data.answer_start[i])
        assert ids[:visual_tokens] == [R.IMAGE_ID] * visual_tokens and ids[-1] == R.EOS_ID
        assert " ".join(R.VOCAB[j] for j in ids[visual_tokens:start]) == question
        assert R.decode_answer(ids[start:]) == data.answers[i]
    assert data.attention_mask.sum(dim=1).tolist() == [len(ids) for ids in _real_rows(data)]
    assert (data.input_ids[~data.attention_mask] == R.PAD_ID).all()
    # Question types are uniform and drawn apart from the images' own draws (not in lockstep with the colours).
    assert torch.bincount(data.question_types, minlength=3).min() >= 80
    assert not torch.equal(data.question_types, shapes.attributes[:, 0] % 3)
    assert torch.equal(R.make_shapes_questions(n, seed=5).input_ids, data.input_ids)

    embedding = torch.nn.Embedding(len(R.VOCAB), 8)
    features = torch.randn(n, visual_tokens, 8)
    _, labels = merge_image_features(
        data.input_ids, features, embedding, R.IMAGE_ID, data.answer_start, data.attention_mask
    )
    supervised = labels != -100
    answer_and_eos = (torch.arange(data.input_ids.shape[1]) >= data.answer_start[:, None]) & data.attention_mask
    assert torch.equal(supervised, answer_and_eos)


def _real_rows(data: R.ShapesQuestions) -> list[list[int]]:
    return [row[: row.index(R.EOS_ID) + 1] for row in data.input_ids.tolist()]


def test_decode_answer_stops_at_the_first_eos() -> None:
    top, left, red = (R.VOCAB.index(w) for w in ("top", "left", "red"))
    assert R.decode_answer([top, left, R.EOS_ID]) == "top left"
    assert R.decode_answer([red, R.EOS_ID, red]) == "red"
    assert R.decode_answer([R.EOS_ID, red]) == ""
    assert R.decode_answer([red, red, red]) == "red red red"


def test_majority_answers_counts_each_question_type_apart() -> None:
    data = R.make_shapes_questions(400, seed=3)
    majority = R.majority_answers(data)
    types = data.question_types.tolist()
    for t, name in enumerate(R.QUESTION_TYPES):
        answers = [a for a, q in zip(data.answers, types, strict=True) if q == t]
        assert majority[name] in R.QUESTIONS[name][1]
        assert answers.count(majority[name]) == max(answers.count(a) for a in set(answers))


def test_the_encoder_returns_vit_style_hidden_states_and_the_shuffle_keeps_that_layout() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    hidden_states = R.VisionEncoder().eval()(images)
    assert len(hidden_states) == 3 and all(h.shape == (2, 17, 32) for h in hidden_states)
    for h in hidden_states:
        torch.testing.assert_close(h[:, 0], h[:, 1:].mean(dim=1))
    shuffled = R.shuffle_hidden_states(hidden_states, 2, pixel_shuffle_tokens)
    assert all(h.shape == (2, 5, 128) for h in shuffled)
    penultimate = hidden_states[-2]
    # Visual token 0 is the top-left 2 × 2 block of the 4 × 4 grid: patches 0, 1, 4, 5, concatenated.
    assert torch.equal(shuffled[-2][:, 1], penultimate[:, [1 + 0, 1 + 1, 1 + 4, 1 + 5]].flatten(1))
    torch.testing.assert_close(shuffled[-2][:, 0], shuffled[-2][:, 1:].mean(dim=1))
    unshuffled = R.shuffle_hidden_states(hidden_states, 1, pixel_shuffle_tokens)
    for a, b in zip(unshuffled, hidden_states, strict=True):  # scale 1: the same tokens, the CLS recomputed
        assert torch.equal(a[:, 1:], b[:, 1:])
        torch.testing.assert_close(a[:, 0], b[:, 0])


def test_greedy_decoding_with_the_kv_cache_equals_decoding_without_it() -> None:
    torch.manual_seed(0)
    model = R.TinyLlava(vision_dim=12).eval()
    prompt = torch.randn(3, 7, R.DIM)
    generated = model.generate(prompt, 4)
    assert generated.shape == (3, 4)
    sequence = prompt
    with torch.no_grad():
        for step in range(4):
            logits, caches = model(sequence)  # the whole sequence again, no cache
            assert torch.equal(logits[:, -1].argmax(dim=-1), generated[:, step])
            assert [k.shape[2] for k, _ in caches] == [sequence.shape[1]] * R.LAYERS
            sequence = torch.cat([sequence, model.embed_tokens(generated[:, step : step + 1])], dim=1)


def test_the_recipe_runs_on_the_exercises_it_is_given_and_is_deterministic(encoder: R.VisionEncoder) -> None:
    calls = {"loss": 0, "merge": 0, "shuffle": set(), "projector": 0, "attention": 0}

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls["loss"] += 1
        return causal_lm_loss(logits, labels)

    def merge(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls["merge"] += 1
        return merge_image_features(*args)

    def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
        calls["shuffle"].add(scale)
        return pixel_shuffle_tokens(x, scale)

    class Projector(MlpProjector):
        def forward(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
            calls["projector"] += 1
            return super().forward(hidden_states)

    class Attention(CachedSelfAttention):
        def forward(
            self, x: torch.Tensor, past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None
        ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            calls["attention"] += 1
            return super().forward(x, past_key_value)

    exercises = {"projector": Projector, "attention": Attention, "merge": merge, "loss_fn": loss_fn}
    first = R.train_tiny_llava(1, **exercises, pixel_shuffle=pixel_shuffle, encoder=encoder, epochs=1, progress=False)
    steps = R.N_TRAIN // R.BATCH_SIZE
    assert calls["loss"] == steps and calls["shuffle"] == {R.SHUFFLE_SCALE}
    # Training, then decoding each of 3 question types, with the image and zeroed: a merge per prompt batch.
    assert calls["merge"] == steps + 2 * 3 and calls["projector"] == steps + 2 * 3
    assert calls["attention"] == R.LAYERS * (steps + 2 * 3 * (R.MAX_ANSWER_TOKENS + 1))
    second = R.train_tiny_llava(1, encoder=encoder, epochs=1, progress=False)
    assert first["losses"] == second["losses"] and len(first["losses"]) == steps
    assert first["examples"]["predictions"] == second["examples"]["predictions"]
    assert first["accuracy"] == second["accuracy"] and first["zeroed_accuracy"] == second["zeroed_accuracy"]


def test_the_lesson_holds_on_seed_0(result: dict) -> None:
    """With the image the answers are nearly all right; without it, the model falls back on the language prior."""
    assert result["seed"] == 0 and result["visual_tokens"] == 4
    assert len(result["losses"]) == R.EPOCHS * (R.N_TRAIN // R.BATCH_SIZE)
    assert result["accuracy"] >= 0.85
    assert result["zeroed_accuracy"] <= result["majority_accuracy"] + 0.05
    assert 0.15 <= result["majority_accuracy"] <= 0.35  # 1/6, 1/4 and 1/4 plus sampling noise
    assert result["losses"][-1] < 0.25 * result["losses"][0]
    for kind in ("image", "zeroed", "majority"):
        assert set(result["per_type"][kind]) == set(R.QUESTION_TYPES)
    assert set(result["majority_answers"]) == set(R.QUESTION_TYPES)
    assert result["encoder_seconds"] == 0.0 and result["seconds"] >= result["train_seconds"] > 0


def test_the_answer_figure_shows_one_batch_of_test_images(result: dict) -> None:
    examples = result["examples"]
    assert examples["images"].shape == (R.EXAMPLES, 3, 32, 32)
    assert all(len(examples[key]) == R.EXAMPLES for key in ("questions", "answers", "predictions"))
    figure = R.plot_answers(result)
    assert isinstance(figure, Figure)
    titled = [ax for ax in figure.axes if ax.images]
    assert len(titled) == R.EXAMPLES
    assert all(f"→ {p}" in ax.get_title() for ax, p in zip(titled, examples["predictions"], strict=True))


def test_the_cost_of_visual_tokens_follows_the_formulas() -> None:
    cost = R.visual_token_cost(576)
    assert cost["kv_cache_bytes"] == 576 * 512 * 2**10  # 512 KiB per token at Llama-2-7B scale in fp16
    assert cost["attention_flops"] == 32 * 4 * 576**2 * 4096
    assert cost["projection_flops"] == 32 * 8 * 576 * 4096**2
    crossing = R.visual_token_cost(np.array([2 * 4096]))
    assert crossing["attention_flops"] == crossing["projection_flops"]
    reduced = R.visual_token_cost(144)
    assert reduced["kv_cache_bytes"] * 4 == cost["kv_cache_bytes"]
    assert reduced["attention_flops"] * 16 == cost["attention_flops"]
    figure = R.plot_visual_token_cost()
    assert isinstance(figure, Figure) and len(figure.axes) == 2

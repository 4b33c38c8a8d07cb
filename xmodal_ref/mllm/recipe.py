"""Chapter 09 recipe: a tiny LLaVA that answers questions about shapes on the CPU.

The data: each shapes image (``xmodal_ref.data.make_shapes_captions``: one shape, colour ∈ 6, shape ∈ 4,
quadrant ∈ 4) gets one of three templated questions, uniformly: "what colour is the shape ?" → "red",
"what shape is it ?" → "circle", "where is the shape ?" → "top left" (two tokens). The vocabulary is
``VOCAB``: ``<pad> <image> <eos>`` and the 22 words of the questions and answers.

The model is LLaVA-1.5 in miniature, built from the chapter's exercises:

1. ``VisionEncoder``, a stand-in for CLIP's ViT: three stride-2 conv blocks (32² → 4² = 16 patch tokens) and two
   same-size residual conv blocks, width 32. It returns ViT-style ``hidden_states`` (the stem's tokens, then each
   block's), each ``(B, 1 + 16, 32)`` with a CLS slot that holds the mean token. ``train_vision_encoder`` pretrains it
   once on attribute classification, then it is frozen.
2. ``pixel_shuffle_tokens(·, 2)`` turns the 16 patch tokens into 4 tokens of 128 dims (``shuffle_hidden_states``);
   ``MlpProjector(128, 64)`` maps ``hidden_states[-2]`` (CLS dropped) to the decoder's width;
   ``merge_image_features`` puts the 4 vectors where the prompt's 4 ``<image>`` placeholders are and labels the
   answer tokens (and ``<eos>``) only.
3. ``TinyLlava``'s decoder: two pre-LN blocks (d = 64, 4 heads, GELU MLP of 256) whose attention is
   ``CachedSelfAttention`` (RoPE, KV cache), trained with ``causal_lm_loss`` by AdamW under a one-cycle schedule
   (3e-3, 8 epochs of 32 batches of 64). Answers are decoded greedily with the KV cache.

Accuracy is exact match of the decoded answer, (a) with the image, (b) with the encoder's features zeroed (the
projector then sees a constant, so only the language prior is left) and (c) the majority answer of each question
type in the training answers.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from xmodal_ref.common.device import default_device, one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.common.training import train_one_cycle
from xmodal_ref.contrastive.mini_clip import strided_conv_stem
from xmodal_ref.data import COLOURS, POSITIONS, SHAPES, make_shapes_captions
from xmodal_ref.data.tokens import pad_token_ids
from xmodal_ref.mllm.reference import (
    CachedSelfAttention,
    MlpProjector,
    causal_lm_loss,
    merge_image_features,
    pixel_shuffle_tokens,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # causal_lm_loss(logits, labels) → 0-dim
MergeFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # merge_image_features → (inputs_embeds, labels)
ShuffleFn = Callable[[torch.Tensor, int], torch.Tensor]  # pixel_shuffle_tokens(x, scale)
HiddenStates = tuple[torch.Tensor, ...]

# Question type → (question, the answers it can have, in attribute order); type t asks for attribute column t.
QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "colour": ("what colour is the shape ?", COLOURS),
    "shape": ("what shape is it ?", SHAPES),
    "position": ("where is the shape ?", POSITIONS),
}
QUESTION_TYPES: tuple[str, ...] = tuple(QUESTIONS)
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<image>", "<eos>")
VOCAB: tuple[str, ...] = (
    *SPECIAL_TOKENS,
    *sorted(
        {word for question, answers in QUESTIONS.values() for text in (question, *answers) for word in text.split()}
    ),
)
PAD_ID, IMAGE_ID, EOS_ID = range(len(SPECIAL_TOKENS))  # "<pad>" is 0, as pad_token_ids pads
_INDEX = {word: i for i, word in enumerate(VOCAB)}
MAX_QUESTION_TOKENS = max(len(question.split()) for question, _ in QUESTIONS.values())
MAX_ANSWER_TOKENS = max(len(a.split()) for _, answers in QUESTIONS.values() for a in answers)

IMAGE_SIZE = 32
ENCODER_WIDTH = 32  # the encoder's channels = its tokens' dimension
ENCODER_GRID = 4  # 32 px after three stride-2 blocks: a 4 × 4 grid of patch tokens
SHUFFLE_SCALE = 2  # 16 patch tokens → 4 visual tokens of 4 × 32 dims
DIM, HEADS, LAYERS = 64, 4, 2  # the decoder
N_TRAIN, N_TEST, BATCH_SIZE = 2048, 512, 64
EPOCHS = 8  # 8 × 2048 / 64 = 256 steps
MAX_LR = 3e-3
# The encoder is pretrained once (for every recipe seed) on images of its own, for 4 × 1920 / 64 = 120 steps.
ENCODER_N_TRAIN, ENCODER_N_PROBE, ENCODER_EPOCHS = 1920, 512, 4
ENCODER_DATA_SEED = 100_000  # far from the recipe's data seeds 2·seed and 2·seed + 1
QUESTION_SEED_OFFSET = 200_000  # question types of data seed s are drawn from a generator seeded 200_000 + s
EXAMPLES = 8  # test items whose images and answers the result keeps, for ``plot_answers``


@dataclass(frozen=True)
class ShapesQuestions:
    """N shapes images, each with one templated question and its answer; row i of every field belongs together."""

    images: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    question_types: torch.Tensor  # (N,) int64 index into QUESTION_TYPES
    input_ids: torch.Tensor  # (N, L) int64: <image> × V, question, answer, <eos>, then <pad>
    attention_mask: torch.Tensor  # (N, L) bool, True on real tokens
    answer_start: torch.Tensor  # (N,) int64 position of the answer's first token
    questions: list[str]
    answers: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


def make_shapes_questions(n: int, seed: int, visual_tokens: int = 4) -> ShapesQuestions:
    """``make_shapes_captions(n, seed)``'s images, each with a question type drawn uniformly and its answer.

    Each row of ``input_ids`` is ``visual_tokens`` ``<image>`` placeholders, the question, the answer's words and
    ``<eos>``, right-padded with ``<pad>`` to visual_tokens + MAX_QUESTION_TOKENS + MAX_ANSWER_TOKENS + 1. Every
    question of one type has the same length, so its answer starts at the same position. The types come from a
    generator of their own (seeded QUESTION_SEED_OFFSET + seed): one seeded like the images' would draw them in
    lockstep with the colours.
    """
    shapes = make_shapes_captions(n, seed, IMAGE_SIZE)
    generator = torch.Generator().manual_seed(QUESTION_SEED_OFFSET + seed)
    question_types = torch.randint(len(QUESTION_TYPES), (n,), generator=generator)  # (N,)
    questions, answers, ids = [], [], []
    for t, attributes in zip(question_types.tolist(), shapes.attributes.tolist(), strict=True):
        question, values = QUESTIONS[QUESTION_TYPES[t]]
        answer = values[attributes[t]]
        questions.append(question)
        answers.append(answer)
        ids.append([IMAGE_ID] * visual_tokens + [_INDEX[w] for w in f"{question} {answer}".split()] + [EOS_ID])
    input_ids, lengths = pad_token_ids(ids, visual_tokens + MAX_QUESTION_TOKENS + MAX_ANSWER_TOKENS + 1)
    answer_start = torch.tensor([visual_tokens + len(q.split()) for q in questions], dtype=torch.int64)
    attention_mask = torch.arange(input_ids.shape[1]) < lengths[:, None]  # (N, L)
    return ShapesQuestions(shapes.images, question_types, input_ids, attention_mask, answer_start, questions, answers)


def decode_answer(ids: Sequence[int]) -> str:
    """The words before the first ``<eos>`` (all of them if there is none), joined by spaces."""
    ids = list(ids)
    return " ".join(VOCAB[i] for i in ids[: ids.index(EOS_ID) if EOS_ID in ids else len(ids)])


class VisionEncoder(nn.Module):
    """A stand-in for CLIP's ViT: images (B, 3, 32, 32) → ``hidden_states``, a tuple of 3 × (B, 1 + 16, 32).

    Three stride-2 conv blocks give a 4 × 4 map (the "embedding output", entry 0); two same-size residual conv
    blocks follow (entries 1 and 2, the "layers"). Each map's positions are read out as 16 patch tokens in
    row-major order (token = row · 4 + col), after a CLS slot holding their mean, as a ViT with
    ``output_hidden_states=True`` returns them. ``head`` classifies colour, shape and position from the last
    entry's patch tokens (flattened, so it can tell where the shape is); it serves the pretraining only.
    """

    def __init__(self, width: int = ENCODER_WIDTH) -> None:
        super().__init__()
        self.stem = strided_conv_stem((3, width, width, width))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
            for _ in range(2)
        )
        self.head = nn.Linear(ENCODER_GRID**2 * width, len(COLOURS) + len(SHAPES) + len(POSITIONS))

    @staticmethod
    def _tokens(feature_map: torch.Tensor) -> torch.Tensor:
        patches = feature_map.flatten(2).transpose(1, 2)  # (B, N, C), row-major
        return torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1)  # (B, 1 + N, C)

    def forward(self, images: torch.Tensor) -> HiddenStates:
        x = self.stem(images)  # (B, C, 4, 4)
        hidden_states = [self._tokens(x)]
        for block in self.blocks:
            x = x + block(x)
            hidden_states.append(self._tokens(x))
        return tuple(hidden_states)

    def attribute_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits for colour (B, 6), shape (B, 4) and position (B, 4) from the last hidden state."""
        logits = self.head(self(images)[-1][:, 1:].flatten(1))  # (B, 14)
        return logits.split([len(COLOURS), len(SHAPES), len(POSITIONS)], dim=1)


@memoised
def train_vision_encoder(seed: int = 0, *, progress: bool = True, device: torch.device | str | None = None) -> dict:
    """Pretrain a ``VisionEncoder`` on attribute classification, once for every recipe seed; return it frozen.

    Trained on ``make_shapes_captions(1920, ENCODER_DATA_SEED + 2·seed)`` for 120 steps (4 epochs of batches of 64,
    AdamW one-cycle up to 3e-3, the sum of the three attributes' cross-entropies), on one CPU thread, deterministic
    under ``seed``. Returns {"encoder" (eval mode, on the CPU, no parameter requires grad), "probe_accuracy"
    ({attribute: accuracy of the head on 512 held-out images, ENCODER_DATA_SEED + 2·seed + 1}), "losses" (per
    step), "seconds"}.
    """
    start = time.perf_counter()
    device = default_device() if device is None else torch.device(device)
    with one_thread():
        generator = seed_everything(seed)
        train = make_shapes_captions(ENCODER_N_TRAIN, ENCODER_DATA_SEED + 2 * seed, IMAGE_SIZE)
        probe = make_shapes_captions(ENCODER_N_PROBE, ENCODER_DATA_SEED + 2 * seed + 1, IMAGE_SIZE)
        encoder = VisionEncoder().to(device)
        images, attributes = train.images.to(device), train.attributes.to(device)

        def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
            batch = batch.to(device)  # (B,)
            logits = encoder.attribute_logits(images[batch])
            return sum(F.cross_entropy(lg, attributes[batch, a]) for a, lg in enumerate(logits))

        encoder.train()
        losses = train_one_cycle(
            encoder.parameters(),
            len(train),
            loss_of_batch,
            epochs=ENCODER_EPOCHS,
            batch_size=BATCH_SIZE,
            generator=generator,
            max_lr=MAX_LR,
            description="vision encoder",
            progress=progress,
        )
        encoder.eval().requires_grad_(False)
        with torch.no_grad():
            logits = encoder.attribute_logits(probe.images.to(device))
        probe_accuracy = {
            name: (lg.argmax(dim=1).cpu() == probe.attributes[:, a]).double().mean().item()
            for a, (name, lg) in enumerate(zip(QUESTION_TYPES, logits, strict=True))
        }
    return {
        "encoder": encoder.cpu(),
        "probe_accuracy": probe_accuracy,
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }


def shuffle_hidden_states(hidden_states: HiddenStates, scale: int, pixel_shuffle: ShuffleFn) -> HiddenStates:
    """ViT-style hidden states with scale² times fewer, scale² times wider patch tokens.

    Each entry (B, 1 + N, C) becomes (B, 1 + N / scale², scale² · C): its patch tokens go through
    ``pixel_shuffle(·, scale)`` and the CLS slot again holds their mean, so a projector can select a layer and
    drop the CLS token exactly as on the encoder's own output.
    """
    shuffled = []
    for h in hidden_states:
        patches = pixel_shuffle(h[:, 1:], scale)  # (B, N / scale², scale² · C)
        shuffled.append(torch.cat([patches.mean(dim=1, keepdim=True), patches], dim=1))
    return tuple(shuffled)


class DecoderBlock(nn.Module):
    """Pre-LN transformer block: x + attention(LN(x)), then + MLP(LN(·)); the attention returns its KV cache."""

    def __init__(self, dim: int, num_heads: int, attention: type[nn.Module]) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = attention(dim, num_heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(
        self, x: torch.Tensor, past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, cache = self.attention(self.attention_norm(x), past_key_value)
        x = x + attended
        return x + self.mlp(self.mlp_norm(x)), cache


class TinyLlava(nn.Module):
    """Projector + token embedding + causal decoder + LM head: a LLaVA of two layers of width 64.

    ``projector`` and ``attention`` are classes with ``MlpProjector``'s and ``CachedSelfAttention``'s contracts:
    ``projector(vision_dim, dim)`` (it selects ``hidden_states[-2]`` and drops the CLS token) and
    ``attention(dim, num_heads)``. Positions come from the attention's RoPE only; there is no position embedding.
    """

    def __init__(
        self,
        vision_dim: int,
        projector: type[nn.Module] = MlpProjector,
        attention: type[nn.Module] = CachedSelfAttention,
        vocab_size: int = len(VOCAB),
        dim: int = DIM,
        num_heads: int = HEADS,
        layers: int = LAYERS,
    ) -> None:
        super().__init__()
        self.projector = projector(vision_dim, dim)
        self.embed_tokens = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(DecoderBlock(dim, num_heads, attention) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(
        self, inputs_embeds: torch.Tensor, past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """inputs_embeds (B, L, dim), the caches of an earlier call or None → logits (B, L, V), the new caches."""
        x, caches = inputs_embeds, []
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, None if past_key_values is None else past_key_values[i])
            caches.append(cache)
        return self.lm_head(self.norm(x)), caches

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding with the KV cache: the prompt once, then one new token per call. (B, max_new_tokens)."""
        logits, caches = self(inputs_embeds)
        tokens: list[torch.Tensor] = []
        while True:
            tokens.append(logits[:, -1].argmax(dim=-1))  # (B,)
            if len(tokens) == max_new_tokens:
                return torch.stack(tokens, dim=1)
            logits, caches = self(self.embed_tokens(tokens[-1][:, None]), caches)


def greedy_answers(model: TinyLlava, data: ShapesQuestions, hidden_states: HiddenStates, merge: MergeFn) -> list[str]:
    """Each item's answer decoded greedily from its prompt (placeholders and question), one batch per question type.

    hidden_states: the (shuffled) encoder states of ``data``'s images, each (N, 1 + V, C). A type's prompts all
    have the same length, so they decode together without padding.
    """
    answers = [""] * len(data)
    with torch.no_grad():
        for t in range(len(QUESTION_TYPES)):
            rows = (data.question_types == t).nonzero().squeeze(1)  # (R,)
            if len(rows) == 0:
                continue
            start = int(data.answer_start[rows[0]])
            prompt = data.input_ids[rows, :start]  # (R, start)
            features = model.projector(tuple(h[rows] for h in hidden_states))  # (R, V, dim)
            no_answer = torch.full((len(rows),), start, dtype=torch.int64, device=prompt.device)
            embeds, _ = merge(prompt, features, model.embed_tokens, IMAGE_ID, no_answer)
            generated = model.generate(embeds, MAX_ANSWER_TOKENS + 1)  # (R, T)
            for row, ids in zip(rows.tolist(), generated.tolist(), strict=True):
                answers[row] = decode_answer(ids)
    return answers


def majority_answers(data: ShapesQuestions) -> dict[str, str]:
    """The most frequent answer of each question type in ``data`` (ties: the one seen first)."""
    counts = {name: Counter() for name in QUESTION_TYPES}
    for answer, t in zip(data.answers, data.question_types.tolist(), strict=True):
        counts[QUESTION_TYPES[t]][answer] += 1
    return {name: count.most_common(1)[0][0] for name, count in counts.items()}


def _accuracies(data: ShapesQuestions, predictions: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Exact-match accuracy over all items, and per question type."""
    correct = torch.tensor([p == a for p, a in zip(predictions, data.answers, strict=True)], dtype=torch.float64)
    per_type = {name: correct[data.question_types == t].mean().item() for t, name in enumerate(QUESTION_TYPES)}
    return correct.mean().item(), per_type


@torch.no_grad()
def _encode(encoder: VisionEncoder, images: torch.Tensor, scale: int, pixel_shuffle: ShuffleFn) -> HiddenStates:
    return shuffle_hidden_states(encoder(images), scale, pixel_shuffle)


@memoised
def train_tiny_llava(
    seed: int = 0,
    *,
    projector: type[nn.Module] | None = None,
    attention: type[nn.Module] | None = None,
    merge: MergeFn | None = None,
    loss_fn: LossFn | None = None,
    pixel_shuffle: ShuffleFn | None = None,
    scale: int = SHUFFLE_SCALE,
    encoder: VisionEncoder | None = None,
    epochs: int = EPOCHS,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict:
    """Train a ``TinyLlava`` on shapes questions (seed's data) and score its greedy answers on the test questions.

    The exercises the recipe runs on, each None for the reference: ``projector`` (``MlpProjector``'s contract),
    ``attention`` (``CachedSelfAttention``'s), ``merge`` (``merge_image_features``), ``loss_fn``
    (``causal_lm_loss``, called as ``loss_fn(logits, labels)``) and ``pixel_shuffle`` (``pixel_shuffle_tokens``).
    ``scale``: the pixel-shuffle factor, 2 (16 patch tokens → 4 visual tokens) or 1 (all 16 tokens of 32 dims).
    ``encoder``: a frozen ``VisionEncoder`` (None: ``train_vision_encoder()``'s, pretrained here).

    Train: ``make_shapes_questions(2048, 2·seed)``; test: ``make_shapes_questions(512, 2·seed + 1)``. The encoder's
    states are computed once (it is frozen); the loss covers the answer tokens and ``<eos>`` only; AdamW under a
    one-cycle schedule up to 3e-3, ``epochs`` passes of 32 batches of 64. On one CPU thread, deterministic under
    ``seed`` on a device.

    Returns {"seed", "visual_tokens", "accuracy" (exact match with the image), "zeroed_accuracy" (the encoder's
    states zeroed), "majority_accuracy" (each type's majority training answer), "per_type" ({"image", "zeroed",
    "majority"} → {question type: accuracy}), "majority_answers" ({question type: answer}), "losses" (per step),
    "encoder_seconds" (pretraining here, 0.0 when ``encoder`` is given), "train_seconds" (the decoder's training),
    "seconds" (the whole call), "examples" (the first EXAMPLES test items: "images" (K, 3, 32, 32), "questions",
    "answers", "predictions", "zeroed_predictions")}. The model is not returned: its classes may be a learner's.
    """
    start = time.perf_counter()
    device = default_device() if device is None else torch.device(device)
    projector = MlpProjector if projector is None else projector
    attention = CachedSelfAttention if attention is None else attention
    merge = merge_image_features if merge is None else merge
    loss_fn = causal_lm_loss if loss_fn is None else loss_fn
    pixel_shuffle = pixel_shuffle_tokens if pixel_shuffle is None else pixel_shuffle
    encoder_seconds = 0.0
    if encoder is None:
        encoder_seconds = time.perf_counter()
        encoder = train_vision_encoder(progress=progress, device=device)["encoder"]
        encoder_seconds = time.perf_counter() - encoder_seconds
    visual_tokens = (ENCODER_GRID // scale) ** 2
    with one_thread():
        train = make_shapes_questions(N_TRAIN, 2 * seed, visual_tokens)
        test = make_shapes_questions(N_TEST, 2 * seed + 1, visual_tokens)
        encoder = encoder.to(device).eval()
        hidden = {
            name: _encode(encoder, split.images.to(device), scale, pixel_shuffle)
            for name, split in (("train", train), ("test", test))
        }
        ids, mask, answer_start = (t.to(device) for t in (train.input_ids, train.attention_mask, train.answer_start))

        generator = seed_everything(seed)
        model = TinyLlava(hidden["train"][-2].shape[-1], projector, attention).to(device)

        def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
            batch = batch.to(device)  # (B,)
            features = model.projector(tuple(h[batch] for h in hidden["train"]))  # (B, V, dim)
            embeds, labels = merge(ids[batch], features, model.embed_tokens, IMAGE_ID, answer_start[batch], mask[batch])
            return loss_fn(model(embeds)[0], labels)

        train_start = time.perf_counter()
        model.train()
        losses = train_one_cycle(
            model.parameters(),
            len(train),
            loss_of_batch,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            generator=generator,
            max_lr=MAX_LR,
            description=f"tiny LLaVA ({visual_tokens} visual tokens)",
            progress=progress,
        )
        train_seconds = time.perf_counter() - train_start
        model.eval()
        test_on_device = _on_device(test, device)
        predictions = greedy_answers(model, test_on_device, hidden["test"], merge)
        zeroed = tuple(torch.zeros_like(h) for h in hidden["test"])
        zeroed_predictions = greedy_answers(model, test_on_device, zeroed, merge)
    majority = majority_answers(train)
    scores = {
        "image": _accuracies(test, predictions),
        "zeroed": _accuracies(test, zeroed_predictions),
        "majority": _accuracies(test, [majority[QUESTION_TYPES[t]] for t in test.question_types.tolist()]),
    }
    return {
        "seed": seed,
        "visual_tokens": visual_tokens,
        "accuracy": scores["image"][0],
        "zeroed_accuracy": scores["zeroed"][0],
        "majority_accuracy": scores["majority"][0],
        "per_type": {kind: per_type for kind, (_, per_type) in scores.items()},
        "majority_answers": majority,
        "losses": losses,
        "encoder_seconds": encoder_seconds,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - start,
        "examples": {
            "images": test.images[:EXAMPLES],
            "questions": test.questions[:EXAMPLES],
            "answers": test.answers[:EXAMPLES],
            "predictions": predictions[:EXAMPLES],
            "zeroed_predictions": zeroed_predictions[:EXAMPLES],
        },
    }


def _on_device(data: ShapesQuestions, device: torch.device) -> ShapesQuestions:
    """``data`` with its token tensors on ``device`` (the images stay where they are)."""
    return ShapesQuestions(
        data.images,
        data.question_types.to(device),
        data.input_ids.to(device),
        data.attention_mask.to(device),
        data.answer_start.to(device),
        data.questions,
        data.answers,
    )


def plot_answers(result: dict) -> Figure:
    """The test images of ``result["examples"]`` with each question, the model's answer and the blind answer.

    The answer is green when it matches the truth and red (with the truth) otherwise; "blind" is the answer with
    the encoder's features zeroed (the language prior).
    """
    examples = result["examples"]
    columns = min(4, len(examples["questions"]))
    rows = -(-len(examples["questions"]) // columns)
    fig, axes = closed_subplots(rows, columns, figsize=(3.1 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, question, answer, predicted, blind in zip(
        axes.flat,
        examples["images"],
        examples["questions"],
        examples["answers"],
        examples["predictions"],
        examples["zeroed_predictions"],
        strict=False,
    ):
        verdict = "" if predicted == answer else f" (truth: {answer})"
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(
            f"{question}\n→ {predicted or '(nothing)'}{verdict}\nblind: {blind or '(nothing)'}",
            fontsize=9,
            color="tab:green" if predicted == answer else "tab:red",
        )
    fig.suptitle(f"Tiny LLaVA, seed {result['seed']}: greedy answers (green = correct)")
    return fig


# Visual tokens per image at LLaVA-1.5 scale and around it (sources: ``plot_visual_token_cost``).
VISUAL_TOKEN_MARKS: dict[str, int] = {
    "Q-Former queries (BLIP-2)": 32,
    "576 pixel-shuffled (×¼)": 144,
    "LLaVA-1.5 (ViT-L/14, 336 px)": 576,
    "InternVL 1.5, 12 tiles × 256": 12 * 256,
    "InternVL 1.5, 40 tiles × 256": 40 * 256,
}


def visual_token_cost(
    tokens: int | np.ndarray, layers: int = 32, heads: int = 32, head_dim: int = 128, bytes_per_value: int = 2
) -> dict[str, float | np.ndarray]:
    """Per forward pass over ``tokens`` tokens of a decoder (default: Llama-2-7B-sized), summed over its layers
    (a multiply-add counts as 2 FLOPs):

    "attention_flops" = layers · 4 · n² · d (the scores q·kᵀ and the weighted sum of values, d = heads · head_dim;
    dense, i.e. without halving for the causal mask), "projection_flops" = layers · 8 · n · d² (the q, k, v and o
    projections), "kv_cache_bytes" = 2 · layers · heads · head_dim · bytes_per_value · n (keys and values).
    """
    n = np.asarray(tokens, dtype=np.float64)
    d = heads * head_dim
    return {
        "attention_flops": layers * 4 * n**2 * d,
        "projection_flops": layers * 8 * n * d**2,
        "kv_cache_bytes": 2 * layers * heads * head_dim * bytes_per_value * n,
    }


def plot_visual_token_cost(max_tokens: int = 16_384) -> Figure:
    """What visual tokens cost an LLM at LLaVA-1.5 scale, from formulas (``visual_token_cost``), log-log.

    The scale numbers are those of the chapter's verified facts (``09_mllm.facts.md``, fact numbers in brackets):
    the LLM is Llama-2-7B-sized, 32 layers of 32 heads of 128 dims, so an fp16 KV cache holds 2 × 32 × 32 × 128 × 2 B
    = 512 KiB per token [22]. Marked token counts: BLIP-2's 32 Q-Former queries (arXiv:2301.12597) [15];
    576 = (336/14)², LLaVA-1.5's CLIP-ViT-L/14 at 336 px with the CLS token dropped (arXiv:2310.03744) [5]; 144 = 576
    / 4 after a 2 × 2 pixel shuffle [25, 28]; InternVL 1.5's 256 tokens per 448² tile, at 12 tiles (its training
    maximum) and 40 (at test) (arXiv:2404.16821) [24]. Left: attention's quadratic FLOPs against the linear q/k/v/o
    projections (they cross at n = 2d = 8192 tokens); right: the KV cache of one image's tokens.
    """
    n = np.geomspace(2, max_tokens, 200)  # from 2: room for the labels left of the marks
    cost = visual_token_cost(n)
    marks = np.array(list(VISUAL_TOKEN_MARKS.values()))
    marked = visual_token_cost(marks)
    fig, (flops_ax, memory_ax) = closed_subplots(1, 2, figsize=(12, 4.5))
    flops_ax.loglog(n, cost["attention_flops"], label="attention scores + values: 4·n²·d per layer")
    flops_ax.loglog(n, cost["projection_flops"], label="q, k, v, o projections: 8·n·d² per layer")
    flops_ax.scatter(marks, marked["attention_flops"], color="k", zorder=3)
    memory_ax.loglog(n, cost["kv_cache_bytes"] / 2**20, color="tab:purple", label="2·layers·heads·head_dim·2 B·n")
    memory_ax.scatter(marks, marked["kv_cache_bytes"] / 2**20, color="k", zorder=3)
    for (name, count), attention_flops, mib in zip(
        VISUAL_TOKEN_MARKS.items(), marked["attention_flops"], marked["kv_cache_bytes"] / 2**20, strict=True
    ):
        for ax, value, label in ((flops_ax, attention_flops, name), (memory_ax, mib, f"{name}: {mib:,.0f} MiB")):
            ax.annotate(label, (count, value), fontsize=7, xytext=(-6, 4), textcoords="offset points", ha="right")
    flops_ax.set(
        xlabel="visual tokens per image",
        ylabel="FLOPs per forward pass (32 layers)",
        title="Llama-2-7B-sized LLM: FLOPs of the visual tokens",
    )
    memory_ax.set(xlabel="visual tokens per image", ylabel="KV cache (MiB, fp16)", title="KV cache: 512 KiB per token")
    for ax in (flops_ax, memory_ax):
        ax.legend(fontsize=8, loc="lower right")
    return fig

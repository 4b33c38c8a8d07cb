"""Chapter 07 demo: Show, Attend and Tell in miniature on the shapes captions, decoded greedily and by beam search.

The captioner (``Captioner``) reads a 32 × 32 shapes render as a 4 × 4 grid of patch features (chapter 03's strided
conv stem plus a learned embedding per location) and writes its caption one word at a time with a GRU cell. Before
each word, the learner's ``SoftAttention`` looks at the patches from the previous state h_{t−1} and returns a gated
context vector and its weights α over the grid; the GRU reads the previous word and the context, and a linear layer
on [h_t; context] gives the next word's logits. The initial state is a projection of the mean patch.

``train_captioner`` trains it under teacher forcing with the learner's ``caption_loss``, then captions held-out
renders twice: greedily (one batched pass) and with the learner's ``beam_search`` (one image at a time, through a
``PrefixStepper`` that caches the decoder state of every prefix, so each call costs one GRU step). Both are scored
with the learner's ``corpus_bleu`` (BLEU-4, no smoothing):

* against the five captions the templates give the image's colour, shape and position (as COCO has five human
  references per image): any correct caption scores close to 1, whichever template it follows;
* against the one caption the data set drew for the image: a correct caption in another template loses most of
  its n-grams. BLEU rewards wording shared with the references, not being right.

Measured (seeds 0 / 1 / 2, 256 test images, one thread; 7.0–7.6 s of CPU per call, of which 6–7 s training and
0.4 s beam search; ``python -m benchmarks captioning``): BLEU-4 against five references greedy 0.991 / 0.982 / 0.992,
beam (k = 3) 0.992 / 0.986 / 0.995; against one reference greedy 0.440 / 0.469 / 0.498, beam 0.444 / 0.446 / 0.438;
exact captions greedy 0.973 / 0.949 / 0.980, beam 0.973 / 0.957 / 0.984. The templates are equiprobable, so every
correct caption of an image has about the same probability and the decoders differ mainly in which template they
write: beam search finds captions of higher log-probability per token (S / n −0.139 / −0.145 / −0.138 against
greedy's −0.156 / −0.166 / −0.152), and with the length penalty α = 1 (Hugging Face's S / n) that favours the long
templates (9.7 words per caption against greedy's 8.4–8.8); with α = 0 (the raw sum S) it writes 8.3 (seed 0).

The doubly stochastic attention penalty is off by default (``ATTN_REG = 0``). It pushes every location's total
attention over the caption towards 1, i.e. attention spread evenly over the grid, while here one shape in one
quadrant is all there is to see and a caption has ≤ 11 steps for 16 locations: with the paper's λ = 1 the exact
captions fall to 0.75–0.83 (seeds 0–2, both decoders) in the same training budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from xmodal_ref.common.device import default_device, one_thread, seed_everything
from xmodal_ref.common.plots import closed_subplots
from xmodal_ref.common.recipe_cache import memoised
from xmodal_ref.common.training import train_one_cycle
from xmodal_ref.contrastive.mini_clip import strided_conv_stem
from xmodal_ref.data import COLOURS, MAX_TOKENS, POSITIONS, SHAPES, TEMPLATES, VOCAB, shapes_splits, tokenize
from xmodal_ref.generation.reference import SoftAttention, beam_search, caption_loss, corpus_bleu

# caption_loss(logits (B, T, V), tokens (B, T+1), alphas (B, T, L), pad_id, attn_reg) → 0-dim loss
CaptionLoss = Callable[..., torch.Tensor]
# beam_search(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty) → (tokens, score)
BeamSearch = Callable[..., tuple[list[int], float]]
# corpus_bleu(hypotheses, references, max_n, smooth) → float
CorpusBleu = Callable[..., float]

#: The shapes vocabulary ("<pad>" = 0 first) plus the decoder's two special tokens.
CAPTION_VOCAB: tuple[str, ...] = (*VOCAB, "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, len(VOCAB), len(VOCAB) + 1
MAX_LEN = MAX_TOKENS + 1  # the longest caption and its EOS: every decoder stops after this many tokens

IMAGE_SIZE = 32
STEM_CHANNELS = (3, 16, 32, 64)  # three stride-2 blocks: 32² → a 4 × 4 grid of 64-dim patch features
HIDDEN_DIM = 128
ATTN_DIM = 64
EMBED_DIM = 32
N_TRAIN, N_TEST = 4096, 256
EPOCHS = 5
BATCH_SIZE = 128
MAX_LR = 1e-2
ATTN_REG = 0.0
BEAM_SIZE = 3
LENGTH_PENALTY = 1.0
EXAMPLES = 6  # test images whose captions and attention maps the result keeps


def caption_tokens(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Shapes caption ids (N, L) right-padded with 0 → decoder tokens (N, L + 2): [BOS, w_1…w_n, EOS, pad…]."""
    shifted = torch.cat([torch.full_like(tokens[:, :1], BOS_ID), tokens, torch.zeros_like(tokens[:, :1])], dim=1)
    return shifted.scatter(1, (lengths + 1)[:, None], EOS_ID)  # (N, L + 2): EOS right after the last word


def decode_words(ids: Sequence[int]) -> list[str]:
    """The words of generated ids, up to (not including) the first EOS."""
    ids = list(ids)
    return [CAPTION_VOCAB[i] for i in ids[: ids.index(EOS_ID) if EOS_ID in ids else len(ids)]]


def template_references(attributes: torch.Tensor) -> list[list[list[str]]]:
    """Every template's caption of each sample's (colour, shape, position): N lists of len(TEMPLATES) token lists."""
    return [
        [tokenize(t.format(colour=COLOURS[c], shape=SHAPES[s], position=POSITIONS[p])) for t in TEMPLATES]
        for c, s, p in attributes.tolist()
    ]


class Captioner(nn.Module):
    """A GRU decoder that attends over image patches before every word (Show, Attend and Tell, with a GRU).

    ``attention`` is a class with ``SoftAttention``'s contract, built as ``attention(feature_dim, hidden_dim,
    attn_dim)``. Image: the strided conv stem ``STEM_CHANNELS`` turns (B, 3, S, S) into a grid × grid map of D-dim
    features, plus a learned embedding per location: L = grid² annotation vectors. Decoder step t: (context, α) =
    attention(features, h_{t−1}); h_t = GRU([E y_{t−1}; context], h_{t−1}); logits = out([h_t; context]).
    h_0 = tanh(init(mean of the features)).
    """

    def __init__(
        self,
        attention: type[nn.Module] = SoftAttention,
        vocab_size: int = len(CAPTION_VOCAB),
        image_size: int = IMAGE_SIZE,
        stem_channels: Sequence[int] = STEM_CHANNELS,
        hidden_dim: int = HIDDEN_DIM,
        attn_dim: int = ATTN_DIM,
        embed_dim: int = EMBED_DIM,
    ) -> None:
        super().__init__()
        feature_dim = stem_channels[-1]
        self.grid = math.ceil(image_size / 2 ** (len(stem_channels) - 1))  # each block maps a side of n to ⌈n/2⌉
        self.stem = strided_conv_stem(stem_channels)
        self.locations = nn.Parameter(torch.randn(self.grid**2, feature_dim) * 0.02)
        self.init_hidden = nn.Linear(feature_dim, hidden_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.attention = attention(feature_dim, hidden_dim, attn_dim)
        self.cell = nn.GRUCell(embed_dim + feature_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim + feature_dim, vocab_size)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → annotation vectors (B, L, D), L = grid², row-major from the top-left patch."""
        return self.stem(images).flatten(2).transpose(1, 2) + self.locations  # (B, L, D)

    def initial_state(self, features: torch.Tensor) -> torch.Tensor:
        """h_0 (B, H) from the mean annotation vector."""
        return torch.tanh(self.init_hidden(features.mean(dim=1)))

    def step(
        self, features: torch.Tensor, hidden: torch.Tensor, token: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder step: features (B, L, D), h_{t−1} (B, H), y_{t−1} (B,) → (logits (B, V), h_t, α (B, L))."""
        context, alpha = self.attention(features, hidden)  # (B, D), (B, L)
        hidden = self.cell(torch.cat([self.embedding(token), context], dim=-1), hidden)  # (B, H)
        return self.out(torch.cat([hidden, context], dim=-1)), hidden, alpha

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: tokens (B, T+1) = [BOS, w…, EOS, pad…] → logits (B, T, V) and α (B, T, L).

        logits[:, t] follows tokens[:, :t+1] (``caption_loss``'s convention); α[:, t] is the attention of that step.
        """
        features = self.features(images)  # (B, L, D)
        hidden = self.initial_state(features)
        logits, alphas = [], []
        for t in range(tokens.shape[1] - 1):
            step_logits, hidden, alpha = self.step(features, hidden, tokens[:, t])
            logits.append(step_logits)
            alphas.append(alpha)
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)


@torch.no_grad()
def greedy_captions(model: Captioner, images: torch.Tensor, max_len: int = MAX_LEN) -> list[list[int]]:
    """Greedy decoding of a batch (B, 3, S, S): each image's ids, EOS included when it was produced (≤ max_len)."""
    features = model.features(images)  # (B, L, D)
    hidden = model.initial_state(features)
    token = torch.full((len(images),), BOS_ID, dtype=torch.long, device=images.device)
    generated = []
    for _ in range(max_len):
        logits, hidden, _ = model.step(features, hidden, token)
        token = logits.argmax(dim=-1)  # (B,)
        generated.append(token)
    rows = torch.stack(generated, dim=1).tolist()  # (B, max_len)
    return [row[: row.index(EOS_ID) + 1] if EOS_ID in row else row for row in rows]


class PrefixStepper:
    """``beam_search``'s step function for one image: prefixes (K, t) → next-token log-probabilities (K, V).

    The decoder state after each prefix is cached (keyed by its ids), so a prefix whose parent was scored before
    costs one decoder step; any other prefix is built up from its longest cached ancestor. The result is on the CPU.
    """

    @torch.no_grad()
    def __init__(self, model: Captioner, image: torch.Tensor) -> None:
        self.model = model
        self.features = model.features(image[None])  # (1, L, D)
        self.states: dict[tuple[int, ...], torch.Tensor] = {(): model.initial_state(self.features)[0]}

    def _state(self, prefix: tuple[int, ...]) -> torch.Tensor:
        """The decoder state (H,) after reading ``prefix`` (BOS first), from the cache or built up to it."""
        if prefix not in self.states:
            parent = self._state(prefix[:-1])
            token = torch.tensor([prefix[-1]], device=parent.device)
            _, hidden, _ = self.model.step(self.features, parent[None], token)
            self.states[prefix] = hidden[0]
        return self.states[prefix]

    @torch.no_grad()
    def __call__(self, prefixes: torch.Tensor) -> torch.Tensor:
        rows = [tuple(row) for row in prefixes.tolist()]
        parents = torch.stack([self._state(row[:-1]) for row in rows])  # (K, H)
        tokens = torch.tensor([row[-1] for row in rows], device=parents.device)  # (K,)
        logits, hidden, _ = self.model.step(self.features.expand(len(rows), -1, -1), parents, tokens)
        self.states.update(zip(rows, hidden, strict=True))
        return logits.log_softmax(dim=-1).cpu()  # (K, V)


def _teacher_forced(
    model: Captioner, images: torch.Tensor, captions: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model read along generated ids (BOS excluded): log p of each id (N, T), α (N, T, L) and a mask (N, T)."""
    width = max(len(ids) for ids in captions)
    rows = [[BOS_ID, *ids] + [PAD_ID] * (width - len(ids)) for ids in captions]
    tokens = torch.tensor(rows, device=images.device)  # (N, T + 1)
    with torch.no_grad():
        logits, alphas = model(images, tokens)  # (N, T, V), (N, T, L)
    picked = logits.log_softmax(dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (N, T)
    lengths = torch.tensor([len(ids) for ids in captions])  # (N,)
    return picked.cpu(), alphas.cpu(), torch.arange(width) < lengths[:, None]


def attention_maps(model: Captioner, image: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """α of the step that produced each of ``ids`` (generated ids, BOS excluded): (len(ids), grid, grid)."""
    _, alphas, _ = _teacher_forced(model, image[None], [ids])
    return alphas[0].unflatten(-1, (model.grid, model.grid))


def mean_log_prob(model: Captioner, images: torch.Tensor, captions: Sequence[Sequence[int]]) -> float:
    """The mean over captions of S / n, the model's log-probability per generated id (beam search's score at α = 1)."""
    picked, _, real = _teacher_forced(model, images, captions)
    return ((picked * real).sum(dim=1) / real.sum(dim=1)).mean().item()


def bleu_scores(
    captions: Sequence[Sequence[int]], references: list[list[list[str]]], one_reference: Sequence[str], bleu: CorpusBleu
) -> dict[str, float]:
    """How generated ids read against the references: corpus BLEU-4 (no smoothing) and exact matches.

    "bleu": against every template's caption of the image (``template_references``); "bleu_one_reference":
    against ``one_reference``, the one caption the data set drew for it; "exact": the share of captions equal, word
    for word, to one of their template references (every attribute right and a real template); "words": the mean
    caption length in words.
    """
    hypotheses = [decode_words(ids) for ids in captions]
    return {
        "bleu": bleu(hypotheses, references, 4, "none"),
        "bleu_one_reference": bleu(hypotheses, [[tokenize(c)] for c in one_reference], 4, "none"),
        "exact": sum(h in refs for h, refs in zip(hypotheses, references, strict=True)) / len(hypotheses),
        "words": sum(map(len, hypotheses)) / len(hypotheses),
    }


def example_indices(greedy: Sequence[Sequence[int]], beam: Sequence[Sequence[int]], k: int = EXAMPLES) -> list[int]:
    """k test indices to show: the first where the two decoders' captions differ, then the first where they agree."""
    differ = [i for i, (g, b) in enumerate(zip(greedy, beam, strict=True)) if list(g) != list(b)]
    agree = [i for i in range(len(greedy)) if i not in set(differ)]
    return sorted(differ[:k] + agree[: k - len(differ[:k])])


@memoised
def train_captioner(
    seed: int = 0,
    *,
    attention: type[nn.Module] = SoftAttention,
    loss: CaptionLoss = caption_loss,
    search: BeamSearch = beam_search,
    bleu: CorpusBleu = corpus_bleu,
    epochs: int = EPOCHS,
    attn_reg: float = ATTN_REG,
    n_test: int = N_TEST,
    beam_size: int = BEAM_SIZE,
    length_penalty: float = LENGTH_PENALTY,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict:
    """Train a ``Captioner`` on shapes captions, caption held-out renders greedily and by beam search, score both.

    The exercises it runs on (the learner's, or the references): ``attention`` (``SoftAttention``'s contract),
    ``loss`` (``caption_loss``, called as ``loss(logits, tokens, alphas, PAD_ID, attn_reg)``), ``search``
    (``beam_search``, called per test image with a ``PrefixStepper``, ``BOS_ID``, ``EOS_ID``, ``beam_size``,
    ``MAX_LEN`` and ``length_penalty``) and ``bleu`` (``corpus_bleu``, called with max_n 4 and smooth "none").

    Data: ``shapes_splits(seed, N_TRAIN, n_test)`` (32 × 32 renders). Training: ``epochs`` passes of batches of
    ``BATCH_SIZE`` under ``train_one_cycle`` (AdamW, one-cycle up to ``MAX_LR``), each batch trimmed to its longest
    caption. On one CPU thread (``one_thread``), deterministic under ``seed`` on a device.

    Returns {"seed", "losses" (per step), "scores" ({"greedy", "beam"} → ``bleu_scores`` plus "log_prob",
    ``mean_log_prob``), "examples" (EXAMPLES test images picked by ``example_indices``: "index", "images" (K, 3, S, S),
    "captions" (the data set's), "greedy" and "beam" (generated ids, EOS included), "greedy_maps" and "beam_maps"
    (per image, α of each generated id, (n, grid, grid))), "beam_size", "seconds" (wall time: {"training", "greedy",
    "beam", "total"})}. The model is not returned: its attention class may be a learner's.
    """
    start = time.perf_counter()
    device = default_device() if device is None else torch.device(device)
    seconds = {}
    with one_thread():
        generator = seed_everything(seed)
        splits = shapes_splits(seed, N_TRAIN, n_test)
        train, test = splits["train"], splits["test"]
        images, tokens = train.images.to(device), caption_tokens(train.tokens, train.lengths).to(device)
        widths = train.lengths + 2  # (N,) BOS, the words and EOS
        model = Captioner(attention, image_size=train.images.shape[-1]).to(device)

        def loss_of_batch(batch: torch.Tensor, done: float) -> torch.Tensor:
            batch_tokens = tokens[batch.to(device), : int(widths[batch].max())]  # (B, T+1), trimmed
            logits, alphas = model(images[batch.to(device)], batch_tokens)
            return loss(logits, batch_tokens, alphas, PAD_ID, attn_reg)

        tick = time.perf_counter()
        model.train()
        losses = train_one_cycle(
            model.parameters(),
            len(train),
            loss_of_batch,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            generator=generator,
            max_lr=MAX_LR,
            description="captioner",
            progress=progress,
        )
        model.eval()
        seconds["training"] = time.perf_counter() - tick

        tick = time.perf_counter()
        test_images = test.images.to(device)
        captions = {"greedy": greedy_captions(model, test_images)}
        seconds["greedy"] = time.perf_counter() - tick

        tick = time.perf_counter()
        captions["beam"] = [
            [int(i) for i in search(PrefixStepper(model, image), BOS_ID, EOS_ID, beam_size, MAX_LEN, length_penalty)[0]]
            for image in tqdm(test_images, disable=not progress, desc="beam search")
        ]
        seconds["beam"] = time.perf_counter() - tick

        references = template_references(test.attributes)
        scores = {
            name: {
                **bleu_scores(ids, references, test.captions, bleu),
                "log_prob": mean_log_prob(model, test_images, ids),
            }
            for name, ids in captions.items()
        }
        chosen = example_indices(captions["greedy"], captions["beam"])
        examples = {"index": chosen, "images": test.images[chosen], "captions": [test.captions[i] for i in chosen]}
        for name, ids in captions.items():
            examples[name] = [ids[i] for i in chosen]
            examples[f"{name}_maps"] = [attention_maps(model, test_images[i], ids[i]) for i in chosen]
    seconds["total"] = time.perf_counter() - start
    return {
        "seed": seed,
        "losses": losses,
        "scores": scores,
        "examples": examples,
        "beam_size": beam_size,
        "seconds": seconds,
    }


def plot_caption_attention(result: dict, index: int = 0, decoders: Sequence[str] = ("greedy", "beam")) -> Figure:
    """Test image ``index`` of ``result["examples"]``, then each generated word's attention map over it, per decoder.

    One block of rows per decoder: its first panel is the image (titled with the decoder), then one panel per
    generated id in order (EOS shows as "<eos>"), its map (grid × grid) laid half-transparent over the image, all
    on one colour scale. The suptitle is the data set's caption.
    """
    examples = result["examples"]
    picture = examples["images"][index].permute(1, 2, 0).numpy()  # (S, S, 3)
    side = picture.shape[0]
    blocks = [(name, examples[name][index], examples[f"{name}_maps"][index]) for name in decoders]
    columns = 6
    block_rows = [-(-(1 + len(ids)) // columns) for _, ids, _ in blocks]
    fig, axes = closed_subplots(sum(block_rows), columns, figsize=(1.7 * columns, 1.8 * sum(block_rows)), squeeze=False)
    vmax = max(float(maps.max()) for _, _, maps in blocks)
    pixels = (-0.5, side - 0.5, side - 0.5, -0.5)  # the image's own extent, so a map covers it exactly
    first_row = 0
    for (name, ids, maps), rows in zip(blocks, block_rows, strict=True):
        panels = axes[first_row : first_row + rows].ravel()
        first_row += rows
        label = f"beam (k = {result['beam_size']})" if name == "beam" else name
        panels[0].imshow(picture)
        panels[0].set_title(label, fontsize=10, fontweight="bold")
        for ax, token, weights in zip(panels[1:], ids, maps.numpy(), strict=False):
            ax.imshow(picture)
            shown = ax.imshow(weights, cmap="magma", alpha=0.5, vmin=0, vmax=vmax, extent=pixels)
            ax.set_title(CAPTION_VOCAB[token], fontsize=10)
        for ax in panels[1 + len(ids) :]:
            ax.set_visible(False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, label="attention weight α")
    fig.suptitle(f"Where each word looked · data set caption: “{examples['captions'][index]}”", fontsize=11)
    return fig


def plot_decoder_scores(result: dict) -> Figure:
    """Greedy against beam search: BLEU-4 against five and against one reference, and exact matches."""
    metrics = {"bleu": "BLEU-4, 5 references", "bleu_one_reference": "BLEU-4, 1 reference", "exact": "exact match"}
    scores = result["scores"]
    fig, ax = closed_subplots(figsize=(7, 3.4))
    width = 0.38
    for offset, name in ((-width / 2, "greedy"), (width / 2, "beam")):
        values = [scores[name][key] for key in metrics]
        label = f"beam (k = {result['beam_size']})" if name == "beam" else name
        bars = ax.bar([i + offset for i in range(len(metrics))], values, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(range(len(metrics)), list(metrics.values()))
    ax.set(ylim=(0, 1.12), ylabel="score", title=f"Test captions of seed {result['seed']}")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig

"""Checks for chapter 07 · generation: caption_loss, beam_search, filter_logits and corpus_bleu."""

from __future__ import annotations

import copy
import functools
import math
import numbers
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..grading.harness import (
    Case,
    Mistake,
    build_twin,
    check_cases,
    check_gradients,
    clone_args,
    describe,
    describe_case,
    diagnose,
    expect_close,
    expect_tensor,
    invoke,
    run_case,
)
from ..grading.inputs import PADDING_LEAK, poison_padding
from ..grading.verdict import CheckFailure


def caption_batch(
    lengths: Sequence[int],
    seed: int,
    *,
    vocab: int = 9,
    locations: int = 5,
    pad_id: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (B, T, V), tokens (B, T+1), alphas (B, T, L)) with T = max(lengths); row b has lengths[b] real targets.

    Padded steps hold ordinary logits and attention (a decoder runs there too); when pad_id ≠ 0, id 0 is a real
    word and occurs among the targets.
    """
    generator = torch.Generator().manual_seed(seed)
    batch, steps = len(lengths), max(lengths)
    words = torch.tensor([w for w in range(vocab) if w != pad_id])
    tokens = torch.full((batch, steps + 1), pad_id, dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, : n + 1] = words[torch.randint(len(words), (n + 1,), generator=generator)]
    if pad_id != 0:
        tokens[0, 1] = 0
    logits = torch.randn(batch, steps, vocab, generator=generator, dtype=torch.float64) * 2
    alphas = (torch.randn(batch, steps, locations, generator=generator, dtype=torch.float64) * 1.5).softmax(dim=-1)
    return logits.to(dtype), tokens, alphas.to(dtype)


def _caption_variant(
    logits,
    tokens,
    alphas=None,
    pad_id=0,
    attn_reg=1.0,
    *,
    nll="token",
    shift=True,
    pad_is_zero=False,
    penalty="contract",
):
    """The caption loss with switches for the usual mistakes."""
    pad = 0 if pad_is_zero else pad_id
    targets = tokens[:, 1:] if shift else tokens[:, :-1]  # (B, T)
    real = targets != pad
    picked = logits.log_softmax(-1).gather(-1, targets.clamp(0, logits.shape[-1] - 1)[..., None])[..., 0]  # (B, T)
    picked = picked.masked_fill(~real, 0.0)
    if nll == "token":
        loss = -picked.sum() / real.sum()
    elif nll == "sentence_sum":
        loss = -picked.sum() / len(tokens)
    elif nll == "sentence_mean":
        loss = (-picked.sum(1) / real.sum(1).clamp(min=1)).mean()
    else:  # every position, padding included
        loss = F.cross_entropy(logits.flatten(0, 1), targets.clamp(0, logits.shape[-1] - 1).flatten())
    if alphas is None or penalty == "none":
        return loss
    coverage = (alphas if penalty == "with_pads" else alphas.masked_fill(~real[..., None], 0.0)).sum(1)  # (B, L)
    squares = (1 - coverage) ** 2
    scale = 1.0 if penalty == "lambda_one" else attn_reg
    if penalty == "mean_locations":
        return loss + scale * squares.mean()
    if penalty == "sum_batch":
        return loss + scale * squares.sum()
    return loss + scale * squares.sum(-1).mean()


CAPTION_MISTAKES = [
    Mistake(
        "the doubly stochastic attention penalty is missing (or summed over the wrong axis: each step's α already"
        " sums to 1 over the L locations, so that penalty is 0); add attn_reg · (1/B) Σ_b Σ_l (1 − Σ_t α_btl)²,"
        " the sum over time",
        functools.partial(_caption_variant, penalty="none"),
    ),
    Mistake(
        "attn_reg (the paper's λ) is not applied: the penalty is added with weight 1",
        functools.partial(_caption_variant, penalty="lambda_one"),
    ),
    Mistake(
        "the penalty is averaged over locations as well as over the batch (sgrvinod's `.mean()`); the contract sums"
        " over the L locations and averages over the batch only",
        functools.partial(_caption_variant, penalty="mean_locations"),
    ),
    Mistake(
        "the penalty is summed over the batch; the contract averages it over the B captions",
        functools.partial(_caption_variant, penalty="sum_batch"),
    ),
    Mistake(
        "the penalty's Σ_t counts the padded steps too; only steps whose target is not pad_id count",
        functools.partial(_caption_variant, penalty="with_pads"),
    ),
    Mistake(
        "the NLL is summed per caption and averaged over captions (arctic-captions); the contract is a token-level"
        " mean: divide by N, the number of non-pad targets in the whole batch",
        functools.partial(_caption_variant, nll="sentence_sum"),
    ),
    Mistake(
        "the NLL is a mean per caption, then over captions (short captions weigh as much as long ones); the"
        " contract divides the whole batch's sum by N, the number of non-pad targets",
        functools.partial(_caption_variant, nll="sentence_mean"),
    ),
    Mistake(
        "padding is not ignored: the NLL is averaged over every position, pads included"
        " (F.cross_entropy needs ignore_index=pad_id)",
        functools.partial(_caption_variant, nll="all"),
    ),
    Mistake(
        "the targets are not shifted: logits[:, t] is scored against tokens[:, t+1] (the targets are tokens[:, 1:],"
        " not tokens[:, :-1])",
        functools.partial(_caption_variant, shift=False),
    ),
    Mistake(
        "pad_id is ignored: id 0 is treated as padding, but here pad_id=8 and 0 is a real word",
        functools.partial(_caption_variant, pad_is_zero=True),
    ),
]


def check_caption_loss(learner, reference) -> None:
    batch = caption_batch((6, 3, 1, 4), 0)
    pad8 = caption_batch((2, 6, 5, 1), 1, pad_id=8)
    wide = caption_batch((4, 6, 2, 3), 2, dtype=torch.float64)
    cases = [
        Case("B=4, T=6, V=9, target lengths (6, 3, 1, 4), no attention", batch[:2]),
        Case("the same batch with alphas (L=5), attn_reg 1.0", batch),
        Case(
            "pad_id 8 (so 0 is a real word), target lengths (2, 6, 5, 1), attn_reg 0.3",
            pad8,
            {"pad_id": 8, "attn_reg": 0.3},
        ),
        Case("float64, target lengths (4, 6, 2, 3), attn_reg 2.0", wide, {"attn_reg": 2.0}),
        Case("B=3 with no padding at all, attn_reg 1.0", caption_batch((5, 5, 5), 3, vocab=7, locations=3)),
    ]
    check_cases(learner, reference, cases, mistakes=CAPTION_MISTAKES)
    check_gradients(learner, reference, cases[0], wrt=["logits"])
    for case in cases[2:4]:
        check_gradients(learner, reference, case, wrt=["logits", "alphas"])
    logits, tokens, alphas = batch
    padded_steps = (tokens[:, 1:] == 0)[..., None]  # (B, T, 1): the steps whose target is padding
    poisoned = Case(
        "target lengths (6, 3, 1, 4); the logits and alphas of padded steps hold NaN, +inf and −inf",
        (poison_padding(logits, padded_steps), tokens, poison_padding(alphas, padded_steps)),
    )
    check_cases(learner, reference, [poisoned], mistakes=CAPTION_MISTAKES, unstable_hint=PADDING_LEAK)


class SeededLanguageModel:
    """A next-token model for beam search: seeded log-probabilities (float64) of the last token or the whole prefix.

    Called with a LongTensor (K, t) of prefixes [bos_id, y_1, …]; returns (K, V) log-probabilities. It refuses
    anything else with a ValueError, so a wrong call is reported as such.
    """

    def __init__(self, vocab: int, seed: int, bos_id: int, eos_id: int, *, markov: bool, eos_bias: float, scale: float):
        self.vocab, self.seed, self.bos_id, self.eos_id = vocab, seed, bos_id, eos_id
        self.markov, self.eos_bias, self.scale = markov, eos_bias, scale
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, prefixes: torch.Tensor) -> torch.Tensor:
        if not isinstance(prefixes, torch.Tensor) or prefixes.dtype != torch.long or prefixes.dim() != 2:
            raise ValueError(f"step_fn takes a LongTensor of shape (K, t), got {describe(prefixes)}")
        if prefixes.shape[0] < 1 or prefixes.shape[1] < 1:
            raise ValueError(f"step_fn takes K ≥ 1 prefixes of length t ≥ 1, got shape {tuple(prefixes.shape)}")
        if bool((prefixes[:, 0] != self.bos_id).any()):
            raise ValueError(
                f"every prefix must start with bos_id={self.bos_id}, got rows starting with {prefixes[:, 0].tolist()}"
            )
        generated = prefixes[:, 1:]
        if bool(((generated < 0) | (generated >= self.vocab)).any()):
            raise ValueError(f"token ids after BOS must lie in [0, {self.vocab}), got {generated.tolist()}")
        return torch.stack([self._row(tuple(row)) for row in prefixes.tolist()])

    def _row(self, prefix: tuple[int, ...]) -> torch.Tensor:
        key = prefix[-1:] if self.markov else prefix
        if key not in self._rows:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + hash(key) % 2**40)
            logits = torch.randn(self.vocab, generator=generator, dtype=torch.float64) * self.scale
            logits[self.eos_id] += self.eos_bias
            self._rows[key] = logits.log_softmax(-1)
        return self._rows[key]

    def __repr__(self) -> str:
        kind = "last-token (Markov)" if self.markov else "whole-prefix"
        return f"a seeded {kind} model over V={self.vocab} tokens"


@dataclass(frozen=True)
class BeamConfig:
    """One beam-search input: the model's settings and the search's arguments."""

    label: str
    vocab: int
    seed: int
    bos_id: int
    eos_id: int
    beam_size: int
    max_len: int
    length_penalty: float
    markov: bool
    eos_bias: float = 0.5
    scale: float = 1.5

    def arguments(self) -> tuple[SeededLanguageModel, int, int, int, int, float]:
        model = SeededLanguageModel(
            self.vocab,
            self.seed,
            self.bos_id,
            self.eos_id,
            markov=self.markov,
            eos_bias=self.eos_bias,
            scale=self.scale,
        )
        return model, self.bos_id, self.eos_id, self.beam_size, self.max_len, self.length_penalty

    def describe(self) -> str:
        kind = "last-token (Markov)" if self.markov else "whole-prefix"
        return (
            f"{self.label} — a seeded {kind} model, V={self.vocab}, bos_id={self.bos_id}, eos_id={self.eos_id},"
            f" beam_size={self.beam_size}, max_len={self.max_len}, length_penalty={self.length_penalty:g}"
        )


def beam_configs() -> list[BeamConfig]:
    """Three labelled configurations (greedy, exhaustive twice), then 150 seeded ones.

    A seeded configuration is skipped when two candidates tie (within 1e-6) at a pruning boundary or for the best
    result: a last-token model gives permuted transition sequences the same sum, and the contract has no tie rule.
    """
    configs = [
        BeamConfig("beam_size 1 is greedy decoding", 6, 11, 6, 0, 1, 6, 1.0, markov=True),
        BeamConfig(
            "exhaustive (beam 64 ≥ all 40 sequences of V=4, max_len 3), raw sums: [EOS] alone wins",
            4,
            12,
            4,
            3,
            64,
            3,
            0.0,
            False,
        ),
        BeamConfig("the same exhaustive search with α=1: a full sentence wins", 4, 12, 4, 3, 64, 3, 1.0, False),
    ]
    rng = random.Random(7)
    i = 0
    while len(configs) < 153:
        vocab = 5 + i % 4
        eos = (0, vocab - 1, 2)[i % 3]
        config = BeamConfig(
            f"seeded configuration {i}",
            vocab,
            100 + i,
            vocab if i % 5 else (eos + 1) % vocab,  # BOS outside the vocabulary, or one of its ids
            eos,
            (1, 2, 3, 5)[i // 2 % 4],
            3 + i % 5,
            (0.0, 0.7, 1.0)[i // 8 % 3],
            markov=i % 2 == 0,
            eos_bias=rng.uniform(-1.0, 1.5),
            scale=rng.uniform(1.0, 2.5),
        )
        margins: list[float] = []
        _beam_variant(*config.arguments(), margins=margins)
        if min(margins, default=1.0) > 1e-6:
            configs.append(config)
        i += 1
    return configs


def _beam_variant(
    step_fn,
    bos_id,
    eos_id,
    beam_size,
    max_len,
    length_penalty=1.0,
    *,
    penalty="hf",
    eos_counted=True,
    shrink=True,
    eos_ends=True,
    copies=False,
    stop_at_first=False,
    keep_unfinished=True,
    margins=None,
):
    """Beam search with switches for the usual mistakes; returns (tokens, score).

    With a list as ``margins``, the gap at every pruning boundary and between the two best results is appended.
    """
    alive = [([], 0.0)] * (beam_size if copies else 1)
    finished = []
    for _ in range(max_len):
        k = beam_size - len(finished) if shrink else beam_size
        if k <= 0 or not alive or (not shrink and len(finished) >= beam_size) or (stop_at_first and finished):
            break
        log_probs = step_fn(torch.tensor([[bos_id, *tokens] for tokens, _ in alive]))
        candidates = [
            ([*tokens, token], total + value)
            for (tokens, total), row in zip(alive, log_probs.tolist(), strict=True)
            for token, value in enumerate(row)
        ]
        candidates.sort(key=lambda h: -h[1])
        if margins is not None and len(candidates) > k:
            margins.append(candidates[k - 1][1] - candidates[k][1])
        kept = candidates[:k]
        if eos_ends:
            finished += [h for h in kept if h[0][-1] == eos_id]
            alive = [h for h in kept if h[0][-1] != eos_id]
        else:
            alive = kept
    pool = finished + alive if keep_unfinished or not finished else finished

    def score(hypothesis):
        tokens, total = hypothesis
        n = len(tokens) - (0 if eos_counted or tokens[-1] != eos_id else 1)
        if penalty == "none":
            return total
        if penalty == "gnmt":
            return total / ((5 + n) / 6) ** length_penalty
        return total / max(n, 1) ** length_penalty

    ranked = sorted(pool, key=score, reverse=True)
    if margins is not None and len(ranked) > 1:
        margins.append(score(ranked[0]) - score(ranked[1]))
    return ranked[0][0], score(ranked[0])


BEAM_MISTAKES = [
    Mistake(
        "no length normalisation: hypotheses are ranked by the raw sum S; the contract ranks by S / n**length_penalty",
        functools.partial(_beam_variant, penalty="none"),
    ),
    Mistake(
        "GNMT's length penalty S / ((5 + n) / 6)**α; the contract is Hugging Face's S / n**α",
        functools.partial(_beam_variant, penalty="gnmt"),
    ),
    Mistake(
        "n does not count EOS: n is the number of generated tokens including EOS",
        functools.partial(_beam_variant, eos_counted=False),
    ),
    Mistake(
        "the beam does not shrink: a finished hypothesis must free its slot (k = beam_size − number finished)",
        functools.partial(_beam_variant, shrink=False),
    ),
    Mistake(
        "a hypothesis that emits eos_id stays in the live set and is extended further; it is finished and leaves"
        " the beam",
        functools.partial(_beam_variant, eos_ends=False),
    ),
    Mistake(
        "the search starts from beam_size copies of BOS, so the first step keeps the same extension several times;"
        " start from one empty hypothesis",
        functools.partial(_beam_variant, copies=True),
    ),
    Mistake(
        "the search stops as soon as one hypothesis finishes; it goes on while k > 0 and something is alive",
        functools.partial(_beam_variant, stop_at_first=True),
    ),
    Mistake(
        "hypotheses still alive after max_len steps are dropped; they are finished as they are and compete too",
        functools.partial(_beam_variant, keep_unfinished=False),
    ),
]


def _beam_result(got: Any, context: str) -> tuple[list[int], float]:
    """The learner's (tokens, score) as (list of ints, float), or a failure that says what is wrong with it."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailure(
            "expected a tuple (tokens, score)",
            case=context,
            got=describe(got),
            cause="return `tokens, score`: a list of Python ints and a Python float",
        )
    tokens, score = got
    if not isinstance(tokens, (list, tuple)) or not all(
        isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in tokens
    ):
        raise CheckFailure(
            "tokens must be a list of Python ints",
            case=context,
            got=describe(tokens),
            cause="convert a tensor with `.tolist()`" if isinstance(tokens, torch.Tensor) else None,
        )
    if isinstance(score, (torch.Tensor, bool)) or not isinstance(score, numbers.Real):
        raise CheckFailure(
            "the score must be a Python float",
            case=context,
            got=describe(score),
            cause="convert it with float(...) or .item()" if isinstance(score, torch.Tensor) else None,
        )
    return [int(t) for t in tokens], float(score)


def _same_beam(a: tuple[list[int], float], b: tuple[list[int], float]) -> bool:
    return a[0] == b[0] and math.isclose(a[1], b[1], rel_tol=1e-6, abs_tol=1e-9)


def _show_beam(result: tuple[list[int], float]) -> str:
    return f"tokens {result[0]}, score {result[1]:.6g}"


def check_beam_search(learner, reference) -> None:
    configs = beam_configs()
    results = []
    for config in configs:  # every configuration first, so a mistake can be recognised on all of them
        context = "beam_search: " + config.describe()
        results.append(_beam_result(invoke(learner, *config.arguments(), context=context), context))
    for config, got in zip(configs, results, strict=True):
        expected = reference(*config.arguments())
        if not _same_beam(got, expected):
            raise CheckFailure(
                "wrong result",
                case="beam_search: " + config.describe(),
                expected=_show_beam(expected),
                got=_show_beam(got),
                cause=_beam_cause(got, expected, config, configs, results),
            )


def _beam_cause(
    got: tuple[list[int], float],
    expected: tuple[list[int], float],
    config: BeamConfig,
    configs: list[BeamConfig],
    results: list[tuple[list[int], float]],
) -> str | None:
    tokens, score = got
    if tokens == [config.bos_id, *expected[0]]:
        return "the tokens include BOS: return the generated tokens only (BOS excluded, EOS included)"
    if expected[0][-1:] == [config.eos_id] and tokens == expected[0][:-1]:
        return "EOS is dropped from the tokens: a hypothesis that ended with eos_id keeps it"
    if config.eos_id in tokens[:-1]:
        return (
            "the tokens go on after eos_id: a hypothesis that emits eos_id is finished and leaves the beam"
            " (it is not extended further)"
        )
    here = [m for m in BEAM_MISTAKES if _same_beam(got, m.compute(*config.arguments()))]
    everywhere = [
        m for m in here if all(_same_beam(r, m.compute(*c.arguments())) for c, r in zip(configs, results, strict=True))
    ]
    if everywhere:
        return f"your result equals what this mistake gives on every configuration: {everywhere[0].cause}"
    if tokens == expected[0]:
        raw = expected[1] * len(tokens) ** config.length_penalty
        if math.isclose(score, raw, rel_tol=1e-6, abs_tol=1e-9):
            return "the score is the raw sum S: return the normalised S / n**length_penalty of the best hypothesis"
        return "the right tokens with the wrong score: it is S / n**length_penalty, n counting EOS"
    if here:
        return f"your result equals what this mistake gives: {here[0].cause}"
    return None


def _nucleus_keep(p: torch.Tensor, top_p: float, *, minimal: bool, crossing_kept: bool) -> torch.Tensor:
    """Which entries a nucleus keeps: the contract's (ties kept), or the minimal set of a stable sort."""
    if not minimal:
        above = (p.unsqueeze(-2) * (p.unsqueeze(-2) > p.unsqueeze(-1))).sum(-1)  # (..., V) mass strictly above
        return above < top_p if crossing_kept else above + p < top_p
    ranked, order = p.sort(dim=-1, descending=True, stable=True)
    before = ranked.cumsum(-1) - ranked
    keep_sorted = before < top_p if crossing_kept else before + ranked < top_p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _filter_variant(
    logits,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    *,
    temperature_last=False,
    top_p_first=False,
    crossing_kept=True,
    minimal=False,
    kth_removed=False,
    multiply=False,
    output="z",
):
    """filter_logits with switches for the usual mistakes (in float64, returned in the input's dtype)."""
    z = logits.double()
    scale = (lambda x: x * temperature) if multiply else (lambda x: x / temperature)
    if not temperature_last:
        z = scale(z)

    def by_k(z):
        if not 0 < top_k < z.shape[-1]:
            return z
        kth = z.topk(top_k, dim=-1).values[..., -1:]
        return z.masked_fill(z <= kth if kth_removed else z < kth, -math.inf)

    def by_p(z):
        if top_p >= 1:
            return z
        keep = _nucleus_keep(z.softmax(-1), top_p, minimal=minimal, crossing_kept=crossing_kept)
        return z.masked_fill(~keep, -math.inf)

    z = by_k(by_p(z)) if top_p_first else by_p(by_k(z))
    if temperature_last:
        z = scale(z)
    if output == "probabilities":
        z = z.softmax(-1)
    elif output == "log_probabilities":
        z = z.log_softmax(-1)
    return z.to(logits.dtype)


FILTER_MISTAKES = [
    Mistake(
        "the token that crosses top_p is removed: the nucleus is the smallest set whose mass reaches top_p, so keep"
        " an entry while the mass strictly above it is < top_p",
        functools.partial(_filter_variant, crossing_kept=False),
    ),
    Mistake(
        "top-p is applied before top-k (or computed from the softmax before top-k): the contract renormalises"
        " over the top-k survivors first",
        functools.partial(_filter_variant, top_p_first=True),
    ),
    Mistake(
        "the temperature is applied after filtering: top-p must see softmax(logits / temperature)",
        functools.partial(_filter_variant, temperature_last=True),
    ),
    Mistake(
        "the logits are multiplied by the temperature; they are divided by it",
        functools.partial(_filter_variant, multiply=True),
    ),
    Mistake(
        "top-k removes the k-th value itself (`z <= kth`); entries equal to the k-th largest are kept",
        functools.partial(_filter_variant, kth_removed=True),
    ),
    Mistake(
        "entries tied with the nucleus's least probable member are removed (the minimal set after a sort, as"
        " Hugging Face does); the contract keeps every tied entry",
        functools.partial(_filter_variant, minimal=True),
    ),
    Mistake(
        "probabilities are returned; the contract returns the filtered logits z (−inf where removed)",
        functools.partial(_filter_variant, output="probabilities"),
    ),
    Mistake(
        "log-probabilities are returned (a log_softmax after filtering); the contract returns z = logits /"
        " temperature where kept",
        functools.partial(_filter_variant, output="log_probabilities"),
    ),
]


def _clear_top_p(reference, logits: torch.Tensor, target: float, temperature: float = 1.0, top_k: int = 0) -> float:
    """A top_p near ``target`` at least 1e-3 from every mass boundary of every row (no rounding decides a case)."""
    p = reference(logits.double(), temperature, top_k).softmax(-1)
    ranked = p.sort(dim=-1, descending=True).values
    boundaries = (ranked.cumsum(-1) - ranked).flatten()
    top_p = target
    while bool(((boundaries - top_p).abs() < 1e-3).any()):
        top_p += 0.0037
    return round(top_p, 4)


def check_filter_logits(learner, reference) -> None:
    def rows(shape: tuple[int, ...], seed: int, spread: float = 2.0, dtype=torch.float32) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=generator, dtype=torch.float64) * spread).to(dtype)

    ties_k = torch.tensor([[5.0, 2.0, 2.0, 2.0, 0.0, -1.0], [1.0, 3.0, 0.5, 3.0, 3.0, -2.0]])
    ties_p = torch.tensor([[2.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, -2.0], [0.5, 3.0, 0.5, 0.5]])
    plain, hot, batch = rows((4, 12), 1), rows((2, 12), 2, 1.0), rows((2, 3, 12), 3)
    wide = rows((3, 16), 4, dtype=torch.float64)
    masked = rows((3, 10), 5).index_fill(-1, torch.tensor([2, 7]), -math.inf)
    cases = [
        Case("temperature 0.7 only: z = logits / 0.7", (rows((3, 10), 0), 0.7)),
        Case("top_k=3 on (4, 12) logits", (plain,), {"top_k": 3}),
        Case("top_k=2 with ties at the 2nd value: every tied entry stays", (ties_k,), {"top_k": 2}),
        Case("top_p on (4, 12) logits", (plain,), {"top_p": _clear_top_p(reference, plain, 0.8)}),
        Case("top_p=0.6 with ties: [2, 1, 1, 0] keeps 3 entries", (ties_p,), {"top_p": 0.6}),
        Case(
            "temperature 2.0, then top_p (the temperature changes which entries top-p keeps)",
            (hot, 2.0),
            {"top_p": _clear_top_p(reference, hot, 0.7, 2.0)},
        ),
        Case(
            "temperature 0.5, top_k=5, top_p on a (2, 3, 12) batch",
            (batch, 0.5, 5, _clear_top_p(reference, batch, 0.85, 0.5, 5)),
        ),
        Case("top_k=12 = V: nothing is removed", (plain,), {"top_k": 12}),
        Case("top_k=20 > V and top_p=1.0: nothing is removed", (plain, 1.3, 20, 1.0)),
        Case("logits already holding −inf, top_p", (masked,), {"top_p": _clear_top_p(reference, masked, 0.6)}),
        Case("float64, temperature 1.3, top_k=6, top_p", (wide, 1.3, 6, _clear_top_p(reference, wide, 0.75, 1.3, 6))),
    ]
    for case in cases:
        got, expected = run_case(learner, reference, case)
        context = describe_case(case, reference)
        got = expect_tensor(got, expected, context)
        removed, expected_removed = got.detach() == -math.inf, expected == -math.inf
        if not torch.equal(removed, expected_removed):
            row = int((removed != expected_removed).flatten(0, -2).any(-1).nonzero()[0])
            raise CheckFailure(
                "the wrong entries are removed (set to −inf)",
                case=context,
                expected=_kept(expected_removed, row),
                got=_kept(removed, row),
                cause=_filter_cause(got.detach(), expected, case, row),
            )
        expect_close(got, expected, context, args=case.args, kwargs=case.kwargs, mistakes=FILTER_MISTAKES)


def _kept(removed: torch.Tensor, row: int) -> str:
    flat = removed.flatten(0, -2)[row]
    return f"row {row} keeps indices {(~flat).nonzero().flatten().tolist()}"


def _filter_cause(got: torch.Tensor, expected: torch.Tensor, case: Case, row: int) -> str | None:
    should_go = expected == -math.inf
    if bool(got[should_go].isfinite().all()) and bool((got[should_go] < -1e4).all()):
        return "removed entries must be −inf, not a large negative number (exp(−inf) = 0 exactly)"
    found = diagnose(got, expected, case.args, case.kwargs, FILTER_MISTAKES, atol=1e-5, rtol=1e-5)
    if found:
        return found
    got_row, expected_row = got.flatten(0, -2)[row], expected.flatten(0, -2)[row]
    dropped = (got_row == -math.inf) & (expected_row != -math.inf)
    kept = expected_row[got_row != -math.inf]
    if bool(dropped.any()) and all(bool((kept == value).any()) for value in expected_row[dropped]):
        return (
            "an entry tied with a kept entry was removed: entries equal to the k-th value (top-k), or as probable"
            " as the nucleus's least probable member (top-p), are all kept"
        )
    return None


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_variant(
    hypotheses,
    references,
    max_n=4,
    smooth="none",
    *,
    clip="max",
    reference_length="closest",
    brevity="contract",
    smoothing="contract",
    per_sentence=False,
    denominators="contract",
    mean="geometric",
    percent=False,
):
    """Corpus BLEU with switches for the usual mistakes."""
    if per_sentence:
        scores = [
            _bleu_variant([h], [r], max_n, smooth, clip=clip, reference_length=reference_length)
            for h, r in zip(hypotheses, references, strict=True)
        ]
        return sum(scores) / len(scores)
    pick = {
        "closest": lambda lengths, c: min(lengths, key=lambda n: (abs(n - c), n)),
        "closest_longer": lambda lengths, c: min(lengths, key=lambda n: (abs(n - c), -n)),
        "shortest": lambda lengths, c: min(lengths),
        "longest": lambda lengths, c: max(lengths),
    }[reference_length]
    matches, totals, c, r = [0] * max_n, [0] * max_n, 0, 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        c += len(hyp)
        r += pick([len(ref) for ref in refs], len(hyp))
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            if clip == "none":
                limit = Counter({g: math.inf for ref in refs for g in _ngrams(ref, n)})
            elif clip == "sum":
                limit = sum((_ngrams(ref, n) for ref in refs), Counter())
            else:
                limit = functools.reduce(lambda a, b: a | b, (_ngrams(ref, n) for ref in refs))
            matches[n - 1] += sum(min(count, limit[g]) for g, count in counts.items())
            grams = max(0, len(hyp) - n + 1)
            totals[n - 1] += max(1, grams) if denominators == "nltk" else grams
    if c == 0 or min(totals) == 0 or matches[0] == 0:
        return 0.0
    precisions, zeros = [], 0
    for n, (m, total) in enumerate(zip(matches, totals, strict=True), start=1):
        if smoothing == "add_one":
            precisions.append((m + 1) / (total + 1))
        elif m > 0:
            precisions.append(m / total)
        elif (smooth == "exp" and smoothing != "ignored") or smoothing == "always":
            zeros += 1
            k = {"contract": zeros, "always": zeros, "constant": 1, "order": n}[smoothing]
            precisions.append(1 / (2**k * total))
        else:
            return 0.0
    if mean == "arithmetic":
        combined = sum(precisions) / max_n
    elif mean == "product":
        combined = math.prod(precisions)
    else:
        combined = math.exp(sum(math.log(p) for p in precisions) / max_n)
    bp = {
        "contract": 1.0 if c > r else math.exp(1 - r / c),
        "always": math.exp(1 - r / c),
        "inverted": 1.0 if c > r else math.exp(1 - c / r),
        "none": 1.0,
    }[brevity]
    return bp * combined * (100 if percent else 1)


BLEU_MISTAKES = [
    Mistake(
        "a mean of sentence-level BLEU scores; corpus BLEU sums the clipped matches, n-gram counts and lengths over"
        " the whole corpus before one geometric mean and one brevity penalty",
        functools.partial(_bleu_variant, per_sentence=True),
    ),
    Mistake(
        "matches are not clipped: a hypothesis n-gram counts at most as often as in the single reference where it"
        " occurs most (Papineni's 'the the the …')",
        functools.partial(_bleu_variant, clip="none"),
    ),
    Mistake(
        "the clip adds the counts of all references; it is the maximum count in any single reference",
        functools.partial(_bleu_variant, clip="sum"),
    ),
    Mistake(
        "the brevity penalty uses the longest reference; r sums, per sentence, the reference closest in length"
        " (ties → the shorter)",
        functools.partial(_bleu_variant, reference_length="longest"),
    ),
    Mistake(
        "the brevity penalty uses the shortest reference; r sums, per sentence, the reference closest in length"
        " (ties → the shorter)",
        functools.partial(_bleu_variant, reference_length="shortest"),
    ),
    Mistake(
        "a closest-length tie picks the longer reference; the contract (and sacrebleu) picks the shorter",
        functools.partial(_bleu_variant, reference_length="closest_longer"),
    ),
    Mistake(
        "the brevity penalty is applied even when c > r; BP = 1 then",
        functools.partial(_bleu_variant, brevity="always"),
    ),
    Mistake(
        "the brevity penalty is exp(1 − c/r); it is exp(1 − r/c)", functools.partial(_bleu_variant, brevity="inverted")
    ),
    Mistake("the brevity penalty is missing", functools.partial(_bleu_variant, brevity="none")),
    Mistake(
        'smooth="exp" is ignored: an order without matches gives 1 / (2^k · l_n), k = 1, 2, … for the first,'
        " second, … order without matches",
        functools.partial(_bleu_variant, smoothing="ignored"),
    ),
    Mistake(
        'smoothing is applied with smooth="none": without smoothing, any order without matches gives 0.0',
        functools.partial(_bleu_variant, smoothing="always"),
    ),
    Mistake(
        "smoothing applied to all orders ((m_n + 1) / (l_n + 1), add-one): only orders without matches are"
        ' smoothed, as 1 / (2^k · l_n), and only with smooth="exp"',
        functools.partial(_bleu_variant, smoothing="add_one"),
    ),
    Mistake(
        "k does not grow: the first order without matches gets 1 / (2 · l_n), the second 1 / (4 · l_n), …",
        functools.partial(_bleu_variant, smoothing="constant"),
    ),
    Mistake(
        "k is the order n; it counts the orders without matches so far (1 for the first, 2 for the next, …)",
        functools.partial(_bleu_variant, smoothing="order"),
    ),
    Mistake(
        "a hypothesis shorter than n adds 1 to l_n (nltk's max(1, #n-grams)); l_n counts the n-grams that exist",
        functools.partial(_bleu_variant, denominators="nltk"),
    ),
    Mistake(
        "an arithmetic mean of the precisions; BLEU takes their geometric mean exp((1/max_n) Σ log p_n)",
        functools.partial(_bleu_variant, mean="arithmetic"),
    ),
    Mistake(
        "the product of the precisions: the geometric mean's 1/max_n root is missing",
        functools.partial(_bleu_variant, mean="product"),
    ),
    Mistake(
        "a percentage (sacrebleu's .score): the contract returns BLEU in [0, 1]",
        functools.partial(_bleu_variant, percent=True),
    ),
]


def random_corpus(seed: int) -> tuple[list[list[str]], list[list[list[str]]]]:
    """1–12 sentences with 1–4 references each; hypotheses are edited copies of a reference, some empty."""
    rng = random.Random(seed)
    vocab = ["a", "cat", "dog", "red", "sits", "on", "the", "mat"][: rng.randint(4, 8)]
    hypotheses, references = [], []
    for _ in range(rng.randint(1, 12)):
        refs = [[rng.choice(vocab) for _ in range(rng.randint(2, 12))] for _ in range(rng.randint(1, 4))]
        source = rng.choice(refs)
        hyp = [rng.choice(vocab) if rng.random() < 0.2 else token for token in source][: rng.randint(1, 14)]
        hyp += [rng.choice(vocab) for _ in range(rng.choice((0, 0, 1, 3)))]
        hypotheses.append([] if rng.random() < 0.1 else hyp)
        references.append(refs)
    return hypotheses, references


def check_corpus_bleu(learner, reference) -> None:
    split = str.split
    papineni = (
        [split("the the the the the the the")],
        [[split("the cat is on the mat"), split("there is a cat on the mat")]],
    )
    longer = ([split("a cat sits on the red mat today")], [[split("a cat sits on the mat"), split("the cat sits")]])
    tie = (
        [split("a cat on the mat")],
        [[split("a cat on mat"), split("the cat sat on the mat"), split("a b c d e f g h i")]],
    )
    sparse = ([split("the cat sat on a mat")], [[split("the cat is sat here on a big mat"), split("a mat")]])
    short = ([split("the cat"), split("a"), []], [[split("the cat sat")], [split("a dog")], [split("the end")]])
    cases = [
        Case("Papineni's example, max_n=1: clipped p_1 = 2/7", (*papineni, 1)),
        Case("a hypothesis longer than every reference (BP = 1), max_n=2", (*longer, 2)),
        Case("a closest-length tie: 5 tokens against references of 4, 6 and 9 (→ 4)", (*tie, 2)),
        Case('two orders without matches under smooth="exp"', (*sparse, 4, "exp")),
        Case("the same without smoothing: 0.0", (*sparse, 4, "none")),
        Case("a corpus without 3-grams, max_n=4: 0.0", (*short, 4, "exp")),
        Case("the same corpus with max_n=2", (*short, 2)),
        Case("only empty hypotheses: c = 0, so 0.0", ([[], []], [[split("a b")], [split("c")]], 2, "exp")),
    ]
    for seed in range(40):
        max_n, smooth = (4, 2)[seed // 2 % 2], ("none", "exp")[seed % 2]
        cases.append(Case(f"seeded random corpus {seed}", (*random_corpus(seed), max_n, smooth)))
    check_cases(learner, reference, cases, mistakes=BLEU_MISTAKES, atol=1e-9, rtol=1e-9)


SOFT_ATTENTION_OUTPUTS = ("context", "alpha")

SOFT_ATTENTION_FULLY_PADDED = (
    "a row whose locations are all padded: a softmax over a row of −inf is NaN. Fill padded scores with a large"
    " finite negative (or replace that row's NaN), then set its α to 0"
)


def _soft_attention_inputs(lengths: list[int], locations: int, seed: int, dtype: torch.dtype = torch.float32):
    """(features (B, L, 6), hidden (B, 5), mask (B, L) True at locations ≥ each row's length)."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    features = torch.randn(batch, locations, 6, generator=generator, dtype=torch.float64) * 1.5
    hidden = torch.randn(batch, 5, generator=generator, dtype=torch.float64) * 1.5
    mask = torch.arange(locations)[None, :] >= torch.tensor(lengths)[:, None]
    return features.to(dtype), hidden.to(dtype), mask


def _soft_attention_variant(
    twin,
    features,
    hidden,
    mask=None,
    *,
    activation=torch.tanh,
    axis=-1,
    gate="sigmoid",
    weighted=True,
    masking="before",
    fully_padded="zeros",
    singleton=False,
):
    """Soft attention with switches for the usual mistakes; returns (context, alpha).

    ``masking``: "before" (scores filled before the softmax), "after" (α zeroed after it, not renormalised),
    "inverted" (True read as a real location) or "ignored".
    """
    energy = activation(twin.feature_proj(features) + twin.hidden_proj(hidden)[:, None, :])  # (B, L, A)
    scores = twin.score(energy).squeeze(-1)  # (B, L)
    padded = None
    if mask is not None and masking != "ignored":
        padded = ~mask if masking == "inverted" else mask
        if masking != "after":
            scores = scores.masked_fill(padded, torch.finfo(scores.dtype).min)
    alpha = torch.ones_like(scores) if singleton else torch.softmax(scores, dim=axis)
    if padded is not None:
        if masking == "after":
            alpha = alpha.masked_fill(padded, 0.0)
        if fully_padded == "zeros":
            alpha = alpha.masked_fill(padded.all(dim=-1, keepdim=True), 0.0)
    beta = {"sigmoid": torch.sigmoid(twin.gate(hidden)), "raw": twin.gate(hidden), "none": 1.0}[gate]  # (B, 1)
    pooled = (alpha[..., None] * features).sum(dim=1) if weighted else features.mean(dim=1)  # (B, D)
    return beta * pooled, alpha


def _soft_attention_mistakes(twin) -> list[Mistake]:
    variant = functools.partial(_soft_attention_variant, twin)
    return [
        Mistake(
            "α is normalised over the batch (dim 0); the softmax runs over the L locations (the last axis)",
            functools.partial(variant, axis=0),
        ),
        Mistake(
            "the softmax runs over the score's last axis of size 1 (before the squeeze), so every α is 1: squeeze"
            " the scores to (B, L) and take the softmax over L",
            functools.partial(variant, singleton=True),
        ),
        Mistake(
            "the gate β is missing: context = β · Σ α_i a_i, β = sigmoid(gate(h))",
            functools.partial(variant, gate="none"),
        ),
        Mistake("the gate β is used without its sigmoid: β = sigmoid(gate(h))", functools.partial(variant, gate="raw")),
        Mistake(
            "the context is the plain mean of the features: weight each location by α (Σ_i α_i a_i)",
            functools.partial(variant, weighted=False),
        ),
        Mistake(
            "ReLU instead of tanh (as in sgrvinod's PyTorch tutorial); the contract follows the paper: tanh",
            functools.partial(variant, activation=torch.relu),
        ),
        Mistake(
            "the mask is applied after the softmax (α zeroed, not renormalised): fill the padded scores before it",
            functools.partial(variant, masking="after"),
        ),
        Mistake(
            "the mask is inverted: True marks a padded location to ignore",
            functools.partial(variant, masking="inverted"),
        ),
        Mistake("the mask is ignored", functools.partial(variant, masking="ignored")),
        Mistake(
            "a row whose locations are all padded gets uniform α; the contract gives it α = 0 and context = 0",
            functools.partial(variant, fully_padded="uniform"),
        ),
    ]


def _sharpen_soft_attention(module: nn.Module, twin: nn.Module) -> None:
    """Scale the default initialisation up (peaked α, β far from ½), in both modules."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(3.0)
    twin.load_state_dict(module.state_dict())


def _check_soft_attention_gradients(module: nn.Module, twin: nn.Module, case: Case) -> None:
    """Gradients of features, hidden and every parameter; a parameter whose .grad is None counts as zero."""
    module.zero_grad(set_to_none=True)
    twin.zero_grad(set_to_none=True)
    check_gradients(module, twin, case, wrt=["features", "hidden"], outputs=SOFT_ATTENTION_OUTPUTS)
    learner_parameters = dict(module.named_parameters())
    for name, expected in twin.named_parameters():
        got = learner_parameters[name].grad
        got = torch.zeros_like(expected) if got is None else got
        want = torch.zeros_like(expected) if expected.grad is None else expected.grad
        if not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
            raise CheckFailure(
                f"wrong gradient with respect to parameter `{name}` (the forward value is right)",
                case=describe_case(case, twin) + " (gradient check)",
                cause="NaN in the gradient: a softmax over a row that is all −inf makes NaN in the backward pass even"
                " if the forward value is replaced afterwards; fill with a large finite negative instead"
                if not bool(got.isfinite().all())
                else "a detached or in-place step, or a clamp/where that blocks the gradient",
            )


SOFT_ATTENTION_LEAK = (
    "a padded location leaks into the result: here it holds NaN, +inf and −inf, and a zero α times NaN is still"
    " NaN: zero the padded annotation vectors (`masked_fill`) before the weighted sum"
)


def check_SoftAttention(learner, reference) -> None:
    module, twin = build_twin(learner, reference, 6, 5, 4)
    _sharpen_soft_attention(module, twin)
    features, hidden, _ = _soft_attention_inputs([7, 7, 7], 7, seed=0)
    padded_features, padded_hidden, mask = _soft_attention_inputs([7, 4, 2], 7, seed=1)
    cases = [
        Case("B=3, L=7 locations, D=6, H=5, no mask", (features, hidden)),
        Case("lengths [7, 4, 2] of 7 locations", (padded_features, padded_hidden, mask)),
        Case("one location per row, no mask", (features[:, :1], hidden)),
    ]
    check_cases(module, twin, cases, mistakes=_soft_attention_mistakes(twin), outputs=SOFT_ATTENTION_OUTPUTS)
    fully_padded = Case(
        "lengths [5, 0, 3]: row 1 has no real location (α = 0, context = 0)",
        _soft_attention_inputs([5, 0, 3], 7, seed=2),
    )
    check_cases(
        module,
        twin,
        [fully_padded],
        mistakes=_soft_attention_mistakes(twin),
        outputs=SOFT_ATTENTION_OUTPUTS,
        unstable_hint=SOFT_ATTENTION_FULLY_PADDED,
    )
    _check_soft_attention_gradients(module, twin, cases[1])
    _check_soft_attention_gradients(module, twin, fully_padded)
    poisoned_features = poison_padding(padded_features, mask[..., None])
    poisoned = Case(
        "lengths [7, 4, 2] of 7; padded locations hold NaN, +inf and −inf", (poisoned_features, padded_hidden, mask)
    )
    check_cases(module, twin, [poisoned], outputs=SOFT_ATTENTION_OUTPUTS, unstable_hint=SOFT_ATTENTION_LEAK)
    module.double()
    twin.double()
    float64 = Case(
        "float64 (the module after .double()), lengths [3, 6] of 6", _soft_attention_inputs([3, 6], 6, 3, torch.float64)
    )
    check_cases(module, twin, [float64], mistakes=_soft_attention_mistakes(twin), outputs=SOFT_ATTENTION_OUTPUTS)
    _check_soft_attention_gradients(module, twin, float64)


def _beta_schedule(kind: str, dtype: torch.dtype, steps: int = 1000) -> torch.Tensor:
    """alphas_cumprod (T,) of DDPM's linear β schedule (1e-4 … 0.02) or Nichol & Dhariwal's cosine one."""
    if kind == "linear":
        betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    else:
        f = [math.cos((i / steps + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(steps + 1)]
        betas = torch.tensor([min(1 - f[i + 1] / f[i], 0.999) for i in range(steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0).to(dtype)


class DdpmProbeModel:
    """A fixed ε-model that records what it is called with; ε̂ depends on x_t and on t."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.detach().clone(), torch.as_tensor(t).detach().clone()))
        time = torch.as_tensor(t).to(x_t.dtype).reshape(-1, *[1] * (x_t.dim() - 1)) / 1000  # (B, 1, …)
        return 0.8 * torch.tanh(x_t) + 0.3 * time

    def __repr__(self) -> str:
        return "ε̂ = 0.8·tanh(x_t) + 0.3·t/1000"


class DdpmConvModel(nn.Module):
    """A small ε-model with parameters: a 3×3 convolution plus a sinusoidal time embedding per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.time = nn.Linear(8, channels)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        frequencies = torch.exp(-math.log(1000.0) * torch.arange(4, dtype=x_t.dtype) / 4)  # (4,)
        angles = t.to(x_t.dtype)[:, None] * frequencies  # (B, 4)
        embedding = self.time(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (B, C)
        return self.conv(x_t) + embedding[:, :, None, None]

    def __repr__(self) -> str:
        return "conv ε-model with a time embedding"


class _LossWithModel(nn.Module):
    """A loss function bound to its own ε-model, so that its parameters' gradients can be compared."""

    def __init__(self, loss_fn, eps_model: nn.Module) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        self.eps_model = eps_model

    def forward(self, x0, t, noise, alphas_cumprod):
        return self.loss_fn(self.eps_model, x0, t, noise, alphas_cumprod)


def _noised(x0, t, noise, alphas_cumprod, *, sqrt=True, cumprod_again=False, shift=0, last_axis=False, mix="ddpm"):
    """x_t with switches for the usual mistakes."""
    alpha_bar = alphas_cumprod.cumprod(0) if cumprod_again else alphas_cumprod
    alpha_bar = alpha_bar[t + shift]  # (B,)
    if not last_axis:
        alpha_bar = alpha_bar.reshape(-1, *[1] * (x0.dim() - 1))  # (B, 1, …)
    if mix == "x0":
        return x0
    if not sqrt:
        return alpha_bar * x0 + (1 - alpha_bar) * noise
    noise_scale = 1 - alpha_bar.sqrt() if mix == "one_minus_sqrt" else (1 - alpha_bar).sqrt()
    return alpha_bar.sqrt() * x0 + noise_scale * noise


def _ddpm_variant(eps_model, x0, t, noise, alphas_cumprod, *, target="noise", absolute=False, reduce="mean", **noising):
    """The loss with switches for the usual mistakes; ``reduce``: "mean", "sum" or "sample_sum" (batch mean of sums)."""
    prediction = eps_model(_noised(x0, t, noise, alphas_cumprod, **noising), t)
    error = prediction - (x0 if target == "x0" else noise)
    error = error.abs() if absolute else error.pow(2)
    return {"mean": error.mean(), "sum": error.sum(), "sample_sum": error.flatten(1).sum(1).mean()}[reduce]


def _x_t_variant(eps_model, x0, t, noise, alphas_cumprod, **noising):
    return _noised(x0, t, noise, alphas_cumprod, **noising)


_DDPM_NOISING_MISTAKES = (
    ("√ is missing on ᾱ: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε", {"sqrt": False}),
    (
        "alphas_cumprod is already ᾱ_t = Π(1 − β_s): taking its cumulative product again multiplies the α's twice",
        {"cumprod_again": True},
    ),
    ("ᾱ is read one step late (alphas_cumprod[t + 1]): timesteps are 0-indexed, ᾱ_t = alphas_cumprod[t]", {"shift": 1}),
    (
        "ᾱ is read one step early (alphas_cumprod[t − 1]): timesteps are 0-indexed, ᾱ_t = alphas_cumprod[t]",
        {"shift": -1},
    ),
    (
        "ᾱ of shape (B,) is broadcast over the last axis of x0, not over the batch: reshape it to (B, 1, …, 1)",
        {"last_axis": True},
    ),
    ("the noise is scaled by 1 − √ᾱ_t; it is √(1 − ᾱ_t)", {"mix": "one_minus_sqrt"}),
    ("eps_model is fed x0, not the noised x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε", {"mix": "x0"}),
)


def _ddpm_mistakes(compute) -> list[Mistake]:
    mistakes = [Mistake(cause, functools.partial(compute, **switches)) for cause, switches in _DDPM_NOISING_MISTAKES]
    if compute is _ddpm_variant:
        mistakes += [
            Mistake(
                "the loss compares the prediction with x0; the ε-model predicts the noise ε",
                functools.partial(compute, target="x0"),
            ),
            Mistake(
                "an absolute (L1) error; L_simple is the mean squared error", functools.partial(compute, absolute=True)
            ),
            Mistake(
                "the squared errors are summed; the contract takes their mean over all elements",
                functools.partial(compute, reduce="sum"),
            ),
            Mistake(
                "the squared errors are summed per sample, then averaged over the batch; the contract takes the mean"
                " over all elements (F.mse_loss's default)",
                functools.partial(compute, reduce="sample_sum"),
            ),
        ]
    return mistakes


def _expect_repeatable(fn, case: Case, reference, what: str) -> None:
    """Fail unless two calls of ``fn`` on copies of the same input give the same result."""
    context = describe_case(case, reference) + " (called twice)"
    first, second = (invoke(fn, *clone_args(case.args), context=context, **clone_args(case.kwargs)) for _ in range(2))
    comparable = isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and first.shape == second.shape
    if comparable and not torch.allclose(first.detach(), second.detach(), atol=1e-6, rtol=1e-6, equal_nan=True):
        raise CheckFailure(
            "two calls on the same input give different results",
            case=context,
            cause=f"the result must be deterministic: use the `noise` argument as {what}; do not draw your own"
            " noise (torch.randn…)",
        )


def _check_x_t_seen_by_model(learner, reference, case: Case) -> None:
    """The x_t and t that the learner passes to eps_model (its calls concatenated over the batch)."""
    context = describe_case(case, reference) + "; the x_t that eps_model receives"
    probes = []
    for fn in (learner, reference):
        probe = DdpmProbeModel()
        invoke(fn, probe, *clone_args(case.args[1:]), context=context)
        probes.append(probe)
    learner_probe, reference_probe = probes
    if not learner_probe.calls:
        raise CheckFailure("eps_model was never called", case=context, cause="ε̂ = eps_model(x_t, t)")
    x_t = torch.cat([x for x, _ in learner_probe.calls])
    t = torch.cat([time.reshape(-1) for _, time in learner_probe.calls])
    expected_x_t, expected_t = reference_probe.calls[0]
    if t.shape != expected_t.shape or not torch.equal(t.to(expected_t.dtype), expected_t):
        raise CheckFailure(
            "eps_model was not called with the timesteps t",
            case=context,
            expected=str(expected_t.tolist()),
            got=str(t.tolist()),
            cause="pass t itself (0-indexed, as given): ε̂ = eps_model(x_t, t)",
        )
    mistakes = _ddpm_mistakes(_x_t_variant)
    expect_close(x_t, expected_x_t, context, args=case.args, mistakes=mistakes, atol=1e-5, rtol=1e-5)


def check_ddpm_loss(learner, reference) -> None:
    generator = torch.Generator().manual_seed(0)

    def image_case(label, t, kind, dtype, eps_model):
        x0 = torch.randn(4, 3, 5, 4, generator=generator, dtype=torch.float64).to(dtype)
        noise = torch.randn(4, 3, 5, 4, generator=generator, dtype=torch.float64).to(dtype)
        return Case(label, (eps_model, x0, torch.tensor(t), noise, _beta_schedule(kind, dtype)))

    probe = DdpmProbeModel()
    cases = [
        image_case(
            "x0 (4, 3, 5, 4), t = [10, 400, 250, 700], linear β", [10, 400, 250, 700], "linear", torch.float32, probe
        ),
        image_case("t = [0, 999, 500, 1]: the first and last steps", [0, 999, 500, 1], "linear", torch.float32, probe),
        image_case(
            "cosine schedule, float64, t = [999, 0, 30, 620]", [999, 0, 30, 620], "cosine", torch.float64, probe
        ),
        Case(
            "flat data x0 (5, 7), cosine schedule, t = [3, 999, 0, 512, 77]",
            (
                probe,
                torch.randn(5, 7, generator=generator),
                torch.tensor([3, 999, 0, 512, 77]),
                torch.randn(5, 7, generator=generator),
                _beta_schedule("cosine", torch.float32),
            ),
        ),
    ]
    _expect_repeatable(learner, cases[0], reference, "ε")
    for case in cases:
        _check_x_t_seen_by_model(learner, reference, case)
    check_cases(learner, reference, cases, mistakes=_ddpm_mistakes(_ddpm_variant), atol=1e-6, rtol=1e-5)

    torch.manual_seed(0)
    conv = DdpmConvModel(3)
    with_model = image_case(
        "conv ε-model with a time embedding, t = [0, 999, 123, 640]", [0, 999, 123, 640], "linear", torch.float32, conv
    )
    check_cases(learner, reference, [with_model], mistakes=_ddpm_mistakes(_ddpm_variant), atol=1e-6, rtol=1e-5)
    check_gradients(
        _LossWithModel(learner, copy.deepcopy(conv)),
        _LossWithModel(reference, copy.deepcopy(conv)),
        Case(with_model.label, with_model.args[1:]),
        wrt=["x0"],
        parameters=True,
    )


def _ddim_variant(
    x_t,
    eps_cond,
    eps_uncond,
    guidance_scale,
    t,
    t_prev,
    alphas_cumprod,
    eta=0.0,
    noise=None,
    *,
    guidance="diffusers",
    final="one",
    shift=0,
    clip=False,
    sigma_ratio=True,
    direction_sigma=True,
):
    """One guided DDIM step with switches for the usual mistakes."""
    s = guidance_scale
    eps = {
        "diffusers": eps_uncond + s * (eps_cond - eps_uncond),
        "ho": (1 + s) * eps_cond - s * eps_uncond,
        "swapped": eps_cond + s * (eps_uncond - eps_cond),
        "scaled": s * eps_cond,
    }[guidance]
    alpha_bar = float(alphas_cumprod[t - shift])
    if t_prev >= 0:
        alpha_bar_prev = float(alphas_cumprod[t_prev - shift])
    else:
        alpha_bar_prev = {"one": 1.0, "last": float(alphas_cumprod[-1]), "first": float(alphas_cumprod[0])}[final]
    x0_hat = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    if clip:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    ratio = math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) if sigma_ratio else 1.0
    sigma = eta * ratio * math.sqrt(1 - alpha_bar / alpha_bar_prev)
    direction = math.sqrt(1 - alpha_bar_prev - (sigma**2 if direction_sigma else 0.0)) * eps
    x_prev = math.sqrt(alpha_bar_prev) * x0_hat + direction
    return x_prev + sigma * noise if eta > 0 else x_prev


_DDIM_MISTAKES = (
    (
        "the guidance follows Ho & Salimans' (1 + w)·ε_c − w·ε_u with w = guidance_scale. This contract uses the"
        " diffusers/Imagen convention ε̂ = ε_u + s·(ε_c − ε_u): s = 1 is the conditional model (w = s − 1)",
        {"guidance": "ho"},
    ),
    ("ε_c and ε_u are swapped in the guidance: ε̂ = ε_u + s·(ε_c − ε_u)", {"guidance": "swapped"}),
    ("ε̂ = s·ε_c ignores the unconditional prediction: ε̂ = ε_u + s·(ε_c − ε_u)", {"guidance": "scaled"}),
    (
        "for the final step (t_prev = −1) alphas_cumprod[-1] reads the LAST entry, ᾱ_{T−1}; the contract uses"
        " ᾱ_prev = 1.0 there",
        {"final": "last"},
    ),
    (
        "for the final step (t_prev = −1) ᾱ_prev = alphas_cumprod[0] (diffusers' set_alpha_to_one=False); the"
        " contract uses ᾱ_prev = 1.0",
        {"final": "first"},
    ),
    (
        "ᾱ is read one index early (alphas_cumprod[t − 1]): timesteps are 0-indexed, ᾱ_t = alphas_cumprod[t]",
        {"shift": 1},
    ),
    ("x̂0 is clipped to [−1, 1] (diffusers' default clip_sample=True); the contract does not clip", {"clip": True}),
    (
        "σ lacks the factor √((1 − ᾱ_prev)/(1 − ᾱ_t)): σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)",
        {"sigma_ratio": False},
    ),
    (
        "the direction term uses √(1 − ᾱ_prev)·ε̂; with η > 0 it is √(1 − ᾱ_prev − σ²)·ε̂",
        {"direction_sigma": False},
    ),
)

DDIM_NAN = (
    "a square root of a negative number: 1 − ᾱ_t/ᾱ_prev < 0 means ᾱ_prev < ᾱ_t. For t_prev = −1,"
    " alphas_cumprod[-1] reads the LAST entry (ᾱ_{T−1}); the final step uses ᾱ_prev = 1.0"
)

DDIM_NOISE_NONE = "with eta = 0 no noise is given (noise=None): add σ·noise only when eta > 0 (σ = 0 then anyway)"


def check_guided_ddim_step(learner, reference) -> None:
    generator = torch.Generator().manual_seed(0)
    schedules = {
        (kind, dtype): _beta_schedule(kind, dtype)
        for kind in ("linear", "cosine")
        for dtype in (torch.float32, torch.float64)
    }

    def step_case(t, t_prev, scale, eta, dtype=torch.float32, kind="linear", schedule_dtype=None):
        x_t, eps_cond, eps_uncond, noise = (
            torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64).to(dtype) for _ in range(4)
        )
        eps_cond = 0.6 * eps_cond + 0.4 * x_t  # correlated with x_t, as a trained model's prediction is
        schedule = schedules[(kind, schedule_dtype or dtype)]
        label = f"t={t} → t_prev={t_prev}, s={scale}, η={eta}, {kind} schedule, {str(dtype).replace('torch.', '')}"
        args = (x_t, eps_cond, eps_uncond, scale, t, t_prev, schedule)
        return Case(label, args, {"eta": eta, "noise": noise if eta > 0 else None})

    deterministic = [
        step_case(500, 450, 1.0, 0.0),
        step_case(500, 450, 0.0, 0.0),
        step_case(260, 240, 3.0, 0.0, torch.float64),
        step_case(999, 979, 7.5, 0.0),
        step_case(20, 0, 2.0, 0.0, kind="cosine"),
        step_case(19, -1, 3.0, 0.0),
        step_case(0, -1, 1.0, 0.0, torch.float64),
        step_case(500, 450, 2.0, 0.0, torch.float64, schedule_dtype=torch.float32),
    ]
    stochastic = [
        step_case(500, 450, 2.0, 0.3),
        step_case(260, 240, 7.5, 1.0, torch.float64),
        step_case(20, 0, 3.0, 0.5, kind="cosine"),
        step_case(999, 979, 0.0, 1.0, torch.float64),
        step_case(19, -1, 2.0, 1.0),
        step_case(21, 20, 1.0, 1.0, torch.float64),
    ]
    mistakes = [Mistake(cause, functools.partial(_ddim_variant, **switches)) for cause, switches in _DDIM_MISTAKES]
    try:
        check_cases(learner, reference, deterministic, mistakes=mistakes, atol=1e-4, rtol=1e-5, unstable_hint=DDIM_NAN)
    except CheckFailure as failure:
        if "NoneType" not in failure.problem:
            raise
        raise CheckFailure(failure.problem, case=failure.case, cause=DDIM_NOISE_NONE) from None
    _expect_repeatable(learner, stochastic[0], reference, "the σ·noise term")
    check_cases(learner, reference, stochastic, mistakes=mistakes, atol=1e-4, rtol=1e-5, unstable_hint=DDIM_NAN)

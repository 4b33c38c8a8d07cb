"""Chapter 07 references (caption_loss, beam_search, filter_logits, corpus_bleu) against their peers (PyTorch's
cross-entropy, sgrvinod's beam search, transformers' logits warpers, sacrebleu, nltk, pycocoevalcap), exhaustive
search and properties, and the direct proof that each check rejects its mutants and accepts other-style solutions.

PyPI peers are optional: each test that needs one skips with a reason when it is absent. The one peer formula that
cannot run here (sgrvinod's beam search needs a trained captioning model) is transliterated below as the agreement
oracle, labelled with its source; the package does not use it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from xmodal_ref.generation import checks
from xmodal_ref.generation.checks import SeededLanguageModel, random_corpus
from xmodal_ref.generation.reference import beam_search, caption_loss, corpus_bleu, filter_logits

from .mutants import CORRECT, MUTANTS

# --- caption_loss -----------------------------------------------------------------------------


@pytest.mark.parametrize("pad_id", [0, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_caption_nll_equals_cross_entropy_with_ignore_index(pad_id: int, dtype: torch.dtype) -> None:
    logits, tokens, _ = checks.caption_batch((6, 3, 1, 4), 5, pad_id=pad_id, dtype=dtype)
    expected = F.cross_entropy(logits.reshape(-1, 9), tokens[:, 1:].reshape(-1), ignore_index=pad_id)
    assert torch.allclose(caption_loss(logits, tokens, pad_id=pad_id), expected, rtol=1e-6, atol=1e-7)


@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    attn_reg=st.floats(0.0, 3.0),
    seed=st.integers(0, 10_000),
)
def test_caption_penalty_is_the_doubly_stochastic_term_over_real_steps(lengths, attn_reg, seed) -> None:
    logits, tokens, alphas = checks.caption_batch(lengths, seed, dtype=torch.float64)
    penalty = 0.0
    for b, n in enumerate(lengths):  # target lengths: steps 0..n−1 are real
        for location in range(alphas.shape[-1]):
            penalty += (1 - sum(alphas[b, t, location].item() for t in range(n))) ** 2
    extra = caption_loss(logits, tokens, alphas, attn_reg=attn_reg) - caption_loss(logits, tokens)
    assert extra.item() == pytest.approx(attn_reg * penalty / len(lengths), rel=1e-9, abs=1e-12)


def test_caption_penalty_vanishes_when_every_location_gets_total_attention_one() -> None:
    logits, tokens, _ = checks.caption_batch((5, 5), 0, locations=5, dtype=torch.float64)
    alphas = torch.stack([torch.eye(5, dtype=torch.float64)[torch.randperm(5)] for _ in range(2)])  # (B, T, L)
    assert torch.allclose(caption_loss(logits, tokens, alphas, attn_reg=2.0), caption_loss(logits, tokens))


def test_caption_gradients_reach_logits_and_alphas_only_at_real_steps() -> None:
    logits, tokens, alphas = checks.caption_batch((6, 3, 1, 4), 1, dtype=torch.float64)
    logits.requires_grad_(True)
    alphas.requires_grad_(True)
    caption_loss(logits, tokens, alphas).backward()
    padded = tokens[:, 1:] == 0
    assert bool((logits.grad[padded] == 0).all()) and bool((alphas.grad[padded] == 0).all())
    assert bool((logits.grad[~padded] != 0).any()) and bool((alphas.grad[~padded] != 0).any())


# --- beam_search ------------------------------------------------------------------------------


def sequence_score(model: SeededLanguageModel, tokens: list[int]) -> float:
    """S = Σ log p(y_i | BOS, y_<i), one prefix at a time."""
    prefix, total = [model.bos_id], 0.0
    for token in tokens:
        total += model(torch.tensor([prefix]))[0, token].item()
        prefix.append(token)
    return total


def exhaustive(model: SeededLanguageModel, max_len: int, alpha: float) -> float:
    """The best S / n**α over every finished sequence: EOS-ended up to max_len tokens, or max_len tokens without EOS."""
    words = [v for v in range(model.vocab) if v != model.eos_id]
    sequences = [[*body, model.eos_id] for n in range(max_len) for body in itertools.product(words, repeat=n)]
    sequences += [list(body) for body in itertools.product(words, repeat=max_len)]
    return max(sequence_score(model, s) / len(s) ** alpha for s in sequences)


def greedy(model: SeededLanguageModel, max_len: int, alpha: float) -> tuple[list[int], float]:
    tokens: list[int] = []
    while len(tokens) < max_len and tokens[-1:] != [model.eos_id]:
        tokens.append(int(model(torch.tensor([[model.bos_id, *tokens]]))[0].argmax()))
    return tokens, sequence_score(model, tokens) / len(tokens) ** alpha


@given(
    vocab=st.integers(3, 5),
    max_len=st.integers(1, 4),
    alpha=st.sampled_from([0.0, 0.7, 1.0]),
    markov=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_beam_larger_than_the_search_space_is_exhaustive(vocab, max_len, alpha, markov, seed) -> None:
    model = SeededLanguageModel(vocab, seed, vocab, vocab - 1, markov=markov, eos_bias=0.3, scale=1.5)
    everything = sum((vocab - 1) ** n for n in range(max_len)) + (vocab - 1) ** max_len
    tokens, score = beam_search(model, vocab, vocab - 1, everything, max_len, alpha)
    assert score == pytest.approx(exhaustive(model, max_len, alpha), rel=1e-12, abs=1e-12)
    assert score == pytest.approx(sequence_score(model, tokens) / len(tokens) ** alpha, rel=1e-12, abs=1e-12)


@given(
    vocab=st.integers(3, 8),
    max_len=st.integers(1, 7),
    alpha=st.sampled_from([0.0, 0.7, 1.0]),
    seed=st.integers(0, 10_000),
)
def test_beam_of_one_is_greedy(vocab, max_len, alpha, seed) -> None:
    model = SeededLanguageModel(vocab, seed, vocab, 0, markov=False, eos_bias=0.0, scale=2.0)
    tokens, score = beam_search(model, vocab, 0, 1, max_len, alpha)
    expected_tokens, expected_score = greedy(model, max_len, alpha)
    assert tokens == expected_tokens
    assert score == pytest.approx(expected_score, rel=1e-12, abs=1e-12)


def test_beam_search_curse_raw_sums_prefer_the_empty_caption() -> None:
    curse, normalised = checks.beam_configs()[1:3]
    assert beam_search(*curse.arguments())[0] == [curse.eos_id]
    assert len(beam_search(*normalised.arguments())[0]) == 3


def sgrvinod_beam_search(step_fn, bos_id: int, eos_id: int, beam_size: int, max_len: int) -> tuple[list[int], float]:
    """ORACLE, transliterated from sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning caption.py
    `caption_image_beam_search` (commit 01f749f): the decoder step is `step_fn`, `/` on indices is `//` (the original
    predates integer `/` turning into true division), and the `step > 50` cap is `max_len` steps. It returns the raw
    maximum over completed sequences only (no length normalisation; incomplete ones are dropped)."""
    k = beam_size
    seqs = torch.tensor([[bos_id]] * k)
    top_k_scores = torch.zeros(k, 1, dtype=torch.float64)
    complete_seqs, complete_seqs_scores = [], []
    step = 1
    while True:
        scores = step_fn(seqs)
        vocab_size = scores.shape[1]
        scores = top_k_scores.expand_as(scores) + scores
        if step == 1:
            top_k_scores, top_k_words = scores[0].topk(k, 0, True, True)
        else:
            top_k_scores, top_k_words = scores.view(-1).topk(k, 0, True, True)
        prev_word_inds = top_k_words // vocab_size
        next_word_inds = top_k_words % vocab_size
        seqs = torch.cat([seqs[prev_word_inds], next_word_inds.unsqueeze(1)], dim=1)
        incomplete_inds = [ind for ind, next_word in enumerate(next_word_inds) if next_word != eos_id]
        complete_inds = list(set(range(len(next_word_inds))) - set(incomplete_inds))
        if len(complete_inds) > 0:
            complete_seqs.extend(seqs[complete_inds].tolist())
            complete_seqs_scores.extend(top_k_scores[complete_inds])
        k -= len(complete_inds)
        if k == 0:
            break
        seqs = seqs[incomplete_inds]
        top_k_scores = top_k_scores[incomplete_inds].unsqueeze(1)
        if step >= max_len:
            break
        step += 1
    i = complete_seqs_scores.index(max(complete_seqs_scores))
    return complete_seqs[i][1:], float(complete_seqs_scores[i])


def test_beam_search_equals_sgrvinod_where_its_variant_applies() -> None:
    """sgrvinod ranks by the raw sum over EOS-ended captions: equal for α = 0 when the best caption ends with EOS."""
    compared = 0
    for config in checks.beam_configs():
        model, bos, eos, beam, max_len, _ = config.arguments()
        tokens, score = beam_search(model, bos, eos, beam, max_len, 0.0)
        if tokens[-1] != eos or beam > config.vocab:
            continue
        assert sgrvinod_beam_search(model, bos, eos, beam, max_len) == (tokens, pytest.approx(score, abs=1e-12))
        compared += 1
    assert compared >= 50


# --- filter_logits ----------------------------------------------------------------------------

TRANSFORMERS = "transformers' logits warpers are the top-k/top-p peer (pip install transformers)"


def tie_free_cases(count: int, seed: int):
    """(logits, temperature, top_k, top_p) with top_p ≥ 1e-4 from every cumulative-mass boundary."""
    generator = torch.Generator().manual_seed(seed)
    produced = 0
    while produced < count:
        vocab = int(torch.randint(2, 60, (1,), generator=generator))
        logits = torch.randn(int(torch.randint(1, 5, (1,), generator=generator)), vocab, generator=generator)
        logits = logits * float(torch.rand(1, generator=generator) * 4 + 0.2)
        temperature = float(torch.rand(1, generator=generator) * 2 + 0.2)
        top_k = int(torch.randint(0, vocab + 2, (1,), generator=generator))
        top_p = float(torch.rand(1, generator=generator)) * 0.999 + 0.001 if produced % 4 else 1.0
        z = filter_logits(logits, temperature, top_k)
        ranked = z.softmax(-1).sort(dim=-1, descending=True).values
        if top_p < 1 and bool(((ranked.cumsum(-1) - ranked - top_p).abs() < 1e-4).any()):
            continue
        produced += 1
        yield logits, temperature, top_k, top_p


def test_filter_logits_equals_transformers_warpers_without_ties() -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    for logits, temperature, top_k, top_p in tie_free_cases(300, 0):
        theirs = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k > 0:
            theirs = TopKLogitsWarper(top_k)(None, theirs)
        if top_p < 1:
            theirs = TopPLogitsWarper(top_p)(None, theirs)
        ours = filter_logits(logits, temperature, top_k, top_p)
        assert torch.equal(ours.isinf(), theirs.isinf())
        assert torch.allclose(ours[ours.isfinite()], theirs[theirs.isfinite()], rtol=1e-6, atol=1e-6)


def test_filter_logits_keeps_ties_where_transformers_keeps_the_minimal_set() -> None:
    pytest.importorskip("transformers", reason=TRANSFORMERS)
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    assert int(filter_logits(logits, top_p=0.6).isfinite().sum()) == 3
    assert int(TopPLogitsWarper(0.6)(None, logits.clone()).isfinite().sum()) == 2


@given(
    values=st.lists(st.integers(-4, 4), min_size=2, max_size=12),  # small integers: plenty of exact ties
    temperature=st.sampled_from([0.5, 1.0, 1.7]),
    top_k=st.integers(0, 14),
    top_p=st.floats(0.05, 1.0),
)
def test_filter_logits_follows_its_definition(values, temperature, top_k, top_p) -> None:
    logits = torch.tensor(values, dtype=torch.float64) / 2
    before = logits.clone()
    out = filter_logits(logits, temperature, top_k, top_p)
    assert torch.equal(logits, before) and out.dtype == logits.dtype
    z = logits / temperature
    kept = out.isfinite()
    assert torch.equal(out[kept], z[kept])
    # every entry at least as large as the k-th largest survives top-k; the rest do not
    survivors = z >= z.sort(descending=True).values[top_k - 1] if 0 < top_k < len(values) else torch.ones_like(kept)
    assert not bool((kept & ~survivors).any())
    p = z.masked_fill(~survivors, -math.inf).softmax(-1)
    masses = [p[p > q].sum().item() for q in p]
    assume(top_p >= 1 or min(abs(m - top_p) for m in masses) > 1e-9)  # no rounding decides an entry
    for i, above in enumerate(masses):
        assert bool(kept[i]) == (bool(survivors[i]) and (top_p >= 1 or above < top_p))


# --- corpus_bleu ------------------------------------------------------------------------------

SACREBLEU = "sacrebleu is the corpus-BLEU peer (pip install sacrebleu)"
NLTK = "nltk's corpus_bleu is a BLEU peer (pip install nltk)"
COCO = "pycocoevalcap's Bleu is the captioning BLEU peer (pip install pycocoevalcap)"


def corpora(count: int, seed: int, min_length: int = 0):
    """Random corpora with small vocabularies (many matches), some empty hypotheses unless ``min_length``."""
    rng = random.Random(seed)
    for _ in range(count):
        vocab = ["a", "b", "c", "d", "e", "f"][: rng.randint(3, 6)]
        hypotheses, references = [], []
        for _ in range(rng.randint(1, 12)):
            hypotheses.append([rng.choice(vocab) for _ in range(rng.randint(min_length, 12))])
            length = (max(1, min_length), 12)
            references.append(
                [[rng.choice(vocab) for _ in range(rng.randint(*length))] for _ in range(rng.randint(1, 4))]
            )
        yield hypotheses, references


def test_corpus_bleu_equals_sacrebleu() -> None:
    pytest.importorskip("sacrebleu", reason=SACREBLEU)
    from sacrebleu.metrics import BLEU

    for hypotheses, references in itertools.chain(corpora(200, 0), (random_corpus(s) for s in range(40))):
        streams = [
            [" ".join(refs[j]) if j < len(refs) else None for refs in references]  # None: no j-th reference
            for j in range(max(map(len, references)))
        ]
        for max_n, smooth in itertools.product((4, 2), ("none", "exp")):
            metric = BLEU(tokenize="none", smooth_method=smooth, max_ngram_order=max_n, force=True)
            theirs = metric.corpus_score([" ".join(h) for h in hypotheses], streams).score / 100
            assert corpus_bleu(hypotheses, references, max_n, smooth) == pytest.approx(theirs, abs=1e-14)


def test_corpus_bleu_equals_nltk_when_every_hypothesis_has_four_tokens() -> None:
    bleu_score = pytest.importorskip("nltk.translate.bleu_score", reason=NLTK)
    smoothing = bleu_score.SmoothingFunction()
    for hypotheses, references in corpora(150, 1, min_length=4):
        for smooth, method in (("none", smoothing.method0), ("exp", smoothing.method3)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # method0 warns, and returns ~1e-78 instead of 0
                theirs = bleu_score.corpus_bleu(references, hypotheses, smoothing_function=method)
            ours = corpus_bleu(hypotheses, references, 4, smooth)
            assert ours == pytest.approx(theirs, abs=1e-14) or (ours == 0.0 and theirs < 1e-70)


def test_corpus_bleu_equals_pycocoevalcap_bleu_4() -> None:
    coco = pytest.importorskip("pycocoevalcap.bleu.bleu", reason=COCO)
    compared = 0
    for hypotheses, references in itertools.chain(corpora(150, 2), (random_corpus(s) for s in range(100))):
        ours = corpus_bleu(hypotheses, references)
        if ours == 0.0:  # COCO adds 1e-15 to every match count, so its zero is about 1e-4 after the 4th root
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its counts
            scores, _ = coco.Bleu(4).compute_score(
                {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)},
                {i: [" ".join(h)] for i, h in enumerate(hypotheses)},
            )
        assert ours == pytest.approx(scores[3], abs=1e-9)
        compared += 1
    assert compared >= 100


def test_corpus_bleu_worked_examples() -> None:
    the = ["the"] * 7
    references = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]
    assert corpus_bleu([the], [references], max_n=1) == pytest.approx(2 / 7)
    assert corpus_bleu([references[0]], [references]) == 1.0
    # two orders without matches: p_3 = 1/(2·4), p_4 = 1/(4·3); r = 9 (closest to 6), so BP = exp(1 − 9/6)
    hypothesis = ["the", "cat", "sat", "on", "a", "mat"]
    refs = [["the", "cat", "is", "sat", "here", "on", "a", "big", "mat"], ["a", "mat"]]
    expected = math.exp(1 - 9 / 6) * (6 / 6 * 3 / 5 * 1 / 8 * 1 / 12) ** 0.25
    assert corpus_bleu([hypothesis], [refs], smooth="exp") == pytest.approx(expected)
    assert corpus_bleu([hypothesis], [refs]) == 0.0
    tie = ["a", "cat", "on", "the", "mat"]
    assert corpus_bleu([tie], [[tie[:4], [*tie, "!"]]], max_n=1) == 1.0  # a 4-vs-6 tie → r = 4 < c = 5: BP = 1


@given(seed=st.integers(0, 10_000), max_n=st.sampled_from([1, 2, 4]))
def test_corpus_bleu_properties(seed: int, max_n: int) -> None:
    hypotheses, references = random_corpus(seed)
    plain, smoothed = corpus_bleu(hypotheses, references, max_n), corpus_bleu(hypotheses, references, max_n, "exp")
    assert 0.0 <= plain <= smoothed <= 1.0 and isinstance(plain, float)
    order = list(range(len(hypotheses)))
    random.Random(seed).shuffle(order)
    shuffled = corpus_bleu([hypotheses[i] for i in order], [references[i] for i in order], max_n)
    assert shuffled == pytest.approx(plain, rel=1e-12, abs=1e-15)
    copies = [refs[0] for refs in references]  # every hypothesis equal to one of its references
    if min(map(len, copies)) >= max_n:
        assert corpus_bleu(copies, references, max_n) == pytest.approx(1.0)


def test_every_generation_exercise_has_five_mutants_and_two_other_styles() -> None:
    """The chapter asks for more than the general three (tests/test_mutants.py proves each one)."""
    assert len(MUTANTS) == len(CORRECT) == 7
    for exercise_id in MUTANTS:
        assert len(MUTANTS[exercise_id]) >= 5 and len(CORRECT[exercise_id]) >= 2, exercise_id

"""Seeded text + audio sentiment corpus modelled on CH-SIMS, with a subset where the modalities disagree.

Every sample is a short English sentence, a 16 kHz waveform of 0.5–1.2 s and three labels in [−3, 3]:
a text-only label, an audio-only label and a multimodal label. Nothing is downloaded; a few thousand
samples are built in a few seconds, deterministically under the seed (one ``torch.Generator``).
The waveform carries prosody only (a voiced buzz with syllable-like pulses), no words.

Text label (the lexicon rule, ``sentence_valence``)
    Adjectives carry a valence (``VALENCE``: ±1, ±1.5, ±2, or 0 for neutral ones such as "long").
    A modifier scales the next adjective (``MODIFIERS``: very, really ×1.5; extremely ×2;
    slightly ×0.5) and a negator ("not", "never") multiplies it by −0.5, so "not good" is mildly
    negative and "not terrible" mildly positive. Every other word (the subject, the verb, "and",
    fillers such as "well" or "i think") scores 0. label_text = clip(sum over adjectives, −3, 3).

Audio label (the prosody rule, ``prosody_valence``)
    Four cues, each in [−1, 1], set how the waveform is synthesised:
      pitch:   f0 level, 100 Hz → −1 … 250 Hz → +1 (log scale)
      glide:   overall pitch movement, −6 semitones (falling) → −1 … +6 (rising) → +1
      energy:  voice level, −32 dBFS → −1 … −12 dBFS → +1
      rate:    syllable pulses per second, 3 → −1 … 7 → +1
    label_audio = 0.75 · (pitch + glide + energy + rate): high, rising, loud and fast is positive.
    Duration, pulse phase, noise level and the rise–fall contour below do not enter it.

The multimodal label and the conflict subset
    conflict = label_text · label_audio < 0 (about 27 % of samples). Independently of everything
    else, half of all utterances are delivered with an exaggerated rise–fall pitch contour
    (``rise_fall``): about +3 semitones mid-utterance and −5 at the ends, with zero mean and zero
    net glide, so it leaves the audio label alone. It is the sarcasm cue:
      not conflict:              label = (label_text + label_audio) / 2
      conflict and rise_fall:    label = label_audio   (sarcasm: the tone decides)
      conflict and not rise_fall: label = label_text   (a plain delivery: the words decide)
    On the conflict subset, the words alone get the sign of the label right only on the plain half
    and the tone alone only on the sarcastic half, so either modality is at chance (~50 %); the rule
    needs the sign of both labels and the contour, which only a model seeing both modalities has.
    The conflict flag depends only on the signs of the two labels, and the contour on nothing, so
    neither modality alone can tell a conflict sample from an agreeing one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F

from xmodal_ref.data.features import SentimentFeatures
from xmodal_ref.data.tokens import pad_token_ids
from xmodal_ref.sentiment import log_mel_spectrogram

SAMPLE_RATE = 16000
MIN_SECONDS, MAX_SECONDS = 0.5, 1.2
MAX_SAMPLES = round(MAX_SECONDS * SAMPLE_RATE)  # every split's waveforms have this width
HOP_LENGTH = 160  # log_mel_spectrogram's default: 100 frames per second

# Adjectives by polarity and strength: tier k (0, 1, 2) has valence ±STRENGTHS[k].
STRENGTHS: tuple[float, ...] = (1.0, 1.5, 2.0)
POSITIVE: tuple[tuple[str, ...], ...] = (
    ("good", "nice", "decent"),
    ("great", "lovely", "wonderful"),
    ("amazing", "excellent", "fantastic"),
)
NEGATIVE: tuple[tuple[str, ...], ...] = (
    ("bad", "boring", "dull"),
    ("awful", "annoying", "horrible"),
    ("terrible", "disgusting", "dreadful"),
)
NEUTRAL: tuple[str, ...] = ("long", "new", "old", "big", "small", "different")
VALENCE: dict[str, float] = {
    **{word: strength for strength, words in zip(STRENGTHS, POSITIVE, strict=True) for word in words},
    **{word: -strength for strength, words in zip(STRENGTHS, NEGATIVE, strict=True) for word in words},
    **dict.fromkeys(NEUTRAL, 0.0),
}
MODIFIERS: dict[str, float] = {"very": 1.5, "really": 1.5, "extremely": 2.0, "slightly": 0.5}
NEGATORS: tuple[str, ...] = ("not", "never")
NEGATION_SCALE = -0.5

DETERMINERS: tuple[str, ...] = ("the", "this", "that")
NOUNS: tuple[str, ...] = (
    "movie", "film", "food", "service", "phone", "hotel", "show", "music",
    "game", "book", "trip", "room", "camera", "ending", "weather",
)  # fmt: skip
VERBS: tuple[str, ...] = ("is", "was", "seems", "felt", "looks")
OPENERS: tuple[str, ...] = ("well", "um", "so", "honestly", "i think", "to be honest", "you know")
CLOSERS: tuple[str, ...] = ("overall", "today", "i guess", "to be honest", "this time")

_CLAUSE_WORDS = 6  # determiner, noun, verb, negator, modifier, adjective
# One or two clauses joined by "and", between an optional opener and closer.
MAX_TOKENS = max(len(o.split()) for o in OPENERS) + 2 * _CLAUSE_WORDS + 1 + max(len(c.split()) for c in CLOSERS)


def _build_vocab() -> tuple[str, ...]:
    """Index 0 is "<pad>", then every word the generator can use, sorted: fixed for all seeds."""
    words = set(VALENCE) | set(MODIFIERS) | set(NEGATORS) | set(DETERMINERS) | set(NOUNS) | set(VERBS) | {"and"}
    words |= {word for phrase in OPENERS + CLOSERS for word in phrase.split()}
    return ("<pad>", *sorted(words))


VOCAB: tuple[str, ...] = _build_vocab()
_INDEX = {word: i for i, word in enumerate(VOCAB)}

WORD_DIM = 32
# Frozen word vectors, like a pretrained table: row i embeds VOCAB[i]; the "<pad>" row is zero.
# Drawn once from a fixed seed, independent random directions, so they give word identity only
# and a model has to learn the lexicon from the labels.
WORD_VECTORS = torch.randn(len(VOCAB), WORD_DIM, generator=torch.Generator().manual_seed(1234)) / math.sqrt(WORD_DIM)
WORD_VECTORS[0] = 0.0

# Fixed standardisation of natural-log mel power (mean and std over the real frames of the corpus
# at n_mels=40; other n_mels land close), so loudness and pitch stay visible in absolute terms.
LOG_MEL_MEAN, LOG_MEL_STD = -9.0, 3.3

_T = TypeVar("_T")


@dataclass(frozen=True)
class SentimentCorpus:
    """N utterances; row i of every tensor and entry i of ``sentences`` belong together.

    Labels follow the rules in this module's docstring; ``rise_fall`` marks the sarcasm cue.
    """

    tokens: torch.Tensor  # (N, MAX_TOKENS) int64, right-padded with 0 ("<pad>")
    text_lengths: torch.Tensor  # (N,) int64, number of real tokens
    waveforms: torch.Tensor  # (N, MAX_SAMPLES) float32 at 16 kHz, zero after audio_lengths[i]
    audio_lengths: torch.Tensor  # (N,) int64, in samples
    label: torch.Tensor  # (N,) float32 multimodal label in [−3, 3]
    label_text: torch.Tensor  # (N,) float32 in [−3, 3], sentence_valence of the sentence
    label_audio: torch.Tensor  # (N,) float32 in [−3, 3], prosody_valence of the cues
    conflict: torch.Tensor  # (N,) bool: label_text · label_audio < 0
    rise_fall: torch.Tensor  # (N,) bool: delivered with the exaggerated rise–fall contour
    sentences: list[str]
    vocab: tuple[str, ...]

    def __len__(self) -> int:
        return self.label.shape[0]


def sentence_valence(sentence: str) -> float:
    """The text label of a sentence: the lexicon rule of the module docstring, in [−3, 3].

    Scans the words left to right; negators and modifiers multiply a running scale that the next
    adjective in VALENCE uses (and resets). Unknown words score 0.
    """
    total, scale = 0.0, 1.0
    for word in sentence.split():
        if word in NEGATORS:
            scale *= NEGATION_SCALE
        elif word in MODIFIERS:
            scale *= MODIFIERS[word]
        elif word in VALENCE:
            total, scale = total + scale * VALENCE[word], 1.0
    return min(max(total, -3.0), 3.0)


def prosody_valence(cues: torch.Tensor) -> torch.Tensor:
    """The audio label: (..., 4) cues (pitch, glide, energy, rate) in [−1, 1] → (...) in [−3, 3]."""
    return (0.75 * cues.sum(dim=-1)).clamp(-3.0, 3.0)


def multimodal_label(
    label_text: torch.Tensor, label_audio: torch.Tensor, rise_fall: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(label, conflict), each (N,), from the unimodal labels and the contour flag (all (N,)).

    The mean when the labels agree (or one is 0); on conflict, the tone's label under the
    rise–fall contour and the words' label otherwise.
    """
    conflict = label_text * label_audio < 0
    disagreement = torch.where(rise_fall, label_audio, label_text)
    return torch.where(conflict, disagreement, (label_text + label_audio) / 2), conflict


def _pick(u: float, options: Sequence[_T]) -> _T:
    """The option a uniform draw u in [0, 1) falls on."""
    return options[min(int(u * len(options)), len(options) - 1)]


def _clause(draw: Iterator[float], polarity: int) -> list[str]:
    """Words of "<det> <noun> <verb> [negator] [modifier] <adjective>" whose valence has the sign of polarity."""
    words = [_pick(next(draw), DETERMINERS), _pick(next(draw), NOUNS), _pick(next(draw), VERBS)]
    negated = polarity != 0 and next(draw) < 0.25
    if negated:
        words.append(_pick(next(draw), NEGATORS))
    modifier = _pick(next(draw), (None, None, None, None, *MODIFIERS))  # none half of the time
    if modifier is not None and not (negated and modifier == "slightly"):
        words.append(modifier)
    adjective_sign = -polarity if negated else polarity
    if adjective_sign == 0:
        words.append(_pick(next(draw), NEUTRAL))
    else:
        words.append(_pick(next(draw), _pick(next(draw), POSITIVE if adjective_sign > 0 else NEGATIVE)))
    return words


def _sentence(draw: Iterator[float], polarity: int) -> str:
    """[opener] clause [and clause] [closer]; every clause has the sentence's polarity (−1, 0 or +1)."""
    words = _pick(next(draw), OPENERS).split() if next(draw) < 0.5 else []
    words += _clause(draw, polarity)
    if next(draw) < 0.25:
        words += ["and", *_clause(draw, polarity)]
    if next(draw) < 0.4:
        words += _pick(next(draw), CLOSERS).split()
    return " ".join(words)


def encode_sentences(sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, MAX_TOKENS) int64, right-padded with 0, and lengths (N,) int64 (words in VOCAB)."""
    return pad_token_ids([[_INDEX[word] for word in sentence.split()] for sentence in sentences], MAX_TOKENS)


def _prosody_cues(polarity: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, 4) cues in [−1, 1] for tone polarities (N,) of ±1: prosody_valence is polarity · U(0.6, 3).

    The cues' mean is set by the target label; each cue then deviates from it by a zero-sum
    amount, so a positive tone may still have, say, a low pitch when the other cues make up for it.
    """
    n = polarity.shape[0]
    mean = polarity * (0.2 + 0.8 * torch.rand(n, generator=g))  # (N,), |mean| in [0.2, 1]
    spread = 2 * torch.rand(n, 4, generator=g) - 1
    spread = spread - spread.mean(dim=1, keepdim=True)  # (N, 4), zero-sum, |.| ≤ 1.5
    room = ((1 - mean.abs()) / 1.5).clamp(max=0.4)  # keeps every cue inside [−1, 1]
    return (mean[:, None] + room[:, None] * spread).clamp(-1.0, 1.0)


def _synthesise(
    cues: torch.Tensor, rise_fall: torch.Tensor, lengths: torch.Tensor, g: torch.Generator, chunk: int = 128
) -> torch.Tensor:
    """Waveforms (N, MAX_SAMPLES) float32, zero after lengths (N,) samples, from cues (N, 4) and rise_fall (N,).

    A voiced source of five harmonics (amplitude 1/k) on a time-varying f0, shaped by sin² syllable
    pulses at the speaking rate with 15 ms fades at both ends, plus white noise at −60 to −45 dBFS.
    f0 in semitones around its level: glide·(u − ½) + depth·(sin(πu) − 2/π) over relative time
    u ∈ [0, 1], with depth 7–10 semitones under the rise–fall contour and 0 otherwise.
    """
    n = cues.shape[0]
    pitch, glide, energy, rate = cues.unbind(dim=1)  # (N,) each
    f0_level = 100.0 * 2.5 ** ((pitch + 1) / 2)  # (N,) Hz
    glide_semitones = 6.0 * glide
    gain = 10 ** ((-22.0 + 10.0 * energy) / 20)  # (N,) amplitude of the fundamental
    syllables_per_second = 5.0 + 2.0 * rate
    depth = torch.where(rise_fall, 7.0 + 3.0 * torch.rand(n, generator=g), torch.zeros(n))
    onset = math.pi * torch.rand(n, generator=g)  # pulse phase
    noise_rms = 10 ** ((-60.0 + 15.0 * torch.rand(n, generator=g)) / 20)
    seconds = lengths / SAMPLE_RATE  # (N,)
    t = torch.arange(MAX_SAMPLES) / SAMPLE_RATE  # (T,)

    waves = torch.empty(n, MAX_SAMPLES)
    for i in range(0, n, chunk):
        rows = slice(i, min(i + chunk, n))
        duration = seconds[rows, None]  # (B, 1)
        u = (t / duration).clamp(max=1.0)  # (B, T)
        semitones = glide_semitones[rows, None] * (u - 0.5) + depth[rows, None] * (torch.sin(math.pi * u) - 2 / math.pi)
        f0 = f0_level[rows, None] * 2 ** (semitones / 12)  # (B, T) Hz
        phase = torch.cumsum(f0, dim=1, dtype=torch.float64).mul_(2 * math.pi / SAMPLE_RATE)  # (B, T)
        phase = phase.remainder_(2 * math.pi).float()  # float64 sums, float32 sines
        source = torch.zeros_like(phase)  # (B, T)
        for k in range(1, 6):
            source.add_(torch.sin(k * phase), alpha=1 / k)
        pulses = torch.sin(math.pi * syllables_per_second[rows, None] * t + onset[rows, None]) ** 2  # (B, T)
        fades = (torch.minimum(t, duration - t) / 0.015).clamp(0.0, 1.0)  # (B, T), 0 after the end
        wave = source.mul_(pulses).mul_(fades).mul_(gain[rows, None])
        wave += noise_rms[rows, None] * torch.randn(wave.shape, generator=g)
        inside = torch.arange(MAX_SAMPLES) < lengths[rows, None]  # (B, T)
        waves[rows] = wave.masked_fill_(~inside, 0.0)
    return waves


def make_sentiment_corpus(n: int, seed: int) -> SentimentCorpus:
    """Build ``n`` seeded utterances; only a generator seeded with ``seed`` is used.

    Sentence polarity is 0 (neutral adjectives) for 10 % of samples and ±1 otherwise; the tone's
    polarity is opposite to the words' for 30 % of the non-neutral ones (so ~27 % conflict) and
    random for neutral ones; rise_fall is a fair coin; duration is uniform in 0.5–1.2 s.
    """
    g = torch.Generator().manual_seed(seed)
    polarity = torch.where(torch.rand(n, generator=g) < 0.1, 0, 2 * torch.randint(2, (n,), generator=g) - 1)  # (N,)
    draws = torch.rand(n, 24, generator=g).tolist()  # more uniforms per sentence than it can consume
    sentences = [_sentence(iter(row), p) for row, p in zip(draws, polarity.tolist(), strict=True)]
    tokens, text_lengths = encode_sentences(sentences)
    label_text = torch.tensor([sentence_valence(s) for s in sentences], dtype=torch.float32)

    flip = torch.rand(n, generator=g) < 0.3
    coin = 2 * torch.randint(2, (n,), generator=g) - 1
    tone = torch.where(polarity == 0, coin, torch.where(flip, -polarity, polarity)).float()  # (N,) ±1
    cues = _prosody_cues(tone, g)  # (N, 4)
    label_audio = prosody_valence(cues)
    rise_fall = torch.rand(n, generator=g) < 0.5
    seconds = MIN_SECONDS + (MAX_SECONDS - MIN_SECONDS) * torch.rand(n, generator=g)
    audio_lengths = (seconds * SAMPLE_RATE).round().long()  # (N,)
    waveforms = _synthesise(cues, rise_fall, audio_lengths, g)

    label, conflict = multimodal_label(label_text, label_audio, rise_fall)
    return SentimentCorpus(
        tokens=tokens,
        text_lengths=text_lengths,
        waveforms=waveforms,
        audio_lengths=audio_lengths,
        label=label,
        label_text=label_text,
        label_audio=label_audio,
        conflict=conflict,
        rise_fall=rise_fall,
        sentences=sentences,
        vocab=VOCAB,
    )


def sentiment_splits(
    seed: int = 0, n_train: int = 2000, n_valid: int = 400, n_test: int = 800
) -> dict[str, SentimentCorpus]:
    """ "train", "valid" and "test" corpora built from seeds 3·seed, 3·seed + 1 and 3·seed + 2.

    The splits share the lexicon, the templates and the rules, so the test set holds new
    sentences and new renderings of the same tasks rather than new concepts.
    """
    return {
        "train": make_sentiment_corpus(n_train, seed=3 * seed),
        "valid": make_sentiment_corpus(n_valid, seed=3 * seed + 1),
        "test": make_sentiment_corpus(n_test, seed=3 * seed + 2),
    }


def audio_steps(audio_lengths: torch.Tensor, frames_per_step: int) -> torch.Tensor:
    """Pooled audio steps (N,) int64 of waveforms with audio_lengths (N,) samples: ⌈(1 + n // 160) / k⌉."""
    frames = 1 + audio_lengths // HOP_LENGTH
    return -(-frames // frames_per_step)


def _pooled_log_mel(
    waveforms: torch.Tensor, frame_counts: torch.Tensor, n_mels: int, frames_per_step: int, chunk: int = 128
) -> torch.Tensor:
    """Standardised log-mel frames mean-pooled in groups: (N, T), (N,) → (N, ⌈F / k⌉, n_mels), F = 1 + T // 160.

    Frames at index ≥ frame_counts[i] are left out of every mean, so the last step of an
    utterance averages only its own frames; steps with no real frame are zero.
    """
    pooled = []
    for i in range(0, waveforms.shape[0], chunk):
        rows = slice(i, i + chunk)
        frames = log_mel_spectrogram(waveforms[rows], SAMPLE_RATE, n_mels=n_mels).transpose(1, 2)  # (B, F, M)
        frames = (frames - LOG_MEL_MEAN) / LOG_MEL_STD
        real = torch.arange(frames.shape[1]) < frame_counts[rows, None]  # (B, F)
        pad = -frames.shape[1] % frames_per_step
        frames = F.pad(frames * real[..., None], (0, 0, 0, pad))  # (B, S·k, M)
        counts = F.pad(real.float(), (0, pad))  # (B, S·k)
        b, m = frames.shape[0], frames.shape[2]
        sums = frames.reshape(b, -1, frames_per_step, m).sum(dim=2)  # (B, S, M)
        pooled.append(sums / counts.reshape(b, -1, frames_per_step).sum(dim=2).clamp(min=1)[..., None])
    return torch.cat(pooled)


def corpus_features(corpus: SentimentCorpus, n_mels: int = 40, frames_per_step: int = 4) -> SentimentFeatures:
    """The corpus as model inputs, labels and conflict flags carried over.

    * text: WORD_VECTORS of the tokens, (N, MAX_TOKENS, WORD_DIM), zero after text_lengths.
    * audio: ``log_mel_spectrogram`` (n_mels bands, 10 ms hop) of the waveforms, standardised with
      the fixed LOG_MEL_MEAN and LOG_MEL_STD, then mean-pooled over ``frames_per_step`` consecutive
      frames: (N, ⌈(1 + MAX_SAMPLES // 160) / k⌉, n_mels), with audio_lengths from ``audio_steps``
      and zeros after them. An utterance's steps do not depend on the others in the batch.
    """
    frame_counts = 1 + corpus.audio_lengths // HOP_LENGTH
    return SentimentFeatures(
        text=WORD_VECTORS[corpus.tokens],
        text_lengths=corpus.text_lengths,
        audio=_pooled_log_mel(corpus.waveforms, frame_counts, n_mels, frames_per_step),
        audio_lengths=audio_steps(corpus.audio_lengths, frames_per_step),
        label=corpus.label,
        label_text=corpus.label_text,
        label_audio=corpus.label_audio,
        conflict=corpus.conflict,
    )

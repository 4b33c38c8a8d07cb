"""Mutants and other-style correct solutions for chapter 07: caption_loss, beam_search, filter_logits and corpus_bleu.

Each is written the way a learner would write it, independently of the checks' own models of known mistakes.
"""

import heapq
import math
from collections import Counter
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn


def _token_nll(logits, tokens, pad_id, **kwargs):
    targets = tokens[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id, **kwargs)


def _coverage_penalty(alphas, tokens, pad_id):
    real = (tokens[:, 1:] != pad_id).unsqueeze(-1)
    return ((1 - (alphas * real).sum(1)) ** 2).sum(1).mean()


def caption_no_penalty(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    return _token_nll(logits, tokens, pad_id)


def caption_penalty_over_locations(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    loss = _token_nll(logits, tokens, pad_id)
    if alphas is not None:
        loss = loss + attn_reg * ((1 - alphas.sum(dim=2)) ** 2).sum(1).mean()  # Σ over L, not over t
    return loss


def caption_lambda_ignored(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    loss = _token_nll(logits, tokens, pad_id)
    return loss if alphas is None else loss + _coverage_penalty(alphas, tokens, pad_id)


def caption_sgrvinod_mean(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    loss = _token_nll(logits, tokens, pad_id)
    if alphas is not None:
        real = (tokens[:, 1:] != pad_id).unsqueeze(-1)
        loss = loss + attn_reg * ((1.0 - (alphas * real).sum(dim=1)) ** 2).mean()
    return loss


def caption_pads_in_penalty(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    loss = _token_nll(logits, tokens, pad_id)
    if alphas is not None:
        loss = loss + attn_reg * ((1 - alphas.sum(1)) ** 2).sum(1).mean()
    return loss


def caption_padding_averaged(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())  # no ignore_index
    return loss if alphas is None else loss + attn_reg * _coverage_penalty(alphas, tokens, pad_id)


def caption_sentence_sum(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    loss = _token_nll(logits, tokens, pad_id, reduction="sum") / logits.shape[0]  # arctic-captions: per caption
    return loss if alphas is None else loss + attn_reg * _coverage_penalty(alphas, tokens, pad_id)


def caption_unshifted(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    targets = tokens[:, :-1]
    loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=pad_id)
    return loss if alphas is None else loss + attn_reg * _coverage_penalty(alphas, tokens, pad_id)


def caption_pad_zero(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    loss = _token_nll(logits, tokens, 0)
    return loss if alphas is None else loss + attn_reg * _coverage_penalty(alphas, tokens, 0)


def caption_loop(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    total, count, penalty = 0.0, 0, 0.0
    for b in range(logits.shape[0]):
        coverage = torch.zeros(alphas.shape[-1], dtype=logits.dtype) if alphas is not None else None
        for t in range(logits.shape[1]):
            target = int(tokens[b, t + 1])
            if target == pad_id:
                continue
            total = total - torch.log_softmax(logits[b, t], dim=0)[target]
            count += 1
            if alphas is not None:
                coverage = coverage + alphas[b, t]
        if alphas is not None:
            penalty = penalty + ((1 - coverage) ** 2).sum()
    loss = total / count
    return loss if alphas is None else loss + attn_reg * penalty / logits.shape[0]


def caption_mask_multiply(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    """Right while padded steps hold finite numbers; a 0/1 mask times NaN is NaN."""
    targets = tokens[:, 1:]
    mask = (targets != pad_id).to(logits.dtype)
    one_hot = F.one_hot(torch.where(targets == pad_id, 0, targets), logits.shape[-1]).to(logits.dtype)
    nll = -torch.einsum("btv,btv,bt->", logits.log_softmax(-1), one_hot, mask) / mask.sum()
    if alphas is None:
        return nll
    coverage = torch.einsum("btl,bt->bl", alphas, mask)
    return nll + attn_reg * (1 - coverage).pow(2).sum() / alphas.shape[0]


def caption_one_hot_einsum(logits, tokens, alphas=None, pad_id=0, attn_reg=1.0):
    targets = tokens[:, 1:]
    real = (targets != pad_id)[..., None]  # (B, T, 1)
    mask = real[..., 0].to(logits.dtype)
    one_hot = F.one_hot(torch.where(targets == pad_id, 0, targets), logits.shape[-1]).to(logits.dtype)
    log_probs = torch.where(real, logits.log_softmax(-1), torch.zeros_like(logits))  # padded steps select nothing
    nll = -torch.einsum("btv,btv->", log_probs, one_hot) / mask.sum()
    if alphas is None:
        return nll
    coverage = torch.einsum("btl->bl", torch.where(real, alphas, torch.zeros_like(alphas)))
    return nll + attn_reg * (1 - coverage).pow(2).sum() / alphas.shape[0]


def _beam(step_fn, bos_id, eos_id, beam_size, max_len, rank, *, shrink=True, stop_early=False, copies=1):
    """A learner's beam search, one call per step; ``rank`` maps (tokens, S) to the final ranking score."""
    beams, done = [([], 0.0)] * copies, []
    for _ in range(max_len):
        k = beam_size - len(done) if shrink else beam_size
        if k <= 0 or not beams or (not shrink and len(done) >= beam_size) or (stop_early and done):
            break
        logp = step_fn(torch.tensor([[bos_id, *tokens] for tokens, _ in beams]))
        options = [
            (score + float(logp[i, v]), [*tokens, v])
            for i, (tokens, score) in enumerate(beams)
            for v in range(logp.shape[1])
        ]
        beams = []
        for score, tokens in sorted(options, reverse=True)[:k]:
            (done if tokens[-1] == eos_id else beams).append((tokens, score))
    tokens, score = max(done + beams, key=lambda h: rank(*h))
    return tokens, rank(tokens, score)


def beam_raw_sum(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    return _beam(step_fn, bos_id, eos_id, beam_size, max_len, lambda tokens, s: s)


def beam_gnmt(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    return _beam(step_fn, bos_id, eos_id, beam_size, max_len, lambda t, s: s / ((5 + len(t)) / 6) ** length_penalty)


def beam_length_without_eos(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    def rank(tokens, s):
        words = [t for t in tokens if t != eos_id]
        return s / max(len(words), 1) ** length_penalty

    return _beam(step_fn, bos_id, eos_id, beam_size, max_len, rank)


def beam_constant_width(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    rank = lambda t, s: s / len(t) ** length_penalty  # noqa: E731
    return _beam(step_fn, bos_id, eos_id, beam_size, max_len, rank, shrink=False)


def beam_stops_at_first_eos(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    rank = lambda t, s: s / len(t) ** length_penalty  # noqa: E731
    return _beam(step_fn, bos_id, eos_id, beam_size, max_len, rank, stop_early=True)


def beam_copies_of_bos(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    rank = lambda t, s: s / len(t) ** length_penalty  # noqa: E731
    return _beam(step_fn, bos_id, eos_id, beam_size, max_len, rank, copies=beam_size)


def beam_returns_raw_score(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    tokens, score = _beam(step_fn, bos_id, eos_id, beam_size, max_len, lambda t, s: s / len(t) ** length_penalty)
    return tokens, score * len(tokens) ** length_penalty


def beam_keeps_bos(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    tokens, score = _beam(step_fn, bos_id, eos_id, beam_size, max_len, lambda t, s: s / len(t) ** length_penalty)
    return [bos_id, *tokens], score


def beam_extends_finished(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    sequences = torch.full((1, 1), bos_id)
    scores = torch.zeros(1, dtype=torch.float64)
    for _ in range(max_len):
        logp = step_fn(sequences)
        total = (scores[:, None] + logp).flatten()
        top = total.topk(min(beam_size, total.numel()))
        rows, tokens = top.indices // logp.shape[1], top.indices % logp.shape[1]
        sequences = torch.cat([sequences[rows], tokens[:, None]], dim=1)
        scores = top.values
    normalised = scores / (sequences.shape[1] - 1) ** length_penalty
    best = int(normalised.argmax())
    return sequences[best, 1:].tolist(), float(normalised[best])


def beam_score_tensor(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    tokens, score = _beam(step_fn, bos_id, eos_id, beam_size, max_len, lambda t, s: s / len(t) ** length_penalty)
    return tokens, torch.tensor(score)


def beam_heap_per_prefix(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    alive, finished = [(0.0, ())], []
    for _ in range(max_len):
        width = beam_size - len(finished)
        if width == 0 or not alive:
            break
        candidates = []
        for score, prefix in alive:
            row = step_fn(torch.tensor([(bos_id, *prefix)]))[0].tolist()
            candidates += [(score + value, (*prefix, token)) for token, value in enumerate(row)]
        best = heapq.nlargest(width, candidates)
        finished += [(s, p) for s, p in best if p[-1] == eos_id]
        alive = [(s, p) for s, p in best if p[-1] != eos_id]
    score, tokens = max((s / len(p) ** length_penalty, p) for s, p in finished + alive)
    return list(tokens), score


def beam_tensors(step_fn, bos_id, eos_id, beam_size, max_len, length_penalty=1.0):
    prefixes = torch.tensor([[bos_id]])
    sums = torch.zeros(1, dtype=torch.float64)
    finished = []
    for _ in range(max_len):
        k = beam_size - len(finished)
        if k == 0 or len(prefixes) == 0:
            break
        logp = step_fn(prefixes).double()
        candidates = (sums.unsqueeze(1) + logp).view(-1)
        values, flat = candidates.topk(min(k, candidates.numel()))
        prefixes = torch.cat([prefixes[flat // logp.shape[1]], (flat % logp.shape[1]).unsqueeze(1)], dim=1)
        ended = prefixes[:, -1] == eos_id
        finished += [(row[1:].tolist(), float(v)) for row, v in zip(prefixes[ended], values[ended], strict=True)]
        prefixes, sums = prefixes[~ended], values[~ended]
    finished += [(row[1:].tolist(), float(v)) for row, v in zip(prefixes, sums, strict=True)]
    normalised = [s / len(t) ** length_penalty for t, s in finished]
    best = max(range(len(finished)), key=normalised.__getitem__)
    return finished[best][0], normalised[best]


def _nucleus(z, top_p, keep_crossing=True):
    """A learner's descending-sort nucleus; entries as probable as its least probable member stay too."""
    p = z.softmax(-1)
    ranked = p.sort(dim=-1, descending=True).values
    cumulative = ranked.cumsum(-1)
    inside = (cumulative - ranked < top_p) if keep_crossing else (cumulative < top_p)
    smallest = ranked.masked_fill(~inside, 2.0).min(-1, keepdim=True).values  # 2.0 when nothing is inside
    return z.masked_fill(p < smallest, float("-inf"))


def _top_k(z, top_k):
    if 0 < top_k < z.shape[-1]:
        z = z.masked_fill(z < z.topk(top_k, dim=-1).values[..., -1:], float("-inf"))
    return z


def filter_drops_crossing_token(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = _top_k(logits / temperature, top_k)
    return _nucleus(z, top_p, keep_crossing=False) if top_p < 1 else z


def filter_top_p_first(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = logits / temperature
    if top_p < 1:
        z = _nucleus(z, top_p)
    return _top_k(z, top_k)


def filter_temperature_last(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = _top_k(logits.clone(), top_k)
    if top_p < 1:
        z = _nucleus(z, top_p)
    return z / temperature


def filter_multiplies_temperature(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = _top_k(logits * temperature, top_k)
    return _nucleus(z, top_p) if top_p < 1 else z


def filter_removes_kth(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = logits / temperature
    if 0 < top_k < z.shape[-1]:
        z = z.masked_fill(z <= torch.topk(z, top_k)[0][..., -1, None], float("-inf"))
    return _nucleus(z, top_p) if top_p < 1 else z


def filter_hugging_face_ties(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = _top_k(logits / temperature, top_k)
    if top_p < 1:  # TopPLogitsWarper: ascending sort, drop the tail whose mass is ≤ 1 − top_p
        sorted_logits, order = torch.sort(z, descending=False)
        tail = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        tail[..., -1:] = False
        z = z.masked_fill(tail.scatter(-1, order, tail), float("-inf"))
    return z


def filter_exact_k_scatter(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = logits / temperature
    if 0 < top_k < z.shape[-1]:
        kept = torch.full_like(z, float("-inf"))
        index = z.topk(top_k, dim=-1).indices
        z = kept.scatter(-1, index, z.gather(-1, index))
    return _nucleus(z, top_p) if top_p < 1 else z


def filter_in_place(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = _top_k(logits.div_(temperature), top_k)
    return _nucleus(z, top_p) if top_p < 1 else z


def filter_returns_probabilities(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = _top_k(logits / temperature, top_k)
    z = _nucleus(z, top_p) if top_p < 1 else z
    return z.softmax(dim=-1)


def filter_large_negative(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = _top_k(logits / temperature, top_k)
    z = _nucleus(z, top_p) if top_p < 1 else z
    return z.masked_fill(z == float("-inf"), -1e9)


def filter_row_loop(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = logits / temperature
    flat = z.reshape(-1, z.shape[-1])
    out = torch.full_like(flat, float("-inf"))
    for r, row in enumerate(flat):
        values = row.tolist()
        keep = [True] * len(values)
        if 0 < top_k < len(values):
            kth = sorted(values, reverse=True)[top_k - 1]
            keep = [v >= kth for v in values]
        if top_p < 1:
            masked = row.masked_fill(~torch.tensor(keep), float("-inf"))
            probs = masked.softmax(0).tolist()
            keep = [keep[i] and sum(q for q in probs if q > probs[i]) < top_p for i in range(len(values))]
        out[r] = row.masked_fill(~torch.tensor(keep), float("-inf"))
    return out.reshape(z.shape)


def filter_pairwise(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = logits / temperature
    if 0 < top_k < z.shape[-1]:
        rank = (z.unsqueeze(-1) < z.unsqueeze(-2)).sum(-1)  # how many entries are strictly larger
        z = torch.where(rank < top_k, z, float("-inf"))
    if top_p < 1:
        p = torch.softmax(z, dim=-1)
        above = torch.einsum("...j,...ij->...i", p, (p.unsqueeze(-2) > p.unsqueeze(-1)).to(p.dtype))
        z = torch.where(above < top_p, z, float("-inf"))
    return z


def filter_threshold_probability(logits, temperature=1.0, top_k=0, top_p=1.0):
    z = logits / temperature
    if 0 < top_k < z.shape[-1]:
        z = torch.where(z >= z.topk(top_k, -1).values.min(-1, keepdim=True).values, z, -math.inf)
    if top_p < 1:  # the nucleus's least probable member sets a probability threshold; ties with it stay
        p = z.softmax(-1)
        ranked = p.sort(-1, descending=True).values
        count = ((ranked.cumsum(-1) - ranked) < top_p).sum(-1, keepdim=True)
        threshold = ranked.gather(-1, count - 1)
        z = torch.where(p >= threshold, z, -math.inf)
    return z


def _grams(tokens, n):
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _statistics(hypotheses, references, max_n, clip=max, choose=None):
    """Summed (clipped matches, n-gram counts) per order, hypothesis length and reference length."""
    choose = choose or (lambda lengths, c: min(lengths, key=lambda x: (abs(x - c), x)))
    matches, totals, c, r = [0] * max_n, [0] * max_n, 0, 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        c += len(hyp)
        r += choose([len(x) for x in refs], len(hyp))
        for n in range(1, max_n + 1):
            counts = _grams(hyp, n)
            per_ref = [_grams(ref, n) for ref in refs]
            matches[n - 1] += sum(min(k, clip(ref[g] for ref in per_ref)) for g, k in counts.items())
            totals[n - 1] += max(0, len(hyp) - n + 1)
    return matches, totals, c, r


def _combine(matches, totals, c, r, max_n, smooth):
    if c == 0 or min(totals) == 0 or matches[0] == 0:
        return 0.0
    logs, zeros = [], 0
    for m, total in zip(matches, totals, strict=True):
        if m:
            logs.append(math.log(m / total))
        elif smooth == "exp":
            zeros += 1
            logs.append(math.log(1 / (2**zeros * total)))
        else:
            return 0.0
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(sum(logs) / max_n)


def bleu_sentence_average(hypotheses, references, max_n=4, smooth="none"):
    scores = [
        _combine(*_statistics([h], [r], max_n), max_n, smooth) for h, r in zip(hypotheses, references, strict=True)
    ]
    return sum(scores) / len(scores)


def bleu_unclipped(hypotheses, references, max_n=4, smooth="none"):
    stats = _statistics(hypotheses, references, max_n, clip=lambda counts: math.inf if max(counts) else 0)
    return _combine(*stats, max_n, smooth)


def bleu_summed_clip(hypotheses, references, max_n=4, smooth="none"):
    return _combine(*_statistics(hypotheses, references, max_n, clip=sum), max_n, smooth)


def bleu_longest_reference(hypotheses, references, max_n=4, smooth="none"):
    stats = _statistics(hypotheses, references, max_n, choose=lambda lengths, c: max(lengths))
    return _combine(*stats, max_n, smooth)


def bleu_tie_to_longer(hypotheses, references, max_n=4, smooth="none"):
    stats = _statistics(
        hypotheses, references, max_n, choose=lambda ls, c: sorted(ls, key=lambda x: (abs(x - c), -x))[0]
    )
    return _combine(*stats, max_n, smooth)


def bleu_ignores_smoothing(hypotheses, references, max_n=4, smooth="none"):
    return _combine(*_statistics(hypotheses, references, max_n), max_n, "none")


def bleu_add_one_everywhere(hypotheses, references, max_n=4, smooth="none"):
    matches, totals, c, r = _statistics(hypotheses, references, max_n)
    if c == 0 or min(totals) == 0 or matches[0] == 0:
        return 0.0
    if smooth == "exp":
        precisions = [(m + 1) / (t + 1) for m, t in zip(matches, totals, strict=True)]
    elif min(matches) == 0:
        return 0.0
    else:
        precisions = [m / t for m, t in zip(matches, totals, strict=True)]
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(sum(map(math.log, precisions)) / max_n)


def bleu_constant_smoothing(hypotheses, references, max_n=4, smooth="none"):
    matches, totals, c, r = _statistics(hypotheses, references, max_n)
    if c == 0 or min(totals) == 0 or matches[0] == 0 or (smooth != "exp" and min(matches) == 0):
        return 0.0
    precisions = [m / t if m else 1 / (2 * t) for m, t in zip(matches, totals, strict=True)]
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.prod(precisions) ** (1 / max_n)


def bleu_percentage(hypotheses, references, max_n=4, smooth="none"):
    return 100 * _combine(*_statistics(hypotheses, references, max_n), max_n, smooth)


def bleu_nltk_denominators(hypotheses, references, max_n=4, smooth="none"):
    matches, totals, c, r = _statistics(hypotheses, references, max_n)
    totals = [sum(max(1, len(h) - n + 1) for h in hypotheses) for n in range(1, max_n + 1)]
    return _combine(matches, totals, c, r, max_n, smooth)


def bleu_crashes_without_ngrams(hypotheses, references, max_n=4, smooth="none"):
    matches, totals, c, r = _statistics(hypotheses, references, max_n)
    precisions = [m / t for m, t in zip(matches, totals, strict=True)]  # ZeroDivisionError when an order is empty
    if c == 0 or matches[0] == 0:
        return 0.0
    return _combine(matches, totals, c, r, max_n, smooth) if precisions else 0.0


def bleu_sacrebleu_style(hypotheses, references, max_n=4, smooth="none"):
    stats = [0] * (2 + 2 * max_n)  # c, r, then (matches, totals) per order, summed sentence by sentence
    for hyp, refs in zip(hypotheses, references, strict=True):
        closest = sorted(refs, key=lambda ref: (abs(len(ref) - len(hyp)), len(ref)))[0]
        sentence = [len(hyp), len(closest)]
        for n in range(1, max_n + 1):
            hyp_counts = _grams(hyp, n)
            best = Counter()
            for ref in refs:
                for gram, count in _grams(ref, n).items():
                    best[gram] = max(best[gram], count)
            sentence += [sum(min(count, best[gram]) for gram, count in hyp_counts.items()), sum(hyp_counts.values())]
        stats = [a + b for a, b in zip(stats, sentence, strict=True)]
    c, r, correct, total = stats[0], stats[1], stats[2::2], stats[3::2]
    if c == 0 or 0 in total or correct[0] == 0:
        return 0.0
    factor, precisions = 1, []
    for m, t in zip(correct, total, strict=True):
        if m == 0:
            if smooth != "exp":
                return 0.0
            factor *= 2
            precisions.append(1 / (factor * t))
        else:
            precisions.append(m / t)
    return min(1.0, math.exp(1 - r / c)) * math.exp(sum(math.log(p) for p in precisions) / max_n)


def bleu_fractions(hypotheses, references, max_n=4, smooth="none"):
    hyp_len = sum(len(h) for h in hypotheses)
    ref_len = 0
    for h, refs in zip(hypotheses, references, strict=True):
        lengths = sorted({len(x) for x in refs})
        ref_len += min(lengths, key=lambda x: abs(x - len(h)))  # sorted, so a tie keeps the shorter
    precisions, halvings = [], 0
    for n in range(1, max_n + 1):
        matched = possible = 0
        for h, refs in zip(hypotheses, references, strict=True):
            grams = {}
            for i in range(len(h) - n + 1):
                grams[tuple(h[i : i + n])] = grams.get(tuple(h[i : i + n]), 0) + 1
            for gram, count in grams.items():
                in_refs = max(sum(tuple(x[j : j + n]) == gram for j in range(len(x) - n + 1)) for x in refs)
                matched += min(count, in_refs)
            possible += max(0, len(h) - n + 1)
        if possible == 0 or (n == 1 and matched == 0):
            return 0.0
        if matched == 0 and smooth != "exp":
            return 0.0
        if matched == 0:
            halvings += 1
        precisions.append(Fraction(matched, possible) if matched else Fraction(1, 2**halvings * possible))
    if hyp_len == 0:
        return 0.0
    penalty = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return penalty * math.prod(float(p) for p in precisions) ** (1 / max_n)


class _SoftAttentionLayers(nn.Module):
    """The contract's four submodules; subclasses write forward."""

    def __init__(self, feature_dim, hidden_dim, attn_dim):
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attn_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1, bias=False)
        self.gate = nn.Linear(hidden_dim, 1)

    def energies(self, features, hidden, mask, activation=torch.tanh):
        """Scores (B, L), padded locations filled with a large negative."""
        e = self.score(activation(self.feature_proj(features) + self.hidden_proj(hidden).unsqueeze(1))).squeeze(-1)
        return e if mask is None else e.masked_fill(mask, -1e9)

    @staticmethod
    def zero_empty_rows(alpha, mask):
        return alpha if mask is None else alpha * (~mask).any(-1, keepdim=True).to(alpha.dtype)


class SoftAttentionSoftmaxOverBatch(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        alpha = self.zero_empty_rows(F.softmax(self.energies(features, hidden, mask), dim=0), mask)
        context = torch.sigmoid(self.gate(hidden)) * (alpha.unsqueeze(-1) * features).sum(1)
        return context, alpha


class SoftAttentionSoftmaxBeforeSqueeze(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        att = self.score(torch.tanh(self.feature_proj(features) + self.hidden_proj(hidden).unsqueeze(1)))  # (B, L, 1)
        if mask is not None:
            att = att.masked_fill(mask.unsqueeze(-1), -1e9)
        alpha = self.zero_empty_rows(att.softmax(dim=-1).squeeze(-1), mask)
        context = torch.sigmoid(self.gate(hidden)) * (alpha.unsqueeze(-1) * features).sum(1)
        return context, alpha


class SoftAttentionNoGate(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        alpha = self.zero_empty_rows(self.energies(features, hidden, mask).softmax(-1), mask)
        return (alpha.unsqueeze(-1) * features).sum(1), alpha


class SoftAttentionGateWithoutSigmoid(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        alpha = self.zero_empty_rows(self.energies(features, hidden, mask).softmax(-1), mask)
        return self.gate(hidden) * (alpha.unsqueeze(-1) * features).sum(1), alpha


class SoftAttentionMeanContext(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        alpha = self.zero_empty_rows(self.energies(features, hidden, mask).softmax(-1), mask)
        return torch.sigmoid(self.gate(hidden)) * features.mean(1), alpha


class SoftAttentionReLU(_SoftAttentionLayers):
    """sgrvinod's tutorial: ReLU over the summed projections."""

    def forward(self, features, hidden, mask=None):
        alpha = self.zero_empty_rows(self.energies(features, hidden, mask, activation=F.relu).softmax(-1), mask)
        context = torch.sigmoid(self.gate(hidden)) * (alpha.unsqueeze(-1) * features).sum(1)
        return context, alpha


class SoftAttentionPerChannelGate(nn.Module):
    """sgrvinod's tutorial: f_beta = Linear(decoder_dim, encoder_dim), one gate per channel."""

    def __init__(self, feature_dim, hidden_dim, attn_dim):
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attn_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1, bias=False)
        self.gate = nn.Linear(hidden_dim, feature_dim)

    def forward(self, features, hidden, mask=None):
        e = self.score(torch.tanh(self.feature_proj(features) + self.hidden_proj(hidden)[:, None])).squeeze(-1)
        alpha = e.softmax(-1) if mask is None else e.masked_fill(mask, -1e9).softmax(-1)
        return torch.sigmoid(self.gate(hidden)) * (alpha[..., None] * features).sum(1), alpha


class SoftAttentionScoreBias(SoftAttentionNoGate):
    def __init__(self, feature_dim, hidden_dim, attn_dim):
        super().__init__(feature_dim, hidden_dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1)


class SoftAttentionMaskAfterSoftmax(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        alpha = self.energies(features, hidden, None).softmax(-1)
        if mask is not None:
            alpha = alpha.masked_fill(mask, 0.0)
        context = torch.sigmoid(self.gate(hidden)) * (alpha.unsqueeze(-1) * features).sum(1)
        return context, alpha


class SoftAttentionUniformWhenAllPadded(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        alpha = self.energies(features, hidden, mask).softmax(-1)
        context = torch.sigmoid(self.gate(hidden)) * (alpha.unsqueeze(-1) * features).sum(1)
        return context, alpha


class SoftAttentionNanWhenAllPadded(_SoftAttentionLayers):
    def forward(self, features, hidden, mask=None):
        e = self.energies(features, hidden, None)
        if mask is not None:
            e = e.masked_fill(mask, float("-inf"))
        alpha = e.softmax(-1)
        context = torch.sigmoid(self.gate(hidden)) * (alpha.unsqueeze(-1) * features).sum(1)
        return context, alpha


class SoftAttentionMinusInf(_SoftAttentionLayers):
    """−inf fill; the NaN rows of α (every location padded) replaced by zeros after the softmax."""

    zero_padded = True

    def forward(self, features, hidden, mask=None):
        if mask is not None and self.zero_padded:
            features = features.masked_fill(mask.unsqueeze(-1), 0.0)
        e = self.energies(features, hidden, None)
        if mask is not None:
            e = e.masked_fill(mask, float("-inf"))
        alpha = torch.nan_to_num(e.softmax(-1), nan=0.0)
        context = torch.sigmoid(self.gate(hidden)) * (alpha.unsqueeze(-1) * features).sum(1)
        return context, alpha


class SoftAttentionPaddingLeaks(SoftAttentionMinusInf):
    """The same, fed the padded annotation vectors as they are: α = 0 there, but 0 · NaN = NaN."""

    zero_padded = False


class SoftAttentionEinsum(_SoftAttentionLayers):
    """einsum for the scores and the context; padding and fully padded rows handled with torch.where."""

    def forward(self, features, hidden, mask=None):
        if mask is not None:
            features = torch.where(mask.unsqueeze(-1), torch.zeros_like(features), features)
        projected = torch.einsum("bld,ad->bla", features, self.feature_proj.weight) + self.feature_proj.bias
        energy = torch.tanh(projected + self.hidden_proj(hidden)[:, None, :])
        scores = torch.einsum("bla,a->bl", energy, self.score.weight[0])
        if mask is not None:
            scores = torch.where(mask, torch.finfo(scores.dtype).min, scores)
        alpha = scores.softmax(-1)
        if mask is not None:
            alpha = torch.where(mask.all(-1, keepdim=True), torch.zeros_like(alpha), alpha)
        beta = torch.sigmoid(self.gate(hidden))
        return beta * torch.einsum("bl,bld->bd", alpha, features), alpha


class SoftAttentionLoop(_SoftAttentionLayers):
    """One sample at a time, reading only its real locations; a softmax written with exp and a max shift."""

    def forward(self, features, hidden, mask=None):
        contexts, alphas = [], []
        for b in range(features.shape[0]):
            real = torch.ones(features.shape[1], dtype=torch.bool) if mask is None else ~mask[b]
            alpha = features.new_zeros(features.shape[1])
            context = features.new_zeros(features.shape[2])
            if bool(real.any()):
                a = features[b][real]  # (L_real, D)
                e = self.score(torch.tanh(self.feature_proj(a) + self.hidden_proj(hidden[b]))).squeeze(-1)
                w = torch.exp(e - e.max())
                w = w / w.sum()
                alpha = alpha.index_put((real.nonzero().squeeze(-1),), w)
                context = torch.sigmoid(self.gate(hidden[b])) * (w @ a)
            contexts.append(context)
            alphas.append(alpha)
        return torch.stack(contexts), torch.stack(alphas)


def _per_sample(values, like):
    """A (B,) tensor shaped (B, 1, …, 1) to broadcast against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def ddpm_no_sqrt(eps_model, x0, t, noise, alphas_cumprod):
    a = _per_sample(alphas_cumprod[t], x0)
    x_t = a * x0 + (1 - a) * noise
    return F.mse_loss(eps_model(x_t, t), noise)


def ddpm_cumprod_again(eps_model, x0, t, noise, alphas_cumprod):
    a = _per_sample(torch.cumprod(alphas_cumprod, 0)[t], x0)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(eps_model(x_t, t), noise)


def ddpm_one_indexed(eps_model, x0, t, noise, alphas_cumprod):
    a = _per_sample(alphas_cumprod[t - 1], x0)  # "t = 1 … T"
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(eps_model(x_t, t), noise)


def ddpm_predicts_x0(eps_model, x0, t, noise, alphas_cumprod):
    a = _per_sample(alphas_cumprod[t], x0)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(eps_model(x_t, t), x0)


def ddpm_own_noise(eps_model, x0, t, noise, alphas_cumprod):
    eps = torch.randn_like(x0)
    a = _per_sample(alphas_cumprod[t], x0)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return F.mse_loss(eps_model(x_t, t), eps)


def ddpm_broadcast_last_axis(eps_model, x0, t, noise, alphas_cumprod):
    a = alphas_cumprod[t]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return ((eps_model(x_t, t) - noise) ** 2).mean()


def ddpm_model_reads_x0(eps_model, x0, t, noise, alphas_cumprod):
    return F.mse_loss(eps_model(x0, t), noise)


def ddpm_summed(eps_model, x0, t, noise, alphas_cumprod):
    a = _per_sample(alphas_cumprod[t], x0)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.mse_loss(eps_model(x_t, t), noise, reduction="sum")


def ddpm_l1(eps_model, x0, t, noise, alphas_cumprod):
    a = _per_sample(alphas_cumprod[t], x0)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return F.l1_loss(eps_model(x_t, t), noise)


def ddpm_gather(eps_model, x0, t, noise, alphas_cumprod):
    """gather and explicit None-indexing; the signal and noise scales computed first."""
    a = alphas_cumprod.gather(0, t)[(...,) + (None,) * (x0.dim() - 1)]
    signal, spread = torch.sqrt(a), torch.sqrt(1.0 - a)
    x_t = signal * x0 + spread * noise
    return ((eps_model(x_t, t) - noise) ** 2).sum() / noise.numel()


def ddpm_sample_loop(eps_model, x0, t, noise, alphas_cumprod):
    """One sample at a time through the model; squared errors summed, then divided by the element count."""
    total = x0.new_zeros(())
    for i in range(x0.shape[0]):
        a = alphas_cumprod[t[i]]
        x_t = math.sqrt(float(a)) * x0[i : i + 1] + math.sqrt(1 - float(a)) * noise[i : i + 1]
        total = total + (eps_model(x_t, t[i : i + 1]) - noise[i : i + 1]).pow(2).sum()
    return total / x0.numel()


def _alpha_bars(alphas_cumprod, t, t_prev):
    return alphas_cumprod[t], alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)


def _ddim(x_t, eps, a_t, a_prev, eta, noise, clip=False, sigma_ratio=True, sigma_in_direction=True):
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip:
        x0 = x0.clamp(-1, 1)
    sigma = eta * (1 - a_t / a_prev).sqrt()
    if sigma_ratio:
        sigma = sigma * ((1 - a_prev) / (1 - a_t)).sqrt()
    direction = (1 - a_prev - (sigma**2 if sigma_in_direction else 0)).sqrt() * eps
    x_prev = a_prev.sqrt() * x0 + direction
    if eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev.to(x_t.dtype)


def ddim_ho_salimans_w(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = (1 + guidance_scale) * eps_cond - guidance_scale * eps_uncond
    return _ddim(x_t, eps, *_alpha_bars(alphas_cumprod, t, t_prev), eta, noise)


def ddim_swapped(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_cond + guidance_scale * (eps_uncond - eps_cond)
    return _ddim(x_t, eps, *_alpha_bars(alphas_cumprod, t, t_prev), eta, noise)


def ddim_final_reads_last(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return _ddim(x_t, eps, alphas_cumprod[t], alphas_cumprod[t_prev], eta, noise)


def ddim_final_alpha_first(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    a_prev = alphas_cumprod[t_prev] if t_prev >= 0 else alphas_cumprod[0]
    return _ddim(x_t, eps, alphas_cumprod[t], a_prev, eta, noise)


def ddim_one_indexed(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    a_prev = alphas_cumprod[t_prev - 1] if t_prev >= 0 else torch.tensor(1.0)
    return _ddim(x_t, eps, alphas_cumprod[t - 1], a_prev, eta, noise)


def ddim_clipped(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return _ddim(x_t, eps, *_alpha_bars(alphas_cumprod, t, t_prev), eta, noise, clip=True)


def ddim_sigma_without_ratio(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return _ddim(x_t, eps, *_alpha_bars(alphas_cumprod, t, t_prev), eta, noise, sigma_ratio=False)


def ddim_direction_ignores_sigma(
    x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None
):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return _ddim(x_t, eps, *_alpha_bars(alphas_cumprod, t, t_prev), eta, noise, sigma_in_direction=False)


def ddim_always_adds_noise(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    a_t, a_prev = _alpha_bars(alphas_cumprod, t, t_prev)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps + sigma * noise


def ddim_own_noise(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return _ddim(x_t, eps, *_alpha_bars(alphas_cumprod, t, t_prev), eta, torch.randn_like(x_t))


def ddim_coefficients(x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None):
    """x_prev = c_x·x_t + c_ε·ε̂ + σ·z with the coefficients worked out by hand, in Python floats; lerp guidance."""
    eps = torch.lerp(eps_uncond, eps_cond, guidance_scale)
    a_t = alphas_cumprod[t].item()
    a_prev = alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    sigma = eta * var**0.5
    c_x = (a_prev / a_t) ** 0.5
    c_eps = (1 - a_prev - sigma**2) ** 0.5 - (a_prev * (1 - a_t) / a_t) ** 0.5
    x_prev = c_x * x_t + c_eps * eps
    return x_prev + sigma * noise if eta else x_prev


def ddim_guided_after_the_step(
    x_t, eps_cond, eps_uncond, guidance_scale, t, t_prev, alphas_cumprod, eta=0.0, noise=None
):
    """A DDIM step for each model, then the guidance on the two results (the step is linear in ε̂)."""
    a_t = alphas_cumprod[t].to(x_t.dtype)
    a_prev = alphas_cumprod[t_prev].to(x_t.dtype) if t_prev >= 0 else torch.ones((), dtype=x_t.dtype)
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t)) * torch.sqrt(1 - a_t / a_prev)

    def step(eps):
        x0 = (x_t - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
        return torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev - sigma**2) * eps

    cond, uncond = step(eps_cond), step(eps_uncond)
    x_prev = uncond + guidance_scale * (cond - uncond)
    if eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev


MUTANTS = {
    "generation.caption_loss": [
        (caption_mask_multiply, "the padding leaks into the result"),
        (caption_no_penalty, "doubly stochastic attention penalty is missing"),
        (caption_penalty_over_locations, "summed over the wrong axis"),
        (caption_lambda_ignored, "attn_reg (the paper's λ) is not applied"),
        (caption_sgrvinod_mean, "averaged over locations as well"),
        (caption_pads_in_penalty, "counts the padded steps"),
        (caption_padding_averaged, "padding is not ignored"),
        (caption_sentence_sum, "summed per caption"),
        (caption_unshifted, "the targets are not shifted"),
        (caption_pad_zero, "pad_id is ignored"),
    ],
    "generation.beam_search": [
        (beam_raw_sum, "ranked by the raw sum S"),
        (beam_gnmt, "GNMT's length penalty"),
        (beam_length_without_eos, "n does not count EOS"),
        (beam_constant_width, "the beam does not shrink"),
        (beam_stops_at_first_eos, "stops as soon as one hypothesis finishes"),
        (beam_copies_of_bos, "beam_size copies of BOS"),
        (beam_returns_raw_score, "return the normalised S / n**length_penalty"),
        (beam_keeps_bos, "the tokens include BOS"),
        (beam_extends_finished, "leaves the beam"),
        (beam_score_tensor, "must be a Python float"),
    ],
    "generation.filter_logits": [
        (filter_drops_crossing_token, "the token that crosses top_p is removed"),
        (filter_top_p_first, "top-p is applied before top-k"),
        (filter_temperature_last, "the temperature is applied after filtering"),
        (filter_multiplies_temperature, "multiplied by the temperature"),
        (filter_removes_kth, "removes the k-th value itself"),
        (filter_hugging_face_ties, "tied"),
        (filter_exact_k_scatter, "tied"),
        (filter_in_place, "modified its input `logits` in place"),
        (filter_returns_probabilities, "probabilities are returned"),
        (filter_large_negative, "not a large negative number"),
    ],
    "generation.corpus_bleu": [
        (bleu_sentence_average, "a mean of sentence-level BLEU scores"),
        (bleu_unclipped, "matches are not clipped"),
        (bleu_summed_clip, "the clip adds the counts of all references"),
        (bleu_longest_reference, "uses the longest reference"),
        (bleu_tie_to_longer, "a closest-length tie picks the longer reference"),
        (bleu_ignores_smoothing, 'smooth="exp" is ignored'),
        (bleu_add_one_everywhere, "smoothing applied to all orders"),
        (bleu_constant_smoothing, "k does not grow"),
        (bleu_percentage, "a percentage"),
        (bleu_nltk_denominators, "max(1, #n-grams)"),
        (bleu_crashes_without_ngrams, "ZeroDivisionError"),
    ],
    "generation.SoftAttention": [
        (SoftAttentionPaddingLeaks, "a padded location leaks into the result"),
        (SoftAttentionSoftmaxOverBatch, "normalised over the batch"),
        (SoftAttentionSoftmaxBeforeSqueeze, "every α is 1"),
        (SoftAttentionNoGate, "the gate β is missing"),
        (SoftAttentionGateWithoutSigmoid, "without its sigmoid"),
        (SoftAttentionMeanContext, "plain mean of the features"),
        (SoftAttentionReLU, "ReLU instead of tanh"),
        (SoftAttentionPerChannelGate, "wrong shape: gate.weight"),
        (SoftAttentionScoreBias, "unexpected: score.bias"),
        (SoftAttentionMaskAfterSoftmax, "the mask is applied after the softmax"),
        (SoftAttentionUniformWhenAllPadded, "gets uniform α"),
        (SoftAttentionNanWhenAllPadded, "a softmax over a row of −inf is NaN"),
    ],
    "generation.ddpm_loss": [
        (ddpm_no_sqrt, "√ is missing on ᾱ"),
        (ddpm_cumprod_again, "cumulative product again"),
        (ddpm_one_indexed, "one step early"),
        (ddpm_predicts_x0, "compares the prediction with x0"),
        (ddpm_own_noise, "do not draw your own noise"),
        (ddpm_broadcast_last_axis, "broadcast over the last axis"),
        (ddpm_model_reads_x0, "fed x0"),
        (ddpm_summed, "the squared errors are summed"),
        (ddpm_l1, "absolute (L1)"),
    ],
    "generation.guided_ddim_step": [
        (ddim_ho_salimans_w, "Ho & Salimans"),
        (ddim_swapped, "swapped"),
        (ddim_final_reads_last, "reads the LAST entry"),
        (ddim_final_alpha_first, "set_alpha_to_one=False"),
        (ddim_one_indexed, "one index early"),
        (ddim_clipped, "clipped to [−1, 1]"),
        (ddim_sigma_without_ratio, "σ lacks the factor"),
        (ddim_direction_ignores_sigma, "the direction term"),
        (ddim_always_adds_noise, "noise=None"),
        (ddim_own_noise, "do not draw your own noise"),
    ],
}

CORRECT = {
    "generation.caption_loss": [caption_loop, caption_one_hot_einsum],
    "generation.beam_search": [beam_heap_per_prefix, beam_tensors],
    "generation.filter_logits": [filter_row_loop, filter_pairwise, filter_threshold_probability],
    "generation.corpus_bleu": [bleu_sacrebleu_style, bleu_fractions],
    "generation.SoftAttention": [SoftAttentionEinsum, SoftAttentionLoop, SoftAttentionMinusInf],
    "generation.ddpm_loss": [ddpm_gather, ddpm_sample_loop],
    "generation.guided_ddim_step": [ddim_coefficients, ddim_guided_after_the_step],
}

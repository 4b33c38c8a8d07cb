"""Mutants and other-style correct solutions for chapter 09: merge_image_features, causal_lm_loss,
qformer_attention_mask, apply_rope and pixel_shuffle_tokens.

Each is written the way a learner would write it, independently of the checks' own models of known mistakes.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from xmodal_ref.mllm.reference import apply_rope


def _splice(input_ids, image_features, token_embedding, image_token_id):
    """A correct splice (masked_scatter on a lookup of the text ids), shared by the label mutants."""
    is_image = input_ids == image_token_id
    if int(is_image.sum()) != image_features.shape[0] * image_features.shape[1]:
        raise ValueError("Image features and image tokens do not match")
    embeds = token_embedding(torch.where(is_image, 0, input_ids))
    return embeds.masked_scatter(is_image.unsqueeze(-1), image_features.to(embeds.dtype)), is_image


def _answer_positions(input_ids, answer_start):
    return torch.arange(input_ids.shape[1])[None, :] >= answer_start[:, None]


def merge_image_tokens_labelled(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    embeds, _ = _splice(input_ids, image_features, token_embedding, image_token_id)
    labels = input_ids.clone()
    labels[~_answer_positions(input_ids, answer_start)] = ignore_index  # the placeholders keep their id
    if attention_mask is not None:
        labels[attention_mask == 0] = ignore_index
    return embeds, labels


def merge_padding_supervised(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    embeds, is_image = _splice(input_ids, image_features, token_embedding, image_token_id)
    keep = _answer_positions(input_ids, answer_start) & ~is_image  # attention_mask never read
    return embeds, torch.where(keep, input_ids, ignore_index)


def merge_labels_shifted(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    embeds, is_image = _splice(input_ids, image_features, token_embedding, image_token_id)
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    labels = torch.where(keep, input_ids, ignore_index)
    shifted = torch.full_like(labels, ignore_index)
    shifted[:, :-1] = labels[:, 1:]  # "ready for the loss"
    return embeds, shifted


def merge_answer_start_exclusive(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    embeds, is_image = _splice(input_ids, image_features, token_embedding, image_token_id)
    keep = (torch.arange(input_ids.shape[1])[None, :] > answer_start[:, None]) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return embeds, torch.where(keep, input_ids, ignore_index)


def merge_ignore_hard_coded(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    embeds, is_image = _splice(input_ids, image_features, token_embedding, image_token_id)
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return embeds, torch.where(keep, input_ids, -100)


def merge_counter_per_row(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    feats = image_features.flatten(0, 1).to(token_embedding.weight.dtype)
    is_image = input_ids == image_token_id
    if int(is_image.sum()) != feats.shape[0]:
        raise ValueError("count mismatch")
    rows = []
    for b in range(input_ids.shape[0]):
        row = token_embedding(input_ids[b].masked_fill(is_image[b], 0))
        n = int(is_image[b].sum())
        rows.append(row.masked_scatter(is_image[b, :, None], feats[:n]))  # each row starts at image 0
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return torch.stack(rows), torch.where(keep, input_ids, ignore_index)


def merge_looks_up_placeholders(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    is_image = input_ids == image_token_id
    if int(is_image.sum()) != image_features.shape[0] * image_features.shape[1]:
        raise ValueError("count mismatch")
    embeds = token_embedding(input_ids)  # HF looks them up too, but its image_token_id is a row of the table
    embeds = embeds.masked_scatter(is_image[..., None], image_features.to(embeds.dtype))
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return embeds, torch.where(keep, input_ids, ignore_index)


def merge_edits_input_ids(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    is_image = input_ids == image_token_id
    if int(is_image.sum()) != image_features.shape[0] * image_features.shape[1]:
        raise ValueError("count mismatch")
    input_ids[is_image] = 0  # make the placeholders safe to look up
    embeds = token_embedding(input_ids).masked_scatter(is_image[..., None], image_features.to(torch.float32))
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return embeds, torch.where(keep, input_ids, ignore_index)


def merge_no_count_check(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    is_image = input_ids == image_token_id
    embeds = token_embedding(input_ids.masked_fill(is_image, 0))
    embeds = embeds.masked_scatter(is_image[..., None], image_features.to(embeds.dtype))
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return embeds, torch.where(keep, input_ids, ignore_index)


def merge_features_not_cast(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    is_image = input_ids == image_token_id
    if int(is_image.sum()) != image_features.shape[0] * image_features.shape[1]:
        raise ValueError("count mismatch")
    embeds = token_embedding(input_ids.masked_fill(is_image, 0)).masked_scatter(is_image[..., None], image_features)
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return embeds, torch.where(keep, input_ids, ignore_index)


def merge_int_mask_as_condition(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    embeds, is_image = _splice(input_ids, image_features, token_embedding, image_token_id)
    labels = torch.where(_answer_positions(input_ids, answer_start) & ~is_image, input_ids, ignore_index)
    if attention_mask is not None:
        labels = torch.where(attention_mask, labels, ignore_index)
    return embeds, labels


def merge_frozen_lookup(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    is_image = input_ids == image_token_id
    if int(is_image.sum()) != image_features.shape[0] * image_features.shape[1]:
        raise ValueError("count mismatch")
    with torch.no_grad():  # "the LLM's embedding is frozen anyway"
        embeds = token_embedding(input_ids.masked_fill(is_image, 0))
    embeds = embeds.masked_scatter(is_image[..., None], image_features.to(embeds.dtype))
    keep = _answer_positions(input_ids, answer_start) & ~is_image
    if attention_mask is not None:
        keep &= attention_mask.bool()
    return embeds, torch.where(keep, input_ids, ignore_index)


def merge_loop(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    """Position by position, one global image-token counter."""
    rows, length = input_ids.shape
    feats = image_features.reshape(-1, image_features.shape[-1]).to(token_embedding.weight.dtype)
    if sum(int(t) == image_token_id for t in input_ids.flatten()) != feats.shape[0]:
        raise ValueError("the number of image tokens does not match the features")
    vectors, labels, used = [], [], 0
    for b in range(rows):
        row_vectors, row_labels = [], []
        for p in range(length):
            token = int(input_ids[b, p])
            if token == image_token_id:
                row_vectors.append(feats[used])
                used += 1
                row_labels.append(ignore_index)
                continue
            row_vectors.append(token_embedding.weight[token])
            real = attention_mask is None or bool(attention_mask[b, p])
            row_labels.append(token if real and p >= int(answer_start[b]) else ignore_index)
        vectors.append(torch.stack(row_vectors))
        labels.append(row_labels)
    return torch.stack(vectors), torch.tensor(labels, dtype=torch.long)


def merge_cumsum_gather(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    """Each placeholder's feature row by a running count over the flattened batch; torch.where to choose."""
    is_image = input_ids == image_token_id
    feats = image_features.flatten(0, 1).to(token_embedding.weight.dtype)
    if int(is_image.sum()) != feats.shape[0]:
        raise ValueError("mismatch")
    row_of_feature = (is_image.flatten().cumsum(0) - 1).clamp(min=0).view_as(input_ids)
    text = F.embedding(torch.where(is_image, torch.zeros_like(input_ids), input_ids), token_embedding.weight)
    embeds = torch.where(is_image[..., None], feats[row_of_feature], text)
    keep = ~is_image & (torch.arange(input_ids.shape[1]) >= answer_start[:, None])
    if attention_mask is not None:
        keep = keep & (attention_mask != 0)
    return embeds, torch.where(keep, input_ids, torch.full_like(input_ids, ignore_index))


def merge_index_assign(
    input_ids, image_features, token_embedding, image_token_id, answer_start, attention_mask=None, ignore_index=-100
):
    """Look up a cleaned copy of the ids, then assign the features by boolean indexing on a clone."""
    ids = input_ids.clone()
    is_image = ids == image_token_id
    n, d = image_features.shape[0] * image_features.shape[1], image_features.shape[2]
    if is_image.sum().item() != n:
        raise ValueError("wrong number of image tokens")
    ids[is_image] = 0
    embeds = token_embedding(ids).clone()
    embeds[is_image] = image_features.reshape(n, d).type_as(embeds)
    labels = input_ids.clone()
    labels[is_image] = ignore_index
    for b in range(labels.shape[0]):
        labels[b, : int(answer_start[b])] = ignore_index
    if attention_mask is not None:
        labels[~attention_mask.bool()] = ignore_index
    return embeds, labels


def loss_not_shifted(logits, labels, ignore_index=-100, num_items_in_batch=None):
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=ignore_index)


def loss_shifted_wrong_way(logits, labels, ignore_index=-100, num_items_in_batch=None):
    total = F.cross_entropy(
        logits[:, 1:].flatten(0, 1), labels[:, :-1].flatten(), ignore_index=ignore_index, reduction="sum"
    )
    count = num_items_in_batch if num_items_in_batch is not None else (labels[:, :-1] != ignore_index).sum()
    return total / count


def loss_per_sequence_mean(logits, labels, ignore_index=-100, num_items_in_batch=None):
    losses = [F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=ignore_index) for b in range(logits.shape[0])]
    return torch.stack(losses).mean()


def loss_mean_over_all_positions(logits, labels, ignore_index=-100, num_items_in_batch=None):
    nll = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=ignore_index, reduction="none"
    )  # 0 at the ignored pairs
    return nll.mean() if num_items_in_batch is None else nll.sum() / num_items_in_batch


def loss_default_ignore_index(logits, labels, ignore_index=-100, num_items_in_batch=None):
    targets = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets, reduction="sum")
    count = (targets != ignore_index).sum() if num_items_in_batch is None else num_items_in_batch
    return total / count


def loss_ignores_num_items(logits, labels, ignore_index=-100, num_items_in_batch=None):
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=ignore_index
    )


def loss_zero_when_nothing_supervised(logits, labels, ignore_index=-100, num_items_in_batch=None):
    targets = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets, ignore_index=ignore_index, reduction="sum"
    )
    count = (targets != ignore_index).sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return total / count


def loss_upcast_float32(logits, labels, ignore_index=-100, num_items_in_batch=None):
    """HF's `logits = logits.float()`, kept in float32 for float64 logits."""
    logits = logits.float()
    targets = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets, ignore_index=ignore_index, reduction="sum"
    )
    count = (targets != ignore_index).sum() if num_items_in_batch is None else num_items_in_batch
    return total / count


def loss_pad_then_shift(logits, labels, ignore_index=-100, num_items_in_batch=None):
    """HF's ForCausalLMLoss: pad the labels with ignore_index, take [..., 1:], score every position."""
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    flat = shifted.reshape(-1)
    summed = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=ignore_index, reduction="sum")
    if num_items_in_batch is None:
        return summed / (flat != ignore_index).sum()
    return summed / num_items_in_batch


def loss_gather_masked(logits, labels, ignore_index=-100, num_items_in_batch=None):
    """log_softmax and gather, masked with where (never multiplying by the mask)."""
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = labels[:, 1:]
    kept = targets != ignore_index
    picked = log_probs.gather(-1, torch.where(kept, targets, 0).unsqueeze(-1)).squeeze(-1)
    total = -torch.where(kept, picked, torch.zeros_like(picked)).sum()
    denominator = kept.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(denominator, dtype=logits.dtype)


def loss_pair_loop(logits, labels, ignore_index=-100, num_items_in_batch=None):
    """A Python loop over the (b, t) pairs with an explicit logsumexp."""
    terms = []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target != ignore_index:
                terms.append(torch.logsumexp(logits[b, t], dim=0) - logits[b, t, target])
    total = torch.stack(terms).sum() if terms else logits.sum() * 0
    return total / (len(terms) if num_items_in_batch is None else float(num_items_in_batch))


def _blocks(qq, qt, tq, tt):
    return torch.cat([torch.cat([qq, qt], dim=1), torch.cat([tq, tt], dim=1)], dim=0)


def qformer_blocks(num_queries, text_len, objective, *, text_text=None, query_text=False, text_query=True):
    """Block construction with a few knobs: the learner's mistakes live in the knobs."""
    q, t = num_queries, text_len
    ones = torch.ones
    if objective == "itm":
        return ones(q + t, q + t, dtype=torch.bool)
    if objective == "itc":
        return _blocks(ones(q, q), torch.zeros(q, t), torch.zeros(t, q), ones(t, t)).bool()
    if objective == "itg":
        tt = torch.tril(ones(t, t)) if text_text is None else text_text(t)
        qt = ones(q, t) if query_text else torch.zeros(q, t)
        tq = ones(t, q) if text_query else torch.zeros(t, q)
        return _blocks(ones(q, q), qt, tq, tt).bool()
    raise ValueError(f"unknown objective {objective}")


def qformer_inverted(num_queries, text_len, objective):
    """True = blocked, as for nn.MultiheadAttention's attn_mask."""
    return ~qformer_blocks(num_queries, text_len, objective)


def qformer_plain_causal(num_queries, text_len, objective):
    if objective == "itg":
        return torch.tril(torch.ones(num_queries + text_len, num_queries + text_len)).bool()
    return qformer_blocks(num_queries, text_len, objective)


def qformer_text_bidirectional(num_queries, text_len, objective):
    return qformer_blocks(num_queries, text_len, objective, text_text=lambda t: torch.ones(t, t))


def qformer_queries_see_text(num_queries, text_len, objective):
    return qformer_blocks(num_queries, text_len, objective, query_text=True)


def qformer_text_strictly_causal(num_queries, text_len, objective):
    return qformer_blocks(num_queries, text_len, objective, text_text=lambda t: torch.tril(torch.ones(t, t), -1))


def qformer_itc_joint(num_queries, text_len, objective):
    if objective == "itc":
        return torch.ones(num_queries + text_len, num_queries + text_len, dtype=torch.bool)
    return qformer_blocks(num_queries, text_len, objective)


def qformer_text_first(num_queries, text_len, objective):
    q, t = num_queries, text_len
    if objective == "itm":
        return torch.ones(t + q, t + q, dtype=torch.bool)
    if objective == "itc":
        return torch.block_diag(torch.ones(t, t), torch.ones(q, q)).bool()
    if objective == "itg":  # text rows first: causal text, then every query
        return _blocks(torch.tril(torch.ones(t, t)), torch.ones(t, q), torch.zeros(q, t), torch.ones(q, q)).bool()
    raise ValueError(objective)


def qformer_float_mask(num_queries, text_len, objective):
    return qformer_blocks(num_queries, text_len, objective).float()


def qformer_no_error(num_queries, text_len, objective):
    if objective in ("itc", "itg"):
        return qformer_blocks(num_queries, text_len, objective)
    return torch.ones(num_queries + text_len, num_queries + text_len, dtype=torch.bool)  # anything else: all


def qformer_loops(num_queries, text_len, objective):
    """Cell by cell, from the definition."""
    if objective not in {"itc", "itm", "itg"}:
        raise ValueError(objective)
    size = num_queries + text_len
    rows = []
    for i in range(size):
        row = []
        for j in range(size):
            i_text, j_text = i >= num_queries, j >= num_queries
            if objective == "itm":
                row.append(True)
            elif objective == "itc":
                row.append(i_text == j_text)
            else:
                row.append(not j_text or (i_text and j <= i))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.bool).reshape(size, size)


def qformer_unilm_prefix(num_queries, text_len, objective):
    """LAVIS-like: a causal text block, a zero block under the queries, a ones prefix on the left."""
    q, t = num_queries, text_len
    if objective == "itm":
        return torch.ones(q + t, q + t).bool()
    if objective == "itc":
        modality = torch.tensor([0] * q + [1] * t)
        return modality[:, None] == modality[None, :]
    if objective != "itg":
        raise ValueError("objective must be itc, itm or itg")
    causal = torch.arange(t)[None, :] <= torch.arange(t)[:, None]  # (T, T)
    causal = torch.cat([torch.zeros(q, t, dtype=torch.bool), causal], dim=0)  # (Q+T, T)
    return torch.cat([torch.ones(q + t, q, dtype=torch.bool), causal], dim=1)


def _angles(positions, d, base, dtype=torch.float32):
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=dtype) / d)
    return positions.to(dtype)[..., None] * inv_freq  # (B, L, d/2)


def _rotate_half_style(x, theta):
    emb = torch.cat([theta, theta], dim=-1)[:, None]
    x1, x2 = x.chunk(2, dim=-1)
    return x * emb.cos().to(x.dtype) + torch.cat([-x2, x1], dim=-1) * emb.sin().to(x.dtype)


def rope_interleaved(q, k, positions, base=10000.0):
    """Meta's llama/model.py: complex numbers from adjacent pairs (2i, 2i + 1)."""
    freqs = torch.polar(torch.ones_like(_angles(positions, q.shape[-1], base)), _angles(positions, q.shape[-1], base))

    def rotate(x):
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(pairs * freqs[:, None]).flatten(-2).to(x.dtype)

    return rotate(q), rotate(k)


def rope_positions_from_one(q, k, positions, base=10000.0):
    theta = _angles(positions + 1, q.shape[-1], base)
    return _rotate_half_style(q, theta), _rotate_half_style(k, theta)


def rope_arange_positions(q, k, positions, base=10000.0):
    theta = _angles(torch.arange(q.shape[2]).expand(q.shape[0], -1), q.shape[-1], base)
    return _rotate_half_style(q, theta), _rotate_half_style(k, theta)


def rope_exponent_over_d(q, k, positions, base=10000.0):
    d = q.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(d // 2).float() / d)
    theta = positions.float()[..., None] * inv_freq
    return _rotate_half_style(q, theta), _rotate_half_style(k, theta)


def rope_base_hard_coded(q, k, positions, base=10000.0):
    theta = _angles(positions, q.shape[-1], 10000.0)
    return _rotate_half_style(q, theta), _rotate_half_style(k, theta)


def rope_repeat_interleave(q, k, positions, base=10000.0):
    theta = _angles(positions, q.shape[-1], base)
    emb = theta.repeat_interleave(2, dim=-1)[:, None]

    def rotate(x):
        x1, x2 = x.chunk(2, dim=-1)
        return x * emb.cos().to(x.dtype) + torch.cat([-x2, x1], dim=-1) * emb.sin().to(x.dtype)

    return rotate(q), rotate(k)


def rope_wrong_sign(q, k, positions, base=10000.0):
    emb = torch.cat([_angles(positions, q.shape[-1], base)] * 2, dim=-1)[:, None]

    def rotate(x):
        x1, x2 = x.chunk(2, dim=-1)
        return x * emb.cos().to(x.dtype) + torch.cat([x2, -x1], dim=-1) * emb.sin().to(x.dtype)

    return rotate(q), rotate(k)


def rope_only_queries(q, k, positions, base=10000.0):
    return _rotate_half_style(q, _angles(positions, q.shape[-1], base)), k


def rope_two_by_two(q, k, positions, base=10000.0):
    """The rotation of each pair (i, i + d/2) written out, angles in float64 with einsum."""
    d = q.shape[-1]
    inv_freq = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    theta = torch.einsum("bl,i->bli", positions.double(), inv_freq)[:, None]  # (B, 1, L, d/2)
    cos, sin = theta.cos(), theta.sin()

    def rotate(x):
        first, second = x[..., : d // 2].double(), x[..., d // 2 :].double()
        rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
        return rotated.to(x.dtype)

    return rotate(q), rotate(k)


def rope_complex_half_split(q, k, positions, base=10000.0):
    """Complex multiplication with the real part in the first half and the imaginary part in the second."""
    d = q.shape[-1]
    exponents = torch.arange(d // 2, dtype=torch.float64) * 2 / d
    theta = positions[:, None, :, None].double() * torch.pow(torch.tensor(base, dtype=torch.float64), -exponents)
    turn = torch.polar(torch.ones_like(theta), theta)  # (B, 1, L, d/2)

    def rotate(x):
        z = torch.complex(x[..., : d // 2].double(), x[..., d // 2 :].double()) * turn
        return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


def rope_pair_loop(q, k, positions, base=10000.0):
    """One pair (i, i + d/2) at a time, with math.cos/sin of Python floats per (row, position)."""
    d = q.shape[-1]

    def rotate(x):
        out = x.clone()
        for b in range(x.shape[0]):
            for t in range(x.shape[2]):
                for i in range(d // 2):
                    angle = int(positions[b, t]) * base ** (-2 * i / d)
                    c, s = math.cos(angle), math.sin(angle)
                    first, second = x[b, :, t, i], x[b, :, t, i + d // 2]
                    out[b, :, t, i] = first * c - second * s
                    out[b, :, t, i + d // 2] = second * c + first * s
        return out

    return rotate(q), rotate(k)


def shuffle_view_only(x, scale):
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens or side % scale:
        raise ValueError("bad grid")
    return x.reshape(batch, tokens // scale**2, channels * scale**2)


def shuffle_pixel_unshuffle(x, scale):
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens or side % scale:
        raise ValueError("bad grid")
    image = x.transpose(1, 2).reshape(batch, channels, side, side)
    return F.pixel_unshuffle(image, scale).flatten(2).transpose(1, 2)  # channels c·r² + dy·r + dx


def _blocks_permuted(x, scale, order):
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens or side % scale:
        raise ValueError("bad grid")
    s = side // scale
    grid = x.reshape(batch, s, scale, s, scale, channels).permute(*order)
    return grid.reshape(batch, s * s, scale * scale * channels)


def shuffle_block_column_major(x, scale):
    return _blocks_permuted(x, scale, (0, 1, 3, 4, 2, 5))  # (B, i, j, dx, dy, C)


def shuffle_grid_transposed(x, scale):
    return _blocks_permuted(x, scale, (0, 3, 1, 2, 4, 5))  # (B, j, i, dy, dx, C)


def shuffle_no_validation(x, scale):
    batch, tokens, channels = x.shape
    side = int(tokens**0.5)
    s = side // scale
    grid = x.view(batch, s, scale, s, scale, channels).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(batch, s * s, scale * scale * channels)


def shuffle_width_height_swapped(x, scale):
    """The grid read as (width, height): columns taken for rows."""
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens or side % scale:
        raise ValueError("bad grid")
    s = side // scale
    grid = x.reshape(batch, side, side, channels).transpose(1, 2)  # (B, col, row, C)
    grid = grid.reshape(batch, s, scale, s, scale, channels).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(batch, s * s, scale * scale * channels)


def shuffle_loop(x, scale):
    """Block by block: concatenate the r×r tokens in row-major order."""
    tokens = x.shape[1]
    side = round(math.sqrt(tokens))
    if side**2 != tokens:
        raise ValueError("N must be a perfect square")
    if side % scale != 0:
        raise ValueError("scale must divide the side")
    out = []
    for i in range(0, side, scale):
        for j in range(0, side, scale):
            block = [x[:, (i + dy) * side + (j + dx)] for dy in range(scale) for dx in range(scale)]
            out.append(torch.cat(block, dim=-1))
    return torch.stack(out, dim=1)


def shuffle_unshuffle_permuted(x, scale):
    """torch's pixel_unshuffle, then its channel order c·r² + k moved to k·C + c."""
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens or side % scale:
        raise ValueError("bad grid")
    image = x.transpose(1, 2).reshape(batch, channels, side, side)
    packed = F.pixel_unshuffle(image, scale)  # (B, C·r², S/r, S/r)
    packed = packed.view(batch, channels, scale * scale, -1)  # (B, C, r², N/r²)
    return packed.permute(0, 3, 2, 1).reshape(batch, -1, scale * scale * channels)


def shuffle_unfold(x, scale):
    """F.unfold with kernel = stride = r over the token grid as an image."""
    batch, tokens, channels = x.shape
    side = math.isqrt(tokens)
    if side * side != tokens or side % scale:
        raise ValueError("bad grid")
    image = x.permute(0, 2, 1).reshape(batch, channels, side, side)
    patches = F.unfold(image, kernel_size=scale, stride=scale)  # (B, C·r², N/r²)
    patches = patches.view(batch, channels, scale * scale, -1)
    return torch.einsum("bckn->bnkc", patches).reshape(batch, -1, scale * scale * channels)


class _ProjectorBase(nn.Module):
    def __init__(self, vision_dim, text_dim, vision_feature_layer=-2):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(text_dim, text_dim)
        self.vision_feature_layer = vision_feature_layer

    def mlp(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class ProjectorKeepsCls(_ProjectorBase):
    def forward(self, hidden_states):
        return self.mlp(hidden_states[self.vision_feature_layer])


class ProjectorLastLayer(_ProjectorBase):
    """Takes the ViT's final output, as a classifier would."""

    def forward(self, hidden_states):
        return self.mlp(hidden_states[-1][:, 1:])


class ProjectorDefaultLastLayer(_ProjectorBase):
    def __init__(self, vision_dim, text_dim, vision_feature_layer=-1):
        super().__init__(vision_dim, text_dim, vision_feature_layer)

    def forward(self, hidden_states):
        return self.mlp(hidden_states[self.vision_feature_layer][:, 1:])


class ProjectorEncoderLayersOnly(_ProjectorBase):
    """Skips the embedding output, thinking layer 1 is hidden_states[0]."""

    def forward(self, hidden_states):
        layers = hidden_states[1:]
        return self.mlp(layers[self.vision_feature_layer][:, 1:])


class ProjectorBatchSliced(_ProjectorBase):
    def forward(self, hidden_states):
        return self.mlp(hidden_states[self.vision_feature_layer][1:])


class ProjectorReLU(_ProjectorBase):
    def __init__(self, vision_dim, text_dim, vision_feature_layer=-2):
        super().__init__(vision_dim, text_dim, vision_feature_layer)
        self.act = nn.ReLU()

    def forward(self, hidden_states):
        return self.mlp(hidden_states[self.vision_feature_layer][:, 1:])


class ProjectorTanhGelu(_ProjectorBase):
    def __init__(self, vision_dim, text_dim, vision_feature_layer=-2):
        super().__init__(vision_dim, text_dim, vision_feature_layer)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, hidden_states):
        return self.mlp(hidden_states[self.vision_feature_layer][:, 1:])


class ProjectorNoActivation(_ProjectorBase):
    def forward(self, hidden_states):
        return self.linear_2(self.linear_1(hidden_states[self.vision_feature_layer][:, 1:]))


class ProjectorOneLinear(nn.Module):
    """LLaVA-1's linear projector."""

    def __init__(self, vision_dim, text_dim, vision_feature_layer=-2):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.vision_feature_layer = vision_feature_layer

    def forward(self, hidden_states):
        return self.linear_1(hidden_states[self.vision_feature_layer][:, 1:])


class ProjectorSequential(nn.Module):
    """LLaVA's own builder: nn.Sequential(Linear, GELU, Linear), so the keys are proj.0.weight, proj.2.weight…"""

    def __init__(self, vision_dim, text_dim, vision_feature_layer=-2):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))
        self.vision_feature_layer = vision_feature_layer

    def forward(self, hidden_states):
        return self.proj(hidden_states[self.vision_feature_layer][:, 1:])


class ProjectorLayerAttributeRenamed(_ProjectorBase):
    def __init__(self, vision_dim, text_dim, vision_feature_layer=-2):
        super().__init__(vision_dim, text_dim)
        del self.vision_feature_layer
        self.select_layer = vision_feature_layer  # LLaVA's own name, mm_vision_select_layer

    def forward(self, hidden_states):
        return self.mlp(hidden_states[self.select_layer][:, 1:])


class ProjectorFunctional(_ProjectorBase):
    """Stacks the hidden states, narrows the token axis, and writes GELU with erf."""

    def forward(self, hidden_states):
        stacked = torch.stack(list(hidden_states))  # (K, B, 1 + N, vision_dim)
        x = stacked[self.vision_feature_layer]
        x = x.narrow(1, 1, x.shape[1] - 1)
        h = F.linear(x, self.linear_1.weight, self.linear_1.bias)
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        return F.linear(h, self.linear_2.weight, self.linear_2.bias)


class ProjectorEinsum(_ProjectorBase):
    """Resolves the index by hand and projects with einsum."""

    def forward(self, hidden_states):
        layer = self.vision_feature_layer
        index = layer + len(hidden_states) if layer < 0 else layer
        patches = hidden_states[index][:, 1:]
        h = torch.einsum("bnv,tv->bnt", patches, self.linear_1.weight) + self.linear_1.bias
        h = F.gelu(h)
        return torch.einsum("bns,ts->bnt", h, self.linear_2.weight) + self.linear_2.bias


class ProjectorTokenLoop(_ProjectorBase):
    """One token at a time."""

    def forward(self, hidden_states):
        x = hidden_states[self.vision_feature_layer]
        batch, tokens, _ = x.shape
        out = x.new_zeros(batch, tokens - 1, self.linear_2.out_features)
        for n in range(1, tokens):
            out[:, n - 1] = self.mlp(x[:, n])
        return out


class _AttentionBase(nn.Module):
    def __init__(self, dim, num_heads, rope_base=10000.0):
        super().__init__()
        if dim % num_heads != 0 or (dim // num_heads) % 2 != 0:
            raise ValueError("dim must split into heads of even size")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.rope_base = rope_base
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def heads(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def merge(self, o):
        b, _, n, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, n, -1))

    @staticmethod
    def past_length(past_key_value):
        return 0 if past_key_value is None else past_key_value[0].shape[2]

    def positions(self, x, start):
        return torch.arange(start, start + x.shape[1]).expand(x.shape[0], -1)


class AttentionCachesRawKeys(_AttentionBase):
    """Keeps the keys un-rotated in the cache and rotates them all (at 0 … P+L−1) on every call. Chained on its own
    cache its outputs are right; only the cache it returns gives it away."""

    def forward(self, x, past_key_value=None):
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        p = self.past_length(past_key_value)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)
            v = torch.cat([past_key_value[1], v], dim=2)
        q_rot, _ = apply_rope(q, q, self.positions(x, p), self.rope_base)
        every_position = torch.arange(k.shape[2]).expand(x.shape[0], -1)
        _, k_rot = apply_rope(k, k, every_position, self.rope_base)
        mask = torch.ones(x.shape[1], k.shape[2], dtype=torch.bool).tril(p)
        o = F.scaled_dot_product_attention(q_rot, k_rot, v, attn_mask=mask)
        return self.merge(o), (k, v)


class AttentionPositionsRestart(_AttentionBase):
    def forward(self, x, past_key_value=None):
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        q, k = apply_rope(q, k, self.positions(x, 0), self.rope_base)
        p = self.past_length(past_key_value)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)
            v = torch.cat([past_key_value[1], v], dim=2)
        mask = torch.ones(x.shape[1], k.shape[2], dtype=torch.bool).tril(p)
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), (k, v)


class _AttentionSdpa(_AttentionBase):
    """The contract's steps with a pluggable ``attend``, for the mask mutants."""

    def forward(self, x, past_key_value=None):
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        p = self.past_length(past_key_value)
        q, k = apply_rope(q, k, self.positions(x, p), self.rope_base)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)
            v = torch.cat([past_key_value[1], v], dim=2)
        return self.merge(self.attend(q, k, v, past_key_value)), (k, v)


class AttentionNoCausalMask(_AttentionSdpa):
    def attend(self, q, k, v, past_key_value):
        return F.scaled_dot_product_attention(q, k, v)


class AttentionIsCausalAlways(_AttentionSdpa):
    """is_causal=True in every call: SDPA's mask is top-left aligned, so a decoded token sees only key 0."""

    def attend(self, q, k, v, past_key_value):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class AttentionMaskOnlyInPrefill(_AttentionSdpa):
    """Thinks the cache makes the mask unnecessary: right for one token at a time, wrong for a chunk."""

    def attend(self, q, k, v, past_key_value):
        return F.scaled_dot_product_attention(q, k, v, is_causal=past_key_value is None)


class AttentionScaleByDim(_AttentionSdpa):
    def attend(self, q, k, v, past_key_value):
        p = self.past_length(past_key_value)
        scores = q @ k.transpose(-2, -1) / (self.num_heads * self.head_dim)
        future = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).triu(p + 1)
        return scores.masked_fill(future, float("-inf")).softmax(-1) @ v


class AttentionCacheTokensFirst(_AttentionBase):
    """Caches k and v before the heads' transpose, (B, L, H, hd), and concatenates on dim 1."""

    def forward(self, x, past_key_value=None):
        b, n, _ = x.shape
        split = (b, n, self.num_heads, self.head_dim)
        q, k, v = self.q_proj(x).view(split), self.k_proj(x).view(split), self.v_proj(x).view(split)
        p = 0 if past_key_value is None else past_key_value[0].shape[1]
        q, k = apply_rope(q.transpose(1, 2), k.transpose(1, 2), self.positions(x, p), self.rope_base)
        k = k.transpose(1, 2)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=1)
            v = torch.cat([past_key_value[1], v], dim=1)
        mask = torch.ones(n, k.shape[1], dtype=torch.bool).tril(p)
        o = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.merge(o), (k, v)


class AttentionReturnsNewOnly(_AttentionBase):
    """Returns this call's keys and values as "the cache", expecting the caller to append them."""

    def forward(self, x, past_key_value=None):
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        p = self.past_length(past_key_value)
        q, k = apply_rope(q, k, self.positions(x, p), self.rope_base)
        k_all, v_all = k, v
        if past_key_value is not None:
            k_all = torch.cat([past_key_value[0], k], dim=2)
            v_all = torch.cat([past_key_value[1], v], dim=2)
        mask = torch.ones(x.shape[1], k_all.shape[2], dtype=torch.bool).tril(p)
        return self.merge(F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)), (k, v)


class AttentionPositionCounter(_AttentionSdpa):
    """Counts the tokens it has seen instead of reading P from the cache."""

    def __init__(self, dim, num_heads, rope_base=10000.0):
        super().__init__(dim, num_heads, rope_base)
        self.seen = 0

    def positions(self, x, start):
        positions = torch.arange(self.seen, self.seen + x.shape[1]).expand(x.shape[0], -1)
        self.seen += x.shape[1]
        return positions

    def attend(self, q, k, v, past_key_value):
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(self.past_length(past_key_value))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class AttentionNoValidation(_AttentionSdpa):
    def __init__(self, dim, num_heads, rope_base=10000.0):
        nn.Module.__init__(self)
        self.num_heads, self.head_dim, self.rope_base = num_heads, dim // num_heads, rope_base
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def attend(self, q, k, v, past_key_value):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]))


class AttentionLowerRightBias(_AttentionSdpa):
    """PyTorch's bottom-right causal bias object."""

    def attend(self, q, k, v, past_key_value):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]))


class AttentionComplexLoop(_AttentionBase):
    """RoPE as multiplication by e^{iθ} of the pairs (x_i, x_{i+d/2}); one query at a time over its visible keys."""

    def rotate(self, t, positions):
        half = self.head_dim // 2
        inv_freq = 1.0 / self.rope_base ** (torch.arange(half, dtype=torch.float64) * 2 / self.head_dim)
        phase = torch.polar(torch.ones(len(positions), half, dtype=torch.float64), positions[:, None] * inv_freq)
        pairs = torch.complex(t[..., :half].double(), t[..., half:].double()) * phase
        return torch.cat([pairs.real, pairs.imag], dim=-1).to(t.dtype)

    def forward(self, x, past_key_value=None):
        q, k, v = self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))
        p = self.past_length(past_key_value)
        positions = torch.arange(p, p + x.shape[1], dtype=torch.float64)
        q, k = self.rotate(q, positions), self.rotate(k, positions)
        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)
            v = torch.cat([past_key_value[1], v], dim=2)
        outputs = []
        for i in range(x.shape[1]):
            visible = p + i + 1
            scores = q[:, :, i : i + 1] @ k[:, :, :visible].transpose(-2, -1) / math.sqrt(self.head_dim)
            outputs.append(scores.softmax(-1) @ v[:, :, :visible])
        return self.merge(torch.cat(outputs, dim=2)), (k, v)


class AttentionEinsumAdditiveMask(_AttentionBase):
    """einsum with an additive mask built by comparing absolute positions."""

    def forward(self, x, past_key_value=None):
        q, k, v = (self.heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        p = self.past_length(past_key_value)
        q, k = apply_rope(q, k, self.positions(x, p), self.rope_base)
        if past_key_value is not None:
            k = torch.cat((past_key_value[0], k), dim=-2)
            v = torch.cat((past_key_value[1], v), dim=-2)
        query_at = torch.arange(p, p + x.shape[1])
        key_at = torch.arange(k.shape[-2])
        bias = torch.zeros(len(query_at), len(key_at)).masked_fill(key_at[None] > query_at[:, None], float("-inf"))
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / self.head_dim**0.5 + bias
        return self.merge(torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), v)), (k, v)


MUTANTS = {
    "mllm.merge_image_features": [
        (merge_image_tokens_labelled, "image placeholder positions are supervised"),
        (merge_padding_supervised, "padding is supervised"),
        (merge_labels_shifted, "already shifted by one"),
        (merge_answer_start_exclusive, "the first answer token is ignored"),
        (merge_ignore_hard_coded, "ignore_index is hard-coded"),
        (merge_counter_per_row, "the image counter restarts in every row"),
        (merge_looks_up_placeholders, "placeholder ids are never looked up"),
        (merge_edits_input_ids, "modified its input `input_ids` in place"),
        (merge_no_count_check, "ValueError"),
        (merge_features_not_cast, "must be cast to the embedding's dtype"),
        (merge_int_mask_as_condition, "attention_mask may be a 0/1 int tensor"),
        (merge_frozen_lookup, "no gradient reached `token_embedding.weight`"),
    ],
    "mllm.causal_lm_loss": [
        (loss_not_shifted, "the labels were not shifted"),
        (loss_shifted_wrong_way, "shifted the wrong way"),
        (loss_per_sequence_mean, "a mean of per-sequence means"),
        (loss_mean_over_all_positions, "including the ignored ones"),
        (loss_default_ignore_index, "ignore_index is not honoured"),
        (loss_ignores_num_items, "num_items_in_batch is ignored"),
        (loss_zero_when_nothing_supervised, "the contract returns NaN (0/0)"),
        (loss_upcast_float32, "wrong dtype: expected torch.float64, got torch.float32"),
    ],
    "mllm.qformer_attention_mask": [
        (qformer_inverted, "True and False are inverted"),
        (qformer_plain_causal, "a plain causal (lower-triangular) mask"),
        (qformer_text_bidirectional, "in 'itg' the text is not causal"),
        (qformer_queries_see_text, "in 'itg' the queries see the text"),
        (qformer_text_strictly_causal, "a text token does not see itself"),
        (qformer_itc_joint, "in 'itc' queries and text see each other"),
        (qformer_text_first, "the text comes first"),
        (qformer_float_mask, "wrong dtype: expected torch.bool"),
        (qformer_no_error, "ValueError"),
    ],
    "mllm.apply_rope": [
        (rope_interleaved, "adjacent dims (2i, 2i + 1) were rotated together"),
        (rope_positions_from_one, "the positions start at 1"),
        (rope_arange_positions, "the positions argument is ignored"),
        (rope_exponent_over_d, "the exponent is −i/d"),
        (rope_base_hard_coded, "the base argument is ignored"),
        (rope_repeat_interleave, "repeat_interleave"),
        (rope_wrong_sign, "the rotation goes the wrong way"),
        (rope_only_queries, "k is returned unrotated"),
    ],
    "mllm.pixel_shuffle_tokens": [
        (shuffle_view_only, "reshaped without permuting"),
        (shuffle_pixel_unshuffle, "F.pixel_unshuffle's order"),
        (shuffle_block_column_major, "the r×r block is read column by column"),
        (shuffle_grid_transposed, "the output tokens are in column-major order"),
        (shuffle_no_validation, "ValueError"),
        (shuffle_width_height_swapped, "height and width swapped"),
    ],
    "mllm.MlpProjector": [
        (ProjectorKeepsCls, "the CLS token (position 0) is kept"),
        (ProjectorLastLayer, "the last entry, hidden_states[-1], is used"),
        (ProjectorDefaultLastLayer, "whose default −2 is the penultimate entry"),
        (ProjectorEncoderLayersOnly, "entry 0 of hidden_states is the embedding output"),
        (ProjectorBatchSliced, "the first sample of the batch is dropped"),
        (ProjectorReLU, "ReLU instead of GELU"),
        (ProjectorTanhGelu, "the tanh approximation of GELU"),
        (ProjectorNoActivation, "no GELU between linear_1 and linear_2"),
        (ProjectorOneLinear, "parameter names must be linear_1/act/linear_2"),
        (ProjectorSequential, "parameter names must be linear_1/act/linear_2"),
        (ProjectorLayerAttributeRenamed, "`vision_feature_layer` must be kept on the module"),
    ],
    "mllm.CachedSelfAttention": [
        (AttentionCachesRawKeys, "the cache holds the keys before RoPE"),
        (AttentionPositionsRestart, "the positions restart at 0 in every call"),
        (AttentionNoCausalMask, "no causal mask"),
        (AttentionIsCausalAlways, "the causal mask is aligned top-left"),
        (AttentionMaskOnlyInPrefill, "the causal mask is applied only in the prefill"),
        (AttentionScaleByDim, "the scores are divided by d = dim"),
        (AttentionCacheTokensFirst, "the cache is laid out (B, P+L, H, head_dim)"),
        (AttentionReturnsNewOnly, "the returned cache holds only this call's keys and values"),
        (AttentionPositionCounter, "your module keeps state between calls"),
        (AttentionNoValidation, "built a module where the contract raises ValueError"),
    ],
}

CORRECT = {
    "mllm.merge_image_features": [merge_loop, merge_cumsum_gather, merge_index_assign],
    "mllm.causal_lm_loss": [loss_pad_then_shift, loss_gather_masked, loss_pair_loop],
    "mllm.qformer_attention_mask": [qformer_loops, qformer_unilm_prefix, qformer_blocks],
    "mllm.apply_rope": [rope_two_by_two, rope_complex_half_split, rope_pair_loop],
    "mllm.pixel_shuffle_tokens": [shuffle_loop, shuffle_unshuffle_permuted, shuffle_unfold],
    "mllm.MlpProjector": [ProjectorFunctional, ProjectorEinsum, ProjectorTokenLoop],
    "mllm.CachedSelfAttention": [AttentionLowerRightBias, AttentionComplexLoop, AttentionEinsumAdditiveMask],
}

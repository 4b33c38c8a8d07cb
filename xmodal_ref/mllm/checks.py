"""Checks for chapter 09 · mllm."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
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
    describe,
    describe_case,
    expect_close,
    expect_raises,
    expect_tensor,
    expect_tuple,
    explain_errors,
    invoke,
    run_case,
)
from ..grading.inputs import random_rows
from ..grading.verdict import CheckFailure

MERGE_VOCAB, MERGE_DIM, MERGE_TOKENS, MERGE_IMAGES = 10, 4, 3, 3

MERGE_OUTPUTS = ("inputs_embeds", "labels")


def _merge_batch(image_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids (3, 12), real-token mask (3, 12) and answer_start (3,): rows with 1, 2 and 0 images."""
    p = image_token_id
    input_ids = torch.tensor(
        [
            [3, 5, p, p, p, 7, 2, 8, 4, 0, 0, 0],  # one image, right padding, the answer from position 6
            [0, 0, 4, p, p, p, p, p, p, 6, 1, 5],  # two images back to back, left padding, supervised from 0
            [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4],  # no image, answer_start = L: nothing supervised
        ]
    )
    real = torch.tensor([[1] * 9 + [0] * 3, [0, 0] + [1] * 10, [1] * 12])
    return input_ids, real, torch.tensor([6, 0, 12])


def _merge_case(
    label: str,
    image_token_id: int,
    *,
    mask: str,
    seed: int,
    images: int = MERGE_IMAGES,
    feature_dtype: torch.dtype = torch.float32,
    ignore_index: int | None = None,
) -> Case:
    input_ids, real, answer_start = _merge_batch(image_token_id)
    features = random_rows(images * MERGE_TOKENS, MERGE_DIM, seed, dtype=feature_dtype).view(
        images, MERGE_TOKENS, MERGE_DIM
    )
    embedding = nn.Embedding.from_pretrained(random_rows(MERGE_VOCAB, MERGE_DIM, seed + 1), freeze=False)
    kwargs: dict[str, Any] = {}
    if mask != "none":
        kwargs["attention_mask"] = real.bool() if mask == "bool" else real
    if ignore_index is not None:
        kwargs["ignore_index"] = ignore_index
    return Case(label, (input_ids, features, embedding, image_token_id, answer_start), kwargs)


def _merge_labels(
    input_ids,
    image_token_id,
    answer_start,
    attention_mask=None,
    ignore_index=-100,
    *,
    images=True,
    padding=True,
    prompt=True,
    first_answer=True,
    shifted=False,
    ignore=None,
):
    """The labels with switches for the usual slips (a loop over positions)."""
    rows, length = input_ids.shape
    fill = ignore_index if ignore is None else ignore
    labels = torch.full_like(input_ids, fill)
    for b in range(rows):
        start = int(answer_start[b])
        for p in range(length):
            if prompt and (p < start or (not first_answer and p == start)):
                continue
            if images and int(input_ids[b, p]) == image_token_id:
                continue
            if padding and attention_mask is not None and not bool(attention_mask[b, p]):
                continue
            labels[b, p] = input_ids[b, p]
    if shifted:
        return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], fill)], dim=1)
    return labels


def _merge_embeds(input_ids, image_features, token_embedding, image_token_id, *, per_row=False, added=False):
    """The spliced embeddings, filling each row's placeholders in turn (a loop over rows)."""
    is_image = input_ids == image_token_id
    table = token_embedding.weight.detach()
    embeds = table[input_ids.masked_fill(is_image, 0)].clone()  # (B, L, D)
    features = image_features.detach().reshape(-1, image_features.shape[-1]).to(embeds.dtype)  # (M*N, D)
    used = 0
    for b in range(input_ids.shape[0]):
        where = is_image[b].nonzero()[:, 0]
        start = 0 if per_row else used
        embeds[b, where] = features[start : start + len(where)] + (table[image_token_id] if added else 0)
        used += len(where)
    return embeds


def _merge_variant(
    input_ids,
    image_features,
    token_embedding,
    image_token_id,
    answer_start,
    attention_mask=None,
    ignore_index=-100,
    *,
    embeds=None,
    **slips,
):
    """(inputs_embeds, labels) with one slip: in the embeddings (``embeds``) or in the labels (``slips``)."""
    merged = _merge_embeds(input_ids, image_features, token_embedding, image_token_id, **(embeds or {}))
    labels = _merge_labels(input_ids, image_token_id, answer_start, attention_mask, ignore_index, **slips)
    return merged, labels


MERGE_MISTAKES = [
    Mistake(
        "the image counter restarts in every row: image m fills placeholders m·N … m·N + N − 1 counted across the"
        " whole batch in row-major order, so a row's first image is the one after the previous rows' images",
        functools.partial(_merge_variant, embeds={"per_row": True}),
    ),
    Mistake(
        "the image features were added to the placeholder's embedding: they replace it (placeholder ids are never"
        " looked up)",
        functools.partial(_merge_variant, embeds={"added": True}),
    ),
    Mistake(
        "image placeholder positions are supervised: labels are ignore_index wherever input_ids == image_token_id",
        functools.partial(_merge_variant, images=False),
    ),
    Mistake(
        "padding is supervised: positions where attention_mask is False/0 get ignore_index",
        functools.partial(_merge_variant, padding=False),
    ),
    Mistake(
        "the prompt is supervised: positions before answer_start[b] get ignore_index",
        functools.partial(_merge_variant, prompt=False),
    ),
    Mistake(
        "the first answer token is ignored: supervise p ≥ answer_start[b], not p > answer_start[b]",
        functools.partial(_merge_variant, first_answer=False),
    ),
    Mistake(
        "the labels are already shifted by one: here labels[b, p] is input_ids[b, p] itself (not shifted);"
        " causal_lm_loss shifts",
        functools.partial(_merge_variant, shifted=True),
    ),
    Mistake(
        "ignore_index is hard-coded as −100: use the ignore_index argument",
        functools.partial(_merge_variant, ignore=-100),
    ),
]


def _merge_error_cause(problem: str, image_token_id: int) -> str | None:
    text = problem.lower()
    if "out of range" in text or "out of bounds" in text:
        return (
            f"a placeholder id was looked up in the embedding table: image_token_id = {image_token_id} need not be a"
            f" row of it (the table has {MERGE_VOCAB} rows, LLaVA uses −200); placeholder ids are never looked up, so"
            " replace them by any valid id (or embed only the text positions) before the lookup"
        )
    if "bool" in text:
        return "attention_mask may be a 0/1 int tensor: turn it into a bool mask first (`attention_mask.bool()`)"
    if "dtype" in text or "scalar type" in text:
        return "the image features must be cast to the embedding's dtype (`.to(inputs_embeds.dtype)`) before the splice"
    return None


def _fresh(value: Any) -> Any:
    """A deep copy of tensors and modules (an embedding table included), keeping requires_grad."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, nn.Module):
        return copy.deepcopy(value)
    return value


def _merge_inputs(case: Case) -> dict[str, torch.Tensor]:
    """Every tensor the call receives, by name (the embedding table as token_embedding.weight)."""
    input_ids, features, embedding, _, answer_start = case.args
    inputs = {
        "input_ids": input_ids,
        "image_features": features,
        "token_embedding.weight": embedding.weight,
        "answer_start": answer_start,
    }
    if "attention_mask" in case.kwargs:
        inputs["attention_mask"] = case.kwargs["attention_mask"]
    return inputs


def _merge_run(learner, reference, case: Case) -> None:
    """The reference first, then the learner on fresh copies; inputs compared with the case's untouched ones."""
    context = describe_case(case, reference)
    expected = reference(*map(_fresh, case.args), **{k: _fresh(v) for k, v in case.kwargs.items()})
    args, kwargs = tuple(map(_fresh, case.args)), {k: _fresh(v) for k, v in case.kwargs.items()}
    with explain_errors(functools.partial(_merge_error_cause, image_token_id=case.args[3])):
        got = invoke(learner, *args, context=context, **kwargs)
    given = _merge_inputs(Case(case.label, args, kwargs))
    for name, before in _merge_inputs(case).items():
        if not torch.equal(before.detach(), given[name].detach()):
            raise CheckFailure(
                f"modified its input `{name}` in place",
                case=context,
                cause="an in-place write such as `input_ids[input_ids == image_token_id] = 0`; the caller still needs"
                " its tensors, so work on a copy (`input_ids.masked_fill(...)`, `.clone()`)",
            )
    got = expect_tuple(got, MERGE_OUTPUTS, context)
    for index, name in enumerate(MERGE_OUTPUTS):
        picked = [Mistake(m.cause, functools.partial(_pick, m.compute, index)) for m in MERGE_MISTAKES]
        tolerance = 1e-6 if name == "inputs_embeds" else 0.0
        expect_close(
            got[index],
            expected[index],
            f"{context}; output `{name}`",
            args=case.args,
            kwargs=case.kwargs,
            mistakes=picked,
            atol=tolerance,
            rtol=0.0,
        )


def _pick(compute: Callable[..., Any], index: int, *args: Any, **kwargs: Any) -> Any:
    return compute(*args, **kwargs)[index]


def _merge_gradients(learner, reference, case: Case) -> None:
    """Gradients of a fixed projection of inputs_embeds w.r.t. image_features and token_embedding.weight."""
    context = describe_case(case, reference) + " (gradient check)"
    results = []
    for fn in (reference, learner):
        args, kwargs = list(map(_fresh, case.args)), {k: _fresh(v) for k, v in case.kwargs.items()}
        args[1].requires_grad_(True)
        if fn is reference:
            embeds = fn(*args, **kwargs)[0]
            weights = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(0), dtype=embeds.dtype)
        else:
            with explain_errors(functools.partial(_merge_error_cause, image_token_id=case.args[3])):
                got = invoke(fn, *args, context=context, **kwargs)
            embeds = expect_tensor(expect_tuple(got, MERGE_OUTPUTS, context)[0], results[0][0], context)
            if not embeds.requires_grad:
                raise CheckFailure(
                    "inputs_embeds is not connected to the autograd graph, so no gradient can flow",
                    case=context,
                    cause="a .detach(), .data, torch.no_grad() or a new tensor filled from values",
                )
        (embeds * weights).sum().backward()
        results.append((embeds, args[1].grad, args[2].weight.grad))
    causes = {
        "image_features": "each feature row goes to exactly one placeholder, unchanged: a detached or"
        " re-created copy of the features?",
        "token_embedding.weight": "placeholder positions must contribute nothing to any embedding row, and every"
        " text position its own row: the lookup ran under torch.no_grad(), was detached, or a placeholder"
        " embedding was kept under the features?",
    }
    for (name, cause), expected, grad in zip(causes.items(), results[0][1:], results[1][1:], strict=True):
        if grad is None:
            raise CheckFailure(f"no gradient reached `{name}`", case=context, cause=cause)
        if not torch.allclose(grad, expected, atol=1e-6, rtol=1e-5):
            raise CheckFailure(
                f"wrong gradient with respect to `{name}` (the forward value is right)",
                case=context,
                expected=describe(expected),
                got=describe(grad),
                cause=cause,
            )


def check_merge_image_features(learner, reference) -> None:
    v = MERGE_VOCAB
    cases = [
        _merge_case(f"image_token_id = V − 1 = {v - 1} (a row of the table), a bool mask", v - 1, mask="bool", seed=0),
        _merge_case(
            f"image_token_id = V = {v} (outside the table), no mask, float64 image features for a float32 table",
            v,
            mask="none",
            seed=10,
            feature_dtype=torch.float64,
        ),
        _merge_case(
            "image_token_id = −200 (LLaVA's IMAGE_TOKEN_INDEX), a 0/1 int mask, ignore_index = −1",
            -200,
            mask="int",
            seed=20,
            ignore_index=-1,
        ),
    ]
    for case in cases:
        _merge_run(learner, reference, case)
    for case in cases[:2]:
        _merge_gradients(learner, reference, case)
    for images in (2, 4):
        mismatch = _merge_case(
            f"{images} images of {MERGE_TOKENS} tokens for {MERGE_IMAGES * MERGE_TOKENS} placeholders",
            v - 1,
            mask="bool",
            seed=30 + images,
            images=images,
        )
        expect_raises(
            learner,
            mismatch,
            reference,
            "the number of placeholders must equal M·N (masked_scatter alone silently uses a prefix of the"
            " features, or fails with its own error)",
        )


_I = -100


def _logits(batch: int, length: int, vocab: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return random_rows(batch * length, vocab, seed, dtype=dtype).view(batch, length, vocab)


#: Unequal numbers of supervised pairs per row (3, 6 and 1), a real label at position 0, padding at the end.
LOSS_LABELS = torch.tensor(
    [
        [5, _I, _I, _I, _I, 3, 7, 2],
        [_I, _I, 1, 4, 9, 10, 0, 6],
        [_I, _I, _I, _I, _I, _I, 8, _I],
    ]
)


def _loss_variant(
    logits,
    labels,
    ignore_index=-100,
    num_items_in_batch=None,
    *,
    shift="contract",
    reduce="token",
    use_num_items=True,
):
    """The loss with switches for the usual slips, from per-pair negative log-likelihoods."""
    if shift == "none":
        predictions, targets = logits, labels
    elif shift == "reversed":
        predictions, targets = logits[:, 1:], labels[:, :-1]
    else:
        predictions, targets = logits[:, :-1], labels[:, 1:]
    kept = targets != ignore_index  # (B, L')
    log_probs = predictions.double().log_softmax(dim=-1)
    nll = -log_probs.gather(-1, targets.masked_fill(~kept, 0)[..., None])[..., 0] * kept  # (B, L')
    if reduce == "sequence":
        return (nll.sum(1) / kept.sum(1)).mean()
    if reduce == "all":
        return nll.mean()
    if reduce == "sum":
        return nll.sum()
    if num_items_in_batch is not None and use_num_items:
        return nll.sum() / float(num_items_in_batch)
    return nll.sum() / kept.sum().clamp(min=1) if reduce == "clamped" else nll.sum() / kept.sum()


LOSS_MISTAKES = [
    Mistake(
        "0 where no pair is supervised (a count clamped to 1, or a special case): the contract returns NaN (0/0),"
        ' as F.cross_entropy(reduction="mean") does',
        functools.partial(_loss_variant, reduce="clamped"),
    ),
    Mistake(
        "the labels were not shifted: logits[b, t] must be scored against labels[b, t + 1] (the next token)",
        functools.partial(_loss_variant, shift="none"),
    ),
    Mistake(
        "the labels were shifted the wrong way: logits[:, :-1] go with labels[:, 1:], not logits[:, 1:] with"
        " labels[:, :-1]",
        functools.partial(_loss_variant, shift="reversed"),
    ),
    Mistake(
        "a mean of per-sequence means: divide the whole batch's sum by its number of supervised pairs (a token-level"
        " mean), so a row with more answer tokens weighs more",
        functools.partial(_loss_variant, reduce="sequence"),
    ),
    Mistake(
        "a mean over all positions including the ignored ones: divide by the number of supervised pairs only",
        functools.partial(_loss_variant, reduce="all"),
    ),
    Mistake(
        "the sum is not divided by the number of supervised pairs (or by num_items_in_batch)",
        functools.partial(_loss_variant, reduce="sum"),
    ),
    Mistake(
        "num_items_in_batch is ignored: when it is given, the sum is divided by it instead of the count",
        functools.partial(_loss_variant, use_num_items=False),
    ),
]


def _loss_error_cause(problem: str) -> str | None:
    if "out of bounds" in problem or "out of range" in problem:
        return (
            "ignore_index is not honoured: targets equal to ignore_index (here −1) must be skipped, e.g."
            " F.cross_entropy(..., ignore_index=ignore_index)"
        )
    return None


def check_causal_lm_loss(learner, reference) -> None:
    labels64 = torch.tensor([[2, 0, -1, 4, 1, 3], [-1, -1, -1, -1, -1, -1], [-1, 3, 3, -1, 2, -1]])
    cases = [
        Case("3 rows with 3, 6 and 1 supervised pairs, V = 11", (_logits(3, 8, 11, 0), LOSS_LABELS)),
        Case(
            "the same batch, num_items_in_batch = 16 (an int)",
            (_logits(3, 8, 11, 1), LOSS_LABELS),
            {"num_items_in_batch": 16},
        ),
        Case(
            "the same batch, num_items_in_batch = tensor(7)",
            (_logits(3, 8, 11, 2), LOSS_LABELS),
            {"num_items_in_batch": torch.tensor(7)},
        ),
        Case(
            "float64 logits, ignore_index = −1, a row with no supervised pair",
            (_logits(3, 6, 5, 3, torch.float64), labels64),
            {"ignore_index": -1},
        ),
        Case("every label ignored: NaN (0/0)", (_logits(2, 5, 7, 4), torch.full((2, 5), -100))),
        Case("L = 1: no pair at all, NaN (0/0)", (_logits(2, 1, 7, 5), torch.tensor([[3], [1]]))),
    ]
    hint = (
        "a row with no supervised pair gives 0/0: divide the whole batch's sum by its number of supervised pairs,"
        " not row by row"
    )
    with explain_errors(_loss_error_cause):
        check_cases(learner, reference, cases, mistakes=LOSS_MISTAKES, atol=1e-6, rtol=1e-5, unstable_hint=hint)
    for case in (cases[0], cases[3]):
        check_gradients(learner, reference, case, wrt=["logits"], atol=1e-7, rtol=1e-5)


QFORMER_SIZES = ((4, 3), (32, 8), (1, 5), (3, 1), (0, 4), (5, 0), (2, 2))


def _qformer_variant(num_queries, text_len, objective, *, slip):
    """The mask (row attends to column) with one slip, cell by cell."""
    size = num_queries + text_len
    mask = torch.zeros(size, size, dtype=torch.bool)
    for row in range(size):
        for col in range(size):
            row_query, col_query = row < num_queries, col < num_queries
            if objective == "itm":
                allowed = slip != "itm-blocks" or row_query == col_query
            elif objective == "itc":
                allowed = slip == "itc-all" or row_query == col_query
            elif row_query:
                allowed = col_query or slip == "queries-see-text"
                allowed = allowed and not (slip == "plain-causal" and col > row)
            else:
                allowed = {
                    "text-bidirectional": True,
                    "text-strict": col_query or col < row,
                    "text-blind": not col_query and col <= row,
                }.get(slip, col_query or col <= row)
            mask[row, col] = allowed
    if slip == "inverted":
        return ~mask
    if slip == "text-first":
        order = torch.cat([torch.arange(num_queries, size), torch.arange(num_queries)])
        return mask[order][:, order]
    return mask


QFORMER_MISTAKES = [
    Mistake(
        "True and False are inverted: here True means the row position MAY attend to the column position"
        " (F.scaled_dot_product_attention's bool convention; nn.MultiheadAttention's attn_mask uses True = blocked)",
        functools.partial(_qformer_variant, slip="inverted"),
    ),
    Mistake(
        "a plain causal (lower-triangular) mask over queries and text: in 'itg' every query sees all queries",
        functools.partial(_qformer_variant, slip="plain-causal"),
    ),
    Mistake(
        "in 'itg' the queries see the text: they must see all queries and no text token (they are the prefix the"
        " caption is decoded from)",
        functools.partial(_qformer_variant, slip="queries-see-text"),
    ),
    Mistake(
        "in 'itg' the text is not causal: text token i sees all queries and only text tokens j ≤ i",
        functools.partial(_qformer_variant, slip="text-bidirectional"),
    ),
    Mistake(
        "in 'itg' a text token does not see itself: text token i sees text tokens j ≤ i (itself included)",
        functools.partial(_qformer_variant, slip="text-strict"),
    ),
    Mistake(
        "in 'itg' the text does not see the queries: every text token sees all queries (the visual prefix)",
        functools.partial(_qformer_variant, slip="text-blind"),
    ),
    Mistake(
        "in 'itc' queries and text see each other: every query↔text cell is False (BLIP-2 runs two uni-modal passes)",
        functools.partial(_qformer_variant, slip="itc-all"),
    ),
    Mistake(
        "in 'itm' queries and text are kept apart: 'itm' is bi-directional, every cell True",
        functools.partial(_qformer_variant, slip="itm-blocks"),
    ),
    Mistake(
        "the text comes first: the order is the Q queries, then the T text tokens (LAVIS concatenates"
        " [query_atts, text_atts])",
        functools.partial(_qformer_variant, slip="text-first"),
    ),
]


def check_qformer_attention_mask(learner, reference) -> None:
    expect_raises(
        learner,
        Case("objective 'mlm'", (4, 3, "mlm")),
        reference,
        "only 'itc', 'itm' and 'itg' exist: raise ValueError for any other objective",
    )
    mistakes = [Mistake(m.cause, functools.partial(_as_int, m.compute)) for m in QFORMER_MISTAKES]
    for objective in ("itc", "itm", "itg"):
        for queries, text in QFORMER_SIZES:
            case = Case(f"'{objective}', Q = {queries} queries, T = {text} text tokens", (queries, text, objective))
            got, expected = run_case(learner, reference, case)
            context = describe_case(case, reference)
            if isinstance(got, torch.Tensor) and got.dtype != torch.bool:
                raise CheckFailure(
                    f"wrong dtype: expected torch.bool, got {got.dtype}",
                    case=context,
                    cause="return a torch.bool mask (True = may attend); 0/1 numbers and an additive 0/−inf mask are"
                    " other conventions",
                )
            got = expect_tensor(got, expected, context)
            cells = f"{context} (cells shown as 1 = may attend, 0 = blocked)"
            expect_close(got.long(), expected.long(), cells, args=case.args, mistakes=mistakes, atol=0.0, rtol=0.0)


def _as_int(compute: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    return compute(*args).long()


def _rope_case(label: str, shape: tuple[int, int, int, int, int], dtype: torch.dtype, seed: int, **kwargs) -> Case:
    batch, q_heads, k_heads, length, d = shape
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_heads, length, d, generator=generator, dtype=torch.float64).to(dtype)
    k = torch.randn(batch, k_heads, length, d, generator=generator, dtype=torch.float64).to(dtype)
    positions = torch.randint(0, 300, (batch, length), generator=generator)
    positions[0] = torch.arange(length)
    return Case(label, (q, k, positions), kwargs)


def _rope_variant(
    q,
    k,
    positions,
    base=10000.0,
    *,
    pairs="half",
    offset=0,
    arange_positions=False,
    exponent=2,
    fixed_base=None,
    sign=1,
    angles="cat",
    swap=False,
    rotate_k=True,
):
    """The rotation in float64 with switches for the usual slips."""
    d = q.shape[-1]
    base = base if fixed_base is None else fixed_base
    inv_freq = base ** (-exponent * torch.arange(d // 2, dtype=torch.float64) / d)  # (d/2,)
    where = torch.arange(positions.shape[1]).expand_as(positions) if arange_positions else positions
    theta = (where + offset).double()[..., None] * inv_freq  # (B, L, d/2)

    def rotate(x):
        x = x.double()
        if pairs == "adjacent":  # dims (2i, 2i + 1) rotated by θ_i
            even, odd = x[..., 0::2], x[..., 1::2]
            c, s = theta.cos()[:, None], theta.sin()[:, None]
            return torch.stack([even * c - odd * s, odd * c + even * s], dim=-1).flatten(-2).to(q.dtype)
        full = torch.cat([theta, theta], -1) if angles == "cat" else theta.repeat_interleave(2, dim=-1)
        c, s = full.cos()[:, None], full.sin()[:, None]
        if swap:
            c, s = s, c
        half = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1) * sign
        return (x * c + half * s).to(q.dtype)

    return rotate(q), rotate(k) if rotate_k else k


ROPE_MISTAKES = [
    Mistake(
        "adjacent dims (2i, 2i + 1) were rotated together (the interleaved convention of the RoFormer paper and Meta's"
        " llama, GPT-J): this contract is HF's half-split rotate_half, which pairs dims i and i + d/2",
        functools.partial(_rope_variant, pairs="adjacent"),
    ),
    Mistake(
        "θ was laid out with repeat_interleave (θ0, θ0, θ1, θ1, …), the interleaved layout: with rotate_half use"
        " cat(θ, θ)",
        functools.partial(_rope_variant, angles="repeat_interleave"),
    ),
    Mistake(
        "the positions start at 1: use positions as given (position_ids start at 0)",
        functools.partial(_rope_variant, offset=1),
    ),
    Mistake(
        "the positions argument is ignored (arange(L) in every row): use positions[b, l], which need not be contiguous",
        functools.partial(_rope_variant, arange_positions=True),
    ),
    Mistake(
        "the exponent is −i/d: inv_freq[i] = base^(−2i/d) for the d/2 pairs i = 0 … d/2 − 1",
        functools.partial(_rope_variant, exponent=1),
    ),
    Mistake(
        "the base argument is ignored (10000 is used): inv_freq[i] = base^(−2i/d)",
        functools.partial(_rope_variant, fixed_base=10000.0),
    ),
    Mistake(
        "the rotation goes the wrong way (by −θ): rotate_half(x) = cat(−x[..., d/2:], x[..., :d/2])",
        functools.partial(_rope_variant, sign=-1),
    ),
    Mistake("cos and sin are swapped: out = x·cos + rotate_half(x)·sin", functools.partial(_rope_variant, swap=True)),
    Mistake("k is returned unrotated: rotate q and k alike", functools.partial(_rope_variant, rotate_k=False)),
]


def check_apply_rope(learner, reference) -> None:
    cases = [
        _rope_case("B=2, Hq=4, Hk=2 (GQA), L=6, d=32, float32, the default base", (2, 4, 2, 6, 32), torch.float32, 0),
        _rope_case("B=2, Hq=Hk=2, L=5, d=16, float64, base=500", (2, 2, 2, 5, 16), torch.float64, 1, base=500.0),
        _rope_case("B=3, Hq=3, Hk=1, L=4, d=8, float32, base=1e6", (3, 3, 1, 4, 8), torch.float32, 2, base=1_000_000.0),
    ]
    outputs = ("q_rot", "k_rot")
    check_cases(learner, reference, cases, mistakes=ROPE_MISTAKES, atol=2e-4, rtol=1e-4, outputs=outputs)
    check_gradients(learner, reference, cases[0], wrt=["q", "k"], outputs=outputs, atol=1e-4)


#: (B, N, C, r) of the graded cases.
SHUFFLE_SHAPES = ((2, 16, 3, 2), (1, 36, 4, 3), (2, 36, 2, 2), (1, 64, 5, 4), (2, 9, 3, 1))


def _shuffle_variant(x, scale, *, permute=True, block="row", grid="row", channels="block-major"):
    """The space-to-depth with switches for the usual slips, token by token."""
    batch, tokens, width = x.shape
    if not permute:
        return x.reshape(batch, tokens // scale**2, scale * scale * width)
    side = math.isqrt(tokens)
    blocks = side // scale
    out = x.new_empty(batch, blocks * blocks, scale * scale * width)
    for i in range(blocks):
        for j in range(blocks):
            token = (j * blocks + i) if grid == "column" else (i * blocks + j)
            for dy in range(scale):
                for dx in range(scale):
                    slot = dx * scale + dy if block == "column" else dy * scale + dx
                    source = x[:, (i * scale + dy) * side + (j * scale + dx)]  # (B, C)
                    if channels == "channel-major":  # F.pixel_unshuffle's c·r² + slot
                        out[:, token, slot :: scale * scale] = source
                    else:
                        out[:, token, slot * width : (slot + 1) * width] = source
    return out


SHUFFLE_MISTAKES = [
    Mistake(
        "the tokens were reshaped without permuting: consecutive tokens in row-major order are not an r×r block;"
        " view the grid as (B, S/r, r, S/r, r, C) and bring the two block axes together before flattening",
        functools.partial(_shuffle_variant, permute=False),
    ),
    Mistake(
        "the channels are ordered c·r² + dy·r + dx (F.pixel_unshuffle's order): here the block's tokens are"
        " concatenated whole, (dy·r + dx)·C + c",
        functools.partial(_shuffle_variant, channels="channel-major"),
    ),
    Mistake(
        "the r×r block is read column by column: its tokens are concatenated in row-major block order, dx fastest,"
        " (dy·r + dx)·C + c",
        functools.partial(_shuffle_variant, block="column"),
    ),
    Mistake(
        "the output tokens are in column-major order: block (i, j) goes to index i·(S/r) + j",
        functools.partial(_shuffle_variant, grid="column"),
    ),
    Mistake(
        "both the blocks and the tokens inside them are in column-major order (height and width swapped)",
        functools.partial(_shuffle_variant, block="column", grid="column"),
    ),
]


def check_pixel_shuffle_tokens(learner, reference) -> None:
    for label, shape, scale in (("N = 12 is not a perfect square", (1, 12, 2), 2), ("S = 5, r = 2", (1, 25, 2), 2)):
        expect_raises(
            learner,
            Case(label, (random_rows(shape[0] * shape[1], shape[2], 0).view(shape), scale)),
            reference,
            "N must be a perfect square S² and r must divide S",
        )
    cases = [
        Case(
            f"B={b}, N={n} ({math.isqrt(n)}×{math.isqrt(n)} grid), C={c}, r={r}",
            (random_rows(b * n, c, seed).view(b, n, c), r),
        )
        for seed, (b, n, c, r) in enumerate(SHUFFLE_SHAPES)
    ]
    check_cases(learner, reference, cases, mistakes=SHUFFLE_MISTAKES, atol=0.0, rtol=0.0)
    check_gradients(learner, reference, cases[0], wrt=["x"])


#: The graded ``vision_feature_layer`` values; −2 is the default, so that module is built without the argument.
PROJECTOR_LAYERS = (-2, -1, 1, -3)

#: (B, N, vision_dim, text_dim, K): K = 5 hidden states, so −2, −1, 1 and −3 select four different entries.
PROJECTOR_SHAPE = (2, 6, 12, 8, 5)

PROJECTOR_NAMES = (
    "parameter names must be linear_1/act/linear_2 (HF LlavaMultiModalProjector's): linear_1 = nn.Linear(vision_dim,"
    " text_dim), act = nn.GELU(), linear_2 = nn.Linear(text_dim, text_dim), both Linears with a bias"
)


def _projector_states(batch: int, tokens: int, dim: int, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` ViT hidden states (B, 1 + tokens, dim) of scale ~2 (so that GELU's variants differ), CLS first."""
    return [random_rows(batch * (1 + tokens), dim, 10 * seed + i).view(batch, 1 + tokens, dim) for i in range(count)]


def _projected(
    twin: nn.Module,
    hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor],
    *,
    entry: Callable[[Any, int], torch.Tensor] = lambda states, layer: states[layer],
    select: Callable[[torch.Tensor], torch.Tensor] = lambda x: x[:, 1:],
    act: Callable[[torch.Tensor], torch.Tensor] = F.gelu,
    act_after: bool = False,
) -> torch.Tensor:
    """The projector with switches for the usual mistakes: which entry, which tokens, which activation."""
    x = select(entry(hidden_states, twin.vision_feature_layer))
    out = twin.linear_2(act(twin.linear_1(x)))
    return act(out) if act_after else out


def _projector_mistakes(twin: nn.Module) -> list[Mistake]:
    project = functools.partial(_projected, twin)
    return [
        Mistake(
            "the CLS token (position 0) is kept; LLaVA drops it: x = hidden_states[vision_feature_layer][:, 1:]",
            functools.partial(project, select=lambda x: x),
        ),
        Mistake(
            "the last token is dropped instead of the CLS token, which is at position 0: x[:, 1:]",
            functools.partial(project, select=lambda x: x[:, :-1]),
        ),
        Mistake(
            "the first sample of the batch is dropped, not the CLS token: slice the token axis, x[:, 1:]",
            functools.partial(project, select=lambda x: x[1:]),
        ),
        Mistake(
            "the last entry, hidden_states[-1], is used; select hidden_states[vision_feature_layer], whose default −2"
            " is the penultimate entry (LLaVA-1.5's mm_vision_select_layer=-2)",
            functools.partial(project, entry=lambda states, layer: states[-1]),
        ),
        Mistake(
            "hidden_states[-2] is used whatever vision_feature_layer is: index with self.vision_feature_layer",
            functools.partial(project, entry=lambda states, layer: states[-2]),
        ),
        Mistake(
            "the layer is counted among the encoder layers only; entry 0 of hidden_states is the embedding output,"
            " so index hidden_states itself: hidden_states[vision_feature_layer]",
            functools.partial(project, entry=lambda states, layer: states[1:][layer]),
        ),
        Mistake("ReLU instead of GELU between linear_1 and linear_2", functools.partial(project, act=F.relu)),
        Mistake(
            "the tanh approximation of GELU (approximate='tanh'); LLaVA's projector uses the exact erf GELU, nn.GELU()",
            functools.partial(project, act=functools.partial(F.gelu, approximate="tanh")),
        ),
        Mistake(
            "no GELU between linear_1 and linear_2 (two Linears in a row are a single linear map)",
            functools.partial(project, act=lambda x: x),
        ),
        Mistake(
            "GELU is applied after linear_2 too; the projector ends with linear_2",
            functools.partial(project, act_after=True),
        ),
    ]


def _projector_twin(learner: Any, reference: Any, *args: Any) -> tuple[nn.Module, nn.Module]:
    """``build_twin``, with the contract's diagnosis for parameters named otherwise."""
    try:
        return build_twin(learner, reference, *args)
    except CheckFailure as failure:
        if not failure.problem.startswith("the module's parameters"):
            raise
        raise CheckFailure(
            failure.problem, case=failure.case, expected=failure.expected, got=failure.got, cause=PROJECTOR_NAMES
        ) from None


class _ProjectorOnSelectedEntry(nn.Module):
    """A projector fed fixed hidden states whose selected entry is this module's input: ``check_gradients`` then
    differentiates with respect to that entry alone (the other entries get no gradient)."""

    def __init__(self, projector: nn.Module, hidden_states: list[torch.Tensor], layer: int) -> None:
        super().__init__()
        self.projector, self.hidden_states, self.layer = projector, hidden_states, layer

    def forward(self, selected_entry: torch.Tensor) -> torch.Tensor:
        states = list(self.hidden_states)
        states[self.layer] = selected_entry
        return self.projector(tuple(states))


def check_MlpProjector(learner, reference) -> None:
    batch, tokens, vision_dim, text_dim, count = PROJECTOR_SHAPE
    for seed, layer in enumerate(PROJECTOR_LAYERS):
        default = layer == PROJECTOR_LAYERS[0]
        args = (vision_dim, text_dim) if default else (vision_dim, text_dim, layer)
        module, twin = _projector_twin(learner, reference, *args)
        states = _projector_states(batch, tokens, vision_dim, count, seed)
        built = f"MlpProjector({', '.join(map(str, args))})" + (" (vision_feature_layer left at its default)" * default)
        shape = f"K={count} hidden states (B={batch}, 1 + N={1 + tokens}, vision_dim={vision_dim})"
        cases = [
            Case(f"{built}; a tuple of {shape}", (tuple(states),)),
            Case(f"{built}; a list of {shape}", (list(states),)),
            Case(f"{built}; N = 0: each hidden state is only the CLS token", ([s[:, :1] for s in states],)),
        ]
        mistakes = _projector_mistakes(twin)
        for case in cases:
            got, expected = run_case(module, twin, case)
            expect_close(got, expected, describe_case(case, twin), args=case.args, mistakes=mistakes, rtol=0)
        stored = getattr(module, "vision_feature_layer", None)
        if stored != layer:
            raise CheckFailure(
                f"`vision_feature_layer` must be kept on the module as the int it was given ({layer})",
                case=built,
                got=describe(stored) if stored is not None else "no attribute vision_feature_layer",
                cause="self.vision_feature_layer = vision_feature_layer (HF's LlavaConfig name), the default being −2",
            )
        selected = Case(
            f"{built}; gradient w.r.t. the selected entry hidden_states[{layer}] and every parameter",
            (states[layer],),
        )
        check_gradients(
            _ProjectorOnSelectedEntry(module, states, layer),
            _ProjectorOnSelectedEntry(twin, states, layer),
            selected,
            wrt=["selected_entry"],
            parameters=True,
        )


#: (dim, num_heads, rope_base or None for the default).
ATTENTION_CONFIGS = ((32, 4, None), (24, 2, None), (16, 1, 500.0))

#: How each sequence is fed: a prefill of the first chunk, then the rest in these chunks.
ATTENTION_CHUNKINGS = ((5, 1, 1, 3), (1, 3, 4), (6,))

ATTENTION_PIECES = ("out", "the returned cache's keys k_all", "the returned cache's values v_all")


def _cached_rope_rotated(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """``x`` (B, H, L, d) rotated at ``positions`` (L,) in the rotate_half convention (angles in float64)."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64) / half)  # (d/2,)
    angles = (positions.double()[:, None] * inv_freq).repeat(1, 2)  # (L, d)
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * angles.cos().to(x.dtype) + rotated * angles.sin().to(x.dtype)


def _attention_variant(
    twin: nn.Module,
    x: torch.Tensor,
    past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    restart: bool = False,
    base: float | None = None,
    rotate: str = "qk",
    raw_cache: bool = False,
    cache: str = "all",
    mask: str = "bottom_right",
    scale: float | None = None,
    split: str = "transpose",
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Cached attention with switches for the usual mistakes; returns (out, (k_all, v_all)).

    ``restart``: positions 0 … L−1 in every call. ``rotate``: which of q, k, v are rotated. ``raw_cache``: the cache
    holds keys before RoPE, and every call rotates all cached keys again at 0 … P+L−1. ``cache``: "all" (the
    contract), "new" (this call's keys and values only) or "tokens_first" ((B, P+L, H, hd), before the transpose).
    ``mask``: "bottom_right" (the contract), "top_left", "prefill_only" or "none". ``split``: "transpose" or "view"
    (heads cut across positions).
    """
    batch, length, dim = x.shape
    heads, head_dim = twin.num_heads, twin.head_dim
    base = twin.rope_base if base is None else base

    def split_heads(t: torch.Tensor) -> torch.Tensor:
        if split == "view":
            return t.reshape(batch, heads, length, head_dim)
        return t.view(batch, length, heads, head_dim).transpose(1, 2)

    q, k, v = split_heads(twin.q_proj(x)), split_heads(twin.k_proj(x)), split_heads(twin.v_proj(x))
    past = 0 if past_key_value is None else past_key_value[0].shape[2]
    positions = torch.arange(length) if restart else torch.arange(past, past + length)
    q = _cached_rope_rotated(q, positions, base) if "q" in rotate else q
    rotated_k = _cached_rope_rotated(k, positions, base) if "k" in rotate else k
    v = _cached_rope_rotated(v, positions, base) if "v" in rotate else v
    new_k = k if raw_cache else rotated_k
    k_all = new_k if past_key_value is None else torch.cat([past_key_value[0], new_k], dim=2)
    v_all = v if past_key_value is None else torch.cat([past_key_value[1], v], dim=2)
    keys = _cached_rope_rotated(k_all, torch.arange(past + length), base) if raw_cache else k_all
    scores = q @ keys.transpose(-2, -1) / (math.sqrt(head_dim) if scale is None else scale)
    if mask == "prefill_only":
        mask = "bottom_right" if past_key_value is None else "none"
    if mask != "none":
        diagonal = past + 1 if mask == "bottom_right" else 1
        scores = scores.masked_fill(torch.ones(length, past + length, dtype=torch.bool).triu(diagonal), -math.inf)
    heads_out = torch.softmax(scores, dim=-1) @ v_all  # (B, H, L, hd)
    merged = heads_out.transpose(1, 2) if split == "transpose" else heads_out
    out = twin.o_proj(merged.reshape(batch, length, dim))
    if cache == "new":
        return out, (new_k, v)
    if cache == "tokens_first":
        return out, (k_all.transpose(1, 2), v_all.transpose(1, 2))
    return out, (k_all, v_all)


def _attention_mistakes(twin: nn.Module) -> list[Mistake]:
    variant = functools.partial(_attention_variant, twin)
    return [
        Mistake(
            "the cache holds the keys before RoPE; cache the rotated keys (as HF's DynamicCache does), each rotated"
            " once at its own position, so that a cache works in any module (rotating the whole cache again on every"
            " call turns a rotated cache into a twice-rotated one)",
            functools.partial(variant, raw_cache=True),
        ),
        Mistake(
            "the positions restart at 0 in every call; the new tokens sit at P … P+L−1, offset by the cache length"
            " P = past_key_value[0].shape[2]",
            functools.partial(variant, restart=True),
        ),
        Mistake(
            "only q is rotated; apply_rope rotates both q and k (and the cache keeps the rotated k)",
            functools.partial(variant, rotate="q"),
        ),
        Mistake(
            "RoPE is applied to the values too; only q and k are rotated", functools.partial(variant, rotate="qkv")
        ),
        Mistake("rope_base is ignored (10000 used); pass it to apply_rope", functools.partial(variant, base=10000.0)),
        Mistake(
            "the causal mask is applied only in the prefill; a chunk of several tokens after a cache needs it too:"
            " query i (position P+i) must not see keys after P+i",
            functools.partial(variant, mask="prefill_only"),
        ),
        Mistake(
            "no causal mask: query i (position P+i) must not see the keys after it",
            functools.partial(variant, mask="none"),
        ),
        Mistake(
            "the causal mask is aligned top-left (is_causal=True, or triu(1) on the (L, P+L) scores), so after a cache"
            " query i sees only keys 0 … i; it sits at position P+i and must see keys 0 … P+i (bottom-right alignment,"
            " torch.nn.attention.bias.causal_lower_right)",
            functools.partial(variant, mask="top_left"),
        ),
        Mistake(
            "the scores are divided by d = dim; divide by √head_dim",
            lambda x, past_key_value=None: variant(x, past_key_value, scale=float(twin.num_heads * twin.head_dim)),
        ),
        Mistake(
            "the scores are divided by √dim (the model width); divide by √head_dim, the head width",
            lambda x, past_key_value=None: variant(x, past_key_value, scale=math.sqrt(twin.num_heads * twin.head_dim)),
        ),
        Mistake(
            "the heads were split with .view(B, H, L, head_dim), which cuts across positions: use"
            " .view(B, L, H, head_dim).transpose(1, 2)",
            functools.partial(variant, split="view"),
        ),
        Mistake(
            "the returned cache holds only this call's keys and values; return the whole cache, cat(past, new) along"
            " dim 2",
            functools.partial(variant, cache="new"),
        ),
        Mistake(
            "the cache is laid out (B, P+L, H, head_dim), before the heads' transpose; the contract's cache (HF's"
            " DynamicCache) is (B, H, P+L, head_dim), concatenated along dim 2",
            functools.partial(variant, cache="tokens_first"),
        ),
    ]


def _attention_inputs(dim: int, seed: int) -> torch.Tensor:
    """(2, 10, dim): two sequences, long enough for every chunking."""
    return random_rows(2 * 10, dim, seed).view(2, 10, dim)


def _expect_attention_pieces(got: Any, context: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, k_all, v_all) from ``got``, which must be (out, (k_all, v_all))."""
    if not (
        isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[1], (tuple, list)) and len(got[1]) == 2
    ):
        raise CheckFailure(
            "expected (out, (k_all, v_all)): the output and the new cache, a pair of tensors",
            case=context,
            got=describe(got),
            cause="return o_proj(...), (k_all, v_all), the cache as a tuple of the keys and the values",
        )
    return got[0], got[1][0], got[1][1]


def _pick_attention_piece(compute: Callable[..., Any], index: int, *args: Any, **kwargs: Any) -> torch.Tensor:
    out, (keys, values) = compute(*args, **kwargs)
    return (out, keys, values)[index]


def _compare_attention_call(module: nn.Module, twin: nn.Module, case: Case, mistakes: list[Mistake]) -> None:
    """One call of the learner's module and of the reference on the same input and cache; compare all three."""
    context = describe_case(case, twin)
    got, expected = run_case(module, twin, case)
    pieces = _expect_attention_pieces(got, context)
    expected_pieces = (expected[0], *expected[1])
    for index, name in enumerate(ATTENTION_PIECES):
        picked = [Mistake(m.cause, functools.partial(_pick_attention_piece, m.compute, index)) for m in mistakes]
        expect_close(pieces[index], expected_pieces[index], f"{context}; {name}", args=case.args, mistakes=picked)


def _check_attention_chunking(module: nn.Module, twin: nn.Module, x: torch.Tensor, chunks: tuple[int, ...], built: str):
    """Each call fed the reference's cache, then the whole chain on the learner's own cache against a full pass."""
    length = sum(chunks)
    sequence = f"{built}; 2 sequences of {length} tokens fed in chunks {list(chunks)}"
    mistakes = _attention_mistakes(twin)
    past, start = None, 0
    for size in chunks:
        chunk = x[:, start : start + size]
        tokens = f"token {start}" if size == 1 else f"tokens {start} … {start + size - 1}"
        if past is None:
            case = Case(f"{sequence}; this call: the prefill, {tokens}, no cache", (chunk,))
        else:
            cached = "token 0" if start == 1 else f"tokens 0 … {start - 1}"
            case = Case(f"{sequence}; this call: {tokens}, with the reference's cache of {cached}", (chunk, past))
        _compare_attention_call(module, twin, case, mistakes)
        with torch.no_grad():
            past = twin(*case.args)[1]
        start += size

    with torch.no_grad():
        full, (keys, values) = twin(x[:, :length])
        outputs, own, start = [], None, 0
        for size in chunks:
            got = invoke(module, x[:, start : start + size], own, context=sequence)
            out, own_keys, own_values = _expect_attention_pieces(got, sequence)
            outputs.append(out)
            own, start = (own_keys, own_values), start + size
    chained = f"{sequence}, each call given the cache your module returned; compared with one call on all {length}"
    stateful = (
        "your module keeps state between calls (a position counter, a stored cache): every call given the"
        " reference's cache was right, but the same calls repeated on a fresh chain are not. Everything a call"
        " needs, P and the past keys and values, must come from past_key_value"
    )
    for name, got_piece, expected_piece in (
        ("the outputs of all the calls", torch.cat(outputs, dim=1), full),
        ("the final cache's keys", own[0], keys),
        ("the final cache's values", own[1], values),
    ):
        if got_piece.shape != expected_piece.shape or not torch.allclose(
            got_piece, expected_piece, atol=1e-5, rtol=1e-4
        ):
            raise CheckFailure(f"{name} differ from a single call on the whole sequence", case=chained, cause=stateful)


class _AttentionFlatOutputs(nn.Module):
    """(out, k_all, v_all) of an attention module as one flat tuple, for ``check_gradients``."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (keys, values) = self.attention(x)
        return out, keys, values


def check_CachedSelfAttention(learner, reference) -> None:
    for seed, (dim, heads, base) in enumerate(ATTENTION_CONFIGS):
        args = (dim, heads) if base is None else (dim, heads, base)
        module, twin = build_twin(learner, reference, *args)
        built = f"CachedSelfAttention({', '.join(map(str, args))})"
        x = _attention_inputs(dim, seed)
        for chunks in ATTENTION_CHUNKINGS:
            _check_attention_chunking(module, twin, x, chunks, built)
        full_pass = Case(f"{built}; one call on 2 sequences of 6 tokens, no cache (gradient check)", (x[:, :6],))
        check_gradients(
            _AttentionFlatOutputs(module),
            _AttentionFlatOutputs(twin),
            full_pass,
            wrt=["x"],
            outputs=("out", "k_all", "v_all"),
            parameters=True,
            atol=1e-4,
        )
    for args, why in (
        ((30, 4), "dim 30 is not divisible by num_heads 4"),
        ((12, 4), "head_dim 12 // 4 = 3 is odd, and RoPE rotates pairs of dims"),
    ):
        expect_raises(learner, Case("construction", args), reference, why, produced="built a module")

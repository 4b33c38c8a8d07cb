"""Checks for chapter 01 · fusion."""

from __future__ import annotations

import functools
import math

import torch

from ..grading.harness import (
    Case,
    Mistake,
    build_twin,
    check_cases,
    check_gradients,
    describe,
    expect_tensor,
    invoke,
)
from ..grading.inputs import random_rows
from ..grading.verdict import CheckFailure
from .reference import tensor_fusion


def _features(batch: int, dims: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [random_rows(batch, d, seed + i, dtype=dtype) for i, d in enumerate(dims)]


def _with_one(z: torch.Tensor, *, first: bool = False) -> torch.Tensor:
    one = z.new_ones(z.shape[0], 1)
    return torch.cat([one, z] if first else [z, one], dim=-1)


def _outer(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Flattened outer product of (B, n_i) rows, the first vector slowest-varying: (B, Π n_i)."""
    out = vectors[0]
    for v in vectors[1:]:
        out = (out[:, :, None] * v[:, None, :]).flatten(1)
    return out


# ----------------------------------------------------------------------------- tensor_fusion


def check_tensor_fusion(learner, reference) -> None:
    cases = [
        Case("two modalities, B=4, dims (3, 2)", (_features(4, (3, 2), 0),)),
        Case("three modalities, B=2, dims (2, 3, 1)", (_features(2, (2, 3, 1), 1),)),
        Case("a batch of one, dims (4, 4)", (_features(1, (4, 4), 2),)),
        Case("float64, dims (2, 2, 2, 2)", (_features(3, (2, 2, 2, 2), 3, dtype=torch.float64),)),
    ]
    mistakes = [
        Mistake(
            "no 1 appended: TFN's [z ; 1] keeps the unimodal terms next to the products",
            lambda features: _outer(list(features)),
        ),
        Mistake(
            "the 1 is prepended ([1 ; z]); the contract appends it last ([z ; 1])",
            lambda features: _outer([_with_one(z, first=True) for z in features]),
        ),
        Mistake(
            "the last modality varies slowest: chain the outer products from the first modality",
            lambda features: _outer([_with_one(z) for z in reversed(features)]),
        ),
        Mistake(
            "the modalities are concatenated ([z_1 ; … ; z_M ; 1]), not multiplied: that is early fusion",
            lambda features: _with_one(torch.cat(list(features), dim=-1)),
        ),
        Mistake(
            "only the first two modalities are fused: chain the outer product over all M",
            lambda features: _outer([_with_one(z) for z in features[:2]]),
        ),
    ]
    check_cases(learner, reference, cases, mistakes=mistakes)
    check_gradients(learner, reference, cases[1], wrt=["features"])


# ----------------------------------------------------------------------------- LowRankFusion


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter seeded values, so zero-initialised ones (a bias) are tested too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)


def _full_weight(factors: list[torch.Tensor]) -> torch.Tensor:
    """The rank-R TFN weight W = Σ_r ⊗_i factors[i][r], flattened to (Π (d_i + 1), O)."""
    weight = factors[0]  # (R, n_0, O)
    for factor in factors[1:]:
        weight = (weight[:, :, None, :] * factor[:, None, :, :]).flatten(1, 2)  # (R, n_0·…·n_i, O)
    return weight.sum(dim=0)


def _lmf(features, factors, bias, *, combine="product", rank_reduce="sum", first=False, use_bias=True):
    projected = [
        torch.einsum("bd,rdo->rbo", _with_one(z, first=first), f) for z, f in zip(features, factors, strict=True)
    ]
    stacked = torch.stack(projected)  # (M, R, B, O)
    fused = stacked.prod(dim=0) if combine == "product" else stacked.sum(dim=0)
    fused = fused.sum(dim=0) if rank_reduce == "sum" else fused.mean(dim=0)
    return fused + bias if use_bias else fused


def check_LowRankFusion(learner, reference) -> None:
    for dims, output_dim, rank, seed in (((3, 2), 4, 3, 0), ((2, 3, 4), 5, 2, 1)):
        module, twin = build_twin(learner, reference, list(dims), output_dim, rank)
        _randomise(module, seed)
        twin.load_state_dict(module.state_dict())
        factors = [f.detach() for f in twin.factors]
        bias = twin.bias.detach()
        weight = _full_weight(factors)

        def via_tfn(features, weight=weight, bias=bias):
            """The proof: TFN's outer product, then the rank-R weight the factors define."""
            return tensor_fusion(features) @ weight + bias

        cases = [
            Case(f"{len(dims)} modalities, dims {dims}, rank {rank}, B=5", (_features(5, dims, seed + 10),)),
            Case("a batch of one", (_features(1, dims, seed + 20),)),
        ]
        lmf = functools.partial(_lmf, factors=factors, bias=bias)
        mistakes = [
            Mistake(
                "the modalities' projections are summed; LMF multiplies them", functools.partial(lmf, combine="sum")
            ),
            Mistake("the rank terms are averaged; LMF sums them", functools.partial(lmf, rank_reduce="mean")),
            Mistake("the 1 is prepended ([1 ; z]); append it last ([z ; 1])", functools.partial(lmf, first=True)),
            Mistake("the bias is not added", functools.partial(lmf, use_bias=False)),
        ]
        check_cases(module, via_tfn, cases, mistakes=mistakes, atol=1e-4)
        check_gradients(module, twin, cases[0], wrt=["features"], parameters=True, atol=1e-4)


# ----------------------------------------------------------------------------- GatedMultimodalUnit


def _gmu(
    twin, features, *, tanh=True, swap=False, gate_activation=True, gate_axis=1, layout="modality-first", sigmoids=False
):
    hidden = torch.stack([p(x) for p, x in zip(twin.projections, features, strict=True)], 1)  # (B, M, H)
    hidden = torch.tanh(hidden) if tanh else hidden
    logits = twin.gate(torch.cat(features, dim=-1))
    if len(features) == 2:
        z = torch.sigmoid(logits) if gate_activation else logits
        first, second = (hidden[:, 1], hidden[:, 0]) if swap else (hidden[:, 0], hidden[:, 1])
        return z * first + (1 - z) * second
    batch, modalities, width = hidden.shape
    if layout == "modality-first":
        logits = logits.view(batch, modalities, width)
    else:
        logits = logits.view(batch, width, modalities).transpose(1, 2)
    z = torch.sigmoid(logits) if sigmoids else torch.softmax(logits, dim=gate_axis)
    return (z * hidden).sum(dim=1)


def check_GatedMultimodalUnit(learner, reference) -> None:
    for dims, hidden_dim, seed in (((4, 3), 5, 0), ((3, 2, 4), 6, 1)):
        module, twin = build_twin(learner, reference, list(dims), hidden_dim)
        cases = [
            Case(f"{len(dims)} modalities, dims {dims}, hidden {hidden_dim}, B=6", (_features(6, dims, seed),)),
            Case("a batch of one", (_features(1, dims, seed + 5),)),
        ]
        gmu = functools.partial(_gmu, twin)
        mistakes = [
            Mistake("no tanh on the modality projections: h_i = tanh(W_i x_i)", functools.partial(gmu, tanh=False)),
            Mistake(
                "z weights the second modality: the result is z ⊙ h_1 + (1 − z) ⊙ h_2",
                functools.partial(gmu, swap=True),
            ),
            Mistake("the gate has no sigmoid: z = σ(W_z [x_1 ; x_2])", functools.partial(gmu, gate_activation=False)),
            Mistake(
                "the softmax runs over the hidden units; it must run over the modality axis (dim 1 of (B, M, H))",
                functools.partial(gmu, gate_axis=2),
            ),
            Mistake(
                "gate(x) was viewed as (B, H, M); the contract is .view(B, M, hidden_dim)",
                functools.partial(gmu, layout="hidden-first"),
            ),
            Mistake(
                "independent sigmoid gates for M > 2 modalities: their weights need not sum to 1; the contract"
                " takes a softmax over the modality axis",
                functools.partial(gmu, sigmoids=True),
            ),
        ]
        check_cases(module, twin, cases, mistakes=mistakes)
        check_gradients(module, twin, cases[0], wrt=["features"], parameters=True)


# ----------------------------------------------------------------------------- modality_dropout


def _call_dropout(learner, features, p, training, seed, context):
    torch.manual_seed(seed)
    copies = [f.clone() for f in features]
    out = invoke(learner, copies, p, training, context=context)
    if not isinstance(out, (list, tuple)) or len(out) != len(features):
        raise CheckFailure(
            f"expected a list of {len(features)} tensors, one per modality",
            case=context,
            got=describe(out) if not isinstance(out, (list, tuple)) else f"{len(out)} values",
        )
    for i, (before, after) in enumerate(zip(features, copies, strict=True)):
        if not torch.equal(before, after):
            raise CheckFailure(
                f"modified its input features[{i}] in place",
                case=context,
                cause="`x.mul_(…)` or `x[mask] = 0` changes the caller's tensor: build new tensors",
            )
    return [expect_tensor(o, f, context) for o, f in zip(out, features, strict=True)]


def check_modality_dropout(learner, reference) -> None:
    small = _features(4, (3, 5), 0)
    for p, training, label in ((0.5, False, "evaluation (training=False)"), (0.0, True, "training with p = 0")):
        context = f"modality_dropout: {label}, p = {p}, two modalities (4, 3) and (4, 5)"
        out = _call_dropout(learner, small, p, training, 0, context)
        for i, (o, f) in enumerate(zip(out, small, strict=True)):
            if not torch.equal(o, f):
                raise CheckFailure(
                    f"features[{i}] changed; here the function must be the identity",
                    case=context,
                    cause="dropout applies only in training and only when p > 0",
                )

    batch = 40_000
    for shapes, p in ((((3,), (2,)), 0.5), (((2,), (2,), (3, 2)), 0.3)):  # the last modality is a sequence
        m = len(shapes)
        sizes = ", ".join(str((batch, *shape)) for shape in shapes)
        context = f"modality_dropout: training, p = {p}, {m} modalities of all-positive features {sizes}"
        features = [
            (random_rows(batch, math.prod(shape), 7 + i).abs() + 0.5).view(batch, *shape)
            for i, shape in enumerate(shapes)
        ]
        out = _call_dropout(learner, features, p, True, 1, context)
        kept = []
        for i, (o, f) in enumerate(zip(out, features, strict=True)):
            o, f = o.flatten(1), f.flatten(1)  # (B, …): a modality is kept or dropped as a whole
            zero = (o == 0).all(dim=1)
            ratio = o / f  # constant across a sample's entries when the whole modality is kept or dropped
            if bool(((ratio - ratio[:, :1]).abs().amax(dim=1) > 1e-5).any()):
                raise CheckFailure(
                    f"features[{i}]: some samples lost only part of the modality",
                    case=context,
                    cause="element-wise dropout (F.dropout); modality dropout zeroes a sample's whole modality",
                )
            scales = ratio[~zero, 0]
            if scales.numel() and (scales - scales[0]).abs().max() > 1e-4 * scales[0]:
                raise CheckFailure(
                    f"features[{i}]: kept samples are rescaled by different factors",
                    case=context,
                    got=f"factors from {scales.min().item():.4g} to {scales.max().item():.4g}",
                    cause="use one factor per modality, the inverse of its keep probability",
                )
            kept.append(~zero)
            drop_rate = zero.double().mean().item()
            if not p - p**m - 0.01 <= drop_rate <= p + 0.01:
                raise CheckFailure(
                    f"features[{i}] was dropped for {drop_rate:.1%} of the samples",
                    case=context,
                    expected=f"about p = {p:.0%} (a little less where all-dropped samples keep one modality)",
                    cause="one mask for the whole batch, or a keep probability used as the drop probability",
                )
            mean_ratio = (o.double().mean(0) / f.double().mean(0)).mean().item()
            if abs(mean_ratio - 1) > 0.03:
                raise CheckFailure(
                    f"features[{i}]: the expectation changed by a factor of {mean_ratio:.3f}",
                    case=context,
                    expected="E[output] = input: kept modalities scaled by 1 / P(kept)",
                    cause="no rescaling, or 1/(1 − p) although rescuing all-dropped samples raises P(kept) above 1 − p",
                )
        if not bool(torch.stack(kept, 1).any(dim=1).all()):
            raise CheckFailure(
                "some samples lost every modality",
                case=context,
                cause="after sampling the mask, give each sample with nothing kept one modality back",
            )

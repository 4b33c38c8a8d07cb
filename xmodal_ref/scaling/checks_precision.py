"""Checks for chapter 10 · scaling: zero_memory_bytes (the ZeRO model-state formula) and DynamicLossScaler
(fp16 dynamic loss scaling, graded step by step in lockstep with torch.amp.GradScaler("cpu"))."""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..grading.harness import (
    Case,
    Mistake,
    describe,
    diagnose,
    expect_python_number,
    expect_raises,
    explain_errors,
    invoke,
    run_case,
)
from ..grading.inputs import random_rows
from ..grading.verdict import CheckFailure

# ----------------------------------------------------------------------------- zero_memory_bytes

#: Which of (fp16 parameters, fp16 gradients, optimizer states) each ZeRO stage partitions over N_d devices.
ZERO_PARTITIONED = {0: (False, False, False), 1: (False, False, True), 2: (False, True, True), 3: (True, True, True)}

#: The paper's Figure 1: Ψ = 7.5e9 parameters on N_d = 64 devices, K = 12.
FIGURE_1 = (7.5e9, 64)


def _zero_variant(
    num_params,
    stage,
    world_size,
    optimizer_multiplier=12,
    *,
    as_stage: Callable[[int], int] = lambda stage: stage,
    multiplier: float | None = None,
    shards: Callable[[int], int] = lambda world_size: world_size,
    divide: Callable[[float, float], float] = operator.truediv,
    total: Callable[[float, int], float] = lambda value, world_size: value,
) -> float:
    """The per-device bytes, with one slip: the stage's partition flags, K, the shard count, the division or the
    final conversion."""
    psi = float(num_params)
    k = optimizer_multiplier if multiplier is None else multiplier
    terms = (2 * psi, 2 * psi, k * psi)
    flags = ZERO_PARTITIONED[as_stage(stage)]
    value = sum(divide(term, shards(world_size)) if flag else term for term, flag in zip(terms, flags, strict=True))
    return float(total(value, world_size))


def _deepspeed_zero2(num_params, stage, world_size, optimizer_multiplier=12) -> float:
    """DeepSpeed's estimate_zero2_model_states_mem_needs without offload: 4Ψ + 16Ψ/N_d, with K + 4 for 16."""
    if stage != 2:
        raise ValueError("only stage 2")
    psi = float(num_params)
    return 4 * psi + (optimizer_multiplier + 4) * psi / world_size


ZERO_MISTAKES = [
    Mistake(
        "bytes converted to GB (÷ 1e9): the contract returns bytes",
        functools.partial(_zero_variant, total=lambda value, world_size: value / 1e9),
    ),
    Mistake(
        "bytes converted to GiB (÷ 2**30): the contract returns bytes",
        functools.partial(_zero_variant, total=lambda value, world_size: value / 2**30),
    ),
    Mistake(
        "bytes converted to GB and rounded as in the paper's Figure 1 caption (31.4, 16.6, 1.9): the contract returns"
        " exact bytes",
        functools.partial(_zero_variant, total=lambda value, world_size: round(value / 1e9, 1)),
    ),
    Mistake(
        "stage 1 partitions the gradients too: P_os partitions only the optimizer states, 2Ψ + 2Ψ + KΨ/N_d"
        " (2Ψ + (2 + K)Ψ/N_d is stage 2)",
        functools.partial(_zero_variant, as_stage=lambda stage: 2 if stage == 1 else stage),
    ),
    Mistake(
        "stage 2 partitions the fp16 parameters too: P_os+g keeps the parameters whole, 2Ψ + (2 + K)Ψ/N_d"
        " ((2 + 2 + K)Ψ/N_d is stage 3)",
        functools.partial(_zero_variant, as_stage=lambda stage: 3 if stage == 2 else stage),
    ),
    Mistake(
        "stage 3 leaves the fp16 parameters unpartitioned: P_os+g+p partitions all three, (2 + 2 + K)Ψ/N_d",
        functools.partial(_zero_variant, as_stage=lambda stage: 2 if stage == 3 else stage),
    ),
    Mistake(
        "stage 3 partitions nothing: P_os+g+p divides all three by N_d, (2 + 2 + K)Ψ/N_d",
        functools.partial(_zero_variant, as_stage=lambda stage: 0 if stage == 3 else stage),
    ),
    Mistake(
        "optimizer_multiplier is ignored: the optimizer states are KΨ, not a fixed 12Ψ",
        functools.partial(_zero_variant, multiplier=12),
    ),
    Mistake(
        "this is DeepSpeed's estimate_zero2_model_states_mem_needs, 4Ψ + 16Ψ/N_d, which counts that implementation's"
        " own buffers; the contract is the paper's stage 2, 2Ψ + (2 + K)Ψ/N_d",
        _deepspeed_zero2,
    ),
    Mistake(
        "the total over all N_d devices: the contract asks for the bytes on one device",
        functools.partial(_zero_variant, total=lambda value, world_size: value * world_size),
    ),
    Mistake(
        "every term divided by N_d, the replicated ones too: a stage partitions only its own states",
        functools.partial(_zero_variant, total=lambda value, world_size: value / world_size, as_stage=lambda _: 0),
    ),
    Mistake(
        "the partitioned states are multiplied by N_d: each device holds 1/N_d of them",
        functools.partial(_zero_variant, divide=operator.mul),
    ),
    Mistake(
        "the partitioned states are divided by N_d − 1: each of the N_d devices holds 1/N_d of them",
        functools.partial(_zero_variant, shards=lambda world_size: world_size - 1),
    ),
    Mistake(
        "the partitioned states are divided by N_d + 1: each of the N_d devices holds 1/N_d of them",
        functools.partial(_zero_variant, shards=lambda world_size: world_size + 1),
    ),
    Mistake(
        "integer division (//): a device's share KΨ/N_d is fractional; use /",
        functools.partial(_zero_variant, divide=operator.floordiv),
    ),
    Mistake(
        "the result was rounded down (int(...) or //): no rounding",
        lambda *args, **kwargs: math.floor(_zero_variant(*args, **kwargs)),
    ),
    Mistake(
        "the result was rounded (round(...)): no rounding",
        lambda *args, **kwargs: round(_zero_variant(*args, **kwargs)),
    ),
]

ZERO_CASES = (
    *(
        Case(
            f"the ZeRO paper's Figure 1 (7.5B parameters on 64 devices), stage {stage}",
            (FIGURE_1[0], stage, FIGURE_1[1]),
        )
        for stage in range(4)
    ),
    *(
        Case(
            f"K = 8 (fp32 master weights + momentum, no variance), stage {stage}",
            (1.25e9, stage, 16),
            {"optimizer_multiplier": 8},
        )
        for stage in range(4)
    ),
    Case("K = 4 (fp32 master weights only), stage 2", (3e8, 2, 8), {"optimizer_multiplier": 4}),
    Case("K = 14.5 (a float), stage 1", (2e9, 1, 32), {"optimizer_multiplier": 14.5}),
    *(Case(f"world_size 1: every stage holds 16Ψ, stage {stage}", (350_000_000, stage, 1)) for stage in range(4)),
    *(
        Case(f"an int num_params whose shares are fractional, stage {stage}", (1_000_003, stage, 7))
        for stage in (1, 2, 3)
    ),
    Case("a small int num_params, stage 3", (1001, 3, 3)),
    Case("a small int num_params, stage 0", (1001, 0, 3)),
)

ZERO_ERRORS = (
    (Case("stage 4 does not exist", (1e9, 4, 8)), "ZeRO has stages 0–3 only: any other stage raises ValueError"),
    (Case("stage −1 does not exist", (1e9, -1, 8)), "ZeRO has stages 0–3 only: any other stage raises ValueError"),
    (
        Case("world_size 0: no device", (1e9, 2, 0)),
        "world_size < 1 describes no device at all: the contract raises ValueError before any division",
    ),
)


def _bytes(value: float) -> str:
    """Bytes at full precision, with GB for reading."""
    return f"{float(value)!r} bytes ({float(value) / 1e9:.9g} GB)"


def check_zero_memory_bytes(learner, reference) -> None:
    """The grid (rel_tol 1e-9, a Python float each time), then ValueError for stage 4, −1 and world_size 0."""
    for case in ZERO_CASES:
        got, expected = run_case(learner, reference, case)
        context = _describe_case_exact(case)
        expect_python_number(got, context, _bytes(expected))
        if not math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=0.0):
            as_tensor = functools.partial(torch.tensor, dtype=torch.float64)
            cause = diagnose(
                as_tensor(float(got)), as_tensor(expected), case.args, case.kwargs, ZERO_MISTAKES, atol=0.0, rtol=1e-9
            )
            raise CheckFailure("wrong value", case=context, expected=_bytes(expected), got=_bytes(got), cause=cause)
        if not isinstance(got, float):
            raise CheckFailure(
                f"returned {type(got).__name__}, not a Python float",
                case=context,
                expected=_bytes(expected),
                got=repr(got),
                cause="with an int num_params, 2 * num_params + … stays an int: the contract returns a float,"
                " e.g. start from psi = float(num_params)",
            )
    for case, cause in ZERO_ERRORS:
        expect_raises(learner, case, reference, cause)


def _describe_case_exact(case: Case) -> str:
    """The case's label and its arguments at full precision (7500000000.0, not 7.5e+09 rounded to 6 digits)."""
    names = ("num_params", "stage", "world_size")
    parts = [f"{name}={value!r}" for name, value in zip(names, case.args, strict=True)]
    parts += [f"{name}={value!r}" for name, value in case.kwargs.items()]
    return f"{case.label} — " + ", ".join(parts)


# ----------------------------------------------------------------------------- DynamicLossScaler

#: The loss multipliers, one per step: inf and NaN losses, and 1e38, whose scaled gradient overflows float32.
SCALER_MULTIPLIERS = (1.0, 1.0, 1.0, math.inf, 1.0, 1.0, math.nan, *[1.0] * 5, 1e38, *[1.0] * 4)

#: Constructor keywords of each lockstep run (the last: the defaults).
SCALER_CONFIGS: tuple[dict[str, float], ...] = (
    {"init_scale": 8.0, "growth_interval": 3},
    {"init_scale": 2.0**16, "growth_factor": 4.0, "backoff_factor": 0.25, "growth_interval": 2},
    {},
)

#: The contract's defaults, for diagnoses.
SCALER_DEFAULTS = {"init_scale": 2.0**16, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}

SCALER_ATTRIBUTES = (
    "`scale` (the current loss scale, a float) and `growth_tracker` (an int: the consecutive overflow-free steps"
    " since the scale last changed)"
)

SCALER_LR = 0.1


def _config_text(kwargs: dict[str, float]) -> str:
    return "DynamicLossScaler(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def _multipliers_text(count: int) -> str:
    return "[" + ", ".join(f"{m:g}" for m in SCALER_MULTIPLIERS[:count]) + "]"


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


def _twin_models(seed: int) -> list[tuple[nn.Linear, torch.optim.SGD, list[int]]]:
    """Two identical nn.Linear(3, 2) with their SGD(lr 0.1) and a log of optimizer.step() calls (a step hook)."""
    generator = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(2, 3, generator=generator), torch.randn(2, generator=generator)
    twins = []
    for _ in range(2):
        model = nn.utils.skip_init(nn.Linear, 3, 2)
        with torch.no_grad():
            model.weight.copy_(weight)
            model.bias.copy_(bias)
        optimizer = torch.optim.SGD(model.parameters(), lr=SCALER_LR)
        calls: list[int] = []
        optimizer.register_step_post_hook(lambda *_, calls=calls: calls.append(1))
        twins.append((model, optimizer, calls))
    return twins


def _read_number(scaler: Any, name: str, context: str) -> float:
    """The learner's public attribute ``name`` as a number; fails naming the attributes the contract asks for."""
    missing = object()
    value = getattr(scaler, name, missing)
    if value is missing:
        public = sorted(n for n in vars(scaler) if not n.startswith("__")) if hasattr(scaler, "__dict__") else []
        public += sorted(n for n, v in vars(type(scaler)).items() if isinstance(v, property) and n not in public)
        raise CheckFailure(
            f"the scaler has no attribute `{name}`",
            case=context,
            expected=f"the public attributes {SCALER_ATTRIBUTES}",
            got="attributes " + (", ".join(public) if public else "(none)"),
            cause="the grader reads both after every step: use exactly these names (a property is fine if you keep"
            " the values under other names)",
        )
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CheckFailure(
            f"`{name}` is not a number",
            case=context,
            got=describe(value),
            cause=f"the contract's public attributes are {SCALER_ATTRIBUTES}",
        )
    return float(value)


def _read_state(scaler: Any, context: str) -> tuple[float, float]:
    return _read_number(scaler, "scale", context), _read_number(scaler, "growth_tracker", context)


def _state_text(scale: float, tracker: float) -> str:
    return f"scale={scale:g}, growth_tracker={tracker:g}"


CONSTRUCTOR_KEYWORDS = (
    "the constructor takes the contract's keywords, all with defaults: init_scale=2.0**16, growth_factor=2.0,"
    " backoff_factor=0.5, growth_interval=2000"
)


def _construct(learner, kwargs: dict[str, float], context: str) -> Any:
    with explain_errors(lambda problem: CONSTRUCTOR_KEYWORDS if problem.startswith("raised TypeError") else None):
        return invoke(learner, context=context, **kwargs)


def _expect_scaled_loss(got: Any, loss: torch.Tensor, expected: torch.Tensor, scale: float, context: str) -> None:
    """``scale_loss`` returned loss · scale, connected to the graph."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        raise CheckFailure(
            "scale_loss must return a tensor shaped like the loss",
            case=context,
            expected=describe(expected),
            got=describe(got),
            cause="return loss * self.scale (the caller calls .backward() on it)",
        )
    got_value, expected_value = got.detach().double(), expected.detach().double()
    if not torch.allclose(got_value, expected_value, rtol=1e-6, atol=0.0, equal_nan=True):
        value = loss.detach().double()
        candidates = (
            (value, "scale_loss returned the loss without the scale: multiply it by self.scale"),
            (value * scale**2, "scale_loss applied the scale twice: loss * scale once"),
            (value / scale, "scale_loss divided by the scale: loss * scale"),
        )
        cause = next(
            (text for candidate, text in candidates if torch.allclose(got_value, candidate, rtol=1e-6, atol=0.0)),
            "scale_loss(loss) returns loss * scale",
        )
        raise CheckFailure(
            "scale_loss returned a wrong value",
            case=context,
            expected=f"{describe(expected)} (loss {value.item():g} × scale {scale:g})",
            got=describe(got),
            cause=cause,
        )
    if not got.requires_grad:
        raise CheckFailure(
            "scale_loss returned a tensor that is not connected to the autograd graph",
            case=context,
            cause="the caller calls .backward() on it: no .item(), .detach(), float(...) or torch.no_grad()",
        )


def _skip_cause(returned: Any, nan_only: bool, stepped: bool) -> str:
    """Why optimizer.step() ran when GradScaler skipped it, or did not run when GradScaler stepped."""
    if not stepped:
        if nan_only:
            return (
                "NaN is not treated as an overflow: torch.isinf misses NaN; test torch.isfinite(grad).all() (NaN"
                " and ±inf) and skip optimizer.step()"
            )
        return "stepping on overflow: when any gradient holds inf or NaN, optimizer.step() must be skipped"
    if returned is True:
        return "step() returned True but never called optimizer.step(): step() itself calls optimizer.step()"
    return (
        "optimizer.step() was skipped although every gradient was finite: skip only when an unscaled gradient"
        " holds inf or NaN (test torch.isfinite(grad).all())"
    )


def _movement_cause(moved: torch.Tensor, expected_moved: torch.Tensor, scale: float) -> str:
    """Name the slip when the learner's parameter update is a constant multiple of the right one."""
    nonzero = expected_moved.abs() > 1e-6
    if int(nonzero.sum()) >= 2:
        ratios = moved[nonzero] / expected_moved[nonzero]
        ratio = ratios[0].item()
        if math.isfinite(ratio) and torch.allclose(ratios, torch.full_like(ratios, ratio), rtol=1e-3, atol=0.0):
            if _close_ratio(ratio, scale):
                return (
                    f"the gradients were never unscaled: the parameters moved scale× ({scale:g}×) too far; divide"
                    " every p.grad by the scale before optimizer.step()"
                )
            if _close_ratio(ratio, 1 / scale):
                return (
                    f"the unscale divides twice: the parameters moved only 1/scale (1/{scale:g}) of the way; divide"
                    " each p.grad by the scale once"
                )
            return f"the parameters moved {ratio:.6g}× as far as they should"
    return "optimizer.step() on the unscaled gradients (each p.grad divided by the scale in place) is the only update"


def _entry_name(model: nn.Module, flat: int) -> str:
    """``weight[1, 2]`` for entry ``flat`` of the model's parameters flattened and concatenated."""
    for name, parameter in model.named_parameters():
        if flat < parameter.numel():
            index = [int(i) for i in torch.unravel_index(torch.tensor(flat), parameter.shape)]
            return f"{name}{index}"
        flat -= parameter.numel()
    raise IndexError(flat)


def _close_ratio(ratio: float, target: float) -> bool:
    return math.isclose(ratio, target, rel_tol=1e-3)


def _update_cause(
    before: tuple[float, float],
    expected: tuple[float, float],
    got: tuple[float, float],
    overflow: bool,
    kwargs: dict[str, float],
) -> str:
    """Name the slip in the scale update (step 3 of the docstring) from the states before and after."""
    settings = SCALER_DEFAULTS | kwargs
    growth, backoff, interval = settings["growth_factor"], settings["backoff_factor"], settings["growth_interval"]
    (prev_scale, prev_tracker), (exp_scale, _), (got_scale, got_tracker) = before, expected, got
    if overflow:
        if _same(got_scale, prev_scale * growth) or _same(got_scale, prev_scale / backoff):
            return (
                "the scale grew on an overflow: backing off by growth_factor (or dividing by backoff_factor); after"
                " an overflow, scale *= backoff_factor"
            )
        if _same(got_scale, prev_scale):
            return "the scale was not reduced after an overflow: scale *= backoff_factor"
        if _same(got_scale, exp_scale) and got_tracker != 0:
            return (
                "growth_tracker was not reset to 0 after an overflow: it counts the overflow-free steps since the"
                " scale last changed"
            )
    else:
        grew = not _same(exp_scale, prev_scale)
        if grew and _same(got_scale, prev_scale) and got_tracker >= interval:
            return (
                "the scale grows one step late: growth_tracker += 1 first, then grow when it == growth_interval"
                " (not when it > growth_interval, and not comparing before counting this step)"
            )
        if grew and _same(got_scale, exp_scale) and got_tracker != 0:
            return "growth_tracker was not reset to 0 after the scale grew"
        if not grew and _same(got_scale, prev_scale * growth):
            return (
                "the scale grows one step early: grow when the incremented growth_tracker == growth_interval (a"
                " tracker counted twice, starting at 1, or compared with growth_interval − 1?)"
            )
        if _same(got_scale, exp_scale) and got_tracker == prev_tracker:
            return "growth_tracker was not incremented after an overflow-free step"
    return (
        "the update rule (step 3 of the docstring): after an overflow scale *= backoff_factor and growth_tracker = 0;"
        " otherwise growth_tracker += 1, and when it == growth_interval, scale *= growth_factor and growth_tracker = 0"
    )


def _lockstep(learner, kwargs: dict[str, float], seed: int) -> None:
    """Train twin models, one with the learner's scaler and one with GradScaler, comparing after every step."""
    config = _config_text(kwargs)
    context = f"{config} in lockstep with torch.amp.GradScaler('cpu') (same arguments)"
    scaler = _construct(learner, kwargs, config)
    truth = torch.amp.GradScaler("cpu", **kwargs)
    got_state = _read_state(scaler, f"{context}, right after construction")
    expected_state = truth.get_scale(), float(truth.state_dict()["_growth_tracker"])
    if not (_same(got_state[0], expected_state[0]) and got_state[1] == expected_state[1]):
        raise CheckFailure(
            "wrong initial state",
            case=f"{context}, right after construction",
            expected=_state_text(*expected_state),
            got=_state_text(*got_state),
            cause="initially scale = init_scale and growth_tracker = 0",
        )
    (model, optimizer, calls), (twin, twin_optimizer, twin_calls) = _twin_models(seed)
    inputs, targets = random_rows(4, 3, seed + 1), random_rows(4, 2, seed + 2)
    for index, multiplier in enumerate(SCALER_MULTIPLIERS):
        where = (
            f"{context}; twin nn.Linear(3, 2), SGD(lr={SCALER_LR}), loss = multiplier · MSE; step {index}, loss"
            f" multipliers so far {_multipliers_text(index + 1)}"
        )
        optimizer.zero_grad(set_to_none=True)
        twin_optimizer.zero_grad(set_to_none=True)
        loss = multiplier * F.mse_loss(model(inputs), targets)
        twin_loss = multiplier * F.mse_loss(twin(inputs), targets)
        scale = truth.get_scale()
        expected_scaled = truth.scale(twin_loss)
        scaled = invoke(scaler.scale_loss, loss, context=where + " (scale_loss)")
        _expect_scaled_loss(scaled, loss, expected_scaled, scale, where + " (scale_loss)")
        expected_scaled.backward()
        scaled.backward()
        before = [p.detach().clone() for p in model.parameters()]
        state_before = _read_state(scaler, where)
        steps, twin_steps = len(calls), len(twin_calls)
        truth.step(twin_optimizer)
        truth.update()
        returned = invoke(scaler.step, optimizer, context=where + " (step)")
        stepped, learner_steps = len(twin_calls) > twin_steps, len(calls) - steps
        grads = [p.grad for p in twin.parameters() if p.grad is not None]
        _compare_step(
            scaler,
            (model, twin, before),
            returned,
            (stepped, learner_steps, any(bool(g.isinf().any()) for g in grads)),
            (truth, scale, state_before),
            kwargs,
            where,
        )


def _compare_step(
    scaler: Any,
    models: tuple[nn.Module, nn.Module, list[torch.Tensor]],
    returned: Any,
    steps: tuple[bool, int, bool],
    truth_state: tuple[torch.amp.GradScaler, float, tuple[float, float]],
    kwargs: dict[str, float],
    where: str,
) -> None:
    """After one step: optimizer.step() calls, the return value, the parameters, scale and growth_tracker."""
    model, twin, before = models
    stepped, learner_steps, saw_inf = steps
    truth, scale, state_before = truth_state
    if learner_steps > 1:
        raise CheckFailure(
            f"optimizer.step() was called {learner_steps} times in one step()",
            case=where,
            cause="call optimizer.step() once, after the unscale and the overflow test",
        )
    if bool(learner_steps) != stepped:
        raise CheckFailure(
            "optimizer.step() ran although a gradient held inf or NaN"
            if learner_steps
            else "optimizer.step() was not called although every gradient was finite",
            case=where,
            expected="GradScaler skipped optimizer.step()" if not stepped else "GradScaler called optimizer.step()",
            got=f"optimizer.step() {'was called' if learner_steps else 'was not called'}; step() returned"
            f" {describe(returned)}",
            cause=_skip_cause(returned, not saw_inf, stepped),
        )
    parameters, twin_parameters = list(model.parameters()), list(twin.parameters())
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(parameters, before, strict=True)])
    expected_moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(twin_parameters, before, strict=True)])
    if not bool(moved.isfinite().all()):
        raise CheckFailure(
            "the parameters hold NaN or inf after step()",
            case=where,
            cause="optimizer.step() ran on gradients holding inf or NaN; skip it when any gradient is not finite",
        )
    if not torch.allclose(moved, expected_moved, atol=1e-6, rtol=1e-6):
        worst = int((moved - expected_moved).abs().argmax())
        raise CheckFailure(
            "the parameters differ from the GradScaler twin's after this step",
            case=where,
            expected=f"{_entry_name(model, worst)} moved by {expected_moved[worst].item():.6g}",
            got=f"it moved by {moved[worst].item():.6g}",
            cause=_movement_cause(moved, expected_moved, scale),
        )
    if not isinstance(returned, bool):
        raise CheckFailure(
            f"step() returned {type(returned).__name__}, not a bool",
            case=where,
            expected=repr(stepped),
            got=describe(returned),
            cause="return True when optimizer.step() ran and False when it was skipped (a Python bool)",
        )
    if returned != stepped:
        raise CheckFailure(
            "step() returned the wrong flag",
            case=where,
            expected=repr(stepped),
            got=repr(returned),
            cause="step() returns whether optimizer.step() ran: True without overflow, False when it was skipped"
            " (not the overflow flag itself)",
        )
    got_state = _read_state(scaler, where)
    expected_state = truth.get_scale(), float(truth.state_dict()["_growth_tracker"])
    if not (_same(got_state[0], expected_state[0]) and got_state[1] == expected_state[1]):
        raise CheckFailure(
            "wrong scale or growth_tracker after step()",
            case=where,
            expected=f"{_state_text(*expected_state)} (before this step: {_state_text(*state_before)})",
            got=_state_text(*got_state),
            cause=_update_cause(state_before, expected_state, got_state, not stepped, kwargs),
        )


def check_DynamicLossScaler(learner, reference) -> None:
    """Lockstep with torch.amp.GradScaler("cpu"), the peer that defines the expected behaviour, in each of
    SCALER_CONFIGS; ``reference`` is not needed (it passes this check like any correct solution)."""
    for seed, kwargs in enumerate(SCALER_CONFIGS):
        _lockstep(learner, kwargs, 10 * seed)

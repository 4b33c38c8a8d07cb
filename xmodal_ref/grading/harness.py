"""Building blocks for checks: run learner code on a case, then compare it with the reference.

A check is a function ``check(learner, reference) -> None`` that raises
:class:`~xmodal_ref.grading.verdict.CheckFailure` (with the input, the expected and actual
result, and the likely cause) or :class:`~xmodal_ref.grading.verdict.NotAttempted`.
Comparisons look only at results and gradients, never at how the learner computed them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .verdict import CheckFailure, NotAttempted, shorten


@dataclass(frozen=True)
class Case:
    """One input: a short description for feedback and the arguments (cloned for every call)."""

    label: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A known wrong solution, as a function of the case's arguments, and its name for feedback."""

    cause: str
    compute: Callable[..., Any]


# ----------------------------------------------------------------------------- describing values


def describe(value: Any) -> str:
    """A short, readable rendering of a result or an argument."""
    if isinstance(value, torch.Tensor):
        meta = f"{value.dtype}".replace("torch.", "")
        if value.device.type != "cpu":
            meta += f" on {value.device}"
        if value.dim() == 0:
            return f"{_num(value.item())} (0-dim tensor, {meta})"
        if value.numel() <= 6:
            values = ", ".join(_num(v) for v in value.detach().flatten().tolist())
            return f"tensor of shape {tuple(value.shape)}, {meta}: [{values}]"
        return f"tensor of shape {tuple(value.shape)}, {meta}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        shapes = ", ".join(str(tuple(v.shape)) for v in value)
        return f"{type(value).__name__} of {len(value)} tensors of shapes {shapes}"
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, numbers.Real):
        return _num(float(value))
    return shorten(f"{type(value).__name__} {value!r}", 120)


def _num(x: float | bool) -> str:
    return repr(x) if isinstance(x, bool) else f"{x:.6g}"


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """The call signature, for a function or for a module (its forward)."""
    return inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn)


def describe_case(case: Case, reference: Callable[..., Any]) -> str:
    """The case's label followed by each argument, named as in the reference's signature."""
    try:
        bound = _signature(reference).bind(*case.args, **case.kwargs)
        parts = [f"{name}={describe(value)}" for name, value in bound.arguments.items()]
    except (TypeError, ValueError):
        parts = [describe(value) for value in case.args]
    return f"{case.label} — " + "; ".join(parts) if parts else case.label


# ----------------------------------------------------------------------------- calling learner code


def clone_args(value: Any) -> Any:
    """A deep copy of tensors (keeping requires_grad) inside tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(clone_args(v) for v in value)
    if isinstance(value, dict):
        return {k: clone_args(v) for k, v in value.items()}
    return value


def invoke(fn: Callable[..., Any], *args: Any, context: str, **kwargs: Any) -> Any:
    """Call learner code; turn NotImplementedError into NotAttempted and any error into a failure."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        raise NotAttempted(str(err)) from None
    except Exception as err:
        raise CheckFailure(
            f"raised {type(err).__name__}: {_first_line(err)}",
            case=context,
            cause=_cause_for_exception(err),
        ) from None


def run_case(fn: Callable[..., Any], reference: Callable[..., Any], case: Case) -> tuple[Any, Any]:
    """Run the learner and the reference on fresh copies of ``case``; return (got, expected).

    Fails when the learner raises or modifies an argument in place.
    """
    context = describe_case(case, reference)
    args, kwargs = clone_args(case.args), clone_args(case.kwargs)
    got = invoke(fn, *args, context=context, **kwargs)
    for name, before, after in _named_pairs(reference, case, args, kwargs):
        if isinstance(before, torch.Tensor) and not _same_tensor(before, after):
            raise CheckFailure(
                f"modified its input `{name}` in place",
                case=context,
                cause="an in-place op such as `x /= x.norm()`, `x.clamp_()` or `x[mask] = …`;"
                " the caller still needs its tensor, so compute on a copy",
            )
    expected = reference(*clone_args(case.args), **clone_args(case.kwargs))
    return got, expected


def expect_raises(
    fn: Callable[..., Any],
    case: Case,
    reference: Callable[..., Any],
    cause: str,
    *,
    error: type[Exception] = ValueError,
    produced: str = "returned a result",
) -> None:
    """Fail unless ``fn`` raises ``error`` on ``case`` (any exception when ``error`` is Exception).

    ``cause`` says why the contract raises; ``produced`` names what the learner's code did instead.
    """
    context = describe_case(case, reference)
    wanted = "an error" if error is Exception else error.__name__
    try:
        result = fn(*case.args, **case.kwargs)
    except NotImplementedError as err:
        raise NotAttempted(str(err)) from None
    except error:
        return
    except Exception as err:
        raise CheckFailure(
            f"raised {type(err).__name__}, not {wanted}",
            case=context,
            cause=f"{cause}: check the arguments first and `raise {error.__name__}(...)` yourself",
        ) from None
    raise CheckFailure(
        f"{produced} where the contract raises {wanted}", case=context, got=describe(result), cause=cause
    )


@contextlib.contextmanager
def explain_errors(cause: Callable[[str], str | None]) -> Iterator[None]:
    """Replace the likely cause of a failure that reports an exception raised by the learner's code.

    ``cause`` maps the failure's problem ("raised IndexError: …") to a cause, or to None to keep the original.
    """
    try:
        yield
    except CheckFailure as failure:
        better = cause(failure.problem) if failure.problem.startswith("raised ") else None
        if better is None:
            raise
        raise CheckFailure(
            failure.problem, case=failure.case, expected=failure.expected, got=failure.got, cause=better
        ) from None


def _named_pairs(reference, case, args, kwargs):
    try:
        names = list(_signature(reference).bind(*case.args, **case.kwargs).arguments)
    except (TypeError, ValueError):
        names = [f"argument {i}" for i in range(len(case.args))]
    originals = list(case.args) + list(case.kwargs.values())
    copies = list(args) + list(kwargs.values())
    for name, before, after in zip(names, originals, copies, strict=False):
        if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)):
            yield from ((f"{name}[{i}]", b, a) for i, (b, a) in enumerate(zip(before, after, strict=False)))
        else:
            yield name, before, after


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and values, where NaN equals NaN (padding may hold NaN on purpose)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach(), b.detach()
    return bool(((a == b) | (a.isnan() & b.isnan())).all()) if a.is_floating_point() else torch.equal(a, b)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return shorten(text[0], 300) if text else "(no message)"


def _cause_for_exception(err: Exception) -> str | None:
    text = str(err)
    if isinstance(err, NameError):
        return (
            "a name the code uses is not defined: the grader runs only the exercise cells and the"
            " notebook's import lines, so define helpers inside the exercise cell"
        )
    if "enforce_sorted" in text:
        return "pack_padded_sequence needs enforce_sorted=False when lengths come in any order"
    if "shape" in text or "size" in text or "dimension" in text:
        return "a shape mismatch: check which axis each operation works on (print the shapes)"
    if "dtype" in text.lower() or "expected scalar type" in text:
        return "mixed dtypes: create new tensors with the input's dtype and device"
    return None


# ----------------------------------------------------------------------------- comparing results


def expect_tensor(
    got: Any, expected: torch.Tensor, context: str, shape_cause: Callable[[], str | None] = lambda: None
) -> torch.Tensor:
    """Fail unless ``got`` is a tensor with the reference's shape, dtype and device.

    ``shape_cause`` is asked for a likely cause only when the shape is wrong.
    """
    if not isinstance(got, torch.Tensor):
        raise CheckFailure(
            f"returned {type(got).__name__}, not a torch.Tensor",
            case=context,
            expected=describe(expected),
            got=describe(got),
            cause="return the tensor itself (no .item(), .tolist() or numpy conversion)",
        )
    if got.shape != expected.shape:
        raise CheckFailure(
            f"wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}",
            case=context,
            cause=shape_cause() or ("a 0-dim tensor is expected: reduce to a scalar" if expected.dim() == 0 else None),
        )
    if got.dtype != expected.dtype:
        raise CheckFailure(
            f"wrong dtype: expected {expected.dtype}, got {got.dtype}",
            case=context,
            cause="new tensors should follow the input's dtype (e.g. `torch.zeros_like(x)`)",
        )
    if got.device != expected.device:
        raise CheckFailure(
            f"wrong device: expected {expected.device}, got {got.device}",
            case=context,
            cause="create new tensors on the input's device (`device=x.device`)",
        )
    return got


def expect_close(
    got: Any,
    expected: Any,
    context: str,
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    mistakes: Sequence[Mistake] = (),
    atol: float = 1e-5,
    rtol: float = 1e-4,
    unstable_hint: str | None = None,
    any_float_dtype: bool = False,
) -> None:
    """Fail unless ``got`` matches ``expected`` (tensor or real number) within tolerance.

    With ``any_float_dtype``, a tensor result may have any floating dtype (for values, such as a
    parameter, whose precision the contract leaves open).

    On a mismatch, name the first mistake in ``mistakes`` whose result on the same arguments
    matches ``got``; otherwise look for a constant factor, a sign flip or a transpose.
    """
    kwargs = kwargs or {}
    if isinstance(expected, torch.Tensor):
        if any_float_dtype and isinstance(got, torch.Tensor) and got.is_floating_point():
            expected = expected.to(got.dtype)
        got = expect_tensor(
            got,
            expected,
            context,
            shape_cause=lambda: diagnose(got.detach(), expected, args, kwargs, mistakes, atol=atol, rtol=rtol),
        )
        got_t, expected_t = got.detach(), expected.detach()
    else:
        expect_python_number(got, context, describe(expected))
        got_t = torch.tensor(float(got), dtype=torch.float64)
        expected_t = torch.tensor(float(expected), dtype=torch.float64)
        if not math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol):
            raise CheckFailure(
                "wrong value",
                case=context,
                expected=describe(expected),
                got=describe(got),
                cause=diagnose(got_t, expected_t, args, kwargs, mistakes, atol=atol, rtol=rtol),
            )
        return

    got_finite, expected_finite = torch.isfinite(got_t), torch.isfinite(expected_t)
    if not bool(got_finite.all()) and bool(expected_finite.all()):
        raise CheckFailure(
            "returned NaN or inf where the correct result is finite",
            case=context,
            expected=_show_entry(expected_t, got_t),
            got=_show_entry(got_t, expected_t, worst=~got_finite),
            cause=unstable_hint or "a division by zero or an overflow (exp of a large number)",
        )
    if torch.allclose(got_t, expected_t, atol=atol, rtol=rtol, equal_nan=True):
        return
    raise CheckFailure(
        "wrong value",
        case=context,
        expected=_show_entry(expected_t, got_t),
        got=_show_entry(got_t, expected_t),
        cause=diagnose(got_t, expected_t, args, kwargs, mistakes, atol=atol, rtol=rtol),
    )


def expect_python_number(got: Any, context: str, expected: str) -> None:
    """Fail unless ``got`` is a real Python number (an int or a float; not a tensor, a bool or None).

    ``expected`` is the expected result as the feedback should show it.
    """
    if isinstance(got, (torch.Tensor, bool)) or not isinstance(got, numbers.Real):
        raise CheckFailure(
            f"returned {type(got).__name__}, not a Python float",
            case=context,
            expected=expected,
            got=describe(got),
            cause="convert the result with float(...) or .item()"
            if isinstance(got, torch.Tensor)
            else "a missing `return`?"
            if got is None
            else None,
        )


def diagnose(
    got: torch.Tensor,
    expected: torch.Tensor,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    mistakes: Sequence[Mistake],
    *,
    atol: float,
    rtol: float,
) -> str | None:
    """Name the known mistake, or the simple transformation, that explains ``got``.

    A catalogued mistake is named as what it is, a match by value ("your result equals what this mistake
    gives: …"): another slip can give the same number.
    """
    for mistake in mistakes:
        try:
            candidate = mistake.compute(*clone_args(args), **clone_args(kwargs))
        except Exception:
            continue
        candidate = torch.as_tensor(candidate, dtype=got.dtype).detach()
        if candidate.shape == got.shape and torch.allclose(candidate, got, atol=atol, rtol=rtol):
            return f"your result equals what this mistake gives: {mistake.cause}"
    if got.dim() == 2 and got.T.shape == expected.shape and torch.allclose(got.T, expected, atol=atol, rtol=rtol):
        return "the result is transposed: rows and columns are swapped"
    if got.shape != expected.shape:
        return None
    if torch.allclose(-got, expected, atol=atol, rtol=rtol):
        return "the sign is flipped"
    nonzero = expected.abs() > 1e-6
    if int(nonzero.sum()) >= 2:  # one value always has "a constant ratio": that would prove nothing
        ratios = got[nonzero] / expected[nonzero]
        ratio = ratios.flatten()[0].item()
        if math.isfinite(ratio) and torch.allclose(ratios, torch.full_like(ratios, ratio), rtol=1e-3, atol=0):
            return (
                f"off by a constant factor of {ratio:.6g}: a sum where a mean is due, a missing ½, or a missing scale?"
            )
    return None


def _show_entry(value: torch.Tensor, other: torch.Tensor, worst: torch.Tensor | None = None) -> str:
    """Render a scalar, a small tensor, or the entry where two same-shaped tensors differ most."""
    if value.dim() == 0 or value.numel() <= 6 or value.shape != other.shape:
        return describe(value)
    if worst is None:
        diff = (value - other).abs().nan_to_num(nan=math.inf)
        flat = int(diff.flatten().argmax())
    else:
        flat = int(worst.flatten().nonzero()[0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), value.shape))
    return f"{_num(value.flatten()[flat].item())} at index {list(index)} of a {tuple(value.shape)} tensor"


# ----------------------------------------------------------------------------- whole-function checks


def check_cases(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    *,
    mistakes: Sequence[Mistake] = (),
    atol: float = 1e-5,
    rtol: float = 1e-4,
    unstable_hint: str | None = None,
    outputs: Sequence[str] = (),
) -> None:
    """Run every case through learner and reference and compare the results.

    With ``outputs``, the result is a tuple of that many values (named for feedback) and each is
    compared on its own; a mistake's ``compute`` then returns the same tuple.
    """
    for case in cases:
        got, expected = run_case(fn, reference, case)
        context = describe_case(case, reference)
        compare = functools.partial(
            expect_close, args=case.args, kwargs=case.kwargs, atol=atol, rtol=rtol, unstable_hint=unstable_hint
        )
        if not outputs:
            compare(got, expected, context, mistakes=mistakes)
            continue
        got = expect_tuple(got, outputs, context)
        for index, name in enumerate(outputs):
            picked = [Mistake(m.cause, functools.partial(_pick, m.compute, index)) for m in mistakes]
            compare(got[index], expected[index], f"{context}; output `{name}`", mistakes=picked)


def expect_tuple(got: Any, outputs: Sequence[str], context: str) -> tuple[Any, ...]:
    """Fail unless ``got`` is a tuple (or list) with one value per name in ``outputs``."""
    if not isinstance(got, (tuple, list)) or len(got) != len(outputs):
        raise CheckFailure(
            f"expected a tuple of {len(outputs)} values ({', '.join(outputs)})",
            case=context,
            got=describe(got) if not isinstance(got, (tuple, list)) else f"{type(got).__name__} of {len(got)} values",
            cause="return all of them, e.g. `return " + ", ".join(outputs) + "`",
        )
    return tuple(got)


def _pick(compute: Callable[..., Any], index: int, *args: Any, **kwargs: Any) -> Any:
    return compute(*args, **kwargs)[index]


def check_gradients(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    case: Case,
    wrt: Sequence[str],
    *,
    on_sphere: Sequence[str] = (),
    outputs: Sequence[str] = (),
    parameters: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Backpropagate a fixed random projection of both results; compare the gradients of ``wrt``.

    Arguments named in ``wrt`` are made leaf tensors that require grad (numbers become 0-dim
    tensors; a list of tensors becomes a list of leaves). The learner must return a result
    connected to all of them. For arguments named in ``on_sphere`` (rows of unit norm), only the
    gradient's component tangent to the sphere is compared: it is all that flows back through the
    normalisation that produced them, so re-normalising inside the function is accepted.
    With ``outputs`` the results are tuples and every output is projected. With ``parameters``,
    ``fn`` and ``reference`` are modules holding the same weights, and the gradients of every
    parameter are compared too.
    """
    names = list(_signature(reference).bind(*case.args, **case.kwargs).arguments)
    context = describe_case(case, reference) + " (gradient check)"

    def leaves() -> tuple[tuple[Any, ...], dict[str, Any]]:
        bound = dict(zip(names, clone_args(case.args), strict=False)) | clone_args(case.kwargs)
        for name in wrt:
            value = bound[name]
            if isinstance(value, (list, tuple)):
                bound[name] = type(value)(v.detach().clone().requires_grad_(True) for v in value)
                continue
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(float(value), dtype=torch.float32)
            bound[name] = value.detach().clone().requires_grad_(True)
        positional = tuple(bound.pop(name) for name in names[: len(case.args)])
        return positional, bound

    if parameters:
        fn.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
    ref_args, ref_kwargs = leaves()
    expected = reference(*ref_args, **ref_kwargs)
    expected = tuple(expected) if outputs else (expected,)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(e.shape, generator=generator, dtype=e.dtype) for e in expected]
    sum((e * w).sum() for e, w in zip(expected, weights, strict=True)).backward()

    args, kwargs = leaves()
    got = invoke(fn, *args, context=context, **kwargs)
    got = expect_tuple(got, outputs, context) if outputs else (got,)
    for g, e in zip(got, expected, strict=True):
        expect_tensor(g, e, context)
        if not g.requires_grad:
            raise CheckFailure(
                "the result is not connected to the autograd graph, so no gradient can flow",
                case=context,
                cause="a .item(), .detach(), float(...) or numpy round-trip, or torch.no_grad()",
            )
    sum((g * w).sum() for g, w in zip(got, weights, strict=True)).backward()

    pairs = []
    by_name = dict(zip(names, args, strict=False)) | kwargs
    reference_by_name = dict(zip(names, ref_args, strict=False)) | ref_kwargs
    for name in wrt:
        value, expected_value = by_name[name], reference_by_name[name]
        if isinstance(value, (list, tuple)):
            pairs += [(f"{name}[{i}]", v, e) for i, (v, e) in enumerate(zip(value, expected_value, strict=True))]
        else:
            pairs.append((name, value, expected_value))
    if parameters:
        reference_parameters = dict(reference.named_parameters())
        pairs += [(f"parameter {n}", p, reference_parameters[n]) for n, p in fn.named_parameters()]
    for name, value, expected_value in pairs:
        grad, expected_grad = value.grad, expected_value.grad
        if grad is None:
            raise CheckFailure(
                f"no gradient reached `{name}`",
                case=context,
                cause=f"`{name}` was used through float(...), .item() or .detach(), or not used at all",
            )
        if name in on_sphere:
            unit = expected_value.detach()
            grad, expected_grad = _tangent(grad, unit), _tangent(expected_grad, unit)
        if not torch.allclose(grad, expected_grad, atol=atol, rtol=rtol):
            poisoned = not bool(grad.isfinite().all()) and bool(expected_grad.isfinite().all())
            raise CheckFailure(
                f"wrong gradient with respect to `{name}` (the forward value is right)",
                case=context,
                expected=_show_entry(expected_grad, grad),
                got=_show_entry(grad, expected_grad),
                cause="NaN or inf in the gradient: a NaN or inf made anywhere in the forward pass (a softmax or"
                " logsumexp over entries that are all −inf, say) poisons the backward pass even if it is replaced"
                " afterwards; avoid creating it"
                if poisoned
                else "a detached or in-place step, or a clamp/where that blocks the gradient",
            )


def build_twin(learner: Callable[..., Any], reference: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    """Instantiate the learner's module class and the reference's with ``args``; give both the same weights.

    The learner's module is built first, under a fixed seed, and must have exactly the reference's
    parameters and buffers (names and shapes, as the exercise's docstring lists them); its weights
    are then copied into the reference, so the two must compute the same function.
    """
    context = f"{getattr(reference, '__name__', 'module')}({', '.join(map(repr, args))})"
    torch.manual_seed(0)
    module = invoke(learner, *args, context=context)
    if not isinstance(module, torch.nn.Module):
        raise CheckFailure("the class must subclass torch.nn.Module", case=context, got=type(module).__name__)
    twin = reference(*args)
    expected = {name: tuple(t.shape) for name, t in twin.state_dict().items()}
    got = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    if got != expected:
        missing = [f"{n} {expected[n]}" for n in expected if n not in got]
        unexpected = [f"{n} {got[n]}" for n in got if n not in expected]
        reshaped = [
            f"{n}: expected {expected[n]}, got {got[n]}" for n in expected if n in got and got[n] != expected[n]
        ]
        problems = [
            ("missing: " + ", ".join(missing)) if missing else "",
            ("unexpected: " + ", ".join(unexpected)) if unexpected else "",
            ("wrong shape: " + "; ".join(reshaped)) if reshaped else "",
        ]
        raise CheckFailure(
            "the module's parameters do not follow the contract in the docstring",
            case=context,
            expected=", ".join(f"{n} {s}" for n, s in expected.items()),
            got=" · ".join(p for p in problems if p),
            cause="name and shape every submodule and parameter as the docstring lists them, so the"
            " grader can copy your weights into the reference and compare the two",
        )
    not_learned = sorted(set(dict(twin.named_parameters())) - set(dict(module.named_parameters())))
    if not_learned:
        raise CheckFailure(
            "these must be learned parameters (nn.Parameter), not buffers or plain tensors: " + ", ".join(not_learned),
            case=context,
            cause="wrap the tensor in nn.Parameter so the optimiser updates it",
        )
    twin.load_state_dict(module.state_dict())
    return module, twin


def _tangent(grad: torch.Tensor, unit_rows: torch.Tensor) -> torch.Tensor:
    """Remove from each row of ``grad`` its component along the matching unit row."""
    return grad - (grad * unit_rows).sum(dim=-1, keepdim=True) * unit_rows

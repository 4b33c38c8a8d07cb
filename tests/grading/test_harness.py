"""The harness's own promises: messages never cut a number, value diagnoses say they are by value, and NaN
padding is neither mistaken for an in-place change nor let through."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from xmodal_ref.grading.harness import Case, Mistake, check_cases, describe
from xmodal_ref.grading.inputs import poison_padding
from xmodal_ref.grading.runner import grade_object
from xmodal_ref.grading.verdict import CheckFailure, Status, shorten


def whole_numbers_kept(original: str, short: str) -> bool:
    """Every number left in ``short`` (a cut list repr) is one of ``original``'s numbers, not a piece of one."""
    numbers = set(original.strip("[]").split(", "))
    return all(token in numbers for token in short.removesuffix("…").strip("[]").rstrip(" ,").split(", ") if token)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=80), st.integers(20, 200))
def test_shortened_text_never_ends_inside_a_number(values: list[float], width: int) -> None:
    text = repr(values)
    short = shorten(text, width)
    assert len(short) <= width and (short == text or short.endswith("…"))
    assert whole_numbers_kept(text, short), short


def test_describe_cuts_a_long_list_between_numbers() -> None:
    values = [0.123456789 * i for i in range(100)]
    text = describe(values)
    assert len(text) <= 120 and text.endswith("…")
    assert whole_numbers_kept(repr(values), text.removeprefix("list "))


def test_a_mistake_matched_by_value_is_named_as_a_match() -> None:
    def halved(x):
        return x / 2

    case = Case("four numbers", (torch.arange(4.0),))
    mistake = Mistake("a ½ too many", lambda x: x / 2)
    try:
        check_cases(halved, lambda x: x.clone(), [case], mistakes=[mistake])
    except CheckFailure as failure:
        assert failure.cause == "your result equals what this mistake gives: a ½ too many"
    else:
        raise AssertionError("the mistake was not caught")


def test_nan_padding_is_not_an_in_place_change_and_a_leak_is_named() -> None:
    def leaks(x, lengths):
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).to(x.dtype)
        return (x * mask[..., None]).sum(1) / lengths[:, None]

    verdict = grade_object("sentiment.masked_mean", leaks)
    assert verdict.status is Status.FAILED
    assert "NaN, +inf and −inf in the padding" in verdict.message and "masked_fill" in verdict.message
    assert "in place" not in verdict.message


def test_poison_padding_fills_only_the_padding_with_nan_and_both_infinities() -> None:
    x = torch.zeros(2, 4, 3)
    padded = torch.tensor([[False, False, True, True], [False, True, True, True]])
    poisoned = poison_padding(x, padded[..., None])
    assert torch.equal(poisoned[~padded], x[~padded])
    garbage = poisoned[padded].flatten()
    assert bool(garbage.isnan().any()) and bool((garbage == float("inf")).any())
    assert bool((garbage == float("-inf")).any()) and not bool(garbage.isfinite().any())
    assert torch.equal(x, torch.zeros(2, 4, 3))  # the input itself is untouched

"""Every check rejects realistic wrong solutions, naming the mistake, and accepts correct ones
written in other styles (loops, einsum, other stable formulas)."""

from __future__ import annotations

import pytest
from mutants import alignment, attention, contrastive, fusion, sentiment, start

from xmodal_ref.grading.registry import EXERCISES
from xmodal_ref.grading.runner import grade_object
from xmodal_ref.grading.verdict import Status

CHAPTER_MODULES = (start, fusion, attention, contrastive, alignment, sentiment)
MUTANTS = {k: v for module in CHAPTER_MODULES for k, v in module.MUTANTS.items()}
CORRECT = {k: v for module in CHAPTER_MODULES for k, v in module.CORRECT.items()}


def test_every_exercise_has_three_mutants_and_two_other_styles() -> None:
    for exercise_id in EXERCISES:
        assert len(MUTANTS.get(exercise_id, [])) >= 3, exercise_id
        assert len(CORRECT.get(exercise_id, [])) >= 2, exercise_id


@pytest.mark.parametrize(
    ("exercise_id", "mutant", "diagnosis"),
    [(i, m, d) for i, pairs in MUTANTS.items() for m, d in pairs],
    ids=lambda value: getattr(value, "__name__", None) if callable(value) else None,
)
def test_mutant_is_rejected_with_its_diagnosis(exercise_id, mutant, diagnosis) -> None:
    verdict = grade_object(exercise_id, mutant)
    assert verdict.status is Status.FAILED, f"{mutant.__name__} was not rejected"
    assert diagnosis in verdict.message, verdict.message


@pytest.mark.parametrize(
    ("exercise_id", "solution"),
    [(i, s) for i, solutions in CORRECT.items() for s in solutions],
    ids=lambda value: getattr(value, "__name__", None) if callable(value) else None,
)
def test_other_style_solution_is_accepted(exercise_id, solution) -> None:
    verdict = grade_object(exercise_id, solution)
    assert verdict.status is Status.PASSED, verdict.render()


@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_reference_passes_its_own_check(exercise_id) -> None:
    exercise = EXERCISES[exercise_id]
    exercise.check()(exercise.reference(), exercise.reference())

"""Every check rejects realistic wrong solutions, naming the mistake, and accepts correct ones
written in other styles (loops, einsum, other stable formulas).

Each chapter's ``tests/<chapter>/mutants.py`` defines
``MUTANTS: dict[id, list[(solution, words the verdict must contain)]]`` and ``CORRECT: dict[id, list[solution]]``,
written the way a learner would write them, independently of the checks' own models of known mistakes.
"""

from __future__ import annotations

import importlib

import pytest

from xmodal_ref.grading.registry import CHAPTERS, EXERCISES
from xmodal_ref.grading.runner import grade_object
from xmodal_ref.grading.verdict import Status

#: ``tests/<chapter>/mutants.py`` for every chapter: ``MUTANTS`` and ``CORRECT`` (see its docstring).
CHAPTER_MODULES = [importlib.import_module(f"tests.{chapter}.mutants") for chapter in CHAPTERS]
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

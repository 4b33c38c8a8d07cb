"""Grade the learner's notebooks (or, with --solutions, the worked solutions): one test per exercise."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmodal_ref.grading.loader import UnusableInput, read_learner_file
from xmodal_ref.grading.registry import EXERCISES
from xmodal_ref.grading.runner import grade_file
from xmodal_ref.grading.verdict import Status

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("exercise_id", list(EXERCISES))
def test_exercise(exercise_id: str, request: pytest.FixtureRequest, record_verdict) -> None:
    solutions = request.config.getoption("--solutions")
    exercise = EXERCISES[exercise_id]
    path = ROOT / ("solutions" if solutions else "notebooks") / exercise.notebook
    try:
        learner_file = read_learner_file(path)
    except UnusableInput as err:
        pytest.fail(f"cannot grade {exercise_id}: {err}", pytrace=False)
    (verdict,) = grade_file(learner_file, [exercise])
    record_verdict(verdict)
    if verdict.status is Status.FAILED:
        pytest.fail(verdict.render(), pytrace=False)
    if verdict.status is Status.SKIPPED:
        pytest.skip(f"{exercise_id}: {verdict.message}")
    if verdict.status is Status.NOT_ATTEMPTED:
        if solutions:
            pytest.fail(f"{exercise_id} is not attempted in solutions/: every exercise must pass there", pytrace=False)
        pytest.skip(f"not attempted: {exercise_id} in notebooks/{exercise.notebook}")

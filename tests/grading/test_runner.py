"""The time limit: a timed-out exercise costs its limit and about no more, in a process or in the notebook."""

from __future__ import annotations

import time
from pathlib import Path

from xmodal_ref.grading.loader import read_learner_file
from xmodal_ref.grading.registry import EXERCISES
from xmodal_ref.grading.runner import grade_file, grade_object
from xmodal_ref.grading.verdict import Status

LIMIT = 2.0
SLACK = 1.0  # killing a process and reporting must cost no more than this


def catches_every_error(image_features, text_features, logit_scale):
    """Learner code that retries whatever fails: the time limit must not count as a failure to retry."""
    while True:
        try:  # noqa: SIM105 (written the way a learner would)
            time.sleep(0.05)
        except Exception:
            pass


def test_in_process_limit_holds_when_learner_code_catches_exceptions() -> None:
    start = time.perf_counter()
    verdict = grade_object("contrastive.clip_loss", catches_every_error, time_limit=LIMIT)
    elapsed = time.perf_counter() - start
    assert verdict.status is Status.FAILED and f"timed out after {LIMIT:g} s" in verdict.message
    assert LIMIT <= elapsed < LIMIT + SLACK, elapsed


def test_a_hanging_exercise_in_its_own_process_costs_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "answers.py"
    path.write_text("def clip_loss(image_features, text_features, logit_scale):\n    while True:\n        pass\n")
    learner_file = read_learner_file(path)
    list(grade_file(learner_file, [EXERCISES["contrastive.modality_gap"]]))  # warm the server: not timed
    start = time.perf_counter()
    (verdict,) = grade_file(learner_file, [EXERCISES["contrastive.clip_loss"]], time_limit=LIMIT)
    elapsed = time.perf_counter() - start
    assert verdict.status is Status.FAILED and f"timed out after {LIMIT:g} s" in verdict.message
    assert LIMIT <= verdict.seconds < LIMIT + SLACK and elapsed < LIMIT + SLACK, (verdict.seconds, elapsed)

"""The grader: registry, loader, checks harness and runners.

In a notebook, ``check("contrastive.clip_loss", clip_loss)`` prints the verdict pytest would give,
and ``implementation("contrastive.clip_loss", clip_loss)`` returns your object when it passes its
checks and the reference otherwise, saying which it chose.
"""

from __future__ import annotations

from typing import Any

from .registry import EXERCISES
from .runner import grade_object
from .verdict import Status, Verdict

__all__ = ["EXERCISES", "Status", "Verdict", "check", "implementation"]


def check(exercise_id: str, candidate: Any) -> None:
    """Grade ``candidate`` as exercise ``exercise_id`` and print the verdict."""
    print(grade_object(exercise_id, candidate).render())


def implementation(exercise_id: str, candidate: Any) -> Any:
    """``candidate`` when it passes its checks, else the reference; prints which one is used."""
    verdict = grade_object(exercise_id, candidate)
    name = EXERCISES[exercise_id].name
    if verdict.status is Status.PASSED:
        print(f"Using your `{name}` (it passes its checks).")
        return candidate
    reason = {
        Status.NOT_ATTEMPTED: "is not implemented yet",
        Status.SKIPPED: "cannot be checked on this platform",
    }.get(verdict.status, "fails its checks")
    print(f"Your `{name}` {reason}: using the reference `xmodal_ref` version instead.")
    return EXERCISES[exercise_id].reference()

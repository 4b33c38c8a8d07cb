"""Grade a notebook or a Python file from the command line.

    python -m xmodal_ref.grade notebooks/03_contrastive.ipynb
    python -m xmodal_ref.grade my_answers.py --only contrastive.clip_loss

Exit code 0 when every attempted exercise passes, 1 when one fails, 2 for unusable input.
Grading only reads the file.
"""

from __future__ import annotations

import argparse
import sys

from .grading.loader import UnusableInput, read_learner_file
from .grading.registry import EXERCISES
from .grading.runner import TIME_LIMIT, grade_file
from .grading.verdict import Status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmodal_ref.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a .ipynb notebook or a .py file that defines exercise names")
    parser.add_argument("--only", nargs="+", metavar="ID", help="grade only these exercise ids")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="seconds per exercise")
    args = parser.parse_args(argv)

    unknown = [exercise_id for exercise_id in args.only or [] if exercise_id not in EXERCISES]
    if unknown:
        return _unusable(f"unknown exercise id {', '.join(unknown)}; known ids: {', '.join(EXERCISES)}")
    try:
        learner_file = read_learner_file(args.path)
    except UnusableInput as err:
        return _unusable(str(err))

    exercises = [EXERCISES[i] for i in args.only] if args.only else learner_file.exercises
    counts = dict.fromkeys(Status, 0)
    for verdict in grade_file(learner_file, exercises, args.time_limit):
        print(verdict.render(), flush=True)
        counts[verdict.status] += 1
    print(
        f"\n{counts[Status.PASSED]} passed, {counts[Status.FAILED]} failed,"
        f" {counts[Status.NOT_ATTEMPTED]} not attempted"
        + (
            f", {counts[Status.SKIPPED]} skipped (this platform cannot run their checks)"
            if counts[Status.SKIPPED]
            else ""
        )
    )
    return 1 if counts[Status.FAILED] else 0


def _unusable(reason: str) -> int:
    print(f"error: {reason}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

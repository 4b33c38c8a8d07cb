"""What grading one exercise produces, and the two exceptions a check raises to produce it."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_ATTEMPTED = "not attempted"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Verdict:
    """The outcome of grading one exercise: its id, a status and a message a learner can act on."""

    exercise_id: str
    status: Status
    message: str = ""
    seconds: float = 0.0

    def render(self) -> str:
        """``[PASS] id`` on one line, then the indented message when there is one."""
        mark = {Status.PASSED: "PASS", Status.FAILED: "FAIL", Status.NOT_ATTEMPTED: "TODO", Status.SKIPPED: "SKIP"}[
            self.status
        ]
        head = f"[{mark}] {self.exercise_id}"
        if self.status is Status.NOT_ATTEMPTED:
            head += " — not attempted"
        if not self.message:
            return head
        body = "\n".join("    " + line for line in self.message.splitlines())
        return f"{head}\n{body}"


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters at a space or a comma, never inside a number, with "…"."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    cut = max(head.rfind(" "), head.rfind(","))
    if cut <= 0:  # no separator: back off to before the number the cut would split
        cut = re.search(r"[-+.\deE]*$", head).start()
    return text[:cut].rstrip(" ,") + "…"


class NotAttempted(Exception):
    """The learner's code still raises NotImplementedError."""


class CheckFailure(Exception):
    """A check found a mistake. ``str()`` names the input, the expectation, the result, the cause."""

    def __init__(
        self,
        problem: str,
        *,
        case: str | None = None,
        expected: str | None = None,
        got: str | None = None,
        cause: str | None = None,
    ) -> None:
        self.problem, self.case, self.expected, self.got, self.cause = problem, case, expected, got, cause
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.problem]
        for label, value in (
            ("input", self.case),
            ("expected", self.expected),
            ("got", self.got),
            ("likely cause", self.cause),
        ):
            if value:
                lines.append(f"{label + ':':<13} {value}")
        return "\n".join(lines)


class Unavailable(Exception):
    """This platform cannot run the check (no ``fork``, say); the message says why and where it can run."""

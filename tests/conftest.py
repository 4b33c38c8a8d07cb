"""pytest options and the per-chapter scorecard.

* ``pytest`` grades notebooks/ (unattempted exercises are skipped as "not attempted").
* ``pytest --solutions`` grades solutions/, where every exercise must pass.
* ``pytest --maintainer`` also runs the repository checks (starter stubs, solution drift),
  which would fail in a learner's working copy once notebooks are edited.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from xmodal_ref.grading.registry import CHAPTERS, EXERCISES
from xmodal_ref.grading.verdict import Status, Verdict

settings.register_profile("xmodal", max_examples=40, deadline=None)
settings.load_profile("xmodal")

VERDICTS = pytest.StashKey[dict[str, Verdict]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xmodal")
    group.addoption("--solutions", action="store_true", help="grade solutions/ instead of notebooks/")
    group.addoption("--maintainer", action="store_true", help="also run the repository checks")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[VERDICTS] = {}
    config.addinivalue_line("markers", "maintainer: repository checks, run with --maintainer")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--maintainer"):
        return
    skip = pytest.mark.skip(reason="repository check: run with --maintainer (make test does)")
    for item in items:
        if "maintainer" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def record_verdict(request: pytest.FixtureRequest):
    """Store a verdict for the scorecard."""

    def record(verdict: Verdict) -> None:
        request.config.stash[VERDICTS][verdict.exercise_id] = verdict

    return record


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    verdicts = config.stash[VERDICTS]
    if not verdicts:
        return
    folder = "solutions/" if config.getoption("--solutions") else "notebooks/"
    write = terminalreporter.write_line
    terminalreporter.section(f"xmodal scorecard ({folder})")
    write(f"{'chapter':<16}{'passed':>8}{'failed':>8}{'not attempted':>15}")
    totals = dict.fromkeys(Status, 0)
    for chapter, number in CHAPTERS.items():
        counts = dict.fromkeys(Status, 0)
        for exercise_id, verdict in verdicts.items():
            if EXERCISES[exercise_id].chapter == chapter:
                counts[verdict.status] += 1
        if sum(counts.values()):
            write(
                f"{number + ' ' + chapter:<16}{counts[Status.PASSED]:>8}{counts[Status.FAILED]:>8}"
                f"{counts[Status.NOT_ATTEMPTED]:>15}"
            )
        for status, count in counts.items():
            totals[status] += count
    write(f"{'total':<16}{totals[Status.PASSED]:>8}{totals[Status.FAILED]:>8}{totals[Status.NOT_ATTEMPTED]:>15}")

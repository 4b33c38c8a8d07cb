"""pytest options and the per-chapter scorecard.

* ``pytest`` grades notebooks/ (unattempted exercises are skipped as "not attempted"), and nothing else.
* ``pytest --solutions`` grades solutions/, where every exercise must pass.
* ``pytest --maintainer`` runs the package's own tests too (references, recipes, mutants, notebooks, banks),
  including the repository checks that would fail in a learner's working copy once notebooks are edited.
  ``make test`` and CI use it. A test file named on the command line runs without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from xmodal_ref.common.device import one_thread
from xmodal_ref.grading.registry import CHAPTERS, EXERCISES
from xmodal_ref.grading.verdict import Status, Verdict

settings.register_profile("xmodal", max_examples=40, deadline=None)
settings.load_profile("xmodal")

VERDICTS = pytest.StashKey[dict[str, Verdict]]()
TESTS = Path(__file__).resolve().parent
#: What plain ``pytest`` runs: the grading of the learner's work.
LEARNER_TESTS = (TESTS / "test_grading.py",)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xmodal")
    group.addoption("--solutions", action="store_true", help="grade solutions/ instead of notebooks/")
    group.addoption("--maintainer", action="store_true", help="also run the repository checks")
    group.addoption("--e2e", action="store_true", help="drive JupyterLab in headless Chromium (make e2e)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[VERDICTS] = {}
    config.addinivalue_line("markers", "maintainer: repository checks, run with --maintainer")
    config.addinivalue_line("markers", "e2e: the browser check, run with --e2e (make e2e)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Plain ``pytest`` (no paths, no --maintainer) collects the learner's grading only, so it takes seconds."""
    if config.getoption("--maintainer") or config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return None
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.resolve() not in LEARNER_TESTS
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    browser = pytest.mark.skip(reason="the browser check: run it with make e2e")
    repository = pytest.mark.skip(reason="repository check: run with --maintainer (make test does)")
    for item in items:
        if "e2e" in item.keywords and not config.getoption("--e2e"):
            item.add_marker(browser)
        elif "maintainer" in item.keywords and not config.getoption("--maintainer"):
            item.add_marker(repository)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """torch on one intra-op thread for a whole test module (``pytestmark = pytest.mark.usefixtures("single_thread")``):
    small ops gain nothing from a second thread and stall badly when another process holds a core."""
    with one_thread():
        yield


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
    columns = [
        status
        for status in Status
        if status is not Status.SKIPPED or any(v.status is Status.SKIPPED for v in verdicts.values())
    ]
    write(f"{'chapter':<16}" + "".join(f"{status.value:>15}" for status in columns))
    totals = dict.fromkeys(Status, 0)
    for chapter, number in CHAPTERS.items():
        counts = dict.fromkeys(Status, 0)
        for exercise_id, verdict in verdicts.items():
            if EXERCISES[exercise_id].chapter == chapter:
                counts[verdict.status] += 1
        if sum(counts.values()):
            write(f"{number + ' ' + chapter:<16}" + "".join(f"{counts[status]:>15}" for status in columns))
        for status, count in counts.items():
            totals[status] += count
    write(f"{'total':<16}" + "".join(f"{totals[status]:>15}" for status in columns))

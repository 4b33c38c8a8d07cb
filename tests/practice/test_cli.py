"""`python -m xmodal_ref.practice` as a learner uses it, with keys piped in one per line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xmodal_ref.grading.authoring import ROOT
from xmodal_ref.practice import anki
from xmodal_ref.practice.__main__ import main
from xmodal_ref.practice.cards import load_cards
from xmodal_ref.practice.store import ENVIRONMENT_VARIABLE

CONTRASTIVE = load_cards("en", ["03"])


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "progress.sqlite3"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, str(path))
    monkeypatch.setenv("COLUMNS", "200")  # rich's width: no line of the screen is wrapped
    return path


def practice(*args: str, keys: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xmodal_ref.practice", *args],
        input=keys,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )


def logged(database: Path) -> list[tuple[str, int]]:
    """The review log, read without creating the file if it is not there yet."""
    if not database.exists():
        return []
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT key, rating FROM reviews ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the schema is not written yet
        return []
    finally:
        connection.close()


def test_a_review_shows_question_answer_exercise_and_saves_each_rating(database: Path) -> None:
    first, second = CONTRASTIVE[:2]

    result = practice("--chapter", "03", "--new", "2", keys=" \n3\n\n4\n")

    assert result.returncode == 0, result.stderr
    assert logged(database) == [(first.key, 3), (second.key, 4)]
    for card in (first, second):
        assert card.title in result.stdout and f"{card.id} · level {card.level}" in result.stdout
        assert f"Graded exercise: {card.exercise}" in result.stdout
    assert result.stdout.count("rate: 1 again · 2 hard · 3 good · 4 easy (q quits)") == 2
    assert "nothing more is due now" in result.stdout and "2 ratings saved" in result.stdout
    assert f"{len(CONTRASTIVE) - 2} new cards wait for another day (--new 2 per day)" in result.stdout


def test_quitting_before_rating_saves_nothing_and_chinese_shows_the_chinese_edition(database: Path) -> None:
    card = load_cards("zh", ["03"])[0]
    result = practice("--lang", "zh", "--chapter", "3", keys=" \nq\n")
    assert result.returncode == 0, result.stderr
    assert card.title in result.stdout and card.question[:6] in result.stdout
    assert "0 ratings saved" in result.stdout
    assert logged(database) == []


def test_sigint_mid_session_keeps_the_ratings_given(database: Path) -> None:
    env = {**os.environ, ENVIRONMENT_VARIABLE: str(database)}
    command = [sys.executable, "-m", "xmodal_ref.practice", "--chapter", "03", "--new", "5"]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    process.stdin.write(" \n3\n \n1\n")  # two ratings; the third card stays on screen
    process.stdin.flush()
    deadline = time.monotonic() + 20
    while len(logged(database)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert len(logged(database)) == 2, "the two ratings are committed before the interrupt"

    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)

    assert process.returncode == 130
    assert err.strip() == "stopped: 2 ratings saved" and "Traceback" not in out + err
    assert logged(database) == [(CONTRASTIVE[0].key, 3), (CONTRASTIVE[1].key, 1)]


def test_stats_and_due_report_the_progress(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["due"]) == 0
    assert capsys.readouterr().out == "no card is due today\n"
    practice("--chapter", "03", "--new", "1", keys=" \n1\n")  # one card in its "again" step, due in minutes

    assert main(["stats", "--chapter", "03", "--chapter", "02"]) == 0
    stats = capsys.readouterr().out
    rows = {
        cells[1]: cells[2:6] for line in stats.splitlines() if len(cells := [c.strip() for c in line.split("│")]) > 6
    }
    assert rows["03 contrastive"] == [str(len(CONTRASTIVE)), "1", "1", "—"]
    assert rows["02 attention"][1:] == ["0", "0", "—"]
    assert "retention" in stats and "reviews of cards reviewed before" in stats

    assert main(["due"]) == 0
    due = capsys.readouterr().out
    assert "1 cards due today" in due and CONTRASTIVE[0].key in due and CONTRASTIVE[1].key not in due


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chapter", "99"], "no question in the en banks matches --chapter 99"),
        (["--chapter", "03", "--level", "9"], "matches --chapter 03 --level 9"),
        (["export-anki", "deck.zip"], "does not end in .apkg"),
    ],
)
def test_unusable_input_is_one_line_and_exit_code_2(
    args: list[str], message: str, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not database.exists(), "nothing was written"


def test_export_anki_passes_the_languages_and_reports_the_note_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []
    monkeypatch.setattr(anki, "export_deck", lambda path, langs: calls.append((path, tuple(langs))) or 7)
    deck = tmp_path / "xmodal.apkg"

    assert main(["export-anki", str(deck)]) == 0
    assert main(["export-anki", str(deck), "--lang", "zh"]) == 0

    assert calls == [(deck, ("en", "zh")), (deck, ("zh",))]
    assert capsys.readouterr().out == f"wrote 7 notes to {deck}\n" * 2


def test_export_anki_writes_a_deck_with_a_note_per_question(tmp_path: Path) -> None:
    deck = tmp_path / "xmodal.apkg"
    result = practice("export-anki", str(deck), "--lang", "en")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {len(load_cards('en'))} notes to {deck}\n"
    assert deck.stat().st_size > 0

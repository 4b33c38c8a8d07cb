"""A real terminal session: the review driven under tmux with single keys, then the screen and the stored state."""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from xmodal_ref.grading.authoring import ROOT
from xmodal_ref.practice.cards import load_cards
from xmodal_ref.practice.terminal import RATING_PROMPT

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (make or .ci/run installs it)")
CARDS = load_cards("en", ["03"])[:3]


class Tmux:
    """One detached tmux session on a private server socket."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        command = [TMUX, "-S", str(self.socket), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "practice")

    def wait_for(self, *texts: str, timeout: float = 10) -> str:
        """The screen once it shows every one of ``texts``; fails with the last screen after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not all(text in (screen := self.screen()) for text in texts):
            if time.monotonic() > deadline:
                pytest.fail(f"the screen never showed {texts}:\n{screen}")
            time.sleep(0.05)
        return screen

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "practice", *keys)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(tmp_path / "tmux.socket")
    yield session
    subprocess.run([TMUX, "-S", str(session.socket), "kill-server"], capture_output=True, timeout=10)


def test_reviewing_three_cards_in_a_terminal(tmux: Tmux, tmp_path: Path) -> None:
    database = tmp_path / "progress.sqlite3"
    review = shlex.join([sys.executable, "-m", "xmodal_ref.practice", "--chapter", "03", "--new", "3"])
    # The width is the pane's, not an inherited COLUMNS. After the review: its exit code, and whether the terminal
    # is back in canonical mode (stty's "icanon" rather than "-icanon").
    shell = f"unset COLUMNS LINES; {review}; echo exit=$?; stty -a | tr ' ' '\\n' | grep -Ex -- '-?icanon'; sleep 600"
    tmux("new-session", "-d", "-s", "practice", "-x", "200", "-y", "100", "-c", str(ROOT),
         "-e", f"XMODAL_PRACTICE_DB={database}", shell)  # fmt: skip

    for card, rating in zip(CARDS, ["3", "1", "3"], strict=True):
        question = tmux.wait_for(f"{card.id} · level {card.level}", card.title, "press any key to show the answer")
        assert RATING_PROMPT not in question, "the answer waits for a key"
        tmux.keys("Space")
        answer = tmux.wait_for(RATING_PROMPT)
        assert " ".join(card.answer.split()[:3]) in answer
        assert f"Graded exercise: {card.exercise} — {card.grade_command}" in answer
        tmux.keys(rating)

    tmux.wait_for("waiting (q quits)")  # the card rated "again" is due within its one-minute step
    tmux.keys("q")
    end = tmux.wait_for("exit=0", "icanon")
    assert "3 ratings saved" in end and "-icanon" not in end, "the terminal's settings are restored"

    connection = sqlite3.connect(database)
    assert connection.execute("SELECT key, rating FROM reviews ORDER BY id").fetchall() == [
        (CARDS[0].key, 3),
        (CARDS[1].key, 1),
        (CARDS[2].key, 3),
    ]
    introduced = connection.execute("SELECT introduced_on FROM cards").fetchall()
    assert introduced == [(date.today().isoformat(),)] * 3

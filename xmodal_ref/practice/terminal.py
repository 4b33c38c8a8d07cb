"""The review screen: cards rendered with ``rich`` (Markdown), keys read one at a time.

On a terminal, keys are read unbuffered and unechoed (cbreak mode, which keeps Ctrl-C a signal); the terminal's
settings are restored when the ``with`` block ends, however it ends. When standard input is not a terminal (a pipe,
a test), each line is one key: its first character, an empty line being Enter and end of input being "q".
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import tty
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TextIO

from fsrs import Rating
from rich.console import Console, RenderableType
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from .cards import Card
from .schedule import ChapterStats, Done

QUIT = "q"
RATINGS = {"1": Rating.Again, "2": Rating.Hard, "3": Rating.Good, "4": Rating.Easy}
RATING_PROMPT = "rate: 1 again · 2 hard · 3 good · 4 easy (q quits)"
RETENTION = "retention: share of reviews rated hard, good or easy among reviews of cards reviewed before"


class Keys:
    """Keys from a file descriptor: single keys (a terminal in cbreak mode) or one key per line (``lines``).

    The descriptor is read unbuffered, so waiting with a timeout sees exactly what has been typed or piped.
    """

    def __init__(self, fd: int, lines: bool) -> None:
        self.fd = fd
        self.lines = lines
        self.ended = False

    def read(self, timeout: float | None = None) -> str | None:
        """The next key ("\\n" for Enter, "q" at end of input or Ctrl-D), or None if ``timeout`` seconds pass first."""
        if self.ended:
            return QUIT
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = self._line() if self.lines else os.read(self.fd, 32)  # 32: an escape sequence counts as one key
        self.ended = data in (b"", b"\x04")
        return QUIT if self.ended else data.decode(errors="replace").rstrip("\r\n")[:1] or "\n"

    def _line(self) -> bytes:
        line = b""
        while not line.endswith(b"\n") and (byte := os.read(self.fd, 1)):
            line += byte
        return line


@contextlib.contextmanager
def open_keys(stream: TextIO = sys.stdin) -> Iterator[Keys]:
    """Keys from ``stream``: single keys if it is a terminal (its settings restored on exit), else lines."""
    fd = stream.fileno()
    if not stream.isatty():
        yield Keys(fd, lines=True)
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield Keys(fd, lines=False)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Screen:
    """What the learner sees and types during a review."""

    def __init__(self, keys: Keys, console: Console | None = None) -> None:
        self.keys = keys
        self.console = Console(highlight=False) if console is None else console

    def question(self, card: Card) -> bool:
        """Show the card's header and question; wait for a key. False if the learner quit."""
        if self.console.is_terminal:
            self.console.clear()
        header = Text(f"{card.chapter} {card.chapter_name} · {card.id} · level {card.level}", style="dim")
        self.console.print(header)
        self.console.print(Text(card.title, style="bold"))
        self.console.print()
        self.console.print(Markdown(card.question))
        self.console.print()
        self.console.print(Text("press any key to show the answer (space/enter; q quits)", style="cyan"))
        return self.keys.read() != QUIT

    def answer(self, card: Card) -> Rating | None:
        """Show the answer, follow-ups and graded exercise; return the rating, or None if the learner quit."""
        self.console.rule("answer")
        self.console.print(Markdown(card.answer))
        if card.followups:
            self.console.print()
            self.console.print(Markdown("**Follow-ups**\n\n" + "\n".join(f"- {item}" for item in card.followups)))
        if card.exercise is not None:
            self.console.print()
            self.console.print(Text(f"Graded exercise: {card.exercise} — {card.grade_command}", style="green"))
        self.console.print()
        self.console.print(Text(RATING_PROMPT, style="cyan"))
        while True:
            key = self.keys.read()
            if key == QUIT:
                return None
            if key in RATINGS:
                return RATINGS[key]

    def wait(self, until: datetime, now: Callable[[], datetime]) -> bool:
        """Wait until ``until`` for a card in a learning step. False if the learner quit."""
        self.console.print(Text(f"next card due at {_clock_time(until)}; waiting (q quits)", style="cyan"))
        while (remaining := (until - now()).total_seconds()) > 0:
            if self.keys.read(timeout=remaining) == QUIT:
                return False
        return True

    def done(self, done: Done, new_per_day: int) -> None:
        """Say that nothing more is due now, and when the next card is."""
        lines = ["nothing more is due now."]
        if done.next_due is not None:
            lines.append(f"next card due {_clock_time(done.next_due, with_date=True)}.")
        if done.new_held:
            lines.append(f"{done.new_held} new cards wait for another day (--new {new_per_day} per day).")
        self.console.print(Text("\n".join(lines)))

    def message(self, text: str) -> None:
        self.console.print(Text(text))


def stats_table(rows: Sequence[ChapterStats], lang: str) -> Table:
    """Per chapter: cards, seen, due today and retention (defined in the caption)."""
    table = Table(title=f"practice progress ({lang})", caption=RETENTION)
    for column in ("chapter", "cards", "seen", "due today", "retention"):
        table.add_column(column, justify="left" if column == "chapter" else "right")
    for index, row in enumerate(rows):
        retention = "—" if row.retention is None else f"{row.retention:.0%}"
        label = f"{row.chapter} {row.name}".strip()
        last_chapter = index == len(rows) - 2  # a line above the total row
        table.add_row(label, str(row.cards), str(row.seen), str(row.due_today), retention, end_section=last_chapter)
    return table


def due_table(due: Sequence[tuple[Card, datetime]]) -> RenderableType:
    """The cards due today with their due time, in the learner's time zone."""
    if not due:
        return Text("no card is due today")
    table = Table(title=f"{len(due)} cards due today")
    for column in ("due", "card", "title"):
        table.add_column(column)
    for card, when in due:
        table.add_row(_clock_time(when, with_date=True), card.key, Text(card.title))
    return table


def _clock_time(moment: datetime, with_date: bool = False) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M:%S")

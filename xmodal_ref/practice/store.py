"""The learner's progress: one SQLite file, one row per card key and a log of every rating.

The file is ``platformdirs.user_data_path("xmodal") / "practice.sqlite3"``, or the path in ``XMODAL_PRACTICE_DB``.
Its schema version is ``PRAGMA user_version`` (:data:`VERSION`). A file that is not a database, fails
``PRAGMA quick_check``, holds someone else's tables or has a newer version raises :class:`ProgressFileError`
before anything is written to it: such a file is reported, never reset.

Rows are keyed by :attr:`Card.key <xmodal_ref.practice.cards.Card.key>` (``Q03.01/en``), so a reworded question
keeps its history; rows of cards that left the banks stay in the file and are simply never asked for.
Each :meth:`Store.record` is its own committed transaction: an interrupted session loses at most the card on screen.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import platformdirs
from fsrs import Card as FsrsCard
from fsrs import Rating

ENVIRONMENT_VARIABLE = "XMODAL_PRACTICE_DB"
VERSION = 1
SCHEMA = """
CREATE TABLE cards (
    key TEXT PRIMARY KEY,          -- "Q03.01/en"
    fsrs TEXT NOT NULL,            -- fsrs.Card.to_json()
    introduced_on TEXT NOT NULL    -- the learner's local date of the first rating, ISO format
);
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    rating INTEGER NOT NULL,       -- fsrs.Rating: 1 again, 2 hard, 3 good, 4 easy
    reviewed_at TEXT NOT NULL      -- timezone-aware UTC, ISO format
);
CREATE INDEX reviews_by_key ON reviews (key, reviewed_at);
"""


class ProgressFileError(Exception):
    """The progress file cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Review:
    """One logged rating."""

    key: str
    rating: Rating
    reviewed_at: datetime


def default_path() -> Path:
    """``$XMODAL_PRACTICE_DB`` if set, else ``practice.sqlite3`` in the user's data directory."""
    override = os.environ.get(ENVIRONMENT_VARIABLE)
    return Path(override) if override else platformdirs.user_data_path("xmodal") / "practice.sqlite3"


class Store:
    """An open progress file. Use :meth:`open`; close it with :meth:`close` or a ``with`` block."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._connection = connection
        self.path = path

    @classmethod
    def open(cls, path: Path | None = None) -> Store:
        """Open (creating it and its folder if missing) the progress file at ``path`` or :func:`default_path`."""
        path = default_path() if path is None else Path(path)
        if path.exists():
            _check(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(path, isolation_level=None)  # autocommit; record() opens its own transaction
            if connection.execute("PRAGMA user_version").fetchone()[0] == 0:
                connection.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version = {VERSION}; COMMIT;")
        except sqlite3.Error as err:
            raise ProgressFileError(f"cannot use the progress file {path}: {err}") from None
        return cls(connection, path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def states(self, keys: Iterable[str]) -> dict[str, FsrsCard]:
        """The stored fsrs state of each of ``keys`` that has been rated at least once."""
        wanted = set(keys)
        rows = self._connection.execute("SELECT key, fsrs FROM cards").fetchall()
        return {key: FsrsCard.from_json(state) for key, state in rows if key in wanted}

    def introduced_on(self, day: date) -> int:
        """How many cards (of any chapter or language) were rated for the first time on the local date ``day``."""
        query = "SELECT count(*) FROM cards WHERE introduced_on = ?"
        return self._connection.execute(query, (day.isoformat(),)).fetchone()[0]

    def reviews(self, keys: Iterable[str]) -> list[Review]:
        """The logged ratings of ``keys``, oldest first."""
        wanted = set(keys)
        rows = self._connection.execute("SELECT key, rating, reviewed_at FROM reviews ORDER BY reviewed_at, id")
        return [Review(key, Rating(rating), datetime.fromisoformat(at)) for key, rating, at in rows if key in wanted]

    def record(self, key: str, state: FsrsCard, rating: Rating, reviewed_at: datetime, local_day: date) -> None:
        """Save a rating and the card's new fsrs state in one committed transaction.

        ``local_day`` becomes the card's introduction date if this is its first rating.
        """
        with self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.execute(
                "INSERT INTO cards (key, fsrs, introduced_on) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET fsrs = excluded.fsrs",
                (key, state.to_json(), local_day.isoformat()),
            )
            self._connection.execute(
                "INSERT INTO reviews (key, rating, reviewed_at) VALUES (?, ?, ?)",
                (key, int(rating), reviewed_at.isoformat()),
            )


def _check(path: Path) -> None:
    """Raise :class:`ProgressFileError` unless ``path`` is a sound progress file this version can read.

    The check opens the file read-only, so a rejected file is left byte for byte as it was.
    """
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            integrity = connection.execute("PRAGMA quick_check").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as err:
        raise ProgressFileError(f"the progress file {path} is unreadable ({err}); it was left as it is") from None
    if integrity != "ok":
        problem = integrity.replace("*** in database main ***", "").split()  # quick_check's report spans lines
        raise ProgressFileError(f"the progress file {path} is damaged ({' '.join(problem)}); it was left as it is")
    if version > VERSION:
        raise ProgressFileError(
            f"the progress file {path} is version {version}, newer than this package's {VERSION};"
            " it was left as it is (update the package)"
        )
    if version == 0 and tables:
        raise ProgressFileError(f"{path} is another program's SQLite file, not practice progress; it was left as it is")

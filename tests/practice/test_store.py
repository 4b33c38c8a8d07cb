"""The progress file: where it lives, what it keeps, that each rating is committed, and that bad files are refused."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import platformdirs
import pytest
from fsrs import Card as FsrsCard
from fsrs import Rating, Scheduler

from xmodal_ref.practice import store as store_module
from xmodal_ref.practice.__main__ import main
from xmodal_ref.practice.store import VERSION, ProgressFileError, Store, default_path

NOW = datetime(2025, 3, 10, 9, 0, tzinfo=timezone.utc)
TODAY = date(2025, 3, 10)


def reviewed(rating: Rating, at: datetime = NOW) -> FsrsCard:
    card, _ = Scheduler().review_card(FsrsCard(card_id=1, due=at), rating, at)
    return card


def test_the_default_path_is_in_the_user_data_directory_unless_overridden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(store_module.ENVIRONMENT_VARIABLE, raising=False)
    assert default_path() == platformdirs.user_data_path("xmodal") / "practice.sqlite3"
    monkeypatch.setenv(store_module.ENVIRONMENT_VARIABLE, str(tmp_path / "mine.sqlite3"))
    assert default_path() == tmp_path / "mine.sqlite3"


def test_a_new_file_gets_the_schema_and_its_version(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "progress.sqlite3"
    with Store.open(path):
        pass
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == VERSION
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"cards", "reviews"}


def test_every_rating_is_committed_when_recorded(tmp_path: Path) -> None:
    path = tmp_path / "progress.sqlite3"
    with Store.open(path) as store:
        first = reviewed(Rating.Again)
        store.record("Q03.01/en", first, Rating.Again, NOW, TODAY)
        later = NOW + timedelta(minutes=2)
        second, _ = Scheduler().review_card(first, Rating.Good, later)
        store.record("Q03.01/en", second, Rating.Good, later, TODAY + timedelta(days=1))
        store.record("Q03.02/en", reviewed(Rating.Easy), Rating.Easy, NOW, TODAY)

        other = sqlite3.connect(path)  # another reader sees every rating while the store is still open
        assert other.execute("SELECT count(*) FROM reviews").fetchone()[0] == 3
        assert store.states(["Q03.01/en", "Q09.09/en"]) == {"Q03.01/en": second}
        assert [(r.key, r.rating, r.reviewed_at) for r in store.reviews(["Q03.01/en"])] == [
            ("Q03.01/en", Rating.Again, NOW),
            ("Q03.01/en", Rating.Good, later),
        ]
        assert store.introduced_on(TODAY) == 2, "a card is introduced by its first rating only"
        assert store.introduced_on(TODAY + timedelta(days=1)) == 0


def garbage(path: Path) -> None:
    path.write_bytes(b"these are my notes, not a database\n" * 200)


def newer(path: Path) -> None:
    with Store.open(path) as store:
        store.record("Q03.01/en", reviewed(Rating.Good), Rating.Good, NOW, TODAY)
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {VERSION + 1}")
    connection.close()


def someone_elses(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE expenses (amount REAL)")
    connection.commit()
    connection.close()


def damaged(path: Path) -> None:
    """A sound progress file whose index of card keys was overwritten: only ``PRAGMA quick_check`` notices."""
    with Store.open(path) as store:
        for number in range(100):
            store.record(f"Q03.{number:02}/en", reviewed(Rating.Good), Rating.Good, NOW, TODAY)
    connection = sqlite3.connect(path)
    (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    (page,) = connection.execute(
        "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'cards' AND type = 'index'"
    ).fetchone()
    connection.close()
    data = bytearray(path.read_bytes())
    data[(page - 1) * page_size : page * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [(garbage, "not a database"), (newer, "newer"), (someone_elses, "another program's"), (damaged, "damaged")],
)
def test_an_unusable_file_is_reported_in_one_line_and_left_untouched(
    spoil, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "progress.sqlite3"
    spoil(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    with pytest.raises(ProgressFileError, match=reason) as error:
        Store.open(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    monkeypatch.setenv(store_module.ENVIRONMENT_VARIABLE, str(path))
    code = main(["--chapter", "03"])
    stats_code = main(["stats"])

    err = capsys.readouterr().err
    assert code == stats_code == 2
    assert err.count("\n") == 2 and err.startswith("error: ") and "Traceback" not in err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.sqlite3"], "no journal or sidecar file"

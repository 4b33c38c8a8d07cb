"""The scheduler glue with a fake clock: fsrs decides every due date, the session orders cards and caps new ones."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fsrs import Card as FsrsCard
from fsrs import Rating, Scheduler

from xmodal_ref.practice.cards import Card, load_cards
from xmodal_ref.practice.schedule import Done, Session, Wait, chapter_stats, due_today
from xmodal_ref.practice.store import Store

START = datetime(2025, 3, 10, 9, 0, tzinfo=timezone.utc)
BEIJING = timezone(timedelta(hours=8))  # 17:00 local at START; local midnight is 16:00 UTC


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.time = start

    def __call__(self) -> datetime:
        return self.time

    def advance(self, delta: timedelta) -> None:
        self.time += delta


@pytest.fixture(scope="module")
def cards() -> list[Card]:
    return load_cards("en", ["03"])


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "progress.sqlite3") as store:
        yield store


def session(cards: list[Card], store: Store, clock: FakeClock, new_per_day: int = 10) -> Session:
    return Session(
        cards, store, new_per_day=new_per_day, now=clock, scheduler=Scheduler(enable_fuzzing=False), tz=BEIJING
    )


def test_again_comes_back_in_the_same_session_once_fsrs_says_it_is_due(cards: list[Card], store: Store) -> None:
    clock = FakeClock()
    review = session(cards, store, clock, new_per_day=1)
    first = review.next()
    assert first == cards[0], "new cards come in bank order"

    state = review.rate(first, Rating.Again)

    assert state.due > clock.time, "fsrs puts the card in a learning step"
    assert review.next() == Wait(state.due), "the only new card of the day is waiting for its step: wait for it"
    clock.advance(state.due - clock.time - timedelta(seconds=1))
    assert review.next() == Wait(state.due)
    clock.advance(timedelta(seconds=1))
    assert review.next() == first


def test_good_on_a_new_card_comes_back_only_after_its_longer_step(cards: list[Card], store: Store) -> None:
    clock = FakeClock()
    review = session(cards, store, clock, new_per_day=1)
    card = review.next()
    again, _ = Scheduler(enable_fuzzing=False).review_card(FsrsCard(due=START), Rating.Again, START)

    state = review.rate(card, Rating.Good)

    assert state.due - START > again.due - START, "fsrs's step after 'good' is longer than after 'again'"
    assert state.due - START > review.wait_limit
    assert review.next() == Done(state.due, new_held=len(cards) - 1), "not worth waiting for: the session ends"
    clock.advance(state.due - START - timedelta(seconds=1))
    assert session(cards, store, clock, new_per_day=1).next() == Wait(state.due), "not yet due"
    clock.advance(timedelta(seconds=1))
    assert session(cards, store, clock, new_per_day=1).next() == card, "a later session offers it once due"


def test_due_cards_come_first_earliest_due_first_then_new_cards(cards: list[Card], store: Store) -> None:
    clock = FakeClock()
    review = session(cards, store, clock)
    first = review.next()
    review.rate(first, Rating.Good)
    second = review.next()
    review.rate(second, Rating.Again)
    assert review.next() == cards[2], "nothing due yet: the next new card"

    clock.advance(timedelta(days=1))  # both learning steps are over

    assert review.states[second.key].due < review.states[first.key].due
    assert review.next() == second
    review.rate(second, Rating.Good)
    assert review.next() == first


def test_the_new_card_limit_holds_across_sessions_of_a_local_day_and_resets_the_next(
    cards: list[Card], store: Store
) -> None:
    clock = FakeClock()
    morning = session(cards, store, clock, new_per_day=2)
    for _ in range(2):
        morning.rate(morning.next(), Rating.Easy)  # easy: due in days, so only new cards are in question
    assert isinstance(morning.next(), Done)
    assert morning.next().new_held == len(cards) - 2

    clock.advance(timedelta(hours=6))  # 23:00 in Beijing: the same local day
    evening = session(cards, store, clock, new_per_day=2)
    assert evening.new_left() == 0
    assert isinstance(evening.next(), Done)
    assert session(cards, store, clock, new_per_day=3).next() == cards[2], "a higher limit allows one more"

    clock.advance(timedelta(hours=1))  # 00:00 in Beijing, still 16:00 of the same UTC day
    tomorrow = session(cards, store, clock, new_per_day=2)
    assert tomorrow.new_left() == 2
    assert tomorrow.next() == cards[2]


def test_history_is_kept_by_key_through_rewording_and_removal(cards: list[Card], store: Store) -> None:
    clock = FakeClock()
    state = session(cards, store, clock).rate(cards[0], Rating.Easy)
    reworded = [dataclasses.replace(cards[0], title="A reworded title", question="Asked differently?"), *cards[1:]]

    assert session(reworded, store, clock).states[cards[0].key] == state
    without_it = session(cards[1:], store, clock)
    assert cards[0].key not in without_it.states
    assert without_it.next() == cards[1]
    assert store.states([cards[0].key]) == {cards[0].key: state}, "the removed card's row is kept"
    assert chapter_stats(cards[1:], store, clock.time)[-1].seen == 0, "stats count only current cards"


def test_stats_count_seen_due_today_and_retention_per_chapter(store: Store) -> None:
    cards = load_cards("en", ["02", "03"])
    clock = FakeClock()
    review = session(cards, store, clock)
    contrastive = [card for card in cards if card.chapter == "03"]
    for rating in (Rating.Good, Rating.Again, Rating.Hard):  # a first review, then a lapse and a recall
        review.rate(contrastive[0], rating)
        clock.advance(timedelta(minutes=1))
    review.rate(contrastive[1], Rating.Easy)  # a first review only: no retention to speak of

    rows = {row.chapter: row for row in chapter_stats(cards, store, clock.time, BEIJING)}

    assert [*rows] == ["02", "03", "all"]
    assert (rows["03"].cards, rows["03"].seen, rows["03"].retention) == (len(contrastive), 2, 0.5)
    assert (rows["02"].seen, rows["02"].due_today, rows["02"].retention) == (0, 0, None)
    assert rows["03"].due_today == 1, "the card in a learning step is due today, the easy one in days"
    assert rows["all"].cards == len(cards) and rows["all"].seen == 2
    assert [card for card, _ in due_today(cards, store, clock.time, BEIJING)] == [contrastive[0]]

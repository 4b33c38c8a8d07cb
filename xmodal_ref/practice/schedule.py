"""Which card comes next, and what is due: the glue between the cards, the progress file and FSRS.

Every due date comes from the ``fsrs`` package (:class:`fsrs.Scheduler`); this module only orders cards and
enforces the daily new-card limit. Time comes from an injectable clock (``now``), and fsrs is always called with
an explicit timezone-aware UTC datetime, so tests can drive a session with a fake clock. "Today" is the learner's
local date (``tz``; None means the system's time zone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

from fsrs import Card as FsrsCard
from fsrs import Rating, Scheduler

from .cards import Card
from .store import Store

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock, timezone-aware UTC."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Wait:
    """Nothing is due now, but a card in a short learning step is due at ``until``: worth waiting for."""

    until: datetime


@dataclass(frozen=True)
class Done:
    """Nothing more for now. ``next_due``: the selection's next due date (None if nothing is scheduled);
    ``new_held``: unseen cards held back by the daily new-card limit."""

    next_due: datetime | None
    new_held: int


class Session:
    """One review session over ``cards`` (in bank order), saving each rating to ``store`` as it is given.

    :meth:`next` offers, in order: seen cards that are due (earliest due first; learning, relearning and review
    alike), then unseen cards in bank order while fewer than ``new_per_day`` cards were introduced (first rated)
    on today's local date, counting every session and selection that used the same progress file. When nothing is
    due it returns :class:`Wait` if a card falls due within the scheduler's first learning step (the "again"
    step), so a card rated "again" comes back in the same session, and :class:`Done` otherwise.
    """

    def __init__(
        self,
        cards: Sequence[Card],
        store: Store,
        *,
        new_per_day: int = 10,
        now: Clock = utc_now,
        scheduler: Scheduler | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        self.cards = list(cards)
        self.store = store
        self.new_per_day = new_per_day
        self.scheduler = Scheduler() if scheduler is None else scheduler
        self.tz = tz
        self.states = store.states(card.key for card in self.cards)
        self.ratings = 0
        self._clock = now

    def now(self) -> datetime:
        """The clock's time as timezone-aware UTC (what fsrs requires)."""
        return self._clock().astimezone(timezone.utc)

    @property
    def wait_limit(self) -> timedelta:
        """How far ahead a due card is waited for rather than left to a later session."""
        return self.scheduler.learning_steps[0] if self.scheduler.learning_steps else timedelta(0)

    def new_left(self) -> int:
        """New cards that may still be introduced today."""
        return max(0, self.new_per_day - self.store.introduced_on(local_day(self.now(), self.tz)))

    def next(self) -> Card | Wait | Done:
        """The card to show now, or why there is none."""
        now = self.now()
        seen = [card for card in self.cards if card.key in self.states]
        due = [card for card in seen if self.states[card.key].due <= now]
        if due:
            return min(due, key=lambda card: self.states[card.key].due)
        unseen = [card for card in self.cards if card.key not in self.states]
        if unseen and self.new_left():
            return unseen[0]
        upcoming = min((self.states[card.key].due for card in seen), default=None)
        if upcoming is not None and upcoming - now <= self.wait_limit:
            return Wait(upcoming)
        return Done(upcoming, len(unseen))

    def rate(self, card: Card, rating: Rating) -> FsrsCard:
        """Schedule ``card`` with fsrs after ``rating``, commit it to the store, and return its new fsrs state."""
        now = self.now()
        state = self.states.get(card.key) or FsrsCard(card_id=int(now.timestamp() * 1000), due=now)
        state, _ = self.scheduler.review_card(state, rating, review_datetime=now)
        self.store.record(card.key, state, rating, now, local_day(now, self.tz))
        self.states[card.key] = state
        self.ratings += 1
        return state


@dataclass(frozen=True)
class ChapterStats:
    """Progress on one chapter's cards (or on all of them: ``chapter`` "all").

    ``retention``: the share of reviews rated hard, good or easy (not "again") among the reviews of cards that
    had been reviewed before, i.e. every logged review except each card's first; None before there is any.
    """

    chapter: str
    name: str
    cards: int
    seen: int
    due_today: int
    retention: float | None


def chapter_stats(cards: Sequence[Card], store: Store, now: datetime, tz: tzinfo | None = None) -> list[ChapterStats]:
    """One row per chapter of ``cards`` in order, then a total row; cards that left the banks are not counted."""
    keys = [card.key for card in cards]
    states = store.states(keys)
    reviews = store.reviews(keys)
    end = end_of_day(now, tz)

    def summary(chapter: str, name: str, subset: list[Card]) -> ChapterStats:
        wanted = {card.key for card in subset}
        firsts: set[str] = set()
        repeats = []
        for review in reviews:
            if review.key in firsts:
                repeats.append(review.rating)
            elif review.key in wanted:
                firsts.add(review.key)
        return ChapterStats(
            chapter=chapter,
            name=name,
            cards=len(subset),
            seen=sum(card.key in states for card in subset),
            due_today=sum(card.key in states and states[card.key].due < end for card in subset),
            retention=sum(rating >= Rating.Hard for rating in repeats) / len(repeats) if repeats else None,
        )

    chapters = dict.fromkeys((card.chapter, card.chapter_name) for card in cards)
    rows = [summary(number, name, [c for c in cards if c.chapter == number]) for number, name in chapters]
    return [*rows, summary("all", "", list(cards))]


def due_today(
    cards: Sequence[Card], store: Store, now: datetime, tz: tzinfo | None = None
) -> list[tuple[Card, datetime]]:
    """The seen cards due before the end of the local day (overdue ones included), earliest first."""
    states = store.states(card.key for card in cards)
    end = end_of_day(now, tz)
    due = [(card, states[card.key].due) for card in cards if card.key in states and states[card.key].due < end]
    return sorted(due, key=lambda pair: pair[1])


def local_day(moment: datetime, tz: tzinfo | None = None) -> date:
    """The learner's calendar date at ``moment``."""
    return moment.astimezone(tz).date()


def end_of_day(moment: datetime, tz: tzinfo | None = None) -> datetime:
    """The local midnight that ends ``moment``'s local day."""
    local = moment.astimezone(tz)
    return (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)

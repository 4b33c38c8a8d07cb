"""Review cards: one per question and language, built from the banks with :mod:`xmodal_ref.banks`.

A card's identity is its question id and language (``Q03.01/en``), never its text: a question that is reworded
keeps its review history, one removed from a bank simply stops being offered, and a new one arrives as new.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..banks import EN, QUESTIONS, ZH_EDITION, Question, banks, read_bank
from ..grading.registry import EXERCISES


@dataclass(frozen=True)
class Card:
    """What the review loop and the Anki deck show of one question in one language.

    ``title`` is in the card's language (the other language's title is ``other_title``); ``question`` and
    ``answer`` are Markdown (the answer includes its pitfalls); ``exercise`` is the graded exercise id, if any.
    """

    id: str  # "Q03.01"
    lang: str  # "en" | "zh"
    chapter: str  # "03"
    chapter_name: str  # "contrastive"
    level: int
    source: str | None
    title: str
    other_title: str
    question: str
    answer: str
    followups: tuple[str, ...]
    exercise: str | None

    @property
    def key(self) -> str:
        """The progress file's key for this card: ``Q03.01/en``."""
        return f"{self.id}/{self.lang}"

    @property
    def grade_command(self) -> str | None:
        """The command that grades this card's exercise in the learner's notebook."""
        if self.exercise is None:
            return None
        notebook = EXERCISES[self.exercise].notebook  # not always this bank's chapter (Q03.01 practises chapter 00)
        return f".venv/bin/python -m xmodal_ref.grade notebooks/{notebook} --only {self.exercise}"


def load_cards(
    lang: str = "en", chapters: Iterable[str] = (), level: int | None = None, folder: Path = QUESTIONS
) -> list[Card]:
    """Every card of one edition in bank order, optionally only some chapters ("03") and one level."""
    wanted = {chapter.zfill(2) for chapter in chapters}
    cards = []
    for path in banks(lang, folder):
        chapter, chapter_name = path.stem.split("_", 1)
        if wanted and chapter not in wanted:
            continue
        for question in read_bank(path):
            card = _card(question, lang, chapter, chapter_name)
            if level is None or card.level == level:
                cards.append(card)
    return cards


def _card(question: Question, lang: str, chapter: str, chapter_name: str) -> Card:
    edition = ZH_EDITION if lang == "zh" else EN
    asked = re.search(rf"^\*\*{re.escape(edition.question)}\*\* (.+?)(?:\n\s*\n|\Z)", question.body, re.M | re.S)
    own, other = (
        (question.chinese_title, question.english_title)
        if lang == "zh"
        else (question.english_title, question.chinese_title)
    )
    return Card(
        id=question.id,
        lang=lang,
        chapter=chapter,
        chapter_name=chapter_name,
        level=int(question.level or 0),
        source=question.source,
        title=own,
        other_title=other,
        question=asked.group(1).strip() if asked else "",
        answer=(question.answer or "").strip(),
        followups=tuple(question.followups),
        exercise=question.practice[0][0] if question.practice else None,
    )

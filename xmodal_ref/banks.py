"""The question banks as data: one parser for both editions, shared by the bank tests and the practice mode.

A bank is ``questions/NN_chapter.md`` (English) or ``questions/zh/NN_chapter.md`` (Chinese); each question is one
level-2 section in the format ``questions/README.md`` documents. :func:`parse` turns a bank's text into
:class:`Question` records, :func:`read_bank` reads one file, :func:`banks` lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: The repository's question folder (a source checkout: the banks are not installed with the package).
QUESTIONS = Path(__file__).resolve().parents[1] / "questions"


@dataclass(frozen=True)
class Edition:
    """The labels one edition uses around a question; the titles' order in its headings."""

    lang: str
    level: str
    source: str
    question: str
    summary: str
    followups: str
    pitfalls: str
    references: str
    practice: re.Pattern[str]
    chinese_title_first: bool


EN = Edition(
    "en",
    level="Level:",
    source="Source:",
    question="Question.",
    summary="Answer · 答案",
    followups="Follow-ups · 追问",
    pitfalls="Pitfalls · 常见误区",
    references="References · 参考文献",
    practice=re.compile(r"^\*\*Practice · 练习:\*\* `([\w.]+)` in \[[^\]]+\]\(([^)]+)\)$", re.MULTILINE),
    chinese_title_first=False,
)
ZH_EDITION = Edition(
    "zh",
    level="难度 · Level:",
    source="来源 · Source:",
    question="问题 · Question.",
    summary="答案 · Answer",
    followups="追问 · Follow-ups",
    pitfalls="常见误区 · Pitfalls",
    references="参考文献 · References",
    practice=re.compile(r"^\*\*练习 · Practice:\*\* `([\w.]+)`，见 \[[^\]]+\]\(([^)]+)\)$", re.MULTILINE),
    chinese_title_first=True,
)
HEADING = re.compile(r"^## (Q(\d\d)\.(\d\d)) · (.+?) · (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Question:
    """One question section of a bank, parsed."""

    id: str
    english_title: str
    chinese_title: str
    body: str  # everything below the heading, up to the next heading
    level: str | None
    source: str | None
    answer: str | None
    followups: list[str]
    pitfalls: list[str]
    references: list[str]
    practice: list[tuple[str, str]]


def parse(text: str, edition: Edition) -> list[Question]:
    """The questions of a bank in order."""
    headings = list(HEADING.finditer(text))
    ends = [h.start() for h in headings[1:]] + [len(text)]
    found = []
    for heading, end in zip(headings, ends, strict=True):
        body = text[heading.end() : end]
        first, second = heading.group(4), heading.group(5)
        english, chinese = (second, first) if edition.chinese_title_first else (first, second)
        answer = re.search(
            rf"<details>\n<summary>{re.escape(edition.summary)}</summary>\n(.+?)\n</details>", body, re.DOTALL
        )
        found.append(
            Question(
                id=heading.group(1),
                english_title=english,
                chinese_title=chinese,
                body=body,
                level=_field(body, edition.level),
                source=_field(body, edition.source),
                answer=answer.group(1) if answer else None,
                followups=_items(body, edition.followups),
                pitfalls=_items(body, edition.pitfalls),
                references=_items(body, edition.references),
                practice=edition.practice.findall(body),
            )
        )
    return found


def _field(body: str, label: str) -> str | None:
    match = re.search(rf"^- \*\*{re.escape(label)}\*\* (.+)$", body, re.MULTILINE)
    return match.group(1).strip() if match else None


def _items(body: str, title: str) -> list[str]:
    match = re.search(rf"^\*\*{re.escape(title)}\*\*\n((?:- .+\n?)+)", body, re.MULTILINE)
    return [line[2:] for line in match.group(1).splitlines()] if match else []


def banks(lang: str = "en", folder: Path = QUESTIONS) -> list[Path]:
    """The bank files of one edition, in chapter order."""
    return sorted((folder if lang == "en" else folder / "zh").glob("[0-9][0-9]_*.md"))


def read_bank(path: Path) -> list[Question]:
    """The questions of one bank file; its edition follows from its folder (``zh/`` is Chinese)."""
    return parse(path.read_text(encoding="utf-8"), ZH_EDITION if path.parent.name == "zh" else EN)

"""The question banks follow the format in questions/README.md, and every link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xmodal_ref.grading.registry import CHAPTERS, EXERCISES

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "questions"
BANKS = sorted(QUESTIONS.glob("[0-9][0-9]_*.md"))
HEADING = re.compile(r"^## (Q(\d\d)\.(\d\d)) · (.+?) · (.+)$", re.MULTILINE)
CJK = re.compile(r"[\u4e00-\u9fff]")
REFERENCE_ID = re.compile(r"arXiv:\d{4}\.\d{4,5}|doi:\S+|https://\S+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PRACTICE = re.compile(r"^\*\*Practice · 练习:\*\* `([\w.]+)` in \[[^\]]+\]\(([^)]+)\)$", re.MULTILINE)
COMPANIES = re.compile(
    r"阿里|百度|腾讯|字节|拼多多|美团|华为|京东|快手|Alibaba|Baidu|Tencent|ByteDance|Pinduoduo|Meituan|Huawei",
)


def questions(bank: Path) -> list[tuple[re.Match, str]]:
    text = bank.read_text(encoding="utf-8")
    headings = list(HEADING.finditer(text))
    ends = [h.start() for h in headings[1:]] + [len(text)]
    return [(h, text[h.end() : end]) for h, end in zip(headings, ends, strict=True)]


def section_items(body: str, title: str) -> list[str]:
    match = re.search(rf"^\*\*{re.escape(title)}\*\*\n((?:- .+\n?)+)", body, re.MULTILINE)
    return [line[2:] for line in match.group(1).splitlines()] if match else []


def test_there_is_a_bank_for_every_chapter_but_start() -> None:
    chapters = {bank.name.split("_", 1)[0] for bank in BANKS}
    assert chapters == {number for chapter, number in CHAPTERS.items() if chapter != "start"}


@pytest.mark.parametrize("bank", BANKS, ids=lambda p: p.name)
def test_bank_format(bank: Path) -> None:
    found = questions(bank)
    assert len(found) >= 15, f"{bank.name}: at least 15 questions"
    chapter = bank.name[:2]
    for number, (heading, body) in enumerate(found, start=1):
        qid = heading.group(1)
        assert heading.group(2) == chapter and int(heading.group(3)) == number, f"{qid}: ids must count up from 01"
        assert CJK.search(heading.group(5)), f"{qid}: the second title must be Chinese"
        assert re.search(r"^- \*\*Level:\*\* [123]$", body, re.MULTILINE), f"{qid}: level 1–3"
        assert "**Question.**" in body, f"{qid}: question text"
        answer = re.search(r"<details>\n<summary>Answer · 答案</summary>\n(.+?)\n</details>", body, re.DOTALL)
        assert answer and len(answer.group(1).split()) >= 40, f"{qid}: an answer of substance inside <details>"
        assert section_items(body, "Follow-ups · 追问"), f"{qid}: follow-ups"
        assert section_items(body, "Pitfalls · 常见误区"), f"{qid}: pitfalls"
        references = section_items(body, "References · 参考文献")
        assert references, f"{qid}: references"
        for reference in references:
            assert REFERENCE_ID.search(reference), f"{qid}: reference without arXiv id, DOI or link: {reference}"
        assert not COMPANIES.search(heading.group(0) + body), f"{qid}: no company names without a public source"


@pytest.mark.parametrize("bank", BANKS, ids=lambda p: p.name)
def test_practice_links_name_registered_exercises(bank: Path) -> None:
    for exercise_id, target in PRACTICE.findall(bank.read_text(encoding="utf-8")):
        assert exercise_id in EXERCISES, f"unknown exercise {exercise_id}"
        assert Path(target).name == EXERCISES[exercise_id].notebook, f"{exercise_id} lives in another notebook"


@pytest.mark.parametrize("document", [*QUESTIONS.glob("*.md"), ROOT / "README.md"], ids=lambda p: p.name)
def test_relative_links_resolve(document: Path) -> None:
    for target in LINK.findall(document.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (document.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{document.name}: broken link {target}"

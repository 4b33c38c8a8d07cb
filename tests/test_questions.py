"""The question banks follow the format in questions/README.md, both editions stay in sync, and every link resolves.

Every bank has an English edition (``questions/NN_chapter.md``) and a Chinese one (``questions/zh/NN_chapter.md``).
The two share ids, levels, sources, references, numbers, code and table shapes, so a figure changed in one
edition and not the other, a dropped question or reference, or a paragraph left untranslated fails here.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from xmodal_ref.banks import EN, ZH_EDITION, Edition, parse
from xmodal_ref.grading.registry import CHAPTERS, EXERCISES

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "questions"
ZH = QUESTIONS / "zh"
BANKS = sorted(QUESTIONS.glob("[0-9][0-9]_*.md"))
CJK = re.compile(r"[\u3400-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
REFERENCE_ID = re.compile(r"arXiv:\d{4}\.\d{4,5}|doi:\S+|https://[^\s)>]+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCED = re.compile(r"^(`{3,})[^\n]*\n.*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]+`")
COMPANIES = re.compile(
    r"阿里|百度|腾讯|字节|拼多多|美团|华为|京东|快手|Alibaba|Baidu|Tencent|ByteDance|Pinduoduo|Meituan|Huawei",
)
#: A Chinese paragraph must have at least this share of CJK characters among its CJK characters and Latin
#: letters (code, link targets and parenthesised English removed). The real Chinese banks clear it by a wide
#: margin and an English paragraph, Chinese terms in brackets and all, falls far below it (both proven below).
MIN_CJK_SHARE = 0.25
#: Paragraphs with fewer Latin letters than this (a formula line, a short list item) are not judged.
MIN_LATIN_TO_JUDGE = 30


# ----------------------------------------------------------------------------- what must agree


def numbers(text: str) -> Counter[str]:
    """Every number written in digits; a thousands separator (32,768) does not split a number."""
    return Counter(re.findall(r"\d+(?:\.\d+)?", re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)))


def code_blocks(text: str) -> list[str]:
    return [match.group(0) for match in FENCED.finditer(text)]


def inline_code(text: str) -> Counter[str]:
    return Counter(INLINE_CODE.findall(FENCED.sub("", text)))


def table_shapes(text: str) -> list[tuple[int, ...]]:
    """For each table, the number of cells in each of its rows."""
    tables: list[list[int]] = []
    previous_was_row = False
    for line in FENCED.sub("", text).splitlines():
        is_row = line.startswith("|")
        if is_row:
            if not previous_was_row:
                tables.append([])
            tables[-1].append(line.strip().strip("|").count("|") + 1)
        previous_was_row = is_row
    return [tuple(rows) for rows in tables]


def source_ids(text: str) -> set[str]:
    return set(REFERENCE_ID.findall(text))


def prose_blocks(body: str) -> list[str]:
    """Paragraphs and list items of a question, without code, tables, headings, references or practice."""
    references = re.search(
        r"^\*\*(?:References · 参考文献|参考文献 · References)\*\*\n(?:- .+\n?)+", body, re.MULTILINE
    )
    if references:
        body = body[: references.start()] + body[references.end() :]
    blocks = []
    for paragraph in re.split(r"\n\s*\n", FENCED.sub("", body)):
        lines = [
            line for line in paragraph.splitlines() if not line.startswith(("|", "<", "**Practice", "**练习", "- **"))
        ]
        current: list[str] = []
        for line in lines:
            if re.match(r"^\s*(?:[-*]|\d+\.) ", line) and current:
                blocks.append(" ".join(current))
                current = []
            current.append(line)
        if current:
            blocks.append(" ".join(current))
    return blocks


def cjk_share(text: str) -> tuple[float, int]:
    """(CJK characters / (CJK + Latin letters), Latin letters) after removing code, links and bracketed English."""
    text = INLINE_CODE.sub(" ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = REFERENCE_ID.sub(" ", text)
    text = re.sub(r"[(（][^()（）\u3400-\u9fff]*[)）]", " ", text)
    cjk, latin = len(CJK.findall(text)), len(LATIN.findall(text))
    return (cjk / (cjk + latin) if cjk + latin else 1.0), latin


def untranslated(body: str) -> list[str]:
    """The prose blocks of a Chinese question that are not predominantly Chinese."""
    flagged = []
    for block in prose_blocks(body):
        share, latin = cjk_share(block)
        if latin >= MIN_LATIN_TO_JUDGE and share < MIN_CJK_SHARE:
            flagged.append(block)
    return flagged


def sync_problems(english_text: str, chinese_text: str) -> list[str]:
    """Every way the Chinese edition of a bank has drifted from the English one (empty when in sync)."""
    english, chinese = parse(english_text, EN), parse(chinese_text, ZH_EDITION)
    ids_en, ids_zh = [q.id for q in english], [q.id for q in chinese]
    if ids_en != ids_zh:
        missing = sorted(set(ids_en) - set(ids_zh))
        extra = sorted(set(ids_zh) - set(ids_en))
        return [f"question ids differ: missing in Chinese {missing}, only in Chinese {extra}, or out of order"]
    problems = []
    for en, zh in zip(english, chinese, strict=True):
        checks = [
            ("titles", (en.english_title, en.chinese_title), (zh.english_title, zh.chinese_title)),
            ("level", en.level, zh.level),
            ("source line", en.source, zh.source),
            ("references", en.references, zh.references),
            ("arXiv ids, DOIs and links", source_ids(en.body), source_ids(zh.body)),
            ("numbers", numbers(en.body), numbers(zh.body)),
            ("code blocks", code_blocks(en.body), code_blocks(zh.body)),
            ("inline code", inline_code(en.body), inline_code(zh.body)),
            ("table shapes", table_shapes(en.body), table_shapes(zh.body)),
            ("number of follow-ups", len(en.followups), len(zh.followups)),
            ("number of pitfalls", len(en.pitfalls), len(zh.pitfalls)),
            ("practice exercises", [p[0] for p in en.practice], [p[0] for p in zh.practice]),
        ]
        for what, a, b in checks:
            if a != b:
                problems.append(f"{en.id}: {what} differ: {_difference(a, b)}")
        problems += [f"{zh.id}: not translated: {block[:100]}…" for block in untranslated(zh.body)]
    return problems


def _difference(english: object, chinese: object) -> str:
    if isinstance(english, Counter) and isinstance(chinese, Counter):
        return f"only in English {dict(english - chinese)}, only in Chinese {dict(chinese - english)}"
    if isinstance(english, set) and isinstance(chinese, set):
        return f"only in English {sorted(english - chinese)}, only in Chinese {sorted(chinese - english)}"
    return f"English {english!r}, Chinese {chinese!r}"[:400]


# ----------------------------------------------------------------------------- the tests


def answer_size(answer: str, edition: Edition) -> int:
    """Words in an English answer; in a Chinese one, CJK characters / 2 (about two per word)."""
    return len(answer.split()) if edition is EN else len(CJK.findall(answer)) // 2


def chinese_edition(bank: Path) -> Path:
    return ZH / bank.name


def test_there_is_a_bank_for_every_chapter_but_start() -> None:
    chapters = {bank.name.split("_", 1)[0] for bank in BANKS}
    assert chapters == {number for chapter, number in CHAPTERS.items() if chapter != "start"}


@pytest.mark.parametrize("bank", BANKS, ids=lambda p: p.name)
def test_every_bank_has_a_chinese_edition_linked_both_ways(bank: Path) -> None:
    zh = chinese_edition(bank)
    assert zh.exists(), f"{bank.name}: write questions/zh/{bank.name} in the same change"
    head_en = bank.read_text(encoding="utf-8").split("\n## ", 1)[0]
    head_zh = zh.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert f"](zh/{bank.name})" in head_en, f"{bank.name}: link the Chinese edition at the top"
    assert f"](../{bank.name})" in head_zh, f"zh/{bank.name}: link the English edition at the top"


@pytest.mark.parametrize(
    ("bank", "edition"),
    [(bank, EN) for bank in BANKS] + [(chinese_edition(bank), ZH_EDITION) for bank in BANKS],
    ids=lambda value: f"{value.parent.name}/{value.name}" if isinstance(value, Path) else value.lang,
)
def test_bank_format(bank: Path, edition: Edition) -> None:
    if not bank.exists():
        pytest.fail(f"missing {bank.relative_to(ROOT)}", pytrace=False)
    text = bank.read_text(encoding="utf-8")
    found = parse(text, edition)
    assert len(found) >= 15, f"{bank.name}: at least 15 questions"
    chapter = bank.name[:2]
    for number, question in enumerate(found, start=1):
        qid = question.id
        assert qid == f"Q{chapter}.{number:02d}", f"{qid}: ids must count up from 01"
        assert CJK.search(question.chinese_title), f"{qid}: the Chinese title must be Chinese"
        assert question.level in {"1", "2", "3"}, f"{qid}: level 1–3"
        assert f"**{edition.question}**" in question.body, f"{qid}: question text"
        assert question.answer and answer_size(question.answer, edition) >= 40, (
            f"{qid}: an answer of substance inside <details>"
        )
        assert question.followups, f"{qid}: follow-ups"
        assert question.pitfalls, f"{qid}: pitfalls"
        pitfalls_at = question.body.index(f"**{edition.pitfalls}**")
        assert question.body.index("<details>") < pitfalls_at < question.body.index("</details>"), (
            f"{qid}: put the pitfalls inside <details>: they name the slips the question probes"
        )
        assert question.references, f"{qid}: references"
        for reference in question.references:
            assert REFERENCE_ID.search(reference), f"{qid}: reference without arXiv id, DOI or link: {reference}"
        assert not COMPANIES.search(question.chinese_title + question.english_title + question.body), (
            f"{qid}: no company names without a public source"
        )
        for exercise_id, target in question.practice:
            assert exercise_id in EXERCISES, f"{qid}: unknown exercise {exercise_id}"
            assert Path(target).name == EXERCISES[exercise_id].notebook, f"{exercise_id} lives in another notebook"


@pytest.mark.parametrize("bank", BANKS, ids=lambda p: p.name)
def test_chinese_edition_is_in_sync(bank: Path) -> None:
    zh = chinese_edition(bank)
    if not zh.exists():
        pytest.fail(f"missing questions/zh/{bank.name}", pytrace=False)
    problems = sync_problems(bank.read_text(encoding="utf-8"), zh.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "document",
    [*QUESTIONS.glob("*.md"), *ZH.glob("*.md"), ROOT / "README.md"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_relative_links_resolve(document: Path) -> None:
    text = INLINE_CODE.sub("", FENCED.sub("", document.read_text(encoding="utf-8")))  # code shows links, has none
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (document.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{document.relative_to(ROOT)}: broken link {target}"


# ----------------------------------------------------------------------------- the sync test catches drift


def _real_pair() -> tuple[str, str]:
    bank = QUESTIONS / "03_contrastive.md"
    return bank.read_text(encoding="utf-8"), chinese_edition(bank).read_text(encoding="utf-8")


def _section(text: str, qid: str) -> tuple[int, int]:
    """Start and end offsets of question ``qid``'s section (heading included)."""
    start = text.index(f"## {qid} · ")
    following = text.find("\n## Q", start + 1)
    return start, len(text) if following < 0 else following + 1


def _edit_section(text: str, qid: str, old: str, new: str) -> str:
    start, end = _section(text, qid)
    section = text[start:end]
    assert old in section, f"{qid} no longer contains {old!r}: pick another edit"
    return text[:start] + section.replace(old, new, 1) + text[end:]


def test_sync_passes_on_the_real_banks() -> None:
    assert sync_problems(*_real_pair()) == []


def test_sync_fails_on_a_changed_number() -> None:
    english, chinese = _real_pair()
    drifted = _edit_section(chinese, "Q03.02", "N = 256", "N = 512")
    assert any(p.startswith("Q03.02: numbers differ") for p in sync_problems(english, drifted))


def test_sync_fails_on_a_missing_question() -> None:
    english, chinese = _real_pair()
    start, end = _section(chinese, "Q03.05")
    problems = sync_problems(english, chinese[:start] + chinese[end:])
    assert problems and "missing in Chinese ['Q03.05']" in problems[0]


def test_sync_fails_on_a_dropped_reference() -> None:
    english, chinese = _real_pair()
    reference = next(q for q in parse(chinese, ZH_EDITION) if q.id == "Q03.02").references[1]
    drifted = _edit_section(chinese, "Q03.02", f"- {reference}\n", "")
    problems = sync_problems(english, drifted)
    assert any(p.startswith("Q03.02: references differ") for p in problems)
    assert any(p.startswith("Q03.02: arXiv ids, DOIs and links differ") for p in problems)


def test_sync_fails_on_an_untranslated_paragraph() -> None:
    english, chinese = _real_pair()
    english_answer = next(q for q in parse(english, EN) if q.id == "Q03.02").answer
    chinese_answer = next(q for q in parse(chinese, ZH_EDITION) if q.id == "Q03.02").answer
    english_paragraph = english_answer.strip().split("\n\n")[0]
    chinese_paragraph = chinese_answer.strip().split("\n\n")[0]
    drifted = _edit_section(chinese, "Q03.02", chinese_paragraph, english_paragraph)
    assert any(p.startswith("Q03.02: not translated") for p in sync_problems(english, drifted))


def test_the_chinese_share_threshold_separates_the_real_editions() -> None:
    """Every judged paragraph of the Chinese banks clears the threshold; every judged English paragraph that
    does not quote Chinese (fewer than 10 CJK characters) falls below it."""
    for bank in BANKS:
        for edition, path in ((EN, bank), (ZH_EDITION, chinese_edition(bank))):
            for question in parse(path.read_text(encoding="utf-8"), edition):
                for block in prose_blocks(question.body):
                    share, latin = cjk_share(block)
                    if latin < MIN_LATIN_TO_JUDGE:
                        continue
                    if edition is ZH_EDITION:
                        assert share >= MIN_CJK_SHARE, (question.id, block)
                    elif len(CJK.findall(block)) < 10:
                        assert share < MIN_CJK_SHARE, (question.id, block)

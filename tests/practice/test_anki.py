"""`export_deck` writes an .apkg that Anki imports as one note per question and language, and updates on re-import.

The deck is opened as what it is: a zip holding ``collection.anki2``, an SQLite collection.
"""

from __future__ import annotations

import json
import re
import sqlite3
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import genanki
import pytest
from markdown_it.common.utils import escapeHtml

from xmodal_ref.practice.anki import FIELDS, LANGS, deck_name, export_deck, render
from xmodal_ref.practice.cards import Card, load_cards

pytestmark = pytest.mark.maintainer

TABLE_RULE = re.compile(r"^\|(?: *:?-+:? *\|)+$", re.MULTILINE)
FENCE = re.compile(r"^```\w*\n(.+?)\n```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Collection:
    """What an exported deck holds: notes by GUID (fields by name, tags), deck names by id, each note's decks."""

    count: int
    notes: dict[str, tuple[dict[str, str], frozenset[str]]]
    decks: dict[int, str]
    note_decks: dict[str, set[str]]


def read_apkg(path: Path, scratch: Path) -> Collection:
    with zipfile.ZipFile(path) as archive:
        assert "collection.anki2" in archive.namelist()
        database = Path(archive.extract("collection.anki2", scratch))
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute("SELECT guid, flds, tags FROM notes").fetchall()
        (decks_json,) = connection.execute("SELECT decks FROM col").fetchone()
        card_decks = connection.execute("SELECT notes.guid, cards.did FROM cards JOIN notes ON cards.nid = notes.id")
        decks = {int(deck_id): deck["name"] for deck_id, deck in json.loads(decks_json).items()}
        note_decks: dict[str, set[str]] = {}
        for guid, deck_id in card_decks:
            note_decks.setdefault(guid, set()).add(decks[deck_id])
    finally:
        connection.close()
    notes = {
        guid: (dict(zip(FIELDS, fields.split("\x1f"), strict=True)), frozenset(tags.split()))
        for guid, fields, tags in rows
    }
    return Collection(len(rows), notes, decks, note_decks)


@pytest.fixture(scope="module")
def cards() -> list[Card]:
    return [card for lang in LANGS for card in load_cards(lang)]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Collection, Collection]:
    """Two exports of the whole deck, written with genanki's HTML warnings turned into errors."""
    folder = tmp_path_factory.mktemp("anki")
    collections = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = [export_deck(folder / f"{name}.apkg") for name in ("first", "second")]
    for name in ("first", "second"):
        collections.append(read_apkg(folder / f"{name}.apkg", folder / name))
    assert counts[0] == counts[1]
    return counts[0], collections[0], collections[1]


def note_of(collection: Collection, card: Card) -> dict[str, str]:
    return collection.notes[genanki.guid_for(card.id, card.lang)][0]


def test_one_note_per_question_and_language(exports, cards) -> None:
    count, first, _ = exports
    assert count == first.count == len(cards) == len({card.key for card in cards})
    assert {card.lang for card in cards} == set(LANGS), "both editions are exported"


def test_every_guid_derives_from_the_question_id_and_language(exports, cards) -> None:
    _, first, _ = exports
    assert set(first.notes) == {genanki.guid_for(card.id, card.lang) for card in cards}
    for guid, (fields, _) in first.notes.items():
        question_id, lang = fields["Key"].split("/")
        assert guid == genanki.guid_for(question_id, lang)


def test_two_exports_give_the_same_notes(exports) -> None:
    _, first, second = exports
    assert first.notes == second.notes, "same GUIDs, fields and tags"
    assert first.decks == second.decks, "same deck ids and names"
    assert first.note_decks == second.note_decks


def test_tags_name_chapter_level_source_and_language(exports, cards) -> None:
    _, first, _ = exports
    card = next(card for card in cards if card.source == "article" and card.lang == "zh")
    _, tags = first.notes[genanki.guid_for(card.id, card.lang)]
    assert tags == {
        f"xmodal::{card.chapter}_{card.chapter_name}",
        f"level::{card.level}",
        "source::article",
        "lang::zh",
    }
    without_source = next(card for card in cards if card.source is None)
    assert not any(tag.startswith("source::") for tag in first.notes[genanki.guid_for(without_source.id, "en")][1])


def test_each_note_sits_in_its_chapter_and_language_subdeck(exports, cards) -> None:
    _, first, _ = exports
    subdecks = {f"xmodal::{card.lang}::{card.chapter} {card.chapter_name}" for card in cards}
    assert len(subdecks) == len({(card.lang, card.chapter) for card in cards})
    assert set(first.decks.values()) == subdecks | {"Default"}
    for card in cards:
        assert first.note_decks[genanki.guid_for(card.id, card.lang)] == {deck_name(card)}


def test_front_and_back_fields(exports, cards) -> None:
    _, first, _ = exports
    card = next(card for card in cards if card.exercise and card.followups and card.lang == "en")
    fields = note_of(first, card)
    assert fields["Key"] == card.key
    assert fields["Title"] == card.title and fields["OtherTitle"] == card.other_title
    assert fields["Level"] == str(card.level)
    assert fields["Exercise"] == card.exercise
    assert fields["GradeCommand"] == card.grade_command
    assert fields["Followups"].count("<li>") == len(card.followups)
    assert fields["Question"].startswith("<p>")
    without_exercise = next(card for card in cards if card.exercise is None)
    assert note_of(first, without_exercise)["Exercise"] == note_of(first, without_exercise)["GradeCommand"] == ""


def test_a_table_and_a_code_block_survive_into_the_html(exports, cards) -> None:
    _, first, _ = exports
    tabled = next(card for card in cards if TABLE_RULE.search(card.answer))
    answer = note_of(first, tabled)["Answer"]
    header = next(line for line in tabled.answer.splitlines() if line.startswith("|"))
    assert "<table>" in answer
    assert answer.count("<th>") >= header.count("|") - 1
    coded = next(card for card in cards if FENCE.search(card.answer))
    code = FENCE.search(coded.answer).group(1)
    first_line = next(line for line in code.splitlines() if line.strip())
    answer = note_of(first, coded)["Answer"]
    assert "<pre><code" in answer
    assert escapeHtml(first_line) in answer.split("<pre><code", 1)[1]


def test_unicode_formulas_and_angle_brackets_are_kept_as_text(exports, cards) -> None:
    _, first, _ = exports
    formula = next(card for card in cards if "√" in card.answer)
    assert "√" in note_of(first, formula)["Answer"]
    placeholder = next(card for card in cards if "`<image>`" in card.answer)
    assert "<code>&lt;image&gt;</code>" in note_of(first, placeholder)["Answer"]
    bare = next(card for card in cards if re.search(r"[^`]<object>", card.answer))  # a POPE prompt, not code
    assert "a &lt;object&gt; in the image" in note_of(first, bare)["Answer"], "raw HTML is shown, not interpreted"
    for fields, _ in first.notes.values():
        assert "details>" not in fields["Answer"], "the answer's <details> wrapper is not part of the field"


def test_math_becomes_mathjax_outside_code() -> None:
    markdown = (
        "Energy $E = mc^2$, $a\\$b$, a sum $$\\sum_i x_i * y_i$$ and $a<b$; `cost $5` and $x_1 * y_1$ stay apart.\n"
        "Text: $5 and $10, US$5 to US$7, a $ b$ c, from $a to b $ on, and \\$ alone.\n"
        "Also text: $5 for `x$`.\n\n"
        "```sh\necho $HOME $x$\n```\n\n"
        "$$\nA = \\\\ B\n$$\n"
    )
    html = render(markdown)
    assert r"\(E = mc^2\)" in html
    assert r"\[\sum_i x_i * y_i\]" in html, "no emphasis inside math"
    assert r"\(a&lt;b\)" in html
    assert r"\(x_1 * y_1\)" in html
    assert r"\(a\$b\)" in html, "an escaped dollar does not close the math"
    assert "<code>cost $5</code>" in html, "a $ in a code span stays"
    assert "Text: $5 and $10, US$5 to US$7, a $ b$ c, from $a to b $ on, and $ alone." in html, "as in Pandoc"
    assert "Also text: $5 for <code>x$</code>." in html, "inline math never spans code"
    assert '<pre><code class="language-sh">echo $HOME $x$\n</code></pre>' in html, "a $ in a code block stays"
    assert "\\[\nA = \\\\ B\n\\]" in html, "display math keeps its backslashes"


@pytest.mark.parametrize(
    ("name", "message"),
    [("deck.txt", "does not end in .apkg"), ("missing/deck.apkg", "cannot write"), ("folder.apkg", "cannot write")],
)
def test_a_bad_path_is_a_one_line_error(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "folder.apkg").mkdir()
    with pytest.raises(ValueError, match=message) as raised:
        export_deck(tmp_path / name, langs=("en",))
    assert "\n" not in str(raised.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder.apkg"], "nothing is left behind"


def test_unknown_language_and_empty_banks_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown language fr"):
        export_deck(tmp_path / "deck.apkg", langs=("fr",))
    with pytest.raises(ValueError, match="no questions found"):
        export_deck(tmp_path / "deck.apkg", folder=tmp_path)
    assert not (tmp_path / "deck.apkg").exists()

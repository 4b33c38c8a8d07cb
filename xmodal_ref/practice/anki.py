"""Export the banks as one Anki deck (``.apkg``): one note per question and language.

    python -m xmodal_ref.practice export-anki xmodal.apkg

Layout of the deck:

* **Subdecks** per language and chapter: ``xmodal::en::03 contrastive``, ``xmodal::zh::03 contrastive``
  (Anki creates the parents ``xmodal`` and ``xmodal::en`` on import), so a learner can study one edition
  or one chapter.
* **Tags**: the chapter (``xmodal::03_contrastive``), the level (``level::2``), the source when the bank names
  one (``source::article``) and the language (``lang::en``).
* **One note type** ("xmodal question"). Front: chapter, key (``Q03.01/en``, the practice mode's card key),
  level, the title in the card's language and the other one, the question. Back: the answer with its pitfalls,
  the follow-ups, and the graded exercise with the command that grades it when the question has one.
* **Stable identities**: the note type's and the decks' ids derive from fixed strings, and a note's GUID is
  ``genanki.guid_for(question_id, lang)``, so importing a newer export updates the notes already in the
  collection (and keeps their review history) instead of adding duplicates.

Markdown becomes HTML with markdown-it-py (CommonMark with tables and strikethrough; fenced code stays
``<pre><code>``). Raw HTML in the banks is shown as text, not interpreted: the banks write placeholders such as
``<image>`` and ``<object>`` that Anki would otherwise swallow as tags. Math written ``$…$`` or ``$$…$$``
outside code becomes ``\\(…\\)`` or ``\\[…\\]``, which Anki's MathJax renders; as in Pandoc, an inline ``$…$``
must not start or end with a space, must not be followed by a digit and must not contain a backtick, so
prices ("$5 and $10") stay text. Unicode formulas (``QKᵀ/√d_k``) are kept as they are.

Everything in the file is a function of the banks, except what genanki derives from the export time (note and
card ids, modification times; Anki updates a note on import only when the incoming one is newer).
"""

from __future__ import annotations

import hashlib
import html
import itertools
import os
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import genanki
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token

from ..banks import QUESTIONS
from .cards import Card, load_cards

LANGS = ("en", "zh")
DECK_ROOT = "xmodal"
#: Anki's MathJax delimiters for the two kinds of math token.
MATH_DELIMITERS = {"math_inline": ("\\(", "\\)"), "math_display": ("\\[", "\\]")}

FIELDS = (
    "Key",
    "Chapter",
    "Level",
    "Source",
    "Title",
    "OtherTitle",
    "Question",
    "Answer",
    "Followups",
    "Exercise",
    "GradeCommand",
)
FRONT = """\
<div class="meta">{{Chapter}} · {{Key}} · level {{Level}}{{#Source}} · {{Source}}{{/Source}}</div>
<h2 class="title">{{Title}}</h2>
<div class="other-title">{{OtherTitle}}</div>
<div class="question">{{Question}}</div>"""
BACK = """\
{{FrontSide}}
<hr id="answer">
<div class="answer">{{Answer}}</div>
{{#Followups}}<h3>Follow-ups · 追问</h3><div class="followups">{{Followups}}</div>{{/Followups}}
{{#Exercise}}<div class="exercise">Graded exercise · 练习 <code>{{Exercise}}</code>:
<pre><code>{{GradeCommand}}</code></pre></div>{{/Exercise}}"""
CSS = """\
.card { font-family: system-ui, sans-serif; font-size: 17px; text-align: left; max-width: 52em; margin: auto; }
.meta { color: #888; font-size: 13px; }
.other-title { color: #888; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #aaa; padding: 0.2em 0.5em; vertical-align: top; }
pre { overflow-x: auto; padding: 0.5em; background: rgba(127, 127, 127, 0.12); }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
.exercise { margin-top: 1em; }"""


def export_deck(path: Path, langs: Sequence[str] = LANGS, folder: Path = QUESTIONS) -> int:
    """Write the deck of ``langs`` to ``path`` (a new or replaced ``.apkg``); return the number of notes.

    Raises ValueError with a one-line message for a path that does not end in ``.apkg``, an unknown language,
    banks without questions, or a path that cannot be written. The file is replaced atomically: a failed export
    leaves whatever was there before.
    """
    path = Path(path)
    if path.suffix != ".apkg":
        raise ValueError(f"{path} does not end in .apkg (Anki imports decks by that suffix)")
    unknown = [lang for lang in langs if lang not in LANGS]
    if unknown:
        raise ValueError(f"unknown language {', '.join(unknown)}; choose from {', '.join(LANGS)}")
    decks: dict[str, genanki.Deck] = {}
    count = 0
    for lang in dict.fromkeys(langs):
        for card in load_cards(lang, folder=folder):
            name = deck_name(card)
            if name not in decks:
                decks[name] = genanki.Deck(stable_id(f"deck {name}"), name)
            decks[name].add_note(_note(card))
            count += 1
    if not count:
        raise ValueError(f"no questions found in {folder}")
    _write(genanki.Package(list(decks.values())), path)
    return count


def deck_name(card: Card) -> str:
    """The subdeck of a card: ``xmodal::en::03 contrastive``."""
    return f"{DECK_ROOT}::{card.lang}::{card.chapter} {card.chapter_name}"


def tags(card: Card) -> list[str]:
    """A card's tags: chapter, level, source (when the bank names one) and language."""
    found = [f"{DECK_ROOT}::{card.chapter}_{card.chapter_name}", f"level::{card.level}"]
    if card.source:
        found.append(f"source::{card.source.replace(' ', '_')}")
    return [*found, f"lang::{card.lang}"]


def stable_id(name: str) -> int:
    """A deterministic Anki id for a note type or deck, in the range genanki recommends ([2**30, 2**31))."""
    digest = int.from_bytes(hashlib.sha256(f"xmodal_ref.practice.anki {name}".encode()).digest()[:8], "big")
    return (1 << 30) + digest % (1 << 30)


@cache
def model() -> genanki.Model:
    """The one note type of the deck."""
    return genanki.Model(
        stable_id("model xmodal question"),
        "xmodal question",
        fields=[{"name": name} for name in FIELDS],
        templates=[{"name": "Question → answer", "qfmt": FRONT, "afmt": BACK}],
        css=CSS,
    )


def _note(card: Card) -> genanki.Note:
    followups = "\n".join(f"- {item}" for item in card.followups)
    values = {
        "Key": html.escape(card.key),
        "Chapter": html.escape(f"{card.chapter} {card.chapter_name}"),
        "Level": str(card.level),
        "Source": html.escape(card.source or ""),
        "Title": render_inline(card.title),
        "OtherTitle": render_inline(card.other_title),
        "Question": render(card.question),
        "Answer": render(card.answer),
        "Followups": render(followups) if followups else "",
        "Exercise": html.escape(card.exercise or ""),
        "GradeCommand": html.escape(card.grade_command or ""),
    }
    return genanki.Note(
        model=model(),
        fields=[values[name] for name in FIELDS],
        tags=tags(card),
        guid=genanki.guid_for(card.id, card.lang),
    )


def _write(package: genanki.Package, path: Path) -> None:
    """genanki's ``write_to_file`` without its leaked temporary file, replacing ``path`` atomically."""
    try:
        with tempfile.TemporaryDirectory() as scratch:
            collection = Path(scratch) / "collection.anki2"
            connection = sqlite3.connect(collection)
            try:
                now = time.time()
                package.write_to_db(connection.cursor(), now, itertools.count(int(now * 1000)))
                connection.commit()
            finally:
                connection.close()
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # same folder: os.replace is atomic
            try:
                with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
                    archive.write(collection, "collection.anki2")
                    archive.writestr("media", "{}")  # no media files
                os.replace(partial, path)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror or err}") from None


# Markdown → HTML ---------------------------------------------------------------------------------------------


def render(markdown: str) -> str:
    """Bank Markdown as the HTML of an Anki field (tables, ``<pre><code>``, MathJax delimiters)."""
    return _markdown().render(markdown).strip()


def render_inline(markdown: str) -> str:
    """One line of Markdown (a title) as HTML without the surrounding paragraph."""
    return _markdown().renderInline(markdown).strip()


@cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    md.inline.ruler.before("escape", "math", _math)
    for kind in MATH_DELIMITERS:
        md.add_render_rule(kind, _render_math)
    return md


def _render_math(renderer: object, tokens: list[Token], idx: int, options: object, env: object) -> str:
    opening, closing = MATH_DELIMITERS[tokens[idx].type]
    return f"{opening}{html.escape(tokens[idx].content)}{closing}"


def _math(state: StateInline, silent: bool) -> bool:
    """Inline rule: ``$$…$$`` (display) or ``$…$`` (inline, Pandoc's rules), never inside code spans."""
    src, start = state.src, state.pos
    if src[start] != "$":
        return False
    if src.startswith("$$", start):
        end = src.find("$$", start + 2, state.posMax)
        if end <= start + 2:
            return False
        kind, content, stop = "math_display", src[start + 2 : end], end + 2
    else:
        end = _inline_math_end(src, start, state.posMax)
        if end is None:
            return False
        kind, content, stop = "math_inline", src[start + 1 : end], end + 1
    if not silent:
        state.push(kind, "", 0).content = content
    state.pos = stop
    return True


def _inline_math_end(src: str, start: int, limit: int) -> int | None:
    """The closing ``$`` of inline math opened at ``start``, or None when the ``$`` is plain text."""
    if start + 1 >= limit or src[start + 1].isspace():
        return None
    end = start + 1
    while True:
        end = src.find("$", end, limit)
        if end == -1 or "`" in src[start:end]:
            return None
        if src[end - 1] == "\\":
            end += 1
            continue
        if src[end - 1].isspace() or (end + 1 < limit and src[end + 1].isdigit()):
            return None
        return end

"""Review the question banks with spaced repetition (FSRS) in the terminal, or export them as an Anki deck.

    python -m xmodal_ref.practice [review] [--lang en|zh] [--chapter NN ...] [--level N] [--new N]
    python -m xmodal_ref.practice stats [--lang en|zh] [--chapter NN ...] [--level N]
    python -m xmodal_ref.practice due [--lang en|zh] [--chapter NN ...] [--level N]
    python -m xmodal_ref.practice export-anki PATH.apkg [--lang en|zh|both]

Progress is kept in practice.sqlite3 in the user's data directory, or in the file named by XMODAL_PRACTICE_DB.
Exit code 0, 2 for unusable input or an unusable progress file, 130 when stopped with Ctrl-C (every rating
given until then is saved).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from rich.console import Console

from .cards import Card, load_cards
from .schedule import Clock, Done, Session, Wait, chapter_stats, due_today, utc_now
from .store import ProgressFileError, Store
from .terminal import Screen, due_table, open_keys, stats_table

COMMANDS = ("review", "stats", "due", "export-anki")


class UnusableInput(Exception):
    """A one-line reason the command cannot run (exit code 2)."""


def main(argv: list[str] | None = None, now: Clock = utc_now) -> int:
    """Run one command; ``now`` is the clock (tests pass a fake one)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["review", *argv]
    args = _parser().parse_args(argv)
    try:
        if args.command == "export-anki":
            return _export(args.path, args.lang)
        cards = _cards(args)
        if args.command == "review":
            return _review(cards, args.new, now)
        with Store.open() as store:
            console = Console(highlight=False)
            if args.command == "stats":
                console.print(stats_table(chapter_stats(cards, store, now()), args.lang))
            else:
                console.print(due_table(due_today(cards, store, now())))
        return 0
    except (UnusableInput, ProgressFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except sqlite3.Error as err:
        print(f"error: the progress file cannot be written: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _stopped(0)


def _review(cards: list[Card], new_per_day: int, now: Clock) -> int:
    """Show due and new cards until none is left for now or the learner quits; every rating is committed."""
    session = None
    try:
        with Store.open() as store, open_keys(sys.stdin) as keys:
            session = Session(cards, store, new_per_day=new_per_day, now=now)
            screen = Screen(keys)
            while True:
                step = session.next()
                if isinstance(step, Done):
                    screen.done(step, new_per_day)
                    break
                if isinstance(step, Wait):
                    if not screen.wait(step.until, session.now):
                        break
                    continue
                if not screen.question(step) or (rating := screen.answer(step)) is None:
                    break
                session.rate(step, rating)
            screen.message(_saved(session.ratings))
    except KeyboardInterrupt:
        return _stopped(session.ratings if session else 0)
    return 0


def _stopped(ratings: int) -> int:
    print(f"\nstopped: {_saved(ratings)}", file=sys.stderr)
    return 130


def _saved(ratings: int) -> str:
    return f"{ratings} rating{'' if ratings == 1 else 's'} saved"


def _cards(args: argparse.Namespace) -> list[Card]:
    cards = load_cards(args.lang, args.chapter, args.level)
    if not cards:
        level = [] if args.level is None else [f"--level {args.level}"]
        wanted = " ".join([*(f"--chapter {chapter}" for chapter in args.chapter), *level])
        raise UnusableInput(f"no question in the {args.lang} banks matches {wanted}")
    return cards


def _export(path: Path, lang: str) -> int:
    from .anki import export_deck  # genanki is only needed here

    try:
        count = export_deck(path, ("en", "zh") if lang == "both" else (lang,))
    except ValueError as err:  # a bad suffix or an unwritable path, in one line
        raise UnusableInput(str(err)) from None
    print(f"wrote {count} notes to {path}")
    return 0


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of cards, 0 or more, not {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xmodal_ref.practice",
        description=__doc__.split("\n\n")[0],
        epilog="Without a command, review.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--lang", choices=("en", "zh"), default="en", help="edition of the banks (default en)")
    selection.add_argument(
        "--chapter", action="append", default=[], metavar="NN", help="only this chapter, e.g. 03 (repeatable)"
    )
    selection.add_argument("--level", type=int, metavar="N", help="only questions of this level")
    review = commands.add_parser("review", parents=[selection], help="review due and new cards (the default)")
    review.add_argument(
        "--new", type=_non_negative, default=10, metavar="N", help="new cards per day, across sessions (default 10)"
    )
    commands.add_parser("stats", parents=[selection], help="cards, seen, due today and retention per chapter")
    commands.add_parser("due", parents=[selection], help="the cards due today and when")
    export = commands.add_parser("export-anki", help="write an Anki deck (.apkg) of the banks")
    export.add_argument("path", type=Path, metavar="PATH.apkg")
    export.add_argument("--lang", choices=("en", "zh", "both"), default="both", help="default both")
    return parser


if __name__ == "__main__":
    sys.exit(main())

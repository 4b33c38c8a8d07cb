"""Practice mode: spaced-repetition review of the question banks in the terminal, and an Anki deck export.

Run it with ``python -m xmodal_ref.practice`` (see :mod:`xmodal_ref.practice.__main__`). Modules:

* :mod:`.cards`: one review card per question and language, keyed ``Q03.01/en``, built from the banks.
* :mod:`.store`: the progress file (SQLite): each card's FSRS state, its introduction date and a log of ratings.
* :mod:`.schedule`: which card comes next given a clock, with the ``fsrs`` scheduler; per-chapter stats.
* :mod:`.terminal`: the review screen (``rich`` Markdown) and single-key input.
* :mod:`.anki`: the ``genanki`` deck export.
"""

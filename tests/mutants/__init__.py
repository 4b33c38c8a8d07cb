"""Learner-style solutions that the grader must reject (mutants) or accept (other styles).

Each chapter module defines ``MUTANTS: dict[id, list[(solution, words the verdict must contain)]]``
and ``CORRECT: dict[id, list[solution]]``. They are written the way a learner would write them,
independently of the checks' own models of known mistakes.
"""

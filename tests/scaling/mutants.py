"""Mutants and other-style correct solutions for chapter 10, gathered from the three topical files
(``mutants_distributed``, ``mutants_memory``, ``mutants_precision``) for ``tests/test_mutants.py``."""

from . import mutants_distributed, mutants_memory, mutants_precision

_PARTS = (mutants_distributed, mutants_memory, mutants_precision)
MUTANTS = {exercise_id: pairs for part in _PARTS for exercise_id, pairs in part.MUTANTS.items()}
CORRECT = {exercise_id: solutions for part in _PARTS for exercise_id, solutions in part.CORRECT.items()}

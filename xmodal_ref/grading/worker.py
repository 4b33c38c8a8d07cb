"""Preloaded by the grading server, so each forked exercise process starts with torch,
every reference and every check already imported."""

import torch  # noqa: F401

from .registry import EXERCISES

for _exercise in EXERCISES.values():
    _exercise.reference()
    _exercise.check()

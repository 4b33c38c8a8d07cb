"""Checks for chapter 00 · start."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..grading.harness import Case, Mistake, check_cases, check_gradients
from ..grading.inputs import random_rows


def check_cosine_similarity_matrix(learner, reference) -> None:
    with_zero_row = random_rows(4, 5, seed=3)
    with_zero_row[2] = 0.0
    cases = [
        Case("4 rows against 6 rows", (random_rows(4, 8, seed=0), random_rows(6, 8, seed=1))),
        Case("a single pair", (random_rows(1, 3, seed=2), random_rows(1, 3, seed=5))),
        Case("row 2 of `a` is all zeros: its similarities are 0", (with_zero_row, random_rows(3, 5, seed=4))),
        Case(
            "float64 inputs, 7 rows against 2",
            (random_rows(7, 16, seed=6, dtype=torch.float64), random_rows(2, 16, seed=7, dtype=torch.float64)),
        ),
    ]
    mistakes = [
        Mistake("raw dot products: the rows are not L2-normalised", lambda a, b: a @ b.T),
        Mistake("only `a` is normalised", lambda a, b: F.normalize(a, dim=-1) @ b.T),
        Mistake("only `b` is normalised", lambda a, b: a @ F.normalize(b, dim=-1).T),
        Mistake(
            "normalised along dim 0 (columns) instead of each row",
            lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T,
        ),
    ]
    check_cases(
        learner,
        reference,
        cases,
        mistakes=mistakes,
        unstable_hint="dividing by a zero norm: clamp each norm from below by eps (F.normalize does)",
    )
    check_gradients(learner, reference, cases[0], wrt=["a", "b"])

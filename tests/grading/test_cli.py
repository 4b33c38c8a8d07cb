"""`python -m xmodal_ref.grade` as a learner uses it: verdicts, exit codes, isolation, read-only."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from xmodal_ref.grading.authoring import ROOT, exercise_of_cell, solution_source
from xmodal_ref.grading.registry import EXERCISES

CLIP_ONE_DIRECTION = """
def clip_loss(image_features, text_features, logit_scale):
    logits = logit_scale * image_features @ text_features.T
    return F.cross_entropy(logits, torch.arange(len(logits)))
"""


def grade(*args: str, time_limit: float = 20) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "xmodal_ref.grade", *args, "--time-limit", str(time_limit)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


def notebook_with(tmp_path: Path, replacements: dict[str, str], extra_cells: list[str] = ()) -> Path:
    """The contrastive starter with some exercise cells replaced (by exercise id) and cells appended."""
    notebook = nbformat.read(ROOT / "notebooks" / "03_contrastive.ipynb", as_version=4)
    for cell in notebook.cells:
        exercise = exercise_of_cell(cell)
        if exercise is not None and exercise.id in replacements:
            cell.source = replacements[exercise.id]
    for source in extra_cells:
        notebook.cells.append(nbformat.v4.new_code_cell(source))
    path = tmp_path / "03_contrastive.ipynb"
    nbformat.write(notebook, path)
    return path


def test_starter_is_all_not_attempted() -> None:
    result = grade("notebooks/03_contrastive.ipynb")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("not attempted") == 6 + 1  # six verdicts and the summary line
    assert "0 passed, 0 failed, 6 not attempted" in result.stdout


def test_a_wrong_solution_fails_with_a_diagnosis_and_the_rest_is_graded(tmp_path: Path) -> None:
    path = notebook_with(tmp_path, {"contrastive.clip_loss": CLIP_ONE_DIRECTION})
    result = grade(str(path))
    assert result.returncode == 1
    assert "[FAIL] contrastive.clip_loss" in result.stdout
    assert "only the image→text direction" in result.stdout
    assert "0 passed, 1 failed, 5 not attempted" in result.stdout


def test_right_solutions_pass_and_only_selects(tmp_path: Path) -> None:
    ids = ["contrastive.siglip_loss", "contrastive.modality_gap"]
    path = notebook_with(tmp_path, {i: solution_source(EXERCISES[i]) for i in ids})
    result = grade(str(path), "--only", *ids)
    assert result.returncode == 0, result.stdout
    assert "2 passed, 0 failed, 0 not attempted" in result.stdout


def test_a_cell_that_raises_hangs_or_kills_its_process_fails_alone(tmp_path: Path) -> None:
    path = notebook_with(
        tmp_path,
        {
            "contrastive.clip_loss": "def clip_loss(image_features, text_features, logit_scale):\n    return 1\n1 / 0",
            "contrastive.siglip_loss": "def siglip_loss(*args):\n    while True:\n        pass",
            "contrastive.recall_at_k": "import os\ndef recall_at_k(similarity, positives, k):\n    os._exit(3)",
            "contrastive.modality_gap": solution_source(EXERCISES["contrastive.modality_gap"]),
        },
    )
    result = grade(str(path), time_limit=3)
    assert result.returncode == 1
    assert "raised ZeroDivisionError: division by zero (line 3 of the cell)" in result.stdout
    assert "timed out after 3 s" in result.stdout
    assert "the grading process died (exit code 3)" in result.stdout
    assert "[PASS] contrastive.modality_gap" in result.stdout


def test_only_exercise_cells_and_imports_run(tmp_path: Path) -> None:
    marker = tmp_path / "demo-cell-ran"
    helper = "def _norm(x):\n    return x / x.norm(dim=-1, keepdim=True)"
    uses_helper = (
        "def modality_gap(image_features, text_features):\n"
        "    return (_norm(image_features).mean(0) - _norm(text_features).mean(0)).norm()"
    )
    path = notebook_with(
        tmp_path,
        {"contrastive.modality_gap": uses_helper},
        extra_cells=[f"open({str(marker)!r}, 'w').close()", helper],
    )
    result = grade(str(path), "--only", "contrastive.modality_gap")
    assert not marker.exists()
    assert result.returncode == 1
    assert "NameError" in result.stdout and "define helpers inside the exercise cell" in result.stdout


def test_grading_never_writes_the_learners_file(tmp_path: Path) -> None:
    path = notebook_with(tmp_path, {"contrastive.clip_loss": CLIP_ONE_DIRECTION})
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    grade(str(path))
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["03_contrastive.ipynb"]


def test_a_python_file_is_graded_on_the_names_it_defines(tmp_path: Path) -> None:
    path = tmp_path / "answers.py"
    path.write_text("import torch\nimport torch.nn.functional as F\n" + CLIP_ONE_DIRECTION)
    result = grade(str(path))
    assert result.returncode == 1
    assert "0 passed, 1 failed, 0 not attempted" in result.stdout


def test_a_python_file_missing_an_only_id_fails_that_exercise(tmp_path: Path) -> None:
    path = tmp_path / "answers.py"
    path.write_text("import torch\nimport torch.nn.functional as F\n" + CLIP_ONE_DIRECTION)
    result = grade(str(path), "--only", "contrastive.recall_at_k")
    assert result.returncode == 1
    assert "does not define `recall_at_k`" in result.stdout


@pytest.mark.parametrize(
    ("name", "content", "args", "reason"),
    [
        ("missing.ipynb", None, (), "no such file"),
        ("broken.ipynb", "{not json", (), "is not a readable Jupyter notebook"),
        ("empty.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', (), "no cell tagged"),
        ("answers.txt", "hello", (), "expected a .ipynb notebook or a .py file"),
        ("syntax.py", "def clip_loss(:\n", (), "syntax error at line 1"),
        ("nothing.py", "x = 1\n", (), "defines none of the exercise names"),
        ("ok.py", "def clip_loss(a, b, s):\n    return 0\n", ("--only", "contrastive.nope"), "unknown exercise id"),
    ],
)
def test_unusable_input_exits_2_with_one_line(tmp_path: Path, name, content, args, reason) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = grade(str(path), *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and reason in result.stderr, result.stderr

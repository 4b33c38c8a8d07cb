"""`python -m xmodal_ref.reset` restores a starter and never loses the learner's version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from xmodal_ref.grading.authoring import ROOT


def run_reset(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xmodal_ref.reset", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_reset_keeps_a_backup_and_restores_the_starter(tmp_path: Path) -> None:
    path = tmp_path / "03_contrastive.ipynb"
    shutil.copy(ROOT / "solutions" / "03_contrastive.ipynb", path)  # a "learner" who solved everything
    learner_bytes = path.read_bytes()

    first, second = run_reset(path), run_reset(path)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    backups = sorted((tmp_path / ".backups").iterdir())
    assert len(backups) == 2, "each reset keeps its own backup"
    assert backups[0].read_bytes() == learner_bytes
    assert str(backups[0]) in first.stdout
    restored = nbformat.read(path, as_version=4)
    starter = nbformat.read(ROOT / "notebooks" / "03_contrastive.ipynb", as_version=4)
    assert [c.source for c in restored.cells] == [c.source for c in starter.cells]


def test_reset_rejects_a_file_that_is_not_a_chapter(tmp_path: Path) -> None:
    path = tmp_path / "mine.ipynb"
    path.write_text("{}")
    result = run_reset(path)
    assert result.returncode == 2
    assert "is not a chapter notebook" in result.stderr
    assert path.read_text() == "{}"

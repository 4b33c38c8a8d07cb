"""Restore a starter notebook, keeping a timestamped backup of the learner's version first.

    python -m xmodal_ref.reset notebooks/03_contrastive.ipynb

The starter is rebuilt from the committed worked solution (prose and demos) with every exercise
cell replaced by its stub, so no git history is needed. The backup goes to
``notebooks/.backups/<name>.<YYYYmmdd-HHMMSS>.ipynb`` and its path is printed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import nbformat

from .grading.authoring import ROOT, chapter_notebooks, starter_notebook


def reset(path: str | Path) -> Path | None:
    """Rewrite ``path`` as its starter; return the backup's path (None if there was no file)."""
    path = Path(path)
    if path.name not in chapter_notebooks():
        raise ValueError(f"{path.name} is not a chapter notebook ({', '.join(chapter_notebooks())})")
    solution = ROOT / "solutions" / path.name
    starter = starter_notebook(nbformat.read(solution, as_version=4))
    backup = None
    if path.exists():
        backups = path.parent / ".backups"
        backups.mkdir(exist_ok=True)
        backup = backups / f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}"
        counter = 1
        while backup.exists():  # two resets within one second keep both backups
            backup = backups / f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}-{counter}{path.suffix}"
            counter += 1
        shutil.copy2(path, backup)
    nbformat.write(starter, path)
    return backup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xmodal_ref.reset", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="e.g. notebooks/03_contrastive.ipynb")
    args = parser.parse_args(argv)
    try:
        backup = reset(args.notebook)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if backup is not None:
        print(f"saved your version as {backup}")
    print(f"restored the starter {args.notebook}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

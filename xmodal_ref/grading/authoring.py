"""One source for starter and solution notebooks (``make solutions``).

The code of every exercise lives once, in the reference package. From it come:

* the starter stub of an exercise cell: the reference's signature and docstring, with a body that
  raises NotImplementedError (:func:`stub_source`);
* the solution of an exercise cell: the reference's source, verbatim (:func:`solution_source`).

``notebooks/NN_chapter.ipynb`` (the starter, committed without outputs) holds the prose and demos.
``solutions/NN_chapter.ipynb`` is that notebook with every exercise cell filled from the reference,
executed so its outputs are kept. Run ``python -m xmodal_ref.grading.authoring`` to regenerate them all.
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat

from .loader import EXERCISE_TAG
from .registry import CHAPTERS, Exercise, exercise_by_name

ROOT = Path(__file__).resolve().parents[2]
STUB_LINE = "raise NotImplementedError  # your code here"


def solution_source(exercise: Exercise) -> str:
    """The reference's source code, dedented, exactly as it stands in the package."""
    return textwrap.dedent(inspect.getsource(exercise.reference())).rstrip() + "\n"


def stub_source(exercise: Exercise) -> str:
    """The reference's signatures and docstrings, with bodies that raise NotImplementedError."""
    source = solution_source(exercise)
    lines = source.splitlines()
    node = ast.parse(source).body[0]
    if isinstance(node, ast.ClassDef):
        out = _header_and_docstring(node, lines)
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                out += ["", *_function_stub(item, lines)]
    else:
        out = _function_stub(node, lines)
    return "\n".join(out) + "\n"


def _header_and_docstring(node: ast.FunctionDef | ast.ClassDef, lines: list[str]) -> list[str]:
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    body = node.body[0]
    has_docstring = isinstance(body, ast.Expr) and isinstance(body.value, ast.Constant)
    end = body.end_lineno if has_docstring else body.lineno - 1
    return lines[first - 1 : end]


def _function_stub(node: ast.FunctionDef, lines: list[str]) -> list[str]:
    out = _header_and_docstring(node, lines)
    indent = " " * node.body[0].col_offset
    if node.name == "__init__":
        out.append(f"{indent}super().__init__()")
    out.append(indent + STUB_LINE)
    return out


def exercise_of_cell(cell: dict[str, Any]) -> Exercise | None:
    """The exercise an exercise-tagged cell defines (by its first def/class), else None."""
    if cell.get("cell_type") != "code" or EXERCISE_TAG not in cell.get("metadata", {}).get("tags", []):
        return None
    for node in ast.parse(cell["source"]).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            return exercise_by_name(node.name)
    return None


def with_exercise_cells(notebook: Any, source_of: Callable[[Exercise], str]) -> Any:
    """A copy of ``notebook`` whose exercise cells hold ``source_of(exercise)``, without outputs."""
    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        exercise = exercise_of_cell(cell)
        if exercise is not None:
            cell.source = source_of(exercise).rstrip("\n")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    return notebook


def starter_notebook(notebook: Any) -> Any:
    """The starter form of a notebook: stubs in the exercise cells, no outputs."""
    return with_exercise_cells(notebook, stub_source)


def solution_notebook(notebook: Any) -> Any:
    """The solution form of a notebook, before execution: references in the exercise cells."""
    return with_exercise_cells(notebook, solution_source)


def chapter_notebooks() -> list[str]:
    return [f"{number}_{chapter}.ipynb" for chapter, number in CHAPTERS.items()]


def refresh_starter(name: str) -> bool:
    """Rewrite ``notebooks/<name>``'s exercise cells as the references' current stubs; True if it changed."""
    path = ROOT / "notebooks" / name
    notebook = nbformat.read(path, as_version=4)
    starter = starter_notebook(notebook)
    if starter == notebook:
        return False
    nbformat.write(starter, path)
    return True


#: Output of a live widget (tqdm's bar in Jupyter): a random model id whose state is not saved, so it shows
#: nothing in a saved notebook and changes on every run. The text/plain form beside it is kept.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def without_widget_views(notebook: Any) -> Any:
    """``notebook`` with every widget view dropped from its outputs (so a regenerated notebook diffs small)."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
    notebook.metadata.pop("widgets", None)
    return notebook


def build_solution(name: str, timeout: int = 600) -> Path:
    """Fill ``notebooks/<name>``'s exercise cells from the reference, execute it, write solutions/.

    Cell ids are the starter's, so regenerating a solution changes only what the code prints.
    """
    from nbclient import NotebookClient

    starter = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    solution = solution_notebook(starter)
    NotebookClient(
        solution,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(ROOT / "solutions")}},
    ).execute()
    target = ROOT / "solutions" / name
    nbformat.write(without_widget_views(solution), target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xmodal_ref.grading.authoring",
        description="Refresh the starters' stubs from the references, then regenerate solutions/.",
    )
    parser.add_argument("notebooks", nargs="*", help="file names such as 03_contrastive.ipynb (default: all)")
    args = parser.parse_args(argv)
    for name in args.notebooks or chapter_notebooks():
        if refresh_starter(name):
            print(f"refreshed the stubs of notebooks/{name}")
        print(f"executing {name} …", flush=True)
        print(f"wrote {build_solution(name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Repository checks on the notebooks: one source for starter and solution, no drift."""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import nbformat
import pytest

from xmodal_ref.grading.authoring import (
    ROOT,
    WIDGET_VIEW,
    chapter_notebooks,
    exercise_of_cell,
    solution_notebook,
    starter_notebook,
)
from xmodal_ref.grading.registry import CHAPTERS, EXERCISES

pytestmark = pytest.mark.maintainer
NOTEBOOKS = chapter_notebooks()


def read(folder: str, name: str):
    return nbformat.read(ROOT / folder / name, as_version=4)


def cell_view(notebook) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """What starter and solution share: each cell's id, type, source and tags."""
    return [(c.get("id", ""), c.cell_type, c.source, tuple(c.metadata.get("tags", []))) for c in notebook.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_cells_have_stable_unique_ids(name: str) -> None:
    ids = [cell.get("id") for cell in read("notebooks", name).cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{name}: every cell needs its own id (nbformat ≥ 4.5)"
    assert [cell.get("id") for cell in read("solutions", name).cells] == ids, f"{name}: solution cell ids drifted"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solutions_keep_no_live_widget_views(name: str) -> None:
    """A widget view has a random id and no saved state: it would change on every regeneration."""
    for cell in read("solutions", name).cells:
        for output in cell.get("outputs", []):
            assert WIDGET_VIEW not in output.get("data", {}), f"{name}: run `make solutions`"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_starter_has_no_outputs_and_generated_stubs(name: str) -> None:
    starter = read("notebooks", name)
    for cell in starter.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: commit starters without outputs"
    assert cell_view(starter) == cell_view(starter_notebook(starter)), f"{name}: a stub differs from its reference"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solutions_do_not_drift(name: str) -> None:
    expected = solution_notebook(read("notebooks", name))
    assert cell_view(read("solutions", name)) == cell_view(expected), f"run `make solutions`: {name} drifted"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_reset_rebuilds_the_committed_starter(name: str) -> None:
    assert cell_view(starter_notebook(read("solutions", name))) == cell_view(read("notebooks", name))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solution_outputs_are_kept(name: str) -> None:
    solution = read("solutions", name)
    code_cells = [c for c in solution.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells), f"{name}: solution was not executed"
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: solution has error outputs"


def test_every_exercise_has_one_cell_and_a_self_check() -> None:
    seen: dict[str, int] = {}
    for name in NOTEBOOKS:
        cells = read("notebooks", name).cells
        for index, cell in enumerate(cells):
            exercise = exercise_of_cell(cell)
            if exercise is None:
                continue
            assert exercise.notebook == name, f"{exercise.id} belongs in {exercise.notebook}, found in {name}"
            seen[exercise.id] = seen.get(exercise.id, 0) + 1
            following = cells[index + 1].source if index + 1 < len(cells) else ""
            assert f'check("{exercise.id}", {exercise.name})' in following, f"{exercise.id}: add a check() cell"
    assert seen == dict.fromkeys(EXERCISES, 1)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_seeded_recipe_a_notebook_calls_is_memoised(name: str) -> None:
    """`make test` runs each notebook as starter and as solution; a recipe entry point the notebook calls
    (`train…` or `run…` in a chapter module) that is not `@memoised` would train twice there (docs/DECISIONS.md)."""
    for function in _called_chapter_functions(read("notebooks", name)):
        if re.match(r"(train|run)(_|$)", function.__name__):
            assert hasattr(function, "__wrapped__"), f"{name}: decorate {function.__qualname__} with @memoised"


def _called_chapter_functions(notebook) -> list:
    """The functions from a chapter's recipe modules (xmodal_ref.<chapter>.<module>) that the code cells call."""
    bound: dict = {}  # name in the notebook → the object it was imported as
    calls: list[ast.expr] = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xmodal_ref."):
                bound |= {alias.asname or alias.name: _imported(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Call):
                calls.append(node.func)
    functions = []
    for func in calls:
        if isinstance(func, ast.Name):
            value = bound.get(func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            value = getattr(bound.get(func.value.id), func.attr, None)
        else:
            continue
        parts = getattr(value, "__module__", "").split(".")
        if inspect.isfunction(value) and len(parts) == 3 and parts[1] in CHAPTERS and parts[2] != "reference":
            functions.append(value)
    return functions


def _imported(module: str, name: str):
    """What `from module import name` binds: an attribute, or else a submodule."""
    value = getattr(importlib.import_module(module), name, None)
    return importlib.import_module(f"{module}.{name}") if value is None else value

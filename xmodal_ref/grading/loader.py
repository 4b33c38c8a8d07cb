"""Read a learner's notebook or Python file and run only what grading needs.

Reading (:func:`read_learner_file`) never executes anything and never writes: it parses the file
and finds the exercises it covers. Executing (:meth:`LearnerFile.execute`) runs, in a fresh
namespace, the top-level import lines of every code cell and then each cell tagged ``exercise``;
other cells (demos, plots, training) never run. A cell that raises is recorded against the names
it defines, so one broken exercise never hides the others.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import EXERCISES, Exercise, exercise_by_name, exercises_in_notebook
from .verdict import shorten

EXERCISE_TAG = "exercise"


class UnusableInput(Exception):
    """The path cannot be graded at all: missing, malformed, or holding no exercise."""


@dataclass(frozen=True)
class CodeBlock:
    """A piece of learner source with a label for tracebacks (``cell 7`` or the file path)."""

    label: str
    source: str
    defines: tuple[str, ...]


@dataclass(frozen=True)
class LearnerFile:
    """What grading needs from a learner's file: plain strings, so it pickles to a worker."""

    path: str
    imports: tuple[CodeBlock, ...]
    blocks: tuple[CodeBlock, ...]
    exercise_ids: tuple[str, ...]

    @property
    def exercises(self) -> list[Exercise]:
        return [EXERCISES[exercise_id] for exercise_id in self.exercise_ids]

    def execute(self) -> Namespace:
        """Run the import lines, then each block, in a fresh namespace."""
        namespace: dict[str, Any] = {"__name__": "__learner__", "__builtins__": builtins}
        for block in self.imports:
            with contextlib.suppress(Exception):  # an unused failing import must not sink grading
                exec(compile(block.source, block.label, "exec"), namespace)
        result = Namespace()
        for block in self.blocks:
            before = dict(namespace)
            try:
                exec(compile(block.source, block.label, "exec"), namespace)
            except BaseException as err:  # SystemExit and KeyboardInterrupt included
                message = _describe_error(err, block.label)
                for name in block.defines:
                    result.errors[name] = message
            for name, value in namespace.items():
                if name not in before or before[name] is not value:
                    result.definitions[name] = value
        return result


@dataclass
class Namespace:
    """Names bound by the learner's exercise code, and the errors raised while binding them."""

    definitions: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def read_learner_file(path: str | Path) -> LearnerFile:
    """Parse a ``.ipynb`` or ``.py`` file without running it. Raises :class:`UnusableInput`."""
    path = Path(path)
    if not path.exists():
        raise UnusableInput(f"no such file: {path}")
    if not path.is_file():
        raise UnusableInput(f"not a file: {path}")
    if path.suffix == ".ipynb":
        return _read_notebook(path)
    if path.suffix == ".py":
        return _read_python(path)
    raise UnusableInput(f"expected a .ipynb notebook or a .py file, got {path.name}")


def _read_notebook(path: Path) -> LearnerFile:
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = notebook["cells"]
        if not isinstance(cells, list):
            raise TypeError("'cells' is not a list")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise UnusableInput(f"{path} is not a readable Jupyter notebook ({err})") from None

    imports, blocks = [], []
    for index, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _cell_source(cell)
        label = f"{path.name}, cell {index}"
        import_lines = _import_lines(source)
        if import_lines:
            imports.append(CodeBlock(f"<{label} imports>", import_lines, ()))
        if EXERCISE_TAG in cell.get("metadata", {}).get("tags", []):
            blocks.append(CodeBlock(f"<{label}>", source, _defined_names(source)))

    covered = {exercise.id for exercise in exercises_in_notebook(path.name)}
    covered |= _exercise_ids_defined(blocks)
    if not covered:
        raise UnusableInput(f"{path} has no cell tagged '{EXERCISE_TAG}' that defines a known exercise")
    return LearnerFile(str(path), tuple(imports), tuple(blocks), _in_registry_order(covered))


def _read_python(path: Path) -> LearnerFile:
    try:
        source = path.read_text(encoding="utf-8")
        defines = _top_level_names(ast.parse(source, filename=str(path)))
    except SyntaxError as err:
        raise UnusableInput(f"{path} has a syntax error at line {err.lineno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UnusableInput(f"cannot read {path} ({err})") from None
    block = CodeBlock(str(path), source, defines)
    covered = _exercise_ids_defined([block])
    if not covered:
        names = ", ".join(exercise.name for exercise in EXERCISES.values())
        raise UnusableInput(f"{path} defines none of the exercise names ({names})")
    return LearnerFile(str(path), (), (block,), _in_registry_order(covered))


def _cell_source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


_MAGIC = re.compile(r"^\s*[%!]")


def _without_magics(source: str) -> str:
    """IPython magics and shell escapes are not Python: blank them, keeping line numbers."""
    return "\n".join("" if _MAGIC.match(line) else line for line in source.splitlines())


def _import_lines(source: str) -> str:
    try:
        tree = ast.parse(_without_magics(source))
    except SyntaxError:
        return ""
    nodes = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(ast.unparse(node) for node in nodes)


_DEFINITION = re.compile(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.MULTILINE)


def _defined_names(source: str) -> tuple[str, ...]:
    """Top-level names a cell binds; for a cell that does not parse, its def/class lines."""
    try:
        return _top_level_names(ast.parse(_without_magics(source)))
    except SyntaxError:
        return tuple(_DEFINITION.findall(source))


def _top_level_names(tree: ast.Module) -> tuple[str, ...]:
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [target.id for target in targets if isinstance(target, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(alias.asname or alias.name).split(".")[0] for alias in node.names]
    return tuple(names)


def _exercise_ids_defined(blocks: list[CodeBlock]) -> set[str]:
    found = (exercise_by_name(name) for block in blocks for name in block.defines)
    return {exercise.id for exercise in found if exercise is not None}


def _in_registry_order(ids: set[str]) -> tuple[str, ...]:
    return tuple(exercise_id for exercise_id in EXERCISES if exercise_id in ids)


def _describe_error(err: BaseException, label: str) -> str:
    """One line: the exception and the line of learner code that raised it."""
    line = ""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename == label:
            line = f" (line {frame.lineno} of the cell)" if "cell" in label else f" (line {frame.lineno})"
            break
    text = str(err).strip().splitlines()
    detail = f": {shorten(text[0], 300)}" if text else ""
    where = label.strip("<>")
    return f"{where} raised {type(err).__name__}{detail}{line}"

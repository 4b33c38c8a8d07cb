"""The test-session recipe cache: identical runs are served once trained, anything else runs, and a hit is
indistinguishable from the run it replaces (result and random state)."""

from __future__ import annotations

import inspect
import linecache
import math
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xmodal_ref.common.recipe_cache import CACHE_ENV, Unfingerprintable, call_key, fingerprint, memoised
from xmodal_ref.contrastive import clip_loss

CALLS: list[tuple] = []


@memoised
def toy_recipe(loss_fn=clip_loss, *, seed: int = 0, width: int = 3) -> dict:
    """Draws from every generator, as a training recipe does, and records that it ran."""
    CALLS.append((seed, width))
    torch.manual_seed(seed)
    return {"weights": torch.randn(width), "numpy": np.random.rand(), "python": random.random()}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    CALLS.clear()
    return tmp_path


def test_without_the_variable_every_call_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    CALLS.clear()
    toy_recipe(seed=1)
    toy_recipe(seed=1)
    assert len(CALLS) == 2


def test_an_identical_call_is_served_with_the_same_result_and_random_state(cache: Path) -> None:
    first = toy_recipe(seed=1)
    after_run = (torch.rand(2), np.random.rand(), random.random())
    second = toy_recipe(clip_loss, seed=1)  # the default given explicitly: the same call
    after_hit = (torch.rand(2), np.random.rand(), random.random())
    assert CALLS == [(1, 3)]
    assert torch.equal(first["weights"], second["weights"]) and first["numpy"] == second["numpy"]
    assert torch.equal(after_run[0], after_hit[0]) and after_run[1:] == after_hit[1:]


def test_other_arguments_run_again(cache: Path) -> None:
    toy_recipe(seed=1)
    toy_recipe(seed=2)
    toy_recipe(seed=1, width=4)
    assert CALLS == [(1, 3), (2, 3), (1, 4)]


def test_a_function_counts_by_its_source(cache: Path) -> None:
    """The solution notebook's copy of the reference hits; a learner's own code does not."""
    toy_recipe(clip_loss, seed=1)
    assert fingerprint(clip_loss) == fingerprint(_copy_of(clip_loss))
    toy_recipe(_copy_of(clip_loss), seed=1)
    assert len(CALLS) == 1

    def own_loss(image_features, text_features, logit_scale):
        return clip_loss(image_features, text_features, logit_scale) * 1.0

    toy_recipe(own_loss, seed=1)
    assert len(CALLS) == 2


def test_modules_count_by_class_and_weights_and_unknown_objects_are_not_cached(cache: Path) -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert fingerprint(a) != fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert fingerprint(a) == fingerprint(b)
    with pytest.raises(Unfingerprintable):
        fingerprint(object())
    toy_recipe(object(), seed=1)
    toy_recipe(object(), seed=1)
    assert len(CALLS) == 2


def _copy_of(fn):
    """``fn`` defined anew from its source text, as the solution notebook defines it, with a source on record."""
    source = textwrap.dedent(inspect.getsource(fn))
    filename = f"<cell {fn.__name__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict = {"torch": torch, "F": F, "math": math}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[fn.__name__]


def test_a_lock_left_by_a_dead_process_is_taken_over(cache: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = _entry_path(cache, toy_recipe, seed=5)
    path.with_suffix(".lock").write_text(dead.stdout.strip())
    toy_recipe(seed=5)
    assert CALLS == [(5, 3)] and path.exists() and not path.with_suffix(".lock").exists()


@memoised
def slow_recipe(seed: int) -> int:
    """Long enough that a second identical call starts while the first still runs."""
    CALLS.append((seed, "slow"))
    time.sleep(0.5)
    return seed * 2


def test_two_kernels_with_the_identical_call_train_once(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The second waits for the first's result instead of training beside it (threads stand in for kernels:
    the lock is the same file either way)."""
    results: list[int] = []
    kernels = [threading.Thread(target=lambda: results.append(slow_recipe(21))) for _ in range(2)]
    for kernel in kernels:
        kernel.start()
        time.sleep(0.1)  # the first claims the run
    for kernel in kernels:
        kernel.join(timeout=30)
    assert CALLS == [(21, "slow")] and results == [42, 42]
    assert capsys.readouterr().out.count("identical run") == 1


def _entry_path(folder: Path, recipe, **kwargs) -> Path:
    return folder / f"{recipe.__module__}.{recipe.__qualname__}.{call_key(recipe, (), kwargs)}.pt"

"""Serve a recipe run from a cache when an identical run already happened in the same test session.

``make test`` executes every notebook twice, as the starter and as the worked solution. The starter hands
a recipe the reference (its exercises are not attempted) and the solution hands it the reference's source
defined in the notebook, so each recipe trains twice on the same inputs. With ``XMODAL_RECIPE_CACHE`` set
to a folder (the Makefile's nbval stage sets a fresh temporary one), a recipe decorated with
:func:`memoised` stores its result there and an identical later call loads it instead of training again.

"Identical" means the same recipe and the same arguments, where a function or class argument counts by its
source code (so the reference and its copy in the solution notebook match, and a learner's own code never
matches the reference's entry), a module by its class and weights, and a tensor by its values. An argument
that cannot be fingerprinted makes the call run as usual. A hit also restores the random number generators
to the state the real run left them in, so the cells after it draw the same numbers. Without the variable
(learners, benchmarks, the package's own tests) every call simply runs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import pickle
import random
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

CACHE_ENV = "XMODAL_RECIPE_CACHE"
Recipe = TypeVar("Recipe", bound=Callable[..., Any])


class Unfingerprintable(Exception):
    """An argument whose identity cannot be captured: the call is not cached."""


def memoised(recipe: Recipe) -> Recipe:
    """``recipe`` itself, except that with ``XMODAL_RECIPE_CACHE`` set an identical call is served from disk."""

    @functools.wraps(recipe)
    def run(*args: Any, **kwargs: Any) -> Any:
        folder = os.environ.get(CACHE_ENV)
        if not folder:
            return recipe(*args, **kwargs)
        try:
            key = call_key(recipe, args, kwargs)
        except Unfingerprintable:
            return recipe(*args, **kwargs)
        path = Path(folder) / f"{recipe.__module__}.{recipe.__qualname__}.{key}.pt"
        with _claim(path) as owner:
            if not owner:  # the identical run finished elsewhere while we waited
                entry = torch.load(path, weights_only=False)
                _set_rng_state(entry["rng"])
                print(f"({recipe.__name__}: the result of an identical run earlier in this test session)")
                return entry["result"]
            result = recipe(*args, **kwargs)
            _store(path, {"result": result, "rng": _rng_state()})
            return result

    return run  # type: ignore[return-value]


def call_key(recipe: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A hex digest of the call's arguments, bound to the recipe's parameter names with defaults applied."""
    bound = inspect.signature(recipe).bind(*args, **kwargs)
    bound.apply_defaults()
    digest = hashlib.sha256()
    for name, value in bound.arguments.items():
        digest.update(name.encode())
        digest.update(fingerprint(value).encode())
    return digest.hexdigest()[:32]


def fingerprint(value: Any) -> str:
    """A string that is equal for two arguments a recipe cannot tell apart. Raises :class:`Unfingerprintable`."""
    if value is None or isinstance(value, (bool, int, float, str, torch.device, torch.dtype)):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        return f"tensor:{data.dtype}:{tuple(data.shape)}:{hashlib.sha256(data.numpy().tobytes()).hexdigest()}"
    if isinstance(value, nn.Module):
        weights = ",".join(f"{name}={fingerprint(tensor)}" for name, tensor in value.state_dict().items())
        return f"module:{fingerprint(type(value))}:{weights}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{','.join(fingerprint(v) for v in value)}]"
    if isinstance(value, dict):
        return "dict{" + ",".join(f"{k!r}:{fingerprint(v)}" for k, v in sorted(value.items(), key=repr)) + "}"
    if inspect.isfunction(value) or inspect.isclass(value):
        try:
            source = textwrap.dedent(inspect.getsource(value)).strip()
        except (OSError, TypeError) as err:
            raise Unfingerprintable(f"no source for {value!r}") from err
        return f"code:{value.__name__}:{hashlib.sha256(source.encode()).hexdigest()}"
    raise Unfingerprintable(f"cannot fingerprint a {type(value).__name__}")


@contextlib.contextmanager
def _claim(path: Path) -> Iterator[bool]:
    """True (and a lock held for the block) when this process must run the recipe for ``path``; False when
    the result is there, possibly after waiting for another kernel that is running the identical call.

    Waiting is never slower than training a second time beside it, and it leaves the core to the other run.
    A lock whose owner died is taken over; so is the call whose owner could not store its result.
    """
    lock = path.with_suffix(".lock")
    while not path.exists():
        if _try_lock(lock):
            try:
                yield True
            finally:
                lock.unlink(missing_ok=True)
            return
        if not _owner_alive(lock):
            lock.unlink(missing_ok=True)
        time.sleep(0.2)
    yield False


def _try_lock(lock: Path) -> bool:
    """Create ``lock`` holding this process's pid, atomically; False if another process holds it."""
    draft = lock.with_suffix(f".{os.getpid()}.draft")
    draft.write_text(str(os.getpid()))
    try:
        os.link(draft, lock)
        return True
    except FileExistsError:
        return False
    finally:
        draft.unlink()


def _owner_alive(lock: Path) -> bool:
    try:
        os.kill(int(lock.read_text()), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):  # the lock vanished meanwhile, or its process is not ours to signal
        return True
    return True


def _store(path: Path, entry: dict[str, Any]) -> None:
    """Write atomically (two kernels may finish the same run); a result that does not pickle is not cached."""
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        torch.save(entry, partial)
    except (pickle.PicklingError, TypeError, AttributeError):
        partial.unlink(missing_ok=True)
        return
    os.replace(partial, path)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])

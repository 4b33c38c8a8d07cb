"""Run one function on W gloo ranks of a real ``torch.distributed`` process group, on one machine.

torch keeps one default process group per process, so every launch starts W fresh processes: forked where the
platform can fork (Linux, macOS; 0.2–0.4 s for two ranks, and the learner's functions defined in a notebook come
along), spawned elsewhere (the function must then be importable). The ranks meet through a ``FileStore`` in a fresh
temporary folder (no TCP port to pick), use one intra-op thread each, and send their results back as numpy arrays
(a tensor sent through a pipe travels as a shared-memory handle that dies with its process).

``torch._dynamo`` is imported here, before any fork: the first functional collective (and building a
DistributedDataParallel model) imports it, which costs 2–15 s inside each rank but nothing when inherited.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import torch
import torch._dynamo
import torch.distributed as dist

from ..grading.verdict import Unavailable

#: Seconds a collective may wait for its peers before gloo raises (a mismatched collective becomes an error).
COLLECTIVE_TIMEOUT = 10.0


class RankError(RuntimeError):
    """A rank raised, died or missed the deadline; the message names the rank and the first error."""


def can_fork() -> bool:
    """Whether ranks can be forked, so that functions defined in a notebook or a learner's file reach them."""
    return "fork" in multiprocessing.get_all_start_methods()


def require_fork(what: str) -> None:
    """Raise :class:`~xmodal_ref.grading.verdict.Unavailable` unless ranks can be forked.

    Spawned ranks re-import their function by name, which a learner's notebook cell cannot offer.
    """
    if not can_fork():
        raise Unavailable(
            f"{what} runs on forked gloo ranks, and this platform cannot fork: grade it on Linux, macOS or WSL"
        )


def on_ranks(
    fn: Callable[..., Any], world_size: int, *args: Any, deadline: float = 15.0, start_method: str | None = None
) -> list[Any]:
    """``[fn(*args) on rank 0, …, fn(*args) on rank world_size − 1]``, each in its own process of one group.

    ``fn`` runs after ``dist.init_process_group("gloo", …)``, so it reads its rank from ``dist.get_rank()``. Its
    result may nest tensors, numpy arrays, numbers, tuples, lists and dicts; tensors come back as CPU tensors.
    Raises :class:`RankError` when a rank raises, dies, or is not done ``deadline`` seconds after the launch.
    """
    context = multiprocessing.get_context(start_method or ("fork" if can_fork() else "spawn"))
    with tempfile.TemporaryDirectory(prefix="xmodal-ranks-") as folder:
        store = f"file://{os.path.join(folder, 'store')}"
        pipes, processes = [], []
        for rank in range(world_size):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_rank_main, args=(fn, rank, world_size, store, sender, args), daemon=True)
            process.start()
            sender.close()
            pipes.append(receiver)
            processes.append(process)
        try:
            return _collect(pipes, processes, time.monotonic() + deadline, deadline)
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
                process.join()
            for receiver in pipes:
                receiver.close()


def _collect(pipes: list[Any], processes: list[Any], end: float, deadline: float) -> list[Any]:
    """Each rank's result, read as it arrives; the first rank to fail ends the launch (its peers may be stuck)."""
    results: list[Any] = [None] * len(pipes)
    pending = dict(enumerate(pipes))
    while pending:
        ready = wait(list(pending.values()), timeout=max(0.0, end - time.monotonic()))
        if not ready:
            raise RankError(
                f"rank {min(pending)} was not done after {deadline:g} s: a collective that not every rank calls,"
                " ranks that call collectives in a different order, or an endless loop"
            )
        for rank in [r for r, receiver in pending.items() if receiver in ready]:
            try:
                ok, payload = pending.pop(rank).recv()
            except EOFError:
                processes[rank].join(1.0)
                raise RankError(
                    f"rank {rank} died (exit code {processes[rank].exitcode}) before sending a result"
                ) from None
            if not ok:
                raise RankError(f"rank {rank}: {payload}")
            results[rank] = _to_torch(payload)
    return results


def _rank_main(
    fn: Callable[..., Any], rank: int, world_size: int, store: str, sender: Any, args: tuple[Any, ...]
) -> None:
    # One thread: a forked child whose parent used the OpenMP pool can hang in its first large op.
    torch.set_num_threads(1)
    _exit_with(os.getppid())
    try:
        dist.init_process_group(
            "gloo", init_method=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT)
        )
        message = (True, _to_numpy(fn(*args)))
    except BaseException as err:
        message = (False, _describe(err))
    try:
        sender.send(message)
    finally:
        sender.close()
        os._exit(0)  # skip the interpreter's shutdown: the group's threads need no goodbye


def _exit_with(parent: int) -> None:
    """End this rank when ``parent`` is gone (a grader that kills a timed-out exercise cannot reach its ranks)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _describe(err: BaseException) -> str:
    """The error's type and first line, and the innermost frame that raised it."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    text = str(err).strip().splitlines()
    first = text[0] if text else "(no message)"
    if "gloo" in first and "Connection" in first:  # the peer left: gloo's own words name a socket, not the cause
        first = (
            "a collective found no partner: another rank finished or failed without calling it"
            " (every rank must call the same collectives in the same order)"
        )
    return f"{type(err).__name__}: {first}{where}"


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    return value


def _to_torch(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_torch(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    return value

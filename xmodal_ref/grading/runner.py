"""Grade exercises: each one in its own short-lived process, under a time limit.

Learner code can hang, crash the interpreter, or change global torch state; running every
exercise in a fresh process forked from a warm server (torch already imported) contains all
three and costs about 0.2 s an exercise. Notebook self-checks (:func:`grade_object`) run
in-process instead, with the same checks and the same verdicts.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .loader import LearnerFile
from .registry import EXERCISES, Exercise
from .verdict import CheckFailure, NotAttempted, Status, Unavailable, Verdict

#: Seconds one exercise may take, loading the learner's code included.
TIME_LIMIT = float(os.environ.get("XMODAL_TIME_LIMIT", "20"))


def grade_object(exercise_id: str, candidate: Any, time_limit: float = TIME_LIMIT) -> Verdict:
    """Check one object (a learner's function or class) in this process."""
    exercise = EXERCISES[exercise_id]
    start = time.perf_counter()
    try:
        with _alarm(time_limit):
            verdict = _check(exercise, candidate)
    except _TimeLimit:
        verdict = Verdict(exercise.id, Status.FAILED, _timeout_message(time_limit))
    return Verdict(verdict.exercise_id, verdict.status, verdict.message, time.perf_counter() - start)


def grade_file(
    learner_file: LearnerFile, exercises: Sequence[Exercise], time_limit: float = TIME_LIMIT
) -> Iterator[Verdict]:
    """Grade each exercise against the learner's file, each in its own process."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["xmodal_ref.grading.worker"])
    else:  # Windows: slower (each process imports torch) but just as isolated
        context = multiprocessing.get_context("spawn")
    for exercise in exercises:
        receiver, sender = context.Pipe(duplex=False)
        # Not a daemon: a daemon may not start processes, and chapter 10's checks start gloo ranks. The finally
        # block kills it instead, whatever happens here (a timeout, an interrupt).
        process = context.Process(target=_grade_in_child, args=(learner_file, exercise.id, sender))
        process.start()  # the first start waits for the server to preload torch: not the learner's time
        start = time.perf_counter()
        sender.close()
        try:
            verdict = _await_verdict(exercise, receiver, time_limit)
        finally:
            if process.is_alive():
                process.kill()
            process.join()
            receiver.close()
        if verdict is None:
            verdict = Verdict(
                exercise.id,
                Status.FAILED,
                f"the grading process died (exit code {process.exitcode}) before giving a verdict:"
                " the code may call exit(), crash the interpreter, or run out of memory",
            )
        yield Verdict(verdict.exercise_id, verdict.status, verdict.message, time.perf_counter() - start)


def _await_verdict(exercise: Exercise, receiver: Any, time_limit: float) -> Verdict | None:
    """The child's verdict, a time-out verdict, or None when the child died without sending one."""
    if not receiver.poll(time_limit):
        return Verdict(exercise.id, Status.FAILED, _timeout_message(time_limit))
    try:
        return receiver.recv()
    except EOFError:
        return None


def _grade_in_child(learner_file: LearnerFile, exercise_id: str, sender: Any) -> None:
    exercise = EXERCISES[exercise_id]
    namespace = learner_file.execute()
    if exercise.name in namespace.errors:
        verdict = Verdict(exercise.id, Status.FAILED, namespace.errors[exercise.name])
    elif exercise.name not in namespace.definitions:
        verdict = Verdict(
            exercise.id,
            Status.FAILED,
            f"{learner_file.path} does not define `{exercise.name}` in a cell tagged 'exercise'"
            " (restore the cell with `python -m xmodal_ref.reset`, which keeps a backup)",
        )
    else:
        verdict = _check(exercise, namespace.definitions[exercise.name])
    sender.send(verdict)
    sender.close()


def _check(exercise: Exercise, candidate: Any) -> Verdict:
    from ..common.device import one_thread  # imports torch: only where a check runs, not in the grading parent

    reference = exercise.reference()
    if candidate is reference or getattr(candidate, "__module__", "").startswith("xmodal_ref"):
        return Verdict(
            exercise.id,
            Status.FAILED,
            f"`{exercise.name}` is the reference imported from xmodal_ref, not your own code",
        )
    try:
        with one_thread():  # small inputs: intra-op threads only add contention (25× slower ops on a busy 2-core box)
            exercise.check()(candidate, reference)
    except NotAttempted:
        return Verdict(exercise.id, Status.NOT_ATTEMPTED)
    except Unavailable as reason:
        return Verdict(exercise.id, Status.SKIPPED, str(reason))
    except CheckFailure as failure:
        return Verdict(exercise.id, Status.FAILED, str(failure))
    except Exception as err:  # the learner's object broke an assumption of the check
        where = traceback.extract_tb(err.__traceback__)[-1]
        return Verdict(
            exercise.id,
            Status.FAILED,
            f"grading stopped with {type(err).__name__}: {err} ({os.path.basename(where.filename)}:"
            f"{where.lineno}); does `{exercise.name}` follow the contract in its docstring?",
        )
    return Verdict(exercise.id, Status.PASSED)


class _TimeLimit(BaseException):
    """Raised by the alarm. Not an Exception, so neither a check nor learner code catches it by accident."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise _TimeLimit after ``seconds`` (main thread, POSIX only; elsewhere no limit applies)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timeout_message(seconds: float) -> str:
    return (
        f"timed out after {seconds:g} s: an infinite loop, or a Python loop over every element"
        " of a large tensor? (set XMODAL_TIME_LIMIT to allow more)"
    )

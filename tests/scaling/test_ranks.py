"""The chapter's infrastructure (the gloo rank launcher, the live-memory meter) and its mutant counts."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch
import torch.distributed as dist

from xmodal_ref.scaling import ranks
from xmodal_ref.scaling.memory import PeakMemory, peak_bytes
from xmodal_ref.scaling.ranks import RankError, on_ranks

MIB = 2**20


def rank_and_gathered(offset: float) -> tuple[int, torch.Tensor, dict[str, float]]:
    mine = torch.full((2,), float(dist.get_rank()), dtype=torch.float64)
    slots = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(slots, mine)
    return dist.get_rank(), torch.cat(slots) + offset, {"world": float(dist.get_world_size())}


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_results_come_back_in_rank_order_as_tensors(world_size: int) -> None:
    results = on_ranks(rank_and_gathered, world_size, 0.5)
    expected = torch.arange(world_size, dtype=torch.float64).repeat_interleave(2) + 0.5
    assert [rank for rank, _, _ in results] == list(range(world_size))
    for _, gathered, extra in results:
        assert isinstance(gathered, torch.Tensor) and gathered.dtype == torch.float64
        assert torch.equal(gathered, expected) and extra == {"world": float(world_size)}


def fails_on_rank_one() -> int:
    if dist.get_rank() == 1:
        raise ValueError("bad input on this rank")
    dist.all_reduce(torch.ones(1))  # rank 0 waits for a partner that has left
    return 0


def collective_on_rank_zero_only() -> int:
    if dist.get_rank() == 0:
        dist.all_reduce(torch.ones(1))
    return 0


def test_the_first_failing_rank_is_named_with_its_error() -> None:
    start = time.perf_counter()
    with pytest.raises(RankError, match=r"rank 1: ValueError: bad input on this rank"):
        on_ranks(fails_on_rank_one, 2)
    assert time.perf_counter() - start < 5.0  # not the collective timeout


def test_a_collective_only_some_ranks_call_is_explained() -> None:
    with pytest.raises(RankError, match="a collective found no partner"):
        on_ranks(collective_on_rank_zero_only, 2)


def sleeps() -> None:
    time.sleep(30)


def test_a_rank_past_the_deadline_is_killed() -> None:
    start = time.perf_counter()
    with pytest.raises(RankError, match=r"not done after 1 s"):
        on_ranks(sleeps, 2, deadline=1.0)
    assert time.perf_counter() - start < 3.0


def test_without_fork_distributed_checks_are_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from xmodal_ref.grading.verdict import Unavailable

    monkeypatch.setattr(ranks, "can_fork", lambda: False)
    with pytest.raises(Unavailable, match="cannot fork"):
        ranks.require_fork("scaling.all_gather_with_grad")


# ----------------------------------------------------------------------------- PeakMemory


def test_a_tensor_counts_from_its_creation_until_it_is_freed() -> None:
    with PeakMemory() as meter:
        a = torch.empty(MIB // 4)  # 1 MiB of float32
        b = torch.empty(2 * MIB // 4)  # 2 MiB: 3 MiB live
        del a, b
        c = torch.empty(MIB // 4)  # the next op sees both freed
    assert meter.peak == 3 * MIB and meter.live == MIB and meter.largest == 2 * MIB
    del c


def test_views_and_in_place_results_count_once_and_inputs_not_at_all() -> None:
    x = torch.ones(MIB // 4)  # made outside: not counted
    with PeakMemory() as meter:
        y = x * 2  # 1 MiB
        y.add_(1)
        _ = y.view(-1, 4)[:, 0]
    assert meter.peak == MIB


def test_backward_allocations_are_seen() -> None:
    x = torch.randn(256, 256, requires_grad=True)

    def forward_backward() -> None:
        (x @ x).sum().backward()

    forward_only = peak_bytes(lambda: (x @ x).sum())
    assert peak_bytes(forward_backward) > forward_only >= 256 * 256 * 4


def test_the_full_clip_loss_peaks_at_four_n_squared_floats() -> None:
    """The contract's figure, 16.3 MiB at N = 1024 (logits, two log-softmaxes and a gradient)."""
    from xmodal_ref.contrastive.reference import clip_loss

    generator = torch.Generator().manual_seed(0)
    image, text = (torch.nn.functional.normalize(torch.randn(1024, 32, generator=generator), dim=1) for _ in range(2))
    image.requires_grad_(), text.requires_grad_()
    peak = peak_bytes(lambda: clip_loss(image, text, 10.0).backward())
    assert abs(peak / MIB - 16.3) < 0.1, peak / MIB


def test_every_exercise_has_five_mutants_and_two_other_styles() -> None:
    from xmodal_ref.grading.registry import EXERCISES

    from .mutants import CORRECT, MUTANTS

    chapter = {exercise_id for exercise_id in EXERCISES if exercise_id.startswith("scaling.")}
    assert set(MUTANTS) == set(CORRECT) == chapter
    for exercise_id in chapter:
        assert len(MUTANTS[exercise_id]) >= 5 and len(CORRECT[exercise_id]) >= 2, exercise_id


def launches_ranks_that_spin(folder: str) -> None:
    """Start two ranks that never finish, record their pids, then stand for a grader's exercise process."""

    def spin() -> None:
        with open(os.path.join(folder, f"rank{dist.get_rank()}"), "w") as pid_file:
            pid_file.write(str(os.getpid()))
        while True:
            pass

    on_ranks(spin, 2, deadline=60.0)


def test_ranks_end_when_the_process_that_launched_them_is_killed(tmp_path) -> None:
    exercise = multiprocessing.get_context("fork").Process(target=launches_ranks_that_spin, args=(str(tmp_path),))
    exercise.start()
    deadline = time.monotonic() + 10
    while len(list(tmp_path.glob("rank*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(path.read_text() or 0) for path in tmp_path.glob("rank*")]
    exercise.kill()  # what the grader does when the time limit passes
    exercise.join()
    time.sleep(1.5)  # the ranks' watchdogs poll every 0.5 s
    assert len(pids) == 2
    for pid in pids:
        assert not running(pid), pid


def running(pid: int) -> bool:
    """Whether ``pid`` is alive: not gone and not a zombie (an orphan's exit waits for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"

"""Recipe A's training under torchrun: one process per rank, launched the way real multi-GPU jobs are.

    python -m torch.distributed.run --nproc_per_node 2 -m xmodal_ref.scaling.train [--no-local-loss] …
    python -m xmodal_ref.scaling.train            # one process: WORLD_SIZE unset → world size 1, the full batch

torchrun starts the processes and gives each RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; every
process joins the group with ``init_method="env://"``: NCCL on the GPU of its LOCAL_RANK when CUDA is present,
gloo on the CPU otherwise. Each then runs ``data_parallel_sgd`` (``xmodal_ref.scaling.equivalence``) with
``distributed_clip_loss`` in one (local_loss, gather_with_grad) configuration, chosen by the flags (default: local
loss, gather with grad, the setting OpenCLIP recommends): the global batch is split over the ranks, so any
number of processes trains the same model as one process on the whole batch. Rank 0 prints the loss of every
step (of the whole global batch: the mean of the ranks' losses, which is the full-batch loss in every
configuration) and, last, one line ``RESULT {json}`` that a script can parse; ``--save PATH`` also writes the final
parameters (one flat float vector, ``torch.save``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from .equivalence import GLOBAL_BATCH, LR, STEPS, config_name, data_parallel_sgd
from .reference import distributed_clip_loss

RESULT_PREFIX = "RESULT "
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m torch.distributed.run --nproc_per_node W -m xmodal_ref.scaling.train",
        description="Data-parallel CLIP training of recipe A's dual encoder, one process per rank.",
    )
    parser.add_argument(
        "--local-loss", action=argparse.BooleanOptionalAction, default=True, help="local loss (default) or global"
    )
    parser.add_argument(
        "--gather-with-grad", action=argparse.BooleanOptionalAction, default=True, help="autograd all-gather (default)"
    )
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--global-batch", type=int, default=GLOBAL_BATCH, help="pairs per step over all ranks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--cpu", action="store_true", help="gloo on the CPU even when CUDA is present")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a collective may wait for its peers")
    parser.add_argument("--save", metavar="PATH", help="rank 0 writes the final parameters here (torch.save)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run one rank (or the only process) and return rank 0's RESULT record (other ranks return it too)."""
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # a tiny model: one thread per rank, so W ranks share the cores without stalls
    distributed = "WORLD_SIZE" in os.environ  # set by torchrun (with RANK, MASTER_ADDR, MASTER_PORT)
    if distributed:
        dist.init_process_group(
            "nccl" if cuda else "gloo", init_method="env://", timeout=timedelta(seconds=args.timeout)
        )
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    config = config_name(args.local_loss, args.gather_with_grad)
    if rank == 0:
        print(f"world size {world_size} on {device}, {config}, global batch {args.global_batch}", flush=True)

    losses: list[float] = []

    def report(step: int, loss: float) -> None:
        """Record and print (rank 0) the full batch's loss: the mean of the ranks' losses (a collective)."""
        if world_size > 1:
            total = torch.tensor(loss, dtype=torch.float64, device=device)
            dist.all_reduce(total)
            loss = total.item() / world_size
        losses.append(loss)
        if rank == 0:
            print(f"step {step:3d}  loss {loss:.6f}", flush=True)

    start = time.perf_counter()
    try:
        result = data_parallel_sgd(
            functools.partial(
                distributed_clip_loss, local_loss=args.local_loss, gather_with_grad=args.gather_with_grad
            ),
            rank=rank,
            world_size=world_size,
            steps=args.steps,
            lr=args.lr,
            global_batch=args.global_batch,
            seed=args.seed,
            dtype=DTYPES[args.dtype],
            device=device,
            on_step=report,
        )
    finally:
        if distributed:
            dist.destroy_process_group()
    record = {
        "world_size": world_size,
        "local_loss": args.local_loss,
        "gather_with_grad": args.gather_with_grad,
        "steps": args.steps,
        "global_batch": args.global_batch,
        "dtype": args.dtype,
        "final_loss": losses[-1],
        "param_norm": result["params"].double().norm().item(),
        "saved": args.save,
        "seconds": time.perf_counter() - start,
    }
    if rank == 0:
        if args.save:
            torch.save(result["params"], args.save)
        print(RESULT_PREFIX + json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    main()

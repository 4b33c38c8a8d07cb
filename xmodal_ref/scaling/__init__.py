"""Chapter 10 · scaling: contrastive training across processes, and beyond one device's memory.

* ``reference.py``: the graded references (``from xmodal_ref.scaling import distributed_clip_loss``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise, from three topical modules.
* ``ranks.py``: ``on_ranks``, a function run on W forked (or spawned) gloo ranks of one process group.
* ``memory.py``: ``PeakMemory``, the live bytes of the tensors an operation creates, backward included.
* ``equivalence.py``: recipe A, two ranks are one big batch (the four gather/loss configurations).
* ``memory_wall.py``: recipe B, the N² wall of the full loss against the chunked loss.
* ``train.py``: the same training under torchrun (``python -m torch.distributed.run … -m xmodal_ref.scaling.train``).
"""

from .reference import (
    DynamicLossScaler,
    all_gather_with_grad,
    chunked_clip_loss,
    distributed_clip_loss,
    grad_cache_step,
    zero_memory_bytes,
)

__all__ = [
    "DynamicLossScaler",
    "all_gather_with_grad",
    "chunked_clip_loss",
    "distributed_clip_loss",
    "grad_cache_step",
    "zero_memory_bytes",
]

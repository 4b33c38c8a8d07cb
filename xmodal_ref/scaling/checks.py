"""Checks for chapter 10 · scaling, one topical module each, gathered here where the registry looks for them.

* :mod:`.checks_distributed`: the gather and the distributed CLIP loss, on forked gloo ranks;
* :mod:`.checks_memory`: the chunked loss and the GradCache step, with a peak-live-memory bound;
* :mod:`.checks_precision`: ZeRO's model-state bytes, and loss scaling in lockstep with ``torch.amp.GradScaler``.
"""

from .checks_distributed import check_all_gather_with_grad, check_distributed_clip_loss
from .checks_memory import check_chunked_clip_loss, check_grad_cache_step
from .checks_precision import check_DynamicLossScaler, check_zero_memory_bytes

__all__ = [
    "check_DynamicLossScaler",
    "check_all_gather_with_grad",
    "check_chunked_clip_loss",
    "check_distributed_clip_loss",
    "check_grad_cache_step",
    "check_zero_memory_bytes",
]

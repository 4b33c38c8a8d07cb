"""Chapter 08 · video: frame sampling, temporal shift, tubelets, divided space-time attention, bottleneck fusion, GAP@k.

* ``reference.py``: the graded references (``from xmodal_ref.video import temporal_shift``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``recipe.py``: frame averaging, temporal shift, audio and fusion on a synthetic video+audio set.
"""

from .reference import (
    BottleneckFusionEncoder,
    DividedSpaceTimeBlock,
    TubeletEmbedding,
    gap_at_k,
    inflate_patch_weight,
    temporal_shift,
    tsn_sample_indices,
)

__all__ = [
    "BottleneckFusionEncoder",
    "DividedSpaceTimeBlock",
    "TubeletEmbedding",
    "gap_at_k",
    "inflate_patch_weight",
    "temporal_shift",
    "tsn_sample_indices",
]

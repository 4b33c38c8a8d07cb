"""Chapter 02 · attention: masked attention, multi-head cross-attention, cross-modal blocks, resamplers.

* ``reference.py``: the graded references (``from xmodal_ref.attention import scaled_dot_product_attention``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``demo.py``: the patch-attention captioning demo and its attention maps.
"""

from .reference import (
    CrossModalBlock,
    GatedCrossAttentionBlock,
    LearnedQueryResampler,
    MultiHeadCrossAttention,
    scaled_dot_product_attention,
)

__all__ = [
    "CrossModalBlock",
    "GatedCrossAttentionBlock",
    "LearnedQueryResampler",
    "MultiHeadCrossAttention",
    "scaled_dot_product_attention",
]

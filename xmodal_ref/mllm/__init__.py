"""Chapter 09 · mllm: the building blocks of a multimodal LLM, and a tiny LLaVA that uses them.

* ``reference.py``: the graded references (``from xmodal_ref.mllm import causal_lm_loss``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``recipe.py``: a tiny LLaVA on the shapes captions: frozen encoder, pixel shuffle, projector, cached decoder.
"""

from .reference import (
    CachedSelfAttention,
    MlpProjector,
    apply_rope,
    causal_lm_loss,
    merge_image_features,
    pixel_shuffle_tokens,
    qformer_attention_mask,
)

__all__ = [
    "CachedSelfAttention",
    "MlpProjector",
    "apply_rope",
    "causal_lm_loss",
    "merge_image_features",
    "pixel_shuffle_tokens",
    "qformer_attention_mask",
]

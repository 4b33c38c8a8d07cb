"""Chapter 03 · contrastive: CLIP and SigLIP losses, retrieval metrics, zero-shot, modality gap.

* ``reference.py``: the graded references (``from xmodal_ref.contrastive import clip_loss``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``mini_clip.py``: mini-CLIP on the shapes captions, and retrieval metrics.
"""

from .reference import LearnableLogitScale, clip_loss, modality_gap, recall_at_k, siglip_loss, zero_shot_logits

__all__ = ["LearnableLogitScale", "clip_loss", "modality_gap", "recall_at_k", "siglip_loss", "zero_shot_logits"]

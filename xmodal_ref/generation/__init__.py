"""Chapter 07 · generation: attention captioning, decoding, BLEU, and classifier-free guided diffusion.

* ``reference.py``: the graded references (``from xmodal_ref.generation import corpus_bleu``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``captioning.py``: a GRU captioner with soft attention on the shapes captions, greedy and beam decoding, BLEU.
* ``diffusion.py``: a conditional diffusion model in a PCA latent of shapes renders, sampled with guidance.
"""

from .reference import (
    SoftAttention,
    beam_search,
    caption_loss,
    corpus_bleu,
    ddpm_loss,
    filter_logits,
    guided_ddim_step,
)

__all__ = [
    "SoftAttention",
    "beam_search",
    "caption_loss",
    "corpus_bleu",
    "ddpm_loss",
    "filter_logits",
    "guided_ddim_step",
]

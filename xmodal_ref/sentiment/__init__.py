"""Chapter 05 · sentiment: audio front end, length-aware encoders, task weighting, MSA metrics.

* ``reference.py``: the graded references (``from xmodal_ref.sentiment import mel_filterbank``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``model.py``: unimodal baselines, late fusion and the multi-task text+audio model.
"""

from .reference import (
    SequenceEncoder,
    log_mel_spectrogram,
    masked_mean,
    mel_filterbank,
    msa_metrics,
    uncertainty_weighted_loss,
)

__all__ = [
    "SequenceEncoder",
    "log_mel_spectrogram",
    "masked_mean",
    "mel_filterbank",
    "msa_metrics",
    "uncertainty_weighted_loss",
]

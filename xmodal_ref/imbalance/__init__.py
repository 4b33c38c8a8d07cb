"""Chapter 06 · imbalance: diagnosing an under-used modality (probes, perceptual score, subsets, Shapley values) and
fixing it (OGM-GE, Gradient-Blending).

* ``reference.py``: the graded references (``from xmodal_ref.imbalance import shapley_values``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``recipe.py``: naive joint training, OGM-GE and the weak modality alone on a set with a lazy modality.
"""

from .reference import (
    gradient_blending_weights,
    ogm_ge_coefficients,
    ogm_ge_modulate,
    perceptual_score,
    ridge_probe_accuracy,
    shapley_values,
    subset_accuracies,
)

__all__ = [
    "gradient_blending_weights",
    "ogm_ge_coefficients",
    "ogm_ge_modulate",
    "perceptual_score",
    "ridge_probe_accuracy",
    "shapley_values",
    "subset_accuracies",
]

"""Chapter 00 · start: the warm-up exercise and the environment check.

* ``reference.py``: the graded references (``from xmodal_ref.start import cosine_similarity_matrix``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``environment.py``: the environment check notebook 00 runs.
"""

from .reference import cosine_similarity_matrix

__all__ = ["cosine_similarity_matrix"]

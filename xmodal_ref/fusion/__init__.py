"""Chapter 01 · fusion: tensor, low-rank and gated fusion, modality dropout.

* ``reference.py``: the graded references (``from xmodal_ref.fusion import tensor_fusion``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``experiment.py``: the fusion comparison on the sentiment corpus.
"""

from .reference import GatedMultimodalUnit, LowRankFusion, modality_dropout, tensor_fusion

__all__ = ["GatedMultimodalUnit", "LowRankFusion", "modality_dropout", "tensor_fusion"]

"""Chapter 04 · alignment: DTW, CTC, CCA, gradient reversal, the VSE++ hinge loss.

* ``reference.py``: the graded references (``from xmodal_ref.alignment import dtw``).
* ``checks.py``: ``check_<name>(learner, reference)`` for each exercise.
* ``temporal.py``: DTW and CTC temporal alignment demo.
* ``adversarial.py``: adversarial alignment with a gradient-reversal discriminator.
* ``cgan.py``: a conditional GAN on the shapes captions, judged by a separate classifier.
"""

from .reference import cca, ctc_loss, dtw, gradient_reversal, vsepp_loss

__all__ = ["cca", "ctc_loss", "dtw", "gradient_reversal", "vsepp_loss"]

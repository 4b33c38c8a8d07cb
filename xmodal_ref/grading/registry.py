"""The exercise registry: every graded exercise is declared here, once, by its id.

An id is ``chapter.name``. The rest follows from it by convention, so nothing is declared twice:

* the notebook is ``notebooks/NN_chapter.ipynb`` (``NN`` from :data:`CHAPTERS`);
* the learner defines ``name`` in a cell tagged ``exercise``;
* the reference is ``xmodal_ref.<chapter>.reference.<name>`` (the chapter's package re-exports it);
* the check is ``xmodal_ref.<chapter>.checks.check_<name>(learner, reference)``.

A new chapter is a package ``xmodal_ref/<chapter>/`` with those two modules, a line in :data:`CHAPTERS`
and its ids in :data:`EXERCISE_IDS`.

This module imports nothing heavy, so a command can list exercises without loading torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Chapter id → two-digit number. Numbers are stable (see DESIGN.md's syllabus map).
CHAPTERS: dict[str, str] = {
    "start": "00",
    "fusion": "01",
    "attention": "02",
    "contrastive": "03",
    "alignment": "04",
    "sentiment": "05",
    "imbalance": "06",
    "generation": "07",
    "video": "08",
    "mllm": "09",
    "scaling": "10",
}

EXERCISE_IDS: tuple[str, ...] = (
    "start.cosine_similarity_matrix",
    "fusion.tensor_fusion",
    "fusion.LowRankFusion",
    "fusion.GatedMultimodalUnit",
    "fusion.modality_dropout",
    "attention.scaled_dot_product_attention",
    "attention.MultiHeadCrossAttention",
    "attention.CrossModalBlock",
    "attention.LearnedQueryResampler",
    "attention.GatedCrossAttentionBlock",
    "contrastive.clip_loss",
    "contrastive.siglip_loss",
    "contrastive.recall_at_k",
    "contrastive.LearnableLogitScale",
    "contrastive.zero_shot_logits",
    "contrastive.modality_gap",
    "alignment.dtw",
    "alignment.ctc_loss",
    "alignment.cca",
    "alignment.gradient_reversal",
    "alignment.vsepp_loss",
    "sentiment.mel_filterbank",
    "sentiment.log_mel_spectrogram",
    "sentiment.masked_mean",
    "sentiment.SequenceEncoder",
    "sentiment.uncertainty_weighted_loss",
    "sentiment.msa_metrics",
    "imbalance.ogm_ge_coefficients",
    "imbalance.ogm_ge_modulate",
    "imbalance.gradient_blending_weights",
    "imbalance.perceptual_score",
    "imbalance.subset_accuracies",
    "imbalance.shapley_values",
    "imbalance.ridge_probe_accuracy",
    "generation.SoftAttention",
    "generation.caption_loss",
    "generation.beam_search",
    "generation.filter_logits",
    "generation.corpus_bleu",
    "generation.ddpm_loss",
    "generation.guided_ddim_step",
    "video.tsn_sample_indices",
    "video.temporal_shift",
    "video.TubeletEmbedding",
    "video.inflate_patch_weight",
    "video.DividedSpaceTimeBlock",
    "video.BottleneckFusionEncoder",
    "video.gap_at_k",
    "mllm.MlpProjector",
    "mllm.merge_image_features",
    "mllm.causal_lm_loss",
    "mllm.qformer_attention_mask",
    "mllm.apply_rope",
    "mllm.CachedSelfAttention",
    "mllm.pixel_shuffle_tokens",
    "scaling.all_gather_with_grad",
    "scaling.distributed_clip_loss",
    "scaling.chunked_clip_loss",
    "scaling.grad_cache_step",
    "scaling.zero_memory_bytes",
    "scaling.DynamicLossScaler",
)


@dataclass(frozen=True)
class Exercise:
    """One graded exercise; every field is derived from its id."""

    id: str

    @property
    def chapter(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def name(self) -> str:
        """The function or class the learner defines."""
        return self.id.split(".", 1)[1]

    @property
    def notebook(self) -> str:
        """File name of the notebook that holds the exercise, in notebooks/ and solutions/."""
        return f"{CHAPTERS[self.chapter]}_{self.chapter}.ipynb"

    def reference(self) -> Any:
        return getattr(importlib.import_module(f"xmodal_ref.{self.chapter}.reference"), self.name)

    def check(self) -> Callable[[Any, Any], None]:
        return getattr(importlib.import_module(f"xmodal_ref.{self.chapter}.checks"), f"check_{self.name}")


EXERCISES: dict[str, Exercise] = {exercise_id: Exercise(exercise_id) for exercise_id in EXERCISE_IDS}


def exercises_in_notebook(file_name: str) -> list[Exercise]:
    """The registered exercises whose notebook has this file name, in registry order."""
    return [exercise for exercise in EXERCISES.values() if exercise.notebook == file_name]


def exercise_by_name(name: str) -> Exercise | None:
    """The exercise whose learner-defined name is ``name`` (names are unique across chapters)."""
    return next((exercise for exercise in EXERCISES.values() if exercise.name == name), None)

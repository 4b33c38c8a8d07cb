"""Seeded dataset generators (nothing is downloaded) and loaders for public on-disk formats.

* :mod:`xmodal_ref.data.shapes`: image–caption pairs of coloured shapes (chapter 03).
* :mod:`xmodal_ref.data.features`: ``SentimentFeatures``, the format every sentiment model trains on (chapter 05).
* :mod:`xmodal_ref.data.sentiment`: a text + audio sentiment corpus with unimodal labels and a
  conflict subset, modelled on CH-SIMS, and its model features (chapter 05).
* :mod:`xmodal_ref.data.mmsa`: the MMSA toolkit's feature pickles of CMU-MOSI, CMU-MOSEI and
  CH-SIMS as ``SentimentFeatures``, and a tiny fixture in that layout (chapter 05).
* :mod:`xmodal_ref.data.imbalance`: two modalities, A strong but often missing and V complete but tiny in scale,
  so joint training under-trains V (chapter 06).
* :mod:`xmodal_ref.data.video`: clips of a moving square with a tone, direction × tone, where a "left" clip is the
  exact time reversal of a "right" one (chapter 08).
* :mod:`xmodal_ref.data.latent_pairs`: seeded pairs of two modalities sharing an 8-d latent (chapter 10).
"""

from .features import SentimentFeatures
from .imbalance import (
    ImbalanceWorld,
    TwoModalitySet,
    imbalance_splits,
    make_two_modality_set,
    make_world,
    simplex_means,
)
from .latent_pairs import LatentMaps, LatentPairs, latent_maps, make_latent_pairs
from .mmsa import load_mmsa, write_mmsa_fixture
from .sentiment import (
    SAMPLE_RATE,
    SentimentCorpus,
    corpus_features,
    make_sentiment_corpus,
    sentiment_splits,
)
from .shapes import (
    COLOURS,
    MAX_TOKENS,
    POSITIONS,
    SHAPES,
    TEMPLATES,
    VOCAB,
    ShapesCaptions,
    encode_captions,
    make_shapes_captions,
    shapes_splits,
    tokenize,
)
from .video import CLASSES as VIDEO_CLASSES
from .video import VideoAudioClips, make_video_audio_clips, video_splits

__all__ = [
    "COLOURS",
    "MAX_TOKENS",
    "POSITIONS",
    "SAMPLE_RATE",
    "SHAPES",
    "TEMPLATES",
    "VIDEO_CLASSES",
    "VOCAB",
    "ImbalanceWorld",
    "LatentMaps",
    "LatentPairs",
    "SentimentCorpus",
    "SentimentFeatures",
    "ShapesCaptions",
    "TwoModalitySet",
    "VideoAudioClips",
    "corpus_features",
    "encode_captions",
    "imbalance_splits",
    "latent_maps",
    "load_mmsa",
    "make_latent_pairs",
    "make_sentiment_corpus",
    "make_shapes_captions",
    "make_two_modality_set",
    "make_video_audio_clips",
    "make_world",
    "sentiment_splits",
    "shapes_splits",
    "simplex_means",
    "tokenize",
    "video_splits",
    "write_mmsa_fixture",
]

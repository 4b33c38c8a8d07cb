"""Seeded dataset generators (nothing is downloaded) and loaders for public on-disk formats.

* :mod:`xmodal_ref.data.shapes`: image–caption pairs of coloured shapes (chapter 03).
* :mod:`xmodal_ref.data.features`: ``SentimentFeatures``, the format every sentiment model trains on (chapter 05).
* :mod:`xmodal_ref.data.sentiment`: a text + audio sentiment corpus with unimodal labels and a
  conflict subset, modelled on CH-SIMS, and its model features (chapter 05).
* :mod:`xmodal_ref.data.mmsa`: the MMSA toolkit's feature pickles of CMU-MOSI, CMU-MOSEI and
  CH-SIMS as ``SentimentFeatures``, and a tiny fixture in that layout (chapter 05).
"""

from .features import SentimentFeatures
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

__all__ = [
    "COLOURS",
    "MAX_TOKENS",
    "POSITIONS",
    "SAMPLE_RATE",
    "SHAPES",
    "TEMPLATES",
    "VOCAB",
    "SentimentCorpus",
    "SentimentFeatures",
    "ShapesCaptions",
    "corpus_features",
    "encode_captions",
    "load_mmsa",
    "make_sentiment_corpus",
    "make_shapes_captions",
    "sentiment_splits",
    "shapes_splits",
    "tokenize",
    "write_mmsa_fixture",
]

"""Seeded dataset generators (nothing is downloaded) and loaders for public on-disk formats.

* :mod:`xmodal_ref.data.shapes`: image–caption pairs of coloured shapes (chapter 03).
"""

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
    "SHAPES",
    "TEMPLATES",
    "VOCAB",
    "ShapesCaptions",
    "encode_captions",
    "make_shapes_captions",
    "shapes_splits",
    "tokenize",
]

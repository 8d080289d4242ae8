"""Built-in synthetic dataset: shape x appearance objects on textured backgrounds, with base and
novel categories, COCO instance/panoptic annotations, few-shot splits and DAVIS-style videos.

``generate_synthetic(root, seed)`` writes ``<root>/synthetic``; see datasets/synthetic.md.
"""
from .categories import (
    BASE_CATEGORY_IDS,
    NOVEL_CATEGORY_IDS,
    STUFF_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    THING_CATEGORIES,
    get_synthetic_metadata,
    get_synthetic_panoptic_metadata,
)
from .generate import GENERATOR_VERSION, generate_synthetic
from .videos import davis_palette

__all__ = [
    "BASE_CATEGORY_IDS",
    "GENERATOR_VERSION",
    "NOVEL_CATEGORY_IDS",
    "STUFF_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "THING_CATEGORIES",
    "davis_palette",
    "generate_synthetic",
    "get_synthetic_metadata",
    "get_synthetic_panoptic_metadata",
]

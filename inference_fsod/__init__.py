"""Few-shot instance segmentation / detection with SINE (COCO-NOVEL, COCO2VOC; spec §7.2).

Importing the package registers the benchmark datasets (see ``register_fsod``). The evaluation
entry point is ``python -m inference_fsod.eval``; see inference_fsod/README.md.
"""
from . import register_fsod  # noqa: F401  (registers the datasets)
from .evaluation import NovelClassCOCOEvaluator, summarize_seeds
from .model import PrototypeInstanceSegmenter
from .prototype_cache import compute_prototypes, load_or_compute_prototypes

__all__ = [
    "NovelClassCOCOEvaluator",
    "PrototypeInstanceSegmenter",
    "compute_prototypes",
    "load_or_compute_prototypes",
    "summarize_seeds",
]

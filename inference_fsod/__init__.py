"""Few-shot instance segmentation / detection with SINE (COCO-NOVEL, COCO2VOC; spec §7.2).

``inference_fsod.register_fsod`` registers the benchmark datasets when it is imported, which
using any name below does (``import inference_fsod`` alone is light, so that ``--help`` answers
at once). The evaluation entry point is ``python -m inference_fsod.eval``; see
inference_fsod/README.md.
"""
import importlib

__all__ = [
    "BENCHMARK_NAMES",
    "NovelClassCOCOEvaluator",
    "PrototypeInstanceSegmenter",
    "compute_prototypes",
    "load_or_compute_prototypes",
    "summarize_seeds",
]

#: The keys of ``register_fsod.BENCHMARKS`` (the choices of ``--benchmark``), without importing it.
BENCHMARK_NAMES = ("coco", "voc", "synthetic")

# public name -> submodule defining it (PEP 562: imported on first use)
_LAZY = {
    "NovelClassCOCOEvaluator": ".evaluation",
    "summarize_seeds": ".evaluation",
    "PrototypeInstanceSegmenter": ".model",
    "compute_prototypes": ".prototype_cache",
    "load_or_compute_prototypes": ".prototype_cache",
}


def __getattr__(name):
    if name in _LAZY:
        importlib.import_module(".register_fsod", __name__)  # the datasets the names work on
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Few-shot semantic segmentation evaluation (spec §7.1): COCO-20i, PASCAL-5i, LVIS-92i, FSS-1000.

``inference_fss.benchmarks`` registers every benchmark fold (1- and 5-shot) under
``$DETECTRON2_DATASETS`` when it is imported, which using any name below does (``import
inference_fss`` alone is light, so that ``--help`` answers at once); ``sine.register_all()``
registers the synthetic episodes ``synthetic_fss_novel_{1,5}shot``. Run the evaluation with
``python -m inference_fss.eval``.
"""
import importlib

__all__ = ["BENCHMARKS", "BENCHMARK_NAMES", "dataset_name", "register_all_fss_benchmarks",
           "register_fss_benchmark"]

#: The keys of ``benchmarks.BENCHMARKS`` (the choices of ``--benchmark``), without importing it.
BENCHMARK_NAMES = ("coco", "pascal", "lvis", "fss1000", "pascal_part", "synthetic_parts")

_LAZY = {"BENCHMARKS", "dataset_name", "register_all_fss_benchmarks", "register_fss_benchmark"}


def __getattr__(name):
    if name in _LAZY:  # PEP 562: imported (and the folds registered) on first use
        return getattr(importlib.import_module(".benchmarks", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

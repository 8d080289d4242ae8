"""Few-shot semantic segmentation evaluation (spec §7.1): COCO-20i, PASCAL-5i, LVIS-92i, FSS-1000.

Importing this package registers every benchmark fold (1- and 5-shot) under
``$DETECTRON2_DATASETS`` (see ``benchmarks.py``); ``import sine`` registers the synthetic
episodes ``synthetic_fss_novel_{1,5}shot``. Run the evaluation with
``python -m inference_fss.eval``.
"""
from .benchmarks import (
    BENCHMARKS,
    dataset_name,
    register_all_fss_benchmarks,
    register_fss_benchmark,
)

__all__ = ["BENCHMARKS", "dataset_name", "register_all_fss_benchmarks", "register_fss_benchmark"]

register_all_fss_benchmarks()

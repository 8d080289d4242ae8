"""Novel-class COCO evaluation of the FSOD protocol and the mean/std summary over seeds."""
import contextlib
import io
import math
from typing import Dict, Iterable

import numpy as np
from detectron2.evaluation import COCOEvaluator
from pycocotools.coco import COCO
from tabulate import tabulate

from . import register_fsod  # noqa: F401  (registers the test sets it evaluates)

__all__ = ["NovelClassCOCOEvaluator", "restrict_to_categories", "summarize_seeds",
           "summary_table"]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TASKS = ("bbox", "segm")


def restrict_to_categories(coco: COCO, category_ids: Iterable[int]) -> COCO:
    """A COCO ground truth with only the given categories (and their annotations).

    Every image is kept, so this equals evaluating the full ground truth with
    ``COCOeval.params.catIds = category_ids`` (the official fsdet evaluator).
    """
    keep = set(category_ids)
    missing = keep - set(coco.getCatIds())
    if missing:
        raise ValueError(f"categories {sorted(missing)} are not in the ground-truth json; "
                         "check the dataset's thing_dataset_id_to_contiguous_id")
    data = dict(coco.dataset)
    data["categories"] = [c for c in data["categories"] if c["id"] in keep]
    data["annotations"] = [a for a in data.get("annotations", []) if a["category_id"] in keep]
    restricted = COCO()
    restricted.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        restricted.createIndex()
    return restricted


class NovelClassCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` (bbox + segm, official pycocotools COCOeval) whose ground
    truth is restricted to the dataset's classes, i.e. the keys of its metadata
    ``thing_dataset_id_to_contiguous_id`` (the novel classes).
    """

    def __init__(self, dataset_name: str, output_dir: str = None, distributed: bool = True):
        super().__init__(dataset_name, tasks=TASKS, distributed=distributed,
                         output_dir=output_dir, use_fast_impl=False)
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if not id_map:
            raise ValueError(f"dataset '{dataset_name}' has no thing_dataset_id_to_contiguous_id "
                             "in its metadata; load it (DatasetCatalog.get) before evaluating")
        self._id_map = dict(id_map)
        self._coco_api = restrict_to_categories(self._coco_api, self._id_map)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        # COCOeval orders classes by dataset id; name them in that order.
        if class_names is not None:
            class_names = [class_names[self._id_map[c]] for c in sorted(self._id_map)]
        return super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)


def summarize_seeds(per_seed: Dict[int, Dict]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) over seeds.

    Args:
        per_seed: seed -> {"bbox": {metric: value}, "segm": {...}} (COCOEvaluator results).
    Returns:
        {task: {metric: {"mean", "std"}}} for the standard COCO metrics.
    """
    summary = {}
    for task in TASKS:
        summary[task] = {}
        for metric in METRICS:
            values = np.array([r[task][metric] for r in per_seed.values()], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[task][metric] = {"mean": float(values.mean()), "std": std}
    return summary


def _fmt(stat):
    if math.isnan(stat["mean"]):
        return "nan"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def summary_table(summary: Dict, title: str) -> str:
    """Markdown table: one row per task (bbox, segm), mean ± std of every metric."""
    rows = [[task] + [_fmt(summary[task][m]) for m in METRICS] for task in TASKS]
    return title + "\n" + tabulate(rows, headers=["task"] + list(METRICS), tablefmt="pipe")

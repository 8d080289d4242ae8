"""Few-shot semantic segmentation metrics: mIoU and FB-IoU (spec §7.1).

Protocol of the official evaluation (HSNet-style): per episode the binary prediction and the
ground truth give background/foreground intersection and union counts (``histc`` with 2 bins on
[0, 1], so pixels whose ground truth is the ignore label are excluded from both). Counts are
summed per class over all episodes, then

* mIoU  = mean over the fold's classes of  fg-inter_c / max(fg-union_c, 1)  x 100
  (a fold class that was never sampled counts as IoU 0, as officially);
* FB-IoU = mean over {bg, fg} of  (sum_c inter_c) / (sum_c union_c)  x 100.
"""
import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["FSSEvaluator", "accumulate_fss", "episode_intersection_union", "fss_scores"]


def _as_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def episode_intersection_union(pred_mask, gt_mask, ignore_label=255):
    """Background/foreground intersection and union of one episode.

    Args:
        pred_mask: (H, W) binary prediction (bool or 0/1).
        gt_mask: (H, W) ground truth with values 0 (background), 1 (foreground) or
            ``ignore_label`` (excluded from both prediction and ground truth).
        ignore_label: value of ignored ground-truth pixels (255 on PASCAL-5i), or None.

    Returns:
        (inter, union): two int64 arrays of shape (2,), index 0 = background, 1 = foreground.
    """
    pred = _as_numpy(pred_mask)
    gt = _as_numpy(gt_mask).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction {pred.shape} and ground truth {gt.shape} differ in size; resize the "
            "prediction to the ground-truth resolution before evaluating"
        )
    valid = gt != ignore_label if ignore_label is not None else np.ones(gt.shape, bool)
    bad = valid & (gt != 0) & (gt != 1)
    if bad.any():
        raise ValueError(
            f"ground truth holds values {np.unique(gt[bad]).tolist()}; FSS masks must be "
            f"binary (0/1) plus the ignore label {ignore_label}"
        )
    pred = pred.astype(bool) & valid
    pred_bg = ~pred & valid
    gt_fg = gt == 1
    gt_bg = (gt == 0) & valid
    inter = np.array([(pred_bg & gt_bg).sum(), (pred & gt_fg).sum()], dtype=np.int64)
    area_pred = np.array([pred_bg.sum(), pred.sum()], dtype=np.int64)
    area_gt = np.array([gt_bg.sum(), gt_fg.sum()], dtype=np.int64)
    return inter, area_pred + area_gt - inter


def accumulate_fss(pred_masks, gt_masks, class_ids, ignore_label=255, totals=None):
    """Sum per-episode intersections and unions per class.

    Args:
        pred_masks: iterable of (H, W) binary predictions, one per episode.
        gt_masks: iterable of (H, W) ground truths (0/1/ignore), one per episode.
        class_ids: iterable of the episodes' class ids.
        ignore_label: see :func:`episode_intersection_union`.
        totals: optional ``{class_id: (inter (2,), union (2,))}`` to add to (updated in place).

    Returns:
        ``{class_id: (inter (2,), union (2,))}`` int64 sums, index 0 = bg, 1 = fg.
    """
    totals = {} if totals is None else totals
    for pred, gt, class_id in zip(pred_masks, gt_masks, class_ids, strict=True):
        inter, union = episode_intersection_union(pred, gt, ignore_label)
        key = int(class_id)
        if key in totals:
            totals[key] = (totals[key][0] + inter, totals[key][1] + union)
        else:
            totals[key] = (inter, union)
    return totals


def fss_scores(totals, class_ids=None):
    """mIoU and FB-IoU (in %) from per-class sums.

    Args:
        totals: ``{class_id: (inter (2,), union (2,))}`` from :func:`accumulate_fss`.
        class_ids: the fold's classes to average over (official: all test classes of the
            fold, sampled or not). None = the classes present in ``totals``.

    Returns:
        OrderedDict with ``mIoU``, ``FB-IoU`` and ``IoU-<class_id>`` for every class.
    """
    if class_ids is None:
        class_ids = sorted(totals)
    class_ids = [int(c) for c in class_ids]
    if not class_ids:
        raise ValueError("no class to average over: evaluate at least one episode")
    zeros = np.zeros(2, dtype=np.int64)
    inter = np.stack([totals.get(c, (zeros, zeros))[0] for c in class_ids]).astype(np.float64)
    union = np.stack([totals.get(c, (zeros, zeros))[1] for c in class_ids]).astype(np.float64)
    fg_iou = inter[:, 1] / np.maximum(union[:, 1], 1.0)
    with np.errstate(invalid="ignore"):
        fb_iou = np.mean(inter.sum(axis=0) / union.sum(axis=0)) * 100
    results = OrderedDict()
    results["mIoU"] = float(fg_iou.mean() * 100)
    results["FB-IoU"] = float(fb_iou)
    for c, iou in zip(class_ids, fg_iou):
        results[f"IoU-{c}"] = float(iou * 100)
    return results


class FSSEvaluator(DatasetEvaluator):
    """detectron2 evaluator for few-shot semantic segmentation episodes.

    ``process(inputs, outputs)`` expects, per episode:

    * ``input["sem_seg_gt"]``: (H, W) int mask, 0 = background, 1 = the episode's class,
      ``ignore_label`` = ignored;
    * ``input["class_id"]``: the episode's class id (as in the fold's class list);
    * ``output["sem_seg"]``: (H, W) or (C, H, W) float scores at the ground-truth resolution.
      With C > 1, ``input["sem_seg_channel"]`` selects the channel (default 0).

    The binary prediction is ``score > threshold`` (official FSS threshold 0.7, spec §5.1).

    Inputs with an ``"episode_id"`` are also recorded per episode, so that an interrupted run
    can be saved (:meth:`state`) and resumed (:meth:`load_state`), evaluating only the episodes
    not yet seen (:meth:`has_episode`); an episode id may be evaluated once.
    """

    def __init__(self, dataset_name=None, *, class_ids=None, threshold=0.7, ignore_label=None,
                 distributed=True, output_dir=None):
        """
        Args:
            dataset_name: optional registered dataset; its metadata ``fss_class_ids`` (the
                fold's classes) and ``ignore_label`` are used when not given here.
            class_ids: classes averaged by mIoU; None = metadata, else the classes seen.
            threshold: score threshold of the binary prediction.
            ignore_label: ignored ground-truth value; None = metadata, else 255.
            distributed: gather counts from all workers (evaluation then happens on rank 0).
            output_dir: if set, ``fss_results.json`` (scores and per-class counts) goes there.
        """
        meta = MetadataCatalog.get(dataset_name) if dataset_name else None
        if class_ids is None and meta is not None:
            class_ids = meta.get("fss_class_ids", None)
        if ignore_label is None:
            ignore_label = meta.get("ignore_label", 255) if meta is not None else 255
        self._class_ids = None if class_ids is None else [int(c) for c in class_ids]
        self._threshold = threshold
        self._ignore_label = ignore_label
        self._distributed = distributed
        self._output_dir = output_dir
        self.reset()

    def reset(self):
        self._totals = {}
        # episode id -> (class id, intersection (2,), union (2,)), index 0 = background.
        self._episodes = {}

    @property
    def num_episodes(self) -> int:
        """Episodes recorded (by :meth:`process` with episode ids, or :meth:`load_state`)."""
        return len(self._episodes)

    def has_episode(self, episode_id) -> bool:
        return int(episode_id) in self._episodes

    def add_episode(self, episode_id, class_id, inter, union):
        """Record one episode's background/foreground intersection and union (2,) counts."""
        episode_id, class_id = int(episode_id), int(class_id)
        if episode_id in self._episodes:
            raise ValueError(f"episode {episode_id} was already evaluated")
        inter, union = np.asarray(inter, np.int64), np.asarray(union, np.int64)
        self._episodes[episode_id] = (class_id, inter, union)
        self._add_counts(class_id, inter, union)

    def _add_counts(self, class_id, inter, union):
        if class_id in self._totals:
            old = self._totals[class_id]
            self._totals[class_id] = (old[0] + inter, old[1] + union)
        else:
            self._totals[class_id] = (inter.copy(), union.copy())

    def state(self):
        """JSON-able per-episode counts:
        ``{episode id: [class id, [inter bg, fg], [union bg, fg]]}``."""
        return {str(e): [c, i.tolist(), u.tolist()]
                for e, (c, i, u) in sorted(self._episodes.items())}

    def load_state(self, state):
        """Add the episodes of a :meth:`state` (e.g. saved by an interrupted run)."""
        for episode_id, (class_id, inter, union) in state.items():
            self.add_episode(episode_id, class_id, inter, union)

    def _binary_prediction(self, inp, out):
        scores = out["sem_seg"]
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(np.asarray(scores))
        if scores.dim() == 3:
            channel = int(inp.get("sem_seg_channel", 0))
            if channel >= scores.shape[0]:
                raise ValueError(
                    f"sem_seg has {scores.shape[0]} channels, sem_seg_channel={channel}"
                )
            scores = scores[channel]
        if scores.dim() != 2:
            raise ValueError(f"sem_seg must be (H, W) or (C, H, W), got {tuple(scores.shape)}")
        return (scores > self._threshold).cpu().numpy()

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs, strict=True):
            if "sem_seg_gt" not in inp or "class_id" not in inp:
                raise KeyError("FSSEvaluator inputs need 'sem_seg_gt' and 'class_id'")
            inter, union = episode_intersection_union(
                self._binary_prediction(inp, out), inp["sem_seg_gt"], self._ignore_label)
            if "episode_id" in inp:
                self.add_episode(inp["episode_id"], inp["class_id"], inter, union)
            else:
                self._add_counts(int(inp["class_id"]), inter, union)

    def _merged_totals(self):
        if not self._distributed:
            return self._totals
        comm.synchronize()
        gathered = comm.gather(self._totals, dst=0)
        if not comm.is_main_process():
            return None
        totals = {}
        for class_id, (inter, union) in itertools.chain(*(t.items() for t in gathered)):
            if class_id in totals:
                totals[class_id] = (totals[class_id][0] + inter, totals[class_id][1] + union)
            else:
                totals[class_id] = (inter.copy(), union.copy())
        return totals

    def evaluate(self):
        totals = self._merged_totals()
        if totals is None:
            return {}
        if not totals:
            logger.warning("FSSEvaluator received no episode; nothing to evaluate")
            return {}
        results = fss_scores(totals, self._class_ids)
        logger.info("FSS: mIoU %.2f  FB-IoU %.2f", results["mIoU"], results["FB-IoU"])
        if self._output_dir:
            self._save(results, totals)
        return OrderedDict({"fss": results})

    def _save(self, results, totals):
        counts = {
            str(c): {"intersection": inter.tolist(), "union": union.tolist()}
            for c, (inter, union) in sorted(totals.items())
        }
        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, "fss_results.json")
        with open(path, "w") as fh:
            json.dump({"scores": results, "counts_bg_fg": counts}, fh, indent=1)
        logger.info("FSS results written to %s", path)

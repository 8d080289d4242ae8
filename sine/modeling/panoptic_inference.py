"""Panoptic segmentation from the outputs of an in-context segmenter (things from "instances",
stuff from "sem_seg"), in the format of detectron2's ``COCOPanopticEvaluator``.

The rule (Mask2Former's panoptic inference, applied to SINE's two outputs):

1. **Things.** Instances whose class is a thing class and whose score is above
   ``instance_score_thresh`` are pasted in descending score order, each on the pixels no earlier
   segment holds. An instance is dropped when less than ``overlap_thresh`` of its mask is still
   free (Mask2Former: 0.8), or when nothing of it is free.
2. **Stuff.** Every pixel left takes the class of the highest ``sem_seg`` score (over all
   classes). Pixels whose best class is a stuff class form one segment per class; the segment is
   dropped when smaller than ``stuff_area_thresh`` pixels. Pixels whose best class is a thing class
   that no kept instance covers stay void (0): a thing is only ever an instance.
"""
from typing import Dict, Iterable, List, Tuple

import torch
from detectron2.structures import Instances

__all__ = ["panoptic_inference"]


def panoptic_inference(
    instances: Instances,
    sem_seg: torch.Tensor,
    sem_seg_classes: torch.Tensor,
    thing_classes: Iterable[int],
    *,
    instance_score_thresh: float = 0.5,
    overlap_thresh: float = 0.8,
    stuff_area_thresh: int = 0,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Combine instance and semantic results of one image into a panoptic segmentation.

    Args:
        instances: ``pred_masks`` (K, H, W) bool, ``scores`` (K,), ``pred_classes`` (K,).
        sem_seg: (C, H, W) per-class scores.
        sem_seg_classes: (C,) class id of every ``sem_seg`` channel.
        thing_classes: class ids that are things (the others are stuff).
        instance_score_thresh, overlap_thresh, stuff_area_thresh: see the module docstring.
    Returns:
        (panoptic_seg (H, W) int32 with 0 = void and segment ids 1, 2, ...; segments_info:
        one dict per segment with "id", "category_id" (class id), "isthing", "score" (things) or
        "area" (stuff)), the ``output["panoptic_seg"]`` that ``COCOPanopticEvaluator`` reads.
    """
    if sem_seg.dim() != 3 or sem_seg.shape[0] != len(sem_seg_classes):
        raise ValueError(f"sem_seg {tuple(sem_seg.shape)} does not match sem_seg_classes "
                         f"{tuple(sem_seg_classes.shape)}: expected (C, H, W) and (C,)")
    if len(instances) and tuple(instances.pred_masks.shape[-2:]) != tuple(sem_seg.shape[-2:]):
        raise ValueError(f"instance masks {tuple(instances.pred_masks.shape[-2:])} and sem_seg "
                         f"{tuple(sem_seg.shape[-2:])} must have the same size")
    things = {int(c) for c in thing_classes}
    panoptic = torch.zeros(sem_seg.shape[-2:], dtype=torch.int32, device=sem_seg.device)
    segments = []
    order = torch.argsort(instances.scores, descending=True, stable=True) if len(instances) \
        else torch.zeros(0, dtype=torch.long)
    for k in order.tolist():
        score, category = float(instances.scores[k]), int(instances.pred_classes[k])
        if category not in things or score <= instance_score_thresh:
            continue
        mask = instances.pred_masks[k].to(panoptic.device).bool()
        free = mask & (panoptic == 0)
        area, free_area = int(mask.sum()), int(free.sum())
        if free_area == 0 or free_area < overlap_thresh * area:
            continue
        segment_id = len(segments) + 1
        panoptic[free] = segment_id
        segments.append({"id": segment_id, "category_id": category, "isthing": True,
                         "score": score})
    best = sem_seg_classes.to(sem_seg.device)[sem_seg.argmax(dim=0)]
    left = panoptic == 0
    for category in torch.unique(best[left]).tolist():
        if category in things:
            continue
        region = left & (best == category)
        area = int(region.sum())
        if area == 0 or area < stuff_area_thresh:
            continue
        segment_id = len(segments) + 1
        panoptic[region] = segment_id
        segments.append({"id": segment_id, "category_id": int(category), "isthing": False,
                         "area": area})
    return panoptic, segments

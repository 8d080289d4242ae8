"""Turn raw SINE decoder outputs of one target into semantic / instance / ID results (spec §5).

Pure functions. Mask logits come at the 4x feature grid (mh x mw); they are bilinearly upsampled
to the padded input size, cropped to the image content and resized to the output size
(detectron2's ``sem_seg_postprocess``), in the same order as the official code.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, Instances

__all__ = [
    "identity_inference",
    "instance_inference",
    "masks_to_boxes",
    "resize_mask_logits",
    "semantic_inference",
]


def _upsample(mask_logits: torch.Tensor, padded_size: Tuple[int, int]) -> torch.Tensor:
    return F.interpolate(
        mask_logits[None], size=padded_size, mode="bilinear", align_corners=False
    )[0]


def resize_mask_logits(
    mask_logits: torch.Tensor,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
) -> torch.Tensor:
    """(Q, mh, mw) logits -> (Q, H, W) logits at the output size.

    Args:
        mask_logits: (Q, mh, mw) mask logits.
        padded_size: (Hp, Wp) size of the padded model input.
        image_size: (h, w) image content inside the padded input (top-left).
        output_size: (H, W) requested output size (usually the original image size).
    """
    return sem_seg_postprocess(_upsample(mask_logits, padded_size), image_size, *output_size)


def semantic_inference(
    ins_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
) -> torch.Tensor:
    """Per-class map ``sum_q softmax(logits)[q, c] * sigmoid(mask_q)`` (spec §5.1).

    Computed at the padded resolution, then cropped and resized. Values are not bounded by 1.

    Args:
        ins_logits: (nq, nc + 1) class logits, last column = no object.
        mask_logits: (nq, mh, mw) mask logits.
    Returns:
        (nc, H, W) float map.
    """
    probs = F.softmax(ins_logits, dim=-1)[:, :-1]
    masks = _upsample(mask_logits, padded_size).sigmoid()
    semseg = torch.einsum("qc,qhw->chw", probs, masks)
    return sem_seg_postprocess(semseg, image_size, *output_size)


def masks_to_boxes(masks: torch.Tensor) -> Boxes:
    """Tight XYXY boxes of (K, H, W) bool masks: (x_min, y_min, x_max, y_max) pixel indices.

    As the official FSOD path: no +1 on the max side, and [0, 0, 1, 1] for an empty mask.
    """
    boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32, device=masks.device)
    boxes[:, 2:] = 1.0
    for i, mask in enumerate(masks):
        ys = torch.where(mask.any(dim=1))[0]
        xs = torch.where(mask.any(dim=0))[0]
        if len(ys):
            boxes[i] = torch.stack([xs[0], ys[0], xs[-1], ys[-1]]).float()
    return Boxes(boxes)


def _scored_instances(
    cls_scores: torch.Tensor,
    query_index: torch.Tensor,
    mask_logits: torch.Tensor,
    score_thresh: float,
) -> Tuple[Instances, torch.Tensor]:
    """Score = class score x mean foreground probability; keep > thresh, sort descending.

    Args:
        cls_scores: (K,) class scores of the candidates.
        query_index: (K,) mask index of every candidate.
        mask_logits: (Q, H, W) mask logits at the output size.
    Returns:
        (Instances with pred_masks, pred_boxes, scores; kept candidate indices (K',)).
    """
    masks = mask_logits[query_index]
    binary = masks > 0
    fg = binary.flatten(1).float()
    mask_scores = (masks.sigmoid().flatten(1) * fg).sum(1) / (fg.sum(1) + 1e-6)
    scores = cls_scores * mask_scores
    keep = torch.where(scores > score_thresh)[0]
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
    result = Instances(tuple(mask_logits.shape[-2:]))
    result.pred_masks = binary[keep]
    result.pred_boxes = masks_to_boxes(result.pred_masks)
    result.scores = scores[keep]
    return result, keep


def instance_inference(
    ins_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    class_ids: torch.Tensor,
    topk: int,
    score_thresh: float,
) -> Instances:
    """Instance results from the instance queries (spec §5.2).

    Every (query, class) pair is a candidate; the ``topk`` best class scores are kept, then
    rescored by their mask and thresholded.

    Args:
        ins_logits: (nq, nc + 1) class logits (last = no object).
        mask_logits: (nq, H, W) mask logits at the output size.
        class_ids: (nc,) class id of every logit column.
        topk: candidates kept before scoring by mask.
        score_thresh: keep final scores strictly above this.
    Returns:
        Instances (sorted by score, descending): pred_masks (K, H, W) bool, pred_boxes, scores,
        pred_classes int64 class ids.
    """
    nq, nc = ins_logits.shape[0], ins_logits.shape[1] - 1
    scores = F.softmax(ins_logits, dim=-1)[:, :-1].flatten()
    cls_scores, index = scores.topk(min(topk, nq * nc), sorted=True)
    result, keep = _scored_instances(cls_scores, index // nc, mask_logits, score_thresh)
    result.pred_classes = class_ids[index % nc][keep].long()
    return result


def identity_inference(
    id_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    class_ids: torch.Tensor,
    instance_ids: torch.Tensor,
    topk: int,
    score_thresh: float,
) -> Instances:
    """ID results: the target segment of every reference mask (spec §5.3).

    Args:
        id_logits: (nm, 2) [object, no object] logits of the ID tokens.
        mask_logits: (nm, H, W) mask logits at the output size.
        class_ids: (nm,) class id of every reference mask.
        instance_ids: (nm,) instance id of every reference mask.
        topk: candidates kept before scoring by mask.
        score_thresh: keep final scores strictly above this.
    Returns:
        Instances (sorted by score, descending): pred_masks, pred_boxes, scores, pred_classes
        int64 and pred_ids int64 (the reference instance id each result belongs to).
    """
    scores = F.softmax(id_logits, dim=-1)[:, 0]
    cls_scores, index = scores.topk(min(topk, scores.numel()), sorted=True)
    result, keep = _scored_instances(cls_scores, index, mask_logits, score_thresh)
    result.pred_classes = class_ids[index][keep].long()
    result.pred_ids = instance_ids[index][keep].long()
    return result

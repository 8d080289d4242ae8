"""Turn raw SINE decoder outputs of one target into semantic / instance / ID results (spec §5).

Pure functions. Mask logits come at the 4x feature grid (mh x mw); they are bilinearly upsampled
to the padded input size, cropped to the image content and resized to the output size
(detectron2's ``sem_seg_postprocess``), in the same order as the official code.

The fast path (``MODEL.SINE.FAST_INFERENCE``) wraps the logits in :class:`ResizedMaskLogits`,
which computes the same numbers (up to float rounding) but only where they are returned: the
padded area is never upsampled, the upsampled logits are shared by all result types, and only
the queries a result keeps are resized to the output size.
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, Instances

__all__ = [
    "ResizedMaskLogits",
    "identity_inference",
    "instance_inference",
    "masks_to_boxes",
    "resize_mask_logits",
    "semantic_inference",
    "semantic_inference_resized",
]

# Elements per chunk when streaming over rows / queries: bounds the temporaries of the fast path.
_CHUNK_ELEMENTS = 1 << 23


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


def _content_rows(in_size: int, out_size: int, content: int) -> Tuple[int, int]:
    """(input rows, output rows) to upsample so that the first ``content`` output rows are
    those of the full ``in_size -> out_size`` bilinear upsampling.

    PyTorch maps output row y to input ``(y + 0.5) * in / out - 0.5``: an input crop of ``k * a``
    rows upsampled to ``k * A`` rows (``a / A = in / out`` in lowest terms) has the same scale,
    hence the same source rows and weights; one extra period keeps the bottom-edge clamp away
    from the kept rows. Falls back to the full size when no such crop is smaller.
    """
    g = math.gcd(in_size, out_size)
    a, period = in_size // g, out_size // g
    k = -(-(content + period) // period)
    if k * a >= in_size:
        return in_size, out_size
    return k * a, k * period


class ResizedMaskLogits:
    """(Q, mh, mw) mask logits viewed at the output size; resized only where read (fast path).

    ``self[index]`` equals ``resize_mask_logits(mask_logits, ...)[index]`` up to float rounding.
    Duck-types the (Q, H, W) tensor that :func:`instance_inference` and
    :func:`identity_inference` take.
    """

    def __init__(
        self,
        mask_logits: torch.Tensor,
        padded_size: Tuple[int, int],
        image_size: Tuple[int, int],
        output_size: Tuple[int, int],
    ):
        self.mask_logits = mask_logits
        self.padded_size = tuple(padded_size)
        self.image_size = tuple(image_size)
        self.output_size = tuple(output_size)
        self._at_image_size: Optional[torch.Tensor] = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.mask_logits.shape[0], *self.output_size))

    def __len__(self) -> int:
        return self.mask_logits.shape[0]

    def at_image_size(self, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(Q', h, w) logits upsampled to the padded size and cropped to the image content."""
        if index is not None and self._at_image_size is None:
            return self._upsample_content(self.mask_logits[index])
        if self._at_image_size is None:
            self._at_image_size = self._upsample_content(self.mask_logits)
        return self._at_image_size if index is None else self._at_image_size[index]

    def _upsample_content(self, logits: torch.Tensor) -> torch.Tensor:
        (h, w), (ph, pw) = self.image_size, self.padded_size
        rows, out_rows = _content_rows(logits.shape[-2], ph, h)
        cols, out_cols = _content_rows(logits.shape[-1], pw, w)
        logits = logits[:, :rows, :cols].contiguous()
        return _upsample(logits, (out_rows, out_cols))[:, :h, :w]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """(len(index), H, W) logits of the queries ``index`` at the output size."""
        return _resize_to(self.at_image_size(index), self.output_size)


def _resize_to(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, h, w) to ``size``; same-size resizing is the identity, skipped."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def _row_chunks(num_rows: int, row_elements: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, row_elements))
    return [slice(r, min(r + step, num_rows)) for r in range(0, num_rows, step)]


def semantic_inference_resized(ins_logits: torch.Tensor, masks: ResizedMaskLogits) -> torch.Tensor:
    """:func:`semantic_inference` on the fast path: (nq, nc + 1) logits -> (nc, H, W).

    Only the image content is upsampled, and the sigmoid is streamed over row chunks.
    """
    probs = F.softmax(ins_logits, dim=-1)[:, :-1]
    logits = masks.at_image_size()
    q, h, w = logits.shape
    semseg = logits.new_empty((probs.shape[1], h, w))
    for rows in _row_chunks(h, q * w):
        semseg[:, rows] = torch.einsum("qc,qhw->chw", probs, logits[:, rows].sigmoid())
    return _resize_to(semseg, masks.output_size)


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
    if masks.shape[0] == 0:
        return Boxes(boxes)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (K, H), (K, W)
    nonempty = rows.any(dim=1)

    def first_last(hits):
        first = hits.int().argmax(dim=1)
        last = hits.shape[1] - 1 - hits.flip(1).int().argmax(dim=1)
        return first, last

    (y0, y1), (x0, x1) = first_last(rows), first_last(cols)
    found = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[nonempty] = found[nonempty]
    return Boxes(boxes)


MaskLogits = Union[torch.Tensor, ResizedMaskLogits]


def _binary_masks_and_scores(mask_logits: MaskLogits, query_index: torch.Tensor):
    """Binary masks ``logit > 0`` and mean foreground probabilities of the candidates.

    Returns (masks (U, H, W) bool, scores (K,), rows (K,)): candidate k has mask
    ``masks[rows[k]]``. For a :class:`ResizedMaskLogits` every distinct query is resized once,
    in chunks, and no float (K, H, W) tensor is kept; a plain tensor is read as the official
    code does.
    """
    if not isinstance(mask_logits, ResizedMaskLogits):
        masks = mask_logits[query_index]
        binary = masks > 0
        fg = binary.flatten(1).float()
        scores = (masks.sigmoid().flatten(1) * fg).sum(1) / (fg.sum(1) + 1e-6)
        return binary, scores, torch.arange(len(binary), device=binary.device)
    queries, inverse = torch.unique(query_index, return_inverse=True)
    height, width = mask_logits.output_size
    binary = torch.empty((len(queries), height, width), dtype=torch.bool,
                         device=query_index.device)
    scores = torch.empty(len(queries), device=query_index.device)
    for chunk in _row_chunks(len(queries), height * width):
        masks = mask_logits[queries[chunk]]
        binary[chunk] = masks > 0
        fg = binary[chunk].flatten(1).float()
        scores[chunk] = (masks.sigmoid().flatten(1) * fg).sum(1) / (fg.sum(1) + 1e-6)
    return binary, scores[inverse], inverse


def _scored_instances(
    cls_scores: torch.Tensor,
    query_index: torch.Tensor,
    mask_logits: MaskLogits,
    score_thresh: float,
) -> Tuple[Instances, torch.Tensor]:
    """Score = class score x mean foreground probability; keep > thresh, sort descending.

    Args:
        cls_scores: (K,) class scores of the candidates.
        query_index: (K,) mask index of every candidate.
        mask_logits: (Q, H, W) mask logits at the output size (or a ResizedMaskLogits).
    Returns:
        (Instances with pred_masks, pred_boxes, scores; kept candidate indices (K',)).
    """
    binary, mask_scores, rows = _binary_masks_and_scores(mask_logits, query_index)
    scores = cls_scores * mask_scores
    keep = torch.where(scores > score_thresh)[0]
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
    result = Instances(tuple(mask_logits.shape[-2:]))
    result.pred_masks = binary[rows[keep]]
    result.pred_boxes = masks_to_boxes(result.pred_masks)
    result.scores = scores[keep]
    return result, keep


def instance_inference(
    ins_logits: torch.Tensor,
    mask_logits: MaskLogits,
    class_ids: torch.Tensor,
    topk: int,
    score_thresh: float,
) -> Instances:
    """Instance results from the instance queries (spec §5.2).

    Every (query, class) pair is a candidate; the ``topk`` best class scores are kept, then
    rescored by their mask and thresholded.

    Args:
        ins_logits: (nq, nc + 1) class logits (last = no object).
        mask_logits: (nq, H, W) mask logits at the output size, or a ResizedMaskLogits.
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
    mask_logits: MaskLogits,
    class_ids: torch.Tensor,
    instance_ids: torch.Tensor,
    topk: int,
    score_thresh: float,
) -> Instances:
    """ID results: the target segment of every reference mask (spec §5.3).

    Args:
        id_logits: (nm, 2) [object, no object] logits of the ID tokens.
        mask_logits: (nm, H, W) mask logits at the output size, or a ResizedMaskLogits.
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

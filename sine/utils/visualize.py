"""Draw SINE results of one target: the reference, then ID, instance and semantic panels.

    canvas = draw_result(target, result, sem_thresh=0.7, score_thresh=0.5,
                         names={0: "cat"}, reference=draw_reference(ref, masks, [0]),
                         max_side=1600)

Everything is drawn at most ``max_side`` pixels per side (masks are subsampled, never the
saved full-resolution results), so a 9000 x 9000 target costs what a 1600 x 1600 one does.
Labels carry category names when known, are sized to the panel and never overlap each other.
Colours: reference / ID objects by reference id (the same object keeps its colour on every
target), instances by rank, semantic regions by class id.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "PANEL_GAP",
    "Panel",
    "caption_height",
    "draw_identity",
    "draw_instances",
    "draw_panels",
    "draw_reference",
    "draw_result",
    "draw_semantic",
    "fit_size",
    "semantic_masks",
    "side_by_side",
]

PANEL_GAP = 8  # white pixels between panels


def _colormap() -> np.ndarray:
    """(74, 3) floats in [0, 1]: detectron2's colour map, without importing detectron2."""
    try:
        from detectron2.utils.colormap import colormap

        return colormap(rgb=True, maximum=1)
    except ImportError:  # pragma: no cover
        return np.random.default_rng(0).uniform(0.2, 1.0, (74, 3))


_PALETTE = _colormap()


@dataclass
class Panel:
    """One drawn granularity: an (h, w, 3) uint8 RGB overlay and its caption."""

    image: np.ndarray
    caption: str


def _colour(index: int) -> np.ndarray:
    return _PALETTE[int(index) % len(_PALETTE)]


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


MIN_SIDE = 320  # smaller images are drawn enlarged, so that their labels stay readable


def fit_size(h: int, w: int, max_side: Optional[int], min_side: int = MIN_SIDE
             ) -> Tuple[int, int]:
    """Drawing size of an (h, w) image: longer side at most ``max_side``, at least
    ``min_side`` (tiny images are enlarged; ``max_side`` wins if smaller)."""
    side = max(h, w)
    target = side
    if min_side and side < min_side:
        target = min_side
    if max_side and target > max_side:
        target = max_side
    if target == side:
        return h, w
    s = target / side
    return max(1, round(h * s)), max(1, round(w * s))


def _shrink_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return np.ascontiguousarray(image)
    shrink = size[0] < image.shape[0]
    return cv2.resize(image, (size[1], size[0]),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


def _sample_rows_cols(src: Tuple[int, int], dst: Tuple[int, int]):
    ys = ((np.arange(dst[0]) + 0.5) * src[0] / dst[0]).astype(np.int64)
    xs = ((np.arange(dst[1]) + 0.5) * src[1] / dst[1]).astype(np.int64)
    return ys, xs


def _shrink_masks(masks, size: Tuple[int, int]) -> np.ndarray:
    """(N, H, W) masks (array or tensor) -> (N, h, w) bool by nearest sampling; only the
    sampled pixels are read, so no full-size copy is made."""
    if len(masks) == 0:
        return np.zeros((0, *size), bool)
    src = tuple(masks.shape[-2:])
    if src == tuple(size):
        return _numpy(masks).astype(bool)
    ys, xs = _sample_rows_cols(src, size)
    if hasattr(masks, "detach"):
        import torch

        ys_t = torch.as_tensor(ys, device=masks.device)
        xs_t = torch.as_tensor(xs, device=masks.device)
        return _numpy(masks.index_select(-2, ys_t).index_select(-1, xs_t)).astype(bool)
    return np.asarray(masks)[:, ys][:, :, xs].astype(bool)


def font_scale(h: int, w: int) -> float:
    """cv2 font scale for labels of an (h, w) panel: readable from 64 px to any capped size."""
    return float(np.clip(min(h, w) / 700, 0.3, 2.0))


def _overlay(image: np.ndarray, masks: np.ndarray, colours: Sequence[np.ndarray],
             alpha: float = 0.5) -> np.ndarray:
    """(h, w, 3) uint8 + (N, h, w) bool -> tinted copy with each mask's outline drawn."""
    out = image.astype(np.float32)
    for mask, colour in zip(masks, colours):
        out[mask] = (1 - alpha) * out[mask] + alpha * 255 * np.asarray(colour, np.float32)
    out = out.round().clip(0, 255).astype(np.uint8)
    thickness = max(1, round(min(image.shape[:2]) / 300))
    for mask, colour in zip(masks, colours):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        rgb = tuple(int(c) for c in (255 * np.asarray(colour) * 0.7))
        cv2.drawContours(out, contours, -1, rgb, thickness, cv2.LINE_AA)
    return out


def _anchor(mask: np.ndarray) -> Tuple[int, int]:
    """A point inside the mask near its centre (x, y)."""
    ys, xs = np.nonzero(mask)
    i = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(xs[i]), int(ys[i])


def _overlaps(box, boxes) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in boxes)


def place_labels(h: int, w: int, labels: Sequence[Tuple[str, Tuple[int, int]]]
                 ) -> List[Tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) for ``(text, anchor)`` labels on an (h, w) panel: each near its
    anchor, inside the panel, none overlapping another (shifted down / up as needed)."""
    scale = font_scale(h, w)
    thick = max(1, round(scale * 1.5))
    boxes: List[Tuple[int, int, int, int]] = []
    for text, (ax, ay) in labels:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        bw, bh = min(tw + 6, w), th + base + 6
        x0 = int(np.clip(ax - bw // 2, 0, max(0, w - bw)))
        y_start = int(np.clip(ay - bh // 2, 0, max(0, h - bh)))
        candidates = [y_start] + [y for k in range(1, 2 * (h // max(bh, 1)) + 2)
                                  for y in (y_start + k * bh, y_start - k * bh)
                                  if 0 <= y <= h - bh]
        box = None
        for y in candidates:
            trial = (x0, y, x0 + bw, y + bh)
            if not _overlaps(trial, boxes):
                box = trial
                break
        boxes.append(box or (x0, y_start, x0 + bw, y_start + bh))  # panel full: overlap
    return boxes


def _draw_labels(image: np.ndarray, labels: Sequence[Tuple[str, Tuple[int, int], np.ndarray]]):
    """Draw ``(text, anchor, colour)`` labels in place, non-overlapping (see place_labels)."""
    h, w = image.shape[:2]
    boxes = place_labels(h, w, [(t, a) for t, a, _ in labels])
    scale = font_scale(h, w)
    thick = max(1, round(scale * 1.5))
    for (text, _, colour), (x0, y0, x1, y1) in zip(labels, boxes):
        bg = tuple(int(c) for c in 255 * np.asarray(colour) * 0.6)
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), bg, -1)
        (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.putText(image, text, (x0 + 3, y0 + 3 + th), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return image


def _name(cls, names: Optional[Dict[int, str]]) -> str:
    cls = int(cls)
    return names.get(cls, f"class {cls}") if names else f"class {cls}"


def _draw(image, masks, texts, colours) -> np.ndarray:
    out = _overlay(image, masks, colours)
    labels = [(t, _anchor(m), c) for t, m, c in zip(texts, masks, colours)]
    return _draw_labels(out, labels)


def draw_reference(image: np.ndarray, masks, classes, names: Optional[Dict[int, str]] = None,
                   max_side: Optional[int] = None) -> Panel:
    """The reference image with its masks, each labelled "#k name" (k = reference id)."""
    size = fit_size(*image.shape[:2], max_side)
    small, masks = _shrink_image(image, size), _shrink_masks(masks, size)
    classes = [int(c) for c in _numpy(classes)]
    texts = [f"#{k} {_name(c, names)}" for k, c in enumerate(classes)]
    return Panel(_draw(small, masks, texts, [_colour(k) for k in range(len(masks))]),
                 f"Reference: {len(masks)} object(s)")


def draw_identity(image: np.ndarray, ids, names: Optional[Dict[int, str]] = None) -> Panel:
    """Each target segment of a reference object, coloured by that object's reference id.

    Args:
        image: (h, w, 3) uint8 RGB target (masks are sampled down to its size).
        ids: ``Instances`` of ``result["id"]`` (pred_masks (K, H, W), pred_ids, scores,
            pred_classes).
    """
    size = image.shape[:2]
    ref_ids, scores = _numpy(ids.pred_ids), _numpy(ids.scores)
    classes = _numpy(ids.pred_classes) if ids.has("pred_classes") else np.zeros_like(ref_ids)
    masks = _shrink_masks(ids.pred_masks, size)
    shown = [i for i in range(len(masks)) if masks[i].any()]
    texts = [f"#{ref_ids[i]} {_name(classes[i], names)} {scores[i]:.2f}" for i in shown]
    found = ", ".join(f"#{ref_ids[i]}" for i in sorted(shown, key=lambda i: ref_ids[i]))
    caption = (f"Same object as reference {found}" if shown
               else "Same object: none of the references found")
    return Panel(_draw(image, masks[shown], texts, [_colour(ref_ids[i]) for i in shown]), caption)


def draw_instances(image: np.ndarray, instances, score_thresh: float,
                   names: Optional[Dict[int, str]] = None) -> Panel:
    """Every instance of the reference classes scoring above ``score_thresh``, one colour each."""
    classes, scores = _numpy(instances.pred_classes), _numpy(instances.scores)
    keep = [i for i in range(len(scores)) if scores[i] > score_thresh]
    masks = _shrink_masks(instances.pred_masks[keep] if keep else instances.pred_masks[:0],
                          image.shape[:2])
    shown = [j for j in range(len(keep)) if masks[j].any()]
    texts = [f"{_name(classes[keep[j]], names)} {scores[keep[j]]:.2f}" for j in shown]
    colours = [_colour(rank) for rank in range(len(shown))]
    caption = f"Instances: {len(shown)} with score > {score_thresh:g}"
    return Panel(_draw(image, masks[shown], texts, colours), caption)


def semantic_masks(sem_seg, sem_thresh: float) -> np.ndarray:
    """(C, H, W) semantic scores -> (C, H, W) bool regions (score > ``sem_thresh``)."""
    return _numpy(sem_seg) > sem_thresh


def draw_semantic(image: np.ndarray, sem_seg, classes, sem_thresh: float,
                  names: Optional[Dict[int, str]] = None) -> Panel:
    """The thresholded semantic region of every reference class, coloured by class id."""
    size = image.shape[:2]
    if tuple(sem_seg.shape[-2:]) != tuple(size):
        ys, xs = _sample_rows_cols(tuple(sem_seg.shape[-2:]), size)
        scores = _numpy(sem_seg)[:, ys][:, :, xs] if not hasattr(sem_seg, "detach") else \
            _shrink_scores(sem_seg, ys, xs)
    else:
        scores = _numpy(sem_seg)
    masks, classes = scores > sem_thresh, [int(c) for c in _numpy(classes)]
    shown = [i for i in range(len(masks)) if masks[i].any()]
    texts = [_name(classes[i], names) for i in shown]
    found = ", ".join(texts) or "none"
    caption = f"Semantic (> {sem_thresh:g}): {found}"
    return Panel(_draw(image, masks[shown], texts, [_colour(classes[i]) for i in shown]), caption)


def _shrink_scores(t, ys, xs) -> np.ndarray:
    import torch

    ys_t, xs_t = torch.as_tensor(ys, device=t.device), torch.as_tensor(xs, device=t.device)
    return _numpy(t.index_select(-2, ys_t).index_select(-1, xs_t))


def draw_panels(image: np.ndarray, result: Dict, sem_thresh: float, score_thresh: float,
                names: Optional[Dict[int, str]] = None, max_side: Optional[int] = None,
                min_side: int = MIN_SIDE) -> Dict[str, Panel]:
    """The enabled granularities of ``result`` (``InContextPredictor.predict``) as panels.

    Returns:
        {"id", "instances", "semantic"} -> Panel, in that order, for those in ``result``,
        drawn at :func:`fit_size` (``max_side``, ``min_side``) of the image.
    """
    image = _shrink_image(image, fit_size(*image.shape[:2], max_side, min_side))
    panels = {}
    if "id" in result:
        panels["id"] = draw_identity(image, result["id"], names)
    if "instances" in result:
        panels["instances"] = draw_instances(image, result["instances"], score_thresh, names)
    if "sem_seg" in result:
        panels["semantic"] = draw_semantic(image, result["sem_seg"], result["sem_seg_classes"],
                                           sem_thresh, names)
    return panels


def draw_result(image: np.ndarray, result: Dict, sem_thresh: float, score_thresh: float,
                names: Optional[Dict[int, str]] = None, reference: Optional[Panel] = None,
                max_side: Optional[int] = None) -> np.ndarray:
    """The reference panel (scaled to the target panels' height) and the result panels."""
    panels = list(draw_panels(image, result, sem_thresh, score_thresh, names, max_side).values())
    if reference is not None and panels:
        h = panels[0].image.shape[0]
        rh, rw = reference.image.shape[:2]
        size = (h, max(1, round(rw * h / rh)))
        resized = cv2.resize(reference.image, (size[1], size[0]),
                             interpolation=cv2.INTER_AREA if rh > h else cv2.INTER_LINEAR)
        panels.insert(0, Panel(resized, reference.caption))
    return side_by_side(panels)


def caption_height(width: int) -> int:
    """Height of one caption line above panels of (largest) size ``width`` pixels."""
    return max(24, round(width * 0.05))


def _wrap(text: str, width: int, scale: float, thickness: int) -> List[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide."""
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}".strip()
        size = cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0]
        if line and size[0] > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def side_by_side(panels: Sequence[Panel], gap: Optional[int] = None) -> np.ndarray:
    """Panels -> one (captions + H, sum of widths + gaps, 3) uint8 image.

    Captions share one font size (from the largest panel) and wrap onto several lines rather
    than shrink on narrow panels; shorter panels are padded with white at the bottom.
    """
    gap = PANEL_GAP if gap is None else gap
    line_h = caption_height(max(max(p.image.shape[:2]) for p in panels))
    scale, thickness = line_h / 40, max(1, round(line_h / 40))
    wrapped = [_wrap(p.caption, p.image.shape[1] - 8, scale, thickness) for p in panels]
    cap_h = line_h * max(len(w) for w in wrapped)
    height = cap_h + max(p.image.shape[0] for p in panels)
    columns = []
    for i, (panel, lines) in enumerate(zip(panels, wrapped)):
        if i:
            columns.append(np.full((height, gap, 3), 255, np.uint8))
        h, w = panel.image.shape[:2]
        column = np.full((height, w, 3), 255, np.uint8)
        for k, text in enumerate(lines):
            th = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][1]
            cv2.putText(column, text, (4, k * line_h + (line_h + th) // 2),
                        cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
        column[cap_h:cap_h + h] = panel.image
        columns.append(column)
    return np.concatenate(columns, axis=1)

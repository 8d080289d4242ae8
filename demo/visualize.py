"""Draw SINE results of one target: ID, instance and semantic panels side by side.

    panels = draw_panels(image, result, sem_thresh=0.7, score_thresh=0.5)
    canvas = side_by_side(list(panels.values()))
    # canvas: (caption_height(W) + H, 3 * W + 2 * PANEL_GAP, 3) uint8

Colours: ID by reference id (the same object keeps its colour across targets), instances by
rank, semantic regions by class id. Uses detectron2's ``Visualizer`` for the overlays.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

__all__ = [
    "PANEL_GAP",
    "Panel",
    "caption_height",
    "class_label",
    "draw_identity",
    "draw_instances",
    "draw_panels",
    "draw_semantic",
    "reference_class_names",
    "semantic_masks",
    "side_by_side",
]

PANEL_GAP = 8  # white pixels between panels
_PALETTE = colormap(rgb=True, maximum=1)  # (74, 3) floats in [0, 1]


@dataclass
class Panel:
    """One drawn granularity: an (H, W, 3) uint8 RGB overlay and its caption."""

    image: np.ndarray
    caption: str


def _colour(index: int) -> np.ndarray:
    return _PALETTE[int(index) % len(_PALETTE)]


def _overlay(image, masks, labels, colours, alpha=0.5) -> np.ndarray:
    """(H, W, 3) uint8 + (N, H, W) bool masks -> (H, W, 3) uint8 overlay."""
    vis = Visualizer(image)
    if len(masks):
        vis.overlay_instances(masks=list(masks), labels=labels, assigned_colors=colours,
                              alpha=alpha)
    return vis.output.get_image()


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def class_label(cls: int, names: Optional[Dict[int, str]] = None) -> str:
    """A class's caption: its name when known, else "class <id>"."""
    return (names or {}).get(int(cls)) or f"class {cls}"


def reference_class_names(tokens) -> Dict[int, str]:
    """Class id -> name of the named masks of ``ReferenceTokens`` (first name per class)."""
    if tokens is None or not tokens.names:
        return {}
    names = {}
    for cls, name in zip(tokens.labels.tolist(), tokens.names):
        if name:
            names.setdefault(int(cls), name)
    return names


def draw_identity(image: np.ndarray, ids, names: Optional[Dict[int, str]] = None) -> Panel:
    """Each target segment of a reference mask, coloured by that mask's reference id.

    Args:
        image: (H, W, 3) uint8 RGB target.
        ids: ``Instances`` of ``result["id"]`` (pred_masks (K, H, W), pred_ids, scores).
        names: class id -> name, shown next to the id.
    """
    masks, ref_ids, scores = (_numpy(x) for x in (ids.pred_masks, ids.pred_ids, ids.scores))
    classes = _numpy(ids.pred_classes) if ids.has("pred_classes") else None
    shown = [i for i in range(len(masks)) if masks[i].any()]
    named = [(names or {}).get(int(classes[i])) if classes is not None else None
             for i in range(len(masks))]
    labels = [" ".join(x for x in (f"id {ref_ids[i]}", named[i], f"{scores[i]:.2f}") if x)
              for i in shown]
    colours = [_colour(ref_ids[i]) for i in shown]
    found = ", ".join(f"{ref_ids[i]} ({named[i]})" if named[i] else str(ref_ids[i])
                      for i in sorted(shown, key=lambda i: ref_ids[i])) or "none"
    caption = f"ID: reference objects found: {found}"
    return Panel(_overlay(image, masks[shown], labels, colours), caption)


def draw_instances(image: np.ndarray, instances, score_thresh: float,
                   names: Optional[Dict[int, str]] = None) -> Panel:
    """Every instance of the reference classes scoring above ``score_thresh``, one colour each.

    Args:
        image: (H, W, 3) uint8 RGB target.
        instances: ``Instances`` of ``result["instances"]`` (pred_masks, pred_classes, scores).
    """
    masks, classes, scores = (
        _numpy(x) for x in (instances.pred_masks, instances.pred_classes, instances.scores)
    )
    shown = [i for i in range(len(masks)) if scores[i] > score_thresh and masks[i].any()]
    labels = [f"{class_label(classes[i], names)} {scores[i]:.2f}" for i in shown]
    colours = [_colour(rank) for rank in range(len(shown))]
    caption = f"Instances: {len(shown)} with score > {score_thresh:g}"
    return Panel(_overlay(image, masks[shown], labels, colours), caption)


def semantic_masks(sem_seg, sem_thresh: float) -> np.ndarray:
    """(C, H, W) semantic scores -> (C, H, W) bool regions (score > ``sem_thresh``)."""
    return _numpy(sem_seg) > sem_thresh


def draw_semantic(image: np.ndarray, sem_seg, classes, sem_thresh: float,
                  names: Optional[Dict[int, str]] = None) -> Panel:
    """The thresholded semantic region of every reference class, coloured by class id.

    Args:
        image: (H, W, 3) uint8 RGB target.
        sem_seg: (C, H, W) semantic scores; classes: (C,) their class ids.
    """
    masks, classes = semantic_masks(sem_seg, sem_thresh), _numpy(classes)
    vis = Visualizer(image)
    for mask, cls in zip(masks, classes):
        if mask.any():
            vis.draw_binary_mask(mask, color=_colour(cls), text=class_label(cls, names),
                                 alpha=0.5)
    found = ", ".join(class_label(c, names) if names and int(c) in names else str(c)
                      for c, m in zip(classes, masks) if m.any()) or "none"
    caption = f"Semantic (> {sem_thresh:g}): classes {found}"
    return Panel(vis.output.get_image(), caption)


def draw_panels(
    image: np.ndarray, result: Dict, sem_thresh: float, score_thresh: float,
    names: Optional[Dict[int, str]] = None,
) -> Dict[str, Panel]:
    """The enabled granularities of ``result`` (``InContextPredictor.predict``) as panels;
    ``names`` (class id -> name, e.g. :func:`reference_class_names`) caption the classes.

    Returns:
        {"id", "instances", "semantic"} -> Panel, in that order, for those in ``result``.
    """
    panels = {}
    if "id" in result:
        panels["id"] = draw_identity(image, result["id"], names)
    if "instances" in result:
        panels["instances"] = draw_instances(image, result["instances"], score_thresh, names)
    if "sem_seg" in result:
        panels["semantic"] = draw_semantic(
            image, result["sem_seg"], result["sem_seg_classes"], sem_thresh, names
        )
    return panels


def caption_height(width: int) -> int:
    """Height of the caption strip above a panel of ``width`` pixels."""
    return max(24, round(width * 0.05))


def _draw_caption(text: str, width: int) -> np.ndarray:
    """A white (caption_height(width), width, 3) strip with ``text`` fitted into it."""
    height = caption_height(width)
    strip = np.full((height, width, 3), 255, np.uint8)
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    scale = height / 40
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    if tw > width - 8:  # shrink long captions to the panel width rather than cropping them
        scale *= (width - 8) / tw
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    cv2.putText(strip, text, (4, (height + th) // 2), font, scale, (0, 0, 0), thickness,
                cv2.LINE_AA)
    return strip


def side_by_side(panels: Sequence[Panel], gap: Optional[int] = None) -> np.ndarray:
    """Panels of one (H, W) target -> (caption_height(W) + H, n * W + (n - 1) * gap, 3) uint8."""
    gap = PANEL_GAP if gap is None else gap
    columns = []
    for i, panel in enumerate(panels):
        if i:
            columns.append(np.full((columns[0].shape[0], gap, 3), 255, np.uint8))
        caption = _draw_caption(panel.caption, panel.image.shape[1])
        columns.append(np.concatenate([caption, panel.image], axis=0))
    return np.concatenate(columns, axis=1)

"""Bounded per-object memory of reference frames for video object segmentation (spec §7.3).

Each object keeps at most ``memory_len`` frames:

* with ``fix_first_frame`` the first frame stored (the ground truth of the frame where the
  object appears, score 1.0) is pinned forever, outside the ranked store;
* with ``fix_last_frame`` the most recent frame is pinned too; when a newer frame arrives the
  previous one joins the ranked store;
* the remaining ``memory_len - fix_first - fix_last`` slots form a ranked store. After every
  insertion each entry gets ``score_decayed = decay(t_new - t_i) * score_i``; entries are
  ordered by ``(score_decayed, score, frame_id)`` and the smallest ones are dropped while over
  capacity (so the newly inserted frame itself can be dropped).

Payloads are opaque (e.g. cached encoder features + binary mask), so memory use is bounded by
``memory_len`` payloads per object.
"""
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from detectron2.config import configurable

logger = logging.getLogger(__name__)

__all__ = ["DECAY_TYPES", "MemoryBank", "MemoryEntry", "ObjectMemory", "decay_weight",
           "merge_object_masks"]

DECAY_TYPES = ("linear", "exp", "cos", "ellipse", "constant")


def decay_weight(distance, decay_type="linear", ratio=20.0):
    """Weight of a memory frame ``distance`` frames older than the newest one.

    ``linear`` (official default, verified by the spec): ``1 - d / ratio`` for d < ratio, else 0.
    The other variants exist officially but their exact formulas are not in the spec; these
    are this project's definitions: ``exp``: ``exp(-d / ratio)``; ``cos``:
    ``cos(pi/2 * d / ratio)`` for d < ratio, else 0; ``ellipse``: ``sqrt(1 - (d / ratio)^2)``
    for d < ratio, else 0; ``constant``: 1.
    """
    if distance < 0:
        raise ValueError(f"negative frame distance {distance}: frames must be pushed in order")
    x = distance / ratio
    if decay_type == "linear":
        return max(0.0, 1.0 - x) if x < 1 else 0.0
    if decay_type == "exp":
        return math.exp(-x)
    if decay_type == "cos":
        return math.cos(math.pi / 2 * x) if x < 1 else 0.0
    if decay_type == "ellipse":
        return math.sqrt(1.0 - x * x) if x < 1 else 0.0
    if decay_type == "constant":
        return 1.0
    raise ValueError(f"unknown decay type {decay_type!r}; choose one of {DECAY_TYPES}")


@dataclass
class MemoryEntry:
    """One stored frame. ``payload`` is whatever the caller stores (features, mask, ...)."""

    frame_id: int
    payload: Any
    score: float
    score_decayed: float

    def sort_key(self):
        return (self.score_decayed, self.score, self.frame_id)


class ObjectMemory:
    """Reference frames of one object; see the module docstring for the policy."""

    def __init__(self, memory_len=6, fix_first_frame=True, fix_last_frame=False,
                 decay_type="linear", decay_ratio=20.0):
        self.capacity = memory_len - int(fix_first_frame) - int(fix_last_frame)
        if self.capacity < 0:
            raise ValueError(
                f"memory_len={memory_len} cannot hold the pinned first/last frames; "
                "increase memory_len"
            )
        decay_weight(0, decay_type, decay_ratio)  # validates the decay type early
        self.memory_len = memory_len
        self.fix_first_frame = fix_first_frame
        self.fix_last_frame = fix_last_frame
        self.decay_type = decay_type
        self.decay_ratio = decay_ratio
        self.first = None
        self.last = None
        self._ranked = []  # ascending by MemoryEntry.sort_key(); the head is evicted first
        self._latest_frame = None

    def push(self, frame_id, payload, score=1.0):
        """Store a frame. Frame ids must not decrease (the same id twice is fine: the ground
        truth frame and its own prediction)."""
        if self._latest_frame is not None and frame_id < self._latest_frame:
            raise ValueError(
                f"frame {frame_id} pushed after frame {self._latest_frame}; push frames in order"
            )
        self._latest_frame = frame_id
        entry = MemoryEntry(frame_id, payload, float(score), float(score))
        if self.fix_first_frame and self.first is None:
            self.first = entry
            return
        if self.fix_last_frame:
            entry, self.last = self.last, entry
            if entry is None:
                return
        self._insert_ranked(entry, frame_id)

    def _insert_ranked(self, entry, now):
        self._ranked.append(entry)
        for e in self._ranked:
            e.score_decayed = decay_weight(now - e.frame_id, self.decay_type,
                                           self.decay_ratio) * e.score
        self._ranked.sort(key=MemoryEntry.sort_key)
        while len(self._ranked) > self.capacity:
            self._ranked.pop(0)

    def get_memory(self):
        """Stored frames: the ranked entries (lowest-ranked first), then the pinned last
        frame, then the pinned first frame. Returns a list of :class:`MemoryEntry`."""
        entries = list(self._ranked)
        if self.last is not None:
            entries.append(self.last)
        if self.first is not None:
            entries.append(self.first)
        return entries

    def __len__(self):
        return len(self._ranked) + (self.last is not None) + (self.first is not None)


class MemoryBank:
    """One :class:`ObjectMemory` per object id of a video."""

    @configurable
    def __init__(self, *, memory_len=6, fix_first_frame=True, fix_last_frame=False,
                 decay_type="linear", decay_ratio=20.0):
        """
        Args:
            memory_len: frames kept per object, pinned ones included (official D17: 6, D16: 2).
            fix_first_frame: pin the object's first (ground-truth) frame.
            fix_last_frame: pin the most recent frame.
            decay_type: one of :data:`DECAY_TYPES`.
            decay_ratio: frame distance at which linear decay reaches 0.
        """
        self._kwargs = dict(memory_len=memory_len, fix_first_frame=fix_first_frame,
                            fix_last_frame=fix_last_frame, decay_type=decay_type,
                            decay_ratio=decay_ratio)
        ObjectMemory(**self._kwargs)  # validates the arguments early
        self._objects = {}

    @classmethod
    def from_config(cls, cfg):
        vos = cfg.MODEL.SINE.VOS
        return {
            "memory_len": vos.MEMORY_LEN,
            "fix_first_frame": vos.FIX_FIRST_FRAME,
            "fix_last_frame": vos.FIX_LAST_FRAME,
            "decay_type": vos.DECAY_TYPE,
            "decay_ratio": vos.DECAY_RATIO,
        }

    def add_object(self, obj_id, frame_id, payload, score=1.0):
        """Start the memory of an object appearing at ``frame_id`` with its ground truth."""
        if obj_id in self._objects:
            raise KeyError(f"object {obj_id} already has a memory; use push() for new frames")
        self._objects[obj_id] = ObjectMemory(**self._kwargs)
        self._objects[obj_id].push(frame_id, payload, score)

    def push(self, obj_id, frame_id, payload, score):
        """Store a predicted frame of a known object."""
        if obj_id not in self._objects:
            raise KeyError(f"unknown object {obj_id}; call add_object() with its ground truth")
        self._objects[obj_id].push(frame_id, payload, score)

    def get_memory(self, obj_id):
        """Entries of one object, in :meth:`ObjectMemory.get_memory` order."""
        return self._objects[obj_id].get_memory()

    @property
    def object_ids(self):
        """Known object ids, ascending."""
        return sorted(self._objects)

    def __contains__(self, obj_id):
        return obj_id in self._objects

    def __len__(self):
        return len(self._objects)


def merge_object_masks(masks_by_id, image_size=None):
    """Merge per-object binary masks into one label map.

    On overlaps the highest object id wins (official: ``max_k k * mask_k``).

    Args:
        masks_by_id: ``{obj_id: (H, W) bool mask}`` (numpy or torch), obj_id >= 1.
        image_size: (H, W), only needed when ``masks_by_id`` is empty.

    Returns:
        (H, W) label map, 0 = background; uint8 if every id is < 256, else int64.
    """
    if not masks_by_id:
        if image_size is None:
            raise ValueError("no mask to merge; pass image_size to get an empty label map")
        return np.zeros(tuple(image_size), dtype=np.uint8)
    ids = sorted(int(i) for i in masks_by_id)
    if ids[0] < 1:
        raise ValueError(f"object ids must be >= 1 (0 is background), got {ids[0]}")
    dtype = np.uint8 if ids[-1] < 256 else np.int64
    labels = None
    for obj_id in ids:
        mask = masks_by_id[obj_id]
        mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if labels is None:
            labels = np.zeros(mask.shape, dtype=dtype)
        elif mask.shape != labels.shape:
            raise ValueError(f"mask of object {obj_id} is {mask.shape}, others {labels.shape}")
        labels[mask.astype(bool)] = obj_id  # ascending ids: later (higher) ids overwrite
    return labels

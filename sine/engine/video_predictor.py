"""VideoPredictor: semi-supervised video object segmentation with SINE (spec §7.3).

    vp = VideoPredictor.from_config_file("configs/vos/davis17.yaml", weights="sine.pth")
    masks, labels = vp.start(first_frame, {1: mask_a, 2: mask_b})   # objects of frame 0
    for frame in later_frames:
        masks, labels = vp.step(frame)        # {object id: (H, W) bool}, (H, W) label map
    masks, labels = vp.add_objects(frame, {3: mask_c})   # an object appearing later

Every object has a bounded memory (``MemoryBank``, ``MODEL.SINE.VOS.*``) of reference frames:
its ground-truth frame (pinned) and its best recent predictions. A frame is segmented by decoding
it against all memory frames with the "vos" reference pooling (one ID token per object, pooled
over all its memory frames) and reading the ID output (spec §5.3), through the model's inference
surface (``encode`` / ``reference_tokens`` / ``segment(outputs={"id"})``).

Memory entries hold the frame's cached neck features and the object's mask at model
resolution, never the image, so each frame goes through the ViT exactly once however many
objects and memory frames there are. ``MODEL.SINE.VOS.CACHE_FEATURES False`` stores the resized
image instead and re-encodes every memory frame at every step, as the official code does.
"""
import contextlib
import itertools
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.user_inputs import UserInputError, read_image
from ..data.user_inputs import masks_by_object_id as object_masks
from ..modeling.in_context import Features, ImageGeometry, concat_features, select_features
from .memory_bank import merge_object_masks
from .predictor import InContextPredictor, pad_masks
from .vos_policies import build_vos_policies

logger = logging.getLogger(__name__)

__all__ = ["FrameResult", "VideoPredictor", "frame_id_from_name", "long_side_size", "open_video",
           "short_side_size"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VOID_LABEL = 255  # DAVIS "void" label of annotation PNGs: never an object


class FrameResult(NamedTuple):
    """Segmentation of one frame at the frame's own size.

    masks: object id -> (H, W) bool mask (every tracked object, possibly empty).
    labels: (H, W) label map (0 = background); on overlaps the highest object id wins.
    """

    masks: Dict[int, np.ndarray]
    labels: np.ndarray


@dataclass(eq=False)  # hashed by identity: one record per processed frame
class _FrameRecord:
    """A processed frame as memory entries refer to it: features (cache) or image (re-encode)."""

    frame_id: int
    feats: Optional[Features]  # the frame's encoder features (batch 1)
    image: Optional[torch.Tensor]  # (3, h', w') resized float image, 0-255


@dataclass
class _PreparedFrame:
    image: torch.Tensor  # (3, h', w') float 0-255, longer side = pad size: the model input
    work_size: Tuple[int, int]  # masks are predicted at this size (official: 518 short side)
    original_size: Tuple[int, int]

    @property
    def content_size(self) -> Tuple[int, int]:
        return tuple(self.image.shape[-2:])


def short_side_size(h: int, w: int, short: int, mask: bool = False) -> Tuple[int, int]:
    """Size with the shorter side = ``short``; 0 keeps (h, w) (spec §7.3).

    Images (``mask=False``) follow torchvision ``Resize(int)``: the longer side is
    ``int(short * long / shorter)`` and a frame whose shorter side already is ``short`` is
    kept. Ground-truth masks (``mask=True``) follow the official ``resize_mask``:
    ``(int(h / min(h, w) * short), int(w / min(h, w) * short))``, another float expression that
    can be one pixel shorter on the long side (518 x 633 -> image 518 x 633, mask 518 x 632).
    """
    if short <= 0:
        return h, w
    if mask:
        m = min(h, w)
        return max(1, int(h / m * short)), max(1, int(w / m * short))
    if min(h, w) == short:
        return h, w
    if h <= w:
        return short, max(1, int(short * w / h))
    return max(1, int(short * h / w)), short


def long_side_size(h: int, w: int, long: int) -> Tuple[int, int]:
    """Size with the longer side = ``long`` (official VOS ``resize``, spec §7.3).

    The shorter side goes through the aspect ratio ``a = w / h``: landscape (``a > 1``) height
    ``int(long / a)``, otherwise width ``int(long * a)``; not ``int(long * short / longer)``,
    which is one pixel larger for some sizes (600 x 672 -> 924, not 925).
    """
    aspect = w / h
    if aspect > 1:
        return max(1, int(long / aspect)), long
    return long, max(1, int(long * aspect))


def _resize_image(image: torch.Tensor, size: Tuple[int, int], antialias: bool = False
                  ) -> torch.Tensor:
    """(3, H, W) float -> (3, h, w), bilinear (align_corners False).

    ``antialias=False`` is the official behaviour: the pinned torchvision 0.15 does not
    antialias tensors (newer torchvision does by default); it only matters when shrinking.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                         antialias=antialias)[0]


def _resize_mask(mask: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(H, W) bool -> (h, w) bool, nearest (official mask resize)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5


def frame_id_from_name(name: str, index: int) -> int:
    """Frame number parsed from a file name ("00035" -> 35), else its position ``index``."""
    stem = os.path.splitext(os.path.basename(str(name)))[0]
    return int(stem) if stem.isdigit() else index


def _frames_of_folder(folder: str) -> Iterator[Tuple[str, np.ndarray]]:
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    for f in names:
        yield os.path.splitext(f)[0], read_image(os.path.join(folder, f), f"frame {f!r}")


def _frames_of_video_file(path: str) -> Iterator[Tuple[str, np.ndarray]]:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open the video {path!r}; is it a video file?")
    try:
        for index in itertools.count():
            ok, bgr = capture.read()
            if not ok:
                return
            yield f"{index:05d}", np.ascontiguousarray(bgr[..., ::-1])
    finally:
        capture.release()


def _frames_of_iterable(frames: Iterable) -> Iterator[Tuple[str, np.ndarray]]:
    for index, frame in enumerate(frames):
        name = os.path.splitext(os.path.basename(frame))[0] if isinstance(frame, str) else None
        yield name or f"{index:05d}", read_image(frame, f"frame {index}")


def open_video(source) -> Iterator[Tuple[str, np.ndarray]]:
    """Frames of a video, read one at a time, as ``(name, (H, W, 3) uint8 RGB)``.

    Args:
        source: a video file OpenCV reads (mp4, avi, ...), a folder of image files (taken in
            file-name order; names are the file stems), or an iterable of RGB arrays / image
            paths.
    Raises:
        ValueError: the source does not exist or has no frame (checked before returning).
    """
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            frames = _frames_of_folder(source)
        elif os.path.isfile(source):
            frames = _frames_of_video_file(source)
        else:
            raise ValueError(f"video source {source!r} is neither a folder nor a video file")
    else:
        frames = _frames_of_iterable(source)
    try:
        first = next(frames)
    except StopIteration:
        raise ValueError(
            f"the video {source!r} has no frames: give a video file OpenCV can decode or a "
            f"folder holding {'/'.join(IMAGE_EXTENSIONS)} images"
        ) from None
    return itertools.chain([first], frames)


class VideoPredictor:
    """Tracks objects through a video, one frame at a time, with a per-object memory bank."""

    def __init__(self, predictor: InContextPredictor, pooling: str = "vos"):
        """
        Args:
            predictor: holds the model and its config (``MODEL.SINE.VOS.*``).
            pooling: reference pooling variant (spec §2.4); "vos" is the official VOS fork.
        """
        vos = predictor.cfg.MODEL.SINE.VOS
        self.predictor = predictor
        self.model = predictor.model
        self.pooling = pooling
        self.short_side = vos.SHORT_SIDE
        self.antialias = vos.ANTIALIAS
        # Official --pad-size and --img-size: frames are padded to a pad_size square after
        # their longer side is resized to image_size (<= pad_size). 0 = MODEL.SINE.PAD_SIZE.
        self.pad_size = vos.PAD_SIZE or self.model.pad_size
        self.image_size = vos.IMAGE_SIZE or self.pad_size
        patch = self.model.size_divisibility
        if self.pad_size % patch or not 0 < self.image_size <= self.pad_size:
            raise ValueError(
                f"MODEL.SINE.VOS.PAD_SIZE={self.pad_size} must be a multiple of the patch size "
                f"{patch} and MODEL.SINE.VOS.IMAGE_SIZE={self.image_size} within (0, PAD_SIZE]")
        self.cache_features = vos.CACHE_FEATURES
        self.use_amp = vos.AMP
        self.encode_chunk = max(1, vos.ENCODE_CHUNK)
        self.flip_tta = vos.FLIP_TTA
        # Which memory frames an object keeps and reads, and how objects are merged
        # (MODEL.SINE.VOS.MEMORY_POLICY / MERGE; sine/engine/vos_policies.py).
        self.memory, self.merge = build_vos_policies(predictor.cfg)
        self.reset()
        self.in_video = False  # no video begun yet: step() needs start() (or reset()) first

    @classmethod
    def from_config_file(cls, config_file, weights=None, opts=(), device=None,
                         acceleration: str = "fp32"):
        """``acceleration``: see :class:`InContextPredictor` ("onnx" exports one decoder per
        number of reference masks, which changes as objects enter the memory: slow to start)."""
        return cls(InContextPredictor.from_config_file(config_file, weights, opts, device,
                                                       acceleration=acceleration))

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset(self) -> None:
        """Forget every object and memory frame: a new video begins, whose objects may appear
        on later frames (``step`` gives empty results until then)."""
        self.in_video = True
        self.bank = self.memory.new_bank()
        self.last_frame_id: Optional[int] = None
        self.last_scores: Dict[int, float] = {}

    # ------------------------------------------------------------------ public API
    def start(self, frame, masks_by_object_id, frame_id: Optional[int] = None) -> FrameResult:
        """Start a new video: track the objects given on its first frame.

        Args:
            frame: (H, W, 3) uint8 RGB array or image path.
            masks_by_object_id: ``{object id >= 1: (H, W) mask}`` or an (H, W) label map.
            frame_id: frame number (default 0); later frames must have larger numbers.
        Returns:
            the prediction of this frame (its ground truth is the reference of its own
            prediction, which joins the memory like every later prediction).
        """
        self.reset()
        return self.add_objects(frame, masks_by_object_id, frame_id)

    def add_objects(self, frame, masks_by_object_id, frame_id=None) -> FrameResult:
        """Segment the next frame, on which new objects appear with their masks."""
        if masks_by_object_id is None:
            raise UserInputError("no object to track: give at least one non-empty object mask")
        return self.step(frame, masks_by_object_id, frame_id)

    @torch.no_grad()
    def step(self, frame, new_objects=None, frame_id: Optional[int] = None) -> FrameResult:
        """Segment the next frame.

        Args:
            frame: (H, W, 3) uint8 RGB array or image path.
            new_objects: optional ``{object id: (H, W) mask}`` (or label map) of objects first
                given on this frame.
            frame_id: frame number (default: previous + 1); drives the memory's time decay.
        Returns:
            :class:`FrameResult` at the frame's size.
        """
        image = read_image(frame, "the frame")
        new = {} if new_objects is None else object_masks(new_objects, image.shape, "new_objects")
        if not new and not len(self.bank) and not self.in_video:
            raise UserInputError("no object is tracked: call start(frame, masks) with the first "
                                 "frame's object masks before step()")
        known = [i for i in new if i in self.bank]
        if known:
            raise ValueError(f"object(s) {known} are already tracked; give new object ids")
        frame_id = self._next_frame_id(frame_id)
        if not new and not len(self.bank):  # a frame before the video's first object
            self.last_scores = {}
            return FrameResult({}, np.zeros(image.shape[:2], np.uint8))
        prepared = self._prepare(image)
        with self._autocast():
            # Flip test-time augmentation: the mirrored frame is encoded in the same batch.
            tar_feats = self._encode([prepared.image] + ([prepared.image.flip(-1)]
                                                         if self.flip_tta else []))
            # A copy under TTA: the memory must not keep the mirrored frame's features alive.
            tar_feat = select_features(tar_feats, [0]) if self.flip_tta else tar_feats
            record = _FrameRecord(frame_id, tar_feat if self.cache_features else None,
                                  None if self.cache_features else prepared.image)
            new_masks = {i: self._model_mask(m, prepared) for i, m in new.items()}
            for obj_id, mask in new_masks.items():
                self.bank.add_object(obj_id, frame_id, (record, mask))
            # Objects whose ground truth is given here are output as it, not decoded, when the
            # memory policy says so (SegIC); others are decoded against the memory.
            given = {} if self.memory.decode_given_frame else new_masks
            decoded = set(self.bank.object_ids) - set(given)
            results = self._segment(tar_feats, prepared) if decoded else [None]
        masks, scores, rows = self._object_masks(results[0], given, prepared)
        if self.flip_tta and results[0] is not None:
            mirrored, mirrored_scores, _ = self._object_masks(results[1], given, prepared)
            self._merge_mirrored(masks, scores, mirrored, mirrored_scores)
        for obj_id in decoded:
            mask = self.memory.memory_mask(results[0], rows.get(obj_id), masks[obj_id],
                                           prepared.content_size)
            self.bank.push(obj_id, frame_id, (record, mask), scores[obj_id])
        self.last_scores = scores
        out = {i: _resize_mask(m, prepared.original_size).cpu().numpy() for i, m in masks.items()}
        return FrameResult(out, merge_object_masks(out, prepared.original_size))

    def segment_video(self, source, masks_by_object_id, new_objects=None
                      ) -> Iterator[Tuple[str, np.ndarray, FrameResult]]:
        """Segment a whole video.

        Args:
            source: see :func:`open_video` (video file, frame folder or iterable of frames).
            masks_by_object_id: objects of the first frame (see :meth:`start`).
            new_objects: optional ``{frame name: masks}`` of objects appearing later.
        Yields:
            ``(frame name, (H, W, 3) RGB frame, FrameResult)`` for every frame, in order.
            Frame numbers (memory decay) come from digit-only names, else the frame index.
        """
        new_objects = dict(new_objects or {})
        for index, (name, image) in enumerate(open_video(source)):
            frame_id = frame_id_from_name(name, index)
            if index == 0:
                result = self.start(image, masks_by_object_id, frame_id)
            else:
                result = self.step(image, new_objects.pop(name, None), frame_id)
            yield name, image, result
        if new_objects:
            logger.warning("objects given for frames not in the video: %s", sorted(new_objects))

    @property
    def num_memory_frames(self) -> int:
        """Distinct frames referenced by the memory bank (bounded by objects x MEMORY_LEN)."""
        return len({id(e.payload[0]) for i in self.bank.object_ids
                    for e in self.bank.get_memory(i)})

    # ------------------------------------------------------------------ internals
    def _next_frame_id(self, frame_id: Optional[int]) -> int:
        if frame_id is None:
            frame_id = 0 if self.last_frame_id is None else self.last_frame_id + 1
        elif self.last_frame_id is not None and frame_id <= self.last_frame_id:
            raise ValueError(
                f"frame {frame_id} comes after frame {self.last_frame_id}: frame ids must "
                "increase (call start() for a new video)"
            )
        self.last_frame_id = int(frame_id)
        return self.last_frame_id

    def _autocast(self):
        if self.use_amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()  # fp32 on CPU, always

    def _prepare(self, image: np.ndarray) -> _PreparedFrame:
        """Official resizes: shorter side -> SHORT_SIDE (work size), longer side -> IMAGE_SIZE."""
        h, w = image.shape[:2]
        work = short_side_size(h, w, self.short_side)
        t = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self.device)
        t = _resize_image(t.permute(2, 0, 1).float(), work, self.antialias)
        t = _resize_image(t, long_side_size(*work, self.image_size))
        return _PreparedFrame(t, work, (h, w))

    def _model_mask(self, mask: np.ndarray, prepared: _PreparedFrame) -> torch.Tensor:
        """Ground-truth mask at the frame size -> bool at model resolution (nearest), through
        the official mask sizes: each resize is computed from the mask's own shape, so the
        result can differ from the image's content size by a pixel or two (spec §7.3)."""
        m = torch.from_numpy(mask).to(self.device)
        m = _resize_mask(m, short_side_size(*m.shape, self.short_side, mask=True))
        return _resize_mask(m, long_side_size(*m.shape, self.image_size))

    def _encode(self, images: List[torch.Tensor]) -> Features:
        """(3, h', w') float images -> their features (batch N)."""
        size = self.pad_size
        batch = torch.stack([self.model.preprocess_image(im, size) for im in images])
        return self.model.encode(batch)

    def _references(self):
        """Memory of every object grouped by frame, oldest first: features (batch K),
        K masks (n_k, S, S) padded to the model size and K object-id tensors (n_k,)."""
        groups: Dict[_FrameRecord, Tuple[list, list]] = {}
        for obj_id in self.bank.object_ids:
            for entry in self.bank.get_memory(obj_id):
                record, mask = entry.payload
                masks, ids = groups.setdefault(record, ([], []))
                masks.append(mask)
                ids.append(obj_id)
        records = sorted(groups, key=lambda r: r.frame_id)
        if self.cache_features:
            feats = concat_features([r.feats for r in records])
        else:
            chunks = [records[i:i + self.encode_chunk]
                      for i in range(0, len(records), self.encode_chunk)]
            feats = concat_features([self._encode([r.image for r in c]) for c in chunks])
        size = self.pad_size
        ref_masks, ref_labels = [], []
        for r in records:
            masks, ids = groups[r]
            # Padded one by one: a ground-truth mask can be a pixel off the frame's content size.
            ref_masks.append(torch.stack([pad_masks(m[None], size)[0] for m in masks]))
            ref_labels.append(torch.tensor(ids, dtype=torch.int64, device=self.device))
        return feats, ref_masks, ref_labels

    def _segment(self, tar_feats: Features, prepared: _PreparedFrame):
        """ID results (spec §5.3) of each target of ``tar_feats`` (the frame, then its mirror
        under flip test-time augmentation) against every memory frame of every object, at the
        work size: one token per object ("vos" pooling), whose id is the object id."""
        feats, ref_masks, ref_labels = self._references()
        tokens = self.model.reference_tokens(feats, ref_masks, ref_labels, ref_labels,
                                             pooling=self.pooling)
        size = self.pad_size
        geometry = ImageGeometry((size, size), prepared.content_size, prepared.work_size)
        n = next(iter(tar_feats.values())).shape[0]
        return [self.model.segment(select_features(tar_feats, i), tokens, geometry,
                                   outputs={"id"})["id"] for i in range(n)]

    @staticmethod
    def _merge_mirrored(masks, scores, mirrored_masks, mirrored_scores):
        """Flip test-time augmentation: per object, the mirrored frame's prediction (flipped
        back) replaces the frame's where its score is higher (the surface returns binary
        masks and scores, so the two are combined at that level)."""
        for obj_id, score in mirrored_scores.items():
            if score > scores[obj_id]:
                masks[obj_id], scores[obj_id] = mirrored_masks[obj_id].flip(-1), score

    def _object_masks(self, result, given: Dict[int, torch.Tensor], prepared: _PreparedFrame):
        """ID ``Instances`` (or None) and the model-resolution ground truth of objects output
        as given -> ({id: (h, w) bool} merged by the merge policy, {id: score},
        {id: row of ``result``}) for every tracked object, at the work size."""
        ids = self.bank.object_ids
        size = prepared.work_size
        masks = torch.zeros((len(ids), *size), dtype=torch.bool, device=self.device)
        with_logits = result is None or result.has("pred_mask_logits")
        logits = torch.full((len(ids), *size), -1.0, device=self.device) if with_logits else None
        scores, rows = dict.fromkeys(ids, 0.0), {}
        if result is not None:
            for r, (obj_id, score) in enumerate(zip(result.pred_ids.tolist(),
                                                    result.scores.tolist())):
                k = ids.index(obj_id)
                masks[k], scores[obj_id], rows[obj_id] = result.pred_masks[r], score, r
                if logits is not None:
                    logits[k] = result.pred_mask_logits[r].float()
        for obj_id, mask in given.items():
            # Official SegIC frame 0: the model-resolution ground truth, resized bilinearly to
            # the frame (slightly dilated at > 0) and merged like logits.
            k = ids.index(obj_id)
            gt = F.interpolate(mask[None, None].float(), size=size, mode="bilinear",
                               align_corners=False)[0, 0]
            masks[k], scores[obj_id] = gt > 0, 1.0
            if logits is not None:
                logits[k] = gt
        return self.merge(ids, masks, logits), scores, rows

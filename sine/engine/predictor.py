"""SinePredictor: in-context segmentation of one's own images with a trained SINE.

    predictor = SinePredictor.from_config_file("configs/demo/sine_synthetic_tiny.yaml",
                                               weights="output/demo/model_final.pth")
    predictor.set_reference(ref_image, ref_masks, labels=[0, 0, 1])
    result = predictor.predict(target_image)   # {"id", "instances", "sem_seg", "sem_seg_classes"}

Reference features are computed once by :meth:`set_reference` and reused for every target.
The evaluation suites and the demos all go through this class.
"""
import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model

from ..checkpoint import SINECheckpointer
from ..config import get_sine_cfg
from ..modeling.meta_arch.sine_model import SINEInputs

logger = logging.getLogger(__name__)

__all__ = ["SinePredictor", "ReferenceSet", "read_rgb", "to_mask_array"]


def read_rgb(image):
    """A path or an (H, W, 3) uint8 RGB array -> (H, W, 3) uint8 array; clear errors otherwise."""
    if isinstance(image, str):
        try:
            # read_image may return a read-only view; torch wants a writable array.
            return np.array(utils.read_image(image, format="RGB"))
        except Exception as e:
            raise ValueError(f"cannot read image {image!r}: {e}") from e
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"an image must be an (H, W, 3) uint8 RGB array or a file path; got shape "
            f"{image.shape} and dtype {image.dtype}"
        )
    return image


def to_mask_array(masks, image_shape, where):
    """(H, W) / (N, H, W) / list of (H, W) masks (or PNG paths) -> (N, H, W) bool array."""
    if isinstance(masks, str) or (isinstance(masks, np.ndarray) and masks.ndim == 2):
        masks = [masks]
    arrays = []
    for i, m in enumerate(masks):
        if isinstance(m, str):
            try:
                m = utils.read_image(m, format="L")
            except Exception as e:
                raise ValueError(f"cannot read mask {m!r} of {where}: {e}") from e
        m = np.asarray(m)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[..., 0]
        if m.shape != tuple(image_shape[:2]):
            raise ValueError(
                f"mask {i} of {where} has size {m.shape}, but its image is {image_shape[:2]}: "
                "masks must have the same height and width as their image"
            )
        arrays.append(m > 0)
    if not arrays:
        raise ValueError(f"{where} has no mask: give at least one mask per reference image")
    return np.stack(arrays)


def _resize_image(image, size):
    """Resize so the longer side is ``size`` (bilinear); returns a uint8 (3, h, w) tensor."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
    return t[0].round().clamp(0, 255).to(torch.uint8)


def _resize_masks(masks, hw):
    """(N, H, W) bool -> (N, h, w) bool, keeping tiny objects (any touched pixel counts)."""
    t = torch.from_numpy(masks)[None].float()
    small = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0]
    resized = small >= 0.5
    vanished = ~resized.flatten(1).any(1)
    resized[vanished] = small[vanished] > 0
    return resized


@dataclass
class ReferenceSet:
    """Encoded references: what :meth:`SinePredictor.set_reference` caches.

    feats: (K, C, h, w) neck features; masks: K tensors (n_k, S, S) bool padded to S;
    labels / ids: K int64 tensors (n_k,).
    """

    feats: torch.Tensor
    masks: List[torch.Tensor]
    labels: List[torch.Tensor]
    ids: List[torch.Tensor]


class SinePredictor:
    """Builds a SINE from a config, loads its weights and segments targets given references."""

    def __init__(self, cfg, device: Optional[str] = None):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg).eval()
        if device is not None:
            self.model.to(device)
        if cfg.MODEL.WEIGHTS:
            SINECheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the predictor uses random weights")
        # Images are resized so that their longer side fits the square the model pads to.
        self.image_size = cfg.MODEL.SINE.PAD_SIZE
        self.references: Optional[ReferenceSet] = None

    @classmethod
    def from_config_file(cls, config_file, weights=None, opts=(), device=None):
        cfg = get_sine_cfg(config_file, opts)
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        if device is not None:
            cfg.MODEL.DEVICE = device
        return cls(cfg)

    @property
    def device(self):
        return self.model.device

    @torch.no_grad()
    def set_reference(self, images, masks, labels=None):
        """Encode reference image(s) and their masks once.

        Args:
            images: one image (path or (H, W, 3) uint8 RGB array) or a list of them.
            masks: for one image, its masks ((H, W), (N, H, W) or a list of (H, W) arrays or
                PNG paths; > 0 is foreground); for a list of images, a list of those.
            labels: class id of every mask (same nesting as ``masks``); default: every mask is
                class 0. Instance ids are the mask positions 0, 1, ... over all references.
        """
        single = isinstance(images, (str, np.ndarray))
        if single:
            images, masks = [images], [masks]
            labels = None if labels is None else [labels]
        if len(images) != len(masks):
            raise ValueError(f"got {len(images)} reference images but {len(masks)} mask sets")
        tensors, ref_masks, ref_labels, ref_ids, next_id = [], [], [], [], 0
        for k, (image, m) in enumerate(zip(images, masks)):
            image = read_rgb(image)
            m = to_mask_array(m, image.shape, f"reference {k}")
            empty = [i for i, x in enumerate(m) if not x.any()]
            if empty:
                raise ValueError(f"mask(s) {empty} of reference {k} are empty")
            lab = np.zeros(len(m), np.int64) if labels is None else np.asarray(labels[k])
            if lab.shape != (len(m),):
                raise ValueError(f"reference {k}: {len(m)} masks but labels {lab.tolist()}")
            t = _resize_image(image, self.image_size)
            tensors.append(t)
            ref_masks.append(_resize_masks(m, tuple(t.shape[-2:])))
            ref_labels.append(torch.as_tensor(lab, dtype=torch.int64))
            ref_ids.append(torch.arange(next_id, next_id + len(m)))
            next_id += len(m)
        self.references = self.encode_references(tensors, ref_masks, ref_labels, ref_ids)
        return self.references

    def encode_references(self, images, masks, labels, ids) -> ReferenceSet:
        """uint8 (3, h, w) images and their (n, h, w) masks -> a cached :class:`ReferenceSet`."""
        size = self.model.pad_size
        batch = torch.stack([self.model.preprocess_image(im, size) for im in images])
        dev = self.device
        return ReferenceSet(
            feats=self.model.encode(batch),
            masks=[F.pad(m, (0, size - m.shape[-1], 0, size - m.shape[-2])).to(dev) for m in masks],
            labels=[lab.to(dev) for lab in labels],
            ids=[i.to(dev) for i in ids],
        )

    @torch.no_grad()
    def predict(self, target, references: Optional[ReferenceSet] = None):
        """Segment ``target`` (path or (H, W, 3) uint8 RGB array) at its original size.

        Returns:
            dict with "id" and "instances" (``Instances``), "sem_seg" (C, H, W) float and
            "sem_seg_classes" (C,), as enabled by ``MODEL.SINE.TEST``.
        """
        refs = references or self.references
        if refs is None:
            raise RuntimeError("call set_reference(...) before predict(...)")
        image = read_rgb(target)
        t = _resize_image(image, self.image_size)
        tar_feat = self.model.encode(self.model.preprocess_image(t, self.model.pad_size)[None])
        raw = self.model.decode(refs.feats, refs.masks, refs.labels, tar_feat)
        return self.postprocess(raw, refs, tuple(t.shape[-2:]), image.shape[:2])

    def postprocess(self, raw, refs: ReferenceSet, image_size, output_size):
        """Raw decoder outputs -> results at ``output_size`` (see ``SINE.inference``)."""
        size = self.model.pad_size
        inputs = SINEInputs(
            tar_images=torch.empty(1, 3, size, size, device="meta"),  # only its size is read
            ref_images=torch.empty(0),
            num_refs=[len(refs.masks)],
            ref_masks=refs.masks,
            ref_labels=refs.labels,
            ref_ids=refs.ids,
            image_sizes=[tuple(image_size)],
            output_sizes=[tuple(output_size)],
            targets=None,
        )
        return self.model.inference(raw, inputs, 0)

    def predict_batch(self, targets: Sequence) -> List[dict]:
        return [self.predict(t) for t in targets]

"""InContextPredictor: in-context segmentation of one's own images with a trained model.

    predictor = InContextPredictor.from_config_file("configs/demo/sine_synthetic_tiny.yaml",
                                                    weights="output/demo/model_final.pth")
    predictor.set_reference(ref_image, ref_masks, labels=[0, 0, 1])
    result = predictor.predict(target_image)   # {"id", "instances", "sem_seg", "sem_seg_classes"}

Works with any :class:`~sine.modeling.in_context.InContextSegmenter` (SINE, SegIC, ...) through
its surface only: the references become reference tokens once (:meth:`set_reference`), reused
for every target (``encode`` + ``segment``). ``SinePredictor`` is the same class under its
former name.
"""
import logging
import os
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from ..checkpoint import SINECheckpointer
from ..data.user_inputs import UserInputError, class_ids, is_single_image, read_image, read_masks
from ..modeling.in_context import ImageGeometry, InContextSegmenter, ReferenceTokens
from ..utils.user_config import check_device, check_weights_file, load_user_config, load_weights
from .acceleration import ACCELERATIONS, AccelerationChoice, accelerate, choose_acceleration

logger = logging.getLogger(__name__)

__all__ = ["ACCELERATION_CHOICES", "InContextPredictor", "SinePredictor", "build_in_context_model",
           "pad_masks", "read_rgb"]

#: What ``acceleration=`` (and the CLIs' ``--acceleration``) accepts.
ACCELERATION_CHOICES = (*ACCELERATIONS, "auto")

# Kept for callers of the old helper; inputs are validated by sine.data.user_inputs.
read_rgb = read_image


def build_in_context_model(cfg) -> InContextSegmenter:
    """The model of ``cfg`` (MODEL.META_ARCHITECTURE) in eval mode on MODEL.DEVICE, with
    MODEL.WEIGHTS loaded (random weights, with a warning, when empty). A CUDA device without
    CUDA and a missing, corrupt or foreign checkpoint are :class:`UserInputError`."""
    check_device(cfg.MODEL.DEVICE)
    check_weights_file(cfg.MODEL.WEIGHTS)  # before building a model for nothing
    model = build_model(cfg).eval()
    if not isinstance(model, InContextSegmenter):
        raise TypeError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} builds a "
            f"{type(model).__name__}, not an InContextSegmenter (sine.modeling.in_context): "
            "the predictors and suites need that surface"
        )
    if cfg.MODEL.WEIGHTS:
        load_weights(SINECheckpointer(model), cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the model has random weights")
    return model


def pad_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """(n, h, w) masks -> (n, size, size), zero-padded bottom/right like the images."""
    return F.pad(masks, (0, size - masks.shape[-1], 0, size - masks.shape[-2]))


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


def _resolve_acceleration(backend: str, acceleration: str) -> str:
    """The one acceleration name of the former ``backend`` argument and ``acceleration``."""
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    if acceleration not in ACCELERATION_CHOICES:
        raise ValueError(f"acceleration must be one of {list(ACCELERATION_CHOICES)}, got "
                         f"{acceleration!r}")
    if backend == "onnx":
        if acceleration not in ("fp32", "onnx"):
            raise ValueError(f"backend='onnx' is acceleration='onnx'; it cannot be combined "
                             f"with acceleration={acceleration!r}: pass acceleration alone")
        return "onnx"
    return acceleration


class InContextPredictor:
    """Builds an in-context model from a config, loads its weights and segments targets given
    references, through the model's inference surface only."""

    def __init__(self, cfg, device: Optional[str] = None,
                 model: Optional[InContextSegmenter] = None, backend: str = "torch",
                 onnx_dir: Optional[str] = None, acceleration: str = "fp32"):
        """
        Args:
            cfg: the model's config (MODEL.WEIGHTS loaded unless ``model`` is given).
            device: build (or move) the model there (default: MODEL.DEVICE).
            model: use this built model instead of building one from ``cfg``.
            backend: "torch", or "onnx" (the same as ``acceleration="onnx"``, kept for
                existing callers).
            onnx_dir: directory of the ONNX files (exported there on first use); default
                ``<OUTPUT_DIR>/onnx``.
            acceleration: CPU speed option (:mod:`sine.engine.acceleration`): "fp32" (the
                model as is), "bf16", "int8", "onnx", or "auto": the fastest option that
                agrees with fp32 on this machine, measured once and cached; the measurement is
                :attr:`acceleration_choice`.
        """
        acceleration = _resolve_acceleration(backend, acceleration)
        self.cfg = cfg.clone()
        if device is not None:  # built there directly (not on MODEL.DEVICE, then moved)
            frozen = self.cfg.is_frozen()
            self.cfg.defrost()
            self.cfg.MODEL.DEVICE = device
            if frozen:
                self.cfg.freeze()
        if model is None:
            model = build_in_context_model(self.cfg)
        elif device is not None:
            model = model.to(device)
        onnx_dir = onnx_dir or os.path.join(self.cfg.OUTPUT_DIR, "onnx")
        #: The measurement behind ``acceleration="auto"`` (None for a named option).
        self.acceleration_choice: Optional[AccelerationChoice] = None
        if acceleration == "auto":
            self.acceleration_choice = choose_acceleration(
                model, onnx_dir=onnx_dir,
                sem_seg_thresh=self.cfg.MODEL.SINE.TEST.SEM_SEG_THRESH)
            acceleration = self.acceleration_choice.name
            logger.info("acceleration 'auto' chose %r (%s):\n%s", acceleration,
                        "cached decision" if self.acceleration_choice.from_cache
                        else "measured", self.acceleration_choice.table())
        self.model = accelerate(model, acceleration, onnx_dir)
        self.acceleration = acceleration
        self.backend = "onnx" if acceleration == "onnx" else "torch"
        self.references: Optional[ReferenceTokens] = None

    @classmethod
    def from_config_file(cls, config_file, weights=None, opts=(), device=None,
                         backend: str = "torch", onnx_dir: Optional[str] = None,
                         acceleration: str = "fp32"):
        cfg = load_user_config(config_file, opts)
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        if device is not None:
            cfg.MODEL.DEVICE = device
        return cls(cfg, backend=backend, onnx_dir=onnx_dir, acceleration=acceleration)

    @property
    def device(self):
        return self.model.device

    @property
    def image_size(self) -> int:
        """Images are resized so that their longer side fits the square the model pads to."""
        return self.model.pad_size

    @torch.no_grad()
    def set_reference(self, images, masks, labels=None, pooling: Optional[str] = None,
                      names=None, negatives=None,
                      mask_threshold: Optional[float] = None):
        """Encode reference image(s) and their masks once.

        Args:
            images: one image or a list of them: paths, ``PIL.Image``, (H, W, 3) arrays or
                (3, H, W) tensors (every mode is converted or refused, see
                ``sine.data.user_inputs``).
            masks: for one image, its masks: bool / 0-1 / 0-255 arrays, tensors, PIL images or
                PNG paths, one (H, W), an (N, H, W) stack or a list; a label map gives one
                object per non-zero value. For a list of images, a list of those.
            labels: non-negative integer class id of every object (same nesting as ``masks``);
                default: every object is class 0. Instance ids are the object positions
                0, 1, ... over all references.
            pooling: the model's reference-pooling variant (None = configured).
            names: class name of every mask (same nesting as ``masks``; None or "" = unnamed):
                SegIC's text prompt "a photo of a {name}"; kept as captions for every model.
            negatives: masks marked "not this" (look-alikes to exclude) on the reference
                image(s), same nesting as ``masks`` (for a list of images, a list with one entry
                per image; ``[]`` for none). Never returned; see the models' ``reference_tokens``.
            mask_threshold: binarise soft (float / lossy) masks at this fraction of their
                range, with a warning; None (default) refuses them with the fix.
        Returns:
            the :class:`ReferenceTokens`, also kept for :meth:`predict`.
        Raises:
            UserInputError: an image, mask or class id that cannot be used (the message names
                it and the fix).
        """
        if is_single_image(images):
            images, masks = [images], [masks]
            labels = None if labels is None else [labels]
            names = None if names is None else [names]
            negatives = None if negatives is None else [negatives]
        if not isinstance(images, (list, tuple)):
            read_image(images, "the reference image")  # raises: says what an image may be
        if not images:
            raise UserInputError("set_reference needs at least one reference image")
        if not isinstance(masks, (list, tuple)) or len(images) != len(masks):
            n = len(masks) if isinstance(masks, (list, tuple)) else type(masks).__name__
            raise UserInputError(f"got {len(images)} reference images but {n} mask sets: give "
                                 "one mask set per image")
        if labels is not None and len(labels) != len(images):
            raise UserInputError(f"got {len(images)} reference images but {len(labels)} label "
                                 "lists: give one list of class ids per image")
        if negatives is not None and len(negatives) != len(images):
            raise UserInputError(f"got negative masks for {len(negatives)} reference images, "
                                 f"but {len(images)} images: give one entry per image ([] for "
                                 "none)")
        tensors, ref_masks, ref_labels, ref_ids, ref_negatives, next_id = [], [], [], [], [], 0
        for k, (image, m) in enumerate(zip(images, masks)):
            image = read_image(image, f"reference image {k}")
            m = read_masks(m, image.shape, f"reference {k}", mask_threshold)
            lab = [0] * len(m) if labels is None else class_ids(
                labels[k], len(m), f"class ids of reference {k}")
            t = _resize_image(image, self.image_size)
            tensors.append(t)
            ref_masks.append(_resize_masks(m, tuple(t.shape[-2:])))
            ref_labels.append(torch.as_tensor(lab, dtype=torch.int64))
            ref_ids.append(torch.arange(next_id, next_id + len(m)))
            if negatives is not None:
                neg = negatives[k]
                no_neg = neg is None or (isinstance(neg, (list, tuple)) and not neg)
                neg = (np.zeros((0, *image.shape[:2]), bool) if no_neg else read_masks(
                    neg, image.shape, f"negatives of reference {k}", mask_threshold))
                ref_negatives.append(_resize_masks(neg, tuple(t.shape[-2:])) if len(neg)
                                     else torch.zeros((0, *t.shape[-2:]), dtype=torch.bool))
            next_id += len(m)
        flat_names = None
        if names is not None:
            if len(names) != len(masks) or any(len(n) != len(m) for n, m in zip(names, ref_masks)):
                raise UserInputError(f"names {names!r} must give one class name per reference mask "
                                 f"({[len(m) for m in ref_masks]} masks per reference)")
            flat_names = [(x or None) for n in names for x in n]
        self.references = self.encode_references(tensors, ref_masks, ref_labels, ref_ids, pooling,
                                                 flat_names,
                                                 ref_negatives if negatives is not None else None)
        return self.references

    @torch.no_grad()
    def encode_references(self, images, masks, labels, ids=None,
                          pooling: Optional[str] = None, names=None,
                          negatives=None) -> ReferenceTokens:
        """Reference tokens of uint8 (3, h, w) images (longer side <= ``image_size``) and
        their (n, h, w) bool masks, (n,) int64 labels and instance ids (one encoder batch);
        ``names``: optional class name of every mask, flat over the images; ``negatives``:
        optional (q_k, h, w) bool "not this" masks per image."""
        size = self.model.pad_size
        batch = torch.stack([self.model.preprocess_image(im, size) for im in images])
        dev = self.device
        return self.model.reference_tokens(
            self.model.encode(batch),
            [pad_masks(m, size).to(dev) for m in masks],
            [lab.to(dev) for lab in labels],
            None if ids is None else [i.to(dev) for i in ids],
            pooling=pooling, names=names,
            **({} if negatives is None else
               {"negatives": [pad_masks(m, size).to(dev) for m in negatives]}),
        )

    @torch.no_grad()
    def predict(self, target, references: Optional[ReferenceTokens] = None,
                outputs: Optional[Iterable[str]] = None):
        """Segment ``target`` (any image :meth:`set_reference` takes) at its original size.

        Args:
            references: reference tokens (default: those of the last :meth:`set_reference`).
            outputs: subset of {"id", "instances", "sem_seg"} (default: the model's
                configured outputs, e.g. ``MODEL.SINE.TEST.*_ON``).
        Returns:
            dict with "id" and "instances" (``Instances``), "sem_seg" (C, H, W) float and
            "sem_seg_classes" (C,), as asked.
        """
        refs = self.references if references is None else references
        if refs is None:
            raise UserInputError("call set_reference(...) before predict(...)")
        image = read_image(target, "the target image")
        t = _resize_image(image, self.image_size)
        size = self.model.pad_size
        features = self.model.encode(self.model.preprocess_image(t, size)[None])
        geometry = ImageGeometry((size, size), tuple(t.shape[-2:]), tuple(image.shape[:2]))
        if outputs is None:
            outputs = self.model.default_outputs()
        return self.model.segment(features, refs, geometry, outputs)


#: Former name of :class:`InContextPredictor` (the SINE predictor), kept for compatibility.
SinePredictor = InContextPredictor

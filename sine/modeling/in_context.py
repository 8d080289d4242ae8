"""The inference surface every in-context segmenter of the package implements.

Every caller (predictor, video predictor, FSS/FSOD/VOS suites, demos, label CLI) talks to a
model only through these methods, so a new model (SINE, SegIC, ...) needs no caller changes:

    images   = torch.stack([model.preprocess_image(im, S) for im in uint8_images])  # (N, 3, S, S)
    features = model.encode(images)                                    # Features, batch N
    tokens   = model.reference_tokens(select_features(features, refs), masks, labels, ids)
    result   = model.segment(select_features(features, [t]), tokens, geometry,
                             outputs={"id", "sem_seg"})

``forward`` of a model is prepare -> encode -> reference_tokens -> segment (training adds losses).
:meth:`InContextSegmenter.segment_batch` is that inference pass for detectron2-style input dicts
(see ``SINE.forward``), written once on top of the surface for every model.
"""
import importlib
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .batched_inputs import InContextBatch, prepare_batch

__all__ = [
    "ALL_OUTPUTS",
    "InContextBatch",
    "Features",
    "ImageGeometry",
    "InContextSegmenter",
    "ReferenceTokens",
    "check_outputs",
    "concat_features",
    "select_features",
]

#: Output kinds a caller can ask :meth:`InContextSegmenter.segment` for.
#: "id": one result per reference entity (``Instances`` with pred_ids);
#: "instances": class-level instance detections (``Instances``);
#: "sem_seg": per-class region scores (C, H, W) with "sem_seg_classes" (C,).
ALL_OUTPUTS: FrozenSet[str] = frozenset({"id", "instances", "sem_seg"})

#: What :meth:`InContextSegmenter.encode` returns: named tensors whose first dimension is the
#: image index (N, ...). Model-specific keys; callers only slice them (:func:`select_features`).
Features = Dict[str, torch.Tensor]


def concat_features(parts: Sequence[Features]) -> Features:
    """Features of several encoder batches as one batch (concatenated along dimension 0)."""
    if not parts:
        raise ValueError("no features to concatenate")
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def select_features(features: Features, index: Union[int, slice, Sequence[int]]) -> Features:
    """Features of some images of a batch, keeping the batch dimension ((n, ...) per key)."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    elif not isinstance(index, slice):
        index = torch.as_tensor(list(index), dtype=torch.long)
    return {k: v[index] if not isinstance(index, torch.Tensor) else v[index.to(v.device)]
            for k, v in features.items()}


@dataclass(frozen=True)
class ImageGeometry:
    """Plain sizes that map decoder outputs back to the caller's image (as SAM's
    ``postprocess_masks``): the model input is ``padded_size``; the image occupies its top-left
    ``image_size``; results are returned at ``output_size``. All (height, width)."""

    padded_size: Tuple[int, int]
    image_size: Tuple[int, int]
    output_size: Tuple[int, int]


@dataclass
class ReferenceTokens:
    """Everything a model needs from the references of one target, computed once and reusable
    for any number of targets (cached by the predictors and the suites).

    Common fields (n = number of reference entities, i.e. masks, over all reference images):
        labels: (n,) int64 class id of every entity.
        ids: (n,) int64 instance id of every entity (returned as ``pred_ids`` of "id").
        names: optional class name of every entity (SegIC's text prompt; captions).
    Models subclass this with their own tensors (e.g. SINE's ID / semantic tokens, SegIC's
    prototypes and text embeddings); callers treat those as opaque.
    """

    labels: torch.Tensor
    ids: torch.Tensor
    names: Optional[List[str]] = field(default=None, kw_only=True)

    def to(self, device) -> "ReferenceTokens":
        """A copy with every tensor field moved to ``device``."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return type(self)(**moved)

    def to_dict(self) -> Dict:
        """Plain, ``torch.save``-able form (tensors, lists, the class path); see
        :meth:`from_dict`. Used to cache tokens on disk (FSOD prototypes)."""
        cls = type(self)
        return {"type": f"{cls.__module__}:{cls.__qualname__}", "fields": dict(self.__dict__)}

    @staticmethod
    def from_dict(data: Dict) -> "ReferenceTokens":
        """The tokens saved by :meth:`to_dict` (their class is imported by its path)."""
        module, _, name = data["type"].partition(":")
        cls = getattr(importlib.import_module(module), name, None)
        if not (isinstance(cls, type) and issubclass(cls, ReferenceTokens)):
            raise ValueError(f"{data['type']!r} is not a ReferenceTokens class")
        return cls(**data["fields"])


class InContextSegmenter(nn.Module):
    """Abstract in-context segmenter: the one surface of :mod:`sine.modeling` models.

    Attributes every implementation sets:
        pad_size: square side S every image is zero-padded to (a multiple of the patch size).
        size_divisibility: the patch size.
    """

    pad_size: int
    size_divisibility: int

    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device

    @abstractmethod
    def preprocess_image(self, image: torch.Tensor, size: int) -> torch.Tensor:
        """(3, H, W) RGB image (H, W <= size), uint8 or float in 0-255 -> normalised float
        (3, size, size), padded bottom/right as the model's official pipeline pads."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> Features:
        """(N, 3, S, S) preprocessed images -> :data:`Features` (the cacheable backbone pass)."""

    @abstractmethod
    def reference_tokens(
        self,
        features: Features,
        masks: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        ids: Optional[Sequence[torch.Tensor]] = None,
        *,
        pooling: Optional[str] = None,
        names: Optional[Sequence[str]] = None,
        negatives: Optional[Sequence[torch.Tensor]] = None,
    ) -> ReferenceTokens:
        """Tokens of K reference images.

        Args:
            features: features of the K reference images (batch K).
            masks: K bool tensors (n_k, S, S), padded like the images.
            labels: K int64 tensors (n_k,) of class ids.
            ids: K int64 tensors (n_k,) of instance ids (default: 0, 1, ... over all masks).
            pooling: protocol variant of the reference pooling (spec §2.4; None = configured).
            names: class name of every entity, in mask order (optional).
            negatives: K bool tensors (q_k, S, S): masks marked "not this" on the reference
                images (look-alikes to exclude; optional). They are never returned as results;
                each model documents how they suppress (SINE: a suppressing class, SegIC:
                "another entity" tokens).
        """

    @abstractmethod
    def segment(
        self,
        target_features: Features,
        tokens: ReferenceTokens,
        geometry: ImageGeometry,
        outputs: Iterable[str] = ALL_OUTPUTS,
    ) -> Dict:
        """Segment one target (features of batch 1) given reference tokens.

        Decides from ``outputs`` (a subset of :data:`ALL_OUTPUTS`) what to decode and
        post-process (e.g. only ID queries when only "id" is asked), applies the model's
        autocast/fast-path settings, and returns results at ``geometry.output_size``:
        {"id": Instances, "instances": Instances, "sem_seg": (C, H, W), "sem_seg_classes": (C,)}
        restricted to what was asked and what the model produces (documented per model).
        """

    def supported_outputs(self) -> FrozenSet[str]:
        """Output kinds this model can produce (a subset of :data:`ALL_OUTPUTS`)."""
        return ALL_OUTPUTS

    def default_outputs(self) -> FrozenSet[str]:
        """Output kinds returned when a caller does not choose (``forward``, the predictor):
        the model's configured ones (e.g. SINE's ``MODEL.SINE.TEST.*_ON``)."""
        return self.supported_outputs()

    def prepare_inputs(self, batched_inputs: List[Dict], with_targets: bool) -> InContextBatch:
        """Validate detectron2-style input dicts (see ``SINE.forward``) and pad them to one
        square batch (:class:`InContextBatch`)."""
        return prepare_batch(batched_inputs, self.preprocess_image, self.pad_size,
                             self.size_divisibility, self.device, with_targets)

    def segment_batch(self, batched_inputs: List[Dict],
                      outputs: Optional[Iterable[str]] = None) -> List[Dict]:
        """Inference on detectron2-style input dicts through the surface: all images of the
        batch are encoded together, then each target is segmented with its own references.

        Args:
            batched_inputs: one dict per target (see ``SINE.forward``).
            outputs: output kinds (default: :meth:`default_outputs`).
        Returns:
            one :meth:`segment` result per target.
        """
        outputs = check_outputs(self.default_outputs() if outputs is None else outputs,
                                self.supported_outputs())
        batch = self.prepare_inputs(batched_inputs, with_targets=False)
        num_targets = len(batch.num_refs)
        features = self.encode(torch.cat([batch.tar_images, batch.ref_images]))
        results = []
        for b in range(num_targets):
            refs = batch.refs_of(b)
            tokens = self.reference_tokens(
                select_features(features, slice(num_targets + refs.start, num_targets + refs.stop)),
                batch.ref_masks[refs], batch.ref_labels[refs], batch.ref_ids[refs],
                names=batch.names_of(b),
            )
            geometry = ImageGeometry(batch.padded_size, batch.image_sizes[b],
                                     batch.output_sizes[b])
            results.append(self.segment(select_features(features, b), tokens, geometry, outputs))
        return results


def check_outputs(outputs: Iterable[str], supported: FrozenSet[str]) -> FrozenSet[str]:
    """Validate a requested output set; a clear error names unknown or unsupported kinds."""
    outputs = frozenset(outputs)
    unknown = outputs - ALL_OUTPUTS
    if unknown:
        raise ValueError(f"unknown output kind(s) {sorted(unknown)}; choose from "
                         f"{sorted(ALL_OUTPUTS)}")
    missing = outputs - supported
    if missing:
        raise ValueError(f"this model does not produce {sorted(missing)}; it produces "
                         f"{sorted(supported)}")
    return outputs


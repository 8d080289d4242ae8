"""SINE meta-architecture: in-context segmentation at ID, instance and semantic level.

Attribute names (``image_encoder``, ``transformer_decoder``, ``criterion``) equal the official
ones, so an official flat state dict loads with no key renaming.
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks
from torch import nn

from ..criterion import SetCriterion
from ..postprocessing import (
    ResizedMaskLogits,
    identity_inference,
    instance_inference,
    resize_mask_logits,
    semantic_inference,
    semantic_inference_resized,
)
from ..transformer_decoder import build_transformer_decoder

__all__ = ["SINE", "SINEInputs"]



@dataclass
class SINEInputs:
    """A batch in model layout: normalised images zero-padded to one square size S.

    Fields (B targets, R references in total, ``num_refs[b]`` of them for target b, in order):
        tar_images: (B, 3, S, S); ref_images: (R, 3, S, S).
        ref_masks / ref_labels / ref_ids: R tensors (n_r, S, S) bool, (n_r,) int64, (n_r,) int64.
        image_sizes: (h, w) content size of every target; output_sizes: (height, width).
        targets: per target {"labels", "masks" (n, S, S) bool, "ids", "ref_ids"} or None.
    """

    tar_images: torch.Tensor
    ref_images: torch.Tensor
    num_refs: List[int]
    ref_masks: List[torch.Tensor]
    ref_labels: List[torch.Tensor]
    ref_ids: List[torch.Tensor]
    image_sizes: List[Tuple[int, int]]
    output_sizes: List[Tuple[int, int]]
    targets: Optional[List[Dict[str, torch.Tensor]]]

    @property
    def padded_size(self) -> Tuple[int, int]:
        return tuple(self.tar_images.shape[-2:])

    def refs_of(self, b: int) -> slice:
        """Index range of target b's references in the flat reference lists."""
        start = sum(self.num_refs[:b])
        return slice(start, start + self.num_refs[b])


@META_ARCH_REGISTRY.register()
class SINE(nn.Module):
    """Segment a target image given reference images with masks (spec §1-§5).

    Input: a list with one dict per target (see :meth:`forward`). Images are uint8 RGB; the model
    normalises them, pads every image and mask of the batch bottom/right to one square size
    (``pad_size``, or the next multiple of the patch size above the largest image side), encodes
    them with the frozen DINOv2 + neck, and decodes each target with its references.
    """

    @configurable
    def __init__(
        self,
        *,
        image_encoder: Backbone,
        transformer_decoder: nn.Module,
        criterion: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        pad_size: int,
        semantic_on: bool = True,
        instance_on: bool = True,
        identity_on: bool = True,
        test_topk_per_image: int = 100,
        instance_score_thresh: float = 0.0,
        id_score_thresh: float = -1e9,
        fast_inference: bool = True,
        autocast_bf16: bool = False,
        compile_encoder: bool = False,
    ):
        """
        Args:
            image_encoder: backbone whose forward returns {"encoder", "neck"} feature maps.
            transformer_decoder: M-Former, ``(ref_feats, ref_masks, ref_labels, tar_feat)`` -> raw.
            criterion: training losses, ``(outputs, targets)`` -> dict, with ``weight_dict``.
            pixel_mean, pixel_std: per-channel normalisation (0-255 scale, RGB).
            pad_size: square size every image is padded to (multiple of the patch size).
            semantic_on, instance_on, identity_on: which results inference returns.
            test_topk_per_image: candidates kept per target before mask rescoring.
            instance_score_thresh, id_score_thresh: keep results scoring strictly above these.
            fast_inference: optimised computation with equal outputs (see
                :meth:`set_fast_inference`); False = the official computation.
            autocast_bf16: run encode/decode under bf16 autocast in eval mode on CUDA.
            compile_encoder: ``torch.compile`` the DINOv2 ViT (state-dict keys unchanged).
        """
        super().__init__()
        self.image_encoder = image_encoder
        self.transformer_decoder = transformer_decoder
        self.criterion = criterion
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = image_encoder.size_divisibility
        if pad_size % self.size_divisibility:
            raise ValueError(
                f"MODEL.SINE.PAD_SIZE={pad_size} must be a multiple of the patch size "
                f"{self.size_divisibility}."
            )
        self.pad_size = pad_size
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.identity_on = identity_on
        self.test_topk_per_image = test_topk_per_image
        self.instance_score_thresh = instance_score_thresh
        self.id_score_thresh = id_score_thresh
        self.autocast_bf16 = autocast_bf16
        self.set_fast_inference(fast_inference)
        if compile_encoder:
            # nn.Module.compile keeps parameter names (torch.compile(module) would prefix them).
            getattr(image_encoder, "encoder", image_encoder).compile()

    @classmethod
    def from_config(cls, cfg):
        test = cfg.MODEL.SINE.TEST
        return {
            "image_encoder": build_backbone(cfg),
            "transformer_decoder": build_transformer_decoder(cfg),
            "criterion": SetCriterion(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "pad_size": cfg.MODEL.SINE.PAD_SIZE,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "identity_on": test.IDENTITY_ON,
            "test_topk_per_image": test.TOPK_PER_IMAGE,
            "instance_score_thresh": test.INSTANCE_SCORE_THRESH,
            "id_score_thresh": test.ID_SCORE_THRESH,
            "fast_inference": cfg.MODEL.SINE.FAST_INFERENCE,
            "autocast_bf16": cfg.MODEL.SINE.AUTOCAST_BF16,
            "compile_encoder": cfg.MODEL.SINE.COMPILE,
        }

    def set_fast_inference(self, enabled: bool) -> None:
        """Switch every submodule between the optimised and the official computation.

        Fast: fused SDPA attention (ViT, fusion, decoder), pos-embed cached per grid size,
        auxiliary predictions computed only when read, post-processing of only what is
        returned. Official: unfused attention, everything recomputed and materialised. Both give
        the same outputs up to float rounding; gradients flow through either.
        """
        self.fast_inference = bool(enabled)
        for module in self.modules():
            if module is not self and hasattr(module, "fast_inference"):
                module.fast_inference = self.fast_inference

    def _autocast(self):
        """bf16 autocast for inference on CUDA when MODEL.SINE.AUTOCAST_BF16 (never on CPU)."""
        if self.autocast_bf16 and not self.training and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per target:

                * "image": uint8 (3, H, W) RGB, the resized image without padding;
                * "height", "width": output size (default: H, W);
                * "instances": target GT ``Instances`` with ``gt_masks`` (N, H, W) (bool tensor
                  or BitMasks), ``gt_classes`` (N,), ``ins_ids`` (N,); required in training;
                * "references": list of K >= 1 dicts {"image", "instances"} (same fields; at
                  least one non-empty mask each; ``ins_ids`` optional at inference).

        Returns:
            Training: dict of weighted losses (only those in ``criterion.weight_dict``).
            Inference: one dict per target with, as enabled in MODEL.SINE.TEST,
            "sem_seg" (C, height, width) float and "sem_seg_classes" (C,) int64 sorted class ids;
            "instances" (``Instances``: pred_masks, pred_boxes, scores, pred_classes); and
            "id" (``Instances``: the same plus pred_ids = reference instance id), all sorted by
            score (descending).
        """
        inputs = self.prepare_inputs(batched_inputs, with_targets=self.training)
        outputs, _ = self.run(inputs)
        if self.training:
            losses = self.criterion(outputs, inputs.targets)
            weights = self.criterion.weight_dict
            return {k: v * weights[k] for k, v in losses.items() if k in weights}
        return [self.inference(out, inputs, b) for b, out in enumerate(outputs)]

    def forward_raw(self, batched_inputs: List[Dict]) -> Tuple[List[Dict], Dict[str, torch.Tensor]]:
        """Raw decoder outputs and features, without losses or post-processing.

        Returns:
            (outputs, features): ``outputs`` holds one decoder dict per target (see
            ``MFormerDecoder.forward``); ``features`` has "tar_encoder" (B, D, h, w),
            "tar_neck" (B, C, h, w), "ref_encoder" (R, D, h, w), "ref_neck" (R, C, h, w).
        """
        return self.run(self.prepare_inputs(batched_inputs, with_targets=False), lazy_aux=False)

    def run(self, inputs: "SINEInputs", lazy_aux: Optional[bool] = None
            ) -> Tuple[List[Dict], Dict[str, torch.Tensor]]:
        """Encode all images of a prepared batch, then decode every target.

        ``lazy_aux``: see ``MFormerDecoder.forward`` (None = lazy on the fast path in eval).
        """
        B = inputs.tar_images.shape[0]
        # Only ID results wanted: the instance/semantic queries cannot affect them (fast path).
        id_only = lazy_aux is not False and self.fast_inference and not self.training and \
            self.identity_on and not (self.semantic_on or self.instance_on)
        enc, neck = self.encode(torch.cat([inputs.tar_images, inputs.ref_images]), True)
        features = {"tar_encoder": enc[:B], "tar_neck": neck[:B],
                    "ref_encoder": enc[B:], "ref_neck": neck[B:]}
        outputs = []
        for b in range(B):
            refs = inputs.refs_of(b)
            outputs.append(self.decode(features["ref_neck"][refs], inputs.ref_masks[refs],
                                       inputs.ref_labels[refs], features["tar_neck"][b:b + 1],
                                       lazy_aux=lazy_aux, id_only=id_only))
        return outputs, features

    def encode(self, images: torch.Tensor, return_encoder_features: bool = False):
        """
        Args:
            images: (N, 3, S, S) normalised, padded images (see :meth:`preprocess_image`).
        Returns:
            (N, C, S/14, S/14) neck features, or (encoder, neck) features if requested.
        """
        with self._autocast():
            feats = self.image_encoder(images)
        if return_encoder_features:
            return feats["encoder"], feats["neck"]
        return feats["neck"]

    def decode(self, ref_feats, ref_masks, ref_labels, tar_feat, pooling=None,
               lazy_aux=None, id_only=False) -> Dict:
        """Decode one target. See ``MFormerDecoder.forward`` for arguments and outputs.

        Args:
            ref_feats: (K, C, h, w) neck features of the references.
            ref_masks: K tensors (n_k, S, S), masks padded like the images.
            ref_labels: K int64 tensors (n_k,).
            tar_feat: (1, C, h, w) neck features of the target.
            pooling: reference-pooling variant (None = configured default).
            lazy_aux: compute ``aux_outputs`` only when read (None = on the fast path in eval).
            id_only: decode only the ID queries (same ID outputs; no ``pred_ins_*`` keys).
        """
        with self._autocast():
            return self.transformer_decoder(
                ref_feats, list(ref_masks), list(ref_labels), tar_feat, pooling=pooling,
                lazy_aux=lazy_aux, id_only=id_only,
            )

    def inference(self, raw: Dict, inputs: "SINEInputs", b: int) -> Dict:
        """Post-process the raw outputs of target ``b`` into the enabled result types."""
        sizes = (inputs.padded_size, inputs.image_sizes[b], inputs.output_sizes[b])
        if self.fast_inference:
            return self._inference_fast(raw, inputs, b, sizes)
        result = {}
        if self.semantic_on:
            result["sem_seg"] = semantic_inference(
                raw["pred_ins_logits"][0], raw["pred_ins_masks"][0], *sizes
            )
            result["sem_seg_classes"] = raw["ref_sem_labels"][0]
        if self.instance_on:
            result["instances"] = instance_inference(
                raw["pred_ins_logits"][0],
                resize_mask_logits(raw["pred_ins_masks"][0], *sizes),
                raw["ref_sem_labels"][0],
                self.test_topk_per_image,
                self.instance_score_thresh,
            )
        if self.identity_on:
            result["id"] = identity_inference(
                raw["pred_id_logits"][0],
                resize_mask_logits(raw["pred_id_masks"][0], *sizes),
                raw["ref_id_labels"][0],
                torch.cat(inputs.ref_ids[inputs.refs_of(b)]),
                self.test_topk_per_image,
                self.id_score_thresh,
            )
        return result

    def _inference_fast(self, raw: Dict, inputs: "SINEInputs", b: int, sizes) -> Dict:
        """:meth:`inference` computing only what is returned (see ResizedMaskLogits)."""
        result = {}
        if self.semantic_on or self.instance_on:
            ins_logits = raw["pred_ins_logits"][0].float()
            ins_masks = ResizedMaskLogits(raw["pred_ins_masks"][0].float(), *sizes)
        if self.semantic_on:
            result["sem_seg"] = semantic_inference_resized(ins_logits, ins_masks)
            result["sem_seg_classes"] = raw["ref_sem_labels"][0]
        if self.instance_on:
            result["instances"] = instance_inference(
                ins_logits, ins_masks, raw["ref_sem_labels"][0], self.test_topk_per_image,
                self.instance_score_thresh,
            )
        if self.identity_on:
            result["id"] = identity_inference(
                raw["pred_id_logits"][0].float(),
                ResizedMaskLogits(raw["pred_id_masks"][0].float(), *sizes),
                raw["ref_id_labels"][0],
                torch.cat(inputs.ref_ids[inputs.refs_of(b)]),
                self.test_topk_per_image,
                self.id_score_thresh,
            )
        return result

    # ------------------------------------------------------------------ input handling
    def padded_size_for(self, batched_inputs: List[Dict]) -> int:
        """Square size of the batch: PAD_SIZE, or the next patch multiple above a larger image."""
        sides = [
            max(d["image"].shape[-2:])
            for x in batched_inputs
            for d in [x] + list(x.get("references", []))
        ]
        div = self.size_divisibility
        return max(self.pad_size, int(math.ceil(max(sides) / div)) * div)

    def preprocess_image(self, image: torch.Tensor, size: int) -> torch.Tensor:
        """uint8 (3, H, W) -> normalised float (3, size, size), zero-padded bottom/right."""
        image = (image.to(self.device).float() - self.pixel_mean) / self.pixel_std
        return F.pad(image, (0, size - image.shape[-1], 0, size - image.shape[-2]))

    def prepare_inputs(self, batched_inputs: List[Dict], with_targets: bool) -> SINEInputs:
        """Validate ``batched_inputs`` and convert them to model layout (:class:`SINEInputs`)."""
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise ValueError("batched_inputs must be a non-empty list of dicts (one per target).")
        for b, x in enumerate(batched_inputs):
            _check_target_dict(x, b)
        size = self.padded_size_for(batched_inputs)
        tar_images, ref_images, num_refs = [], [], []
        ref_masks, ref_labels, ref_ids, targets = [], [], [], []
        for b, x in enumerate(batched_inputs):
            tar_images.append(self.preprocess_image(x["image"], size))
            num_refs.append(len(x["references"]))
            for k, ref in enumerate(x["references"]):
                where = f"batched_inputs[{b}]['references'][{k}]"
                masks, labels, ids = _read_instances(ref, where, is_reference=True)
                ref_images.append(self.preprocess_image(ref["image"], size))
                ref_masks.append(_pad_masks(masks, size).to(self.device))
                ref_labels.append(labels.to(self.device))
                ref_ids.append(ids.to(self.device))
            if with_targets:
                masks, labels, ids = _read_instances(x, f"batched_inputs[{b}]", False)
                targets.append({
                    "labels": labels.to(self.device),
                    "masks": _pad_masks(masks, size).to(self.device),
                    "ids": ids.to(self.device),
                    "ref_ids": torch.cat(ref_ids[-num_refs[-1]:]),
                })
        return SINEInputs(
            tar_images=torch.stack(tar_images),
            ref_images=torch.stack(ref_images),
            num_refs=num_refs,
            ref_masks=ref_masks,
            ref_labels=ref_labels,
            ref_ids=ref_ids,
            image_sizes=[tuple(x["image"].shape[-2:]) for x in batched_inputs],
            output_sizes=[_output_size(x) for x in batched_inputs],
            targets=targets if with_targets else None,
        )


def _check_image(image, where: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            f"{where}['image'] must be an RGB image tensor of shape (3, H, W); got {got}. "
            "Convert grayscale/RGBA images to 3-channel RGB in CHW layout."
        )
    if image.dtype != torch.uint8:
        raise ValueError(
            f"{where}['image'] must be uint8 with values 0-255; got {image.dtype}. Pass the raw "
            "(resized) RGB image: the model normalises and pads it itself."
        )


def _check_target_dict(x: Dict, b: int) -> None:
    where = f"batched_inputs[{b}]"
    if not isinstance(x, dict) or "image" not in x:
        raise ValueError(f"{where} must be a dict with an 'image' entry.")
    _check_image(x["image"], where)
    refs = x.get("references")
    if not refs:
        raise ValueError(
            f"{where} has no 'references': give at least one reference dict "
            "{'image', 'instances'} per target."
        )
    for k, ref in enumerate(refs):
        if not isinstance(ref, dict) or "image" not in ref:
            raise ValueError(f"{where}['references'][{k}] must be a dict with an 'image' entry.")
        _check_image(ref["image"], f"{where}['references'][{k}]")


def _read_instances(x: Dict, where: str, is_reference: bool):
    """(masks (n, H, W) bool, classes (n,) int64, ids (n,) int64) of ``x['instances']``."""
    inst = x.get("instances")
    if inst is None or not inst.has("gt_masks") or not inst.has("gt_classes"):
        role = "Each reference" if is_reference else "In training, each target"
        raise ValueError(
            f"{where} needs 'instances' with gt_masks and gt_classes. {role} must carry its masks."
        )
    masks = inst.gt_masks.tensor if isinstance(inst.gt_masks, BitMasks) else inst.gt_masks
    masks = torch.as_tensor(masks)
    image_hw = tuple(x["image"].shape[-2:])
    if masks.dim() != 3 or tuple(masks.shape[-2:]) != image_hw:
        raise ValueError(
            f"{where}: gt_masks have shape {tuple(masks.shape)} but the image is {image_hw}; "
            "masks must be (N, H, W) at the image size (resize them with the image, no padding)."
        )
    masks = masks.bool()
    n = masks.shape[0]
    classes = torch.as_tensor(inst.gt_classes).long()
    if inst.has("ins_ids"):
        ids = torch.as_tensor(inst.ins_ids).long()
    elif is_reference:
        ids = torch.arange(n)  # only needed for training and for pred_ids
    else:
        raise ValueError(f"{where}: training targets need 'ins_ids' in their instances.")
    if classes.shape != (n,) or ids.shape != (n,):
        raise ValueError(
            f"{where}: {n} masks but gt_classes {tuple(classes.shape)} / ins_ids "
            f"{tuple(ids.shape)}; give one class and one instance id per mask."
        )
    if is_reference:
        _check_reference_masks(masks, where)
    return masks, classes, ids


def _check_reference_masks(masks: torch.Tensor, where: str) -> None:
    if masks.shape[0] == 0:
        raise ValueError(
            f"{where} has no mask: every reference needs at least one mask (drop references "
            "without annotations)."
        )
    empty = torch.where(~masks.flatten(1).any(dim=1))[0].tolist()
    if empty:
        raise ValueError(
            f"{where}: reference mask(s) {empty} are empty (all False); remove them, they give "
            "no prototype."
        )


def _pad_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    padded = masks.new_zeros((masks.shape[0], size, size))
    padded[:, : masks.shape[1], : masks.shape[2]] = masks
    return padded


def _output_size(x: Dict) -> Tuple[int, int]:
    h, w = x["image"].shape[-2:]
    return int(x.get("height", h)), int(x.get("width", w))

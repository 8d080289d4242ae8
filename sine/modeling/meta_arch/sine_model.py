"""SINE meta-architecture: in-context segmentation at ID, instance and semantic level.

SINE implements the package's inference surface (:class:`~sine.modeling.in_context.
InContextSegmenter`): ``encode`` -> ``reference_tokens`` (:class:`SINEReferenceTokens`) ->
``segment``. Attribute names (``image_encoder``, ``transformer_decoder``, ``criterion``) equal the
official ones, so an official flat state dict loads with no key renaming.
"""
import contextlib
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import Instances
from torch import nn

from ..batched_inputs import InContextBatch, padded_size_for
from ..criterion import SetCriterion
from ..in_context import (
    ALL_OUTPUTS,
    Features,
    ImageGeometry,
    InContextSegmenter,
    ReferenceTokens,
    check_outputs,
    select_features,
)
from ..postprocessing import (
    ResizedMaskLogits,
    identity_inference,
    instance_inference,
    masks_to_boxes,
    resize_mask_logits,
    semantic_inference,
    semantic_inference_resized,
)
from ..transformer_decoder import build_transformer_decoder
from ..transformer_decoder.reference_pooling import TOKENS_PER_LABEL, get_reference_pooling

__all__ = ["SINE", "SINEInputs", "SINEReferenceTokens"]

#: The batch layout of :meth:`SINE.prepare_inputs` (kept under its former name).
SINEInputs = InContextBatch


@dataclass
class SINEReferenceTokens(ReferenceTokens):
    """SINE's reference tokens of one target (spec §2.3-§2.4), before In-Context Fusion.

    Fields (nm ID tokens, nc semantic prototypes, C channels):
        labels: (nm,) class of every ID token; ids: (nm,) its instance id (``pred_ids``).
        id_tokens: (1, nm, C); nm = 0 for class prototypes alone (FSOD, no ID queries).
        sem_tokens: (1, nc, C) class prototypes; sem_labels: (nc,) their sorted class ids.
        negative_label: the class of the masks marked "not this" (their ID tokens have id
            :data:`NEGATIVE_ID`), or None; :meth:`SINE.segment` removes it from the results
            and suppresses the positives where it wins.
    """

    id_tokens: torch.Tensor
    sem_tokens: torch.Tensor
    sem_labels: torch.Tensor
    negative_label: Optional[int] = field(default=None, kw_only=True)

    @classmethod
    def from_prototypes(cls, class_ids: torch.Tensor, prototypes: torch.Tensor
                        ) -> "SINEReferenceTokens":
        """Tokens of precomputed class prototypes, without ID tokens (FSOD, spec §7.2).

        Args:
            class_ids: (nc,) int64 class id of every prototype.
            prototypes: (nc, C) prototypes (e.g. ``fsod`` pooling accumulated over batches).
        """
        if prototypes.dim() != 2 or prototypes.shape[0] != class_ids.shape[0]:
            raise ValueError(f"prototypes {tuple(prototypes.shape)} do not match class_ids "
                             f"{tuple(class_ids.shape)}: expected (nc, C) and (nc,)")
        class_ids = class_ids.long()
        empty = class_ids.new_zeros((0,))
        id_tokens = prototypes.new_zeros((1, 0, prototypes.shape[1]))
        return cls(labels=empty, ids=empty, id_tokens=id_tokens, sem_tokens=prototypes[None],
                   sem_labels=class_ids)


@META_ARCH_REGISTRY.register()
class SINE(InContextSegmenter):
    """Segment a target image given reference images with masks (spec §1-§5).

    Input: a list with one dict per target (see :meth:`forward`). Images are uint8 RGB; the model
    normalises them, pads every image and mask of the batch bottom/right to one square size
    (``pad_size``, or the next multiple of the patch size above the largest image side), encodes
    them with the frozen DINOv2 + neck (:meth:`encode`), pools the reference tokens
    (:meth:`reference_tokens`) and decodes each target with them (:meth:`segment`).
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

    def supported_outputs(self) -> FrozenSet[str]:
        return ALL_OUTPUTS

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per target:

                * "image": uint8 (3, H, W) RGB, the resized image without padding;
                * "height", "width": output size (default: H, W);
                * "instances": target GT ``Instances`` with ``gt_masks`` (N, H, W) (bool tensor
                  or BitMasks), ``gt_classes`` (N,), ``ins_ids`` (N,); required in training;
                * "references": list of K >= 1 dicts {"image", "instances"} (same fields; at
                  least one non-empty mask each; ``ins_ids`` optional at inference), and
                  optionally "class_names" (one string per mask, read by models with text
                  prompts such as SegIC; SINE keeps them only as captions).

        Returns:
            Training: dict of weighted losses (only those in ``criterion.weight_dict``).
            Inference: one :meth:`segment` result per target with the outputs enabled in
            MODEL.SINE.TEST (:meth:`default_outputs`).
        """
        if not self.training:
            return self.segment_batch(batched_inputs)
        inputs = self.prepare_inputs(batched_inputs, with_targets=True)
        outputs, _ = self.run(inputs)
        losses = self.criterion(outputs, inputs.targets)
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    def forward_raw(self, batched_inputs: List[Dict]) -> Tuple[List[Dict], Dict[str, torch.Tensor]]:
        """Raw decoder outputs and features, without losses or post-processing.

        Returns:
            (outputs, features): ``outputs`` holds one decoder dict per target (see
            ``MFormerDecoder.forward``); ``features`` has "tar_encoder" (B, D, h, w),
            "tar_neck" (B, C, h, w), "ref_encoder" (R, D, h, w), "ref_neck" (R, C, h, w).
        """
        return self.run(self.prepare_inputs(batched_inputs, with_targets=False), lazy_aux=False)

    def run(self, inputs: InContextBatch, lazy_aux: Optional[bool] = None
            ) -> Tuple[List[Dict], Dict[str, torch.Tensor]]:
        """Encode all images of a prepared batch, then decode every target (raw outputs).

        ``lazy_aux``: see ``MFormerDecoder.forward`` (None = lazy on the fast path in eval).
        """
        B = inputs.tar_images.shape[0]
        with self._autocast():
            feats = self.image_encoder(torch.cat([inputs.tar_images, inputs.ref_images]))
        features = {"tar_encoder": feats["encoder"][:B], "tar_neck": feats["neck"][:B],
                    "ref_encoder": feats["encoder"][B:], "ref_neck": feats["neck"][B:]}
        outputs = []
        for b in range(B):
            refs = inputs.refs_of(b)
            tokens = self.reference_tokens(
                select_features(feats, slice(B + refs.start, B + refs.stop)),
                inputs.ref_masks[refs], inputs.ref_labels[refs], inputs.ref_ids[refs])
            outputs.append(self.decode_tokens(select_features(feats, b), tokens,
                                              lazy_aux=lazy_aux))
        return outputs, features

    # ------------------------------------------------------------------ inference surface
    def encode(self, images: torch.Tensor) -> Features:
        """
        Args:
            images: (N, 3, S, S) normalised, padded images (see :meth:`preprocess_image`).
        Returns:
            {"neck": (N, C, S/14, S/14)}: the neck features, all that :meth:`reference_tokens`
            and :meth:`segment` read (the DINOv2 features are not kept: callers cache this).
        """
        with self._autocast():
            return {"neck": self.image_encoder(images)["neck"]}

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
    ) -> SINEReferenceTokens:
        """ID tokens and semantic prototypes of K references (spec §2.3-§2.4), pooled in float32.

        Args:
            features: :meth:`encode` features of the K references.
            masks: K bool tensors (n_k, S, S) padded like the images.
            labels: K int64 tensors (n_k,) class ids ("vos" pooling: object ids).
            ids: K int64 tensors (n_k,) instance ids (default 0, 1, ... over all masks).
            pooling: "instance" (training, FSS), "vos", "fsod" or another registered name of
                ``REFERENCE_POOLING``; None = MODEL.SINE.REFERENCE_POOLING.
            names: optional class names (kept in the tokens; SINE does not read them).
            negatives: K bool tensors (q_k, S, S) of masks marked "not this" (look-alikes to
                exclude). They are pooled as one extra "suppressing" class (label = largest
                class + 1) with their own ID tokens (id :data:`NEGATIVE_ID`), which compete
                with the positives in the decoder and in :meth:`segment`'s results.
        """
        masks, labels = list(masks), list(labels)
        negative_label = None
        if negatives is not None and any(len(m) for m in negatives):
            masks, labels, ids, negative_label = _with_negatives(masks, labels, ids, negatives)
        if len(masks) != features["neck"].shape[0] or len(labels) != len(masks):
            raise ValueError(
                f"{features['neck'].shape[0]} reference images but {len(masks)} mask sets and "
                f"{len(labels)} label sets; give one (n_k, S, S) mask tensor and one (n_k,) "
                "label tensor per reference image"
            )
        pooling = pooling or self.transformer_decoder.reference_pooling
        id_tokens, sem_tokens, id_labels, sem_labels = self.transformer_decoder.pool_references(
            features["neck"], masks, labels, pooling)
        if get_reference_pooling(pooling).tokens_per == TOKENS_PER_LABEL:
            token_ids = id_labels  # one token per label: the label is the entity's id
        elif ids is None:
            token_ids = torch.arange(len(id_labels), device=id_labels.device)
        else:
            token_ids = torch.cat([torch.as_tensor(i, device=id_labels.device).long()
                                   for i in ids])
        if names is not None and negative_label is not None:
            names = list(names) + [None] * (len(token_ids) - len(names))
        return SINEReferenceTokens(labels=id_labels, ids=token_ids, id_tokens=id_tokens,
                                   sem_tokens=sem_tokens, sem_labels=sem_labels,
                                   names=None if names is None else list(names),
                                   negative_label=negative_label)

    def segment(
        self,
        target_features: Features,
        tokens: ReferenceTokens,
        geometry: ImageGeometry,
        outputs: Iterable[str] = ALL_OUTPUTS,
    ) -> Dict:
        """Segment one target with SINE's reference tokens (spec §3, §5).

        Only ID results asked (e.g. VOS) on the fast path: the ID queries are decoded alone
        (they attend to nothing else, so their outputs are those of the full decode). Encoder
        and decoder run under bf16 autocast with MODEL.SINE.AUTOCAST_BF16 on CUDA; the fast path
        post-processes only what is returned (``ResizedMaskLogits``).

        Returns:
            the asked subset of {"id": Instances (pred_masks, pred_boxes, scores, pred_classes,
            pred_ids), "instances": Instances (the same without pred_ids), "sem_seg" (C, H, W)
            float, "sem_seg_classes" (C,) int64}, all at ``geometry.output_size`` and sorted by
            score (descending).
        """
        outputs = check_outputs(outputs, self.supported_outputs())
        if not isinstance(tokens, SINEReferenceTokens):
            raise TypeError(f"SINE.segment needs SINEReferenceTokens (from "
                            f"SINE.reference_tokens), got {type(tokens).__name__}")
        if target_features["neck"].shape[0] != 1:
            raise ValueError(
                f"segment takes the features of one target, got a batch of "
                f"{target_features['neck'].shape[0]}; select one with select_features(features, b)"
            )
        id_only = self.fast_inference and not (outputs & {"instances", "sem_seg"})
        raw = self.decode_tokens(target_features, tokens, id_only=id_only)
        # Results are post-processed in float32 whatever autocast a caller runs under.
        with torch.autocast(self.device.type, enabled=False):
            result = self.postprocess(raw, tokens, geometry, outputs)
        if tokens.negative_label is not None:
            result = suppress_negatives(result, tokens.negative_label)
        return result

    def default_outputs(self) -> FrozenSet[str]:
        """The outputs enabled by MODEL.SINE.TEST.{IDENTITY,INSTANCE,SEMANTIC}_ON."""
        enabled = {"id": self.identity_on, "instances": self.instance_on,
                   "sem_seg": self.semantic_on}
        return frozenset(k for k, on in enabled.items() if on)

    # ------------------------------------------------------------------ decoding
    def decode_tokens(self, target_features: Features, tokens: SINEReferenceTokens,
                      lazy_aux: Optional[bool] = None, id_only: bool = False) -> Dict:
        """Raw decoder outputs of one target (see ``MFormerDecoder.forward``)."""
        with self._autocast():
            return self.transformer_decoder.forward_tokens(
                tokens.id_tokens, tokens.sem_tokens, tokens.labels, tokens.sem_labels,
                target_features["neck"], lazy_aux=lazy_aux, id_only=id_only,
            )

    def decode(self, ref_feats, ref_masks, ref_labels, tar_feat, pooling=None,
               lazy_aux=None, id_only=False) -> Dict:
        """Decode one target from neck features (pooling included). See
        ``MFormerDecoder.forward`` for arguments and outputs.

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

    def postprocess(self, raw: Dict, tokens: SINEReferenceTokens, geometry: ImageGeometry,
                    outputs: FrozenSet[str]) -> Dict:
        """Raw outputs of one target -> the asked results at ``geometry.output_size``."""
        sizes = (tuple(geometry.padded_size), tuple(geometry.image_size),
                 tuple(geometry.output_size))
        if self.fast_inference:
            return self._postprocess_fast(raw, tokens, sizes, outputs)
        result = {}
        if "sem_seg" in outputs:
            result["sem_seg"] = semantic_inference(
                raw["pred_ins_logits"][0], raw["pred_ins_masks"][0], *sizes
            )
            result["sem_seg_classes"] = raw["ref_sem_labels"][0]
        if "instances" in outputs:
            result["instances"] = instance_inference(
                raw["pred_ins_logits"][0],
                resize_mask_logits(raw["pred_ins_masks"][0], *sizes),
                raw["ref_sem_labels"][0],
                self.test_topk_per_image,
                self.instance_score_thresh,
            )
        if "id" in outputs:
            result["id"] = self._identity(raw, tokens,
                                          resize_mask_logits(raw["pred_id_masks"][0], *sizes))
        return result

    def _postprocess_fast(self, raw: Dict, tokens: SINEReferenceTokens, sizes, outputs) -> Dict:
        """:meth:`postprocess` computing only what is returned (see ResizedMaskLogits)."""
        result = {}
        if outputs & {"sem_seg", "instances"}:
            ins_logits = raw["pred_ins_logits"][0].float()
            ins_masks = ResizedMaskLogits(raw["pred_ins_masks"][0].float(), *sizes)
        if "sem_seg" in outputs:
            result["sem_seg"] = semantic_inference_resized(ins_logits, ins_masks)
            result["sem_seg_classes"] = raw["ref_sem_labels"][0]
        if "instances" in outputs:
            result["instances"] = instance_inference(
                ins_logits, ins_masks, raw["ref_sem_labels"][0], self.test_topk_per_image,
                self.instance_score_thresh,
            )
        if "id" in outputs:
            result["id"] = self._identity(
                raw, tokens, ResizedMaskLogits(raw["pred_id_masks"][0].float(), *sizes))
        return result

    def _identity(self, raw: Dict, tokens: SINEReferenceTokens, mask_logits) -> Instances:
        """ID results; empty for tokens without ID tokens (class prototypes alone)."""
        logits = raw["pred_id_logits"][0]
        return identity_inference(
            logits.float() if self.fast_inference else logits, mask_logits,
            raw["ref_id_labels"][0], tokens.ids, self.test_topk_per_image, self.id_score_thresh,
        )

    # ------------------------------------------------------------------ input handling
    def padded_size_for(self, batched_inputs: List[Dict]) -> int:
        """Square size of the batch: PAD_SIZE, or the next patch multiple above a larger image."""
        return padded_size_for(batched_inputs, self.pad_size, self.size_divisibility)

    def preprocess_image(self, image: torch.Tensor, size: int) -> torch.Tensor:
        """uint8 (3, H, W) -> normalised float (3, size, size), zero-padded bottom/right."""
        image = (image.to(self.device).float() - self.pixel_mean) / self.pixel_std
        return F.pad(image, (0, size - image.shape[-1], 0, size - image.shape[-2]))


#: Instance id of the ID tokens of negative ("not this") reference masks.
NEGATIVE_ID = -1


def _with_negatives(masks, labels, ids, negatives):
    """Append the negative masks of every reference image as one extra class (largest class
    + 1) with instance id :data:`NEGATIVE_ID`. Returns (masks, labels, ids, negative class)."""
    if len(negatives) != len(masks):
        raise ValueError(f"got negative masks for {len(negatives)} images, but {len(masks)} "
                         "reference images; give one (q_k, S, S) tensor per image (q_k = 0 for "
                         "none)")
    negative_label = int(max(int(torch.as_tensor(x).max()) for x in labels if len(x))) + 1
    if ids is None:
        counts = [len(m) for m in masks]
        start = 0
        ids = []
        for c in counts:
            ids.append(torch.arange(start, start + c))
            start += c
    out_masks, out_labels, out_ids = [], [], []
    for m, lab, i, neg in zip(masks, labels, ids, negatives):
        neg = neg.to(m.device, torch.bool)
        out_masks.append(torch.cat([m.bool(), neg]))
        out_labels.append(torch.cat([torch.as_tensor(lab, device=m.device).long(),
                                     torch.full((len(neg),), negative_label, device=m.device)]))
        out_ids.append(torch.cat([torch.as_tensor(i).long().cpu(),
                                  torch.full((len(neg),), NEGATIVE_ID)]))
    return out_masks, out_labels, out_ids, negative_label


def suppress_negatives(result: Dict, negative_label: int) -> Dict:
    """Remove the negative class from SINE's results and suppress the positives where it wins:
    "id" masks lose the pixels of the negative ID masks, "instances" of the negative class are
    dropped (the look-alikes they took from the positives stay excluded), "sem_seg" scores of
    the positive classes are zeroed where the negative class scores higher."""
    result = dict(result)
    if "id" in result:
        ids = result["id"]
        negative = ids.pred_ids == NEGATIVE_ID
        keep = ids[~negative]
        if negative.any():
            keep.pred_masks = keep.pred_masks & ~ids.pred_masks[negative].any(0)
            keep.pred_boxes = masks_to_boxes(keep.pred_masks)
        result["id"] = keep
    if "instances" in result:
        inst = result["instances"]
        result["instances"] = inst[inst.pred_classes != negative_label]
    if "sem_seg" in result:
        classes = result["sem_seg_classes"]
        is_negative = classes == negative_label
        sem = result["sem_seg"]
        if is_negative.any():
            wins = sem[is_negative].amax(0)
            sem = torch.where(sem > wins, sem, torch.zeros_like(sem))[~is_negative]
            result["sem_seg"], result["sem_seg_classes"] = sem, classes[~is_negative]
    return result

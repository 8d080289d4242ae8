"""SegIC meta-architecture: in-context segmentation from emergent DINOv2 correspondence.

SegIC (ECCV 2024; spec ../shared/spec/SegIC.md) turns the dense correspondence between a target
and the in-context examples into instructions for a SAM-style decoder with one mask query per
reference entity:

* geometric: cosine similarity of the target features to each entity's mask-pooled prototype,
  up-sampled to the input as a dense prompt (coarse mask), and its top-1 point as a point prompt;
* visual: the prototypes themselves (projected), with cross-entity type embeddings;
* meta: a CLIP text embedding of "a photo of a {class}" or of a task description.

Attribute names (``neck``, ``prompt_encoder``, ``mask_decoder``, ``inst_type_embed``,
``prompt_proj``, ``inst_proj``) equal the official ones, so an official checkpoint loads without
renaming; the frozen DINOv2 (``encoder``) and CLIP text tower (``text_encoder``) come from their
own files.

Outputs (:meth:`SegIC.segment`): "id" (one mask per reference entity) and "sem_seg" (per-class
union). "instances" is not produced: SegIC has no class-level detection head.
"""
import logging
import random
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.structures import Instances
from torch import nn
from torchvision.ops import masks_to_boxes as inclusive_boxes

from ..backbone.dinov2 import DinoVisionTransformer
from ..backbone.dinov2_encoder import build_dinov2_vit_from_config, build_neck
from ..backbone.vit_builder import load_vit_checkpoint
from ..criterion import dice_loss, mask_uncertainty, sigmoid_ce_loss
from ..in_context import (
    ALL_OUTPUTS,
    Features,
    ImageGeometry,
    InContextSegmenter,
    ReferenceTokens,
    check_outputs,
)
from ..postprocessing import masks_to_boxes
from ..segic.instructions import (
    coarse_masks,
    entity_points,
    entity_tokens,
    mask_pool,
    pick_memory_entries,
    similarity_maps,
    top1_points,
    with_negative_tokens,
)

logger = logging.getLogger(__name__)

__all__ = ["SegIC", "SegICDecoding", "SegICPairBatch", "SegICReferenceTokens"]

#: Keys of the frozen towers; they come from MODEL.DINOV2.WEIGHTS and
#: MODEL.SEGIC.TEXT_ENCODER.WEIGHTS, never from a SegIC checkpoint (spec §1.2).
FROZEN_PREFIXES = ("encoder.", "text_encoder.")
PROTOCOLS = ("one_shot", "vos")


@dataclass
class SegICReferenceTokens(ReferenceTokens):
    """SegIC's reference tokens of n entities.

    Fields (besides labels, ids, names):
        prototypes: (n, m, C) mask-pooled reference features; m = 1 one-shot, m = memory
            entries in VOS (first = the ground-truth frame, which alone drives the coarse mask).
        text_pooled: (n, T_d) pooled CLIP embedding of each entity's prompt, or None (no text
            slot).
        protocol: "one_shot" or "vos" (similarity eps, cross-object negative points).
    """

    prototypes: torch.Tensor = field(kw_only=True)
    text_pooled: Optional[torch.Tensor] = field(default=None, kw_only=True)
    protocol: str = field(default="one_shot", kw_only=True)
    #: (q, C) prototypes of masks marked "not this" (negative references), or None.
    negative_prototypes: Optional[torch.Tensor] = field(default=None, kw_only=True)


@dataclass
class SegICDecoding:
    """Every intermediate of one decoder call for n entities of one target (for inspection and
    parity tests). s = S/4, g = feature grid, D = decoder width."""

    similarity: torch.Tensor  # (n, m, s, s)
    coarse_mask: torch.Tensor  # (n, 1, S, S) dense prompt
    top1_value: torch.Tensor  # (n,)
    point_coords: torch.Tensor  # (n, p, 2)
    point_labels: torch.Tensor  # (n, p)
    boxes: Optional[torch.Tensor]  # (n, 4) XYXY or None
    instruction_tokens: torch.Tensor  # (n, t, D): text then visual tokens
    sparse_embeddings: torch.Tensor  # (n, k, D)
    dense_embeddings: torch.Tensor  # (n, D, g, g)
    image_embedding: torch.Tensor  # (1, D, g, g) neck output
    dense_pe: torch.Tensor  # (1, D, g, g)
    low_res_logits: torch.Tensor  # (n, 1, 4g, 4g)
    iou_predictions: torch.Tensor  # (n, 1), untrained in the released recipe


@dataclass
class SegICPairBatch:
    """A training batch of B (target, reference) pairs in model layout (S x S, normalised).

    tar_images, ref_images: (B, 3, S, S). tar_masks[b], ref_masks[b]: (n_b, S, S) bool, entity k
    of the reference <-> entity k of the target. class_names[b]: the class of a semantic pair
    (prompt "a photo of a {}") or None for an instance pair (the task-description prompt).
    box_masks[b]: the masks of pair b are filled boxes (Objects365), trained with the projection
    loss; None = no box pairs.
    """

    tar_images: torch.Tensor
    ref_images: torch.Tensor
    tar_masks: List[torch.Tensor]
    ref_masks: List[torch.Tensor]
    class_names: List[Optional[str]]
    box_masks: Optional[List[bool]] = None


@META_ARCH_REGISTRY.register()
class SegIC(InContextSegmenter):
    """SegIC on a frozen DINOv2 (+ frozen CLIP text tower), one mask query per entity."""

    #: Key prefixes of the frozen towers (never in an official SegIC checkpoint).
    frozen_prefixes = FROZEN_PREFIXES
    #: The training losses never reach the IoU head and the multimask outputs (and, per draw,
    #: the box and cross-entity embeddings): DDP has to look for unused parameters.
    ddp_find_unused_parameters = True

    @configurable
    def __init__(
        self,
        *,
        encoder: DinoVisionTransformer,
        neck: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        text_encoder: Optional[nn.Module],
        text_dim: int,
        width: int,
        image_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        dinov2_weights: str = "",
        text_weights: str = "",
        empty_prompt_embedding: Optional[torch.Tensor] = None,
        tau: float = 1.0,
        similarity_eps: float = 1e-8,
        cross_entity_prompt: bool = True,
        class_prompt: str = "a photo of a {}",
        instance_prompt: str = "please segment the instances",
        class_names: Sequence[str] = (),
        text_keep_ratio: float = 0.75,
        box_prompt_prob: float = 0.5,
        cross_entity_prob: float = 0.5,
        reverse_context: bool = True,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        vos_memory_picks: int = 2,
        vos_negative_points: bool = True,
        vos_similarity_eps: float = 1e-4,
        frozen_encoder: bool = True,
    ):
        """
        Args:
            encoder: the frozen DINOv2 ViT (final-norm tokens in the released recipe).
            neck: conv1x1 -> LN2d -> conv3x3 -> LN2d to the decoder width D.
            prompt_encoder: :class:`~sine.modeling.segic.prompt_encoder.SegICPromptEncoder`.
            mask_decoder: SAM mask decoder of width D.
            text_encoder: frozen :class:`~sine.modeling.segic.text_encoder.SegICTextEncoder`,
                or None (text off).
            text_dim: T_d, the text embedding size (input of ``prompt_proj``).
            width: D.
            image_size: S, the square model input (a multiple of the patch size).
            pixel_mean, pixel_std: normalisation on the 0-255 scale (ImageNet).
            dinov2_weights, text_weights: file / directory ``encoder`` / ``text_encoder`` were
                loaded from (reported by the checkpoint checks).
            empty_prompt_embedding: (T_d,) pooled CLIP embedding of "" used as every entity's
                text when ``text_encoder`` is None (official --no_text_eval); None drops the
                text slot.
            tau: coarse-mask temperature. similarity_eps: cosine norm clamp (one-shot/train).
            cross_entity_prompt: at inference every entity sees the others' visual tokens.
            class_prompt, instance_prompt: prompt of an entity with / without a class name.
            class_names: class id -> name, used when ``reference_tokens`` gets no names.
            text_keep_ratio, box_prompt_prob, cross_entity_prob, reverse_context, num_points,
                oversample_ratio, importance_sample_ratio: training recipe (spec §1.7-§1.10).
            vos_memory_picks, vos_negative_points, vos_similarity_eps: VOS protocol (§1.11).
            frozen_encoder: keep DINOv2 frozen (released recipe). False trains it: only for the
                CPU demo, whose tiny ViT starts from random weights (MODEL.DINOV2.FROZEN).
        """
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Registered last and in this order, as the official model (same state-dict order).
        self.inst_type_embed = nn.Embedding(2, width)
        self.prompt_proj = nn.Linear(text_dim, width)
        self.inst_proj = nn.Linear(encoder.embed_dim, width)
        self.text_encoder = text_encoder
        self.frozen_encoder = frozen_encoder
        if frozen_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if empty_prompt_embedding is not None:
            if tuple(empty_prompt_embedding.shape) != (text_dim,):
                raise ValueError(
                    f"the empty-prompt embedding has shape {tuple(empty_prompt_embedding.shape)}, "
                    f"expected ({text_dim},) = MODEL.SEGIC.TEXT_ENCODER.HIDDEN_SIZE")
            self.register_buffer("empty_prompt_embedding", empty_prompt_embedding.float(), False)
        else:
            self.empty_prompt_embedding = None
        self.size_divisibility = encoder.patch_size
        if image_size % self.size_divisibility:
            raise ValueError(f"MODEL.SEGIC.IMAGE_SIZE={image_size} must be a multiple of the "
                             f"patch size {self.size_divisibility}")
        self.image_size = self.pad_size = image_size
        self.dinov2_weights = dinov2_weights
        self.text_weights = text_weights
        self.tau = tau
        self.similarity_eps = similarity_eps
        self.cross_entity_prompt = cross_entity_prompt
        self.class_prompt = class_prompt
        self.instance_prompt = instance_prompt
        self.class_names = list(class_names)
        self.text_keep_ratio = text_keep_ratio
        self.box_prompt_prob = box_prompt_prob
        self.cross_entity_prob = cross_entity_prob
        self.reverse_context = reverse_context
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.vos_memory_picks = vos_memory_picks
        self.vos_negative_points = vos_negative_points
        self.vos_similarity_eps = vos_similarity_eps
        self._register_load_state_dict_pre_hook(self._keep_frozen_weights)

    @classmethod
    def from_config(cls, cfg):
        from ..segic.prompt_encoder import SegICPromptEncoder
        from ..segic.two_way_decoder import build_mask_decoder

        s = cfg.MODEL.SEGIC
        if not cfg.MODEL.DINOV2.OUTPUT_NORM:
            logger.warning("MODEL.DINOV2.OUTPUT_NORM is False: SegIC is trained on the final-norm "
                           "DINOv2 tokens (configs/segic/Base-SegIC.yaml sets it).")
        encoder = build_dinov2_vit_from_config(cfg)
        if cfg.MODEL.DINOV2.WEIGHTS:
            load_vit_checkpoint(encoder, cfg.MODEL.DINOV2.WEIGHTS)
        patch = encoder.patch_size
        if s.IMAGE_SIZE % patch:
            raise ValueError(f"MODEL.SEGIC.IMAGE_SIZE={s.IMAGE_SIZE} must be a multiple of the "
                             f"patch size {patch}")
        grid = s.IMAGE_SIZE // patch
        text_encoder, empty = None, None
        if s.USE_TEXT:
            from ..segic.text_encoder import (
                SegICTextEncoder,
                build_clip_tokenizer,
                load_clip_text_model,
            )

            text_encoder = SegICTextEncoder(load_clip_text_model(s.TEXT_ENCODER.WEIGHTS),
                                            build_clip_tokenizer(s.TEXT_ENCODER.TOKENIZER))
            if text_encoder.hidden_size != s.TEXT_ENCODER.HIDDEN_SIZE:
                raise ValueError(
                    f"the CLIP text tower in {s.TEXT_ENCODER.WEIGHTS} has hidden size "
                    f"{text_encoder.hidden_size}, but MODEL.SEGIC.TEXT_ENCODER.HIDDEN_SIZE is "
                    f"{s.TEXT_ENCODER.HIDDEN_SIZE}")
        elif s.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING:
            empty = read_empty_prompt_embedding(s.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING)
        return {
            "encoder": encoder,
            "neck": build_neck(encoder.embed_dim, s.WIDTH),
            "prompt_encoder": SegICPromptEncoder(
                s.WIDTH, (grid, grid), (s.IMAGE_SIZE, s.IMAGE_SIZE), s.MASK_IN_CHANS,
                tuple(s.MASK_DOWN_STRIDES)),
            "mask_decoder": build_mask_decoder(s.WIDTH, s.DEC_LAYERS, s.NHEADS, s.MLP_DIM,
                                               s.NUM_MULTIMASK_OUTPUTS),
            "text_encoder": text_encoder,
            "text_dim": s.TEXT_ENCODER.HIDDEN_SIZE,
            "width": s.WIDTH,
            "image_size": s.IMAGE_SIZE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "dinov2_weights": cfg.MODEL.DINOV2.WEIGHTS,
            "text_weights": s.TEXT_ENCODER.WEIGHTS if s.USE_TEXT else "",
            "empty_prompt_embedding": empty,
            "tau": s.TAU,
            "similarity_eps": s.SIMILARITY_EPS,
            "cross_entity_prompt": s.CROSS_ENTITY_PROMPT,
            "class_prompt": s.CLASS_PROMPT,
            "instance_prompt": s.INSTANCE_PROMPT,
            "class_names": list(s.CLASS_NAMES),
            "text_keep_ratio": s.TRAIN.TEXT_KEEP_RATIO,
            "box_prompt_prob": s.TRAIN.BOX_PROMPT_PROB,
            "cross_entity_prob": s.TRAIN.CROSS_ENTITY_PROB,
            "reverse_context": s.TRAIN.REVERSE_CONTEXT,
            "num_points": s.TRAIN.NUM_POINTS,
            "oversample_ratio": s.TRAIN.OVERSAMPLE_RATIO,
            "importance_sample_ratio": s.TRAIN.IMPORTANCE_SAMPLE_RATIO,
            "vos_memory_picks": s.VOS.MEMORY_PICKS,
            "vos_negative_points": s.VOS.NEGATIVE_POINTS,
            "vos_similarity_eps": s.VOS.SIMILARITY_EPS,
            "frozen_encoder": cfg.MODEL.DINOV2.FROZEN,
        }

    # ------------------------------------------------------------------ module state
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()  # frozen towers never switch to training behaviour
        if self.text_encoder is not None:
            self.text_encoder.eval()
        return self

    def frozen_weight_sources(self) -> Dict[str, str]:
        """Key prefix -> file the frozen weights under it were loaded from (checkpoint checks:
        these keys are not expected in an official SegIC checkpoint)."""
        sources = {}
        if self.dinov2_weights:
            sources["encoder."] = self.dinov2_weights
        if self.text_encoder is not None:
            sources["text_encoder."] = self.text_weights or "MODEL.SEGIC.TEXT_ENCODER.WEIGHTS"
        return sources

    def official_state_dict_keys(self) -> Dict[str, torch.Size]:
        """Keys and shapes of an official SegIC checkpoint for this model: everything but the
        frozen towers (trainable parameters + the prompt encoder's random PE buffer)."""
        return {k: v.shape for k, v in self.state_dict().items()
                if not k.startswith(FROZEN_PREFIXES)}

    def _keep_frozen_weights(self, state_dict, prefix, *args):
        """A checkpoint without any key of a frozen tower keeps the weights loaded from that
        tower's own file (official SegIC checkpoints never hold them)."""
        for frozen in FROZEN_PREFIXES:
            full = prefix + frozen
            module = getattr(self, frozen[:-1])
            if module is None or any(k.startswith(full) for k in state_dict):
                continue
            for k, v in module.state_dict().items():
                state_dict[full + k] = v

    # ------------------------------------------------------------------ inference surface
    def supported_outputs(self):
        return frozenset({"id", "sem_seg"})

    def preprocess_image(self, image: torch.Tensor, size: Optional[int] = None) -> torch.Tensor:
        """(3, H, W) image on the 0-255 scale (uint8 or float) -> (3, S, S) normalised, zero
        outside the content (the official pad value never reaches the backbone)."""
        size = size or self.image_size
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) RGB image, got shape {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h > size or w > size:
            raise ValueError(f"image of size {h}x{w} is larger than the model input {size}; "
                             "resize its long side to at most that first")
        x = (image.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, size - w, 0, size - h))

    def encode(self, images: torch.Tensor) -> Features:
        """(N, 3, S, S) -> {"dinov2": (N, C, g, g)} DINOv2 tokens (with gradients only for a
        trainable encoder in a grad-enabled context)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            return {"dinov2": self.encoder(images.to(self.device))}

    def prompts_of(self, names: Optional[Sequence[Optional[str]]], n: int) -> List[str]:
        """Text prompt of every entity: the class template where a name is given, else the
        task description (the official instance prompt)."""
        if names is None:
            return [self.instance_prompt] * n
        if len(names) != n:
            raise ValueError(f"got {len(names)} names for {n} reference masks")
        return [self.class_prompt.format(x) if x else self.instance_prompt for x in names]

    def encode_text(self, prompts: Sequence[str]) -> Optional[torch.Tensor]:
        """(k, T_d) pooled text embeddings of k prompts; without a text tower the empty-prompt
        embedding for every prompt, or None when there is none (no text slot)."""
        if self.text_encoder is not None:
            return self.text_encoder(prompts).to(self.device)
        if self.empty_prompt_embedding is not None:
            return self.empty_prompt_embedding[None].expand(len(prompts), -1)
        return None

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
    ) -> SegICReferenceTokens:
        """Prototypes and text of the reference entities.

        ``names`` (one per mask, None = the instance prompt) default to
        ``MODEL.SEGIC.CLASS_NAMES[label]`` when that list is set.

        ``pooling`` selects the protocol: "one_shot" (default; one entity per mask) or "vos" (the
        K images are memory frames of the same objects, oldest first: masks with the same id
        become one entity with one prototype per frame; frames beyond
        ``MODEL.SEGIC.VOS.MEMORY_PICKS`` are subsampled as ``linspace(0, K - 1, picks)``, i.e.
        the first (ground-truth) frame and the latest).

        ``negatives``: K bool tensors (q_k, S, S) of masks marked "not this" on the reference
        images (look-alikes to exclude): their prototypes join every entity's instructions as
        "another entity" tokens (type 0 of the cross-entity embedding); they are not decoded.
        """
        protocol = pooling or "one_shot"
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown SegIC reference protocol {protocol!r}; use {PROTOCOLS}")
        feats = features["dinov2"]
        if len(masks) != feats.shape[0] or len(labels) != len(masks):
            raise ValueError(f"got {feats.shape[0]} reference images, {len(masks)} mask sets "
                             f"and {len(labels)} label sets; give one of each per image")
        counts = [len(m) for m in masks]
        if ids is None:
            start = torch.cumsum(torch.tensor([0] + counts), 0)
            ids = [torch.arange(int(start[k]), int(start[k + 1])) for k in range(len(counts))]
        flat_labels = torch.cat([torch.as_tensor(x).long().cpu() for x in labels])
        flat_ids = torch.cat([torch.as_tensor(x).long().cpu() for x in ids])
        if names is None and self.class_names:
            names = [self.class_names[c] if 0 <= c < len(self.class_names) else None
                     for c in flat_labels.tolist()]
        pooled = [mask_pool(feats[k], masks[k].to(feats.device)) for k in range(len(masks))]
        if protocol == "one_shot":
            prototypes = torch.cat(pooled)[:, None]
            entity_labels, entity_ids, entity_names = flat_labels, flat_ids, names
        else:
            frames = pick_memory_entries(len(masks), self.vos_memory_picks).tolist()
            order = list(dict.fromkeys(flat_ids.tolist()))  # first appearance
            first = [flat_ids.tolist().index(i) for i in order]
            prototypes = feats.new_zeros(len(order), len(frames), feats.shape[1])
            for j, k in enumerate(frames):
                for row, i in enumerate(torch.as_tensor(ids[k]).tolist()):
                    prototypes[order.index(i), j] = pooled[k][row]
            entity_labels, entity_ids = flat_labels[first], torch.tensor(order)
            entity_names = [names[i] for i in first] if names is not None else None
        text = self.encode_text(self.prompts_of(entity_names, len(entity_ids)))
        return SegICReferenceTokens(
            entity_labels, entity_ids, names=list(entity_names) if entity_names else None,
            prototypes=prototypes, text_pooled=text, protocol=protocol,
            negative_prototypes=self._negative_prototypes(feats, negatives))

    def _negative_prototypes(self, feats: torch.Tensor,
                             negatives: Optional[Sequence[torch.Tensor]]) -> Optional[torch.Tensor]:
        """(q, C) mask-pooled prototypes of the negative masks of K images, or None."""
        if negatives is None:
            return None
        if len(negatives) != feats.shape[0]:
            raise ValueError(f"got negative masks for {len(negatives)} images, but "
                             f"{feats.shape[0]} reference images; give one (q_k, S, S) tensor "
                             "per image (q_k = 0 for none)")
        pooled = [mask_pool(feats[k], m.to(feats.device)) for k, m in enumerate(negatives)
                  if len(m)]
        return torch.cat(pooled) if pooled else None

    def segment(
        self,
        target_features: Features,
        tokens: SegICReferenceTokens,
        geometry: ImageGeometry,
        outputs: Iterable[str] = ALL_OUTPUTS - {"instances"},
    ) -> Dict:
        """Segment one target: one mask per reference entity.

        Returns, as asked in ``outputs`` (at ``geometry.output_size``):

        * "id": ``Instances`` in entity order with pred_masks (logit > 0), pred_mask_logits,
          pred_boxes, pred_classes, pred_ids, pred_masks_input (n, S, S) bool on the padded
          input canvas (a memory frame's reference masks), and scores. SegIC has no trained
          confidence (its IoU head is unsupervised in the released recipe); the score is the
          official ``--custom_eval`` heuristic, the mean over pixels of max(p, 1 - p).
        * "sem_seg": (C, H, W) per-class union max_k sigmoid(logit_k) over the entities of each
          class, with "sem_seg_classes" (C,) sorted class ids.
        """
        outputs = check_outputs(outputs, self.supported_outputs())
        if not isinstance(tokens, SegICReferenceTokens):
            raise TypeError(f"SegIC.segment needs SegICReferenceTokens (from "
                            f"SegIC.reference_tokens), got {type(tokens).__name__}")
        if target_features["dinov2"].shape[0] != 1:
            raise ValueError(
                f"segment takes the features of one target, got a batch of "
                f"{target_features['dinov2'].shape[0]}; select one with "
                "select_features(features, b)")
        S = self.image_size
        if tuple(geometry.padded_size) != (S, S):
            raise ValueError(f"SegIC inputs are padded to {S}x{S} (MODEL.SEGIC.IMAGE_SIZE), "
                             f"got geometry.padded_size={geometry.padded_size}")
        tokens = tokens.to(self.device)
        vos = tokens.protocol == "vos"
        dec = self.decode(
            target_features["dinov2"][0], tokens.prototypes, tokens.text_pooled,
            cross_entity=self.cross_entity_prompt, negative_points=vos and self.vos_negative_points,
            eps=self.vos_similarity_eps if vos else self.similarity_eps,
            negatives=tokens.negative_prototypes)
        input_logits = self.logits_at_input(dec.low_res_logits)  # (n, 1, S, S)
        h, w = geometry.image_size
        logits = F.interpolate(input_logits[:, :, :h, :w], size=tuple(geometry.output_size),
                               mode="bilinear", align_corners=False)[:, 0]
        result = {}
        if "id" in outputs:
            masks = logits > 0
            probs = logits.sigmoid()
            inst = Instances(tuple(geometry.output_size))
            inst.pred_masks = masks
            inst.pred_mask_logits = logits
            inst.pred_boxes = masks_to_boxes(masks)
            inst.scores = torch.maximum(probs, 1 - probs).flatten(1).mean(1)
            inst.pred_classes = tokens.labels.long()
            inst.pred_ids = tokens.ids.long()
            inst.pred_masks_input = input_logits[:, 0] > 0
            result["id"] = inst
        if "sem_seg" in outputs:
            classes = tokens.labels.unique(sorted=True)
            probs = logits.sigmoid()
            result["sem_seg"] = torch.stack([probs[tokens.labels == c].amax(0) for c in classes])
            result["sem_seg_classes"] = classes
        return result

    # ------------------------------------------------------------------ decoding
    def logits_at_input(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """(n, 1, 4g, 4g) -> (n, 1, S, S), bilinear with ``scale_factor`` S / 4g as the official
        code (with a non-integer factor, e.g. 3.5 for /14 patches, this is not ``size=S``)."""
        scale = self.image_size / low_res_logits.shape[-1]
        return F.interpolate(low_res_logits, scale_factor=scale, mode="bilinear",
                             align_corners=False)

    def decode(
        self,
        target_features: torch.Tensor,
        prototypes: torch.Tensor,
        text_pooled: Optional[torch.Tensor],
        *,
        boxes: Optional[torch.Tensor] = None,
        cross_entity: bool = True,
        negative_points: bool = False,
        eps: Optional[float] = None,
        negatives: Optional[torch.Tensor] = None,
    ) -> SegICDecoding:
        """Build the instructions of n entities and decode them against one target.

        Args:
            target_features: (C, g, g) DINOv2 features of the target.
            prototypes: (n, m, C) entity prototypes (entry 0 drives the coarse mask and point).
            text_pooled: (n, T_d) pooled text embeddings or None (no text slot).
            boxes: (n, 4) XYXY box prompts (training) or None.
            cross_entity: visual tokens of all entities with type embeddings.
            negative_points: the other entities' top-1 points as negative points (VOS).
            eps: cosine norm clamp (default MODEL.SEGIC.SIMILARITY_EPS).
            negatives: (q, C) prototypes of user-marked negatives, appended to every entity's
                tokens as "another entity" (not decoded); None: none.
        """
        S = self.image_size
        similarity = similarity_maps(target_features, prototypes, S // 4,
                                     self.similarity_eps if eps is None else eps)
        coarse = coarse_masks(similarity[:, :1], S, self.tau)
        points, top1 = top1_points(coarse)
        coords, labels = entity_points(points, negative_points)
        text = self.prompt_proj(text_pooled) if text_pooled is not None else None
        instructions = entity_tokens(text, self.inst_proj(prototypes),
                                     self.inst_type_embed if cross_entity else None)
        if negatives is not None and len(negatives):
            instructions = with_negative_tokens(instructions, self.inst_proj(negatives),
                                                self.inst_type_embed)
        sparse, dense = self.prompt_encoder((coords, labels), boxes, coarse, instructions)
        image_embedding = self.neck(target_features[None])
        dense_pe = self.prompt_encoder.get_dense_pe()
        logits, iou = self.mask_decoder(image_embedding, dense_pe, sparse, dense,
                                        multimask_output=False)
        return SegICDecoding(similarity, coarse, top1, coords, labels, boxes, instructions,
                             sparse, dense, image_embedding, dense_pe, logits, iou)

    # ------------------------------------------------------------------ forward / training
    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per target (the same dicts as ``SINE.forward``): "image"
                uint8 (3, H, W) with long side <= S, "height"/"width" (output size), and
                "references": dicts {"image", "instances" (gt_masks, gt_classes[, ins_ids])}.
                Training: exactly one reference per target; the target's "instances" (gt_masks,
                gt_classes, ins_ids) hold, for every reference instance id, the mask of that
                entity; "class_name" is the class of a semantic pair (text prompt) or absent /
                None for an instance pair (the task-description prompt); "box_masks" True marks
                box masks (projection loss).
        Returns:
            Training: {"loss_mask", "loss_dice"(, "loss_mask_reverse", "loss_dice_reverse")},
            each weighted so that their sum is the official loss (the mean of the forward and
            the context-reversed pass). Inference: one :meth:`segment` result per target.
        """
        if not self.training:
            return self.segment_batch(batched_inputs)
        return self.losses(self.prepare_pairs(batched_inputs))

    def prepare_pairs(self, batched_inputs: List[Dict]) -> SegICPairBatch:
        """Training dicts (see :meth:`forward`) -> :class:`SegICPairBatch`, the target masks
        ordered like the reference masks (matched by instance id)."""
        batch = self.prepare_inputs(batched_inputs, with_targets=True)
        S = self.image_size
        if batch.padded_size != (S, S):
            raise ValueError(f"SegIC trains at {S}x{S} (MODEL.SEGIC.IMAGE_SIZE): resize every "
                             f"image's long side to at most {S}")
        tar_masks = []
        for b, target in enumerate(batch.targets):
            if batch.num_refs[b] != 1:
                raise ValueError(f"batched_inputs[{b}] has {batch.num_refs[b]} references; "
                                 "SegIC trains on pairs (exactly one reference per target)")
            position = {i: k for k, i in enumerate(target["ids"].tolist())}
            ref_ids = batch.ref_ids[batch.refs_of(b).start].tolist()
            absent = [i for i in ref_ids if i not in position]
            if absent:
                raise ValueError(f"batched_inputs[{b}]: reference instance id(s) {absent} have no "
                                 "mask in the target (every entity must appear in both images)")
            tar_masks.append(target["masks"][[position[i] for i in ref_ids]])
        return SegICPairBatch(
            tar_images=batch.tar_images, ref_images=batch.ref_images, tar_masks=tar_masks,
            ref_masks=list(batch.ref_masks),
            class_names=[x.get("class_name") for x in batched_inputs],
            box_masks=[bool(x.get("box_masks", False)) for x in batched_inputs])

    def losses(self, batch: SegICPairBatch, rng=random,
               record: Optional[Dict] = None) -> Dict[str, torch.Tensor]:
        """Training losses of a batch of pairs (spec §1.7-§1.10).

        Random decisions are drawn from ``rng`` (python's ``random`` by default) in the official
        order: one text draw per image (targets, then references), then per pass and per image a
        box draw and a cross-entity draw; the point sampling of the losses draws from torch's
        default generator (two ``torch.rand`` calls per pass).

        ``record`` (a dict, for inspection) receives "prompts" (2B strings, targets first),
        "text_pooled", "features" (2B, C, g, g), "calls" (every :class:`SegICDecoding`, forward
        pass first, then the reverse pass), "num_masks" per pass and "reverse_context_masks"
        (N, S, S).
        """
        B = batch.tar_images.shape[0]
        feats = self.encode(torch.cat([batch.tar_images, batch.ref_images]))["dinov2"]
        names = list(batch.class_names) * 2
        prompts = []
        for name in names:
            keep = rng.random() < self.text_keep_ratio  # drawn for instance pairs too
            if name is None:
                prompts.append(self.instance_prompt)
            else:
                prompts.append(self.class_prompt.format(name) if keep else "")
        text = self.encode_text(prompts)
        texts = [None] * (2 * B) if text is None else list(text)
        calls: List[SegICDecoding] = []
        if record is not None:
            record.update(prompts=prompts, text_pooled=text, features=feats, calls=calls,
                          num_masks=[])

        box_flags = None
        if batch.box_masks is not None and any(batch.box_masks):
            box_flags = torch.cat([torch.full((len(m),), bool(f), dtype=torch.bool)
                                   for m, f in zip(batch.tar_masks, batch.box_masks)])

        def one_pass(tar_feats, ctx_feats, ctx_masks, gt_masks, text_pooled):
            logits = []
            for b in range(B):
                use_box = rng.random() > 1 - self.box_prompt_prob
                cross = rng.random() > 1 - self.cross_entity_prob
                n = len(gt_masks[b])
                protos = mask_pool(ctx_feats[b], ctx_masks[b])[:, None]
                t = None if text_pooled[b] is None else text_pooled[b][None].expand(n, -1)
                dec = self.decode(tar_feats[b], protos, t, cross_entity=cross,
                                  boxes=inclusive_boxes(gt_masks[b]).float() if use_box else None)
                calls.append(dec)
                logits.append(dec.low_res_logits)
            logits = torch.cat(logits)
            if record is not None:
                record["num_masks"].append(logits.shape[0])
            return logits, self.mask_losses(logits, torch.cat(gt_masks), box_flags)

        fwd_logits, fwd = one_pass(feats[:B], feats[B:], batch.ref_masks, batch.tar_masks,
                                   texts[:B])
        if not self.reverse_context:
            return fwd
        with torch.no_grad():
            predicted = F.interpolate(fwd_logits.detach(), size=batch.tar_images.shape[-2:],
                                      mode="bilinear", align_corners=False)[:, 0] > 0
        if record is not None:
            record["reverse_context_masks"] = predicted
        ctx = list(predicted.split([len(m) for m in batch.tar_masks]))
        _, rev = one_pass(feats[B:], feats[:B], ctx, batch.ref_masks, texts[B:])
        # The official loss is the mean of both passes; halving each term keeps detectron2's
        # "sum of the loss dict" equal to it.
        losses = {k: v / 2 for k, v in fwd.items()}
        losses.update({f"{k}_reverse": v / 2 for k, v in rev.items()})
        return losses

    def mask_losses(self, logits: torch.Tensor, gt_masks: torch.Tensor,
                    box_masks: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Point-sampled BCE + Dice (Mask2Former/PointRend recipe) of (N, 1, 4g, 4g) logits
        against (N, S, S) masks, each summed over masks and divided by N (masks of this pass
        on this process, as the official loss; the official Dice's double division by N with
        unit weights equals this). Masks flagged in ``box_masks`` (N,) bool are filled boxes:
        they get the projection loss instead (:meth:`projection_losses`)."""
        num_masks = logits.shape[0]
        if box_masks is None or not box_masks.any():
            return self.point_losses(logits, gt_masks, num_masks)
        losses = self.projection_losses(logits[box_masks], gt_masks[box_masks], num_masks)
        if not box_masks.all():
            points = self.point_losses(logits[~box_masks], gt_masks[~box_masks], num_masks)
            losses = {k: v + points[k] for k, v in losses.items()}
        return losses

    def projection_losses(self, logits: torch.Tensor, gt_masks: torch.Tensor,
                          num_masks: int) -> Dict[str, torch.Tensor]:
        """BCE + Dice between the per-column and per-row maxima of (n, 1, 4g, 4g) logits and of
        (n, S, S) box masks (max-pooled to the logit grid, so thin boxes survive): a box only
        says where the object's extent ends, not which pixels inside it are foreground."""
        gt = F.adaptive_max_pool2d(gt_masks[:, None].to(logits.dtype), logits.shape[-2:])[:, 0]
        pred = logits[:, 0]
        losses = {"loss_mask": 0.0, "loss_dice": 0.0}
        for dim in (-1, -2):
            p, t = pred.amax(dim), gt.amax(dim)
            losses["loss_mask"] = losses["loss_mask"] + sigmoid_ce_loss(p, t, num_masks)
            losses["loss_dice"] = losses["loss_dice"] + dice_loss(p, t, num_masks)
        return losses

    def point_losses(self, logits: torch.Tensor, gt_masks: torch.Tensor,
                     num_masks: int) -> Dict[str, torch.Tensor]:
        """Point-sampled BCE + Dice of (n, 1, 4g, 4g) logits, summed and divided by num_masks."""
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                logits, mask_uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio)
            labels = point_sample(gt_masks[:, None].to(logits.dtype), coords,
                                  align_corners=False)[:, 0]
        point_logits = point_sample(logits, coords, align_corners=False)[:, 0]
        return {"loss_mask": sigmoid_ce_loss(point_logits, labels, num_masks),
                "loss_dice": dice_loss(point_logits, labels, num_masks)}


def read_empty_prompt_embedding(path: str) -> torch.Tensor:
    """The (T_d,) pooled CLIP embedding of "" saved by ``save_empty_prompt_embedding``."""
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"MODEL.SEGIC.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING={path} does not exist; write it "
            "with tools/convert_official_checkpoint.py --model segic --clip-text-dir DIR, or set "
            "the key to '' (no text slot)") from None
    if not torch.is_tensor(value) or value.dim() != 1:
        raise ValueError(f"{path} must hold a 1-D tensor (the pooled CLIP embedding of '')")
    return value

"""LoRA transfer of an in-context segmenter to a fixed class set (SINE paper §C.1).

The in-context model (``MODEL.TRANSFER.BASE_ARCHITECTURE``, e.g. SINE) is used through its
inference surface only (``preprocess_image`` / ``encode`` / ``segment``, plus ``decode_tokens`` and
``criterion`` for training). Its semantic tokens are not pooled from reference masks: they are
one learned prototype per dataset class (:class:`SINEReferenceTokens` built by
``from_prototypes``, no ID tokens). What is trained, as the paper describes it ("LoRA on the
frozen image encoder plus learned semantic prototypes, everything else fixed"):

* LoRA adapters (peft, ``MODEL.TRANSFER.LORA``) on the frozen DINOv2's attention;
* the prototypes, initialised from mask-pooled training features (the tokens the in-context
  model would pool from references) or randomly.

Everything else -- the neck, In-Context Fusion, the M-Former decoder and its learned no-object
prototype -- keeps the base weights. The two trained parts are saved together as a small adapter
file (:meth:`SINETransfer.adapter_state_dict`), separate from the base checkpoint, and loaded on
top of it (``MODEL.TRANSFER.ADAPTER_WEIGHTS``). In eval mode LoRA is merged into the ViT weights.
"""
import logging
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks
from torch import nn

from ..in_context import ImageGeometry, select_features
from ..lora import add_lora, load_lora_state_dict, lora_state_dict, merge_lora, unmerge_lora
from ..panoptic_inference import panoptic_inference

__all__ = ["SINETransfer", "ADAPTER_FORMAT"]

logger = logging.getLogger(__name__)

ADAPTER_FORMAT = "sine-transfer-adapter-v1"
OUTPUT_KINDS = ("sem_seg", "panoptic_seg")


def _vit(base: nn.Module) -> nn.Module:
    """The ViT that gets the LoRA adapters (``image_encoder.encoder`` of SINE-like models)."""
    encoder = getattr(getattr(base, "image_encoder", None), "encoder", None)
    if encoder is None:
        raise TypeError(f"{type(base).__name__} has no image_encoder.encoder ViT to adapt")
    return encoder


def thing_classes_from_metadata(dataset_names: Sequence[str]) -> Optional[List[int]]:
    """Contiguous thing ids from the first dataset whose metadata lists them."""
    for name in dataset_names:
        mapping = MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id", None)
        if mapping is not None:
            return sorted(mapping.values())
    return None


@META_ARCH_REGISTRY.register()
class SINETransfer(nn.Module):
    """An in-context segmenter with learned class prototypes and LoRA on its ViT.

    Input (detectron2 style, no references): one dict per image with "image" uint8 (3, H, W),
    "height"/"width" (output size) and, in training, "instances" (``gt_masks`` (N, H, W),
    ``gt_classes`` (N,) contiguous dataset ids, ``ins_ids`` (N,)).
    Output in eval mode, per image, as asked by ``outputs``: "sem_seg" (num_classes, H, W) scores
    for detectron2's ``SemSegEvaluator``; "panoptic_seg" (panoptic ids (H, W), segments_info) for
    ``COCOPanopticEvaluator`` (rule: sine/modeling/panoptic_inference.py).
    """

    @configurable
    def __init__(
        self,
        *,
        base: nn.Module,
        num_classes: int,
        lora_rank: int,
        lora_alpha: float,
        lora_targets: Sequence[str],
        lora_dropout: float = 0.0,
        outputs: Sequence[str] = OUTPUT_KINDS,
        thing_classes: Optional[Sequence[int]] = None,
        panoptic_instance_score_thresh: float = 0.5,
        panoptic_overlap_thresh: float = 0.8,
        panoptic_stuff_area_thresh: int = 0,
        merge_for_inference: bool = True,
    ):
        """
        Args:
            base: the in-context model with its trained weights already loaded.
            num_classes: dataset classes; prototype i is contiguous class i.
            lora_rank, lora_alpha, lora_targets, lora_dropout: peft LoRA settings.
            outputs: subset of ("sem_seg", "panoptic_seg") returned in eval mode.
            thing_classes: contiguous ids of the thing classes (needed for "panoptic_seg").
            panoptic_*: the panoptic combination rule's thresholds.
            merge_for_inference: fold LoRA into the ViT weights in eval mode.
        """
        super().__init__()
        unknown = set(outputs) - set(OUTPUT_KINDS)
        if unknown:
            raise ValueError(f"MODEL.TRANSFER.OUTPUTS: unknown {sorted(unknown)}; choose from "
                             f"{list(OUTPUT_KINDS)}")
        if "panoptic_seg" in outputs and thing_classes is None:
            raise ValueError("panoptic output needs the thing classes: set "
                             "MODEL.TRANSFER.THING_CLASSES or use a panoptic dataset whose "
                             "metadata has thing_dataset_id_to_contiguous_id")
        if num_classes <= 0:
            raise ValueError("MODEL.TRANSFER.NUM_CLASSES must be the number of dataset classes")
        missing = [a for a in ("encode", "segment", "decode_tokens", "criterion")
                   if not hasattr(base, a)]
        if missing:
            raise TypeError(
                f"MODEL.TRANSFER.BASE_ARCHITECTURE builds {type(base).__name__}, which lacks "
                f"{missing}: the transfer needs a SINE-like model (class prototypes as "
                "SINEReferenceTokens semantic tokens, raw decoding and a training criterion)")
        self.base = base
        self.base.requires_grad_(False)
        add_lora(_vit(base), lora_rank, lora_alpha, lora_targets, lora_dropout)
        self.lora_settings = {"rank": int(lora_rank), "alpha": float(lora_alpha),
                              "target_modules": list(lora_targets), "dropout": float(lora_dropout)}
        channels = base.transformer_decoder.query_feat.weight.shape[1]
        self.prototypes = nn.Parameter(torch.randn(num_classes, channels) * 0.02)
        self.outputs = tuple(outputs)
        self.thing_classes = None if thing_classes is None else [int(c) for c in thing_classes]
        self.panoptic_thresholds = {"instance_score_thresh": panoptic_instance_score_thresh,
                                    "overlap_thresh": panoptic_overlap_thresh,
                                    "stuff_area_thresh": panoptic_stuff_area_thresh}
        self.merge_for_inference = merge_for_inference

    @classmethod
    def from_config(cls, cfg):
        from ...checkpoint import SINECheckpointer

        t = cfg.MODEL.TRANSFER
        base = META_ARCH_REGISTRY.get(t.BASE_ARCHITECTURE)(cfg)
        if t.BASE_WEIGHTS:
            SINECheckpointer(base).load(t.BASE_WEIGHTS)
        else:
            logger.warning("MODEL.TRANSFER.BASE_WEIGHTS is empty: adapting an untrained model")
        things = list(t.THING_CLASSES) or thing_classes_from_metadata(
            list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN))
        outputs = list(t.OUTPUTS)
        if things is None and "panoptic_seg" in outputs:
            logger.info("no thing classes known: the transfer model returns sem_seg only")
            outputs.remove("panoptic_seg")
        model = {
            "base": base, "num_classes": t.NUM_CLASSES, "lora_rank": t.LORA.RANK,
            "lora_alpha": t.LORA.ALPHA, "lora_targets": list(t.LORA.TARGET_MODULES),
            "lora_dropout": t.LORA.DROPOUT, "outputs": outputs, "thing_classes": things,
            "panoptic_instance_score_thresh": t.PANOPTIC.INSTANCE_SCORE_THRESH,
            "panoptic_overlap_thresh": t.PANOPTIC.OVERLAP_THRESH,
            "panoptic_stuff_area_thresh": t.PANOPTIC.STUFF_AREA_THRESH,
            "merge_for_inference": t.MERGE_FOR_INFERENCE,
        }
        return model

    # ------------------------------------------------------------------ adapter file
    def adapter_state_dict(self) -> Dict:
        """The trained part only: LoRA weights, prototypes and the settings they need."""
        self._unmerge()
        return {"format": ADAPTER_FORMAT, "lora": lora_state_dict(_vit(self.base)),
                "lora_settings": dict(self.lora_settings),
                "prototypes": self.prototypes.detach().cpu().clone()}

    def load_adapter(self, adapter: Dict) -> None:
        """Load :meth:`adapter_state_dict` output (a dict or a path) on top of the base model."""
        if isinstance(adapter, str):
            adapter = torch.load(adapter, map_location="cpu", weights_only=True)
        if adapter.get("format") != ADAPTER_FORMAT:
            raise ValueError(f"not a transfer adapter file (format {adapter.get('format')!r}, "
                             f"expected {ADAPTER_FORMAT!r})")
        if adapter["lora_settings"] != self.lora_settings:
            raise ValueError(f"adapter LoRA settings {adapter['lora_settings']} differ from "
                             f"MODEL.TRANSFER.LORA {self.lora_settings}")
        if tuple(adapter["prototypes"].shape) != tuple(self.prototypes.shape):
            raise ValueError(f"adapter has prototypes {tuple(adapter['prototypes'].shape)}, the "
                             f"model {tuple(self.prototypes.shape)}: check NUM_CLASSES")
        was_merged = self._unmerge()
        load_lora_state_dict(_vit(self.base), adapter["lora"])
        with torch.no_grad():
            self.prototypes.copy_(adapter["prototypes"])
        if was_merged:
            merge_lora(_vit(self.base))

    def save_adapter(self, path: str) -> None:
        """Write the adapter file atomically (a temporary file renamed into place)."""
        import os

        tmp = f"{path}.tmp"
        torch.save(self.adapter_state_dict(), tmp)
        os.replace(tmp, path)
        if not self.training:
            self._merge()

    def _merge(self):
        if self.merge_for_inference:
            merge_lora(_vit(self.base))

    def _unmerge(self) -> bool:
        merged = any(getattr(m, "merged", False) for m in _vit(self.base).modules())
        unmerge_lora(_vit(self.base))
        return merged

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self._unmerge()
        else:
            self._merge()
        return self

    # ------------------------------------------------------------------ tokens
    @property
    def device(self) -> torch.device:
        return self.prototypes.device

    def class_tokens(self):
        """Reference tokens of the dataset classes: the prototypes, no ID tokens."""
        from .sine_model import SINEReferenceTokens

        ids = torch.arange(self.prototypes.shape[0], device=self.device)
        return SINEReferenceTokens.from_prototypes(ids, self.prototypes)

    @torch.no_grad()
    def initialise_prototypes(self, views: Iterable[Tuple[torch.Tensor, object]]) -> List[int]:
        """Set each prototype to the mean of the class's mask-pooled features over ``views``.

        Args:
            views: (uint8 (3, H, W) image, Instances with gt_masks and gt_classes) pairs.
        Returns:
            The classes that occurred (the others keep their random initialisation).
        """
        sums = torch.zeros_like(self.prototypes)
        counts = torch.zeros(self.prototypes.shape[0], device=self.device)
        for image, instances in views:
            if len(instances) == 0:
                continue
            size = self._padded_size([image])
            feats = self.base.encode(self.base.preprocess_image(image, size)[None])
            masks = _masks_of(instances)
            masks = F.pad(masks, (0, size - masks.shape[-1], 0, size - masks.shape[-2]))
            tokens = self.base.reference_tokens(
                feats, [masks.to(self.device)], [instances.gt_classes.to(self.device)],
                pooling="fsod")
            sums[tokens.sem_labels] += tokens.sem_tokens[0].float()
            counts[tokens.sem_labels] += 1
        seen = counts > 0
        self.prototypes[seen] = sums[seen] / counts[seen, None]
        return torch.where(seen)[0].tolist()

    # ------------------------------------------------------------------ forward
    def _padded_size(self, images: Sequence[torch.Tensor]) -> int:
        div = self.base.size_divisibility
        side = max(max(im.shape[-2:]) for im in images)
        return max(self.base.pad_size, int(math.ceil(side / div)) * div)

    def forward(self, batched_inputs: List[Dict]):
        images = [x["image"] for x in batched_inputs]
        size = self._padded_size(images)
        feats = self.base.encode(torch.stack([self.base.preprocess_image(im, size)
                                              for im in images]))
        tokens = self.class_tokens()
        if self.training:
            return self._losses(batched_inputs, feats, tokens, size)
        return [self._inference(x, select_features(feats, b), tokens, size)
                for b, x in enumerate(batched_inputs)]

    def _losses(self, batched_inputs, feats, tokens, size) -> Dict[str, torch.Tensor]:
        outputs, targets = [], []
        empty = torch.zeros(0, dtype=torch.long, device=self.device)
        for b, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise ValueError(f"batched_inputs[{b}] has no 'instances': training needs the "
                                 "ground truth (INPUT.DATASET_MAPPER_NAME 'transfer')")
            inst = x["instances"]
            masks = _masks_of(inst)
            masks = F.pad(masks, (0, size - masks.shape[-1], 0, size - masks.shape[-2]))
            outputs.append(self.base.decode_tokens(select_features(feats, b), tokens))
            targets.append({"labels": inst.gt_classes.to(self.device).long(),
                            "masks": masks.to(self.device),
                            "ids": inst.ins_ids.to(self.device).long(), "ref_ids": empty})
        criterion = self.base.criterion
        losses = criterion(outputs, targets)
        # No ID tokens: the ID classification losses are empty and not part of this task.
        return {k: v * criterion.weight_dict[k] for k, v in losses.items()
                if k in criterion.weight_dict and not k.startswith("loss_ce_id")}

    def _inference(self, x: Dict, feats, tokens, size) -> Dict:
        h, w = x["image"].shape[-2:]
        geometry = ImageGeometry((size, size), (h, w),
                                 (int(x.get("height", h)), int(x.get("width", w))))
        asked = {"sem_seg"} | ({"instances"} if "panoptic_seg" in self.outputs else set())
        result = self.base.segment(feats, tokens, geometry, outputs=asked)
        out = {}
        if "sem_seg" in self.outputs:
            out["sem_seg"] = result["sem_seg"]
        if "panoptic_seg" in self.outputs:
            out["panoptic_seg"] = panoptic_inference(
                result["instances"], result["sem_seg"], result["sem_seg_classes"],
                self.thing_classes, **self.panoptic_thresholds)
        return out


def _masks_of(instances) -> torch.Tensor:
    masks = instances.gt_masks
    masks = masks.tensor if isinstance(masks, BitMasks) else torch.as_tensor(masks)
    return masks.bool()

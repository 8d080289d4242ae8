"""Training losses of SINE (spec §4): ID and instance classification, point-sampled mask losses.

Predictions are per image because the number of classes (``nc``, the unique reference labels) and
of ID tokens (``nm``, the reference masks) differ between images.
"""
import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm
from torch import nn

from .matcher import HungarianMatcher, ImageMatch

logger = logging.getLogger(__name__)

PRED_KEYS = ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks")


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """BCE-with-logits averaged over the P points of each mask, summed over masks, / num_masks.

    Args:
        logits, targets: (N, P).
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss (+1 smoothing) per mask, summed over masks, / num_masks.

    Args:
        logits, targets: (N, P).
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def mask_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of (N, 1, P) mask logits: highest where the logit is closest to 0."""
    return -logits.abs()


def remap_labels(labels: torch.Tensor, ref_sem_labels: torch.Tensor) -> torch.Tensor:
    """Turn raw target class ids into indices of the sorted unique reference classes.

    Args:
        labels: (T,) raw class ids of the target instances.
        ref_sem_labels: (nc,) sorted unique class ids of the reference masks.
    Returns:
        (T,) int64 indices into ``ref_sem_labels`` (= columns of ``pred_ins_logits``).
    """
    present = torch.isin(labels, ref_sem_labels)
    if not bool(present.all()):
        raise ValueError(
            f"Target classes {labels[~present].unique().tolist()} do not occur in the reference "
            f"(reference classes: {ref_sem_labels.tolist()}). Every target instance must belong to "
            "a class of the reference masks; drop those target instances or add references."
        )
    return (labels[:, None] == ref_sem_labels[None, :]).to(torch.int64).argmax(dim=1)


class SetCriterion(nn.Module):
    """Computes the SINE losses of one batch.

    For each prediction level (final, then every auxiliary one) the matcher assigns instance
    queries (Hungarian) and ID tokens (by instance id) to target instances, then:

    * ``loss_ce_ins``: weighted cross-entropy of the instance queries over ``nc + 1`` classes
      (last = no object, weight ``eos_coef``), computed per image then averaged over images;
    * ``loss_ce_id``: weighted 2-way cross-entropy (object / no object) over the ID tokens of all
      images pooled together;
    * ``loss_mask`` / ``loss_dice``: point-sampled BCE and dice of all matched masks (instance
      matches of every image, then ID matches of every image), normalised by the number of
      matches over the batch (averaged over processes).

    Auxiliary levels get the suffix ``_i`` (``_0`` = prediction from the initial queries).
    """

    @configurable
    def __init__(
        self, *, matcher: nn.Module, weight_dict: Dict[str, float], eos_coef: float,
        num_points: int, oversample_ratio: float, importance_sample_ratio: float,
        deep_supervision: bool = True,
    ):
        """
        Args:
            matcher: module returning one :class:`ImageMatch` per image.
            weight_dict: loss name -> weight; the model keeps only the losses listed here.
            eos_coef: cross-entropy weight of the no-object class.
            num_points: points sampled per mask for the mask losses.
            oversample_ratio, importance_sample_ratio: PointRend importance sampling parameters.
            deep_supervision: also compute the losses of ``outputs["aux_outputs"]``.
        """
        super().__init__()
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision
        # 2-way ID classification (object, no object); part of the official state dict.
        self.register_buffer("empty_weight", torch.tensor([1.0, eos_coef]))

    @classmethod
    def from_config(cls, cfg):
        sine = cfg.MODEL.SINE
        matcher = HungarianMatcher(
            cost_class=sine.CLASS_WEIGHT,
            cost_mask=sine.MASK_WEIGHT,
            cost_dice=sine.DICE_WEIGHT,
            num_points=sine.TRAIN_NUM_POINTS,
        )
        weights = {
            "loss_ce_ins": sine.CLASS_WEIGHT,
            "loss_ce_id": sine.CLASS_WEIGHT,
            "loss_mask": sine.MASK_WEIGHT,
            "loss_dice": sine.DICE_WEIGHT,
        }
        weight_dict = dict(weights)
        if sine.DEEP_SUPERVISION:
            # One auxiliary prediction per decoder block: the initial one + all but the last.
            for i in range(sine.DEC_LAYERS):
                weight_dict.update({f"{k}_{i}": v for k, v in weights.items()})
        return {
            "matcher": matcher,
            "weight_dict": weight_dict,
            "eos_coef": sine.NO_OBJECT_WEIGHT,
            "num_points": sine.TRAIN_NUM_POINTS,
            "oversample_ratio": sine.OVERSAMPLE_RATIO,
            "importance_sample_ratio": sine.IMPORTANCE_SAMPLE_RATIO,
            "deep_supervision": sine.DEEP_SUPERVISION,
        }

    def forward(self, outputs: List[Dict], targets: List[Dict]) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: one decoder output dict per image with ``ref_sem_labels`` (1, nc),
                ``pred_id_logits`` (1, nm, 2), ``pred_ins_logits`` (1, nq, nc+1),
                ``pred_id_masks`` (1, nm, Hm, Wm), ``pred_ins_masks`` (1, nq, Hm, Wm) and
                ``aux_outputs``: a list of dicts with the four ``pred_*`` keys.
            targets: one dict per image with ``labels`` (T,) raw class ids, ``masks``
                (T, Hp, Wp) bool, ``ids`` (T,) instance ids, ``ref_ids`` (nm,) instance ids of
                the reference masks in ID-token order.
        Returns:
            Unweighted losses: ``loss_ce_ins``, ``loss_ce_id``, ``loss_mask``, ``loss_dice`` and,
            with deep supervision, the same names suffixed ``_i`` for each auxiliary level.
        """
        if len(outputs) != len(targets):
            raise ValueError(f"Got {len(outputs)} outputs but {len(targets)} targets.")
        targets = self.prepare_targets(outputs, targets)
        levels = [[{k: out[k] for k in PRED_KEYS} for out in outputs]]
        if self.deep_supervision:
            num_aux = {len(out.get("aux_outputs", [])) for out in outputs}
            if len(num_aux) != 1:
                raise ValueError(f"Images have different numbers of aux_outputs: {num_aux}.")
            levels += [list(level) for level in zip(*(out["aux_outputs"] for out in outputs))]

        losses, num_masks = {}, None
        for i, level in enumerate(levels):
            matches = self.matcher(level, targets)
            if num_masks is None:
                num_masks = self.num_matches(matches, device=level[0]["pred_ins_logits"].device)
            suffix = "" if i == 0 else f"_{i - 1}"
            level_losses = self.level_losses(level, targets, matches, num_masks)
            losses.update({k + suffix: v for k, v in level_losses.items()})
        return losses

    def prepare_targets(self, outputs: List[Dict], targets: List[Dict]) -> List[Dict]:
        """New target dicts with ``labels`` remapped to reference class indices (§4.1)."""
        prepared = []
        for out, tgt in zip(outputs, targets):
            ref_sem_labels = out["ref_sem_labels"].reshape(-1).to(tgt["labels"].device)
            nm = out["pred_id_logits"].shape[1]
            if tgt["ref_ids"].numel() != nm:
                raise ValueError(
                    f"targets ref_ids has {tgt['ref_ids'].numel()} entries but the prediction "
                    f"has {nm} ID tokens; pass one instance id per reference mask."
                )
            prepared.append(
                {
                    "labels": remap_labels(tgt["labels"], ref_sem_labels),
                    "masks": tgt["masks"],
                    "ids": tgt["ids"],
                    "ref_ids": tgt["ref_ids"],
                }
            )
        return prepared

    @staticmethod
    def num_matches(matches: List[ImageMatch], device) -> float:
        """Number of matched masks (ID + instance) over the batch, averaged over processes."""
        count = sum(len(m.id_src) + len(m.ins_src) for m in matches)
        count = torch.as_tensor([float(count)], device=device)
        world_size = comm.get_world_size()
        if world_size > 1:
            torch.distributed.all_reduce(count)
        return torch.clamp(count / world_size, min=1).item()

    def level_losses(self, outputs, targets, matches, num_masks) -> Dict[str, torch.Tensor]:
        """The four losses of one prediction level (``outputs``: one pred dict per image)."""
        losses = {
            "loss_ce_ins": self.loss_ins_labels(outputs, targets, matches),
            "loss_ce_id": self.loss_id_labels(outputs, matches),
        }
        losses.update(self.loss_masks(outputs, targets, matches, num_masks))
        return losses

    def loss_ins_labels(self, outputs, targets, matches) -> torch.Tensor:
        """Per-image weighted CE over nc+1 classes (last = no object), averaged over images."""
        per_image = []
        for out, tgt, match in zip(outputs, targets, matches):
            logits = out["pred_ins_logits"].float()  # (1, nq, nc+1)
            num_classes = logits.shape[-1] - 1
            target_classes = torch.full(
                logits.shape[:2], num_classes, dtype=torch.int64, device=logits.device
            )
            target_classes[0, match.ins_src] = tgt["labels"][match.ins_tgt].to(logits.device)
            weight = torch.ones(num_classes + 1, device=logits.device)
            weight[-1] = self.eos_coef
            per_image.append(F.cross_entropy(logits.transpose(1, 2), target_classes, weight))
        return torch.stack(per_image).mean()

    def loss_id_labels(self, outputs, matches) -> torch.Tensor:
        """Weighted 2-way CE (0 = object, 1 = no object) over the ID tokens of all images."""
        logits = torch.cat([out["pred_id_logits"].float() for out in outputs], dim=1)
        target_classes = []
        for out, match in zip(outputs, matches):
            classes = torch.ones(out["pred_id_logits"].shape[1], dtype=torch.int64)
            classes[match.id_src] = 0
            target_classes.append(classes)
        target_classes = torch.cat(target_classes).to(logits.device)[None]
        weight = self.empty_weight.to(logits)
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight)

    def loss_masks(self, outputs, targets, matches, num_masks) -> Dict[str, torch.Tensor]:
        """Point-sampled BCE and dice of the matched masks: all instance matches, then all IDs."""
        pred_masks, tgt_masks = [], []
        for kind in ("ins", "id"):
            for out, tgt, match in zip(outputs, targets, matches):
                src, dst = (match.ins_src, match.ins_tgt) if kind == "ins" else (
                    match.id_src, match.id_tgt
                )
                pred_masks.append(out[f"pred_{kind}_masks"][0, src])
                tgt_masks.append(tgt["masks"][dst])
        pred_masks = torch.cat(pred_masks)[:, None]  # (N, 1, Hm, Wm)
        if pred_masks.shape[0] == 0:
            # Keep the graph connected so that every parameter still receives a (zero) gradient.
            zero = sum(out[f"pred_{k}_masks"].sum() for out in outputs for k in ("ins", "id")) * 0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                pred_masks, mask_uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio,
            )
            # Sampled per image: each target mask lives on its own image's padded canvas.
            point_labels = torch.cat(
                [
                    point_sample(m[:, None].to(pred_masks), coords, align_corners=False)
                    for m, coords in zip(tgt_masks, point_coords.split([len(m) for m in tgt_masks]))
                ]
            ).squeeze(1)
        point_logits = point_sample(pred_masks, point_coords, align_corners=False).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def extra_repr(self) -> str:
        return (
            f"eos_coef={self.eos_coef}, num_points={self.num_points}, "
            f"oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}, "
            f"deep_supervision={self.deep_supervision}"
        )

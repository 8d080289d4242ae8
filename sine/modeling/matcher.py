"""Assignment of SINE predictions to target instances (spec §4.2, §4.3).

Instance queries are matched to the target instances with the Hungarian algorithm on a
point-sampled cost (Mask2Former style); ID queries are matched to the target instances that carry
the same instance id as their reference mask (no optimisation involved).
"""
from typing import Dict, List, NamedTuple

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import nn


class ImageMatch(NamedTuple):
    """Matches of one image; each field is an int64 tensor of length #matches.

    ``id_src[k]`` (ID token index) is matched to target instance ``id_tgt[k]``;
    ``ins_src[k]`` (instance query index) is matched to target instance ``ins_tgt[k]``.
    """

    id_src: torch.Tensor
    id_tgt: torch.Tensor
    ins_src: torch.Tensor
    ins_tgt: torch.Tensor


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean point-wise BCE-with-logits of every prediction against every target.

    Args:
        logits: (Q, P) predicted mask logits at P points.
        targets: (T, P) target mask values in [0, 1] at the same points.
    Returns:
        (Q, T) cost.
    """
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost = torch.einsum("qp,tp->qt", pos, targets) + torch.einsum("qp,tp->qt", neg, 1 - targets)
    return cost / num_points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (+1 smoothing) of every prediction against every target.

    Args:
        logits: (Q, P) predicted mask logits at P points.
        targets: (T, P) target mask values in [0, 1] at the same points.
    Returns:
        (Q, T) cost.
    """
    probs = logits.sigmoid()
    numerator = 2 * torch.einsum("qp,tp->qt", probs, targets)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def match_ids(ref_ids: torch.Tensor, tar_ids: torch.Tensor):
    """Fixed ID matching: ID token ``i`` ↔ the target instance with id ``ref_ids[i]``.

    The official code zips ``where(isin(tar_ids, ref_ids))`` with
    ``where(isin(ref_ids, tar_ids))`` positionally, which is the same pairing whenever reference and
    target list their shared instances in the same order (always the case in its data pipeline).
    Pairing by id value gives those same pairs, ordered by target index, and stays correct when the
    orders differ.

    Args:
        ref_ids: (nm,) instance ids of the reference masks, in ID-token order.
        tar_ids: (n,) instance ids of the target instances.
    Returns:
        (id_src, id_tgt): int64 tensors, ID token indices and target indices, by target index.
    """
    for name, ids in (("ref_ids", ref_ids), ("ids", tar_ids)):
        if ids.unique().numel() != ids.numel():
            raise ValueError(
                f"Duplicate instance ids in {name}: {ids.tolist()}. Instance ids must be unique "
                "per image so that ID tokens can be matched to target instances."
            )
    same = ref_ids[None, :] == tar_ids[:, None]  # (n, nm)
    id_tgt, id_src = same.nonzero(as_tuple=True)
    return id_src.to(torch.int64).cpu(), id_tgt.to(torch.int64).cpu()


class HungarianMatcher(nn.Module):
    """Matches the predictions of each image to its targets (no gradient).

    The instance cost is ``cost_mask * BCE + cost_class * (-p(class)) + cost_dice * dice``, with
    masks compared at ``num_points`` uniformly random points shared by all queries and targets of
    an image (one ``torch.rand(1, num_points, 2)`` per image, in image order).
    """

    def __init__(
        self, *, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
        num_points: int = 12544,
    ):
        """
        Args:
            cost_class: weight of the classification cost.
            cost_mask: weight of the point-sampled sigmoid BCE cost.
            cost_dice: weight of the point-sampled dice cost.
            num_points: number of random points per image for the mask costs.
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0; set at least one weight > 0.")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def instance_cost(
        self, ins_logits: torch.Tensor, ins_masks: torch.Tensor, labels: torch.Tensor,
        tgt_masks: torch.Tensor, point_coords: torch.Tensor,
    ) -> torch.Tensor:
        """Cost matrix of one image, the one given to ``linear_sum_assignment``.

        Args:
            ins_logits: (nq, nc+1) class logits of the instance queries.
            ins_masks: (nq, Hm, Wm) mask logits of the instance queries.
            labels: (T,) target classes as indices into the reference classes.
            tgt_masks: (T, Hp, Wp) target masks (bool or float).
            point_coords: (1, P, 2) points in [0, 1]², used for all masks.
        Returns:
            (nq, T) float32 cost.
        """
        cost_class = -ins_logits.softmax(-1)[:, labels]
        tgt_masks = tgt_masks.to(ins_masks)
        points_q = point_coords.repeat(ins_masks.shape[0], 1, 1)
        points_t = point_coords.repeat(tgt_masks.shape[0], 1, 1)
        tgt_points = point_sample(tgt_masks[:, None], points_t, align_corners=False).squeeze(1)
        pred_points = point_sample(ins_masks[:, None], points_q, align_corners=False).squeeze(1)
        # Mixed precision would make the costs (and hence the assignment) precision dependent.
        with torch.autocast(device_type=ins_masks.device.type, enabled=False):
            pred_points = pred_points.float()
            tgt_points = tgt_points.float()
            cost_mask = pairwise_sigmoid_ce(pred_points, tgt_points)
            cost_dice = pairwise_dice(pred_points, tgt_points)
        return (
            self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
        )

    @torch.no_grad()
    def forward(self, outputs: List[Dict], targets: List[Dict]) -> List[ImageMatch]:
        """
        Args:
            outputs: per image, a dict with ``pred_ins_logits`` (1, nq, nc+1) and
                ``pred_ins_masks`` (1, nq, Hm, Wm).
            targets: per image, a dict with ``labels`` (T,) int64 already remapped to reference
                class indices, ``masks`` (T, Hp, Wp), ``ids`` (T,) and ``ref_ids`` (nm,).
        Returns:
            One :class:`ImageMatch` per image; instance pairs sorted by query index.
        """
        matches = []
        for out, tgt in zip(outputs, targets):
            id_src, id_tgt = match_ids(tgt["ref_ids"], tgt["ids"])
            ins_masks = out["pred_ins_masks"][0]
            # Drawn even for an image without targets, so that the random stream of the following
            # images does not depend on it.
            point_coords = torch.rand(1, self.num_points, 2, device=ins_masks.device)
            if tgt["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                matches.append(ImageMatch(id_src, id_tgt, empty, empty.clone()))
                continue
            cost = self.instance_cost(
                out["pred_ins_logits"][0], ins_masks, tgt["labels"], tgt["masks"], point_coords
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            ins_src = torch.as_tensor(rows, dtype=torch.int64)
            ins_tgt = torch.as_tensor(cols, dtype=torch.int64)
            matches.append(ImageMatch(id_src, id_tgt, ins_src, ins_tgt))
        return matches

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )

"""SegIC's instructions, computed as the official code does (spec §1.3-§1.5, §1.9, §1.11).

* visual: mask pooling of the reference features (:func:`mask_pool`);
* geometric: cosine similarity of the up-sampled target features to a prototype
  (:func:`similarity_maps`), its S x S coarse mask (:func:`coarse_masks`) and top-1 point
  (:func:`top1_points`);
* the token layout of several entities (:func:`entity_tokens`, :func:`entity_points`).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "coarse_masks",
    "entity_points",
    "entity_tokens",
    "with_negative_tokens",
    "mask_pool",
    "merge_object_logits",
    "pick_memory_entries",
    "similarity_maps",
    "top1_points",
]


def mask_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean feature inside each mask (one prototype per entity).

    The masks are resized bilinearly to the grid WITHOUT antialias and thresholded strictly at
    0.5: for 0/1 masks this reads only the pixels at offsets p/2 - 1 and p/2 of each p x p patch,
    which is what the official prototypes are (area pooling gives different ones).

    Args:
        features: (C, g, g) features of one image.
        masks: (n, S, S) bool or 0/1 masks on that image's padded canvas.
    Returns:
        (n, C); an empty mask gives a zero vector (denominator clamped at 1).
    """
    grid = features.shape[-2:]
    weights = F.interpolate(masks[:, None].to(features.dtype), size=grid, mode="bilinear",
                            align_corners=False)[:, 0] > 0.5
    weights = weights.to(features.dtype)
    summed = torch.einsum("nhw,chw->nc", weights, features)
    return summed / weights.sum((1, 2)).clamp(min=1)[:, None]


def similarity_maps(features: torch.Tensor, prototypes: torch.Tensor, size: int,
                    eps: float) -> torch.Tensor:
    """Cosine similarity of every up-sampled target position to every prototype.

    Args:
        features: (C, g, g) target features, bilinearly up-sampled to ``size`` x ``size``
            (S/4) first, as the official ``up_sample``.
        prototypes: (n, m, C) m prototypes per entity.
        eps: clamp of both L2 norms (official: 1e-8 one-shot/training, 1e-4 VOS).
    Returns:
        (n, m, size, size) similarities in [-1, 1].
    """
    up = F.interpolate(features[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    up = up / up.norm(dim=0, keepdim=True).clamp(min=eps)
    protos = prototypes / prototypes.norm(dim=-1, keepdim=True).clamp(min=eps)
    return torch.einsum("nmc,chw->nmhw", protos, up)


def coarse_masks(similarity: torch.Tensor, size: int, tau: float = 1.0) -> torch.Tensor:
    """(n, 1, s, s) similarity -> (n, 1, S, S) dense prompt: bilinear to S, divided by ``tau``.

    It stays a raw cosine (not a probability), as the official dense prompt.
    """
    return F.interpolate(similarity, size=(size, size), mode="bilinear",
                         align_corners=False) / tau


def top1_points(coarse: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Integer pixel (x = column, y = row) of the maximum of each coarse mask.

    Args:
        coarse: (n, 1, S, S).
    Returns:
        points (n, 1, 2) float and the maximum values (n,). ``topk`` as the official picker;
        SAM's point embedding adds the +0.5 pixel-centre shift later.
    """
    width = coarse.shape[-1]
    values, index = coarse.flatten(1).topk(1, dim=1)
    points = torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], dim=-1)
    return points.to(coarse.dtype), values[:, 0]


def entity_points(points: torch.Tensor, negatives: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Point prompts of n entities decoded together.

    Args:
        points: (n, 1, 2) each entity's top-1 point.
        negatives: give every entity the other entities' points as negatives (label 0), in
            entity order (official VOS inference; spec §1.9).
    Returns:
        coords (n, p, 2) and labels (n, p) with p = n (negatives) or 1.
    """
    n = points.shape[0]
    if not negatives:
        return points, torch.ones(n, 1, device=points.device)
    coords = points[:, 0][None].expand(n, -1, -1)
    labels = torch.eye(n, device=points.device, dtype=torch.int64)
    return coords, labels


def entity_tokens(text: Optional[torch.Tensor], visual: torch.Tensor,
                  type_embed: Optional[nn.Embedding]) -> torch.Tensor:
    """Non-spatial instruction tokens of n entities: [text, visual...] per entity.

    Args:
        text: (n, D) each entity's projected text token, or None (no text slot).
        visual: (n, m, D) each entity's projected prototypes.
        type_embed: None: each entity gets only its own m visual tokens. Otherwise every entity
            gets all n*m visual tokens (entity-major) plus ``type_embed(1)`` on its own and
            ``type_embed(0)`` on the others' (the cross-entity negatives, spec §1.9).
    Returns:
        (n, [1] + m or n*m, D).
    """
    n, m, d = visual.shape
    if type_embed is None:
        tokens = visual
    else:
        own = torch.eye(n, device=visual.device, dtype=torch.long)  # (owner, entity)
        kind = type_embed(own)[:, :, None].expand(n, n, m, d)
        tokens = (visual[None] + kind).reshape(n, n * m, d)
    if text is None:
        return tokens
    return torch.cat([text[:, None], tokens], dim=1)


def with_negative_tokens(tokens: torch.Tensor, negatives: torch.Tensor,
                         type_embed: nn.Embedding) -> torch.Tensor:
    """Append user-marked negatives ("not this") to every entity's instruction tokens, as the
    other entities' visual tokens are marked: projected prototype + ``type_embed(0)`` (spec §1.9).

    Args:
        tokens: (n, t, D) instruction tokens of n entities.
        negatives: (q, D) projected prototypes of the negative masks.
    Returns:
        (n, t + q, D).
    """
    other = type_embed(torch.zeros(1, dtype=torch.long, device=negatives.device))
    negatives = (negatives + other)[None].expand(tokens.shape[0], -1, -1)
    return torch.cat([tokens, negatives], dim=1)


def pick_memory_entries(length: int, picks: int = 2) -> torch.Tensor:
    """Indices of the memory entries SegIC's VOS uses: ``linspace(0, length - 1, picks)``
    (the first-frame ground truth and the latest prediction), or all while ``length <= picks``."""
    if length <= picks:
        return torch.arange(length)
    return torch.linspace(0, length - 1, picks).long()


def merge_object_logits(logits: torch.Tensor) -> torch.Tensor:
    """Merge per-object logits (n, H, W) into an id map (H, W) int64 (0 = background, k = object
    k): ``(argmax_k((l_k > 0) * sigmoid(l_k)) + 1) * any_k(l_k > 0)``, the official VOS merge."""
    positive = logits > 0
    score = positive * logits.sigmoid()
    return (score.argmax(0) + 1) * positive.any(0)

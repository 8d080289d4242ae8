"""How reference masks become ID tokens and semantic prototypes (spec §2.3-§2.4).

The official code keeps one diverging copy of the model per evaluation protocol; their only
functional difference is this pooling step. Here each variant is a function registered in
``REFERENCE_POOLING`` and chosen by name (``MODEL.SINE.REFERENCE_POOLING`` or per call), with
the signature::

    pool(ref_feats (K, C, h, w), ref_masks [K x (n_k, H, W)], ref_labels [K x (n_k,)],
         size (mh, mw), pooling: MaskPooling)
        -> id_tokens (1, nm, C), sem_tokens (1, nc, C), id_labels (nm,), sem_labels (nc,)
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F

from .in_context_fusion import MaskPooling

# name -> pooling function (training/FSS "instance", VOS, FSOD variants).
REFERENCE_POOLING = {}


def register_reference_pooling(name):
    """Decorator adding a pooling function to ``REFERENCE_POOLING`` under ``name``."""

    def deco(fn):
        if name in REFERENCE_POOLING:
            raise KeyError(f"reference pooling '{name}' is already registered")
        REFERENCE_POOLING[name] = fn
        return fn

    return deco


def get_reference_pooling(name):
    if name not in REFERENCE_POOLING:
        raise KeyError(
            f"unknown reference pooling '{name}'; registered: {sorted(REFERENCE_POOLING)}"
        )
    return REFERENCE_POOLING[name]


@register_reference_pooling("instance")
def pool_reference_tokens(
    ref_feats: torch.Tensor,
    ref_masks: List[torch.Tensor],
    ref_labels: List[torch.Tensor],
    size: Tuple[int, int],
    pooling: MaskPooling,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ID tokens (one per reference mask) and semantic prototypes (one per class).

    Masks and features of each reference are bilinearly resized to ``size`` (the mask-feature
    grid). A class prototype is the pixel-weighted mean over the union of its masks in every
    reference jointly (official training path for K = 1, FSS fork for K shots).

    Args:
        ref_feats: (K, C, h, w) reference features.
        ref_masks: K tensors (n_k, H, W), bool or float, at the padded image size.
        ref_labels: K int64 tensors (n_k,), class id of every mask.
        size: (mh, mw) pooling resolution.
        pooling: the MaskPooling module.
    Returns:
        id_tokens (1, nm, C), sem_tokens (1, nc, C), id_labels (nm,), sem_labels (nc,) where
        nm = sum n_k and sem_labels are the sorted unique labels.
    """
    feats = F.interpolate(ref_feats, size=size, mode="bilinear", align_corners=False)
    masks = [
        F.interpolate(m[None].float(), size=size, mode="bilinear", align_corners=False)
        for m in ref_masks
    ]
    id_labels = torch.cat(ref_labels)
    sem_labels = torch.unique(id_labels)
    id_tokens = torch.cat([pooling(f[None], m) for f, m in zip(feats, masks)], dim=1)
    # (K, nc, mh, mw): per reference, the sum (-> union after > 0) of the masks of each class.
    sem_masks = torch.stack(
        [
            torch.stack([m[0, lab == c].sum(0) for c in sem_labels])
            for m, lab in zip(masks, ref_labels)
        ]
    )
    if len(masks) == 1:
        sem_tokens = pooling(feats, sem_masks)
    else:
        sem_tokens = joint_mask_pooling(feats, sem_masks)
    return id_tokens, sem_tokens, id_labels, sem_labels


def joint_mask_pooling(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MaskPooling over the pixels of all K images together.

    Args:
        x: (K, C, H, W) features.
        mask: (K, Q, H, W) masks (> 0 is foreground).
    Returns:
        (1, Q, C): sum over images of features * mask / total foreground pixel count.
    """
    with torch.no_grad():
        mask = (mask > 0).to(x.dtype)
        count = mask.sum(dim=(0, 2, 3)) + 1e-8
    return (torch.einsum("kchw,kqhw->qc", x, mask) / count[:, None])[None]

"""How reference masks become ID tokens and semantic prototypes (spec §2.3-§2.4).

The official code keeps one diverging copy of the model per evaluation protocol; their only
functional difference is this pooling step. Here each variant is a function registered in
``REFERENCE_POOLING`` and chosen by name (``MODEL.SINE.REFERENCE_POOLING`` or per call), with
the signature::

    pool(ref_feats (K, C, h, w), ref_masks [K x (n_k, H, W)], ref_labels [K x (n_k,)],
         size (mh, mw), pooling: MaskPooling)
        -> id_tokens (1, nm, C), sem_tokens (1, nc, C), id_labels (nm,), sem_labels (nc,)

Every pooling runs in float32, also under autocast (:func:`in_fp32`): a pixel's weight is
1 / (pixels of the pooled region), and over several memory frames at 1036 input that is below
the normal range of float16.
"""
import functools
from typing import List, Tuple

import torch
import torch.nn.functional as F

from .in_context_fusion import MaskPooling

# name -> pooling function (training/FSS "instance", VOS, FSOD variants).
REFERENCE_POOLING = {}

#: What one ID token of a pooling stands for: "mask" (one token per reference mask, whose
#: instance id it keeps) or "label" (one token per distinct label, e.g. a VOS object id, which
#: is then also its instance id).
TOKENS_PER_MASK, TOKENS_PER_LABEL = "mask", "label"


def in_fp32(fn):
    """Run a pooling function on float32 features with autocast disabled."""

    @functools.wraps(fn)
    def pooled_in_fp32(ref_feats: torch.Tensor, *args, **kwargs):
        with torch.autocast(ref_feats.device.type, enabled=False):
            return fn(ref_feats.float(), *args, **kwargs)

    return pooled_in_fp32


def register_reference_pooling(name, tokens_per: str = TOKENS_PER_MASK):
    """Decorator adding a pooling function to ``REFERENCE_POOLING`` under ``name`` (run in
    float32, see :func:`in_fp32`); ``tokens_per`` says what its ID tokens stand for."""
    if tokens_per not in (TOKENS_PER_MASK, TOKENS_PER_LABEL):
        raise ValueError(f"tokens_per must be {TOKENS_PER_MASK!r} or {TOKENS_PER_LABEL!r}")

    def deco(fn):
        if name in REFERENCE_POOLING:
            raise KeyError(f"reference pooling '{name}' is already registered")
        pool = in_fp32(fn)
        pool.tokens_per = tokens_per
        REFERENCE_POOLING[name] = pool
        return pool

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


@register_reference_pooling("vos", tokens_per=TOKENS_PER_LABEL)
def pool_object_tokens(
    ref_feats: torch.Tensor,
    ref_masks: List[torch.Tensor],
    ref_labels: List[torch.Tensor],
    size: Tuple[int, int],
    pooling: MaskPooling,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per object id, pooled over all memory frames of that object (VOS fork).

    The labels are object ids. Every (frame, mask) pair of object ``o`` adds its pixels to the
    token of ``o``: the token is the pixel-count-weighted mean of the features over all those
    pairs together (the official code concatenates the object's memory frames along the width
    and mask-pools once). A frame holding two masks of one object (its ground truth and its own
    prediction) counts their pixels once per mask, as that concatenation does. The semantic
    prototypes are the same tensors (spec §2.4).

    Args:
        ref_feats: (K, C, h, w) features of the memory frames.
        ref_masks: K tensors (n_k, H, W) at the padded image size.
        ref_labels: K int64 tensors (n_k,), the object id of every mask.
        size: (mh, mw) pooling resolution.
        pooling: unused (the joint pooling spans several frames); kept for the common signature.
    Returns:
        id_tokens (1, n, C), sem_tokens (1, n, C) (equal values), id_labels (n,) and
        sem_labels (n,): the n sorted unique object ids.
    """
    if not ref_masks:
        raise ValueError("VOS pooling needs at least one memory frame with a mask")
    ids = torch.unique(torch.cat(ref_labels))
    with torch.no_grad():
        weights = []  # per frame (n, mh, mw): how many masks of each object cover each pixel
        for m, lab in zip(ref_masks, ref_labels):
            small = F.interpolate(m[None].float(), size=size, mode="bilinear", align_corners=False)
            owner = (lab[:, None] == ids[None]).float()
            weights.append(torch.einsum("iq,ihw->qhw", owner, (small[0] > 0).float()))
        count = torch.stack([w.sum(dim=(-2, -1)) for w in weights]).sum(0) + 1e-8
    tokens = None
    for f, w in zip(ref_feats, weights):
        feat = F.interpolate(f[None], size=size, mode="bilinear", align_corners=False)[0]
        part = torch.einsum("chw,qhw->qc", feat, (w / count[:, None, None]).to(feat.dtype))
        tokens = part if tokens is None else tokens + part
    return tokens[None], tokens[None], ids, ids


@in_fp32
def fsod_prototype_sums(
    ref_feats: torch.Tensor,
    ref_masks: List[torch.Tensor],
    ref_labels: List[torch.Tensor],
    size: Tuple[int, int],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class feature sums and pixel counts over every reference instance (FSOD fork).

    Kept separate from the division so that references encoded in several batches can be
    accumulated (``inference_fsod/prototype_cache.py``). Every instance adds its own pixels:
    where two instances of a class overlap, the pixel counts twice (not a union, spec §2.4).

    Args:
        ref_feats: (K, C, h, w) reference features.
        ref_masks: K tensors (n_k, H, W) at the padded image size.
        ref_labels: K int64 tensors (n_k,), class id of every mask.
        size: (mh, mw) pooling resolution.
    Returns:
        labels (nc,) unique class ids in order of first appearance (official), sums (nc, C) of
        masked features, counts (nc,) of mask pixels (bilinearly resized masks, > 0; 0 for a
        class whose masks are all empty).
    """
    if not ref_masks:
        raise ValueError("FSOD pooling needs at least one reference with a mask")
    all_labels = torch.cat(ref_labels)
    labels = torch.tensor(list(dict.fromkeys(all_labels.tolist())), dtype=all_labels.dtype,
                          device=all_labels.device)
    sums = ref_feats.new_zeros((len(labels), ref_feats.shape[1]))
    counts = ref_feats.new_zeros((len(labels),))
    for f, m, lab in zip(ref_feats, ref_masks, ref_labels):
        with torch.no_grad():
            small = F.interpolate(m[None].float(), size=size, mode="bilinear", align_corners=False)
            owner = (lab[:, None] == labels[None]).to(ref_feats.dtype)
            # (nc, mh, mw): how many instances of each class cover each pixel.
            weight = torch.einsum("iq,ihw->qhw", owner, (small[0] > 0).to(ref_feats.dtype))
            counts = counts + weight.sum(dim=(-2, -1))
        feat = F.interpolate(f[None], size=size, mode="bilinear", align_corners=False)[0]
        sums = sums + torch.einsum("chw,qhw->qc", feat, weight)
    return labels, sums, counts


@register_reference_pooling("fsod")
def pool_class_prototypes(
    ref_feats: torch.Tensor,
    ref_masks: List[torch.Tensor],
    ref_labels: List[torch.Tensor],
    size: Tuple[int, int],
    pooling: MaskPooling,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """No ID tokens, one prototype per class (FSOD fork, official ``use_id_query: False``).

    prototype(c) = sum over the instances i of class c of sum_hw feat * mask_i
    / (sum_i area(mask_i) + 1e-8), over all references jointly (spec §2.4).

    Args:
        ref_feats: (K, C, h, w) reference features.
        ref_masks: K tensors (n_k, H, W) at the padded image size.
        ref_labels: K int64 tensors (n_k,), class id of every mask.
        size: (mh, mw) pooling resolution.
        pooling: unused (the pooling spans all references); kept for the common signature.
    Returns:
        id_tokens (1, 0, C), sem_tokens (1, nc, C), id_labels (0,), sem_labels (nc,) in order of
        first appearance; a class whose masks are all empty gets a zero prototype.
    """
    labels, sums, counts = fsod_prototype_sums(ref_feats, ref_masks, ref_labels, size)
    sem_tokens = (sums / (counts[:, None] + 1e-8))[None]
    id_tokens = ref_feats.new_zeros((1, 0, ref_feats.shape[1]))
    return id_tokens, sem_tokens, labels.new_zeros((0,)), labels

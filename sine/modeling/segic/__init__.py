"""Building blocks of the SegIC model (spec ../shared/spec/SegIC.md).

``prompt_encoder`` and ``two_way_decoder`` need the ``segment-anything`` package and
``text_encoder`` needs ``transformers`` (the ``segic`` extra); they are imported on use.
"""
from .instructions import (
    coarse_masks,
    entity_points,
    entity_tokens,
    mask_pool,
    merge_object_logits,
    pick_memory_entries,
    similarity_maps,
    top1_points,
)

__all__ = [
    "coarse_masks",
    "entity_points",
    "entity_tokens",
    "mask_pool",
    "merge_object_logits",
    "pick_memory_entries",
    "similarity_maps",
    "top1_points",
]

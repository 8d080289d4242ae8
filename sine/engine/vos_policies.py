"""Named policies of the video predictor: which memory frames an object keeps and reads, and how
the per-object predictions of a frame become one label map.

Two official protocols differ only there (the model call is the same surface
``reference_tokens(..., pooling="vos")`` + ``segment(outputs={"id"})``):

* memory ``"ranked"`` (SINE, spec §7.3): a :class:`MemoryBank` of ``MODEL.SINE.VOS.MEMORY_LEN``
  frames ranked by decayed score, the ground-truth frame pinned; the frame where an object is
  given is decoded too and its prediction joins the memory. Masks stored at the work size.
* memory ``"first_latest"`` (SegIC, SegIC spec §1.11): the first-frame ground truth and the most
  recent prediction, nothing else; the frame where an object is given is not decoded for it (its
  output is the ground truth brought back to the frame size). The prediction stored is the
  model-resolution mask on the padded canvas (``pred_masks_input``, logit > 0), from which the
  model pools prototypes.
* merge ``"highest_id"`` (SINE): binary masks, the highest object id wins on overlaps.
* merge ``"max_sigmoid"`` (SegIC): ``(argmax_k((l_k > 0) * sigmoid(l_k)) + 1) * any_k(l_k > 0)``
  on the per-object logits; masks are exclusive.

Selected by ``MODEL.SINE.VOS.MEMORY_POLICY`` and ``MODEL.SINE.VOS.MERGE`` (see
``configs/vos/segic_davis17.yaml``); new policies register with :data:`VOS_MEMORY_POLICIES` /
:data:`VOS_MERGE_POLICIES`.
"""
from typing import Callable, Dict, List, Optional

import torch

from ..modeling.segic.instructions import merge_object_logits
from .memory_bank import MemoryBank

__all__ = ["FirstLatestMemory", "RankedMemory", "VOS_MEMORY_POLICIES", "VOS_MERGE_POLICIES",
           "build_vos_policies", "merge_highest_id", "merge_max_sigmoid", "register"]

#: Memory policies of the video predictor: name -> class built from the config.
VOS_MEMORY_POLICIES: Dict[str, Callable] = {}
#: Merges of per-object predictions: name -> fn(ids, masks (n, h, w) bool, logits (n, h, w) or
#: None) -> {id: (h, w) bool}.
VOS_MERGE_POLICIES: Dict[str, Callable] = {}


def register(registry: Dict[str, Callable], name: str):
    """Decorator adding a policy to ``registry`` under ``name`` (a name is taken once)."""
    def add(obj):
        if name in registry:
            raise KeyError(f"a VOS policy named {name!r} is already registered")
        registry[name] = obj
        return obj
    return add


@register(VOS_MEMORY_POLICIES, "ranked")
class RankedMemory:
    """SINE's memory: ``MemoryBank`` from ``MODEL.SINE.VOS.*``; given frames decoded."""

    #: the frame where an object is given is decoded for it and its prediction stored
    decode_given_frame = True

    def __init__(self, cfg):
        self.bank_args = MemoryBank.from_config(cfg)

    def new_bank(self) -> MemoryBank:
        return MemoryBank(**self.bank_args)

    def memory_mask(self, result, row: int, output_mask: torch.Tensor, content_size):
        """Mask stored for the object of ``result`` row ``row`` (None: its output was not
        decoded): the output mask at the work size, resized to the model content size."""
        from .video_predictor import _resize_mask

        return _resize_mask(output_mask, content_size)


@register(VOS_MEMORY_POLICIES, "first_latest")
class FirstLatestMemory(RankedMemory):
    """SegIC's memory: the ground-truth frame and the latest prediction (a bank of two pinned
    entries, so nothing is ranked); given frames are not decoded."""

    decode_given_frame = False

    def __init__(self, cfg):
        self.bank_args = dict(memory_len=2, fix_first_frame=True, fix_last_frame=True)

    def memory_mask(self, result, row, output_mask, content_size):
        # The whole padded canvas, as officially: positives in the padding are pooled too.
        return result.pred_masks_input[row]


@register(VOS_MERGE_POLICIES, "highest_id")
def merge_highest_id(ids: List[int], masks: torch.Tensor, logits: Optional[torch.Tensor]
                     ) -> Dict[int, torch.Tensor]:
    """SINE: each object keeps its own binary mask (n, h, w) (overlaps are resolved by the
    highest id when the label map is drawn)."""
    return dict(zip(ids, masks))


@register(VOS_MERGE_POLICIES, "max_sigmoid")
def merge_max_sigmoid(ids: List[int], masks: torch.Tensor, logits: Optional[torch.Tensor]
                      ) -> Dict[int, torch.Tensor]:
    """SegIC: exclusive masks from the per-object logits (n, h, w)."""
    if logits is None:
        raise ValueError("MODEL.SINE.VOS.MERGE 'max_sigmoid' needs per-object logits "
                         "(pred_mask_logits of the model's 'id' output); this model gives none: "
                         "use 'highest_id'")
    labels = merge_object_logits(logits)
    return {i: labels == k + 1 for k, i in enumerate(ids)}


def build_vos_policies(cfg):
    """(memory policy, merge function) named by ``MODEL.SINE.VOS.MEMORY_POLICY`` / ``MERGE``."""
    vos = cfg.MODEL.SINE.VOS
    for registry, name, key in ((VOS_MEMORY_POLICIES, vos.MEMORY_POLICY, "MEMORY_POLICY"),
                                (VOS_MERGE_POLICIES, vos.MERGE, "MERGE")):
        if name not in registry:
            raise ValueError(f"MODEL.SINE.VOS.{key} {name!r} is unknown; choose one of "
                             f"{sorted(registry)}")
    return VOS_MEMORY_POLICIES[vos.MEMORY_POLICY](cfg), VOS_MERGE_POLICIES[vos.MERGE]

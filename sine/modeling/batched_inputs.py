"""detectron2-style input dicts of in-context models, validated and brought to model layout.

Model-independent: every :class:`~sine.modeling.in_context.InContextSegmenter` reads the same
dicts (``SINE.forward``, ``InContextSegmenter.segment_batch``, the FSS episodes), so the checks
and their messages live here once.
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.structures import BitMasks

__all__ = ["InContextBatch", "padded_size_for", "prepare_batch"]


@dataclass
class InContextBatch:
    """A batch in model layout: normalised images zero-padded to one square size S.

    Fields (B targets, R references in total, ``num_refs[b]`` of them for target b, in order):
        tar_images: (B, 3, S, S); ref_images: (R, 3, S, S).
        ref_masks / ref_labels / ref_ids: R tensors (n_r, S, S) bool, (n_r,) int64, (n_r,) int64.
        image_sizes: (h, w) content size of every target; output_sizes: (height, width).
        targets: per target {"labels", "masks" (n, S, S) bool, "ids", "ref_ids"} or None.
        ref_names: per reference, the class name of each mask (its optional "class_names"
            entry; e.g. SegIC's text prompt) or None.
    """

    tar_images: torch.Tensor
    ref_images: torch.Tensor
    num_refs: List[int]
    ref_masks: List[torch.Tensor]
    ref_labels: List[torch.Tensor]
    ref_ids: List[torch.Tensor]
    image_sizes: List[Tuple[int, int]]
    output_sizes: List[Tuple[int, int]]
    targets: Optional[List[Dict[str, torch.Tensor]]]
    ref_names: List[Optional[List[str]]] = field(default_factory=list)

    def names_of(self, b: int) -> Optional[List[Optional[str]]]:
        """Class names of target b's reference masks in order (None where a reference gives
        none), or None when no reference of target b names its masks."""
        refs = self.refs_of(b)
        given = self.ref_names[refs] if self.ref_names else []
        if not any(n is not None for n in given):
            return None
        return [name for names, masks in zip(given, self.ref_masks[refs])
                for name in (names if names is not None else [None] * len(masks))]

    @property
    def padded_size(self) -> Tuple[int, int]:
        return tuple(self.tar_images.shape[-2:])

    def refs_of(self, b: int) -> slice:
        """Index range of target b's references in the flat reference lists."""
        start = sum(self.num_refs[:b])
        return slice(start, start + self.num_refs[b])


def padded_size_for(batched_inputs: List[Dict], pad_size: int, size_divisibility: int) -> int:
    """Square size of a batch: ``pad_size``, or the next multiple of ``size_divisibility``
    above a larger image side."""
    sides = [
        max(d["image"].shape[-2:])
        for x in batched_inputs
        for d in [x] + list(x.get("references", []))
    ]
    div = size_divisibility
    return max(pad_size, int(math.ceil(max(sides) / div)) * div)


def prepare_batch(
    batched_inputs: List[Dict],
    preprocess_image: Callable[[torch.Tensor, int], torch.Tensor],
    pad_size: int,
    size_divisibility: int,
    device: torch.device,
    with_targets: bool,
) -> InContextBatch:
    """Validate ``batched_inputs`` (see ``SINE.forward``) and convert them to model layout.

    Args:
        preprocess_image: the model's ``(uint8 (3, H, W), S) -> (3, S, S)`` normalisation.
        pad_size, size_divisibility: the model's square size and patch size.
        with_targets: also read the targets' ground truth (training).
    """
    if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
        raise ValueError("batched_inputs must be a non-empty list of dicts (one per target).")
    for b, x in enumerate(batched_inputs):
        _check_target_dict(x, b)
    size = padded_size_for(batched_inputs, pad_size, size_divisibility)
    tar_images, ref_images, num_refs = [], [], []
    ref_masks, ref_labels, ref_ids, ref_names, targets = [], [], [], [], []
    for b, x in enumerate(batched_inputs):
        tar_images.append(preprocess_image(x["image"], size))
        num_refs.append(len(x["references"]))
        for k, ref in enumerate(x["references"]):
            where = f"batched_inputs[{b}]['references'][{k}]"
            masks, labels, ids = _read_instances(ref, where, is_reference=True)
            ref_images.append(preprocess_image(ref["image"], size))
            ref_masks.append(_pad_masks(masks, size).to(device))
            ref_labels.append(labels.to(device))
            ref_ids.append(ids.to(device))
            ref_names.append(_read_names(ref, len(masks), where))
        if with_targets:
            masks, labels, ids = _read_instances(x, f"batched_inputs[{b}]", False)
            targets.append({
                "labels": labels.to(device),
                "masks": _pad_masks(masks, size).to(device),
                "ids": ids.to(device),
                "ref_ids": torch.cat(ref_ids[-num_refs[-1]:]),
            })
    return InContextBatch(
        tar_images=torch.stack(tar_images),
        ref_images=torch.stack(ref_images),
        num_refs=num_refs,
        ref_masks=ref_masks,
        ref_labels=ref_labels,
        ref_ids=ref_ids,
        image_sizes=[tuple(x["image"].shape[-2:]) for x in batched_inputs],
        output_sizes=[_output_size(x) for x in batched_inputs],
        targets=targets if with_targets else None,
        ref_names=ref_names,
    )


def _read_names(ref: Dict, n: int, where: str) -> Optional[List[str]]:
    """The optional "class_names" of a reference: one string per mask."""
    names = ref.get("class_names")
    if names is None:
        return None
    if isinstance(names, str) or len(names) != n or not all(isinstance(x, str) for x in names):
        raise ValueError(f"{where}['class_names'] must be a list of {n} strings (one class name "
                         f"per mask), got {names!r}")
    return list(names)


def _check_image(image, where: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            f"{where}['image'] must be an RGB image tensor of shape (3, H, W); got {got}. "
            "Convert grayscale/RGBA images to 3-channel RGB in CHW layout."
        )
    if image.dtype != torch.uint8:
        raise ValueError(
            f"{where}['image'] must be uint8 with values 0-255; got {image.dtype}. Pass the raw "
            "(resized) RGB image: the model normalises and pads it itself."
        )


def _check_target_dict(x: Dict, b: int) -> None:
    where = f"batched_inputs[{b}]"
    if not isinstance(x, dict) or "image" not in x:
        raise ValueError(f"{where} must be a dict with an 'image' entry.")
    _check_image(x["image"], where)
    refs = x.get("references")
    if not refs:
        raise ValueError(
            f"{where} has no 'references': give at least one reference dict "
            "{'image', 'instances'} per target."
        )
    for k, ref in enumerate(refs):
        if not isinstance(ref, dict) or "image" not in ref:
            raise ValueError(f"{where}['references'][{k}] must be a dict with an 'image' entry.")
        _check_image(ref["image"], f"{where}['references'][{k}]")


def _read_instances(x: Dict, where: str, is_reference: bool):
    """(masks (n, H, W) bool, classes (n,) int64, ids (n,) int64) of ``x['instances']``."""
    inst = x.get("instances")
    if inst is None or not inst.has("gt_masks") or not inst.has("gt_classes"):
        role = "Each reference" if is_reference else "In training, each target"
        raise ValueError(
            f"{where} needs 'instances' with gt_masks and gt_classes. {role} must carry its masks."
        )
    masks = inst.gt_masks.tensor if isinstance(inst.gt_masks, BitMasks) else inst.gt_masks
    masks = torch.as_tensor(masks)
    image_hw = tuple(x["image"].shape[-2:])
    if masks.dim() != 3 or tuple(masks.shape[-2:]) != image_hw:
        raise ValueError(
            f"{where}: gt_masks have shape {tuple(masks.shape)} but the image is {image_hw}; "
            "masks must be (N, H, W) at the image size (resize them with the image, no padding)."
        )
    masks = masks.bool()
    n = masks.shape[0]
    classes = torch.as_tensor(inst.gt_classes).long()
    if inst.has("ins_ids"):
        ids = torch.as_tensor(inst.ins_ids).long()
    elif is_reference:
        ids = torch.arange(n)  # only needed for training and for pred_ids
    else:
        raise ValueError(f"{where}: training targets need 'ins_ids' in their instances.")
    if classes.shape != (n,) or ids.shape != (n,):
        raise ValueError(
            f"{where}: {n} masks but gt_classes {tuple(classes.shape)} / ins_ids "
            f"{tuple(ids.shape)}; give one class and one instance id per mask."
        )
    if is_reference:
        _check_reference_masks(masks, where)
    return masks, classes, ids


def _check_reference_masks(masks: torch.Tensor, where: str) -> None:
    if masks.shape[0] == 0:
        raise ValueError(
            f"{where} has no mask: every reference needs at least one mask (drop references "
            "without annotations)."
        )
    empty = torch.where(~masks.flatten(1).any(dim=1))[0].tolist()
    if empty:
        raise ValueError(
            f"{where}: reference mask(s) {empty} are empty (all False); remove them, they give "
            "no prototype."
        )


def _pad_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    padded = masks.new_zeros((masks.shape[0], size, size))
    padded[:, : masks.shape[1], : masks.shape[2]] = masks
    return padded


def _output_size(x: Dict) -> Tuple[int, int]:
    h, w = x["image"].shape[-2:]
    return int(x.get("height", h)), int(x.get("width", w))

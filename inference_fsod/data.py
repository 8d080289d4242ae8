"""Image and mask preparation of the FSOD protocol (spec §7.2).

Official test augmentation: ``ResizeShortestEdge(896, max_size=896)`` (PIL bilinear), i.e. the
longer side becomes the pad size, for references and test images alike. Reference masks are
rasterised at the resized size (polygons) or resized with the image (RLE), as detectron2's
mappers do.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["FSODTestMapper", "group_references_by_image", "read_reference_image"]


def _resize(image: np.ndarray, size: int) -> Tuple[np.ndarray, T.Transform]:
    """(H, W, 3) uint8 -> image whose longer side is ``size`` (shorter side <= size)."""
    aug_input = T.AugInput(image)
    transform = T.ResizeShortestEdge(size, max_size=size)(aug_input)
    return aug_input.image, transform


def _to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class FSODTestMapper:
    """Test record -> model input: resized uint8 image plus the size to predict at."""

    def __init__(self, size: int):
        """
        Args:
            size: longer side after resizing (``MODEL.SINE.PAD_SIZE``; 896 officially).
        """
        self.size = size

    def __call__(self, record: Dict) -> Dict:
        """
        Returns:
            dict with "image" uint8 (3, h, w) RGB, "height"/"width" (original size, where the
            results are produced), "image_id" and "file_name".
        """
        image = utils.read_image(record["file_name"], format="RGB")
        utils.check_image_size(record, image)
        resized, _ = _resize(image, self.size)
        return {
            "image": _to_chw_tensor(resized),
            "height": image.shape[0],
            "width": image.shape[1],
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }


def group_references_by_image(records: List[Dict]) -> List[Dict]:
    """Merge reference records of the same image file, so that each image is encoded once.

    The official loader has one record per annotation and re-encodes an image for each; the
    features are the same, so pooling gives the same prototypes.
    """
    grouped = {}
    for record in records:
        key = record["file_name"]
        if key not in grouped:
            grouped[key] = dict(record, annotations=[])
        grouped[key]["annotations"].extend(record["annotations"])
    return list(grouped.values())


def read_reference_image(
    record: Dict, size: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read a reference record, resize it like the test images and rasterise its masks.

    Returns:
        image uint8 (3, h, w), masks (n, h, w) bool, labels (n,) int64 (contiguous class ids).
        Masks that vanish at the resized size are dropped.
    """
    image = utils.read_image(record["file_name"], format="RGB")
    utils.check_image_size(record, image)
    resized, transform = _resize(image, size)
    hw = resized.shape[:2]
    # transform_instance_annotations edits its argument: give it copies.
    annos = [utils.transform_instance_annotations(dict(a), [transform], hw)
             for a in record["annotations"]]
    instances = utils.annotations_to_instances(annos, hw, mask_format="bitmask")
    masks = instances.gt_masks.tensor.bool()
    labels = instances.gt_classes.long()
    keep = masks.flatten(1).any(dim=1)
    return _to_chw_tensor(resized), masks[keep], labels[keep]

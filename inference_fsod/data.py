"""Image and mask preparation of the FSOD protocol (spec §7.2).

Official test augmentation: ``ResizeShortestEdge(896, max_size=896)`` (PIL bilinear), i.e. the
longer side becomes the pad size, for references and test images alike. Reference masks are
rasterised at the resized size (polygons) or resized with the image (RLE), as detectron2's
mappers do; empty reference masks are kept (official, spec §2.4).

Channel order: ``INPUT.FORMAT``. The official FSOD mapper reads detectron2's default "BGR" and
the model normalises that array with the RGB ImageNet mean/std (spec §7.2), so the paper
configs (configs/fsod/*.yaml) set "BGR"; "RGB" is what SINE was trained on.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["FSODTestMapper", "IMAGE_FORMATS", "group_references_by_image", "read_reference_image"]

IMAGE_FORMATS = ("RGB", "BGR")


def _read(record: Dict, image_format: str) -> np.ndarray:
    """(H, W, 3) uint8 in ``image_format`` channel order."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"INPUT.FORMAT must be one of {IMAGE_FORMATS} for FSOD, got "
                         f"{image_format!r}")
    image = utils.read_image(record["file_name"], format=image_format)
    utils.check_image_size(record, image)
    return image


def _resize(image: np.ndarray, size: int) -> Tuple[np.ndarray, T.Transform]:
    """(H, W, 3) uint8 -> image whose longer side is ``size`` (shorter side <= size)."""
    aug_input = T.AugInput(image)
    transform = T.ResizeShortestEdge(size, max_size=size)(aug_input)
    return aug_input.image, transform


def _to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class FSODTestMapper:
    """Test record -> model input: resized uint8 image plus the size to predict at."""

    def __init__(self, size: int, image_format: str = "RGB"):
        """
        Args:
            size: longer side after resizing (``MODEL.SINE.PAD_SIZE``; 896 officially).
            image_format: channel order fed to the model (``INPUT.FORMAT``; "BGR" officially).
        """
        self.size = size
        self.image_format = image_format

    def __call__(self, record: Dict) -> Dict:
        """
        Returns:
            dict with "image" uint8 (3, h, w) in ``image_format`` order, "height"/"width"
            (original size, where the results are produced), "image_id" and "file_name".
        """
        image = _read(record, self.image_format)
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
    record: Dict, size: int, image_format: str = "RGB"
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read a reference record, resize it like the test images and rasterise its masks.

    Returns:
        image uint8 (3, h, w) in ``image_format`` order, masks (n, h, w) bool, labels (n,) int64
        (contiguous class ids), one per annotation. Empty masks (e.g. a polygon that vanishes
        at the resized size) are kept: officially the mapper's ``filter_empty_instances``
        result is discarded, an empty mask adds nothing to its class's prototype.
    """
    image = _read(record, image_format)
    resized, transform = _resize(image, size)
    hw = resized.shape[:2]
    # transform_instance_annotations edits its argument: give it copies.
    annos = [utils.transform_instance_annotations(dict(a), [transform], hw)
             for a in record["annotations"]]
    instances = utils.annotations_to_instances(annos, hw, mask_format="bitmask")
    return (_to_chw_tensor(resized), instances.gt_masks.tensor.bool(),
            instances.gt_classes.long())

"""Dataset mappers of the LoRA transfer: one target image, no references (the classes are the
model's learned prototypes)."""
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .in_context_pair_mapper import build_pair_augmentation, read_training_view

logger = logging.getLogger(__name__)

__all__ = ["TransferMapper", "TransferTestMapper"]


class TransferMapper:
    """Training: large-scale jitter of the image and its ground truth (semantic labels: one
    instance per class; panoptic: every segment; instances: every annotation).

    Output: ``{"image": uint8 (3, H, W), "height", "width", "instances": Instances(gt_masks
    (N, H, W) bool, gt_classes (N,) contiguous dataset ids, ins_ids (N,))}``, or None (detectron2
    then draws another image) when the crop keeps no instance.
    """

    @configurable
    def __init__(self, *, augmentations, image_format="RGB", skip_bad_images=False):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.skip_bad_images = skip_bad_images
        logger.info(f"[TransferMapper] augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg):
        return {"augmentations": build_pair_augmentation(cfg), "image_format": cfg.INPUT.FORMAT,
                "skip_bad_images": cfg.INPUT.SKIP_BAD_IMAGES}

    def __call__(self, record):
        view = read_training_view(record, self.augmentations, self.image_format,
                                  self.skip_bad_images)
        if view is None or len(view[1]) == 0:
            return None
        image, instances = view
        return {"image": image, "height": image.shape[1], "width": image.shape[2],
                "instances": instances}


class TransferTestMapper:
    """Evaluation, single scale: the longer side resized to ``image_size``; results are asked at
    the original size (``height``/``width``), where the evaluators compare them."""

    @configurable
    def __init__(self, *, image_size, image_format="RGB"):
        self.image_size = image_size
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg):
        return {"image_size": cfg.INPUT.IMAGE_SIZE, "image_format": cfg.INPUT.FORMAT}

    def __call__(self, record):
        image = utils.read_image(record["file_name"], format=self.image_format)
        height, width = image.shape[:2]
        scale = self.image_size / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = T.ResizeTransform(height, width, *size).apply_image(image)
        out = {k: record[k] for k in ("file_name", "image_id") if k in record}
        out.update(height=height, width=width,
                   image=torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))))
        return out

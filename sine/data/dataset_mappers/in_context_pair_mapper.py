"""Turn detectron2 dataset records into SINE reference/target training pairs (spec §6.4)."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances

from ..datasets import ensure_instance_ids, load_sam_segmentations

logger = logging.getLogger(__name__)

__all__ = ["InContextPairMapper", "build_pair_augmentation", "PairSamplingError",
           "read_training_view"]


class PairSamplingError(RuntimeError):
    """Raised when no valid reference/target pair can be drawn (e.g. an empty dataset)."""


def build_pair_augmentation(cfg):
    """Large-scale jitter of the official pipeline: flip -> ResizeScale -> FixedSizeCrop."""
    size = cfg.INPUT.IMAGE_SIZE
    augs = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    augs += [
        T.ResizeScale(cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE, size, size),
        # No padding here: the model pads every image to MODEL.SINE.PAD_SIZE itself.
        T.FixedSizeCrop(crop_size=(size, size), pad=False),
    ]
    return augs


class InContextPairMapper:
    """Draw a reference/target pair for one ``{"dataset": d, "category_id": c}`` item.

    With probability ``crop_ratio`` the reference and the target are two independently augmented
    views of the same image (shared instance ids give ID supervision); otherwise they are two
    images that both contain category ``c``. The reference keeps all its instances, sorted by
    category (stable); the target keeps those whose category survives in the augmented reference.
    Draws are repeated until both sides are non-empty, at most ``max_attempts`` times.

    Output (the model's input format)::

        {"image": uint8 (3, H, W), "height": H, "width": W,
         "instances": Instances(gt_masks (N, H, W) bool, gt_classes (N,), ins_ids (N,)),
         "references": [{"image": uint8 (3, h, w), "instances": Instances(...)}],
         "pair_type": "same_image" | "cross_image"}
    """

    @configurable
    def __init__(
        self,
        *,
        indexes,
        augmentations,
        crop_ratio=0.5,
        image_format="RGB",
        max_attempts=100,
        skip_bad_images=False,
    ):
        """
        Args:
            indexes (list[CategoryIndex]): one per training dataset, in ``DATASETS.TRAIN`` order.
            augmentations (list[Augmentation]): applied independently to reference and target.
            crop_ratio (float): probability of a same-image (ID) pair.
            image_format (str): detectron2 image format passed to ``read_image``.
            max_attempts (int): draws before giving up with :class:`PairSamplingError`.
            skip_bad_images (bool): on an unreadable image, log it and draw again instead of
                raising.
        """
        self.indexes = indexes
        self.augmentations = T.AugmentationList(augmentations)
        self.crop_ratio = crop_ratio
        self.image_format = image_format
        self.max_attempts = max_attempts
        self.skip_bad_images = skip_bad_images
        logger.info(f"[InContextPairMapper] augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, indexes):
        return {
            "indexes": indexes,
            "augmentations": build_pair_augmentation(cfg),
            "crop_ratio": cfg.INPUT.CROP_RATIO,
            "image_format": cfg.INPUT.FORMAT,
            "skip_bad_images": cfg.INPUT.SKIP_BAD_IMAGES,
        }

    def __call__(self, item):
        index = self.indexes[item["dataset"]]
        category = item["category_id"]
        for _ in range(self.max_attempts):
            pair = self._draw_pair(index, category)
            if pair is not None:
                return pair
            # Official behaviour: redraw everything (a fresh category too) until both are valid.
            category = index.random_category()
        raise PairSamplingError(
            f"no valid reference/target pair after {self.max_attempts} draws from dataset "
            f"'{index.name}': its images have no usable (non-crowd, non-empty) instances"
        )

    def _draw_pair(self, index, category):
        same_image = np.random.rand() < self.crop_ratio or index.num_images(category) < 2
        ref_idx, tar_idx = index.sample_images(category, distinct=not same_image)
        ref = self._load_view(index.record(ref_idx))
        if ref is None:
            return None
        ref_image, ref_inst = ref
        ref_inst = ref_inst[torch.argsort(ref_inst.gt_classes, stable=True)]
        if len(ref_inst) == 0:
            return None
        tar = self._load_view(index.record(tar_idx))
        if tar is None:
            return None
        tar_image, tar_inst = tar
        keep = torch.isin(tar_inst.gt_classes, ref_inst.gt_classes)
        tar_inst = tar_inst[keep]
        if len(tar_inst) == 0:
            return None
        return {
            "image": tar_image,
            "height": tar_image.shape[1],
            "width": tar_image.shape[2],
            "instances": tar_inst,
            "references": [{"image": ref_image, "instances": ref_inst}],
            "pair_type": "same_image" if same_image else "cross_image",
        }

    def _load_view(self, record):
        """Read and augment one record. Returns ``(uint8 (3,H,W), Instances)`` or None."""
        return read_training_view(record, self.augmentations, self.image_format,
                                  self.skip_bad_images)


def read_training_view(record, augmentations, image_format="RGB", skip_bad_images=False):
    """Read one detectron2 record, augment it and build its ground-truth ``Instances``.

    Instances come from the panoptic PNG (every non-crowd segment, id = segment id), else from
    the semantic label PNG (one instance per class present, id = class + 1), else from
    ``annotations`` (id = annotation id). Returns ``(uint8 (3, H, W), Instances with gt_masks,
    gt_classes, ins_ids)``, or None for an unreadable image when ``skip_bad_images``.
    """
    record = ensure_instance_ids(load_sam_segmentations(copy.deepcopy(record)))
    try:
        image = utils.read_image(record["file_name"], format=image_format)
        utils.check_image_size(record, image)
    except Exception as e:
        if not skip_bad_images:
            raise type(e)(
                f"cannot read training image {record['file_name']}: {e} "
                "(set INPUT.SKIP_BAD_IMAGES True to skip such images)"
            ) from e
        logger.warning(f"skipping unreadable image {record['file_name']}: {e}")
        return None
    pan_ids = _read_panoptic_ids(record)
    sem_labels = None
    if pan_ids is None and "sem_seg_file_name" in record:
        sem_labels = utils.read_image(record["sem_seg_file_name"]).astype(np.float32)
    aug_input = T.AugInput(image, sem_seg=pan_ids if pan_ids is not None else sem_labels)
    transforms = augmentations(aug_input)
    image = aug_input.image
    if pan_ids is not None:
        instances = _panoptic_instances(record, aug_input.sem_seg, image.shape[:2])
    elif sem_labels is not None:
        instances = _semantic_instances(aug_input.sem_seg, image.shape[:2])
    else:
        instances = _annotation_instances(record, transforms, image.shape[:2])
    chw = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return chw, instances


def _semantic_instances(labels, image_size, ignore_label=255):
    """One instance per class of a semantic label map (id = class + 1; ``ignore_label`` skipped)."""
    labels = np.rint(labels).astype(np.int64)
    classes = [int(c) for c in np.unique(labels) if c != ignore_label]
    masks = torch.from_numpy(np.stack([labels == c for c in classes])) if classes else (
        torch.zeros((0, *image_size), dtype=torch.bool)
    )
    classes = torch.tensor(classes, dtype=torch.int64)
    return _make_instances(image_size, masks, classes, classes + 1)


def _annotation_instances(record, transforms, image_size):
    annos = [
        utils.transform_instance_annotations(a, transforms, image_size)
        for a in record.get("annotations", [])
        if a.get("iscrowd", 0) == 0
    ]
    instances = utils.annotations_to_instances(annos, image_size, mask_format="bitmask")
    masks = instances.gt_masks.tensor if len(annos) else torch.zeros((0, *image_size), dtype=bool)
    ids = torch.tensor([a["id"] for a in annos], dtype=torch.int64)
    return _make_instances(image_size, masks, instances.gt_classes, ids)


def _read_panoptic_ids(record):
    """Segment-id map of a panoptic record as float32 (exact for ids < 2**24), else None."""
    if "pan_seg_file_name" not in record:
        return None
    rgb = utils.read_image(record["pan_seg_file_name"], "RGB").astype(np.int64)
    # COCO panoptic PNG encoding: id = R + 256 * G + 256^2 * B.
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    return ids.astype(np.float32)


def _panoptic_instances(record, ids_map, image_size):
    segments = [s for s in record["segments_info"] if not s.get("iscrowd", 0)]
    ids_map = np.rint(ids_map).astype(np.int64)
    masks = torch.from_numpy(np.stack([ids_map == s["id"] for s in segments])) if segments else (
        torch.zeros((0, *image_size), dtype=torch.bool)
    )
    classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    ids = torch.tensor([s["id"] for s in segments], dtype=torch.int64)
    return _make_instances(image_size, masks, classes, ids)


def _make_instances(image_size, masks, classes, ids):
    """Instances with non-empty masks only (augmentation can crop an instance away)."""
    instances = Instances(image_size)
    instances.gt_masks = masks.bool()
    instances.gt_classes = classes.long()
    instances.ins_ids = ids.long()
    return instances[masks.flatten(1).any(dim=1)] if len(masks) else instances

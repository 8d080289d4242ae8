"""Turn detectron2 dataset records into reference/target training pairs.

Two sampling policies (``INPUT.PAIR_POLICY``), one mapper:

* ``"sine"`` (SINE spec §6.4): same-image (ID) or cross-image pairs with all instances;
* ``"segic"`` (SegIC spec §1.10, §1.14): per dataset (``DATASETS.TRAIN_SAMPLE_KINDS``) a
  *semantic* pair (one class, a different image holding it as the reference), an *instance* pair
  (two augmented views of one image) or a *box* pair (an instance pair whose masks are the
  boxes, trained with the projection loss).
"""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances

from ..datasets import ensure_instance_ids, load_sam_segmentations

logger = logging.getLogger(__name__)

__all__ = [
    "InContextPairMapper",
    "PAIR_POLICIES",
    "SAMPLE_KINDS",
    "PairSamplingError",
    "build_pair_augmentation",
    "build_segic_view_augmentation",
    "read_training_view",
]

PAIR_POLICIES = ("sine", "segic")
#: SegIC sample kind of a training dataset (DATASETS.TRAIN_SAMPLE_KINDS).
SAMPLE_KINDS = ("semantic", "instance", "box")


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


def build_segic_view_augmentation(cfg):
    """SegIC's instance-pair view (spec §1.14): RandomResizedCrop (bicubic) to IMAGE_SIZE,
    ColorJitter with a probability, horizontal flip. Call as ``aug(image (3,H,W) uint8,
    tv_tensors.Mask (N,H,W))``; masks are resized with nearest neighbour."""
    from torchvision.transforms import InterpolationMode, v2

    c = cfg.INPUT.SEGIC
    return v2.Compose([
        v2.RandomResizedCrop(cfg.INPUT.IMAGE_SIZE, scale=tuple(c.CROP_SCALE),
                             interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomApply([v2.ColorJitter(*c.COLOR_JITTER)], p=c.COLOR_JITTER_PROB),
        v2.RandomHorizontalFlip(c.FLIP_PROB),
    ])


def _dataset_class_names(name):
    """Class names by contiguous id of a registered dataset: detectron2's standard panoptic
    metadata lists every class in ``stuff_classes``, instance datasets in ``thing_classes``."""
    meta = MetadataCatalog.get(name)
    return list(meta.get("stuff_classes", None) or meta.get("thing_classes", None) or [])


def _sample_kinds(cfg):
    kinds = list(cfg.DATASETS.TRAIN_SAMPLE_KINDS) or ["semantic"] * len(cfg.DATASETS.TRAIN)
    if len(kinds) != len(cfg.DATASETS.TRAIN):
        raise ValueError(f"DATASETS.TRAIN_SAMPLE_KINDS has {len(kinds)} entries for "
                         f"{len(cfg.DATASETS.TRAIN)} datasets in DATASETS.TRAIN")
    bad = [k for k in kinds if k not in SAMPLE_KINDS]
    if bad:
        raise ValueError(f"DATASETS.TRAIN_SAMPLE_KINDS: unknown kind(s) {bad}; use {SAMPLE_KINDS}")
    return kinds


class InContextPairMapper:
    """Draw a reference/target pair for one ``{"dataset": d, "category_id": c}`` item.

    With probability ``crop_ratio`` the reference and the target are two independently augmented
    views of the same image (shared instance ids give ID supervision); otherwise they are two
    images that both contain category ``c``. The reference keeps all its instances, sorted by
    category (stable); the target keeps those whose category survives in the augmented reference.
    Draws are repeated until both sides are non-empty, at most ``max_attempts`` times.

    With ``policy="segic"`` the pair is drawn by the dataset's sample kind instead:

    * "semantic": the union mask of category ``c`` in an image and in a *different* image
      holding ``c`` (the reference), both augmented like the SINE pairs; ``class_name`` is the
      class (SegIC's text prompt);
    * "instance": two views of one image (``view_augmentation``); the instances larger than
      ``min_instance_area`` pixels in both views, a random number ``randint(0, max_instances)``
      of them (0 -> 1); ``class_name`` None (the task-description prompt);
    * "box": as "instance", the masks being the filled boxes; ``box_masks`` True (projection
      loss).

    Output (the model's input format)::

        {"image": uint8 (3, H, W), "height": H, "width": W,
         "instances": Instances(gt_masks (N, H, W) bool, gt_classes (N,), ins_ids (N,)),
         "references": [{"image": uint8 (3, h, w), "instances": Instances(...)}],
         "pair_type": "same_image" | "cross_image" | "semantic" | "instance" | "box"
         ["class_name": str | None, "box_masks": bool]  (policy "segic")}
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
        policy="sine",
        sample_kinds=None,
        class_names=None,
        view_augmentation=None,
        min_instance_area=100,
        max_instances=19,
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
            policy (str): "sine" or "segic" (see the class docstring).
            sample_kinds (list[str]): "segic": the kind of each dataset ("semantic",
                "instance", "box"); default all "semantic".
            class_names (list[list[str]]): "segic": class names by contiguous id, per dataset.
            view_augmentation (callable): "segic" instance views
                (:func:`build_segic_view_augmentation`).
            min_instance_area (int): "segic": pixels an instance needs in both views.
            max_instances (int): "segic": most instances of one instance pair.
        """
        if policy not in PAIR_POLICIES:
            raise ValueError(f"INPUT.PAIR_POLICY {policy!r} unknown; use one of {PAIR_POLICIES}")
        if policy == "segic" and view_augmentation is None and set(sample_kinds or ()) - {
                "semantic"}:
            raise ValueError("instance/box pairs of the segic policy need a view_augmentation")
        self.indexes = indexes
        self.augmentations = T.AugmentationList(augmentations)
        self.crop_ratio = crop_ratio
        self.image_format = image_format
        self.max_attempts = max_attempts
        self.skip_bad_images = skip_bad_images
        self.policy = policy
        self.sample_kinds = list(sample_kinds or ["semantic"] * len(indexes))
        if len(self.sample_kinds) != len(indexes):
            raise ValueError(f"got {len(self.sample_kinds)} sample kinds for {len(indexes)} "
                             "datasets")
        self.class_names = class_names or [[] for _ in indexes]
        self.view_augmentation = view_augmentation
        self.min_instance_area = min_instance_area
        self.max_instances = max_instances
        logger.info(f"[InContextPairMapper] policy {policy}, augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, indexes):
        args = {
            "indexes": indexes,
            "augmentations": build_pair_augmentation(cfg),
            "crop_ratio": cfg.INPUT.CROP_RATIO,
            "image_format": cfg.INPUT.FORMAT,
            "skip_bad_images": cfg.INPUT.SKIP_BAD_IMAGES,
            "policy": cfg.INPUT.PAIR_POLICY,
        }
        if cfg.INPUT.PAIR_POLICY == "segic":
            args.update(
                sample_kinds=_sample_kinds(cfg),
                class_names=[_dataset_class_names(n) for n in cfg.DATASETS.TRAIN],
                view_augmentation=build_segic_view_augmentation(cfg),
                min_instance_area=cfg.INPUT.SEGIC.MIN_INSTANCE_AREA,
                max_instances=cfg.INPUT.SEGIC.MAX_INSTANCES,
            )
        return args

    def __call__(self, item):
        index = self.indexes[item["dataset"]]
        category = item["category_id"]
        for _ in range(self.max_attempts):
            if self.policy == "sine":
                pair = self._draw_pair(index, category)
            elif self.sample_kinds[item["dataset"]] == "semantic":
                pair = self._draw_semantic_pair(item["dataset"], index, category)
            else:
                pair = self._draw_view_pair(index, category,
                                            self.sample_kinds[item["dataset"]] == "box")
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
        return _pair(tar_image, tar_inst, ref_image, ref_inst,
                     pair_type="same_image" if same_image else "cross_image")

    def _draw_semantic_pair(self, d, index, category):
        """SegIC semantic pair: the union mask of ``category`` in two different images."""
        if index.num_images(category) < 2:
            return None
        ref_idx, tar_idx = index.sample_images(category, distinct=True)
        views = []
        for i in (tar_idx, ref_idx):
            view = self._load_view(index.record(i))
            if view is None:
                return None
            image, inst = view
            mask = inst.gt_masks[inst.gt_classes == category].any(dim=0)
            if not mask.any():  # cropped away by the augmentation
                return None
            label = torch.tensor([category])
            views.append((image, _make_instances(image.shape[1:], mask[None], label, label)))
        (tar_image, tar_inst), (ref_image, ref_inst) = views
        names = self.class_names[d]
        return _pair(tar_image, tar_inst, ref_image, ref_inst, pair_type="semantic",
                     class_name=names[category] if category < len(names) else None,
                     box_masks=False)

    def _draw_view_pair(self, index, category, box_masks):
        """SegIC instance pair: two augmented views of one image holding ``category``."""
        from torchvision import tv_tensors

        idx, _ = index.sample_images(category, distinct=False)
        loaded = self._load_view(index.record(idx), augment=False, box_masks=box_masks)
        if loaded is None or len(loaded[1]) == 0:
            return None
        image, inst = loaded
        views = [self.view_augmentation(image, tv_tensors.Mask(inst.gt_masks))
                 for _ in range(2)]
        areas = torch.stack([masks.flatten(1).sum(1) for _, masks in views])
        candidates = torch.nonzero((areas > self.min_instance_area).all(0))[:, 0].numpy()
        if len(candidates) == 0:
            return None
        count = max(1, np.random.randint(0, self.max_instances + 1))  # official: 0 means one
        chosen = torch.from_numpy(np.random.permutation(candidates)[:count])
        (tar_image, tar_masks), (ref_image, ref_masks) = views
        classes, ids = inst.gt_classes[chosen], inst.ins_ids[chosen]
        tar_image, ref_image = tar_image.as_subclass(torch.Tensor), ref_image.as_subclass(
            torch.Tensor)
        return _pair(
            tar_image,
            _make_instances(tar_image.shape[1:], tar_masks[chosen].as_subclass(torch.Tensor),
                            classes, ids),
            ref_image,
            _make_instances(ref_image.shape[1:], ref_masks[chosen].as_subclass(torch.Tensor),
                            classes, ids),
            pair_type="box" if box_masks else "instance", class_name=None, box_masks=box_masks)

    def _load_view(self, record, augment=True, box_masks=False):
        """Read and augment one record (``augment`` False: as stored). Returns
        ``(uint8 (3,H,W), Instances)`` or None."""
        augmentations = self.augmentations if augment else T.AugmentationList([])
        return read_training_view(record, augmentations, self.image_format,
                                  self.skip_bad_images, box_masks=box_masks)


def read_training_view(record, augmentations, image_format="RGB", skip_bad_images=False,
                       box_masks=False):
    """Read one detectron2 record, augment it and build its ground-truth ``Instances``.

    Instances come from the panoptic PNG (every non-crowd segment, id = segment id), else from
    the semantic label PNG (one instance per class present, id = class + 1), else from
    ``annotations`` (id = annotation id). ``box_masks``: from the annotations' boxes only, as
    filled rectangles (segmentations and label PNGs are not read). Returns ``(uint8 (3, H, W),
    Instances with gt_masks, gt_classes, ins_ids)``, or None for an unreadable image when
    ``skip_bad_images``.
    """
    record = copy.deepcopy(record)
    if not box_masks:
        record = load_sam_segmentations(record)
    record = ensure_instance_ids(record)
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
    pan_ids = None if box_masks else _read_panoptic_ids(record)
    sem_labels = None
    if pan_ids is None and not box_masks and "sem_seg_file_name" in record:
        sem_labels = utils.read_image(record["sem_seg_file_name"]).astype(np.float32)
    aug_input = T.AugInput(image, sem_seg=pan_ids if pan_ids is not None else sem_labels)
    transforms = augmentations(aug_input)
    image = aug_input.image
    if pan_ids is not None:
        instances = _panoptic_instances(record, aug_input.sem_seg, image.shape[:2])
    elif sem_labels is not None:
        instances = _semantic_instances(aug_input.sem_seg, image.shape[:2])
    else:
        instances = _annotation_instances(record, transforms, image.shape[:2], box_masks)
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


def _annotation_instances(record, transforms, image_size, box_masks=False):
    annos = [
        utils.transform_instance_annotations(a, transforms, image_size)
        for a in record.get("annotations", [])
        if a.get("iscrowd", 0) == 0
    ]
    if box_masks:
        for a in annos:
            a.pop("segmentation", None)
    instances = utils.annotations_to_instances(annos, image_size, mask_format="bitmask")
    if box_masks:
        masks = _filled_boxes(instances.gt_boxes.tensor, image_size)
    elif len(annos):
        masks = instances.gt_masks.tensor
    else:
        masks = torch.zeros((0, *image_size), dtype=bool)
    ids = torch.tensor([a["id"] for a in annos], dtype=torch.int64)
    return _make_instances(image_size, masks, instances.gt_classes, ids)


def _filled_boxes(boxes, image_size):
    """(N, 4) XYXY boxes -> (N, H, W) bool masks covering every pixel the box touches."""
    h, w = image_size
    ys = torch.arange(h, dtype=boxes.dtype)[None, :, None] + 0.5
    xs = torch.arange(w, dtype=boxes.dtype)[None, None, :] + 0.5
    b = boxes[:, :, None, None]
    return (xs >= b[:, 0].floor()) & (xs <= b[:, 2].ceil()) & (ys >= b[:, 1].floor()) & (
        ys <= b[:, 3].ceil())


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


def _pair(tar_image, tar_inst, ref_image, ref_inst, **fields) -> dict:
    """One training pair in the model's input format (target + one reference) plus ``fields``
    ("pair_type", SegIC's "class_name" / "box_masks")."""
    return {
        "image": tar_image,
        "height": tar_image.shape[1],
        "width": tar_image.shape[2],
        "instances": tar_inst,
        "references": [{"image": ref_image, "instances": ref_inst}],
        **fields,
    }


def _make_instances(image_size, masks, classes, ids):
    """Instances with non-empty masks only (augmentation can crop an instance away)."""
    instances = Instances(image_size)
    instances.gt_masks = masks.bool()
    instances.gt_classes = classes.long()
    instances.ins_ids = ids.long()
    return instances[masks.flatten(1).any(dim=1)] if len(masks) else instances

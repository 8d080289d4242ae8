"""Objects365 with SAM masks (datasets/README.md#objects365-sam), name ``objects365_sam_train``.

Objects365 has boxes only; SINE trains on masks that SAM predicted from those boxes. The masks of
1.7M images do not fit in one JSON in memory, so they live in one file per image and are read
on demand by the training mapper through :func:`load_sam_segmentations`.

Layout under the datasets root::

    objects365/train/<file_name>                       images, e.g. patch0/objects365_v1_000.jpg
    objects365/annotations/objects365_sam_train.json   COCO instances JSON, boxes and categories
    objects365/sam_masks/train/<file_name stem>.json   masks of one image (format below)

Per-image mask file (written by ``datasets/prepare_objects365_sam.py``)::

    {"image_id": 42, "height": H, "width": W,
     "annotations": [{"id": <annotation id in the instances JSON>,
                      "segmentation": {"size": [H, W], "counts": "<COCO RLE string>"}}, ...]}

``segmentation`` may be any COCO segmentation (compressed or uncompressed RLE, polygons).
Each loaded record carries ``segmentation_file`` (the path of that file); its annotations
have no ``segmentation`` until :func:`load_sam_segmentations` fills it by annotation ``id``.
"""
import json
import logging
import os

from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import log_first_n
from pycocotools import mask as mask_util

from .coco_format import load_coco_json_with_ids
from .common import check_first_record, datasets_root, register_lazily, require_path

logger = logging.getLogger(__name__)

__all__ = [
    "load_objects365_sam_json",
    "load_sam_segmentations",
    "register_objects365_sam",
    "sam_mask_file",
]

_SECTION = "objects365-sam"

# name: (image_root, instances_json, sam_mask_root), relative to the datasets root
_PREDEFINED_SPLITS_OBJECTS365_SAM = {
    "objects365_sam_train": (
        "objects365/train",
        "objects365/annotations/objects365_sam_train.json",
        "objects365/sam_masks/train",
    ),
}


def sam_mask_file(mask_root, image_file_name):
    """Mask file of an image: ``<mask_root>/<image file_name without extension>.json``.

    Args:
        image_file_name (str): the image's ``file_name`` as written in the instances JSON
            (relative to the image root).
    """
    return os.path.join(mask_root, os.path.splitext(image_file_name)[0] + ".json")


def load_objects365_sam_json(json_file, image_root, mask_root, dataset_name):
    """Instance records (annotation ids kept) with ``segmentation_file`` set on each."""
    require_path(mask_root, dataset_name, _SECTION, kind="dir")
    records = load_coco_json_with_ids(json_file, image_root, dataset_name, _SECTION)
    prefix = os.path.join(image_root, "")
    for record in records:
        relative = record["file_name"][len(prefix):]
        record["segmentation_file"] = sam_mask_file(mask_root, relative)
    return check_first_record(records, dataset_name, _SECTION, keys=("segmentation_file",))


def _read_masks_by_id(path):
    if not PathManager.isfile(path):
        raise FileNotFoundError(
            f"expected SAM mask file {path} — see datasets/README.md#{_SECTION} "
            "(create it with datasets/prepare_objects365_sam.py)"
        )
    with PathManager.open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(
            f"{path}: expected {{'annotations': [{{'id': ..., 'segmentation': ...}}, ...]}} "
            f"(format in datasets/README.md#{_SECTION})"
        )
    masks = {}
    for entry in data["annotations"]:
        segm = entry["segmentation"]
        if isinstance(segm, dict) and isinstance(segm["counts"], list):
            # detectron2 decodes only compressed RLE.
            segm = mask_util.frPyObjects(segm, *segm["size"])
        masks[entry["id"]] = segm
    return masks


def load_sam_segmentations(record):
    """Fill ``annotations[i]["segmentation"]`` of a record from its ``segmentation_file``.

    Records without ``segmentation_file`` are returned unchanged, so a mapper may call this on
    every record. Annotations that already have a segmentation keep it; those whose id is absent
    from the mask file are dropped (with a warning). The input record is not modified: a new
    record with new annotation dicts is returned, so masks never accumulate in the dataset list.
    """
    path = record.get("segmentation_file")
    if path is None:
        return record
    masks = _read_masks_by_id(path)
    annotations, missing = [], 0
    for anno in record.get("annotations", []):
        if "segmentation" not in anno:
            if anno["id"] not in masks:
                missing += 1
                continue
            anno = dict(anno, segmentation=masks[anno["id"]])
        annotations.append(anno)
    if missing:
        log_first_n(
            logging.WARNING,
            f"{path}: no mask for {missing} annotation(s) of {record['file_name']}; dropped",
            n=5,
            name=__name__,
        )
    return dict(record, annotations=annotations)


def register_objects365_sam(name, json_file, image_root, mask_root, exist_ok=False):
    """Register a COCO-format box dataset whose masks are per-image files (format above)."""
    register_lazily(
        name,
        lambda: load_objects365_sam_json(json_file, image_root, mask_root, name),
        exist_ok=exist_ok,
        json_file=json_file,
        image_root=image_root,
        sam_mask_root=mask_root,
        evaluator_type="coco",
    )


def register_all_objects365_sam(root):
    for name, (image_root, json_file, mask_root) in _PREDEFINED_SPLITS_OBJECTS365_SAM.items():
        register_objects365_sam(
            name,
            os.path.join(root, json_file),
            os.path.join(root, image_root),
            os.path.join(root, mask_root),
            exist_ok=True,
        )


register_all_objects365_sam(datasets_root())

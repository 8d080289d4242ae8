"""Loaders for COCO-format instance and panoptic annotations that keep every instance id.

Instance records keep ``annotations[i]["id"]`` (the COCO annotation id); panoptic records keep
``segments_info[i]["id"]`` (the segment's value in the RGB-encoded PNG). SINE needs these ids to
match one object across two augmented views of the same image (ID queries, spec §6.4).
"""
import json
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from detectron2.utils.file_io import PathManager

from .common import check_first_record, require_path

logger = logging.getLogger(__name__)

__all__ = ["load_coco_json_with_ids", "load_panoptic_json", "panoptic_category_meta"]


def load_coco_json_with_ids(json_file, image_root, dataset_name=None, section="custom-datasets"):
    """detectron2's ``load_coco_json`` keeping each annotation's ``id``, with clear missing-file
    errors.

    Args:
        json_file (str): COCO instances JSON.
        image_root (str): folder the JSON's ``images[i]["file_name"]`` are relative to.
        dataset_name (str or None): registered name; when given, ``thing_classes`` and
            ``thing_dataset_id_to_contiguous_id`` are stored in its metadata (detectron2 rule).
        section (str): README anchor quoted when a file is missing.

    Returns:
        list[dict]: detectron2 instance records; ``annotations[i]["id"]`` is the annotation id.
    """
    name = dataset_name or json_file
    require_path(json_file, name, section)
    require_path(image_root, name, section, kind="dir")
    records = load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=["id"])
    return check_first_record(records, name, section)


def panoptic_category_meta(categories):
    """Contiguous category ids of a panoptic JSON's ``categories`` (sorted by dataset id).

    Follows detectron2's "standard" COCO panoptic metadata: one contiguous id space over things
    and stuff, ``thing_classes`` and ``stuff_classes`` both list every category.
    """
    categories = sorted(categories, key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    return {
        "thing_classes": names,
        "stuff_classes": list(names),
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if c.get("isthing", 0)
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if not c.get("isthing", 0)
        },
    }


def _convert_segment(segment, meta, json_file):
    segment = dict(segment)
    dataset_id = segment["category_id"]
    if dataset_id in meta["thing_dataset_id_to_contiguous_id"]:
        segment["category_id"] = meta["thing_dataset_id_to_contiguous_id"][dataset_id]
        segment["isthing"] = True
    elif dataset_id in meta["stuff_dataset_id_to_contiguous_id"]:
        segment["category_id"] = meta["stuff_dataset_id_to_contiguous_id"][dataset_id]
        segment["isthing"] = False
    else:
        raise KeyError(f"{json_file}: segment category_id={dataset_id} is not a known category")
    return segment


def _panoptic_record(ann, image_info, image_root, panoptic_root, meta, json_file):
    if image_info is not None and "file_name" in image_info:
        image_name = image_info["file_name"]
    else:
        # COCO/ADE convention: the PNG and the JPEG share a stem.
        image_name = os.path.splitext(ann["file_name"])[0] + ".jpg"
    record = {
        "file_name": os.path.join(image_root, image_name),
        "image_id": ann["image_id"],
        "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
        "segments_info": [_convert_segment(s, meta, json_file) for s in ann["segments_info"]],
    }
    if image_info is not None and "height" in image_info:
        record["height"], record["width"] = image_info["height"], image_info["width"]
    return record


def load_panoptic_json(
    json_file, image_root, panoptic_root, dataset_name, section, category_meta=None
):
    """Load a COCO-format panoptic dataset (COCO panoptic, Mask2Former's ADE20K panoptic).

    Args:
        json_file (str): panoptic JSON (``images``, ``annotations`` with ``segments_info``,
            ``categories``).
        image_root (str): folder of the images.
        panoptic_root (str): folder of the RGB-encoded panoptic PNGs (id = R + 256 G + 256^2 B).
        dataset_name (str): registered name (for messages and metadata).
        section (str): README anchor quoted when a file is missing.
        category_meta (dict or None): ``{thing,stuff}_dataset_id_to_contiguous_id``; None builds
            it from the JSON's categories and stores it (with class names) in the metadata.

    Returns:
        list[dict]: records with ``file_name``, ``image_id``, ``height``/``width`` (when the JSON
        lists them), ``pan_seg_file_name`` and ``segments_info`` (``id``, contiguous
        ``category_id``, ``isthing``, ``iscrowd``, ``area``, ``bbox``).
    """
    require_path(json_file, dataset_name, section)
    require_path(image_root, dataset_name, section, kind="dir")
    require_path(panoptic_root, dataset_name, section, kind="dir")
    with PathManager.open(json_file) as f:
        data = json.load(f)
    if category_meta is None:
        category_meta = panoptic_category_meta(data["categories"])
        MetadataCatalog.get(dataset_name).set(**category_meta)
    images = {img["id"]: img for img in data.get("images", [])}
    records = [
        _panoptic_record(
            ann, images.get(ann["image_id"]), image_root, panoptic_root, category_meta, json_file
        )
        for ann in data["annotations"]
    ]
    logger.info(f"Loaded {len(records)} panoptic images of '{dataset_name}' from {json_file}")
    keys = ("file_name", "pan_seg_file_name")
    return check_first_record(records, dataset_name, section, keys=keys)

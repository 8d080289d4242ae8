"""LVIS v1 and PACO-LVIS instances with annotation ids (datasets/README.md#lvis, #paco).

Names ``lvis_v1_{train,val}_ins`` and ``paco_lvis_v1_{train,val}``. Both use COCO 2017 images.

detectron2's ``load_lvis_json`` needs the ``lvis`` package (not a dependency of sine) and keeps
``id`` only through ``extra_annotation_keys``; the LVIS JSON is plain JSON, so it is read here
directly with the same conventions (image path from ``coco_url``, contiguous category ids in
dataset-id order, ``not_exhaustive_category_ids``/``neg_category_ids`` kept). PACO-LVIS JSONs
are COCO-format (``file_name`` like ``train2017/000000000009.jpg``) and go through detectron2's
``load_coco_json``; object and part annotations are both kept.
"""
import json
import logging
import os
from collections import defaultdict

from detectron2.data.datasets.lvis import get_lvis_instances_meta
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

from .coco_format import load_coco_json_with_ids
from .common import check_first_record, datasets_root, register_lazily, require_path

logger = logging.getLogger(__name__)

__all__ = ["load_lvis_json_with_ids", "register_lvis_instances_with_ids", "register_paco"]

# name: (image_root, json_file), relative to the datasets root
_PREDEFINED_SPLITS_LVIS = {
    "lvis_v1_train_ins": ("coco", "lvis/lvis_v1_train.json"),
    "lvis_v1_val_ins": ("coco", "lvis/lvis_v1_val.json"),
}
_PREDEFINED_SPLITS_PACO = {
    "paco_lvis_v1_train": ("coco", "paco/annotations/paco_lvis_v1_train.json"),
    "paco_lvis_v1_val": ("coco", "paco/annotations/paco_lvis_v1_val.json"),
}


def _lvis_image_file(image_root, image):
    if "file_name" in image:
        return os.path.join(image_root, image["file_name"])
    # e.g. http://images.cocodataset.org/train2017/000000391895.jpg -> <root>/train2017/...
    split_folder, file_name = image["coco_url"].split("/")[-2:]
    return os.path.join(image_root, split_folder, file_name)


def _lvis_annotation(anno, id_map):
    polygons = [p for p in anno["segmentation"] if len(p) % 2 == 0 and len(p) >= 6]
    if not polygons:
        return None
    return {
        "id": anno["id"],
        "bbox": anno["bbox"],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": id_map[anno["category_id"]],
        "segmentation": polygons,
    }


def _group_annotations(annotations, json_file):
    ids = [a["id"] for a in annotations]
    if len(set(ids)) != len(ids):
        raise ValueError(f"annotation ids in {json_file} are not unique")
    by_image = defaultdict(list)
    for anno in annotations:
        by_image[anno["image_id"]].append(anno)
    return by_image


def load_lvis_json_with_ids(json_file, image_root, dataset_name, section="lvis"):
    """Load an LVIS-format JSON into detectron2 records keeping ``annotations[i]["id"]``.

    Args:
        json_file (str): LVIS annotation JSON.
        image_root (str): folder holding ``train2017/`` and ``val2017/`` (COCO images).
        dataset_name (str): registered name (for messages).
        section (str): README anchor quoted when a file is missing.
    """
    require_path(json_file, dataset_name, section)
    require_path(image_root, dataset_name, section, kind="dir")
    with PathManager.open(json_file) as f:
        data = json.load(f)
    id_map = {cid: i for i, cid in enumerate(sorted(c["id"] for c in data["categories"]))}
    by_image = _group_annotations(data["annotations"], json_file)
    records, dropped = [], 0
    for image in sorted(data["images"], key=lambda x: x["id"]):
        annotations = [_lvis_annotation(a, id_map) for a in by_image[image["id"]]]
        dropped += sum(a is None for a in annotations)
        records.append(
            {
                "file_name": _lvis_image_file(image_root, image),
                "height": image["height"],
                "width": image["width"],
                "image_id": image["id"],
                "not_exhaustive_category_ids": image.get("not_exhaustive_category_ids", []),
                "neg_category_ids": image.get("neg_category_ids", []),
                "annotations": [a for a in annotations if a is not None],
            }
        )
    if dropped:
        logger.warning(f"{json_file}: dropped {dropped} annotations without a valid polygon")
    logger.info(f"Loaded {len(records)} images of '{dataset_name}' from {json_file}")
    return check_first_record(records, dataset_name, section)


def register_lvis_instances_with_ids(name, metadata, json_file, image_root, exist_ok=False):
    """Register an LVIS-format dataset whose records keep annotation ids."""
    register_lazily(
        name,
        lambda: load_lvis_json_with_ids(json_file, image_root, name),
        exist_ok=exist_ok,
        json_file=json_file,
        image_root=image_root,
        evaluator_type="lvis",
        **metadata,
    )


def register_paco(name, json_file, image_root, exist_ok=False):
    """Register a PACO JSON (objects and parts; categories read from the JSON at load)."""
    register_lazily(
        name,
        lambda: load_coco_json_with_ids(json_file, image_root, name, section="paco"),
        exist_ok=exist_ok,
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
    )


def register_all_lvis(root):
    for name, (image_root, json_file) in _PREDEFINED_SPLITS_LVIS.items():
        register_lvis_instances_with_ids(
            name,
            get_lvis_instances_meta("lvis_v1"),
            os.path.join(root, json_file),
            os.path.join(root, image_root),
            exist_ok=True,
        )
    for name, (image_root, json_file) in _PREDEFINED_SPLITS_PACO.items():
        register_paco(
            name, os.path.join(root, json_file), os.path.join(root, image_root), exist_ok=True
        )


register_all_lvis(datasets_root())

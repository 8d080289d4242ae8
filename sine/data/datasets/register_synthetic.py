"""Register the built-in synthetic dataset (datasets/synthetic.md) with detectron2's catalogs.

Registered names (when ``<root>/synthetic/meta.json`` exists):

* ``synthetic_train`` / ``synthetic_val``: COCO instances (base-only / base+novel), every
  annotation keeps its unique ``id`` (used as the instance id);
* ``synthetic_test_novel``: val images that are never few-shot references;
* ``synthetic_train_panoptic`` / ``synthetic_val_panoptic``: detectron2 "standard" panoptic dicts;
* ``synthetic_train_sem_seg`` / ``synthetic_val_sem_seg``: semantic labels of the 44 classes
  (``SemSegEvaluator``; the LoRA transfer's semantic task);
* ``synthetic_novel_{K}shot_seed{s}``: the few-shot reference annotations, merged per image.

Importing this module registers ``$DETECTRON2_DATASETS/synthetic`` (default ``datasets``) if it
has been generated (``python datasets/prepare_synthetic.py``).
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..synthetic import GENERATOR_VERSION, get_synthetic_metadata, get_synthetic_panoptic_metadata
from ..synthetic.fewshot import fewshot_file_name
from .coco_format import load_panoptic_json
from .common import datasets_root, load_sem_seg_checked, register_lazily, require_path
from .register_coco import register_coco_instances_with_ids

logger = logging.getLogger(__name__)

_SECTION = "synthetic"  # datasets/README.md anchor quoted by missing-file errors

# name -> (image folder, instances json) relative to <root>/synthetic
_INSTANCE_SPLITS = {
    "synthetic_train": ("train", "annotations/instances_train.json"),
    "synthetic_val": ("val", "annotations/instances_val.json"),
    "synthetic_test_novel": ("val", "annotations/instances_test_novel.json"),
}
# name -> (image folder, panoptic PNG folder, panoptic json, instances json, semantic folder)
_PANOPTIC_SPLITS = {
    "synthetic_train_panoptic": ("train", "panoptic_train", "annotations/panoptic_train.json",
                                 "annotations/instances_train.json", "sem_seg_train"),
    "synthetic_val_panoptic": ("val", "panoptic_val", "annotations/panoptic_val.json",
                               "annotations/instances_val.json", "sem_seg_val"),
}

# name -> (image folder, semantic label folder)
_SEM_SEG_SPLITS = {
    "synthetic_train_sem_seg": ("train", "sem_seg_train"),
    "synthetic_val_sem_seg": ("val", "sem_seg_val"),
}


def _replace(name):
    """Drop an earlier registration of ``name`` so a new root can be registered (tests)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def _with_semantic_labels(records, sem_seg_root):
    """Point every panoptic record to its semantic label PNG (same stem), so that one pass of a
    model is scored by COCOPanopticEvaluator and SemSegEvaluator together."""
    for r in records:
        stem = os.path.splitext(os.path.basename(r["pan_seg_file_name"]))[0]
        r["sem_seg_file_name"] = os.path.join(sem_seg_root, stem + ".png")
    return records


def _register_panoptic(name, image_root, panoptic_root, panoptic_json, instances_json,
                       sem_seg_root):
    _replace(name)
    meta = get_synthetic_panoptic_metadata()
    category_meta = {k: meta[k] for k in ("thing_dataset_id_to_contiguous_id",
                                          "stuff_dataset_id_to_contiguous_id")}
    register_lazily(
        name,
        lambda: _with_semantic_labels(
            load_panoptic_json(panoptic_json, image_root, panoptic_root, name, _SECTION,
                               category_meta), sem_seg_root),
        image_root=image_root, panoptic_root=panoptic_root, panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root, json_file=instances_json, evaluator_type="coco_panoptic_seg",
        ignore_label=255, label_divisor=1000, **meta,
    )


def _register_sem_seg(name, image_root, sem_seg_root):
    _replace(name)
    meta = get_synthetic_panoptic_metadata()
    register_lazily(
        name,
        lambda: load_sem_seg_checked(name, image_root, sem_seg_root, _SECTION),
        image_root=image_root, sem_seg_root=sem_seg_root, evaluator_type="sem_seg",
        ignore_label=255, stuff_classes=meta["stuff_classes"],
        stuff_colors=meta["stuff_colors"],
    )


def load_fewshot_references(fewshot_dir, image_root, shot, seed, novel_classes, id_map):
    """Detectron2 dicts of one few-shot draw: all novel-category files merged per image.

    Annotations keep ``id`` and use contiguous ids of the full thing space.
    """
    records = {}
    for class_name in novel_classes:
        path = os.path.join(fewshot_dir, f"seed{seed}", fewshot_file_name(shot, class_name))
        with open(require_path(path, f"synthetic_novel_{shot}shot_seed{seed}", _SECTION)) as f:
            content = json.load(f)
        for img in content["images"]:
            records.setdefault(img["id"], {
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": img["height"], "width": img["width"], "image_id": img["id"],
                "annotations": [],
            })
        for ann in content["annotations"]:
            records[ann["image_id"]]["annotations"].append({
                "id": ann["id"], "bbox": ann["bbox"], "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": ann["segmentation"], "iscrowd": ann["iscrowd"],
                "category_id": id_map[ann["category_id"]],
            })
    return [records[k] for k in sorted(records)]


def _register_fewshot(name, fewshot_dir, image_root, shot, seed):
    _replace(name)
    meta = get_synthetic_metadata()
    register_lazily(
        name,
        lambda: load_fewshot_references(fewshot_dir, image_root, shot, seed,
                                        meta["novel_classes"],
                                        meta["thing_dataset_id_to_contiguous_id"]),
        image_root=image_root, evaluator_type="coco", shot=shot, fewshot_seed=seed, **meta,
    )


def register_synthetic(root):
    """Register every split of ``<root>/synthetic``; returns the registered names.

    Earlier registrations of the same names are replaced, so tests can point the catalog at a
    freshly generated tree.
    """
    dataset_dir = os.path.join(root, "synthetic")
    meta_path = os.path.join(dataset_dir, "meta.json")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"{meta_path} not found; generate the dataset with "
            f"`python datasets/prepare_synthetic.py --root {root}`."
        )
    with open(meta_path) as f:
        params = json.load(f)["params"]
    if params["version"] != GENERATOR_VERSION:
        logger.warning("%s was generated by synthetic-generator version %s (current %s); "
                       "regenerate it with --force.", dataset_dir, params["version"],
                       GENERATOR_VERSION)
    names = []
    for name, (image_dir, json_rel) in _INSTANCE_SPLITS.items():
        _replace(name)
        register_coco_instances_with_ids(
            name, get_synthetic_metadata(), os.path.join(dataset_dir, json_rel),
            os.path.join(dataset_dir, image_dir), section=_SECTION,
        )
        names.append(name)
    for name, rel_paths in _PANOPTIC_SPLITS.items():
        _register_panoptic(name, *(os.path.join(dataset_dir, p) for p in rel_paths))
        names.append(name)
    for name, (image_dir, sem_dir) in _SEM_SEG_SPLITS.items():
        _register_sem_seg(name, os.path.join(dataset_dir, image_dir),
                          os.path.join(dataset_dir, sem_dir))
        names.append(name)
    for seed in range(params["fewshot_seeds"]):
        for shot in params["shots"]:
            name = f"synthetic_novel_{shot}shot_seed{seed}"
            _register_fewshot(name, os.path.join(dataset_dir, "fewshot"),
                              os.path.join(dataset_dir, "val"), shot, seed)
            names.append(name)
    # Few-shot semantic episodes over the novel classes of synthetic_val (inference_fss).
    from ..fss_episodes import register_synthetic_fss_episodes

    names += register_synthetic_fss_episodes()
    return names


def register_synthetic_parts(root):
    """Register ``synthetic_parts_train`` (COCO instances of the parts of the generated
    ``<root>/synthetic_parts`` tree, ids kept) for in-context training on parts."""
    from ..synthetic.parts import PART_CLASSES

    dataset_dir = os.path.join(root, "synthetic_parts")
    name = "synthetic_parts_train"
    _replace(name)
    register_coco_instances_with_ids(
        name, {}, os.path.join(dataset_dir, "annotations", "parts_train.json"),
        os.path.join(dataset_dir, "Pascal-Part", "VOCdevkit", "VOC2010", "JPEGImages"),
        section=_SECTION,
    )
    MetadataCatalog.get(name).set(part_classes=list(PART_CLASSES))
    return [name]


_root = datasets_root()
if os.path.isfile(os.path.join(_root, "synthetic", "meta.json")):
    register_synthetic(_root)
if os.path.isfile(os.path.join(_root, "synthetic_parts", "meta.json")):
    register_synthetic_parts(_root)

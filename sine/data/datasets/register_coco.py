"""COCO 2017 instances and panoptic, registered with instance ids (layout: datasets/README.md#coco).

detectron2 already registers ``coco_2017_train`` and ``coco_2017_train_panoptic``; its instance
records drop the annotation ``id``, so SINE registers its own names:

* ``coco_2017_{train,val}_ins``: instances, ``annotations[i]["id"]`` kept;
* ``coco_2017_{train,val}_panoptic_sine``: panoptic, ``segments_info[i]["id"]`` = PNG segment id,
  with image sizes and readable missing-file errors. (detectron2's ``coco_2017_train_panoptic``
  also carries segment ids and works with SINE too.)

Any other COCO-format instance dataset: :func:`register_coco_instances_with_ids`.
"""
import os

from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .coco_format import load_coco_json_with_ids, load_panoptic_json
from .common import datasets_root, register_lazily

__all__ = [
    "register_coco_instances_with_ids",
    "register_coco_panoptic_with_ids",
    "register_all_coco",
]

_SECTION = "coco"

# name: (image_root, instances_json), relative to the datasets root
_PREDEFINED_SPLITS_COCO_INS = {
    "coco_2017_train_ins": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val_ins": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}

# name: (image_root, panoptic_root, panoptic_json, instances_json)
_PREDEFINED_SPLITS_COCO_PANOPTIC = {
    "coco_2017_train_panoptic_sine": (
        "coco/train2017",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/annotations/instances_train2017.json",
    ),
    "coco_2017_val_panoptic_sine": (
        "coco/val2017",
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/annotations/instances_val2017.json",
    ),
}


def register_coco_instances_with_ids(
    name, metadata, json_file, image_root, section="custom-datasets", exist_ok=False
):
    """Like detectron2's ``register_coco_instances``, but records keep annotation ``id``s.

    Use it to train SINE on your own COCO-format data by config alone::

        register_coco_instances_with_ids("my_ds", {}, "my/annotations.json", "my/images")
        # then DATASETS.TRAIN = ("my_ds",)

    Args:
        name (str): dataset name, e.g. ``"my_ds"``.
        metadata (dict): extra metadata (may be empty; ``thing_classes`` is filled at load).
        json_file (str): COCO instances JSON.
        image_root (str): folder that ``images[i]["file_name"]`` are relative to.
        section (str): README anchor quoted by missing-file errors.
        exist_ok (bool): keep an existing registration of ``name`` instead of failing.
    """
    register_lazily(
        name,
        lambda: load_coco_json_with_ids(json_file, image_root, name, section),
        exist_ok=exist_ok,
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        **metadata,
    )


def register_coco_panoptic_with_ids(
    name, metadata, image_root, panoptic_root, panoptic_json, instances_json=None, exist_ok=False
):
    """Register a COCO panoptic dataset whose records keep segment ids and image sizes.

    ``metadata`` must hold detectron2's standard panoptic category maps
    (``{thing,stuff}_dataset_id_to_contiguous_id``), as ``_get_builtin_metadata`` returns.
    """
    category_meta = {
        k: metadata[k]
        for k in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id")
    }
    register_lazily(
        name,
        lambda: load_panoptic_json(
            panoptic_json, image_root, panoptic_root, name, _SECTION, category_meta
        ),
        exist_ok=exist_ok,
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **metadata,
    )


def register_all_coco(root):
    for name, (image_root, json_file) in _PREDEFINED_SPLITS_COCO_INS.items():
        register_coco_instances_with_ids(
            name,
            _get_builtin_metadata("coco"),
            os.path.join(root, json_file),
            os.path.join(root, image_root),
            section=_SECTION,
            exist_ok=True,
        )
    panoptic_splits = _PREDEFINED_SPLITS_COCO_PANOPTIC.items()
    for name, (image_root, pan_root, pan_json, ins_json) in panoptic_splits:
        register_coco_panoptic_with_ids(
            name,
            _get_builtin_metadata("coco_panoptic_standard"),
            os.path.join(root, image_root),
            os.path.join(root, pan_root),
            os.path.join(root, pan_json),
            os.path.join(root, ins_json),
            exist_ok=True,
        )


register_all_coco(datasets_root())

"""ADE20K panoptic in Mask2Former's layout (datasets/README.md#ade20k-panoptic).

Names ``ade20k_panoptic_{train,val}``. The 150 categories (and which are things) are read from the
panoptic JSON's ``categories`` at load time and stored in the metadata, so the names always match
the file that was converted.
"""
import os

from .coco_format import load_panoptic_json
from .common import datasets_root, register_lazily

__all__ = ["register_ade20k_panoptic", "register_all_ade20k_panoptic"]

_SECTION = "ade20k-panoptic"

# name: (image_root, panoptic_root, panoptic_json), relative to the datasets root
_PREDEFINED_SPLITS_ADE20K_PANOPTIC = {
    "ade20k_panoptic_train": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/ade20k_panoptic_train",
        "ADEChallengeData2016/ade20k_panoptic_train.json",
    ),
    "ade20k_panoptic_val": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/ade20k_panoptic_val",
        "ADEChallengeData2016/ade20k_panoptic_val.json",
    ),
}


def register_ade20k_panoptic(
    name, image_root, panoptic_root, panoptic_json, metadata=None, exist_ok=False
):
    """Register an ADE20K-style panoptic dataset; records keep ``segments_info[i]["id"]``.

    Args:
        name (str): dataset name.
        image_root (str): folder of the JPEG images.
        panoptic_root (str): folder of the RGB-encoded panoptic PNGs.
        panoptic_json (str): panoptic JSON; its ``categories`` define the classes.
        metadata (dict or None): extra metadata.
        exist_ok (bool): keep an existing registration of ``name`` instead of failing.
    """
    register_lazily(
        name,
        lambda: load_panoptic_json(panoptic_json, image_root, panoptic_root, name, _SECTION),
        exist_ok=exist_ok,
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        evaluator_type="ade20k_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **(metadata or {}),
    )


def register_all_ade20k_panoptic(root):
    for name, (image_root, pan_root, pan_json) in _PREDEFINED_SPLITS_ADE20K_PANOPTIC.items():
        register_ade20k_panoptic(
            name,
            os.path.join(root, image_root),
            os.path.join(root, pan_root),
            os.path.join(root, pan_json),
            exist_ok=True,
        )


register_all_ade20k_panoptic(datasets_root())

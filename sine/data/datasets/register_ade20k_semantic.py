"""ADE20K semantic segmentation (150 classes) in Mask2Former's layout (datasets/README.md#ade20k).

Names ``ade20k_sem_seg_{train,val}_sine``: the images of the panoptic registration
(``ADEChallengeData2016/images/``) with the label PNGs that Mask2Former's
``prepare_ade20k_sem_seg.py`` writes to ``ADEChallengeData2016/annotations_detectron2/``
(value = class index 0-149, 255 = unlabelled). Evaluated by detectron2's ``SemSegEvaluator``;
used by the LoRA transfer training (sine/data/dataset_mappers/transfer_mapper.py). detectron2's
builtin ``ade20k_sem_seg_{train,val}`` read the same files; these names add the missing-file
errors that point to the README.
"""
import os

from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

from .common import datasets_root, load_sem_seg_checked, register_lazily

__all__ = ["register_ade20k_semantic", "register_all_ade20k_semantic"]

_SECTION = "ade20k-semantic"

# name: (image_root, sem_seg_root), relative to the datasets root
_PREDEFINED_SPLITS_ADE20K_SEMANTIC = {
    "ade20k_sem_seg_train_sine": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/annotations_detectron2/training",
    ),
    "ade20k_sem_seg_val_sine": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/annotations_detectron2/validation",
    ),
}


def register_ade20k_semantic(name, image_root, sem_seg_root, metadata=None, exist_ok=False):
    """Register an ADE20K-style semantic dataset (label PNG values = class index, 255 = ignore).

    Args:
        name (str): dataset name.
        image_root (str): folder of the JPEG images.
        sem_seg_root (str): folder of the label PNGs (same stems as the images).
        metadata (dict or None): extra metadata (e.g. other ``stuff_classes``).
        exist_ok (bool): keep an existing registration of ``name`` instead of failing.
    """
    meta = {"stuff_classes": list(ADE20K_SEM_SEG_CATEGORIES)}
    meta.update(metadata or {})
    register_lazily(
        name,
        lambda: load_sem_seg_checked(name, image_root, sem_seg_root, _SECTION),
        exist_ok=exist_ok,
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        evaluator_type="sem_seg",
        ignore_label=255,
        **meta,
    )


def register_all_ade20k_semantic(root):
    for name, (image_root, sem_root) in _PREDEFINED_SPLITS_ADE20K_SEMANTIC.items():
        register_ade20k_semantic(
            name, os.path.join(root, image_root), os.path.join(root, sem_root), exist_ok=True
        )


register_all_ade20k_semantic(datasets_root())

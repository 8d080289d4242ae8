"""Dataset registrations (importing a module registers its datasets) and record helpers."""
from . import (  # noqa: F401  (importing a module registers its datasets)
    register_ade20k_panoptic,
    register_ade20k_semantic,
    register_coco,
    register_lvis,
    register_objects365_sam,
    register_synthetic,
)
from .common import ensure_instance_ids
from .register_coco import register_coco_instances_with_ids
from .register_objects365_sam import load_sam_segmentations

__all__ = ["ensure_instance_ids", "load_sam_segmentations", "register_coco_instances_with_ids"]

"""Helpers shared by the dataset registrations: data root, missing-file errors, lazy registration,
and the per-instance ids that SINE's ID supervision needs."""
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS_README",
    "datasets_root",
    "require_path",
    "check_first_record",
    "register_lazily",
    "ensure_instance_ids",
    "load_sem_seg_checked",
]

DATASETS_README = "datasets/README.md"


def datasets_root():
    """The folder holding every dataset: ``$DETECTRON2_DATASETS``, default ``datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def require_path(path, dataset_name, section, kind="file"):
    """Raise ``FileNotFoundError`` naming ``path`` and the README section if it is missing.

    Args:
        path (str): expected file or folder.
        dataset_name (str): registered name being loaded (for the message).
        section (str): anchor of the README section describing the layout, e.g. ``"coco"``.
        kind (str): ``"file"`` or ``"dir"``.
    """
    exists = PathManager.isdir(path) if kind == "dir" else PathManager.isfile(path)
    if not exists:
        raise FileNotFoundError(
            f"dataset '{dataset_name}': expected {kind} {path} — see "
            f"{DATASETS_README}#{section}. Set DETECTRON2_DATASETS to the folder that holds "
            f"the datasets (now: '{datasets_root()}')."
        )
    return path


def check_first_record(records, dataset_name, section, keys=("file_name",)):
    """Check that the dataset is not empty and that the files of its first record exist.

    Checking every record would stat millions of files at start-up; a wrong root or layout
    already shows on the first one.
    """
    if not records:
        raise ValueError(f"dataset '{dataset_name}' has no images; see {DATASETS_README}#{section}")
    for key in keys:
        require_path(records[0][key], dataset_name, section)
    return records


def register_lazily(name, loader, exist_ok=False, **metadata):
    """``DatasetCatalog.register(name, loader)`` plus metadata.

    Registration never touches the disk, so importing ``sine`` works without any data.
    With ``exist_ok`` (used for the predefined names registered at import), a name registered
    earlier by another project (e.g. Mask2Former's ``ade20k_panoptic_train``) is kept, with a
    warning, instead of failing the import. Returns whether ``name`` was registered.
    """
    if exist_ok and name in DatasetCatalog.list():
        logger.warning(f"dataset '{name}' is already registered; keeping the existing loader")
        return False
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
    return True


def ensure_instance_ids(record):
    """Make sure every instance of a detectron2 record has an id unique within the image.

    SINE's ID queries match the same object across two augmented views of one image through
    ``annotations[i]["id"]`` (instance data) or ``segments_info[i]["id"]`` (panoptic data).
    Annotations without ``"id"`` (e.g. from detectron2's ``register_coco_instances``) get the
    smallest unused positive integers in annotation order. Both views of an image come from the
    same record, so the assignment is identical for them.

    Modifies ``record`` in place and returns it.
    """
    annotations = record.get("annotations", [])
    taken = {a["id"] for a in annotations if "id" in a}
    next_id = 1
    for anno in annotations:
        if "id" in anno:
            continue
        while next_id in taken:
            next_id += 1
        anno["id"] = next_id
        taken.add(next_id)
    ids = [a["id"] for a in annotations]
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"{record.get('file_name')}: annotation ids {ids} are not unique within the image; "
            "fix the annotation file or drop the 'id' keys to number instances by order"
        )
    for segment in record.get("segments_info", []):
        if "id" not in segment:
            raise ValueError(
                f"{record.get('pan_seg_file_name')}: a panoptic segment has no 'id'; it must be "
                "the segment's value in the RGB-encoded panoptic PNG (R + 256 G + 256^2 B)"
            )
    return record


def load_sem_seg_checked(name, image_root, sem_seg_root, section, image_ext="jpg"):
    """detectron2's ``load_sem_seg`` (images paired with label PNGs by file stem) with
    missing-file errors that name the README section.

    Returns:
        list[dict]: ``{"file_name", "sem_seg_file_name"}`` records.
    """
    from detectron2.data.datasets import load_sem_seg

    require_path(image_root, name, section, kind="dir")
    require_path(sem_seg_root, name, section, kind="dir")
    records = load_sem_seg(sem_seg_root, image_root, gt_ext="png", image_ext=image_ext)
    return check_first_record(records, name, section, keys=("file_name", "sem_seg_file_name"))

"""COCO instance and COCO panoptic records of rendered scenes.

Every annotation gets a dataset-wide unique ``id``; a thing's panoptic segment id equals its
instance annotation id, so the two formats can be cross-referenced (and used as instance ids).
"""
import numpy as np
import pycocotools.mask as mask_util

INFO = {
    "description": "sine synthetic in-context segmentation dataset (generated)",
    "url": "datasets/synthetic.md",
}
MAX_SEGMENT_ID = 256**3 - 1  # panoptic ids are stored as 24-bit RGB


def mask_to_rle(mask):
    """(H, W) bool -> compressed COCO RLE with a str ``counts`` (JSON-serialisable)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_to_bbox(mask):
    """Tight XYWH box (pixels) of a non-empty (H, W) bool mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def id_to_rgb(id_map):
    """(H, W) int segment ids -> (H, W, 3) uint8 RGB, id = R + 256 G + 256^2 B."""
    return np.stack([id_map % 256, id_map // 256 % 256, id_map // 256**2], axis=-1).astype(
        np.uint8
    )


def scene_records(scene, image_id, first_segment_id):
    """Instance annotations, panoptic segments_info and the segment-id map of one scene.

    Returns:
        (annotations, segments_info, id_map, next_segment_id); ``id_map`` is (H, W) int32.
    """
    id_map = np.zeros(scene.image.shape[:2], dtype=np.int32)
    annotations, segments_info = [], []
    segment_id = first_segment_id
    for is_thing, items in ((True, scene.things), (False, scene.stuff)):
        for category_id, mask in items:
            if segment_id > MAX_SEGMENT_ID:
                raise ValueError(
                    "Too many segments for 24-bit panoptic ids; generate fewer images."
                )
            bbox, area = mask_to_bbox(mask), int(mask.sum())
            id_map[mask] = segment_id
            segments_info.append({"id": segment_id, "category_id": category_id, "iscrowd": 0,
                                  "bbox": bbox, "area": area})
            if is_thing:
                annotations.append({"id": segment_id, "image_id": image_id,
                                    "category_id": category_id, "segmentation": mask_to_rle(mask),
                                    "area": area, "bbox": bbox, "iscrowd": 0})
            segment_id += 1
    return annotations, segments_info, id_map, segment_id


def semantic_labels(scene, contiguous_ids):
    """(H, W) uint8 semantic labels of a scene: the contiguous class of every pixel (things and
    stuff; ``contiguous_ids`` maps dataset ids to 0..C-1), 255 where nothing is annotated."""
    labels = np.full(scene.image.shape[:2], 255, dtype=np.uint8)
    for category_id, mask in list(scene.stuff) + list(scene.things):
        labels[mask] = contiguous_ids[category_id]
    return labels


def image_entry(image_id, file_name, height, width):
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}

"""Byte-deterministic file writers (equal seeds must give equal files)."""
import json

import cv2
from PIL import Image


def write_jpeg(path, image):
    """Write (H, W, 3) uint8 RGB as JPEG without chroma subsampling: on ~200 px images 4:2:0
    would smear object colours over 1-2 pixels outside their masks."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 92,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    if not cv2.imwrite(path, image[..., ::-1], params):
        raise OSError(f"Could not write {path}")


def write_json(path, obj):
    """Deterministic JSON (no timestamps, fixed key order) so equal seeds give equal bytes."""
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def write_png(path, image):
    """Write (H, W, 3) uint8 RGB (e.g. a panoptic id map encoded as colours) as PNG."""
    if not cv2.imwrite(path, image[..., ::-1]):
        raise OSError(f"Could not write {path}")


def write_label_png(path, labels):
    """Write (H, W) uint8 class indices as a grayscale PNG (semantic ground truth)."""
    Image.fromarray(labels, mode="L").save(path)


def write_palette_png(path, labels, palette):
    """Write (H, W) uint8 labels as a palette ("P" mode) PNG, as DAVIS annotations are."""
    png = Image.fromarray(labels)
    png.putpalette(palette)  # turns the "L" image into "P"
    png.save(path)

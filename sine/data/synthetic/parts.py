"""Synthetic part segmentation: objects made of differently textured parts, annotated per part.

Every object is one of the 8 synthetic shapes, cut in its own (rotated) frame into an ``UPPER``
and a ``LOWER`` half, each painted with its own appearance family (fixed per shape and part, so a
part is recognisable by its shape context and texture). The 16 part classes ``<shape>+<PART>`` are
grouped in 4 super-categories of 2 shapes, named as PASCAL-Part's (``animals``, ``indoor``,
``person``, ``vehicles``), so the one-shot part protocol runs unchanged.

``generate_synthetic_parts(root)`` writes ``<root>/synthetic_parts/``::

    meta.json                                   # parameters and the part classes (written last)
    annotations/parts_train.json                # COCO instances of the train parts (unique ids)
    Pascal-Part/VOCdevkit/VOC2010/
        JPEGImages/000001.jpg ...               # train and val images
        Annotations_Part_json_merged_part_classes/000001.json ...
        all_obj_part_to_image.json              # the PASCAL-Part index of the benchmark

The PASCAL-Part-layout tree is read by ``inference_fss`` (benchmark ``synthetic_parts``); the
COCO file trains the in-context model on part instances (``synthetic_parts_train``).
"""
import json
import os
import shutil

import numpy as np
from tqdm import tqdm

from .coco_format import INFO, mask_to_bbox, mask_to_rle
from .files import write_jpeg, write_json
from .render import composite, finish_image, paint_background, sample_effects, stuff_layout
from .scenes import sample_image_size
from .shapes import SHAPES, shape_mask
from .textures import APPEARANCES, STUFF, paint_appearance, sample_appearance

__all__ = ["PART_CLASSES", "PART_NAMES", "SUPERCATEGORY_SHAPES", "generate_synthetic_parts"]

PARTS_VERSION = 1
PART_NAMES = ("UPPER", "LOWER")
SUPERCATEGORY_SHAPES = {
    "animals": SHAPES[0:2], "indoor": SHAPES[2:4], "person": SHAPES[4:6], "vehicles": SHAPES[6:8],
}
# (shape, part) -> appearance family: the two halves of a shape always differ.
PART_FAMILY = {(shape, part): APPEARANCES[(s + 2 * p) % len(APPEARANCES)]
               for s, shape in enumerate(SHAPES) for p, part in enumerate(PART_NAMES)}
PART_CLASSES = [f"{shape}+{part}" for shape in SHAPES for part in PART_NAMES]
MIN_PART_PIXELS = 30


def _render_parts(rng, shape, cx, cy, radius, angle, aspect, height, width):
    """Rendered items (y0, x0, mask, colour, area) of the two halves of one object, or None."""
    r = radius + 1
    x0, y0 = int(np.floor(cx - r)), int(np.floor(cy - r))
    ys, xs = np.mgrid[y0:int(np.ceil(cy + r)) + 1, x0:int(np.ceil(cx + r)) + 1].astype(np.float32)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radius
    full = shape_mask(shape, u, v, aspect)
    cy0, cy1 = max(y0, 0), min(y0 + full.shape[0], height)
    cx0, cx1 = max(x0, 0), min(x0 + full.shape[1], width)
    if cy0 >= cy1 or cx0 >= cx1:
        return None
    window = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    items = []
    for part, region in zip(PART_NAMES, (v < 0, v >= 0)):
        appearance = sample_appearance(PART_FAMILY[(shape, part)], rng)
        mask = (full & region)[window]
        colour = paint_appearance(appearance, u[window], v[window], radius)
        items.append((cy0, cx0, mask, colour, int(mask.sum())))
    return items


def render_part_scene(rng):
    """One image with 1-3 part objects over a stuff background.

    Returns:
        (uint8 (H, W, 3) image, objects): objects = [{"shape", "box" (x0, y0, x1, y1),
        "parts": {PART: (H, W) bool visible mask}}]; parts smaller than MIN_PART_PIXELS
        visible pixels are left out, objects without parts dropped.
    """
    height, width = sample_image_size(rng)
    band_map, band_classes = stuff_layout(rng, height, width, STUFF)
    background = paint_background(rng, band_map, band_classes)
    rendered, owners = [], []
    for k in range(int(rng.integers(1, 4))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        radius = float(min(height, width) * rng.uniform(0.18, 0.32))
        items = _render_parts(rng, shape, rng.uniform(0.25, 0.75) * width,
                              rng.uniform(0.25, 0.75) * height, radius,
                              float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.45, 0.62)),
                              height, width)
        if items is not None:
            rendered += items
            owners += [(k, shape, part) for part in PART_NAMES]
    index_map = np.zeros((height, width), dtype=np.int32)
    for n, (y0, x0, mask, _, _) in enumerate(rendered):
        index_map[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = n + 1
    image = finish_image(composite(background, rendered), rng, sample_effects(rng))
    objects = {}
    for n, (k, shape, part) in enumerate(owners):
        visible = index_map == n + 1
        if visible.sum() >= MIN_PART_PIXELS:
            objects.setdefault(k, {"shape": shape, "parts": {}})["parts"][part] = visible
    result = []
    for obj in objects.values():
        x, y, w, h = mask_to_bbox(np.logical_or.reduce(list(obj["parts"].values())))
        result.append({**obj, "box": (x, y, x + w, y + h)})
    return image, result


def _supercategory_of(shape):
    return next(s for s, shapes in SUPERCATEGORY_SHAPES.items() if shape in shapes)


def generate_synthetic_parts(root, seed=0, *, num_train=300, num_val=60, force=False,
                             progress=False):
    """Write ``<root>/synthetic_parts`` (kept when an identical tree exists); returns its path.

    Image i draws from ``numpy.random.default_rng([seed, 7, i])``: same seed and sizes, same
    bytes. Built in a temporary folder and renamed into place.
    """
    params = {"version": PARTS_VERSION, "seed": int(seed), "num_train": int(num_train),
              "num_val": int(num_val)}
    out = os.path.join(root, "synthetic_parts")
    meta_path = os.path.join(out, "meta.json")
    if os.path.isfile(meta_path) and not force:
        with open(meta_path) as f:
            if json.load(f)["params"] == params:
                return out
        raise FileExistsError(f"{out} was generated with other parameters; pass force=True")
    tmp = os.path.join(root, f".synthetic_parts.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    base = os.path.join(tmp, "Pascal-Part", "VOCdevkit", "VOC2010")
    for sub in ("JPEGImages", "Annotations_Part_json_merged_part_classes"):
        os.makedirs(os.path.join(base, sub))
    os.makedirs(os.path.join(tmp, "annotations"))
    index = {s: {"object": {shape: {"part": {p: {"train": [], "val": []} for p in PART_NAMES}}
                            for shape in shapes}}
             for s, shapes in SUPERCATEGORY_SHAPES.items()}
    categories = [{"id": i + 1, "name": name,
                   "supercategory": _supercategory_of(name.split("+")[0])}
                  for i, name in enumerate(PART_CLASSES)]
    images, annotations = [], []
    try:
        total = num_train + num_val
        for i in tqdm(range(total), desc="synthetic parts", disable=not progress):
            split = "train" if i < num_train else "val"
            image, objects = render_part_scene(np.random.default_rng([seed, 7, i]))
            image_id, stem = i + 1, f"{i + 1:06d}"
            write_jpeg(os.path.join(base, "JPEGImages", stem + ".jpg"), image)
            records = []
            for obj in objects:
                parts = []
                for part, mask in obj["parts"].items():
                    parts.append({"name": part, "mask": [mask_to_rle(mask)]})
                    lists = index[_supercategory_of(obj["shape"])]["object"][obj["shape"]]
                    if stem not in lists["part"][part][split]:
                        lists["part"][part][split].append(stem)
                    if split == "train":
                        annotations.append({
                            "id": len(annotations) + 1, "image_id": image_id,
                            "category_id": PART_CLASSES.index(f"{obj['shape']}+{part}") + 1,
                            "segmentation": mask_to_rle(mask), "area": int(mask.sum()),
                            "bbox": mask_to_bbox(mask), "iscrowd": 0})
                x0, y0, x1, y1 = (int(v) for v in obj["box"])
                records.append({"name": obj["shape"], "parts": parts,
                                "bndbox": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}})
            write_json(os.path.join(base, "Annotations_Part_json_merged_part_classes",
                                    stem + ".json"), {"object": records})
            if split == "train":
                images.append({"id": image_id, "file_name": stem + ".jpg",
                               "height": image.shape[0], "width": image.shape[1]})
        write_json(os.path.join(base, "all_obj_part_to_image.json"), index)
        write_json(os.path.join(tmp, "annotations", "parts_train.json"),
                   {"info": INFO, "licenses": [], "images": images, "annotations": annotations,
                    "categories": categories})
        write_json(os.path.join(tmp, "meta.json"),
                   {"params": params, "part_classes": PART_CLASSES,
                    "supercategories": {k: list(v) for k, v in SUPERCATEGORY_SHAPES.items()}})
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

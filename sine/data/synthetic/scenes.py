"""Still-image scenes: 2-8 objects over a stuff background, fully annotated.

Annotations describe what is visible: an object covered by later ones keeps only its visible
pixels, and objects too hidden to be recognisable are removed from the scene *before* painting,
so no unannotated object pixels exist.
"""
from dataclasses import dataclass, field

import numpy as np

from .categories import CATEGORY_BY_ID, STUFF_CATEGORIES
from .render import (
    ObjectSpec,
    composite,
    finish_image,
    paint_background,
    render_object,
    sample_effects,
    stuff_layout,
    visible_instance_map,
)
from .textures import STUFF, sample_appearance

MIN_SIDE, MAX_SIDE = 160, 224
MAX_OBJECTS = 8
MIN_VISIBLE_PIXELS = 48
MIN_VISIBLE_FRACTION = 0.25  # of the object's full (unclipped, unoccluded) area
OUT_OF_FRAME_PROB = 0.15
STUFF_ID_BY_NAME = {c["name"]: c["id"] for c in STUFF_CATEGORIES}


@dataclass
class Scene:
    """A rendered scene. ``things``/``stuff`` are lists of (category_id, (H, W) bool mask)."""

    image: np.ndarray
    things: list = field(default_factory=list)
    stuff: list = field(default_factory=list)


def sample_image_size(rng):
    short = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    long = int(rng.integers(short, MAX_SIDE + 1))
    return (short, long) if rng.random() < 0.5 else (long, short)


def sample_instance_counts(rng, category_pool, category_weights=None, required=()):
    """Pick the categories of a scene and how many instances each has (2..MAX_OBJECTS total)."""
    num_categories = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.35, 0.3, 0.2]))
    pool = [c for c in category_pool if c not in required]
    p = None
    if category_weights is not None:
        w = np.array([category_weights[c] for c in pool], dtype=np.float64)
        p = w / w.sum()
    extra = max(0, num_categories - len(required))
    chosen = list(required) + [int(c) for c in rng.choice(pool, extra, replace=False, p=p)]
    counts = [int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25])) for _ in chosen]
    while sum(counts) > MAX_OBJECTS:
        counts[int(np.argmax(counts))] -= 1
    if sum(counts) < 2:
        counts[0] += 1
    return list(zip(chosen, counts))


def _sample_position(rng, height, width, radius):
    if rng.random() < OUT_OF_FRAME_PROB:
        # Centre near a border: part of the object falls outside the frame.
        edge = int(rng.integers(4))
        along = rng.uniform(0, width if edge < 2 else height)
        across = rng.uniform(-0.4 * radius, 0.3 * radius)
        if edge == 0:
            return along, across
        if edge == 1:
            return along, height - across
        if edge == 2:
            return across, along
        return width - across, along
    return rng.uniform(0, width), rng.uniform(0, height)


def sample_objects(rng, height, width, instance_counts):
    """ObjectSpecs in random z-order (first = bottom)."""
    objects = []
    for category_id, count in instance_counts:
        category = CATEGORY_BY_ID[category_id]
        for _ in range(count):
            radius = float(min(height, width) * rng.uniform(0.07, 0.22))
            cx, cy = _sample_position(rng, height, width, radius)
            objects.append(ObjectSpec(
                category_id=category_id,
                shape=category["shape"],
                appearance=sample_appearance(category["appearance"], rng),
                cx=float(cx), cy=float(cy), radius=radius,
                angle=float(rng.uniform(0, 2 * np.pi)),
                aspect=float(rng.uniform(0.45, 0.62)),
            ))
    order = rng.permutation(len(objects))
    return [objects[i] for i in order]


def drop_hidden(rendered, height, width):
    """Remove objects whose visible part is too small; repeat until stable (removal only helps
    the others). Returns the kept rendered items and the final visible-index map."""
    while True:
        index_map = visible_instance_map(rendered, height, width)
        visible = np.bincount(index_map.ravel(), minlength=len(rendered) + 1)[1:]
        keep = [
            item is not None
            and visible[k] >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * item[4])
            for k, item in enumerate(rendered)
        ]
        if all(keep):
            return rendered, index_map
        rendered = [item for item, k in zip(rendered, keep) if k]


def render_scene(rng, instance_counts):
    """Render one still image with the given (category_id, count) list.

    Returns:
        Scene: uint8 RGB image (H, W, 3), visible thing masks and stuff masks.
    """
    height, width = sample_image_size(rng)
    band_map, band_classes = stuff_layout(rng, height, width, STUFF)
    background = paint_background(rng, band_map, band_classes)
    objects = sample_objects(rng, height, width, instance_counts)
    rendered = [render_object(o, height, width) for o in objects]
    paired = [(o, r) for o, r in zip(objects, rendered) if r is not None]
    kept, index_map = drop_hidden([r for _, r in paired], height, width)
    kept_ids = {id(r) for r in kept}
    kept_objects = [o for o, r in paired if id(r) in kept_ids]
    image = finish_image(composite(background, kept), rng, sample_effects(rng))

    scene = Scene(image=image)
    for k, obj in enumerate(kept_objects):
        scene.things.append((obj.category_id, index_map == k + 1))
    is_background = index_map == 0
    for band, name in enumerate(band_classes):
        mask = (band_map == band) & is_background
        if mask.any():
            scene.stuff.append((STUFF_ID_BY_NAME[name], mask))
    return scene

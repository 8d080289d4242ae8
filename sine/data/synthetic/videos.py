"""Short synthetic videos in the DAVIS-2017 layout (semi-supervised VOS).

Objects move smoothly across a static or slowly panning background, cross (and so occlude)
each other, and a "re-entry" object leaves the frame and comes back. Every frame is annotated,
so J&F can be computed; object k is label k in palette PNGs (0 = background).
"""
import os

import numpy as np

from .categories import CATEGORY_BY_ID, THING_CATEGORIES
from .files import write_jpeg, write_palette_png
from .render import (
    ObjectSpec,
    composite,
    finish_image,
    paint_background,
    render_object,
    sample_effects,
    stuff_layout,
)
from .textures import STUFF, sample_appearance

BACKGROUND_MARGIN = 16  # extra canvas around the frame for a panning background
MAX_ATTEMPTS = 30


def davis_palette():
    """The DAVIS / PASCAL VOC colour map as a flat list of 768 ints."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def _ease(t):
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _crossing_track(rng, height, width, radius):
    """Centre positions (2, T-function) moving from one side of the frame towards the other."""
    margin = radius + 4
    start = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
    centre = np.array([width / 2, height / 2])
    end = centre - (start - centre) * rng.uniform(0.5, 1.0) + rng.normal(0, 10, size=2)
    end = np.clip(end, [margin, margin], [width - margin, height - margin])
    return lambda t: start + (end - start) * _ease(t)


def _reentry_track(rng, height, width, radius):
    """A track that leaves through a random border mid-video and returns by the end."""
    margin = radius + 4
    start = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
    axis = int(rng.integers(2))
    sign = 1 if rng.random() < 0.5 else -1
    limit = (width, height)[axis]
    distance = (limit - start[axis]) if sign > 0 else start[axis]
    # Fully outside (centre beyond the border by > the largest radius) while sin(pi t) >= 0.8.
    amplitude = (distance + 1.2 * radius) / 0.8
    direction = np.zeros(2)
    direction[axis] = sign
    return lambda t: start + direction * amplitude * np.sin(np.pi * t)


def _sample_video_objects(rng, height, width, num_objects, with_reentry):
    objects = []
    category_ids = rng.choice([c["id"] for c in THING_CATEGORIES], num_objects, replace=False)
    for k, category_id in enumerate(category_ids):
        category = CATEGORY_BY_ID[int(category_id)]
        radius = float(min(height, width) * rng.uniform(0.12, 0.2))
        track_fn = _reentry_track if (with_reentry and k == 0) else _crossing_track
        objects.append({
            "category_id": int(category_id),
            "shape": category["shape"],
            "appearance": sample_appearance(category["appearance"], rng),
            "radius": radius,
            "angle": float(rng.uniform(0, 2 * np.pi)),
            "spin": float(rng.uniform(-0.08, 0.08)),  # radians per frame
            "pulse": (float(rng.uniform(0, 0.1)), float(rng.uniform(0, 2 * np.pi))),
            "aspect": float(rng.uniform(0.45, 0.62)),
            "track": track_fn(rng, height, width, radius),
        })
    return objects


def _object_at(obj, frame, num_frames):
    t = frame / max(num_frames - 1, 1)
    cx, cy = obj["track"](t)
    amp, phase = obj["pulse"]
    radius = obj["radius"] * (1 + amp * np.sin(2 * np.pi * t + phase))
    return ObjectSpec(
        category_id=obj["category_id"], shape=obj["shape"], appearance=obj["appearance"],
        cx=float(cx), cy=float(cy), radius=radius,
        angle=obj["angle"] + obj["spin"] * frame, aspect=obj["aspect"],
        texture_radius=obj["radius"],
    )


def _label_map(rendered, labels, height, width):
    label_map = np.zeros((height, width), dtype=np.uint8)
    for item, label in zip(rendered, labels):
        if item is not None:
            y0, x0, mask, _, _ = item
            label_map[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = label
    return label_map


def _render_tracks(objects, z_order, num_frames, height, width):
    """Per frame: rendered items in z-order and the (H, W) uint8 label map."""
    frames = []
    for frame in range(num_frames):
        rendered = [render_object(_object_at(objects[i], frame, num_frames), height, width)
                    for i in z_order]
        frames.append((rendered, _label_map(rendered, [i + 1 for i in z_order], height, width)))
    return frames


def _valid(frames, z_order, with_reentry):
    """Every object clearly visible in frame 0; the re-entry object really leaves and returns."""
    first_rendered, first_labels = frames[0]
    for item, k in zip(first_rendered, z_order):
        if item is None or (first_labels == k + 1).sum() < 0.5 * item[4]:
            return False
    if with_reentry:
        present = [bool((labels == 1).any()) for _, labels in frames]
        gone = [i for i, p in enumerate(present) if not p]
        if not gone or not any(present[gone[-1] + 1 :]):
            return False
    return True


def render_video(rng, num_frames, height, width, with_reentry):
    """Render one video.

    Returns:
        (frames, labels, objects): lists of (H, W, 3) uint8 RGB frames and (H, W) uint8 label maps,
        and a list of per-object dicts (``label``, ``category_id``, ``reenters``).
    """
    num_objects = 3 if with_reentry else int(rng.choice([1, 2, 3], p=[0.2, 0.4, 0.4]))
    for _ in range(MAX_ATTEMPTS):
        objects = _sample_video_objects(rng, height, width, num_objects, with_reentry)
        z_order = [int(i) for i in rng.permutation(num_objects)]
        frames = _render_tracks(objects, z_order, num_frames, height, width)
        if _valid(frames, z_order, with_reentry):
            break
    else:
        raise RuntimeError("Could not sample a valid synthetic video; try another seed.")

    m = BACKGROUND_MARGIN
    band_map, band_classes = stuff_layout(rng, height + 2 * m, width + 2 * m, STUFF)
    canvas = paint_background(rng, band_map, band_classes)
    # Half the videos pan by at most the margin over the clip; the others keep a static background.
    pan = rng.uniform(-1, 1, size=2) * (m / max(num_frames - 1, 1)) * (rng.random() < 0.5)
    effects = sample_effects(rng)
    images = []
    for frame, (rendered, _) in enumerate(frames):
        ox, oy = (m + pan * frame).round().astype(int)
        background = canvas[oy : oy + height, ox : ox + width]
        images.append(finish_image(composite(background, rendered), rng, effects))
    info = [{"label": k + 1, "category_id": o["category_id"], "reenters": with_reentry and k == 0}
            for k, o in enumerate(objects)]
    return images, [labels for _, labels in frames], info


def write_video(davis_root, name, images, labels):
    """Write JPEG frames and palette PNG annotations of one video (DAVIS 480p folders)."""
    image_dir = os.path.join(davis_root, "JPEGImages", "480p", name)
    label_dir = os.path.join(davis_root, "Annotations", "480p", name)
    os.makedirs(image_dir)
    os.makedirs(label_dir)
    palette = davis_palette()
    for frame, (image, label) in enumerate(zip(images, labels)):
        write_jpeg(os.path.join(image_dir, f"{frame:05d}.jpg"), image)
        write_palette_png(os.path.join(label_dir, f"{frame:05d}.png"), label, palette)

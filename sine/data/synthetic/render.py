"""Compositing of objects over a stuff background, with z-order and visible-part masks."""
from dataclasses import dataclass

import numpy as np

from .shapes import shape_mask
from .textures import paint_appearance, paint_stuff


@dataclass
class ObjectSpec:
    """One object instance placed in a frame.

    ``texture_radius`` fixes the pattern period in the object's own frame, so a video object
    keeps its look while it scales; for still images it equals ``radius``.
    """

    category_id: int
    shape: str
    appearance: dict
    cx: float
    cy: float
    radius: float
    angle: float
    aspect: float = 0.55
    texture_radius: float = 0.0


def render_object(obj, height, width):
    """Rasterise one object, clipped to the frame.

    Returns:
        (y0, x0, mask, colour, full_area): window origin, (h, w) bool mask and (h, w, 3) float32
        colour of the clipped window, and the mask area before clipping; None when the object
        lies entirely outside the frame.
    """
    r = obj.radius + 1
    x0, x1 = int(np.floor(obj.cx - r)), int(np.ceil(obj.cx + r)) + 1
    y0, y1 = int(np.floor(obj.cy - r)), int(np.ceil(obj.cy + r)) + 1
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs + 0.5 - obj.cx, ys + 0.5 - obj.cy
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    u = (dx * cos + dy * sin) / obj.radius
    v = (-dx * sin + dy * cos) / obj.radius
    mask = shape_mask(obj.shape, u, v, obj.aspect)
    full_area = int(mask.sum())
    cy0, cy1 = max(y0, 0), min(y1, height)
    cx0, cx1 = max(x0, 0), min(x1, width)
    if cy0 >= cy1 or cx0 >= cx1:
        return None
    window = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    mask = mask[window]
    if not mask.any():
        return None
    texture_radius = obj.texture_radius or obj.radius
    colour = paint_appearance(obj.appearance, u[window], v[window], texture_radius)
    return cy0, cx0, mask, colour, full_area


def stuff_layout(rng, height, width, stuff_names):
    """Split a canvas into 1-3 wavy horizontal bands, one stuff class each.

    Returns:
        (band_map, band_classes): (H, W) int band index and the stuff name of each band.
    """
    num_bands = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3]))
    classes = [stuff_names[i] for i in rng.choice(len(stuff_names), num_bands, replace=False)]
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    band_map = np.zeros((height, width), dtype=np.int32)
    levels = np.sort(rng.uniform(0.25, 0.8, size=num_bands - 1))
    for level in levels:
        boundary = (
            level * height
            + rng.uniform(-0.25, 0.25) * (xs - width / 2)
            + rng.uniform(2, 0.06 * height) * np.sin(xs / rng.uniform(15, 45) + rng.uniform(0, 6.3))
        )
        band_map += (ys > boundary[None, :]).astype(np.int32)
    return band_map, classes


def paint_background(rng, band_map, band_classes):
    """(H, W, 3) float32 background with each band filled by its stuff texture."""
    height, width = band_map.shape
    image = np.zeros((height, width, 3), dtype=np.float32)
    for band, name in enumerate(band_classes):
        region = band_map == band
        if region.any():
            image[region] = paint_stuff(name, rng, height, width)[region]
    return image


def visible_instance_map(rendered, height, width):
    """(H, W) int map: index+1 of the top-most object at each pixel (list order = z-order)."""
    index_map = np.zeros((height, width), dtype=np.int32)
    for k, item in enumerate(rendered):
        if item is None:
            continue
        y0, x0, mask, _, _ = item
        window = index_map[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        window[mask] = k + 1
    return index_map


def composite(background, rendered):
    """Paint objects over a background in list order (later objects occlude earlier ones)."""
    image = background.copy()
    for item in rendered:
        if item is None:
            continue
        y0, x0, mask, colour, _ = item
        window = image[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        window[mask] = colour[mask]
    return image


def finish_image(image, rng, effects):
    """Global photometric jitter + sensor noise; returns uint8 RGB (H, W, 3).

    ``effects`` (gain, bias, noise_std) is drawn once per still image or once per video.
    """
    gain, bias, noise_std = effects
    image = image * gain + bias + rng.normal(0, noise_std, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def sample_effects(rng):
    return float(rng.uniform(0.85, 1.15)), float(rng.uniform(-12, 12)), float(rng.uniform(1.5, 5))

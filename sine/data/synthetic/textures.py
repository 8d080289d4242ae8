"""Appearance families of the synthetic "thing" objects and textures of the "stuff" regions.

Things are saturated and patterned; stuff is desaturated, so objects stand out without being
trivial to separate from each other: categories differ by shape *or* by appearance only.
Colour ranges are HSV with hue in degrees and saturation/value in [0, 1].
"""
import colorsys

import cv2
import numpy as np

APPEARANCES = ("red", "striped", "checkered", "dotted", "gradient")
STUFF = ("sky", "grass", "wall", "sand")

# family -> (pattern, primary colour range, secondary colour range); a range is
# ((hue_lo, hue_hi), (sat_lo, sat_hi), (val_lo, val_hi)).
# A secondary range of (None, None, value range) reuses the primary hue and saturation.
_FAMILIES = {
    "red": ("solid", ((-10, 12), (0.75, 1.0), (0.75, 1.0)), None),
    "striped": ("stripes", ((205, 230), (0.7, 1.0), (0.55, 0.9)),
                ((0, 360), (0.0, 0.12), (0.88, 1.0))),
    "checkered": ("checker", ((95, 135), (0.55, 0.85), (0.75, 0.95)),
                  (None, None, (0.25, 0.4))),
    "dotted": ("dots", ((45, 58), (0.75, 1.0), (0.85, 1.0)),
               ((0, 360), (0.0, 0.3), (0.05, 0.2))),
    "gradient": ("gradient", ((285, 315), (0.6, 0.9), (0.8, 1.0)),
                 ((170, 190), (0.6, 0.9), (0.8, 1.0))),
}
# Representative RGB colour per family and stuff class (visualisation metadata only).
FAMILY_COLORS = {"red": (225, 30, 25), "striped": (40, 90, 220), "checkered": (60, 170, 70),
                 "dotted": (240, 205, 20), "gradient": (215, 60, 220)}
STUFF_COLORS = {"sky": (200, 220, 235), "grass": (95, 120, 80), "wall": (140, 115, 100),
                "sand": (210, 195, 160)}


def hsv_to_rgb(h, s, v):
    """HSV (hue in degrees) -> RGB float array in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb((h % 360) / 360.0, s, v), dtype=np.float32) * 255


def _sample_hsv(rng, hsv_range, fallback_hue=None):
    hue_range, sat_range, val_range = hsv_range
    h = fallback_hue if hue_range is None else rng.uniform(*hue_range)
    s = rng.uniform(*sat_range) if sat_range is not None else None
    return h, s, rng.uniform(*val_range)


def sample_appearance(family, rng):
    """Draw the appearance of one instance of ``family`` (colours, pattern period, shading)."""
    pattern, primary, secondary = _FAMILIES[family]
    h1, s1, v1 = _sample_hsv(rng, primary)
    params = {"pattern": pattern, "c1": hsv_to_rgb(h1, s1, v1)}
    if secondary is not None:
        h2, s2, v2 = _sample_hsv(rng, secondary, fallback_hue=h1)
        params["c2"] = hsv_to_rgb(h2, s1 if s2 is None else s2, v2)
    params["period"] = float(rng.uniform(*{"stripes": (6, 11), "checker": (4, 8)}.get(
        pattern, (6, 9))))
    params["shade_gain"] = float(rng.uniform(0.0, 0.15))
    params["shade_angle"] = float(rng.uniform(0, 2 * np.pi))
    return params


def _pattern_weight(params, pu, pv, u):
    """Per-pixel weight of the secondary colour, (h, w) in [0, 1]."""
    pattern, period = params["pattern"], params["period"]
    if pattern == "stripes":
        return (np.floor(pu / (period / 2)) % 2).astype(np.float32)
    if pattern == "checker":
        return ((np.floor(pu / period) + np.floor(pv / period)) % 2).astype(np.float32)
    if pattern == "dots":
        du = np.mod(pu, period) - period / 2
        dv = np.mod(pv, period) - period / 2
        return (du**2 + dv**2 <= (0.3 * period) ** 2).astype(np.float32)
    if pattern == "gradient":
        return np.clip((u + 1) / 2, 0, 1).astype(np.float32)
    return np.zeros_like(u, dtype=np.float32)


def paint_appearance(params, u, v, texture_radius):
    """Colour an object in its local frame so the pattern moves and rotates with it.

    Args:
        params (dict): from :func:`sample_appearance`.
        u, v (ndarray): (h, w) local coordinates, unit = object radius.
        texture_radius (float): pixels per local unit used for the pattern period.

    Returns:
        ndarray: (h, w, 3) float32 RGB in [0, 255].
    """
    weight = _pattern_weight(params, u * texture_radius, v * texture_radius, u)[..., None]
    colour = params["c1"] * (1 - weight) + params.get("c2", params["c1"]) * weight
    direction = u * np.cos(params["shade_angle"]) + v * np.sin(params["shade_angle"])
    shade = 1 + params["shade_gain"] * direction[..., None]
    return (colour * shade).astype(np.float32)


def _low_freq_noise(rng, height, width, cells=6):
    """Smooth noise in [-1, 1] of shape (height, width)."""
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _bricks(rng, height, width, base, mortar):
    row = int(rng.integers(9, 15))
    brick_w = 2 * row
    ys, xs = np.mgrid[0:height, 0:width]
    rows = ys // row
    shifted = xs + (rows % 2) * (brick_w // 2)
    cols = shifted // brick_w
    jitter = rng.uniform(-14, 14, size=(rows.max() + 1, cols.max() + 1)).astype(np.float32)
    img = base + jitter[rows, cols][..., None]
    is_mortar = (ys % row == 0) | (shifted % brick_w == 0)
    img[is_mortar] = mortar
    return img


def paint_stuff(name, rng, height, width):
    """Texture of a stuff class over a whole (height, width) canvas, float32 RGB (H, W, 3)."""
    if name == "sky":
        top = hsv_to_rgb(rng.uniform(195, 215), rng.uniform(0.15, 0.3), rng.uniform(0.8, 0.95))
        bottom = hsv_to_rgb(rng.uniform(195, 215), rng.uniform(0.05, 0.12), rng.uniform(0.9, 1.0))
        t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        img = top * (1 - t) + bottom * t + 6 * _low_freq_noise(rng, height, width)[..., None]
        return np.broadcast_to(img, (height, width, 3)).astype(np.float32)
    if name == "grass":
        base = hsv_to_rgb(rng.uniform(70, 110), rng.uniform(0.2, 0.35), rng.uniform(0.35, 0.55))
        blades = rng.normal(0, 14, size=(height, width)).astype(np.float32)
        blades = cv2.blur(blades, (1, 5))  # vertical streaks
        return base + (blades + 15 * _low_freq_noise(rng, height, width))[..., None]
    if name == "wall":
        base = hsv_to_rgb(rng.uniform(10, 30), rng.uniform(0.15, 0.3), rng.uniform(0.45, 0.6))
        mortar = hsv_to_rgb(0, 0, rng.uniform(0.7, 0.8))
        return _bricks(rng, height, width, base, mortar)
    if name == "sand":
        base = hsv_to_rgb(rng.uniform(35, 45), rng.uniform(0.2, 0.35), rng.uniform(0.7, 0.85))
        speckle = rng.normal(0, 10, size=(height, width)).astype(np.float32)
        return base + (speckle + 12 * _low_freq_noise(rng, height, width))[..., None]
    raise ValueError(f"Unknown stuff class {name!r}; expected one of {STUFF}.")

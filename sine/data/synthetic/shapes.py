"""Binary shape masks evaluated analytically in an object's local frame.

Local coordinates ``(u, v)`` are pixel offsets from the object centre, rotated by the object's
angle and divided by its radius, so every shape fits the unit circle. Evaluating shapes as
inequalities (instead of rasterising polygons) keeps masks and textures on one pixel grid.
"""
import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "ellipse")

_RING_INNER = 0.55  # inner / outer radius of a ring
_CROSS_ARM = 0.34  # half-width of a cross arm
_STAR_INNER = 0.45  # inner / outer radius of the 5-pointed star


def _polar_polygon_radius(phi, r_start, r_end, sector):
    """Radius of the straight edge from ``(r_start, 0)`` to ``(r_end, sector)`` at angle ``phi``."""
    return (r_start * r_end * np.sin(sector)) / (
        r_end * np.sin(sector - phi) + r_start * np.sin(phi)
    )


def _regular_polygon(r, phi, num_vertices):
    sector = 2 * np.pi / num_vertices
    return r <= _polar_polygon_radius(np.mod(phi, sector), 1.0, 1.0, sector)


def _star(r, phi, num_points=5):
    period = 2 * np.pi / num_points
    half = period / 2
    folded = np.mod(phi, period)
    # The star is symmetric about each outer vertex: fold the far half onto the near one.
    folded = np.where(folded > half, period - folded, folded)
    return r <= _polar_polygon_radius(folded, 1.0, _STAR_INNER, half)


def shape_mask(shape, u, v, aspect=0.55):
    """Boolean mask of ``shape`` on local coordinates.

    Args:
        shape (str): one of :data:`SHAPES`.
        u, v (ndarray): (h, w) local coordinates, unit = object radius.
        aspect (float): minor / major axis ratio; used by "ellipse" only.

    Returns:
        ndarray: (h, w) bool.
    """
    r = np.hypot(u, v)
    # Polygons start with a vertex pointing "up" (negative v: image rows grow downwards).
    phi = np.arctan2(u, -v)
    if shape == "circle":
        return r <= 1.0
    if shape == "ellipse":
        return u**2 + (v / aspect) ** 2 <= 1.0
    if shape == "ring":
        return (r <= 1.0) & (r >= _RING_INNER)
    if shape == "square":
        return _regular_polygon(r, phi, 4)
    if shape == "triangle":
        return _regular_polygon(r, phi, 3)
    if shape == "hexagon":
        return _regular_polygon(r, phi, 6)
    if shape == "star":
        return _star(r, phi)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        limit = 0.9  # arm length, so the cross tips stay inside the unit circle
        return ((au <= _CROSS_ARM) & (av <= limit)) | ((av <= _CROSS_ARM) & (au <= limit))
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")

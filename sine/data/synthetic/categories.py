"""Category table of the synthetic dataset: shape x appearance "things" plus a few "stuff" classes.

Thing ids are 1..40 (appearance-major), stuff ids follow. A quarter of the things are NOVEL
(never shown in training). They are picked on two "diagonals" of the shape x appearance grid, so
every novel category combines a shape and an appearance that both occur in BASE categories:
recognising a novel category needs generalisation, not memorisation of unseen primitives.
"""
from .shapes import SHAPES
from .textures import APPEARANCES, FAMILY_COLORS, STUFF, STUFF_COLORS


def _is_novel(shape_index, appearance_index):
    return (shape_index - appearance_index) % len(SHAPES) in (0, len(SHAPES) // 2)


def _build_categories():
    categories = []
    for a, appearance in enumerate(APPEARANCES):
        for s, shape in enumerate(SHAPES):
            categories.append({
                "id": len(categories) + 1,
                "name": f"{appearance}_{shape}",
                "supercategory": appearance,
                "isthing": 1,
                "shape": shape,
                "appearance": appearance,
                "novel": _is_novel(s, a),
                "color": list(FAMILY_COLORS[appearance]),
            })
    for stuff in STUFF:
        categories.append({
            "id": len(categories) + 1,
            "name": stuff,
            "supercategory": "stuff",
            "isthing": 0,
            "color": list(STUFF_COLORS[stuff]),
        })
    return categories


SYNTHETIC_CATEGORIES = _build_categories()
THING_CATEGORIES = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]
STUFF_CATEGORIES = [c for c in SYNTHETIC_CATEGORIES if not c["isthing"]]
NOVEL_CATEGORY_IDS = [c["id"] for c in THING_CATEGORIES if c["novel"]]
BASE_CATEGORY_IDS = [c["id"] for c in THING_CATEGORIES if not c["novel"]]
CATEGORY_BY_ID = {c["id"]: c for c in SYNTHETIC_CATEGORIES}


def coco_categories(include_stuff):
    """Category entries as written to the COCO json files (stuff only for panoptic files)."""
    keys = ("id", "name", "supercategory", "isthing", "color")
    chosen = SYNTHETIC_CATEGORIES if include_stuff else THING_CATEGORIES
    return [{k: c[k] for k in keys} for c in chosen]


def get_synthetic_metadata():
    """Metadata shared by the instance splits (detectron2 conventions, contiguous ids 0..T-1).

    Returns:
        dict with ``thing_classes``, ``thing_colors``, ``thing_dataset_id_to_contiguous_id``,
        ``novel_category_ids`` / ``base_category_ids`` (dataset ids), their contiguous
        counterparts ``novel_contiguous_ids`` / ``base_contiguous_ids`` and the class names
        ``novel_classes`` / ``base_classes``.
    """
    id_map = {c["id"]: i for i, c in enumerate(THING_CATEGORIES)}
    return {
        "thing_classes": [c["name"] for c in THING_CATEGORIES],
        "thing_colors": [tuple(c["color"]) for c in THING_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": id_map,
        "novel_category_ids": list(NOVEL_CATEGORY_IDS),
        "base_category_ids": list(BASE_CATEGORY_IDS),
        "novel_contiguous_ids": [id_map[i] for i in NOVEL_CATEGORY_IDS],
        "base_contiguous_ids": [id_map[i] for i in BASE_CATEGORY_IDS],
        "novel_classes": [CATEGORY_BY_ID[i]["name"] for i in NOVEL_CATEGORY_IDS],
        "base_classes": [CATEGORY_BY_ID[i]["name"] for i in BASE_CATEGORY_IDS],
    }


def get_synthetic_panoptic_metadata():
    """Metadata of the panoptic splits in detectron2's "standard" panoptic convention.

    As for ``coco_2017_train_panoptic``: ``thing_classes`` and ``stuff_classes`` both list all
    classes (things first), and both id maps point into that single contiguous space.
    """
    meta = get_synthetic_metadata()
    names = [c["name"] for c in SYNTHETIC_CATEGORIES]
    colors = [tuple(c["color"]) for c in SYNTHETIC_CATEGORIES]
    meta.update({
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": names,
        "stuff_colors": colors,
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES) if not c["isthing"]
        },
    })
    return meta

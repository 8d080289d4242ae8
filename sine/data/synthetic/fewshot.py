"""TFA-style few-shot reference files for the novel categories.

References are drawn only from a *reference pool* (the first val images, built to contain every
novel category); the ``test_novel`` split is the rest of val, so no test image is ever a reference.
K-shot sets are nested (the 1-shot reference is the first of the 5-shot ones) and come from K
distinct images. Trees too small to have K candidates (tiny test trees) get shorter files and a
warning rather than an error, so any size can be generated.
"""
import logging
import os

import numpy as np

from .categories import CATEGORY_BY_ID, coco_categories
from .coco_format import INFO
from .files import write_json

logger = logging.getLogger(__name__)

FEWSHOT_STREAM = 7  # SeedSequence key of the reference draws (images use the split codes)
MIN_REFERENCE_AREA = 200  # pixels; tiny slivers make useless references


def reference_pool_size(num_val, num_novel, max_shot):
    """How many leading val images form the reference pool.

    Each pool image is built around two novel categories, so ``ceil(max_shot * num_novel / 2)``
    images would give every novel category ``max_shot`` candidate images; 50% more absorbs the
    instances lost to occlusion or the minimum reference area. At least a quarter of val (and one
    image) is always left for ``test_novel``.
    """
    needed = max(-(-3 * max_shot * num_novel // 4), -(-3 * num_val // 10))
    return max(0, min(needed, num_val - max(1, num_val // 4)))


def fewshot_file_name(shot, category_name):
    return f"full_box_{shot}shot_{category_name}_trainval.json"


def draw_references(annotations, pool_image_ids, novel_ids, shots, seed, fewshot_seed):
    """Pick reference annotations for every novel category.

    Returns:
        dict: category_id -> list of up to max(shots) annotations from distinct pool images.
    """
    rng = np.random.default_rng([seed, FEWSHOT_STREAM, fewshot_seed])
    pool = set(pool_image_ids)
    max_shot = max(shots)
    references = {}
    for category_id in novel_ids:
        by_image = {}
        for ann in annotations:
            if (ann["category_id"] == category_id and ann["image_id"] in pool
                    and ann["area"] >= MIN_REFERENCE_AREA):
                by_image.setdefault(ann["image_id"], []).append(ann)
        if len(by_image) < max_shot:
            name = CATEGORY_BY_ID[category_id]["name"]
            logger.warning(
                "Novel category %r has only %d reference-pool images (< %d shots): its few-shot "
                "files hold fewer references; generate more val images (--num-val).",
                name, len(by_image), max_shot,
            )
        image_ids = rng.permutation(sorted(by_image))[:max_shot]
        references[category_id] = [
            by_image[i][int(rng.integers(len(by_image[i])))] for i in image_ids
        ]
    return references


def write_fewshot_files(out_dir, images, annotations, pool_image_ids, shots, seed, fewshot_seeds):
    """Write ``fewshot/seed{s}/full_box_{K}shot_{name}_trainval.json`` for every combination.

    Returns:
        dict: ``"seed{s}"`` -> ``"{K}shot"`` -> list of reference annotation ids.
    """
    image_by_id = {img["id"]: img for img in images}
    novel_ids = [c["id"] for c in CATEGORY_BY_ID.values() if c.get("novel")]
    index = {}
    for fewshot_seed in range(fewshot_seeds):
        seed_dir = os.path.join(out_dir, f"seed{fewshot_seed}")
        os.makedirs(seed_dir)
        refs = draw_references(annotations, pool_image_ids, novel_ids, shots, seed, fewshot_seed)
        per_shot = index.setdefault(f"seed{fewshot_seed}", {})
        for shot in shots:
            ids = per_shot.setdefault(f"{shot}shot", [])
            for category_id, anns in refs.items():
                chosen = anns[:shot]
                ids.extend(a["id"] for a in chosen)
                file_name = fewshot_file_name(shot, CATEGORY_BY_ID[category_id]["name"])
                write_json(
                    os.path.join(seed_dir, file_name),
                    {"info": INFO,
                     "images": [image_by_id[a["image_id"]] for a in chosen],
                     "annotations": chosen,
                     "categories": coco_categories(include_stuff=False)},
                )
    return index

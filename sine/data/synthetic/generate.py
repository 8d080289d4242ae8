"""Generate the whole synthetic dataset tree (see datasets/synthetic.md).

Every image and video draws from its own ``numpy.random.Generator`` seeded by
``(seed, split code, index)``, so the output is byte-identical for a given seed and parameters.
The tree is built in a temporary sibling folder and renamed into place at the end: an
interrupted run never leaves a ``synthetic/`` folder that looks complete.
"""
import json
import logging
import os
import shutil

import numpy as np
from tqdm import tqdm

from .categories import (
    BASE_CATEGORY_IDS,
    NOVEL_CATEGORY_IDS,
    SYNTHETIC_CATEGORIES,
    THING_CATEGORIES,
    coco_categories,
)
from .coco_format import INFO, id_to_rgb, image_entry, scene_records, semantic_labels
from .fewshot import reference_pool_size, write_fewshot_files
from .files import write_jpeg, write_json, write_label_png, write_png
from .scenes import render_scene, sample_instance_counts
from .videos import render_video, write_video

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the output of a given seed changes
SPLIT_STREAMS = {"train": 1, "val": 2, "videos": 3}
# Val scenes: a novel category is this much likelier to be picked than a base one.
NOVEL_WEIGHT = 3.0


def _scene_plan(split, index, num_pool, rng):
    """(category_id, count) pairs of one scene. Train: base only. Val: all categories, novel
    favoured; reference-pool images are built around two novel categories each."""
    if split == "train":
        return sample_instance_counts(rng, BASE_CATEGORY_IDS)
    weights = {c["id"]: NOVEL_WEIGHT if c["novel"] else 1.0 for c in THING_CATEGORIES}
    required = ()
    if index < num_pool:
        n = len(NOVEL_CATEGORY_IDS)
        required = (NOVEL_CATEGORY_IDS[2 * index % n], NOVEL_CATEGORY_IDS[(2 * index + 1) % n])
    all_ids = [c["id"] for c in THING_CATEGORIES]
    return sample_instance_counts(rng, all_ids, weights, required)


def _generate_split(tmp_root, split, num_images, seed, ids, num_pool, progress):
    """Render and write one split; ``ids`` = [next image id, next segment id], updated in place.

    Returns:
        (images, annotations, panoptic_annotations) COCO lists.
    """
    image_dir = os.path.join(tmp_root, split)
    panoptic_dir = os.path.join(tmp_root, f"panoptic_{split}")
    sem_seg_dir = os.path.join(tmp_root, f"sem_seg_{split}")
    for folder in (image_dir, panoptic_dir, sem_seg_dir):
        os.makedirs(folder)
    contiguous = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
    images, annotations, panoptic = [], [], []
    for index in tqdm(range(num_images), desc=f"synthetic {split}", disable=not progress):
        rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
        scene = render_scene(rng, _scene_plan(split, index, num_pool, rng))
        image_id, stem = ids[0], f"{ids[0]:06d}"
        anns, segments, id_map, ids[1] = scene_records(scene, image_id, ids[1])
        ids[0] += 1
        height, width = scene.image.shape[:2]
        write_jpeg(os.path.join(image_dir, stem + ".jpg"), scene.image)
        write_png(os.path.join(panoptic_dir, stem + ".png"), id_to_rgb(id_map))
        write_label_png(os.path.join(sem_seg_dir, stem + ".png"),
                        semantic_labels(scene, contiguous))
        images.append(image_entry(image_id, stem + ".jpg", height, width))
        annotations.extend(anns)
        panoptic.append({"image_id": image_id, "file_name": stem + ".png",
                         "segments_info": segments})
    return images, annotations, panoptic


def _write_split_json(ann_dir, split, images, annotations, panoptic):
    write_json(os.path.join(ann_dir, f"instances_{split}.json"),
               {"info": INFO, "licenses": [], "images": images, "annotations": annotations,
                "categories": coco_categories(include_stuff=False)})
    write_json(os.path.join(ann_dir, f"panoptic_{split}.json"),
               {"info": INFO, "licenses": [], "images": images, "annotations": panoptic,
                "categories": coco_categories(include_stuff=True)})


def _generate_videos(tmp_root, params, progress):
    davis_root = os.path.join(tmp_root, "davis")
    names, infos = [], []
    lo, hi = params["video_frames"]
    height, width = params["video_size"]
    for index in tqdm(range(params["num_videos"]), desc="synthetic videos", disable=not progress):
        rng = np.random.default_rng([params["seed"], SPLIT_STREAMS["videos"], index])
        num_frames = int(rng.integers(lo, hi + 1))
        # The first video always has an object leaving and re-entering the frame.
        with_reentry = index == 0 or rng.random() < 0.3
        frames, labels, objects = render_video(rng, num_frames, height, width, with_reentry)
        name = f"video{index:02d}"
        write_video(davis_root, name, frames, labels)
        names.append(name)
        infos.append({"name": name, "num_frames": num_frames, "objects": objects})
    for year in ("2016", "2017"):
        os.makedirs(os.path.join(davis_root, "ImageSets", year))
        with open(os.path.join(davis_root, "ImageSets", year, "val.txt"), "w") as f:
            f.write("".join(n + "\n" for n in names))
    return infos


def _build_tree(tmp_root, params, progress):
    """Write every split into ``tmp_root``; returns the content of meta.json."""
    ann_dir = os.path.join(tmp_root, "annotations")
    os.makedirs(ann_dir)
    ids = [1, 1]  # next image id, next segment id: unique across splits
    splits = {}
    for split, count in (("train", params["num_train"]), ("val", params["num_val"])):
        num_pool = reference_pool_size(count, len(NOVEL_CATEGORY_IDS), max(params["shots"]))
        splits[split] = _generate_split(
            tmp_root, split, count, params["seed"], ids, num_pool if split == "val" else 0, progress
        )
        _write_split_json(ann_dir, split, *splits[split])

    val_images, val_annotations, _ = splits["val"]
    pool_ids = [img["id"] for img in val_images[:num_pool]]
    test_images = val_images[num_pool:]
    test_ids = {img["id"] for img in test_images}
    write_json(os.path.join(ann_dir, "instances_test_novel.json"),
               {"info": INFO, "licenses": [], "images": test_images,
                "annotations": [a for a in val_annotations if a["image_id"] in test_ids],
                "categories": coco_categories(include_stuff=False)})
    references = write_fewshot_files(
        os.path.join(tmp_root, "fewshot"), val_images, val_annotations, pool_ids,
        params["shots"], params["seed"], params["fewshot_seeds"],
    )
    videos = _generate_videos(tmp_root, params, progress)
    return {
        "params": params,
        "categories": SYNTHETIC_CATEGORIES,
        "novel_category_ids": NOVEL_CATEGORY_IDS,
        "base_category_ids": BASE_CATEGORY_IDS,
        "reference_pool_image_ids": pool_ids,
        "fewshot_reference_ids": references,
        "videos": videos,
        "counts": {split: {"images": len(v[0]), "annotations": len(v[1])}
                   for split, v in splits.items()},
    }


def _read_params(dataset_dir):
    try:
        with open(os.path.join(dataset_dir, "meta.json")) as f:
            return json.load(f)["params"]
    except (OSError, ValueError, KeyError):
        return None


def generate_synthetic(root, seed=0, *, num_train=600, num_val=200, num_videos=6,
                       shots=(1, 5), fewshot_seeds=3, video_frames=(16, 20),
                       video_size=(240, 320), force=False, progress=False):
    """Generate ``<root>/synthetic`` (skipped when an identical complete tree already exists).

    Args:
        root (str): datasets root (usually $DETECTRON2_DATASETS).
        seed (int): master seed; same seed and sizes give byte-identical files.
        num_train, num_val, num_videos (int): split sizes.
        shots (tuple[int]): K of the few-shot reference files.
        fewshot_seeds (int): number of reference draws (``seed0`` .. ``seed{n-1}``).
        video_frames (tuple[int, int]): inclusive range of frames per video.
        video_size (tuple[int, int]): (height, width) of the video frames.
        force (bool): regenerate even if a complete tree exists.
        progress (bool): show tqdm progress bars.

    Returns:
        str: path of the dataset folder.
    """
    if num_train < 1 or num_val < 1 or not shots or min(shots) < 1 or fewshot_seeds < 0:
        raise ValueError("num_train/num_val must be >= 1, shots non-empty and >= 1, "
                         "fewshot_seeds >= 0.")
    params = {"version": GENERATOR_VERSION, "seed": int(seed), "num_train": int(num_train),
              "num_val": int(num_val), "num_videos": int(num_videos),
              "shots": sorted(int(k) for k in shots), "fewshot_seeds": int(fewshot_seeds),
              "video_frames": [int(v) for v in video_frames],
              "video_size": [int(v) for v in video_size]}
    dataset_dir = os.path.join(root, "synthetic")
    existing = _read_params(dataset_dir)
    if existing == params and not force:
        logger.info("Synthetic dataset already complete at %s; skipping.", dataset_dir)
        return dataset_dir
    outdated = existing is not None and existing.get("version") != GENERATOR_VERSION and \
        {k: v for k, v in existing.items() if k != "version"} == \
        {k: v for k, v in params.items() if k != "version"}
    if outdated:
        # Same request, older generator (e.g. a tree without the semantic labels of version 2):
        # nothing of the user's to keep, so it is regenerated.
        logger.info("%s was made by synthetic-generator version %s; regenerating it with "
                    "version %s.", dataset_dir, existing.get("version"), GENERATOR_VERSION)
    elif os.path.exists(dataset_dir) and not force:
        raise FileExistsError(
            f"{dataset_dir} exists but was generated with other parameters ({existing}); "
            "pass force=True (--force) to regenerate it."
        )
    os.makedirs(root, exist_ok=True)
    tmp_root = os.path.join(root, f".synthetic.tmp-{os.getpid()}")
    shutil.rmtree(tmp_root, ignore_errors=True)
    try:
        meta = _build_tree(tmp_root, params, progress)
        # meta.json is written last: its presence marks a finished tree.
        write_json(os.path.join(tmp_root, "meta.json"), meta)
        _swap_into_place(tmp_root, dataset_dir)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    logger.info("Wrote synthetic dataset to %s", dataset_dir)
    return dataset_dir


def _swap_into_place(tmp_root, dataset_dir):
    """Replace ``dataset_dir`` by ``tmp_root`` with renames only (no half-written state)."""
    old = None
    if os.path.exists(dataset_dir):
        old = f"{tmp_root}.old"
        os.rename(dataset_dir, old)
    os.rename(tmp_root, dataset_dir)
    if old is not None:
        shutil.rmtree(old)

"""Readers of the few-shot semantic segmentation benchmarks (spec §7.1, datasets/README.md).

Each reader turns a benchmark's files into episodes in the format of
``sine/data/fss_episodes.py`` and is registered with detectron2 as

* ``fss_coco20i_fold{f}_{K}shot``   (f = 0..3; classes ``f + 4v``; HSNet pickles + PNG masks)
* ``fss_pascal5i_fold{f}_{K}shot``  (f = 0..3; classes ``5f .. 5f+4``; HSNet lists, SBD masks)
* ``fss_lvis92i_fold{f}_{K}shot``   (f = 0..9; ``val_cat_ids[f + 10v]``; LVIS-92i pickles)
* ``fss_fss1000_{K}shot``           (the 240 test classes, ids 760..999)
* ``fss_pascal_part_fold{f}_{K}shot`` (f = 0..3: animals, indoor, person, vehicles; one-shot
  part segmentation with Matcher's protocol, classes = that super-category's object+part pairs)
* ``fss_synthetic_parts_fold{f}_{K}shot`` (the same protocol on the generated synthetic parts)

for K in {1, 5}, with metadata ``evaluator_type="fss"``, ``fss_class_ids``, ``ignore_label``.
Every episode also carries its "class_name" (COCO / PASCAL VOC / LVIS category names, FSS-1000
folder names; "_" read as a space), SegIC's text prompt.

Episodes are drawn up front, so they do not depend on workers or processes. The default
``sampler="official"`` (``TEST.FSS.SAMPLER``) reproduces the official episode sequences exactly
(spec §7.1: numpy's legacy generator seeded with ``seed``, one permutation per draw, supports
redrawn while equal to the query, the benchmark's own list order and file reading); for seed 0
these are the paper's episodes. ``sampler="balanced"`` draws by the same rules from
``np.random.default_rng(seed)`` and reads the lists leniently (every non-empty line).
Registration touches no file; a missing file raises ``FileNotFoundError`` naming the path and
the datasets/README.md section when the dataset is loaded.
"""
import json
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from detectron2.data import MetadataCatalog

from sine.data.datasets.common import datasets_root, require_path
from sine.data.fss_episodes import (
    LegacyDraws,
    check_sampler,
    class_uniform_picker,
    draw_episodes,
    make_episode,
    name_episodes,
    official_class_episodes,
    register_episode_dataset,
    set_fss_class_ids,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARKS",
    "dataset_name",
    "register_fss_benchmark",
    "register_all_fss_benchmarks",
    "coco20i_class_ids",
    "pascal5i_class_ids",
]

FSS1000_TEST_CLASS_OFFSET = 760  # official: test classes are 760..999 of the 1000
PASCAL_VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor")


def coco_class_names():
    """The 80 COCO thing names in category-id order (COCO-20i class ids 0..79)."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [c["name"] for c in COCO_CATEGORIES if c["isthing"]]


def lvis_class_names():
    """LVIS v1 category id -> name ("aerosol_can" -> "aerosol can")."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    return {c["id"]: c["name"].replace("_", " ") for c in LVIS_CATEGORIES}


def _read_list(path, sampler):
    """Lines of a split list. Official: ``f.read().split("\\n")[:-1]``, so a file without a
    trailing newline loses its last line; balanced: every non-empty stripped line."""
    with open(path) as f:
        text = f.read()
    if sampler == "official":
        return text.split("\n")[:-1]
    return [line.strip() for line in text.split("\n") if line.strip()]


# ----------------------------------------------------------------------------- COCO-20i
def coco20i_class_ids(fold):
    """The 20 test classes of COCO-20i fold ``fold``: ``fold + 4v`` (interleaved), 0-based."""
    return [fold + 4 * v for v in range(20)]


def _coco_record(base, image_name):
    stem = os.path.splitext(image_name)[0]
    return {
        "file_name": os.path.join(base, image_name),
        "sem_seg_file_name": os.path.join(base, "annotations", stem + ".png"),
        "sem_seg_encoding": "class+1",
        "image_id": image_name,
    }


def load_coco20i(root, fold, shots, num_episodes, seed, name, sampler="official"):
    """Per episode: class uniform over the fold, query uniform among its images (HSNet
    ``splits/val/fold{f}.pkl``: class -> image names, in list order), K supports != query.
    Official order: ``c = draw(fold classes)``, ``q = draw(images)``, ``supports(images, q)``
    (the episode index is not used)."""
    base = os.path.join(root, "COCO2014")
    split = require_path(os.path.join(base, "splits", "val", f"fold{fold}.pkl"), name, "coco-20i")
    with open(split, "rb") as f:
        classwise = pickle.load(f)
    images_of = {c: list(classwise.get(c, [])) for c in coco20i_class_ids(fold)}
    if check_sampler(sampler) == "official":
        return official_class_episodes(num_episodes, coco20i_class_ids(fold), images_of, shots,
                                       seed, record_of=lambda n, c: _coco_record(base, n),
                                       where=f"dataset '{name}' ({split})")
    few = [c for c, names in images_of.items() if len(names) < 2]
    if few:
        logger.warning("%s: classes %s have fewer than 2 images and are never sampled", name, few)
    return draw_episodes(num_episodes, class_uniform_picker(images_of), images_of, shots, seed,
                         record_of=lambda n, c: _coco_record(base, n))


# ----------------------------------------------------------------------------- PASCAL-5i
def pascal5i_class_ids(fold):
    """The 5 test classes of PASCAL-5i fold ``fold``: ``5 fold .. 5 fold + 4``, 0-based."""
    return [5 * fold + i for i in range(5)]


def _read_pascal_list(path, sampler="official"):
    """HSNet list: one ``<image>__<class + 1>`` per line -> [(image, class), ...]."""
    pairs = []
    for i, line in enumerate(_read_list(path, sampler), 1):
        image, sep, cls = line.rpartition("__")
        if not sep or not cls.strip().isdigit():
            raise ValueError(f"{path}, line {i}: expected '<image>__<class + 1>', got {line!r}")
        pairs.append((image, int(cls) - 1))
    return pairs


def _pascal_record(base, image):
    return {
        "file_name": os.path.join(base, "JPEGImages", image + ".jpg"),
        "sem_seg_file_name": os.path.join(base, "SegmentationClassAug", image + ".png"),
        "sem_seg_encoding": "class+1",
        "sem_seg_ignore_value": 255,  # SBD object boundaries
        "image_id": image,
    }


def load_pascal5i(root, fold, shots, num_episodes, seed, name, sampler="official"):
    """Episode e: query = line ``e mod len`` of HSNet ``splits/val/fold{f}.txt`` (in order), K
    supports among the listed images of its class (file order), other than the query."""
    base = os.path.join(root, "VOC2012")
    path = require_path(os.path.join(base, "splits", "val", f"fold{fold}.txt"), name, "pascal-5i")
    pairs = _read_pascal_list(path, check_sampler(sampler))
    if not pairs:
        raise ValueError(f"dataset '{name}': {path} lists no image")
    images_of = {}
    for image, cls in pairs:
        images_of.setdefault(cls, []).append(image)
    if sampler == "official":
        draws = LegacyDraws(seed)
        episodes = []
        for e in range(num_episodes):
            image, cls = pairs[e % len(pairs)]
            supports = draws.supports(images_of[cls], image, shots)
            episodes.append(make_episode(e, cls, _pascal_record(base, image),
                                         [_pascal_record(base, s) for s in supports]))
        return episodes

    def pick(e, rng):
        image, cls = pairs[e % len(pairs)]
        return cls, image

    return draw_episodes(num_episodes, pick, images_of, shots, seed,
                         record_of=lambda n, c: _pascal_record(base, n))


# ----------------------------------------------------------------------------- LVIS-92i
def lvis92i_class_ids(annotations, fold, shots, nfolds=10):
    """``val_cat_ids[fold + 10 v]`` over the classes with more than ``shots`` images (in the
    pickle's order); so the 1- and 5-shot folds can differ (spec §9.21)."""
    val_cat_ids = [c for c in annotations if len(annotations[c]) > shots]
    return [val_cat_ids[fold + nfolds * v] for v in range(len(val_cat_ids) // nfolds)]


def load_lvis92i(root, fold, shots, num_episodes, seed, name, sampler="official"):
    """Episode e: class = fold class ``e mod n`` (round robin), query and K supports uniform
    among its images (pickle order); the mask is the union of the class's instances.
    Official order: ``q = draw(images)``, ``supports(images, q)``. ``class_id`` is the LVIS
    category id (officially its index in the fold: the same per-class metric).

    ``LVIS/lvis_val.pkl``: ``{category_id: {image name (relative to LVIS/coco/):
    {"annotations": [{"segmentation": polygons | RLE}, ...]}}}`` (Matcher's release).
    """
    base = os.path.join(root, "LVIS")
    path = require_path(os.path.join(base, "lvis_val.pkl"), name, "lvis-92i")
    with open(path, "rb") as f:
        annotations = pickle.load(f)
    classes = lvis92i_class_ids(annotations, fold, shots)
    if not classes:
        raise ValueError(
            f"dataset '{name}': {path} has fewer than 10 classes with more than {shots} images"
        )
    set_fss_class_ids(name, classes)
    images_of = {c: list(annotations[c]) for c in classes}

    def record_of(image, c):
        segms = [a["segmentation"] for a in annotations[c][image]["annotations"]]
        return {"file_name": os.path.join(base, "coco", image), "segmentations": segms,
                "image_id": image}

    if check_sampler(sampler) == "official":
        draws = LegacyDraws(seed)
        episodes = []
        for e in range(num_episodes):
            c = classes[e % len(classes)]
            q = draws.draw(images_of[c])
            supports = draws.supports(images_of[c], q, shots)
            episodes.append(make_episode(e, c, record_of(q, c),
                                         [record_of(s, c) for s in supports]))
        return episodes

    def pick(e, rng):
        c = classes[e % len(classes)]
        return c, images_of[c][rng.integers(len(images_of[c]))]

    return draw_episodes(num_episodes, pick, images_of, shots, seed, record_of=record_of)


# ----------------------------------------------------------------------------- FSS-1000
def _fss1000_images(base, name, sampler="official"):
    """Sorted test classes and, in the official order, their ``.jpg`` images."""
    path = require_path(os.path.join(base, "splits", "test.txt"), name, "fss-1000")
    categories = sorted(_read_list(path, sampler))
    images = []
    for cat in categories:
        folder = require_path(os.path.join(base, "data", cat), name, "fss-1000", kind="dir")
        # Official order: sorted full paths, so 1, 10, 2, ... 9.
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        images += [(p, cat) for p in files if p.endswith(".jpg")]
    return categories, images


def _fss1000_record(image):
    return {"file_name": image, "sem_seg_file_name": os.path.splitext(image)[0] + ".png",
            "sem_seg_encoding": "binary", "image_id": image}


def load_fss1000(root, fold, shots, num_episodes, seed, name, sampler="official"):
    """Episode e: query = test image ``e mod #images``; K supports uniform among images 1..10 of
    its class other than the query (official: ``draw(range(1, 11))`` compared as file paths).
    ``num_episodes=None``: one episode per test image."""
    base = os.path.join(root, "FSS-1000")
    categories, images = _fss1000_images(base, name, check_sampler(sampler))
    if not images:
        raise ValueError(f"dataset '{name}': no .jpg image under {base}/data/<test classes>")
    class_of = {cat: FSS1000_TEST_CLASS_OFFSET + i for i, cat in enumerate(categories)}
    set_fss_class_ids(name, class_of.values())
    candidates_of = {
        class_of[cat]: [os.path.join(base, "data", cat, f"{k}.jpg") for k in range(1, 11)]
        for cat in categories
    }

    def pick(e, rng):
        image, cat = images[e % len(images)]
        return class_of[cat], image

    n = len(images) if num_episodes is None else num_episodes
    class_names = {c: cat.replace("_", " ") for cat, c in class_of.items()}
    if sampler == "official":
        draws = LegacyDraws(seed)
        episodes = []
        for e in range(n):
            c, q = pick(e, None)
            supports = draws.supports(candidates_of[c], q, shots)
            episodes.append(make_episode(e, c, _fss1000_record(q),
                                         [_fss1000_record(s) for s in supports]))
        return name_episodes(episodes, class_names)
    episodes = draw_episodes(n, pick, candidates_of, shots, seed,
                             record_of=lambda p, c: _fss1000_record(p))
    return name_episodes(episodes, class_names)


# ----------------------------------------------------------------------------- PASCAL-Part
PASCAL_PART_SUPERCATEGORIES = ("animals", "indoor", "person", "vehicles")
PASCAL_PART_MAX_EPISODES = 2500
# Matcher leaves this object+part out of the evaluated classes.
PASCAL_PART_EXCLUDED = ("aeroplane+TAIL",)


def pascal_part_classes(index, supercategory):
    """The evaluated classes of one super-category, in index order: every ``object+PART`` pair
    (part names as merged by Matcher's pre-processing) with images in both train and val.

    ``index``: ``all_obj_part_to_image.json`` ({super-category: {"object": {object: {"part":
    {part: {"train": [image ids], "val": [image ids]}}}}}}).
    """
    objects = index[supercategory]["object"]
    return [f"{obj}+{part}" for obj in objects for part, split in objects[obj]["part"].items()
            if split["train"] and split["val"] and f"{obj}+{part}" not in PASCAL_PART_EXCLUDED]


def _pascal_part_view(base, image_id, obj_name, part_name, rng):
    """A record of one object of ``obj_name`` in image ``image_id`` (drawn uniformly), its
    ``part_name`` masks (union) and the object's box as ``crop_box``; None if that object has no
    such part (the caller draws again, as Matcher does)."""
    path = os.path.join(base, "Annotations_Part_json_merged_part_classes", f"{image_id}.json")
    with open(path) as f:
        objects = [o for o in json.load(f)["object"] if o["name"] == obj_name]
    if not objects:
        raise ValueError(f"{path} has no '{obj_name}' although the index lists the image")
    obj = objects[rng.integers(len(objects))]
    masks = [m for p in obj["parts"] if p["name"] == part_name for m in p["mask"]]
    if not masks:
        return None
    box = obj["bndbox"]
    height, width = masks[0]["size"]
    return {"file_name": os.path.join(base, "JPEGImages", f"{image_id}.jpg"),
            "segmentations": masks, "height": height, "width": width, "image_id": image_id,
            "crop_box": [int(box["xmin"]), int(box["ymin"]), int(box["xmax"]),
                         int(box["ymax"])]}


def load_pascal_part(root, fold, shots, num_episodes, seed, name, sampler="official"):
    """Matcher's one-shot PASCAL-Part protocol for super-category ``fold``.

    Both samplers draw by Matcher's rules from ``np.random.default_rng(seed)``; Matcher's exact
    episode sequence (global numpy state) is not reproduced.

    Episode e: class = ``classes[e mod n]``; query = an image of the class's val list drawn
    uniformly, one object of that class in it, and the union of the part's masks on it; the K
    supports likewise among the other val images of the class. Draws whose object lacks the part
    are repeated. Query and supports are cropped to their object's box. Episodes: min(number of
    entries of all val part lists of the super-category, 2500), unless ``num_episodes`` is given.
    """
    check_sampler(sampler)
    base = os.path.join(root, "Pascal-Part", "VOCdevkit", "VOC2010")
    path = require_path(os.path.join(base, "all_obj_part_to_image.json"), name, "pascal-part")
    with open(path) as f:
        index = json.load(f)
    supercategory = PASCAL_PART_SUPERCATEGORIES[fold]
    classes = pascal_part_classes(index, supercategory)
    if not classes:
        raise ValueError(f"dataset '{name}': {path} has no part class of '{supercategory}' with "
                         "both train and val images")
    set_fss_class_ids(name, range(len(classes)))
    MetadataCatalog.get(name).set(fss_class_names=classes, supercategory=supercategory)
    objects = index[supercategory]["object"]
    if num_episodes is None:
        total = sum(len(split["val"]) for obj in objects.values()
                    for split in obj["part"].values())
        num_episodes = min(total, PASCAL_PART_MAX_EPISODES)
    rng = np.random.default_rng(seed)

    def draw(obj_name, part_name, exclude):
        candidates = [i for i in objects[obj_name]["part"][part_name]["val"] if i not in exclude]
        if not candidates:
            raise ValueError(f"dataset '{name}': no val image of {obj_name}+{part_name} besides "
                             f"{sorted(exclude)}")
        for _ in range(1000):
            image_id = candidates[rng.integers(len(candidates))]
            record = _pascal_part_view(base, image_id, obj_name, part_name, rng)
            if record is not None:
                return record
        raise ValueError(f"dataset '{name}': no {obj_name} with a {part_name} after 1000 draws")

    episodes = []
    for e in range(num_episodes):
        c = e % len(classes)
        obj_name, part_name = classes[c].split("+", 1)
        query = draw(obj_name, part_name, set())
        supports = []
        for _ in range(shots):
            taken = {query["image_id"], *(s["image_id"] for s in supports)}
            supports.append(draw(obj_name, part_name, taken))
        episodes.append(make_episode(e, c, query, supports))
    return episodes


def load_synthetic_parts(root, fold, shots, num_episodes, seed, name, sampler="official"):
    """:func:`load_pascal_part` on the generated ``<root>/synthetic_parts`` tree
    (sine/data/synthetic/parts.py), whose layout is PASCAL-Part's."""
    return load_pascal_part(os.path.join(root, "synthetic_parts"), fold, shots, num_episodes,
                            seed, name, sampler=sampler)


# ----------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class Benchmark:
    """One FSS benchmark: its reader, folds, official episode count and README section."""

    key: str  # CLI name
    prefix: str  # registered names: fss_<prefix>_fold{f}_{K}shot
    num_folds: int
    num_episodes: Optional[int]  # None = one per test image
    section: str  # datasets/README.md anchor
    load: Callable
    class_ids: Optional[Callable] = None  # fold -> classes, when known without reading data
    class_names: Optional[Callable] = None  # () -> class id -> name (list or dict)


BENCHMARKS = {
    "coco": Benchmark("coco", "coco20i", 4, 1000, "coco-20i", load_coco20i, coco20i_class_ids,
                      coco_class_names),
    "pascal": Benchmark("pascal", "pascal5i", 4, 1000, "pascal-5i", load_pascal5i,
                        pascal5i_class_ids, lambda: PASCAL_VOC_CLASSES),
    "lvis": Benchmark("lvis", "lvis92i", 10, 2300, "lvis-92i", load_lvis92i,
                      class_names=lvis_class_names),
    "fss1000": Benchmark("fss1000", "fss1000", 1, None, "fss-1000", load_fss1000),
    "pascal_part": Benchmark("pascal_part", "pascal_part", 4, None, "pascal-part",
                             load_pascal_part),
    "synthetic_parts": Benchmark("synthetic_parts", "synthetic_parts", 4, None, "synthetic",
                                 load_synthetic_parts),
}


def _benchmark(key):
    if key not in BENCHMARKS:
        raise KeyError(f"unknown FSS benchmark '{key}'; choose one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[key]


def dataset_name(benchmark, fold, shots):
    """Registered name of a fold, e.g. ``fss_coco20i_fold0_1shot`` / ``fss_fss1000_5shot``."""
    b = _benchmark(benchmark)
    if b.num_folds == 1:
        return f"fss_{b.prefix}_{shots}shot"
    return f"fss_{b.prefix}_fold{fold}_{shots}shot"


def _check_files(episodes, name, section):
    """Every image and mask file of the episodes exists (a clear error before evaluating)."""
    seen = set()
    for episode in episodes:
        for record in [episode["query"], *episode["supports"]]:
            for key in ("file_name", "sem_seg_file_name"):
                path = record.get(key)
                if path and path not in seen:
                    require_path(path, name, section)
                    seen.add(path)
    return episodes


def register_fss_benchmark(benchmark, fold, shots, root=None, num_episodes=None, seed=0,
                           name=None, sampler="official"):
    """(Re-)register one fold of ``benchmark`` ("coco", "pascal", "lvis", "fss1000").

    Args:
        root: datasets root (default ``$DETECTRON2_DATASETS``, read now).
        num_episodes: default: the official count (1000 / 1000 / 2300 / one per test image).
        seed: seed of the episode draw (official: 0).
        name: registered name (default :func:`dataset_name`).
        sampler: "official" (the official episode sequences) or "balanced".
    Returns:
        the registered name; an earlier registration of it is replaced.
    """
    b = _benchmark(benchmark)
    if not 0 <= fold < b.num_folds:
        raise ValueError(f"{benchmark} has folds 0..{b.num_folds - 1}, got {fold}")
    root = datasets_root() if root is None else root
    name = name or dataset_name(benchmark, fold, shots)
    num_episodes = b.num_episodes if num_episodes is None else num_episodes
    check_sampler(sampler)

    def load():
        episodes = b.load(root, fold, shots, num_episodes, seed, name, sampler=sampler)
        if b.class_names is not None:
            name_episodes(episodes, b.class_names())
        return _check_files(episodes, name, b.section)

    register_episode_dataset(
        name, load, b.class_ids(fold) if b.class_ids else None, shots, replace=True,
        benchmark=benchmark, fold=fold, seed=int(seed), num_episodes=num_episodes,
        sampler=sampler,
    )
    return name


def register_all_fss_benchmarks(root=None, shots=(1, 5)):
    """Register every fold of every benchmark for each K in ``shots``; returns the names."""
    names = []
    for key, b in BENCHMARKS.items():
        for k in shots:
            names += [register_fss_benchmark(key, f, k, root) for f in range(b.num_folds)]
    return names


# Importing this module registers every fold (nothing is read until a dataset is used).
register_all_fss_benchmarks()

"""Few-shot instance segmentation / detection benchmarks (spec §7.2), registered with detectron2.

Every dataset here uses *novel-only* contiguous class ids 0..N-1 (the novel categories sorted by
dataset id) and ``evaluator_type="coco"``:

* ``coco_trainval_novel_{K}shot_seed{s}``: TFA's COCO reference sets, one record per reference
  annotation (K per class; datasets/README.md#coco-novel). Seed 0 is TFA's top-level file set,
  seeds 1-9 its ``seed{s}/`` folders.
* ``coco_test_novel``: TFA's ``datasplit/5k.json`` on val2014, annotations of the 20 novel
  (PASCAL VOC) classes only.
* ``voc_segm_val_novel``: COCO-format conversion of VOC val (COCO2VOC, datasets/README.md#coco2voc;
  the official name is ``VOCSegm_val_novel``).
* ``synthetic_fsod_{K}shot_seed{s}`` / ``synthetic_fsod_test_novel``: the same protocol on the
  built-in synthetic dataset (datasets/synthetic.md), registered when it exists.

Registration touches no file; a missing file raises ``FileNotFoundError`` naming the path and the
README section when the dataset is loaded.
"""
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

from sine.data.datasets.coco_format import load_coco_json_with_ids
from sine.data.datasets.common import datasets_root, require_path
from sine.data.synthetic import get_synthetic_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARKS",
    "COCO_NOVEL_IDS",
    "dataset_names",
    "load_tfa_references",
    "load_novel_test_set",
    "register_coco_fsod",
    "register_synthetic_fsod",
    "register_voc_fsod",
]

# The 20 COCO classes that are PASCAL VOC classes (TFA's novel split), by COCO id.
COCO_NOVEL_IDS = [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72]
COCO_TFA_SHOTS = (1, 2, 3, 5, 10, 30)
COCO_TFA_SEEDS = range(10)
# VOC class names -> COCO names, to match the categories of the converted VOC json by name.
_VOC_TO_COCO_NAMES = {
    "aeroplane": "airplane", "motorbike": "motorcycle", "diningtable": "dining table",
    "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv",
}

# benchmark -> (reference dataset name pattern, test dataset name)
BENCHMARKS = {
    "coco": ("coco_trainval_novel_{shots}shot_seed{seed}", "coco_test_novel"),
    "voc": ("coco_trainval_novel_{shots}shot_seed{seed}", "voc_segm_val_novel"),
    "synthetic": ("synthetic_fsod_{shots}shot_seed{seed}", "synthetic_fsod_test_novel"),
}


def dataset_names(benchmark, shots, seed):
    """(reference dataset, test dataset) registered names of one benchmark run."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown FSOD benchmark '{benchmark}'; choose from {sorted(BENCHMARKS)}")
    refs, test = BENCHMARKS[benchmark]
    return refs.format(shots=shots, seed=seed), test


def _coco_novel_categories():
    names = {c["id"]: c["name"] for c in COCO_CATEGORIES if c["isthing"]}
    return [(i, names[i]) for i in COCO_NOVEL_IDS]


def _novel_metadata(categories, **extra):
    """Metadata of a novel-only dataset: categories = [(dataset id, name)] sorted by id."""
    return dict(
        thing_classes=[name for _, name in categories],
        thing_dataset_id_to_contiguous_id={cid: i for i, (cid, _) in enumerate(categories)},
        evaluator_type="coco",
        **extra,
    )


def _register(name, loader, **metadata):
    """Register ``name``, replacing an earlier registration (e.g. of another data root)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def _compressed_segmentation(segm, height, width):
    """Uncompressed RLE (``counts`` a list, e.g. COCO crowd regions) -> compressed RLE."""
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_util.frPyObjects(segm, height, width)
    return segm


def load_tfa_references(files, image_root, shot, seed, categories, dataset_name, section):
    """Reference records of one TFA-style few-shot draw: one record per annotation.

    As the official loader: each annotation of class c's file is one reference (its image with
    that single instance); a class with more than ``shot`` annotations keeps ``shot`` of them,
    drawn with a generator seeded by ``seed`` (the official draw is unseeded; TFA files hold
    exactly K, so this normally does not happen).

    Args:
        files: one path per category, in the order of ``categories``.
        image_root: folder the files' ``images[i]["file_name"]`` are relative to.
        shot, seed: K and the draw index (for the subsampling and messages).
        categories: [(dataset id, name)] sorted by id; position = contiguous novel id.
        dataset_name, section: for missing-file errors.
    Returns:
        list[dict]: detectron2 records with one annotation each (``id``, ``bbox`` XYWH_ABS,
        ``segmentation``, ``iscrowd``, contiguous ``category_id``).
    """
    rng = np.random.RandomState(seed)
    records = []
    for contiguous_id, ((category_id, name), path) in enumerate(zip(categories, files)):
        with PathManager.open(require_path(path, dataset_name, section)) as f:
            content = json.load(f)
        images = {img["id"]: img for img in content["images"]}
        anns = [a for a in content["annotations"] if a["category_id"] == category_id]
        if len(anns) > shot:
            logger.warning("%s: %d annotations of '%s' for %d shots; keeping a random %d",
                           path, len(anns), name, shot, shot)
            anns = [anns[i] for i in sorted(rng.choice(len(anns), shot, replace=False))]
        elif len(anns) < shot:
            logger.warning("%s holds %d annotations of '%s', fewer than %d shots",
                           path, len(anns), name, shot)
        for ann in anns:
            img = images[ann["image_id"]]
            records.append({
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": img["height"], "width": img["width"], "image_id": img["id"],
                "annotations": [{
                    "id": ann["id"], "bbox": ann["bbox"], "bbox_mode": BoxMode.XYWH_ABS,
                    "segmentation": _compressed_segmentation(
                        ann["segmentation"], img["height"], img["width"]),
                    "iscrowd": ann.get("iscrowd", 0), "category_id": contiguous_id,
                }],
            })
    if not records:
        raise ValueError(f"dataset '{dataset_name}' has no reference annotation; "
                         f"see datasets/README.md#{section}")
    return records


def load_novel_test_set(json_file, image_root, id_map, dataset_name, section):
    """COCO-format test records with only the annotations of ``id_map``'s (novel) classes.

    Every image is kept (images without novel objects still count for false positives).

    Args:
        id_map: {dataset category id: contiguous novel id}.
    """
    records = load_coco_json_with_ids(json_file, image_root, None, section)
    for record in records:
        record["annotations"] = [
            dict(a, category_id=id_map[a["category_id"]])
            for a in record.get("annotations", []) if a["category_id"] in id_map
        ]
    logger.info("'%s': %d images, %d novel-class annotations", dataset_name, len(records),
                sum(len(r["annotations"]) for r in records))
    return records


def _tfa_seed_dir(split_dir, seed, shot, class_name):
    """TFA keeps seed 0 at the top level and seeds 1-9 in ``seed{s}/``; accept ``seed0/`` too."""
    file_name = f"full_box_{shot}shot_{class_name}_trainval.json"
    if seed == 0:
        top = os.path.join(split_dir, file_name)
        alt = os.path.join(split_dir, "seed0", file_name)
        return alt if not PathManager.isfile(top) and PathManager.isfile(alt) else top
    return os.path.join(split_dir, f"seed{seed}", file_name)


def register_coco_fsod(root):
    """COCO-NOVEL reference sets (all TFA shots and seeds) and ``coco_test_novel``."""
    categories = _coco_novel_categories()
    split_dir = os.path.join(root, "cocosplit")
    image_root = os.path.join(root, "coco", "trainval2014")
    for shot in COCO_TFA_SHOTS:
        for seed in COCO_TFA_SEEDS:
            name = BENCHMARKS["coco"][0].format(shots=shot, seed=seed)
            _register(
                name,
                lambda shot=shot, seed=seed, name=name: load_tfa_references(
                    [_tfa_seed_dir(split_dir, seed, shot, n) for _, n in categories],
                    image_root, shot, seed, categories, name, "coco-novel"),
                **_novel_metadata(categories, image_root=image_root, shot=shot, fewshot_seed=seed),
            )
    json_file = os.path.join(split_dir, "datasplit", "5k.json")
    test_root = os.path.join(root, "coco", "val2014")
    meta = _novel_metadata(categories, json_file=json_file, image_root=test_root)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    _register(
        "coco_test_novel",
        lambda: load_novel_test_set(json_file, test_root, id_map, "coco_test_novel", "coco-novel"),
        **meta,
    )


def _canonical(name):
    name = name.lower().replace("_", " ").strip()
    name = _VOC_TO_COCO_NAMES.get(name.replace(" ", ""), name)
    return name.replace(" ", "")


def voc_category_map(json_categories, novel_names):
    """{VOC json category id: contiguous COCO-novel id}.

    Categories are matched by name (VOC names such as ``aeroplane`` map to their COCO names);
    when the names cannot all be matched, by position: the json's categories sorted by id
    follow the COCO novel order (official behaviour, datasets/README.md#coco2voc).
    """
    cats = sorted(json_categories, key=lambda c: c["id"])
    if len(cats) != len(novel_names):
        raise ValueError(f"the COCO2VOC json has {len(cats)} categories, expected "
                         f"{len(novel_names)} (the VOC classes); see datasets/README.md#coco2voc")
    index = {_canonical(n): i for i, n in enumerate(novel_names)}
    by_name = {c["id"]: index.get(_canonical(c["name"])) for c in cats}
    if None not in by_name.values() and len(set(by_name.values())) == len(cats):
        return by_name
    logger.warning("COCO2VOC categories %s do not all match COCO novel names; mapping by "
                   "position (sorted by id)", [c["name"] for c in cats])
    return {c["id"]: i for i, c in enumerate(cats)}


def _load_voc_test(json_file, image_root, name, novel_names):
    with PathManager.open(require_path(json_file, name, "coco2voc")) as f:
        categories = json.load(f)["categories"]
    id_map = voc_category_map(categories, novel_names)
    # Needed by COCOEvaluator to map contiguous ids back to the json's ids.
    MetadataCatalog.get(name).set(thing_dataset_id_to_contiguous_id=id_map)
    return load_novel_test_set(json_file, image_root, id_map, name, "coco2voc")


def register_voc_fsod(root):
    """``voc_segm_val_novel``: VOC val in COCO format, classes in COCO-novel order."""
    names = [n for _, n in _coco_novel_categories()]
    base = os.path.join(root, "VOCOutput")
    json_file = os.path.join(base, "annotations", "val_converted.json")
    image_root = os.path.join(base, "JPEGImages")
    name = BENCHMARKS["voc"][1]
    _register(
        name,
        lambda: _load_voc_test(json_file, image_root, name, names),
        thing_classes=names, evaluator_type="coco", json_file=json_file, image_root=image_root,
    )


def register_synthetic_fsod(root):
    """The FSOD protocol on ``<root>/synthetic`` (novel-only ids); returns the registered names."""
    dataset_dir = os.path.join(root, "synthetic")
    meta_path = require_path(os.path.join(dataset_dir, "meta.json"), "synthetic_fsod", "synthetic")
    with open(meta_path) as f:
        params = json.load(f)["params"]
    synth = get_synthetic_metadata()
    categories = sorted(zip(synth["novel_category_ids"], synth["novel_classes"]))
    image_root = os.path.join(dataset_dir, "val")
    names = []
    for seed in range(params["fewshot_seeds"]):
        for shot in params["shots"]:
            name = BENCHMARKS["synthetic"][0].format(shots=shot, seed=seed)
            files = [os.path.join(dataset_dir, "fewshot", f"seed{seed}",
                                  f"full_box_{shot}shot_{n}_trainval.json") for _, n in categories]
            _register(
                name,
                lambda files=files, shot=shot, seed=seed, name=name: load_tfa_references(
                    files, image_root, shot, seed, categories, name, "synthetic"),
                **_novel_metadata(categories, image_root=image_root, shot=shot, fewshot_seed=seed),
            )
            names.append(name)
    name = BENCHMARKS["synthetic"][1]
    json_file = os.path.join(dataset_dir, "annotations", "instances_test_novel.json")
    meta = _novel_metadata(categories, json_file=json_file, image_root=image_root)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    _register(
        name,
        lambda: load_novel_test_set(json_file, image_root, id_map, name, "synthetic"),
        **meta,
    )
    return names + [name]


def register_all_fsod(root):
    """Register every FSOD benchmark under ``root`` (synthetic only if it has been generated)."""
    register_coco_fsod(root)
    register_voc_fsod(root)
    if os.path.isfile(os.path.join(root, "synthetic", "meta.json")):
        register_synthetic_fsod(root)


register_all_fsod(datasets_root())

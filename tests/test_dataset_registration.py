"""Dataset registrations on tiny generated datasets in the official layouts.

Each test writes real file formats (JPEG images, COCO JSON, RGB-encoded panoptic PNGs, RLE JSON)
under a temporary DETECTRON2_DATASETS root, re-registers the predefined names there, loads them
through DatasetCatalog and checks what training relies on: files exist and instance ids survive.
"""
import contextlib
import copy
import importlib.util
import json
import os
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image
from pycocotools import mask as mask_util

from sine.data.datasets import (
    ensure_instance_ids,
    load_sam_segmentations,
    register_ade20k_panoptic,
    register_coco,
    register_coco_instances_with_ids,
    register_lvis,
    register_objects365_sam,
)
from sine.data.datasets.common import datasets_root

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 24, 32

# (module, predefined-name tables)
_MODULES = {
    "coco": (register_coco.register_all_coco, ["_PREDEFINED_SPLITS_COCO_INS",
                                               "_PREDEFINED_SPLITS_COCO_PANOPTIC"]),
    "ade": (register_ade20k_panoptic.register_all_ade20k_panoptic,
            ["_PREDEFINED_SPLITS_ADE20K_PANOPTIC"]),
    "o365": (register_objects365_sam.register_all_objects365_sam,
             ["_PREDEFINED_SPLITS_OBJECTS365_SAM"]),
    "lvis": (register_lvis.register_all_lvis, ["_PREDEFINED_SPLITS_LVIS",
                                               "_PREDEFINED_SPLITS_PACO"]),
}
_MODULE_OF = {
    "coco": register_coco, "ade": register_ade20k_panoptic,
    "o365": register_objects365_sam, "lvis": register_lvis,
}


def _unregister(names):
    for name in names:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


@contextlib.contextmanager
def registered_under(root, which):
    """Re-register the predefined names of one module under ``root``; restore afterwards."""
    register_all, tables = _MODULES[which]
    names = [n for t in tables for n in getattr(_MODULE_OF[which], t)]
    _unregister(names)
    register_all(str(root))
    try:
        yield
    finally:
        _unregister(names)
        register_all(datasets_root())


def _write_jpeg(path, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _write_json(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(content, f)


def _rgb_ids(ids):
    """COCO panoptic PNG encoding: id = R + 256 G + 256^2 B."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _read_ids(path):
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _box_mask(y0, y1, x0, x1):
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _square_polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _write_panoptic(root, image_dir, pan_dir, json_file, categories, images):
    """``images``: list of (image_id, stem, [(segment_id, category_id, (y0, y1, x0, x1))])."""
    annotations, image_infos = [], []
    for seed, (image_id, stem, segments) in enumerate(images):
        _write_jpeg(os.path.join(root, image_dir, stem + ".jpg"), seed)
        ids = np.zeros((H, W), dtype=np.int64)
        for segment_id, _, (y0, y1, x0, x1) in segments:
            ids[y0:y1, x0:x1] = segment_id
        png = os.path.join(root, pan_dir, stem + ".png")
        os.makedirs(os.path.dirname(png), exist_ok=True)
        Image.fromarray(_rgb_ids(ids)).save(png)
        image_infos.append({"id": image_id, "file_name": stem + ".jpg", "height": H, "width": W})
        annotations.append({
            "image_id": image_id,
            "file_name": stem + ".png",
            "segments_info": [
                {"id": s, "category_id": c, "iscrowd": 0, "area": int((ids == s).sum()),
                 "bbox": [x0, y0, x1 - x0, y1 - y0]}
                for s, c, (y0, y1, x0, x1) in segments
            ],
        })
    _write_json(os.path.join(root, json_file),
                {"images": image_infos, "annotations": annotations, "categories": categories})


def _check_panoptic_records(records):
    for record in records:
        assert os.path.isfile(record["file_name"])
        png_ids = set(np.unique(_read_ids(record["pan_seg_file_name"]))) - {0}
        assert {s["id"] for s in record["segments_info"]} == png_ids
        assert (record["height"], record["width"]) == (H, W)


# --------------------------------------------------------------------------- COCO


def _coco_thing_categories():
    return [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]


def test_coco_instances_keep_annotation_ids(tmp_path):
    for i, stem in enumerate(["000000000001", "000000000002"]):
        _write_jpeg(str(tmp_path / "coco/train2017" / f"{stem}.jpg"), i)
    annotations = [
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [2, 2, 8, 8],
         "area": 64, "segmentation": _square_polygon(2, 2, 10, 10)},
        {"id": 102, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [12, 4, 6, 6],
         "area": 36, "segmentation": _rle(_box_mask(4, 10, 12, 18))},
        {"id": 205, "image_id": 2, "category_id": 90, "iscrowd": 0, "bbox": [0, 0, 5, 5],
         "area": 25, "segmentation": _square_polygon(0, 0, 5, 5)},
    ]
    images = [{"id": i, "file_name": f"00000000000{i}.jpg", "height": H, "width": W}
              for i in (1, 2)]
    _write_json(str(tmp_path / "coco/annotations/instances_train2017.json"),
                {"images": images, "annotations": annotations,
                 "categories": _coco_thing_categories()})

    with registered_under(tmp_path, "coco"):
        records = DatasetCatalog.get("coco_2017_train_ins")
        meta = MetadataCatalog.get("coco_2017_train_ins")
    assert [r["image_id"] for r in records] == [1, 2]
    assert all(os.path.isfile(r["file_name"]) for r in records)
    assert [[a["id"] for a in r["annotations"]] for r in records] == [[101, 102], [205]]
    # COCO ids 1, 3, 90 -> contiguous 0, 2, 79
    assert [a["category_id"] for r in records for a in r["annotations"]] == [0, 2, 79]
    assert meta.evaluator_type == "coco" and len(meta.thing_classes) == 80


def test_coco_panoptic_segment_ids_match_png(tmp_path):
    # Segment ids use the G and B channels too; 184 is the stuff class "tree-merged".
    images = [
        (139, "000000000139", [(1001, 1, (0, 10, 0, 10)), (70000 + 5, 184, (12, 24, 0, 32))]),
        (285, "000000000285", [(300, 3, (2, 20, 4, 30))]),
    ]
    _write_panoptic(str(tmp_path), "coco/val2017", "coco/panoptic_val2017",
                    "coco/annotations/panoptic_val2017.json", COCO_CATEGORIES, images)

    with registered_under(tmp_path, "coco"):
        records = DatasetCatalog.get("coco_2017_val_panoptic_sine")
        meta = MetadataCatalog.get("coco_2017_val_panoptic_sine")
    _check_panoptic_records(records)
    segments = records[0]["segments_info"]
    tree = [c["id"] for c in COCO_CATEGORIES].index(184)
    assert [(s["category_id"], s["isthing"]) for s in segments] == [(0, True), (tree, False)]
    assert meta.evaluator_type == "coco_panoptic_seg" and len(meta.stuff_classes) == 133


# --------------------------------------------------------------------------- ADE20K panoptic


def test_ade20k_panoptic_mask2former_layout(tmp_path):
    categories = [
        {"id": 1, "name": "wall", "isthing": 0, "color": [120, 120, 120]},
        {"id": 8, "name": "bed", "isthing": 1, "color": [204, 5, 255]},
        {"id": 13, "name": "person", "isthing": 1, "color": [150, 5, 61]},
    ]
    images = [
        ("ADE_train_00000001", "ADE_train_00000001",
         [(1, 1, (0, 24, 0, 16)), (2 + 256 * 3, 13, (0, 12, 16, 32))]),
        ("ADE_train_00000002", "ADE_train_00000002", [(7, 8, (4, 20, 4, 20))]),
    ]
    base = "ADEChallengeData2016"
    _write_panoptic(str(tmp_path), f"{base}/images/training", f"{base}/ade20k_panoptic_train",
                    f"{base}/ade20k_panoptic_train.json", categories, images)

    with registered_under(tmp_path, "ade"):
        records = DatasetCatalog.get("ade20k_panoptic_train")
        meta = MetadataCatalog.get("ade20k_panoptic_train")
    _check_panoptic_records(records)
    assert records[0]["image_id"] == "ADE_train_00000001"
    assert [s["category_id"] for r in records for s in r["segments_info"]] == [0, 2, 1]
    assert meta.stuff_classes == ["wall", "bed", "person"]
    assert meta.thing_dataset_id_to_contiguous_id == {8: 1, 13: 2}


# --------------------------------------------------------------------------- Objects365 + SAM


def _load_prepare_script():
    path = os.path.join(ROOT, "datasets", "prepare_objects365_sam.py")
    spec = importlib.util.spec_from_file_location("prepare_objects365_sam", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_objects365_sam_masks_load_by_annotation_id(tmp_path):
    masks = {11: _box_mask(0, 8, 0, 8), 12: _box_mask(10, 20, 5, 25), 21: _box_mask(3, 9, 3, 30)}
    uncompressed = mask_util.frPyObjects(  # counts as a list: the other RLE flavour
        {"size": [H, W], "counts": [int(x) for x in _uncompressed_counts(masks[21])]}, H, W
    )
    assert mask_util.decode(uncompressed).sum() == masks[21].sum()
    sam_json = {
        "images": [{"id": 1, "file_name": "images/v1/patch0/objects365_v1_00000001.jpg",
                    "height": H, "width": W},
                   {"id": 2, "file_name": "images/v1/patch1/objects365_v1_00000002.jpg",
                    "height": H, "width": W}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 5, "bbox": [0, 0, 8, 8], "iscrowd": 0,
             "segmentation": _rle(masks[11])},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [5, 10, 20, 10], "iscrowd": 0,
             "segmentation": _rle(masks[12])},
            {"id": 13, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2], "iscrowd": 0},
            {"id": 21, "image_id": 2, "category_id": 5, "bbox": [3, 3, 27, 6], "iscrowd": 0,
             "segmentation": {"size": [H, W],
                              "counts": [int(x) for x in _uncompressed_counts(masks[21])]}},
        ],
        "categories": [{"id": i, "name": f"class{i}"} for i in range(1, 9)],
    }
    _write_json(str(tmp_path / "sam_input.json"), sam_json)
    _load_prepare_script().main(["--input", str(tmp_path / "sam_input.json"),
                                 "--root", str(tmp_path)])
    for i, patch in ((1, "patch0"), (2, "patch1")):
        _write_jpeg(str(tmp_path / f"objects365/train/{patch}/objects365_v1_0000000{i}.jpg"), i)

    with registered_under(tmp_path, "o365"):
        records = DatasetCatalog.get("objects365_sam_train")
    assert all(os.path.isfile(r["file_name"]) for r in records)
    assert all(os.path.isfile(r["segmentation_file"]) for r in records)
    # the annotation without a mask was dropped by the prepare script
    assert [[a["id"] for a in r["annotations"]] for r in records] == [[11, 12], [21]]
    assert all("segmentation" not in a for r in records for a in r["annotations"])

    for record in records:
        before = copy.deepcopy(record)
        filled = load_sam_segmentations(record)
        assert record == before  # the dataset list never accumulates masks
        for anno in filled["annotations"]:
            np.testing.assert_array_equal(mask_util.decode(anno["segmentation"]),
                                          masks[anno["id"]])


def _uncompressed_counts(mask):
    """Column-major run lengths starting with a run of zeros (COCO uncompressed RLE)."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds)
    return counts if flat[0] == 0 else np.concatenate([[0], counts])


def test_sam_mask_file_missing_names_path_and_section(tmp_path):
    record = {"file_name": "x.jpg", "segmentation_file": str(tmp_path / "nope.json"),
              "annotations": [{"id": 1, "category_id": 0}]}
    with pytest.raises(FileNotFoundError, match=r"nope\.json.*README\.md#objects365-sam"):
        load_sam_segmentations(record)
    no_file = {"file_name": "x.jpg", "annotations": []}
    assert load_sam_segmentations(no_file) is no_file


# --------------------------------------------------------------------------- LVIS and PACO


def test_lvis_and_paco_keep_annotation_ids(tmp_path):
    for i, split in ((1, "train2017"), (2, "val2017")):
        _write_jpeg(str(tmp_path / f"coco/{split}/00000000000{i}.jpg"), i)
    lvis_images = [
        {"id": i, "height": H, "width": W, "not_exhaustive_category_ids": [2],
         "neg_category_ids": [], "coco_url": f"http://images.cocodataset.org/{s}/00000000000{i}.jpg"}
        for i, s in ((1, "train2017"), (2, "val2017"))
    ]
    lvis_annos = [
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [2, 2, 8, 8], "area": 64,
         "segmentation": _square_polygon(2, 2, 10, 10)},
        {"id": 9, "image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25,
         "segmentation": _square_polygon(0, 0, 5, 5)},
    ]
    _write_json(str(tmp_path / "lvis/lvis_v1_train.json"),
                {"images": lvis_images, "annotations": lvis_annos,
                 "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]})
    paco_images = [{"id": 1, "file_name": "train2017/000000000001.jpg", "height": H, "width": W}]
    paco_annos = [
        {"id": 500, "image_id": 1, "category_id": 23, "bbox": [2, 2, 8, 8], "area": 64,
         "iscrowd": 0, "segmentation": _square_polygon(2, 2, 10, 10)},
        {"id": 501, "image_id": 1, "category_id": 1204, "bbox": [2, 2, 4, 4], "area": 16,
         "iscrowd": 0, "segmentation": _square_polygon(2, 2, 6, 6)},
    ]
    _write_json(str(tmp_path / "paco/annotations/paco_lvis_v1_train.json"),
                {"images": paco_images, "annotations": paco_annos,
                 "categories": [{"id": 23, "name": "bench"}, {"id": 1204, "name": "bench:leg"}]})

    with registered_under(tmp_path, "lvis"):
        lvis = DatasetCatalog.get("lvis_v1_train_ins")
        paco = DatasetCatalog.get("paco_lvis_v1_train")
        paco_meta = MetadataCatalog.get("paco_lvis_v1_train")
    assert all(os.path.isfile(r["file_name"]) for r in lvis + paco)
    assert [(a["id"], a["category_id"]) for r in lvis for a in r["annotations"]] == [(7, 2), (9, 0)]
    assert lvis[0]["not_exhaustive_category_ids"] == [2]
    assert [(a["id"], a["category_id"]) for a in paco[0]["annotations"]] == [(500, 0), (501, 1)]
    assert paco_meta.thing_classes == ["bench", "bench:leg"]


# --------------------------------------------------------------------------- missing files


@pytest.mark.parametrize(
    "which,name,expected,section",
    [
        ("coco", "coco_2017_train_ins", "coco/annotations/instances_train2017.json", "coco"),
        ("coco", "coco_2017_train_panoptic_sine", "coco/annotations/panoptic_train2017.json",
         "coco"),
        ("ade", "ade20k_panoptic_val", "ADEChallengeData2016/ade20k_panoptic_val.json",
         "ade20k-panoptic"),
        ("o365", "objects365_sam_train", "objects365/sam_masks/train", "objects365-sam"),
        ("lvis", "lvis_v1_train_ins", "lvis/lvis_v1_train.json", "lvis"),
        ("lvis", "paco_lvis_v1_train", "paco/annotations/paco_lvis_v1_train.json", "paco"),
    ],
)
def test_missing_dataset_names_path_and_readme_section(tmp_path, which, name, expected, section):
    with registered_under(tmp_path, which):
        with pytest.raises(FileNotFoundError) as info:
            DatasetCatalog.get(name)
    message = str(info.value)
    assert os.path.join(str(tmp_path), expected) in message
    assert f"datasets/README.md#{section}" in message


def test_missing_image_is_reported(tmp_path):
    (tmp_path / "coco/val2017").mkdir(parents=True)
    _write_json(str(tmp_path / "coco/annotations/instances_val2017.json"),
                {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W}],
                 "annotations": [], "categories": _coco_thing_categories()})
    with registered_under(tmp_path, "coco"):
        with pytest.raises(FileNotFoundError, match=r"val2017/000000000001\.jpg.*#coco"):
            DatasetCatalog.get("coco_2017_val_ins")


def _github_anchors(markdown):
    anchors = set(re.findall(r'<a (?:id|name)="([^"]+)"', markdown))
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_readme_has_every_section_the_errors_point_to():
    with open(os.path.join(ROOT, "datasets", "README.md")) as f:
        anchors = _github_anchors(f.read())
    needed = {"coco", "ade20k-panoptic", "objects365-sam", "lvis", "paco", "custom-datasets",
              "coco-20i", "pascal-5i", "lvis-92i", "fss-1000", "coco-novel", "coco2voc",
              "davis", "youtube-vos"}
    assert needed <= anchors, sorted(needed - anchors)


# --------------------------------------------------------------------------- custom datasets


def _write_custom_coco(tmp_path):
    _write_jpeg(str(tmp_path / "images/a.jpg"))
    annotations = [
        {"id": 40 + i, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [i, i, 4, 4],
         "area": 16, "segmentation": _square_polygon(i, i, i + 4, i + 4)}
        for i in range(3)
    ]
    _write_json(str(tmp_path / "ann.json"),
                {"images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
                 "annotations": annotations, "categories": [{"id": 1, "name": "widget"}]})
    return str(tmp_path / "ann.json"), str(tmp_path / "images")


def test_custom_coco_dataset_keeps_ids(tmp_path):
    json_file, image_root = _write_custom_coco(tmp_path)
    name = f"test_custom_ids_{tmp_path.name}"
    register_coco_instances_with_ids(name, {}, json_file, image_root)
    try:
        records = DatasetCatalog.get(name)
        assert [a["id"] for a in records[0]["annotations"]] == [40, 41, 42]
        assert MetadataCatalog.get(name).thing_classes == ["widget"]
    finally:
        _unregister([name])


def test_detectron2_registered_dataset_gets_ids_by_order(tmp_path):
    json_file, image_root = _write_custom_coco(tmp_path)
    name = f"test_custom_noids_{tmp_path.name}"
    register_coco_instances(name, {}, json_file, image_root)  # drops annotation ids
    try:
        record = DatasetCatalog.get(name)[0]
    finally:
        _unregister([name])
    assert all("id" not in a for a in record["annotations"])
    view_a = ensure_instance_ids(copy.deepcopy(record))
    view_b = ensure_instance_ids(copy.deepcopy(record))
    assert [a["id"] for a in view_a["annotations"]] == [1, 2, 3]
    assert view_a == view_b  # two views of one image agree on every instance id


def test_ensure_instance_ids_fills_gaps_and_rejects_duplicates():
    record = {"annotations": [{"category_id": 0}, {"id": 1, "category_id": 0}, {"category_id": 1}]}
    assert [a["id"] for a in ensure_instance_ids(record)["annotations"]] == [2, 1, 3]
    with pytest.raises(ValueError, match="not unique"):
        ensure_instance_ids({"file_name": "x.jpg", "annotations": [{"id": 4}, {"id": 4}]})
    with pytest.raises(ValueError, match="panoptic segment has no 'id'"):
        ensure_instance_ids({"segments_info": [{"category_id": 0}]})


def test_import_registers_training_names_without_data():
    for name in ["coco_2017_train_ins", "coco_2017_train_panoptic_sine", "ade20k_panoptic_train",
                 "objects365_sam_train", "lvis_v1_train_ins", "paco_lvis_v1_train"]:
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).evaluator_type

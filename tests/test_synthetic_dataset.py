"""The built-in synthetic dataset: deterministic, consistent annotations, correct base/novel
splits, panoptic and DAVIS layouts, and detectron2 registration. Generates tiny trees."""
import glob
import hashlib
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from sine.data.synthetic import (
    NOVEL_CATEGORY_IDS,
    SYNTHETIC_CATEGORIES,
    davis_palette,
    generate_synthetic,
)
from sine.data.synthetic import generate as generate_module

TINY = dict(num_train=12, num_val=30, num_videos=2, shots=(1, 2), fewshot_seeds=2,
            video_frames=(14, 16), video_size=(120, 160))
THING_NAMES = {c["id"]: c["name"] for c in SYNTHETIC_CATEGORIES if c["isthing"]}
STUFF_IDS = {c["id"] for c in SYNTHETIC_CATEGORIES if not c["isthing"]}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_synthetic(str(root), seed=0, **TINY)
    return str(root)


def _load(root, rel):
    with open(os.path.join(root, "synthetic", rel)) as f:
        return json.load(f)


def _tree_hashes(dataset_dir):
    hashes = {}
    for path in sorted(glob.glob(os.path.join(dataset_dir, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, dataset_dir)] = hashlib.sha1(f.read()).hexdigest()
    return hashes


def _read_rgb(path):
    return cv2.imread(path)[..., ::-1].astype(np.int32)


def _panoptic_id_map(root, split, file_name):
    rgb = _read_rgb(os.path.join(root, "synthetic", f"panoptic_{split}", file_name))
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def _stuff_masks(root, split):
    """image id -> (H, W) bool mask of the stuff (background) pixels."""
    masks = {}
    for ann in _load(root, f"annotations/panoptic_{split}.json")["annotations"]:
        stuff_ids = [s["id"] for s in ann["segments_info"] if s["category_id"] in STUFF_IDS]
        masks[ann["image_id"]] = np.isin(_panoptic_id_map(root, split, ann["file_name"]), stuff_ids)
    return masks


def _is_red(pixels):
    """Pixels of the solid "red" family (and of nothing else in the dataset)."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return (r > g + 60) & (r > b + 60)


def test_same_seed_gives_identical_files_and_other_seed_differs(tiny_root, tmp_path):
    reference = _tree_hashes(os.path.join(tiny_root, "synthetic"))
    again = generate_synthetic(str(tmp_path / "a"), seed=0, **TINY)
    assert _tree_hashes(again) == reference
    other = _tree_hashes(generate_synthetic(str(tmp_path / "b"), seed=1, **TINY))
    changed = [k for k in reference if other.get(k) != reference[k]]
    assert "annotations/instances_train.json" in changed
    assert sum(k.startswith("train/") for k in changed) == TINY["num_train"]


def test_existing_tree_is_kept_unless_forced(tiny_root):
    meta_path = os.path.join(tiny_root, "synthetic", "meta.json")
    mtime = os.path.getmtime(meta_path)
    generate_synthetic(tiny_root, seed=0, **TINY)
    assert os.path.getmtime(meta_path) == mtime
    with pytest.raises(FileExistsError, match="--force"):
        generate_synthetic(tiny_root, seed=3, **TINY)


def test_tree_of_an_older_generator_is_regenerated(tmp_path):
    """A tree made with the same parameters by an older generator version (e.g. one without
    the semantic labels) is replaced without --force; its outdated files do not survive."""
    small = dict(TINY, num_videos=0)
    dataset_dir = generate_synthetic(str(tmp_path), seed=0, **small)
    meta_path = os.path.join(dataset_dir, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["params"]["version"] = generate_module.GENERATOR_VERSION - 1
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    stale = os.path.join(dataset_dir, "stale.txt")
    open(stale, "w").close()
    generate_synthetic(str(tmp_path), seed=0, **small)
    with open(meta_path) as f:
        assert json.load(f)["params"]["version"] == generate_module.GENERATOR_VERSION
    assert not os.path.exists(stale)


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "_generate_videos", fail)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(str(tmp_path), seed=0, **TINY)
    assert os.listdir(tmp_path) == []


def test_tiny_tree_with_default_shots_still_generates(tmp_path):
    """Trees too small for 5 references per class (as other tests use) degrade, not fail."""
    root = str(tmp_path)
    generate_synthetic(root, seed=0, num_train=4, num_val=8, num_videos=1, fewshot_seeds=1,
                       video_frames=(3, 3), video_size=(48, 64))
    test_images = {img["id"] for img in _load(root, "annotations/instances_test_novel.json")[
        "images"]}
    assert len(test_images) >= 1
    for category_id in NOVEL_CATEGORY_IDS:
        for shot in (1, 5):
            anns = _load(root, f"fewshot/seed0/full_box_{shot}shot_{THING_NAMES[category_id]}"
                               "_trainval.json")["annotations"]
            assert len(anns) <= shot
            assert not {a["image_id"] for a in anns} & test_images


@pytest.mark.parametrize("split", ["train", "val"])
def test_instance_annotations_match_images(tiny_root, split):
    data = _load(tiny_root, f"annotations/instances_{split}.json")
    ids = [a["id"] for a in data["annotations"]]
    assert len(ids) == len(set(ids)) > 0
    images = {img["id"]: img for img in data["images"]}
    stuff_masks = _stuff_masks(tiny_root, split)
    num_red = 0
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        assert ann["iscrowd"] == 0 and ann["category_id"] in THING_NAMES
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        assert mask.shape == (img["height"], img["width"])
        assert ann["area"] == mask.sum() > 0
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
        pixels = _read_rgb(os.path.join(tiny_root, "synthetic", split, img["file_name"]))
        # Saturated, patterned objects vs. desaturated stuff: the colours differ clearly.
        background = pixels[stuff_masks[ann["image_id"]]].mean(axis=0)
        assert np.linalg.norm(pixels[mask].mean(axis=0) - background) > 25
        if THING_NAMES[ann["category_id"]].startswith("red_"):
            num_red += 1
            inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if inner.sum() >= 20:
                assert _is_red(pixels[inner]).mean() > 0.9
    assert num_red > 0


def test_masks_are_aligned_with_the_painted_objects(tiny_root):
    """Pixels just outside a mask are never the object's colour, whereas a 2-px shifted mask
    would cut through its own object."""
    data = _load(tiny_root, "annotations/instances_val.json")
    images = {img["id"]: img for img in data["images"]}
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    kernel = np.ones((3, 3), np.uint8)
    checked = 0
    for image_id, anns in by_image.items():
        pixels = _read_rgb(os.path.join(tiny_root, "synthetic", "val",
                                        images[image_id]["file_name"]))
        masks = [mask_util.decode(a["segmentation"]).astype(bool) for a in anns]
        things = np.any(masks, axis=0)
        for ann, mask in zip(anns, masks):
            if not THING_NAMES[ann["category_id"]].startswith("red_") or mask.sum() < 100:
                continue
            ring = cv2.dilate(mask.astype(np.uint8), kernel, iterations=2).astype(bool) & ~things
            if ring.sum() >= 20:
                assert _is_red(pixels[ring]).mean() < 0.1
                checked += 1
    assert checked > 0


def test_train_has_only_base_categories_and_val_has_novel(tiny_root):
    train = _load(tiny_root, "annotations/instances_train.json")
    val = _load(tiny_root, "annotations/instances_val.json")
    assert not {a["category_id"] for a in train["annotations"]} & set(NOVEL_CATEGORY_IDS)
    pan = _load(tiny_root, "annotations/panoptic_train.json")
    pan_cats = {s["category_id"] for a in pan["annotations"] for s in a["segments_info"]}
    assert not pan_cats & set(NOVEL_CATEGORY_IDS)
    val_cats = {a["category_id"] for a in val["annotations"]}
    assert set(NOVEL_CATEGORY_IDS) <= val_cats and val_cats - set(NOVEL_CATEGORY_IDS)


@pytest.mark.parametrize("split", ["train", "val"])
def test_panoptic_pngs_match_segments_and_instances(tiny_root, split):
    panoptic = _load(tiny_root, f"annotations/panoptic_{split}.json")
    instances = _load(tiny_root, f"annotations/instances_{split}.json")
    rle_by_id = {a["id"]: a["segmentation"] for a in instances["annotations"]}
    for ann in panoptic["annotations"]:
        id_map = _panoptic_id_map(tiny_root, split, ann["file_name"])
        segments = {s["id"]: s for s in ann["segments_info"]}
        # Every pixel belongs to a segment (things or stuff): no void.
        assert set(np.unique(id_map)) == set(segments)
        for seg_id, seg in segments.items():
            mask = id_map == seg_id
            assert seg["area"] == mask.sum()
            if seg["category_id"] in STUFF_IDS:
                assert seg_id not in rle_by_id
            else:
                np.testing.assert_array_equal(mask_util.decode(rle_by_id[seg_id]), mask)
    thing_segments = {s["id"] for a in panoptic["annotations"] for s in a["segments_info"]
                      if s["category_id"] not in STUFF_IDS}
    assert thing_segments == set(rle_by_id)


def test_fewshot_references_are_novel_and_disjoint_from_test(tiny_root):
    val = _load(tiny_root, "annotations/instances_val.json")
    test = _load(tiny_root, "annotations/instances_test_novel.json")
    test_images = {img["id"] for img in test["images"]}
    assert 0 < len(test_images) < len(val["images"])
    val_anns = {a["id"]: a for a in val["annotations"]}
    for seed in range(TINY["fewshot_seeds"]):
        for category_id in NOVEL_CATEGORY_IDS:
            chosen = {}
            for shot in TINY["shots"]:
                data = _load(tiny_root, f"fewshot/seed{seed}/full_box_{shot}shot_"
                                        f"{THING_NAMES[category_id]}_trainval.json")
                anns = data["annotations"]
                assert len(anns) == shot == len({a["image_id"] for a in anns})
                assert {img["id"] for img in data["images"]} == {a["image_id"] for a in anns}
                for ann in anns:
                    assert ann == val_anns[ann["id"]] and ann["category_id"] == category_id
                    assert ann["image_id"] not in test_images
                chosen[shot] = [a["id"] for a in anns]
            assert chosen[1] == chosen[2][:1]  # K-shot sets are nested


def test_registration_exposes_splits_with_instance_ids(tiny_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from sine.data.datasets.register_synthetic import register_synthetic

    names = register_synthetic(tiny_root)
    try:
        train = DatasetCatalog.get("synthetic_train")
        meta = MetadataCatalog.get("synthetic_train")
        assert len(train) == TINY["num_train"] and meta.evaluator_type == "coco"
        annos = [a for r in train for a in r["annotations"]]
        json_ids = {a["id"] for a in _load(tiny_root, "annotations/instances_train.json")[
            "annotations"]}
        assert {a["id"] for a in annos} == json_ids
        assert not {a["category_id"] for a in annos} & set(meta.novel_contiguous_ids)
        assert len(meta.thing_classes) == 40 and len(meta.novel_contiguous_ids) == 10

        panoptic = DatasetCatalog.get("synthetic_train_panoptic")
        segment = panoptic[0]["segments_info"][0]
        assert {"id", "category_id", "iscrowd", "isthing"} <= segment.keys()
        pan_meta = MetadataCatalog.get("synthetic_train_panoptic")
        assert pan_meta.evaluator_type == "coco_panoptic_seg"
        for record in panoptic:
            for seg in record["segments_info"]:  # one contiguous space, things first
                assert seg["isthing"] == (seg["category_id"] < 40)
                assert pan_meta.stuff_classes[seg["category_id"]]

        test_ids = {r["image_id"] for r in DatasetCatalog.get("synthetic_test_novel")}
        refs = DatasetCatalog.get("synthetic_novel_2shot_seed1")
        assert sum(len(r["annotations"]) for r in refs) == 2 * len(NOVEL_CATEGORY_IDS)
        assert not {r["image_id"] for r in refs} & test_ids
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        # Restore the import-time registration other tests may rely on.
        default_root = os.getenv("DETECTRON2_DATASETS", "datasets")
        if os.path.isfile(os.path.join(default_root, "synthetic", "meta.json")):
            register_synthetic(default_root)


def test_davis_layout_is_readable(tiny_root):
    davis = os.path.join(tiny_root, "synthetic", "davis")
    meta = _load(tiny_root, "meta.json")
    with open(os.path.join(davis, "ImageSets", "2017", "val.txt")) as f:
        videos = f.read().split()
    assert videos == [v["name"] for v in meta["videos"]] and len(videos) == TINY["num_videos"]
    assert os.path.isfile(os.path.join(davis, "ImageSets", "2016", "val.txt"))
    reentries = 0
    for video in meta["videos"]:
        jpgs = sorted(glob.glob(os.path.join(davis, "JPEGImages", "480p", video["name"], "*.jpg")))
        pngs = sorted(glob.glob(os.path.join(davis, "Annotations", "480p", video["name"], "*.png")))
        assert len(jpgs) == len(pngs) == video["num_frames"] >= TINY["video_frames"][0]
        assert [os.path.basename(p)[:-4] for p in pngs] == [f"{i:05d}" for i in range(len(pngs))]
        labels = []
        for path in pngs:
            png = Image.open(path)
            assert png.mode == "P" and png.getpalette()[:12] == davis_palette()[:12]
            labels.append(np.array(png))
        object_ids = [o["label"] for o in video["objects"]]
        assert set(np.unique(labels[0])) == {0, *object_ids}
        assert set(np.unique(np.stack(labels))) <= {0, *object_ids}
        for obj in video["objects"]:
            if obj["reenters"]:
                reentries += 1
                present = [bool((lab == obj["label"]).any()) for lab in labels]
                gone = present.index(False)
                assert any(present[gone:]), "the object never comes back"
                # It left through the border, not behind another object.
                before = labels[gone - 1] == obj["label"]
                assert before[0].any() or before[-1].any() or before[:, 0].any() or before[
                    :, -1].any()
    assert reentries >= 1


def test_semantic_labels_match_panoptic_and_evaluate(tiny_root):
    """Each sem_seg PNG holds the contiguous class of every panoptic segment (no void), and the
    registered split runs through SemSegEvaluator: the ground truth itself scores 100 mIoU."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    from sine.data.datasets.register_synthetic import register_synthetic
    from sine.evaluation.panoptic_sem_seg import load_label_png

    register_synthetic(tiny_root)
    meta = MetadataCatalog.get("synthetic_val_panoptic")
    to_contiguous = {**meta.thing_dataset_id_to_contiguous_id,
                     **meta.stuff_dataset_id_to_contiguous_id}
    pan = _load(tiny_root, "annotations/panoptic_val.json")["annotations"][0]
    ids = _panoptic_id_map(tiny_root, "val", pan["file_name"])
    expected = np.full(ids.shape, 255, dtype=np.int64)
    for seg in pan["segments_info"]:
        expected[ids == seg["id"]] = to_contiguous[seg["category_id"]]
    labels = np.asarray(Image.open(os.path.join(tiny_root, "synthetic", "sem_seg_val",
                                                pan["file_name"])))
    assert (expected != 255).all() and np.array_equal(labels, expected)

    records = DatasetCatalog.get("synthetic_val_sem_seg")
    assert len(MetadataCatalog.get("synthetic_val_sem_seg").stuff_classes) == 44
    evaluator = SemSegEvaluator("synthetic_val_sem_seg", distributed=False,
                                sem_seg_loading_fn=load_label_png)
    evaluator.reset()
    for r in records[:3]:
        gt = torch.as_tensor(np.asarray(Image.open(r["sem_seg_file_name"])).astype(np.int64))
        scores = torch.nn.functional.one_hot(gt, 44).permute(2, 0, 1).float()
        evaluator.process([{"file_name": r["file_name"]}], [{"sem_seg": scores}])
    assert evaluator.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)
